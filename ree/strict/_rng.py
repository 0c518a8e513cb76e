"""The REE's counter-based generator: Threefry-2x32 (20 rounds) on int64 tensors.

Threefry uses only 32-bit additions, rotations and XORs, which are exact integer
ops on every device, so a draw depends only on ``(seed, counter)``: never on the
device, the thread count or the order kernels run in. The generator's state is
two integers, which is the ``rng/ree`` leaf of a strict-mode state root
(DESIGN.md, "The state schema"). Each draw of ``n`` values uses counters
``[counter, counter + n)`` and advances the counter by ``n``.
"""

from __future__ import annotations

import torch

from ree._errors import ReeConfigError

_MASK32 = 0xFFFFFFFF
_PARITY = 0x1BD11BDA
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_UINT64 = 1 << 64
_CHUNK = 1 << 15  # blocks per pass: the 20 rounds then run in cache


def threefry2x32(
    c0: torch.Tensor, c1: torch.Tensor, k0: int, k1: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32-20 of counter words ``(c0, c1)`` (int64 tensors in [0, 2**32)) under key ``(k0, k1)``.

    Matches Random123's ``threefry2x32`` with 20 rounds. Words live in int64.
    ``x1`` is masked to 32 bits after each round (its rotation needs a clean
    word); ``x0`` only takes additions and feeds an XOR whose result is masked,
    so its carries above bit 31 never reach a result and it is masked once, at
    the end (it stays below 2**38). Every op is in place on fresh tensors, to
    spare the allocator.
    """
    ks = (k0 & _MASK32, k1 & _MASK32, (_PARITY ^ k0 ^ k1) & _MASK32)
    x0 = c0 + ks[0]
    x1 = (c1 + ks[1]).bitwise_and_(_MASK32)
    tmp = torch.empty_like(x1)
    for r in range(20):
        rot = _ROTATIONS[r % 8]
        x0.add_(x1)
        # rotl(x1, rot) ^ x0 = ((x1 << rot) | (x1 >> (32 - rot))) ^ x0, cut to 32 bits
        torch.bitwise_right_shift(x1, 32 - rot, out=tmp)
        x1.bitwise_left_shift_(rot).bitwise_or_(tmp).bitwise_xor_(x0).bitwise_and_(_MASK32)
        if r % 4 == 3:
            s = r // 4 + 1
            x0.add_(ks[s % 3])
            x1.add_(ks[(s + 1) % 3] + s).bitwise_and_(_MASK32)
    return x0.bitwise_and_(_MASK32), x1


class StrictGenerator:
    """A counter-based generator whose whole state is ``[seed, counter]``.

    ``seed`` is the 64-bit key; ``counter`` counts 32-bit words drawn so far.
    """

    def __init__(self, seed: int = 0, counter: int = 0) -> None:
        for name, v in (("seed", seed), ("counter", counter)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < _UINT64:
                raise ReeConfigError(
                    f"strict generator {name} must be an int in [0, 2**64), got {v!r}"
                )
        self.seed = seed
        self.counter = counter

    def state(self) -> list[int]:
        """The ``rng/ree`` leaf: ``[seed, counter]``."""
        return [self.seed, self.counter]

    def set_state(self, state: list[int] | tuple[int, int]) -> None:
        """Restore a state returned by :meth:`state` (from a checkpoint's ``rng/ree`` leaf)."""
        if not isinstance(state, list | tuple) or len(state) != 2:
            raise ReeConfigError(f"a strict generator state is [seed, counter], got {state!r}")
        fresh = StrictGenerator(*state)
        self.seed, self.counter = fresh.seed, fresh.counter

    def bits(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` uniformly random 32-bit words as int64, and advance the counter by ``n``.

        Word ``i`` of the stream is output word ``i % 2`` of the Threefry block
        with 64-bit counter ``i // 2``, so a draw is the same however the stream
        was split into earlier draws.
        """
        first, offset = divmod(self.counter, 2)
        blocks = (offset + n + 1) // 2
        out = torch.empty((blocks, 2), dtype=torch.int64, device=device)
        k0, k1 = self.seed & _MASK32, self.seed >> 32
        for b0 in range(0, blocks, _CHUNK):
            ctr = (
                torch.arange(b0, min(blocks, b0 + _CHUNK), dtype=torch.int64, device=device) + first
            )
            # a 64-bit block counter: low and high words (first < 2**63, so no int64 overflow)
            x0, x1 = threefry2x32(ctr & _MASK32, (ctr >> 32) & _MASK32, k0, k1)
            out[b0 : b0 + _CHUNK, 0] = x0
            out[b0 : b0 + _CHUNK, 1] = x1
        self.counter = (self.counter + n) % _UINT64
        return out.reshape(-1)[offset : offset + n]

    def uniform(
        self, shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Float32 uniforms in [0, 1) on the 2**-24 grid (exact: 24 random bits times 2**-24)."""
        n = 1
        for s in shape:
            n *= int(s)
        u = (self.bits(n, device) >> 8).to(torch.float32) * (2.0**-24)
        return u.reshape(shape)
