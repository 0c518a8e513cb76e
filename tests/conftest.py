"""Suite-wide settings: hypothesis profiles, and a guard that every test kills what it starts."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI runs on 2 cores within a fixed budget: bounded examples, no deadlines (timing is
# never asserted), and derandomized so a red run is reproducible from its log.
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
