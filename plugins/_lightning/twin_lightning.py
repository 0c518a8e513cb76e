"""The executor's Lightning classes for ``lightning.pytorch`` (the ``lightning`` package).

Re-exported by :mod:`gensyn_integrations.lightning`; the twin for the standalone
``pytorch_lightning`` package is :mod:`plugins._lightning.twin_pytorch_lightning`.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from plugins._lightning.checkpoint_io import SafetensorsCheckpointIOMixin
from plugins._lightning.trace_callback import TraceCallbackMixin

__all__ = ["GensynTraceCallback", "SafetensorsCheckpointIO"]


class SafetensorsCheckpointIO(SafetensorsCheckpointIOMixin, CheckpointIO):
    """Lightning checkpoints as REE checkpoints: safetensors plus canonical JSON."""


class GensynTraceCallback(TraceCallbackMixin, pl.Callback):
    """Record a Lightning run's trace: a state root every ``commit_interval`` optimizer steps."""

    _pl = pl
    _checkpoint_io_cls = SafetensorsCheckpointIO
