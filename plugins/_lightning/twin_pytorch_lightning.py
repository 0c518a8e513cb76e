"""The executor's Lightning classes for the standalone ``pytorch_lightning`` package.

The same classes as :mod:`plugins._lightning.twin_lightning`, built on
``pytorch_lightning``'s own base classes: the two packages are separate copies
whose classes don't mix. Re-exported by :mod:`gensyn_integrations.pytorch_lightning`.
"""

from __future__ import annotations

import pytorch_lightning as pl
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO

from plugins._lightning.checkpoint_io import SafetensorsCheckpointIOMixin
from plugins._lightning.trace_callback import TraceCallbackMixin

__all__ = ["GensynTraceCallback", "SafetensorsCheckpointIO"]


class SafetensorsCheckpointIO(SafetensorsCheckpointIOMixin, CheckpointIO):
    """Lightning checkpoints as REE checkpoints: safetensors plus canonical JSON."""


class GensynTraceCallback(TraceCallbackMixin, pl.Callback):
    """Record a Lightning run's trace: a state root every ``commit_interval`` optimizer steps."""

    _pl = pl
    _checkpoint_io_cls = SafetensorsCheckpointIO
