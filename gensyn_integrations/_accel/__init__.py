"""Private parts of :mod:`gensyn_integrations.accelerate`: the Accelerator, its data loader, the launcher."""
