"""The built-in plugin: what every gensyn installation offers without extras.

It is registered by the face on every plugin manager, before third-party
plugins, and cannot be blocked. Framework executors (Lightning,
Transformers, Accelerate) live in their own modules next to this one.
"""

from __future__ import annotations

from collections.abc import Mapping

from gensyn_integrations.hookspecs import StoreFactory, hookimpl


@hookimpl
def gensyn_storage_backends() -> Mapping[str, StoreFactory]:
    """Offer the built-in stores: ``local`` and ``ipfs`` (DESIGN.md, "Real parts", storage).

    Each entry maps a ``storage.backend`` name to a factory taking the
    ``storage`` config section.
    """
    from coordinator.storage import IpfsStore, LocalStore  # httpx only when IpfsStore is named

    return {"local": LocalStore.from_config, "ipfs": IpfsStore.from_config}
