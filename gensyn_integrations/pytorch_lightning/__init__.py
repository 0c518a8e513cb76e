"""gensyn-integrations for the standalone ``pytorch_lightning`` package.

The same classes as :mod:`gensyn_integrations.lightning`, built on
``pytorch_lightning``'s own base classes: the two packages are separate copies
whose classes don't mix.
"""

from __future__ import annotations

import pytorch_lightning as pl

from gensyn_integrations._lightning.strategy import GensynStrategyMixin
from plugins._lightning.twin_pytorch_lightning import GensynTraceCallback, SafetensorsCheckpointIO

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
