"""The client role of the two Lightning integrations, and ``GensynStrategy``'s shared behaviour.

``lightning.pytorch`` and ``pytorch_lightning`` are separate copies of the same
code whose classes don't mix (NOTES.md), so ``GensynStrategy`` is built twice
from the mixin here: once in :mod:`gensyn_integrations.lightning`, once in
:mod:`gensyn_integrations.pytorch_lightning`. The executor's pieces (the trace
callback, the safetensors CheckpointIO) live below the face, in
:mod:`plugins._lightning` (DESIGN.md, "Layers"). Nothing here imports either package.
"""
