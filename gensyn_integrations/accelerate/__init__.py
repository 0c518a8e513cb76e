"""gensyn-integrations for Hugging Face ``accelerate``.

``from gensyn_integrations.accelerate import Accelerator`` is the one-line change:
the class is accelerate's ``Accelerator`` that applies the REE, makes the first
prepared DataLoader's order reproducible, takes a state root every
``commit_interval`` real optimizer steps (``accelerator.trace``), and adds an REE
checkpoint to ``save_state`` folders. Start it with ``gensyn launch`` (a drop-in
for ``accelerate launch`` that reads ``gensyn.yaml``) or with ``accelerate launch
--config_file`` and a plain accelerate config. The client role arrives with the
network client ([D1]).
"""

from __future__ import annotations

from gensyn_integrations._accel.accelerator import Accelerator
from gensyn_integrations._hf.settings import REE_FILE

__all__ = ["REE_FILE", "Accelerator"]
