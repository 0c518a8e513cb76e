"""The TorchDispatchMode that makes every aten op of a training step reproducible.

DESIGN.md, "The REE: two modes", strict mode. The mode sits below autograd, so it
sees the forward, the backward and the optimizer as aten ops. Each op is, in
this order:

1. swapped for its strict implementation (``_registry.HANDLERS``);
2. run natively if it is exact (``_allow``), or exact for the dtypes it got;
3. refused with :class:`~ree._errors.NondeterminismError` naming the op.

Nothing falls back silently: an op strict mode does not know is an error.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ree._errors import NondeterminismError
from ree.strict import (  # noqa: F401  (they fill HANDLERS)
    _ops_conv,
    _ops_linalg,
    _ops_loss,
    _ops_nn,
    _ops_optim,
)
from ree.strict._allow import (
    ALLOWED_OVERLOADS,
    ALLOWED_PACKETS,
    INTEGER_ONLY_PACKETS,
    LOW_PRECISION,
    ROUNDING_PACKETS,
)
from ree.strict._registry import HANDLERS
from ree.strict._rng import StrictGenerator


def _all_integral(args: Any, kwargs: Any) -> bool:
    for leaf in tree_leaves((args, kwargs)):
        if isinstance(leaf, torch.Tensor) and (leaf.is_floating_point() or leaf.is_complex()):
            return False
        if isinstance(leaf, float | complex):
            return False
        if isinstance(leaf, torch.dtype) and (leaf.is_floating_point or leaf.is_complex):
            return False
    return True


def _low_precision_result(args: tuple[Any, ...]) -> torch.dtype | None:
    """The float16/bfloat16 result dtype of a rounding elementwise op, or None."""
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    dtype = torch.result_type(args[0], args[1]) if len(args) > 1 else args[0].dtype
    return dtype if dtype in LOW_PRECISION else None


def refuse_low_precision(op: object, dtype: torch.dtype) -> NondeterminismError:
    """The error for a rounding op in float16 or bfloat16 (strict mode's dtype policy)."""
    return NondeterminismError(
        f"strict mode does not compute {op} in {dtype}: torch rounds float16 and bfloat16 "
        "arithmetic through float32 (twice), and devices differ in how. Keep the model, "
        "its inputs and its optimizer state in float32 under strict mode (no .half(), "
        ".bfloat16() or autocast; casting results to those dtypes is fine), or train in "
        "mode='device'"
    )


_ACTIVE: list[StrictMode] = []


def current_mode() -> StrictMode | None:
    """The innermost active :class:`StrictMode` of this thread's program, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


class StrictMode(TorchDispatchMode):
    """Swap aten ops for reproducible ones; refuse any op without one.

    ``generator`` supplies dropout masks and ``rand``/``uniform_`` draws; its
    :meth:`~StrictGenerator.state` is the ``rng/ree`` leaf of a strict root.
    """

    def __init__(self, generator: StrictGenerator | None = None) -> None:
        super().__init__()
        self.generator = generator if generator is not None else StrictGenerator(0)
        self._stacks: list[contextlib.ExitStack] = []

    def __enter__(self) -> StrictMode:
        # The outermost entry pins scaled_dot_product_attention to its math path,
        # which decomposes into ops this mode swaps; the fused kernels would reach
        # the mode as single ops it has to refuse. Pinned by the first active mode
        # only, since the choice is process-wide.
        stack = contextlib.ExitStack()
        if not _ACTIVE:
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        _ACTIVE.append(self)
        self._stacks.append(stack)
        try:
            super().__enter__()
        except BaseException:
            _ACTIVE.pop()
            self._stacks.pop().close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            _ACTIVE.pop()
            self._stacks.pop().close()

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        handler = HANDLERS.get(func) or HANDLERS.get(func.overloadpacket)
        if handler is not None:
            return handler(self, *args, **kwargs)
        packet = func.overloadpacket
        if packet in ROUNDING_PACKETS:
            low = _low_precision_result(args)
            if low is not None:
                raise refuse_low_precision(func, low)
        if (
            packet in ALLOWED_PACKETS
            or func in ALLOWED_OVERLOADS
            or (packet in INTEGER_ONLY_PACKETS and _all_integral(args, kwargs))
        ):
            return func(*args, **kwargs)
        raise NondeterminismError(
            f"strict mode has no reproducible implementation of {func} "
            f"(dtypes {sorted({str(t.dtype) for t in tree_leaves(args) if isinstance(t, torch.Tensor)})}); "
            "its result could differ between devices, thread counts or vector ISAs. Use an op "
            "strict mode supports (see ree.strict.supported_ops()), or train in mode='device'"
        )


def supported_ops() -> list[str]:
    """Names of the ops strict mode swaps or allows, sorted (for documentation and errors)."""
    names = {str(op) for op in HANDLERS} | {f"{p}.*" for p in ALLOWED_PACKETS}
    names |= {str(op) for op in ALLOWED_OVERLOADS}
    return sorted(names)
