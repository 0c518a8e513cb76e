"""The Transformers executor's machinery: ``GensynCallback``, the executor ``Trainer``, data order, resume.

:mod:`plugins.hf_executor` trains with these on a solver, and
:mod:`gensyn_integrations.transformers` re-exports them for users (its
``GensynTrainer`` adds the client role on top). They import ``ree``, the core of
``gensyn_integrations`` and transformers, never the face (DESIGN.md, "Layers").
Only :mod:`plugins._hf.callback` and :mod:`plugins._hf.trainer` import
transformers; :mod:`plugins._hf.data` needs torch and ``ree`` alone.
"""
