"""The Lightning executor's machinery: the trace callback and the safetensors ``CheckpointIO``.

``lightning.pytorch`` and ``pytorch_lightning`` are separate copies of the same
code whose classes don't mix (NOTES.md), so each concrete class is built twice
from the mixins in :mod:`plugins._lightning.trace_callback` and
:mod:`plugins._lightning.checkpoint_io`: once in :mod:`plugins._lightning.twin_lightning`,
once in :mod:`plugins._lightning.twin_pytorch_lightning`. :mod:`plugins.lightning_executor`
trains with them on a solver; :mod:`gensyn_integrations.lightning` and
:mod:`gensyn_integrations.pytorch_lightning` re-export them and add
``GensynStrategy``, whose client role belongs to the face (DESIGN.md, "Layers").
Nothing here but the twin modules imports either Lightning package.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["twins"]


def twins(flavour: str) -> ModuleType:
    """The module holding the concrete classes for ``flavour`` (``lightning`` or ``pytorch_lightning``)."""
    if flavour == "pytorch_lightning":
        from plugins._lightning import twin_pytorch_lightning

        return twin_pytorch_lightning
    from plugins._lightning import twin_lightning

    return twin_lightning
