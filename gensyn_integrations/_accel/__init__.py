"""Private parts of :mod:`gensyn_integrations.accelerate`: the launcher and the client role (``gensyn launch --remote``).

The ``Accelerator`` itself, its traced loader and the executor run protocol live
below the face, in :mod:`plugins._accel` (DESIGN.md, "Layers").
"""
