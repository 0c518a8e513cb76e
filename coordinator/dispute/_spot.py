"""Spot verification economics: how many checks, how long an interval, what it catches.

DESIGN.md, "Data flow", step 4 (``spot``). A spot task carries ``s`` paid
checks. Each check is one verifier re-executing ONE interval, the one
TaskMarket.spotIndex draws for the verifier's address from the seed fixed by
the block after the solver's reveal (TaskMarket.drawSeed). Different verifiers
draw independently, so ``s`` checks sample the ``n - 1`` intervals *with
replacement*, and a solver that faked a
fraction ``f`` of its intervals escapes all of them with probability
``(1 - f) ** s``.

The default policy (issue #6): catch a solver that fakes >= 10% of its
intervals with probability >= 99%, at <= 10% extra compute. That takes
``s = ceil(log(0.01) / log(0.9)) = 44`` checks, and at least ``s / 0.10 = 440``
intervals, since a check re-executes one interval (``steps / intervals``
optimizer steps on average) and the extra compute is ``s / intervals`` of the
training. :func:`spot_policy` picks the largest commit interval that keeps 440
intervals; a job of fewer than 440 steps cannot meet both targets, and the
policy says so (:attr:`SpotPolicy.meets_target`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from coordinator.chain import spot_index

FAKE_FRACTION = 0.10  # the smallest fraction of faked intervals the default policy must catch
DETECTION = 0.99  # ... with this probability
MAX_EXTRA = 0.10  # ... at this extra compute, as a fraction of the training
MAX_CHECKS = 255  # TaskParams.spotChecks is a uint8


def checks_needed(fake_fraction: float = FAKE_FRACTION, detection: float = DETECTION) -> int:
    """The fewest independent checks that catch a ``fake_fraction`` faker with ``detection`` probability."""
    if not 0 < fake_fraction < 1 or not 0 < detection < 1:
        raise ValueError(
            f"fake_fraction {fake_fraction!r} and detection {detection!r} must lie in (0, 1)"
        )
    return math.ceil(math.log(1 - detection) / math.log(1 - fake_fraction) - 1e-12)


def detection_theory(fake_fraction: float, checks: int) -> float:
    """P(at least one of ``checks`` independent uniform draws lands on a faked interval)."""
    return 1 - (1 - fake_fraction) ** checks


def detection_without_replacement(faked: int, intervals: int, checks: int) -> float:
    """The same for ``checks`` *distinct* intervals (for comparison; the chain draws with replacement)."""
    if checks >= intervals:
        return 1.0 if faked else 0.0
    return 1 - math.comb(intervals - faked, checks) / math.comb(intervals, checks)


@dataclass(frozen=True)
class SpotPolicy:
    """A spot task's verification settings for a job of ``steps`` optimizer steps."""

    steps: int
    checks: int
    commit_interval: int

    @property
    def intervals(self) -> int:
        """Intervals of the trace (its leaves minus the initial root): what spotIndex draws from."""
        return -(-self.steps // self.commit_interval)

    @property
    def extra_compute(self) -> float:
        """The expected re-executed steps over the training steps: ``checks / intervals``."""
        return self.checks / self.intervals

    def detection(self, fake_fraction: float = FAKE_FRACTION) -> float:
        """The theoretical detection probability against a ``fake_fraction`` faker."""
        return detection_theory(fake_fraction, self.checks)

    @property
    def meets_target(self) -> bool:
        """>= 99% detection at >= 10% faked, and <= 10% extra compute."""
        return self.detection() >= DETECTION and self.extra_compute <= MAX_EXTRA + 1e-12

    @property
    def policy(self) -> str:
        """The TaskSpec policy string, ``"spot:s"``."""
        return f"spot:{self.checks}"


def spot_policy(steps: int, *, checks: int | None = None, max_extra: float = MAX_EXTRA,
                commit_interval: int | None = None) -> SpotPolicy:  # fmt: skip
    """The default policy for a job of ``steps`` steps (see the module docstring).

    ``checks`` defaults to :func:`checks_needed` (44). ``commit_interval``
    defaults to the largest one that still leaves ``ceil(checks / max_extra)``
    intervals (1 when the job is shorter than that, and then the target's
    compute bound cannot hold).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    s = checks_needed() if checks is None else checks
    if not 1 <= s <= MAX_CHECKS:
        raise ValueError(f"checks must lie in [1, {MAX_CHECKS}], got {s!r}")
    if commit_interval is None:
        min_intervals = math.ceil(s / max_extra - 1e-9)
        # the largest ci with ceil(steps / ci) >= min_intervals
        commit_interval = max(1, (steps - 1) // max(1, min_intervals - 1))
    return SpotPolicy(steps, s, commit_interval)


@dataclass(frozen=True)
class DetectionTrial:
    """Measured against theory for one fraction of faked intervals."""

    fake_fraction: float  # requested
    faked: int  # intervals actually faked (at least one)
    intervals: int
    checks: int
    trials: int
    caught: int

    @property
    def measured(self) -> float:
        """The fraction of trials in which some check drew a faked interval."""
        return self.caught / self.trials

    @property
    def theory(self) -> float:
        """1 - (1 - faked/intervals) ** checks (with replacement, as the chain draws)."""
        return detection_theory(self.faked / self.intervals, self.checks)

    @property
    def sigma(self) -> float:
        """The binomial standard error of :attr:`measured` under the theory."""
        p = self.theory
        return math.sqrt(max(p * (1 - p), 1e-12) / self.trials)


def simulate_detection(fake_fraction: float, *, intervals: int, checks: int, trials: int,
                       seed: int = 0) -> DetectionTrial:  # fmt: skip
    """Seeded trials of the real draw (:func:`coordinator.chain.spot_index`, equal to TaskMarket.spotIndex).

    Each trial: a fresh 32-byte reveal seed, ``checks`` distinct verifier
    addresses, and a fresh random set of ``round(fake_fraction * intervals)``
    faked intervals (at least one); caught when some verifier's drawn interval
    is faked.
    """
    rng = random.Random(seed)  # noqa: S311 - a seeded simulation, not a secret
    faked_n = max(1, round(fake_fraction * intervals))
    caught = 0
    for _ in range(trials):
        reveal_seed = rng.randbytes(32)
        faked = set(rng.sample(range(1, intervals + 1), faked_n))
        verifiers = {"0x" + rng.randbytes(20).hex() for _ in range(checks)}
        if any(spot_index(reveal_seed, v, intervals + 1) in faked for v in verifiers):
            caught += 1
    return DetectionTrial(fake_fraction, faked_n, intervals, checks, trials, caught)
