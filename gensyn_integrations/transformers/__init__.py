"""gensyn-integrations for the Hugging Face ``transformers`` Trainer.

``GensynCallback`` records a run's trace of state roots under the REE: add it
to any ``Trainer`` with ``callbacks=[GensynCallback()]``. ``GensynTrainer`` is a
``Trainer`` that adds the callback itself, chooses the REE's sampler before the
loader is built, and tells the callback where a resume starts.

Both run in the executor role (train here, record the trace). The client role,
``GensynTrainer(role="client").train()`` sending the job to the network, arrives
with the network client ([D1]) and is refused with a clear error until then.
Importing this module imports ``transformers`` (and torch), never Lightning.
"""

from __future__ import annotations

from gensyn_integrations._hf.callback import GensynCallback
from gensyn_integrations._hf.settings import REE_FILE
from gensyn_integrations._hf.trainer import GensynTrainer

__all__ = ["REE_FILE", "GensynCallback", "GensynTrainer"]
