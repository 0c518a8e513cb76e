"""gensyn-integrations: train with Lightning, Transformers or Accelerate on a verified network.

Public names are imported on first use, so ``import gensyn_integrations``
(and its config) imports neither torch nor any training framework::

    from gensyn_integrations import GensynStrategy   # imports lightning.pytorch now
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gensyn_integrations.config import load_config
    from gensyn_integrations.errors import ConfigError, GensynError

    # the strategy lands with issue [E], the callback with the Transformers issue
    from gensyn_integrations.lightning import GensynStrategy  # type: ignore[attr-defined]
    from gensyn_integrations.transformers import GensynCallback  # type: ignore[attr-defined]

__all__ = [
    "ConfigError",
    "GensynCallback",
    "GensynError",
    "GensynStrategy",
    "__version__",
    "load_config",
]

_LAZY = {
    "GensynStrategy": "gensyn_integrations.lightning",
    "GensynCallback": "gensyn_integrations.transformers",
    "GensynError": "gensyn_integrations.errors",
    "ConfigError": "gensyn_integrations.errors",
    "load_config": "gensyn_integrations.config",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use, and keep it."""
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gensyn-integrations")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "0+unknown"
