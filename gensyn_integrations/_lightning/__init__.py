"""Shared code of the two Lightning integrations.

``lightning.pytorch`` and ``pytorch_lightning`` are separate copies of the same
code whose classes don't mix (NOTES.md), so each concrete class is built twice
from the mixins here: once in :mod:`gensyn_integrations.lightning`, once in
:mod:`gensyn_integrations.pytorch_lightning`. Nothing here imports either package.
"""
