"""gensyn-integrations for ``lightning.pytorch`` (the ``lightning`` package).

``GensynTraceCallback`` records a run's trace of state roots under the REE, under
any strategy; ``SafetensorsCheckpointIO`` saves Lightning checkpoints as REE
checkpoints, with no pickles. The twin for the standalone ``pytorch_lightning``
package is :mod:`gensyn_integrations.pytorch_lightning`.
"""

from __future__ import annotations

import lightning.pytorch as pl

from gensyn_integrations._lightning.strategy import GensynStrategyMixin
from plugins._lightning.twin_lightning import GensynTraceCallback, SafetensorsCheckpointIO

__all__ = ["GensynStrategy", "GensynTraceCallback", "SafetensorsCheckpointIO"]


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
