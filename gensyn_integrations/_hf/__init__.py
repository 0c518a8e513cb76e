"""Private parts of :mod:`gensyn_integrations.transformers`: the callback, the trainer, data order.

Only :mod:`gensyn_integrations._hf.callback` and :mod:`gensyn_integrations._hf.trainer`
import transformers; :mod:`gensyn_integrations._hf.data` needs torch and ``ree`` alone.
"""
