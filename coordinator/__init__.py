"""The network layer: chain client, content-addressed storage, and the nodes.

Importing ``coordinator`` imports nothing else; each subpackage
(``coordinator.chain``, ``coordinator.storage``) is imported on its own, so
a store never pulls in web3 and the chain client never pulls in httpx.
``coordinator`` sits above ``ree`` and the core of ``gensyn_integrations``
and never imports ``plugins`` (DESIGN.md, "Layers").
"""
