"""Strict implementations of fused-style and foreach ops, fused optimizers, and random draws.

``addcmul``, ``addcdiv`` and ``lerp`` are decomposed into separate multiplies and
adds, so no kernel contracts them into an FMA (whose single rounding exists on
some devices and ISAs, not others). Every ``_foreach_*`` op runs as its per-tensor
op under the strict mode again, and the fused Adam/AdamW/SGD kernels as the
single-tensor algorithm. Random draws come from the mode's counter-based
generator (``ree.strict._rng``), never from a device generator.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ree._errors import NondeterminismError
from ree.strict import _transcend as tr
from ree.strict._ops_nn import add, div, inplace
from ree.strict._registry import HANDLERS, handles, require_f32

aten = torch.ops.aten
F32 = torch.float32


# -- fused-style elementwise ops ---------------------------------------------------------


def _scaled(t: torch.Tensor, value: Any) -> torch.Tensor:
    # in place only where the product keeps t's dtype (a float t and a Python value)
    if value == 1:
        return t
    return t.mul_(value) if t.is_floating_point() else torch.mul(t, value)


def _cmul(t1: torch.Tensor, t2: torch.Tensor, value: Any) -> torch.Tensor:
    return _scaled(torch.mul(t1, t2), value)


def _cdiv(t1: torch.Tensor, t2: torch.Tensor, value: Any) -> torch.Tensor:
    return _scaled(div(t1, t2), value)


def addcmul(x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, value: Any = 1) -> torch.Tensor:
    """``x + value * (t1 * t2)`` with every operation rounded on its own."""
    return torch.add(x, _cmul(t1, t2, value))


def addcmul_(x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, value: Any = 1) -> torch.Tensor:
    """:func:`addcmul` written into ``x`` (the product is formed before ``x`` changes)."""
    return x.add_(_cmul(t1, t2, value))


def addcdiv(x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, value: Any = 1) -> torch.Tensor:
    """``x + value * (t1 / t2)`` with every operation rounded on its own."""
    return torch.add(x, _cdiv(t1, t2, value))


def addcdiv_(x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, value: Any = 1) -> torch.Tensor:
    """:func:`addcdiv` written into ``x`` (the quotient is formed before ``x`` changes)."""
    return x.add_(_cdiv(t1, t2, value))


def _low_side(weight: Any, dtype: torch.dtype) -> bool:
    """True when a Python lerp weight, rounded to ``dtype``, is below 0.5 in magnitude."""
    return abs(float(torch.tensor(weight, dtype=dtype))) < 0.5


def lerp(x: torch.Tensor, end: torch.Tensor, weight: Any) -> torch.Tensor:
    """torch's two-sided lerp formula, decomposed: exact at weight 0 and 1."""
    diff = torch.sub(end, x)
    if not isinstance(weight, torch.Tensor):
        w = torch.tensor(weight, dtype=x.dtype, device=x.device)
        # one weight picks one side for every element: compute that side alone (decided
        # on the host, from the weight rounded to x's dtype: no device round trip)
        if _low_side(weight, x.dtype):
            return torch.add(x, torch.mul(w, diff))
        return torch.sub(end, torch.mul(diff, torch.sub(1.0, w)))
    w = weight
    low = torch.add(x, torch.mul(w, diff))
    high = torch.sub(end, torch.mul(diff, torch.sub(1.0, w)))
    return torch.where(w.abs() < 0.5, low, high)


def lerp_(x: torch.Tensor, end: torch.Tensor, weight: Any) -> torch.Tensor:
    """:func:`lerp` written into ``x``; a Python weight below 0.5 adds into ``x`` directly."""
    if not isinstance(weight, torch.Tensor) and _low_side(weight, x.dtype):
        w = torch.tensor(weight, dtype=x.dtype, device=x.device)
        return x.add_(torch.mul(w, torch.sub(end, x)))
    return inplace(x, lerp(x, end, weight))


@handles(aten.addcmul.default)
def _addcmul(
    ctx: Any, x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, *, value: Any = 1
) -> torch.Tensor:
    return addcmul(x, t1, t2, value)


@handles(aten.addcmul_.default)
def _addcmul_(
    ctx: Any, x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, *, value: Any = 1
) -> torch.Tensor:
    return addcmul_(x, t1, t2, value)


@handles(aten.addcdiv.default)
def _addcdiv(
    ctx: Any, x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, *, value: Any = 1
) -> torch.Tensor:
    return addcdiv(x, t1, t2, value)


@handles(aten.addcdiv_.default)
def _addcdiv_(
    ctx: Any, x: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, *, value: Any = 1
) -> torch.Tensor:
    return addcdiv_(x, t1, t2, value)


@handles(aten.lerp.Scalar, aten.lerp.Tensor)
def _lerp(ctx: Any, x: torch.Tensor, end: torch.Tensor, weight: Any) -> torch.Tensor:
    return lerp(x, end, weight)


@handles(aten.lerp_.Scalar, aten.lerp_.Tensor)
def _lerp_(ctx: Any, x: torch.Tensor, end: torch.Tensor, weight: Any) -> torch.Tensor:
    return lerp_(x, end, weight)


# -- foreach: each tensor through the strict mode ------------------------------------------------


def _foreach(
    ctx: Any,
    base: str,
    inplace_op: bool,
    overload: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    n = next(len(a) for a in args if isinstance(a, list | tuple))
    packet = getattr(aten, base + ("_" if inplace_op else ""))
    out = []
    with ctx:  # re-enter the mode: each per-tensor op is swapped or checked again
        for i in range(n):
            elem = []
            for j, a in enumerate(args):
                if isinstance(a, list | tuple):
                    elem.append(a[i])
                elif j == 3 and overload == "Tensor" and base in ("addcmul", "addcdiv"):
                    elem.append(a[i].item())  # one scalar per tensor, held in a CPU tensor
                else:
                    elem.append(a)
            kw = dict(kwargs)
            if base in ("addcmul", "addcdiv") and len(elem) == 4:
                kw["value"] = elem.pop()  # positional in the foreach schema, keyword per tensor
            out.append(packet(*elem, **kw))
    return None if inplace_op else out


def _make_foreach(base: str, inplace_op: bool, overload: str) -> Any:
    def run(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        return _foreach(ctx, base, inplace_op, overload, args, kwargs)

    return run


def _register_foreach() -> None:
    # dir(aten) lists only ops already looked up; the dispatcher knows them all
    names = {
        op.split("::")[1].split(".")[0]
        for op in torch._C._dispatch_get_all_op_names()
        if op.startswith("aten::_foreach_")
    }
    for name in sorted(names):
        packet = getattr(aten, name)
        base = name[len("_foreach_") :]
        inplace_op = base.endswith("_")
        base = base.rstrip("_")
        if base in ("norm", "copy") or not hasattr(aten, base):
            continue
        for ov in packet.overloads():
            op = getattr(packet, ov)
            if op not in HANDLERS:
                HANDLERS[op] = _make_foreach(base, inplace_op, ov)


_register_foreach()


@handles(aten._foreach_norm.Scalar)
def _foreach_norm(
    ctx: Any, tensors: list[torch.Tensor], ord: Any = 2, dtype: Any = None
) -> list[torch.Tensor]:
    with ctx:
        return [torch.linalg.vector_norm(t, ord, dtype=dtype) for t in tensors]


@handles(aten._foreach_copy_.default)
def _foreach_copy_(
    ctx: Any, dst: list[torch.Tensor], src: list[torch.Tensor], non_blocking: bool = False
) -> None:
    for d, s in zip(dst, src, strict=True):
        d.copy_(s)


# -- fused optimizers, as their single-tensor algorithm ------------------------------------


def _check_fused(name: str, grad_scale: Any, found_inf: Any, amsgrad: bool = False) -> None:
    if grad_scale is not None or found_inf is not None or amsgrad:
        raise NondeterminismError(
            f"strict mode's {name} supports neither grad scaling nor amsgrad; "
            "use the default (for-loop) optimizer, or turn them off"
        )


def _adam_step(
    p: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    wd: float,
    eps: float,
    maximize: bool,
    decoupled: bool,
) -> None:
    """One Adam(W) update, written as torch's single-tensor Adam writes it."""
    require_f32("fused adam", p, g, m, v)
    if maximize:
        g = torch.neg(g)
    if wd != 0:
        if decoupled:
            inplace(p, torch.mul(p, 1 - lr * wd))
        else:
            g = add(g, p, wd)
    lerp_(m, g, 1 - beta1)
    inplace(v, addcmul(torch.mul(v, beta2), g, g, 1 - beta2))
    # Python float math on the host, written as torch's single-tensor Adam writes it
    bias1 = 1 - beta1**step
    bias2_sqrt = (1 - beta2**step) ** 0.5
    denom = torch.add(div(torch.sqrt(v), bias2_sqrt), eps)
    addcdiv_(p, m, denom, -(lr / bias1))


def _fused_adam(decoupled: bool) -> Any:
    def run(
        ctx: Any,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        exp_avgs: list[torch.Tensor],
        exp_avg_sqs: list[torch.Tensor],
        max_exp_avg_sqs: list[torch.Tensor],
        state_steps: list[torch.Tensor],
        *,
        lr: Any,
        beta1: float,
        beta2: float,
        weight_decay: float,
        eps: float,
        amsgrad: bool,
        maximize: bool,
        grad_scale: Any = None,
        found_inf: Any = None,
    ) -> None:
        _check_fused("fused Adam", grad_scale, found_inf, amsgrad)
        lr_f = float(lr.item() if isinstance(lr, torch.Tensor) else lr)
        for p, g, m, v, s in zip(params, grads, exp_avgs, exp_avg_sqs, state_steps, strict=True):
            _adam_step(
                p,
                g,
                m,
                v,
                float(s.item()),
                lr_f,
                beta1,
                beta2,
                weight_decay,
                eps,
                maximize,
                decoupled,
            )

    return run


for _ov in ("default", "tensor_lr"):
    if hasattr(aten._fused_adam_, _ov):
        handles(getattr(aten._fused_adam_, _ov))(_fused_adam(decoupled=False))
    if hasattr(aten._fused_adamw_, _ov):
        handles(getattr(aten._fused_adamw_, _ov))(_fused_adam(decoupled=True))


@handles(aten._fused_sgd_.default, aten._fused_sgd_.tensor_lr)
def _fused_sgd(
    ctx: Any,
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    *,
    weight_decay: float,
    momentum: float,
    lr: Any,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    is_first_step: bool,
    grad_scale: Any = None,
    found_inf: Any = None,
) -> None:
    """The fused SGD kernel as torch's single-tensor SGD computes it, op by op."""
    _check_fused("fused SGD", grad_scale, found_inf)
    lr_f = float(lr.item() if isinstance(lr, torch.Tensor) else lr)
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        require_f32("fused SGD", p, g)
        if maximize:
            g = torch.neg(g)
        if weight_decay != 0:
            g = add(g, p, weight_decay)
        if momentum != 0:
            buf = momentum_buffers[i]
            if is_first_step:
                buf.copy_(g)
            else:
                inplace(buf, add(torch.mul(buf, momentum), g, 1 - dampening))
            g = add(g, buf, momentum) if nesterov else buf
        inplace(p, add(p, g, -lr_f))


# -- random draws from the counter-based generator ------------------------------------------


def _uniform_like(ctx: Any, x: torch.Tensor) -> torch.Tensor:
    return ctx.generator.uniform(tuple(x.shape), x.device)


def _below(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
    """``uniform < p`` in ``x``'s shape, as a bool mask, with the uniforms compared as integers.

    A uniform is ``j * 2**-24`` for the top 24 bits ``j`` of a word ``w``, and
    torch compares a float32 tensor with a Python number in float32; so ``u < p``
    is ``j < L`` with ``L = ceil(float32(p) * 2**24)`` (an exact product), which
    is ``w < L * 2**8``: neither ``u`` nor ``j`` is formed.
    """
    pf = float(torch.tensor(float(p), dtype=torch.float64).to(F32))
    # nan compares false; p >= 1 admits all 2**24 values of j, p <= 0 none
    limit = 0 if pf != pf or pf <= 0 else 1 << 24 if pf >= 1 else math.ceil(pf * 2.0**24)
    return (ctx.generator.bits(x.numel(), x.device) < limit << 8).reshape(x.shape)


def _check_generator(generator: Any) -> None:
    if generator is not None:
        raise NondeterminismError(
            "strict mode draws from its own counter-based generator; a torch.Generator "
            f"({generator!r}) would make the draw device-dependent. Pass generator=None"
        )


@handles(aten.bernoulli_.float)
def _bernoulli_f(
    ctx: Any, x: torch.Tensor, p: float = 0.5, *, generator: Any = None
) -> torch.Tensor:
    _check_generator(generator)
    return inplace(x, _below(ctx, x, p))


@handles(aten.bernoulli_.Tensor)
def _bernoulli_t(
    ctx: Any, x: torch.Tensor, p: torch.Tensor, *, generator: Any = None
) -> torch.Tensor:
    _check_generator(generator)
    return inplace(x, (_uniform_like(ctx, x) < p).to(x.dtype))


@handles(aten.bernoulli.default)
def _bernoulli(ctx: Any, p: torch.Tensor, *, generator: Any = None) -> torch.Tensor:
    _check_generator(generator)
    return (_uniform_like(ctx, p) < p).to(p.dtype)


@handles(aten.bernoulli.p)
def _bernoulli_p(
    ctx: Any, x: torch.Tensor, p: float = 0.5, *, generator: Any = None
) -> torch.Tensor:
    _check_generator(generator)
    return _below(ctx, x, p).to(x.dtype)


@handles(aten.native_dropout.default)
def _native_dropout(
    ctx: Any, x: torch.Tensor, p: float, train: bool | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CUDA's fused dropout, computed as ATen's CPU dropout computes it.

    CPU dropout is ``noise = bernoulli_(1 - p); noise /= (1 - p); x * noise``,
    which reaches this mode as three ops; CUDA calls this one op instead. Both
    must give the same bits, so this one repeats those three steps.
    """
    if not train or p == 0:
        return x.clone(), torch.ones_like(x, dtype=torch.bool)
    mask = _below(ctx, x, 1.0 - p)
    noise = div(mask.to(x.dtype), 1.0 - p) if p < 1 else torch.zeros_like(x)
    return torch.mul(x, noise), mask


@handles(aten.native_dropout_backward.default)
def _native_dropout_backward(
    ctx: Any, grad: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """``grad * noise``, the backward of CPU dropout's final multiply.

    ``1 - p`` is recovered as ``1 / scale`` in double; rounded to float32 it
    equals the forward's ``1 - p`` unless that lies within 2**-53 of a float32
    rounding boundary.
    """
    noise = div(mask.to(grad.dtype), 1.0 / scale) if scale != 0 else torch.zeros_like(grad)
    return torch.mul(grad, noise)


@handles(aten.uniform_.default)
def _uniform_(
    ctx: Any, x: torch.Tensor, a: float = 0.0, b: float = 1.0, *, generator: Any = None
) -> torch.Tensor:
    _check_generator(generator)
    require_f32("uniform_", x)
    u = _uniform_like(ctx, x).to(torch.float64)
    # a + (b - a) * u in float64, rounded once
    return inplace(x, (u * (float(b) - float(a)) + float(a)).to(x.dtype))


def normal64(ctx: Any, shape: tuple[int, ...], device: Any) -> torch.Tensor:
    """Standard normals in float64 by Box-Muller from the strict generator, in a fixed layout.

    Each pair of 32-bit words gives ``u1`` in (0, 1] and ``u2`` in [0, 1) on the
    2**-24 grid, and two normals ``r cos(2 pi u2)``, ``r sin(2 pi u2)`` with
    ``r = sqrt(-2 log u1)``, from the strict log, cos and sin.
    """
    n = 1
    for d in shape:
        n *= int(d)
    pairs = (n + 1) // 2
    words = ctx.generator.bits(2 * pairs, device).reshape(pairs, 2)
    u1 = ((words[:, 0] >> 8) + 1).to(torch.float64) * 2.0**-24
    u2 = (words[:, 1] >> 8).to(torch.float64) * 2.0**-24
    r = (tr.log(u1) * -2.0).sqrt()
    theta = u2 * (2.0 * math.pi)
    z = torch.stack([r * tr.cos(theta), r * tr.sin(theta)], dim=1).reshape(-1)[:n]
    return z.reshape(shape)


@handles(aten.normal_.default)
def _normal_(
    ctx: Any, x: torch.Tensor, mean: float = 0.0, std: float = 1.0, *, generator: Any = None
) -> torch.Tensor:
    _check_generator(generator)
    require_f32("normal_", x)
    z = normal64(ctx, tuple(x.shape), x.device)
    return inplace(x, (z * float(std) + float(mean)).to(x.dtype))


@handles(aten.randn.default, aten.randn.generator)
def _randn(
    ctx: Any,
    size: list[int],
    *args: Any,
    generator: Any = None,
    dtype: Any = None,
    layout: Any = None,
    device: Any = None,
    pin_memory: Any = None,
) -> torch.Tensor:
    _check_generator(generator)
    out = normal64(ctx, tuple(size), device or "cpu")
    return out.to(dtype or F32)


@handles(aten.randn_like.default)
def _randn_like(ctx: Any, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    return normal64(ctx, tuple(x.shape), x.device).to(kwargs.get("dtype") or x.dtype)


@handles(aten.rand.default)
def _rand(
    ctx: Any,
    size: list[int],
    *,
    dtype: Any = None,
    layout: Any = None,
    device: Any = None,
    pin_memory: Any = None,
) -> torch.Tensor:
    u = ctx.generator.uniform(tuple(size), device or "cpu")
    return u if dtype in (None, F32) else u.to(dtype)


@handles(aten.rand_like.default)
def _rand_like(ctx: Any, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    u = _uniform_like(ctx, x)
    return u if kwargs.get("dtype") in (None, F32) else u.to(kwargs["dtype"])
