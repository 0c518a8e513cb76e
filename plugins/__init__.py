"""The framework integrations as pluggy plugins, and the built-in plugin.

This is layer 4 (DESIGN.md, "Layers"): it may import ``ree``, the core of
``gensyn_integrations`` and ``coordinator``, and nothing of the face. The face
registers :mod:`plugins.builtin` on every plugin manager it builds; third
parties add plugins through the entry point group ``gensyn_integrations``.

What the executors train with lives here too, in private packages that the
face re-exports: :mod:`plugins._lightning` (the trace callback and the
safetensors CheckpointIO), :mod:`plugins._hf` (``GensynCallback`` and the
executor ``Trainer``), :mod:`plugins._accel` (the ``Accelerator``) and
:mod:`plugins._data` (the reproducible DataLoader they share).
"""

from __future__ import annotations

__all__ = ["BUILTIN_PLUGINS"]

BUILTIN_PLUGINS: tuple[str, ...] = (
    "plugins.builtin",
    "plugins.torch_executor",
    "plugins.lightning_executor",
    "plugins.hf_executor",
    "plugins.accelerate_executor",
)
"""Modules the face registers always, whatever autoload and the block list say."""
