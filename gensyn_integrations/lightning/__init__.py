"""gensyn-integrations for ``lightning.pytorch`` (the ``lightning`` package).

``GensynTraceCallback`` records a run's trace of state roots under the REE, under
any strategy; ``SafetensorsCheckpointIO`` saves Lightning checkpoints as REE
checkpoints, with no pickles. The twin for the standalone ``pytorch_lightning``
package is :mod:`gensyn_integrations.pytorch_lightning`.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

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
