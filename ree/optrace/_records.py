"""Records of an operator trace, and their canonical encoding (DESIGN.md, "Data flow" 5.3).

An operator trace is the list of aten operators one training step ran, in
execution order. Each :class:`OpRecord` carries the op (name and overload), its
non-tensor arguments as canonical JSON (tensors replaced by ``{"tensor": k}``),
the hash of every tensor input and output, and a :class:`Link` for every tensor
input that says where the input came from:

* ``op``: output ``out`` of the earlier record ``op``;
* ``state``: the leaf ``name`` of the state tree of step k-1, with its proof;
* ``batch``: the leaf ``name`` of the batch tree, with its proof;
* ``const``: a small tensor created outside the step (``torch.tensor(0.0)``),
  embedded in the link.

A tensor's hash in a trace is :func:`ree._encoding.leaf_hash` under the *label*
of its link: the state or batch leaf name for those links, ``""`` for every
other tensor (op outputs, op-linked and constant inputs). So a state or batch
link is checked from the trace alone: the input hash must equal the proof's
leaf hash, and the proof must verify against the committed root.

Ops tagged ``nondeterministic_seeded`` (dropout, bernoulli...) read a
generator: such a record has ``rng = True``, its last input is the generator
state before the op, and its last output hash is the state after it. In device
mode the generator is the host's (``generator = "torch_cpu"``, the state leaf
``rng/torch_cpu``, a uint8 tensor). Under strict mode it is the REE's
counter-based generator (``generator = "ree"``): its state ``[seed, counter]``
is the *value* leaf ``rng/ree``, so its hash in a trace is that value's leaf
hash, and it travels among an op's inputs as an int64 tensor of two words
(:func:`generator_tensor`).

The trace is committed as a Merkle tree (DESIGN.md, "Merkle trees") whose leaf
i is ``leaf_hash(f"op/{i}", record_json)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ree._encoding import canonical_json, dtype_name, leaf_hash
from ree._errors import TraceError
from ree._merkle import MerkleTree, Proof

OPTRACE_FORMAT = "ree-optrace/1"
LINK_KINDS = ("op", "state", "batch", "const")
CONST_MAX_NUMEL = 64  # larger tensors from outside the step must come from the state or batch
HOST_GENERATOR = "torch_cpu"  # device mode: torch's default CPU generator
STRICT_GENERATOR = "ree"  # strict mode: ree.strict's counter-based generator
GENERATORS = (HOST_GENERATOR, STRICT_GENERATOR)
_UINT64 = 1 << 64


class OpTraceError(TraceError):
    """An operator trace is malformed, or an op cannot be recorded or re-executed."""


def written_args(func: Any, args: Sequence[Any], kwargs: dict[str, Any],
                 outs: Sequence[torch.Tensor]) -> list[torch.Tensor]:  # fmt: skip
    """The tensors ``func`` writes in place without returning them, in argument order.

    ``aten._foreach_mul_`` (gradient clipping) returns nothing, yet later ops read
    what it wrote: those tensors are outputs of the op too. A record's
    ``out_hashes`` list the returned tensors, then these, then (for a random op)
    the generator state; the recorder and the re-execution both build them here.
    """
    seen = {id(t) for t in outs}
    found: list[torch.Tensor] = []
    for i, a in enumerate(func._schema.arguments):
        if a.alias_info is None or not a.alias_info.is_write:
            continue
        v = kwargs.get(a.name) if a.name in kwargs else (args[i] if i < len(args) else None)
        for t in v if isinstance(v, list | tuple) else (v,):
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                found.append(t)
    return found


def fill_uninitialized(op: str, outs: list[torch.Tensor]) -> None:
    """Give the outputs of ``empty``-like ops defined contents, so their hashes reproduce.

    Like torch's ``fill_uninitialized_memory`` under deterministic algorithms:
    NaN for floating dtypes, zero for the others. The recorder and the referee
    both apply it, so the filled values are part of the op's defined behaviour.
    """
    if not (op.startswith(("aten.empty", "aten.new_empty"))):
        return
    for t in outs:
        t.fill_(float("nan") if t.is_floating_point() or t.is_complex() else 0)


def tensor_hash(t: torch.Tensor, label: str = "") -> str:
    """The hex hash of ``t`` in a trace: its leaf hash under ``label``."""
    return leaf_hash(label, t).hex()


def rng_leaf(generator: str) -> str:
    """The state leaf a generator's chain of random ops starts at (``rng/torch_cpu``, ``rng/ree``)."""
    return f"rng/{generator}"


def generator_tensor(state: Sequence[int]) -> torch.Tensor:
    """The strict generator state ``[seed, counter]`` as an op input: int64, two's complement.

    Words in [2**63, 2**64) do not fit int64 as they are; :func:`generator_state`
    reads them back exactly.
    """
    words = [int(w) % _UINT64 for w in state]
    return torch.tensor([w - _UINT64 if w >= _UINT64 // 2 else w for w in words], dtype=torch.int64)


def generator_state(t: torch.Tensor) -> list[int]:
    """Inverse of :func:`generator_tensor`: the ``[seed, counter]`` an op input holds."""
    if t.dtype != torch.int64 or tuple(t.shape) != (2,):
        raise OpTraceError(
            f"a strict generator state is an int64 tensor of shape (2,) ([seed, counter]), "
            f"got a {tuple(t.shape)} {t.dtype} tensor; send the input the tracer kept"
        )
    return [int(w) % _UINT64 for w in t.tolist()]


def generator_hash(generator: str, t: torch.Tensor, label: str = "") -> str:
    """The hash of generator state ``t`` in a trace, under ``label``.

    The host generator's state is a tensor leaf; the strict generator's is the
    value leaf ``[seed, counter]``, so its hash equals the ``rng/ree`` leaf of a
    strict state root.
    """
    if generator == STRICT_GENERATOR:
        return leaf_hash(label, generator_state(t)).hex()
    return tensor_hash(t, label)


# --------------------------------------------------------------------------- arguments

_DTYPES = {dtype_name(d): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)}
_LAYOUTS = {"strided": torch.strided}
_FORMATS = {str(f).removeprefix("torch."): f for f in (
    torch.contiguous_format, torch.preserve_format, torch.channels_last)}


def encode_value(value: Any, tensors: list[torch.Tensor]) -> Any:
    """A JSON-ready form of an op argument or result; tensors are appended to ``tensors``
    and replaced by ``{"tensor": k}``."""
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return {"tensor": len(tensors) - 1}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, list | tuple):
        return [encode_value(v, tensors) for v in value]
    if isinstance(value, dict):
        return {"kwargs": {str(k): encode_value(v, tensors) for k, v in value.items()}}
    if isinstance(value, torch.dtype):
        return {"dtype": dtype_name(value)}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    raise OpTraceError(
        f"an op argument is a {type(value).__name__} ({value!r:.60}), which a trace cannot "
        "encode; pass tensors, numbers, dtypes and lists of them (an explicit torch.Generator "
        "is not supported in device mode: use the default generator)"
    )


def decode_value(obj: Any, tensors: Sequence[torch.Tensor]) -> Any:
    """Inverse of :func:`encode_value`, with tensor placeholders filled from ``tensors``."""
    if isinstance(obj, list):
        return [decode_value(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) != 1:
        raise OpTraceError(f"malformed encoded argument {obj!r:.80}")
    ((key, v),) = obj.items()
    try:
        if key == "tensor":
            return tensors[int(v)]
        if key == "float":
            return float(v)
        if key == "kwargs":
            return {k: decode_value(x, tensors) for k, x in v.items()}
        if key == "dtype":
            return _DTYPES[v]
        if key == "device":
            return torch.device(v)
        if key == "layout":
            return _LAYOUTS[v]
        if key == "memory_format":
            return _FORMATS[v]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise OpTraceError(f"cannot decode argument {obj!r:.80}: {e}") from e
    raise OpTraceError(f"unknown encoded argument kind {key!r} in {obj!r:.80}")


# --------------------------------------------------------------------------- links


@dataclass(frozen=True)
class Link:
    """Where a tensor input of an op came from (see the module docstring)."""

    kind: str
    op: int = -1
    out: int = -1
    version: int = 0
    name: str = ""
    proof: Proof | None = None
    const: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """The name the input's hash is taken under."""
        return self.name if self.kind in ("state", "batch") else ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (only the fields of this kind)."""
        if self.kind == "op":
            return {"kind": "op", "op": self.op, "out": self.out, "version": self.version}
        if self.kind == "const":
            return {"kind": "const", "const": self.const}
        assert self.proof is not None
        return {"kind": self.kind, "name": self.name, "proof": self.proof.to_json()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Link:
        """Inverse of :meth:`to_json`."""
        kind = obj.get("kind")
        if kind == "op":
            return cls("op", op=int(obj["op"]), out=int(obj["out"]), version=int(obj["version"]))
        if kind == "const":
            return cls("const", const=dict(obj["const"]))
        if kind in ("state", "batch"):
            return cls(kind, name=str(obj["name"]), proof=Proof.from_json(obj["proof"]))
        raise OpTraceError(f"unknown link kind {kind!r}; expected one of {LINK_KINDS}")


def const_payload(t: torch.Tensor) -> dict[str, Any]:
    """The embedded form of a small constant tensor (a ``const`` link)."""
    from ree._encoding import tensor_bytes

    return {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "hex": bytes(tensor_bytes(t)).hex()}


def const_tensor(payload: dict[str, Any]) -> torch.Tensor:
    """Rebuild the tensor of a ``const`` link."""
    try:
        dtype = _DTYPES[payload["dtype"]]
        raw = bytearray(bytes.fromhex(payload["hex"]))
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return flat.reshape(payload["shape"]).clone()
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise OpTraceError(f"malformed constant in a link ({payload!r:.80}): {e}") from e


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TensorIn:
    """One tensor input of a record: its hash, version, layout and link."""

    hash: str
    link: Link
    version: int = 0
    layout: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # shape, stride
    alias: int = -1  # index of an earlier input that is the very same tensor

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"hash": self.hash, "link": self.link.to_json(), "version": self.version,
                "shape": list(self.layout[0]), "stride": list(self.layout[1]), "alias": self.alias}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TensorIn:
        """Inverse of :meth:`to_json`."""
        return cls(str(obj["hash"]), Link.from_json(obj["link"]), int(obj["version"]),
                   (tuple(obj["shape"]), tuple(obj["stride"])), int(obj["alias"]))


@dataclass(frozen=True)
class OpRecord:
    """One aten operator call of the step, with its dataflow (see the module docstring)."""

    index: int
    op: str
    args: Any
    inputs: tuple[TensorIn, ...]
    out: Any
    out_hashes: tuple[str, ...]
    out_versions: tuple[int, ...] = ()
    rng: bool = False
    generator: str = HOST_GENERATOR  # which generator a random op draws from

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise OpTraceError(
                f"op {self.index} draws from generator {self.generator!r}; a trace knows "
                f"{GENERATORS}"
            )
        if self.generator != HOST_GENERATOR and not self.rng:
            raise OpTraceError(
                f"op {self.index} names generator {self.generator!r} but is not a random op"
            )

    def input_key(self) -> str:
        """What two parties must agree on for the op's inputs to agree."""
        key = [self.op, self.args, [i.hash for i in self.inputs], self.rng]
        if self.generator != HOST_GENERATOR:  # device-mode keys stay as they were
            key.append(self.generator)
        return canonical_json(key).decode()

    def output_key(self) -> str:
        """What two parties must agree on for the op's outputs to agree."""
        return canonical_json([self.out, list(self.out_hashes)]).decode()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (canonical under :func:`canonical_json`).

        ``generator`` is written only when it is not the host's, so device-mode
        records (and their roots) are what they were before strict mode had random ops.
        """
        obj = {"index": self.index, "op": self.op, "args": self.args,
               "inputs": [i.to_json() for i in self.inputs], "out": self.out,
               "out_hashes": list(self.out_hashes), "out_versions": list(self.out_versions),
               "rng": self.rng}
        if self.generator != HOST_GENERATOR:
            obj["generator"] = self.generator
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> OpRecord:
        """Inverse of :meth:`to_json`."""
        try:
            return cls(int(obj["index"]), str(obj["op"]), obj["args"],
                       tuple(TensorIn.from_json(i) for i in obj["inputs"]), obj["out"],
                       tuple(str(h) for h in obj["out_hashes"]),
                       tuple(int(v) for v in obj["out_versions"]), bool(obj["rng"]),
                       str(obj.get("generator", HOST_GENERATOR)))
        except (KeyError, TypeError, ValueError) as e:
            raise OpTraceError(f"malformed op record ({e!r}): {json.dumps(obj)[:120]}") from e

    def leaf_hash(self) -> bytes:
        """This record's leaf hash in the trace tree."""
        return leaf_hash(f"op/{self.index}", self.to_json())


@dataclass
class OpTrace:
    """The operator trace of one step: the roots it links against, and its records."""

    step: int
    state_root: str
    state_n: int
    batch_root: str
    batch_n: int
    records: list[OpRecord] = field(default_factory=list)

    @property
    def merkle(self) -> MerkleTree:
        """The Merkle tree over the records (built on each call; records may still grow)."""
        if not self.records:
            raise OpTraceError("an empty operator trace has no root; record a step first")
        return MerkleTree([r.leaf_hash() for r in self.records])

    @property
    def root(self) -> str:
        """The hex trace root, committed together with :attr:`n`."""
        return self.merkle.root.hex()

    @property
    def n(self) -> int:
        """The record count N."""
        return len(self.records)

    def __iter__(self) -> Iterator[OpRecord]:
        return iter(self.records)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"format": OPTRACE_FORMAT, "step": self.step, "state_root": self.state_root,
                "state_n": self.state_n, "batch_root": self.batch_root, "batch_n": self.batch_n,
                "records": [r.to_json() for r in self.records]}

    def dumps(self) -> bytes:
        """The canonical bytes of the trace, to store under a CID."""
        return canonical_json(self.to_json())

    @classmethod
    def loads(cls, raw: bytes | str) -> OpTrace:
        """Parse :meth:`dumps` output (JSON only: nothing here unpickles)."""
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise OpTraceError(f"an operator trace is JSON; this is not ({e})") from e
        if not isinstance(obj, dict) or obj.get("format") != OPTRACE_FORMAT:
            raise OpTraceError(f"not an {OPTRACE_FORMAT} document: {str(raw)[:80]!r}")
        try:
            records = [OpRecord.from_json(r) for r in obj["records"]]
            trace = cls(int(obj["step"]), str(obj["state_root"]), int(obj["state_n"]),
                        str(obj["batch_root"]), int(obj["batch_n"]), records)
        except (KeyError, TypeError, ValueError) as e:
            raise OpTraceError(f"malformed operator trace header: {e!r}") from e
        for i, r in enumerate(records):
            if r.index != i:
                raise OpTraceError(f"record {i} says it is record {r.index}: the trace is reordered")
        return trace
