"""TaskSpec: every setting that changes the result of a job (DESIGN.md, "Data flow", step 2).

A spec is a plain, frozen record. Its canonical JSON goes into the task bundle,
so the same job always gives the same bundle CID. Settings that change the
result but are not captured (a training callback such as EarlyStopping) are
refused with an error instead of being silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from coordinator.tasks._errors import TaskSpecError
from ree._encoding import canonical_json

SPEC_FORMAT = "gensyn-task/1"
PRECISIONS = ("fp32", "fp64")
MODES = ("device", "strict")
# Callbacks whose effect on training the executors reproduce; anything else is refused.
CAPTURED_CALLBACKS: frozenset[str] = frozenset()


def parse_policy(policy: str) -> tuple[int, int]:
    """``"replicate:k"`` or ``"spot:s"`` -> (replicas, spot_checks), as TaskMarket takes them."""
    kind, _, num = policy.partition(":")
    try:
        n = int(num or "1")
    except ValueError:
        n = -1
    if kind == "replicate" and 1 <= n <= 8:
        return n, 0
    if kind == "spot" and 1 <= n <= 255:  # TaskMarket keeps spotChecks in a uint8
        return 1, n
    raise TaskSpecError(
        f"policy {policy!r} is not 'replicate:K' (1 <= K <= 8) or 'spot:S' (1 <= S <= 255); "
        "for example 'replicate:2' or 'spot:44'"
    )


@dataclass(frozen=True)
class TaskSpec:
    """One training job: code, data, initial state, training settings, REE, policy and payment.

    Amounts are in the token's smallest unit; windows in seconds of chain time.
    ``initial_weights`` (a CID) and ``initial_root`` are filled in by
    :func:`coordinator.tasks.build_bundle`.
    """

    entry: str
    code: tuple[str, ...] = ()
    framework: str = "torch"
    init_args: dict[str, Any] = field(default_factory=dict)
    data: tuple[str, ...] = ()
    steps: int = 1
    batch_size: int = 1
    accumulation: int = 1
    clip_norm: float | None = None
    precision: str = "fp32"
    seed: int = 0
    callbacks: tuple[str, ...] = ()
    world_size: int = 1
    ree_mode: str = "device"
    fingerprint: str | None = None
    commit_interval: int = 1
    policy: str = "replicate:1"
    budget: int = 10**18
    bond: int = 10**17
    verifier_fee: int = 0
    claim_window: int = 3600
    work_window: int = 3600
    reveal_window: int = 3600
    challenge_window: int = 3600
    initial_weights: str = ""
    initial_root: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TaskSpecError` naming the first field that is wrong."""
        if ":" not in self.entry or not all(self.entry.partition(":")[::2]):
            raise TaskSpecError(
                f"entry {self.entry!r} must be 'module:function' (a file in code= without .py, "
                "or an installed module), e.g. 'recipe:build'"
            )
        for name in ("steps", "batch_size", "accumulation", "world_size", "commit_interval"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TaskSpecError(f"{name} must be an int >= 1, got {v!r}")
        if self.world_size != 1:
            raise TaskSpecError(
                f"world_size={self.world_size}: the network runs single-process tasks for now; "
                "use world_size=1"
            )
        if self.precision not in PRECISIONS:
            raise TaskSpecError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.ree_mode not in MODES:
            raise TaskSpecError(f"ree_mode {self.ree_mode!r} is not one of {MODES}")
        unknown = [c for c in self.callbacks if c not in CAPTURED_CALLBACKS]
        if unknown:
            raise TaskSpecError(
                f"callbacks {unknown!r} change training but the executor does not reproduce them; "
                "remove them from the job (results would differ between machines)"
            )
        for name in ("budget", "bond"):
            if getattr(self, name) <= 0:
                raise TaskSpecError(f"{name} must be positive, got {getattr(self, name)!r}")
        for f in self.code:
            if "/" in f or f.startswith(".") or not f.endswith(".py"):
                raise TaskSpecError(f"code file {f!r} must be a plain 'name.py' in the bundle root")
        parse_policy(self.policy)
        try:
            canonical_json(self.init_args)
            canonical_json(self.extras)
        except Exception as e:
            raise TaskSpecError(f"init_args and extras must be plain JSON values: {e}") from e

    @property
    def replicas(self) -> int:
        """k for ``replicate:k`` (1 for spot)."""
        return parse_policy(self.policy)[0]

    @property
    def spot_checks(self) -> int:
        """s for ``spot:s`` (0 for replicate)."""
        return parse_policy(self.policy)[1]

    def with_initial(self, weights_cid: str, root: str) -> TaskSpec:
        """A copy with the initial state filled in."""
        return replace(self, initial_weights=weights_cid, initial_root=root)

    def to_json(self) -> dict[str, Any]:
        """A plain dict with a format tag; :meth:`dumps` gives its canonical bytes."""
        out = asdict(self)
        out["code"], out["data"], out["callbacks"] = (
            list(self.code),
            list(self.data),
            list(self.callbacks),
        )
        out["format"] = SPEC_FORMAT
        return out

    def dumps(self) -> bytes:
        """Canonical JSON: the same spec always gives the same bytes."""
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, obj: dict[str, Any] | str | bytes) -> TaskSpec:
        """Inverse of :meth:`to_json`, every field checked."""
        if isinstance(obj, str | bytes):
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as e:
                raise TaskSpecError(f"task spec is not JSON: {e}") from e
        if not isinstance(obj, dict) or obj.get("format") != SPEC_FORMAT:
            raise TaskSpecError(f"not a {SPEC_FORMAT} document; upgrade gensyn-integrations?")
        known = {f.name for f in fields(cls)}
        extra = set(obj) - known - {"format"}
        if extra:
            raise TaskSpecError(f"task spec has unknown fields {sorted(extra)}")
        kw = {k: v for k, v in obj.items() if k in known}
        for k in ("code", "data", "callbacks"):
            if k in kw:
                kw[k] = tuple(kw[k])
        try:
            return cls(**kw)
        except TypeError as e:
            raise TaskSpecError(f"task spec is malformed: {e}") from e
