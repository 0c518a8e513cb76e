"""Recording the operator trace of one step with a TorchDispatchMode (DESIGN.md, "Data flow" 5.3).

Run one whole step (forward, backward, optimizer step) inside an
:class:`OpTracer`. It sees every aten operator below autograd, in execution
order, and links each tensor input to where it came from:

1. by identity: the storage, offset, shape, stride and dtype of every op output,
   state leaf and batch tensor is remembered with its version (``t._version``);
   an input with the same identity *and* version links there. In-place ops bump
   the version and re-register their output, so a link names the right version;
   views get their own identity (their own strides or offset);
2. by content, when identity fails (a freed buffer reused, a tensor created by
   the autograd engine outside any op): the latest op output, state leaf or
   batch tensor with the same hash;
3. a small tensor created outside the step (``torch.tensor(0.0)`` in an
   optimizer) is embedded in a ``const`` link.

Every link is checked against the computed hash when it is made, so an honest
trace always passes :func:`ree.optrace.check_links`.

A random op's generator state (its last input) links to the state's RNG leaf or
to the previous random op's generator output. Run above an active strict mode
(``ree.deterministic(mode="strict")`` entered first, the tracer inside it), the
generator is strict mode's: the chain starts at ``rng/ree``, so capture the
state with ``mode="strict", ree_rng=<its generator>.state()``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from ree._state import StateTree
from ree.optrace._records import (
    CONST_MAX_NUMEL,
    GENERATORS,
    HOST_GENERATOR,
    STRICT_GENERATOR,
    Link,
    OpRecord,
    OpTrace,
    OpTraceError,
    TensorIn,
    const_payload,
    encode_value,
    fill_uninitialized,
    generator_hash,
    generator_tensor,
    rng_leaf,
    tensor_hash,
    written_args,
)

if TYPE_CHECKING:
    from ree.strict import StrictGenerator

_Key = tuple[Any, ...]


def strict_generator() -> StrictGenerator | None:
    """The generator of the innermost active strict mode, or None outside strict mode.

    Strict mode is not imported for this: a program that never loaded it is not in it.
    """
    mode = sys.modules.get("ree.strict._mode")
    active = mode.current_mode() if mode is not None else None
    return None if active is None else active.generator


def live_generator() -> tuple[str, torch.Tensor]:
    """The generator a random op run now draws from, and its state as an op input."""
    strict = strict_generator()
    if strict is not None:
        return STRICT_GENERATOR, generator_tensor(strict.state())
    return HOST_GENERATOR, torch.get_rng_state()


def batch_tree(batch: Mapping[str, torch.Tensor]) -> StateTree:
    """The Merkle tree over the batch of one step: one leaf per named tensor, sorted by name.

    Name micro-batches so they sort in the order they are consumed
    (``mb0/x``, ``mb0/y``, ``mb1/x``...).
    """
    for name, t in batch.items():
        if not isinstance(t, torch.Tensor):
            raise OpTraceError(
                f"batch entry {name!r} is a {type(t).__name__}; a batch holds tensors"
            )
    return StateTree(dict(batch))


def identity(t: torch.Tensor) -> _Key:
    """What makes two tensor objects the same memory, for linking."""
    return (
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        t.stride(),
        t.dtype,
        t.device,
    )


def storage_span(t: torch.Tensor) -> torch.Tensor:
    """A contiguous 1-D copy of the storage ``t`` reaches, so its exact layout can be rebuilt."""
    if t.numel() == 0:
        return torch.empty(0, dtype=t.dtype)
    span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True))
    return torch.as_strided(t.detach(), (span,), (1,), t.storage_offset()).clone()


def _flat_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of an op's return value, as :func:`encode_value` lists them."""
    found: list[torch.Tensor] = []
    encode_value(out, found)
    return found


def _write_bumps(func: Any, outs: list[torch.Tensor]) -> list[int]:
    """1 for each output an in-place or out= op wrote: autograd's ADInplaceOrView layer
    bumps its version only after this mode's handler returns."""
    returns = func._schema.returns
    writes = [r.alias_info is not None and r.alias_info.is_write for r in returns]
    if len(writes) != len(outs):
        return [0] * len(outs)
    return [int(w) for w in writes]


class OpTracer(TorchDispatchMode):
    """Records the aten ops of one step, with dataflow links (see the module docstring).

    ``state`` is the state tree of step k-1, captured right before the step with
    ``rng=True`` (it references the live tensors); ``batch`` the step's input
    tensors by name. ``keep`` lists op indices whose inputs are kept (as storage
    copies) so :func:`ree.optrace.save_op_inputs` can write them for a referee.
    """

    def __init__(
        self,
        state: StateTree,
        batch: Mapping[str, torch.Tensor],
        *,
        step: int,
        keep: Iterable[int] = (),
    ) -> None:
        super().__init__()
        self.state = state
        self.batch = batch_tree(batch)
        self.trace = OpTrace(
            step=int(step),
            state_root=state.root,
            state_n=state.n,
            batch_root=self.batch.root,
            batch_n=self.batch.n,
        )
        self.keep = set(keep)
        self.kept: dict[int, list[torch.Tensor]] = {}
        self._by_id: dict[_Key, tuple[Link, int]] = {}
        self._by_content: dict[str, Link] | None = None
        self._rng_links: dict[str, Link] = {}  # generator -> where its current state came from
        for kind, tree in (("state", state), ("batch", self.batch)):
            for name, v in tree.leaves.items():
                if isinstance(v, torch.Tensor):
                    link = Link(kind, name=name, proof=tree.proof(name))
                    self._by_id[identity(v)] = (link, v._version)
        for generator in GENERATORS:
            leaf = rng_leaf(generator)
            if leaf in state.leaves:
                self._rng_links[generator] = Link("state", name=leaf, proof=state.proof(leaf))

    # ------------------------------------------------------------------ hooks
    def _execute(self, index: int, func: Any, args: Any, kwargs: Any) -> Any:
        """Run op ``index``; adversaries in the tests override this to tamper with one op."""
        return func(*args, **kwargs)

    # ------------------------------------------------------------------ dispatch
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func.namespace != "aten":  # profiler markers and the like carry no data
            return func(*args, **kwargs)
        index = len(self.trace.records)
        tensors: list[torch.Tensor] = []
        rng = torch.Tag.nondeterministic_seeded in func.tags
        # The bookkeeping (hashes, copies) runs below every mode: a mode under this one (strict
        # mode) must see the step's ops only, not the tracer's own.
        generator = HOST_GENERATOR
        with _disable_current_modes():
            enc_args = encode_value([list(args), dict(kwargs)], tensors)
            inputs = [self._input(t, tensors[:k]) for k, t in enumerate(tensors)]
            if rng:
                generator, state = live_generator()
                inputs.append(self._rng_input(generator, state))
            if index in self.keep:
                kept = [storage_span(t) for t in tensors]
                if rng:
                    kept.append(state.clone())
                self.kept[index] = kept
        out = self._execute(index, func, args, kwargs)
        with _disable_current_modes():
            written = written_args(func, args, kwargs, _flat_tensors(out))
            return self._record(index, func, enc_args, inputs, out, rng, generator, written)

    def _record(
        self,
        index: int,
        func: Any,
        enc_args: Any,
        inputs: list[TensorIn],
        out: Any,
        rng: bool,
        generator: str,
        written: list[torch.Tensor] | None = None,
    ) -> Any:
        outs: list[torch.Tensor] = []
        enc_out = encode_value(out, outs)
        fill_uninitialized(str(func), outs)
        out_versions = [
            t._version + bump for t, bump in zip(outs, _write_bumps(func, outs), strict=True)
        ]
        outs += written or []  # written in place, not returned: bumped after this handler too
        out_versions += [t._version + 1 for t in written or []]
        out_hashes = [tensor_hash(t) for t in outs]
        for j, t in enumerate(outs):
            link = Link("op", op=index, out=j, version=out_versions[j])
            self._by_id[identity(t)] = (link, out_versions[j])
            if self._by_content is not None:
                self._by_content[out_hashes[j]] = link
        if rng:
            after, state = live_generator()
            if after != generator:
                raise OpTraceError(
                    f"op {index} ({func}) drew from the {generator!r} generator but left the "
                    f"{after!r} one current; enter or leave strict mode outside the traced step"
                )
            out_hashes.append(generator_hash(generator, state))
            out_versions.append(0)
            self._rng_links[generator] = Link("op", op=index, out=len(outs), version=0)
        self.trace.records.append(
            OpRecord(
                index=index,
                op=str(func),
                args=enc_args,
                inputs=tuple(inputs),
                out=enc_out,
                out_hashes=tuple(out_hashes),
                out_versions=tuple(out_versions),
                rng=rng,
                generator=generator,
            )
        )
        return out

    # ------------------------------------------------------------------ linking
    def _expected(self, link: Link, t: torch.Tensor) -> tuple[str, str]:
        """(hash the link promises, hash of ``t`` under the link's label)."""
        actual = tensor_hash(t, link.label)
        return self._promised(link, actual), actual

    def _promised(self, link: Link, actual: str) -> str:
        """The hash ``link`` promises (``actual`` for a constant, which carries its tensor)."""
        if link.kind == "op":
            return self.trace.records[link.op].out_hashes[link.out]
        if link.kind in ("state", "batch"):
            assert link.proof is not None
            return link.proof.leaf_hash.hex()
        return actual

    def _input(self, t: torch.Tensor, earlier: list[torch.Tensor]) -> TensorIn:
        alias = next((k for k, e in enumerate(earlier) if e is t or identity(e) == identity(t)), -1)
        link = self._link(t)
        layout = (tuple(t.shape), tuple(t.stride()))
        return TensorIn(tensor_hash(t, link.label), link, t._version, layout, alias)

    def _link(self, t: torch.Tensor) -> Link:
        hit = self._by_id.get(identity(t))
        if hit is not None and hit[1] == t._version:
            promised, actual = self._expected(hit[0], t)
            if promised == actual:
                return hit[0]
        by_content = self._content_index()
        link = by_content.get(tensor_hash(t))
        if link is not None:
            return link
        if t.numel() <= CONST_MAX_NUMEL:
            return Link("const", const=const_payload(t))
        raise OpTraceError(
            f"op {len(self.trace.records)} reads a {tuple(t.shape)} {t.dtype} tensor that is "
            "neither an earlier op's output, a state leaf nor a batch tensor; pass every input "
            "of the step in `batch=` and capture the state right before the step"
        )

    def _content_index(self) -> dict[str, Link]:
        if self._by_content is None:
            index: dict[str, Link] = {}
            for kind, tree in (("state", self.state), ("batch", self.batch)):
                for name, v in tree.leaves.items():
                    if isinstance(v, torch.Tensor):
                        index.setdefault(
                            tensor_hash(v), Link(kind, name=name, proof=tree.proof(name))
                        )
            for r in self.trace.records:
                for j, h in enumerate(r.out_hashes):
                    index[h] = Link("op", op=r.index, out=j, version=r.out_versions[j])
            self._by_content = index
        return self._by_content

    def _rng_input(self, generator: str, state: torch.Tensor) -> TensorIn:
        link = self._rng_links.get(generator)
        if link is None:
            how = (
                "mode='strict', ree_rng=<the strict mode's generator>.state()"
                if generator == STRICT_GENERATOR
                else "rng=True (in device mode)"
            )
            raise OpTraceError(
                f"op {len(self.trace.records)} draws random numbers but the state has no "
                f"{rng_leaf(generator)!r} leaf; capture the state with {how} right before the step"
            )
        actual = generator_hash(generator, state, link.label)
        if self._promised(link, actual) != actual:
            raise OpTraceError(
                f"op {len(self.trace.records)}: the generator state is not the one the trace "
                "last saw; something drew random numbers between capture_state and the step"
            )
        return TensorIn(actual, link, 0, (tuple(state.shape), tuple(state.stride())), -1)
