"""The Accelerate executor's machinery: the REE ``Accelerator``, its traced loader, the run protocol.

:mod:`gensyn_integrations.accelerate` re-exports :class:`plugins._accel.accelerator.Accelerator`
for users' scripts. :mod:`plugins.accelerate_executor` runs such a script in a
child process and talks to its ``Accelerator`` through :mod:`plugins._accel.run`
alone (stdlib only), so registering the plugin imports nothing of accelerate.
"""
