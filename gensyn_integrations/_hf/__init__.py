"""Private parts of :mod:`gensyn_integrations.transformers`: the client role of ``GensynTrainer``.

What it ships (:mod:`._hf.ship`), how it trains on the network (:mod:`._hf.client`)
and the ``GensynTrainer`` that adds that role (:mod:`._hf.trainer`). The
executor's pieces (``GensynCallback``, the executor ``Trainer``, data order,
resume) live below the face, in :mod:`plugins._hf` (DESIGN.md, "Layers").
"""
