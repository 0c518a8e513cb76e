"""The allowlist: aten ops that run natively in strict mode because they are exact.

An op is here only if its result is a correctly rounded (or exact) function of its
inputs on every device: views and copies, indexing that moves values without
combining them, creation of constants, comparisons and selections, and the single
IEEE operations ``+ - * /`` and ``sqrt``, which IEEE-754 defines to the bit.
Ops are listed by packet (all overloads) unless only some overloads are exact.
Anything that rounds more than once, reduces in an unspecified order, calls a
library function (exp, log, ...), or draws random numbers is NOT here; it has a
strict implementation or raises.
"""

from __future__ import annotations

from typing import Any

import torch

aten = torch.ops.aten

# fmt: off
_VIEWS_AND_COPIES = (
    "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "expand", "expand_as",
    "permute", "t", "transpose", "unsqueeze", "squeeze", "select", "slice", "split",
    "split_with_sizes", "unbind", "chunk", "narrow", "alias", "detach", "diagonal", "unfold",
    "lift_fresh", "lift_fresh_copy", "clone", "contiguous", "copy_", "_to_copy", "to",
    "_copy_from", "_copy_from_and_resize", "cat", "stack", "index_select", "gather",
    "constant_pad_nd", "repeat", "flip", "roll", "tril", "triu", "select_backward",
    "slice_backward", "expand_copy", "view_copy", "permute_copy", "t_copy", "transpose_copy",
    "unsqueeze_copy", "squeeze_copy", "select_copy", "slice_copy", "split_copy", "embedding",
    "masked_select", "nonzero", "index", "_unsafe_index", "im2col", "resize_", "set_",
    "as_strided_", "_local_scalar_dense", "item", "is_same_size",
    "_has_compatible_shallow_copy_type", "masked_fill", "masked_fill_", "movedim", "unsqueeze_",
    "squeeze_", "t_", "transpose_", "detach_", "_unsafe_view_copy",
)
_CREATION = (
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full",
    "full_like", "new_empty", "new_empty_strided", "new_zeros", "new_ones", "new_full",
    "scalar_tensor", "fill", "fill_", "zero_", "zero", "eye",
)
# single correctly rounded IEEE ops, and exact ones
_ELEMENTWISE = (
    "mul", "mul_", "neg", "neg_", "abs", "abs_", "sqrt", "sqrt_", "sign", "sgn", "copysign",
    "ceil", "floor", "trunc", "frac", "maximum", "minimum", "fmax", "fmin", "clamp", "clamp_",
    "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "where", "relu", "relu_", "threshold",
    "threshold_backward", "hardtanh", "hardtanh_", "signbit", "eq", "ne", "lt", "le", "gt",
    "ge", "eq_", "ne_", "lt_", "le_", "gt_", "ge_", "logical_and", "logical_or", "logical_not",
    "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "__and__",
    "__or__", "__xor__", "__lshift__", "__rshift__", "bitwise_left_shift",
    "bitwise_right_shift", "isnan", "isinf", "isfinite", "isneginf", "isposinf", "nan_to_num",
)
# order-independent reductions: max, min and logic give one answer in any order
_EXACT_REDUCTIONS = (
    "amax", "amin", "max", "min", "argmax", "argmin", "any", "all", "aminmax", "equal",
    "max_pool2d", "max_pool2d_with_indices", "max_pool1d", "max_pool1d_with_indices",
)
# fmt: on
# profiler and autograd bookkeeping
_BOOKKEEPING = ("_record_function_enter_new", "_record_function_exit")

# an exact elementwise op is exact in place too
_INPLACE = tuple(n + "_" for n in _ELEMENTWISE if not n.endswith("_"))

ALLOWED_PACKETS: frozenset[Any] = frozenset(
    getattr(aten, n)
    for n in (*_VIEWS_AND_COPIES, *_CREATION, *_ELEMENTWISE, *_INPLACE, *_EXACT_REDUCTIONS)
    if hasattr(aten, n)
) | frozenset(
    getattr(torch.ops.profiler, n) for n in _BOOKKEEPING if hasattr(torch.ops.profiler, n)
)

# single overloads: round.decimals scales by 10**d, which rounds
ALLOWED_OVERLOADS: frozenset[Any] = frozenset({aten.round.default, aten.round_.default})

# integer-only: exact on integers and bools, rounded on floats
INTEGER_ONLY_PACKETS: frozenset[Any] = frozenset(
    getattr(aten, n)
    for n in ("sum", "cumsum", "remainder", "fmod", "floor_divide", "arange", "prod", "bincount")
    if hasattr(aten, n)
)

# single IEEE operations that round: correctly rounded in float32 and float64, but
# torch computes float16 and bfloat16 ones in float32 and rounds again, and devices
# differ in which steps they fuse, so strict mode refuses them in those dtypes
ROUNDING_PACKETS: frozenset[Any] = frozenset(
    getattr(aten, n) for n in ("mul", "mul_", "sqrt", "sqrt_") if hasattr(aten, n)
)
LOW_PRECISION: frozenset[torch.dtype] = frozenset({torch.float16, torch.bfloat16})
