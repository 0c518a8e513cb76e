"""gensyn-integrations for Hugging Face ``accelerate``.

``from gensyn_integrations.accelerate import Accelerator`` is the one-line change:
the class is accelerate's ``Accelerator`` that applies the REE, makes the first
prepared DataLoader's order reproducible, takes a state root every
``commit_interval`` real optimizer steps (``accelerator.trace``), and adds an REE
checkpoint to ``save_state`` folders. Start it with ``gensyn launch`` (a drop-in
for ``accelerate launch`` that reads ``gensyn.yaml``) or with ``accelerate launch
--config_file`` and a plain accelerate config.

The client role is ``gensyn launch --remote --steps N train.py [ARGS...]``
(:mod:`gensyn_integrations._accel.remote`): the script travels as source with
its arguments; a solver runs it on one rank with its ``Accelerator`` in the
executor role, which takes the run's settings, start checkpoint and end step
from the environment (:mod:`plugins._accel.run`); the verified
final REE checkpoint comes back to ``--result`` (load it with
``accelerator.load_ree_checkpoint(path)``). ``Accelerator(role="client")`` is
refused: a script cannot send itself while it runs.
"""

from __future__ import annotations

from plugins._accel.accelerator import Accelerator
from plugins._hf.settings import REE_FILE

__all__ = ["REE_FILE", "Accelerator"]
