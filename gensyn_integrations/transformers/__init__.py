"""gensyn-integrations for the Hugging Face ``transformers`` Trainer.

``GensynCallback`` records a run's trace of state roots under the REE: add it
to any ``Trainer`` with ``callbacks=[GensynCallback()]``. ``GensynTrainer`` is a
``Trainer`` that adds the callback itself, chooses the REE's sampler before the
loader is built, and tells the callback where a resume starts.

Both run in the executor role by default (train here, record the trace). In
the client role, ``GensynTrainer(..., role="client").train()`` (or
``callbacks=[GensynCallback(role="client")]``) sends the job to the network,
waits for the verified result and loads its weights into the model;
``trainer.receipt`` says what was bought, and ``evaluate()`` runs here on the
returned weights. What cannot travel (a model class without a source file, a
collator or loss given as a Python callable, extra callbacks, evaluation
during training...) is refused with a :class:`ShipError` that says what to change.
Importing this module imports ``transformers`` (and torch), never Lightning.
"""

from __future__ import annotations

from gensyn_integrations._hf.client import TrainerReceipt
from gensyn_integrations._hf.ship import ShipError
from gensyn_integrations._hf.trainer import GensynTrainer
from plugins._hf.callback import GensynCallback
from plugins._hf.settings import REE_FILE

__all__ = ["REE_FILE", "GensynCallback", "GensynTrainer", "ShipError", "TrainerReceipt"]
