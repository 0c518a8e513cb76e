"""gensyn-integrations for the standalone ``pytorch_lightning`` package.

The same classes as :mod:`gensyn_integrations.lightning`, built on
``pytorch_lightning``'s own base classes: the two packages are separate copies
whose classes don't mix.
"""

from __future__ import annotations

import pytorch_lightning as pl
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO

from gensyn_integrations._lightning.checkpoint_io import SafetensorsCheckpointIOMixin
from gensyn_integrations._lightning.strategy import GensynStrategyMixin
from gensyn_integrations._lightning.trace_callback import TraceCallbackMixin

__all__ = ["GensynStrategy", "GensynTraceCallback", "SafetensorsCheckpointIO"]


class SafetensorsCheckpointIO(SafetensorsCheckpointIOMixin, CheckpointIO):
    """Lightning checkpoints as REE checkpoints: safetensors plus canonical JSON."""


class GensynTraceCallback(TraceCallbackMixin, pl.Callback):
    """Record a Lightning run's trace: a state root every ``commit_interval`` optimizer steps."""

    _pl = pl
    _checkpoint_io_cls = SafetensorsCheckpointIO


class GensynStrategy(GensynStrategyMixin, pl.strategies.SingleDeviceStrategy):
    """Train on the gensyn network (``role="client"``) or here under the REE (``role="executor"``)."""

    _callback_cls = GensynTraceCallback
    _checkpoint_io_cls = SafetensorsCheckpointIO


pl.strategies.StrategyRegistry.register(
    "gensyn",
    GensynStrategy,
    description="gensyn-integrations: verifiable training under the REE",
    override=True,
    role="executor",
)
