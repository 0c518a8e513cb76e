"""Which network a client talks to: the configured one, or the embedded devnet.

DESIGN.md, "Data flow", step 1: with ``network.rpc_url`` set (``gensyn.yaml``,
``GENSYN_NETWORK__RPC_URL``, ``-o network.rpc_url=...``), the client connects
to that node and binds the deployment file ``network.deployment``, signs with
the keystore account ``network.account`` (its password read the way the CLI
reads it: ``$GENSYN_PASSWORD``, ``$GENSYN_PASSWORD_FILE``, or a prompt), and
stores blobs in the ``storage`` backend. Without it, the call starts the
embedded devnet and stops it at the end.

The ``gensyn`` chain commands and :func:`gensyn_integrations._remote.run_remote`
both connect through here, so they agree on every default and message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gensyn_integrations.errors import UsageError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from coordinator.accounts import KeystoreEntry
    from coordinator.chain import ChainClient, Protocol
    from gensyn_integrations.config import GensynConfig

DEFAULT_DEPLOYMENT = Path(".gensyn/deployment.json")


@dataclass
class Network:
    """A chain to post on, the account that pays, and the store that carries blobs."""

    protocol: Protocol
    account: LocalAccount
    store: Any
    rpc_url: str
    # our own devnet: it stops with the call, and its chain time may be moved
    embedded: bool = False

    def advance_time(self, seconds: int) -> None:
        """Move the embedded devnet's chain time; a real network's clock is left alone."""
        if self.embedded:
            self.protocol.client.advance_time(seconds)


# ---------------------------------------------------------------------- accounts


def keystore_path(config: GensynConfig, explicit: str | None = None, *,
                  env: Mapping[str, str] | None = None) -> Path:  # fmt: skip
    """The keystore directory: ``explicit``, config ``network.keystore``, ``$GENSYN_KEYSTORE``, the default."""
    from coordinator.accounts import keystore_dir

    return keystore_dir(explicit or config.network.keystore, env=env)


def pick_account(config: GensynConfig, *, keystore: str | None = None, account: str | None = None,
                 env: Mapping[str, str] | None = None) -> KeystoreEntry:  # fmt: skip
    """The account to act as: ``account``, config ``network.account``, or the keystore's only one."""
    from coordinator.accounts import AccountNotFoundError, find_account, list_accounts

    ks = keystore_path(config, keystore, env=env)
    wanted = account or config.network.account
    if wanted:
        return find_account(wanted, ks)
    entries = list_accounts(ks)
    if len(entries) == 1:
        return entries[0]
    if not entries:
        raise AccountNotFoundError(
            f"the keystore {str(ks)!r} holds no account; create one with `gensyn account new` "
            "or `gensyn account import`, or point --keystore at yours"
        )
    raise AccountNotFoundError(
        f"the keystore {str(ks)!r} holds {len(entries)} accounts "
        f"({', '.join(e.label for e in entries)}); choose one with --account, "
        "or set network.account"
    )


def load_signer(config: GensynConfig, *, keystore: str | None = None, account: str | None = None,
                env: Mapping[str, str] | None = None) -> LocalAccount:  # fmt: skip
    """Decrypt the acting account's keystore, its password from the environment or a prompt."""
    from coordinator.accounts import load_signer as decrypt
    from coordinator.accounts import read_password

    entry = pick_account(config, keystore=keystore, account=account, env=env)
    password = read_password(f"{entry.label} ({entry.address})", env=env)
    return decrypt(entry.address, password, keystore=entry.path.parent)


# ---------------------------------------------------------------------- chain


def rpc_url(config: GensynConfig, explicit: str | None = None) -> str:
    """The node's URL: ``explicit``, else config ``network.rpc_url``."""
    url = explicit or config.network.rpc_url
    if not url:
        raise UsageError(
            "no chain to talk to: network.rpc_url is not set. Set it, e.g. "
            "`gensyn -o network.rpc_url=http://127.0.0.1:8545 ...` or "
            "GENSYN_NETWORK__RPC_URL, or start a devnet with `gensyn devnet`"
        )
    return url


def deployment_path(config: GensynConfig) -> Path:
    """The deployment file: config ``network.deployment``, else ``.gensyn/deployment.json``."""
    return Path(config.network.deployment or DEFAULT_DEPLOYMENT)


def connect(config: GensynConfig, explicit_rpc: str | None = None) -> tuple[ChainClient, Protocol]:
    """Connect to the configured node and bind the configured deployment, checking they match."""
    from coordinator.chain import ChainClient, ChainConfigError, Deployment, Protocol

    url = rpc_url(config, explicit_rpc)
    client = ChainClient.connect(url)
    want = config.network.chain_id
    if want is not None and want != client.chain_id:
        raise ChainConfigError(
            f"the node at {url!r} is chain {client.chain_id}, but network.chain_id is {want}; "
            "point network.rpc_url at the right node, or fix network.chain_id"
        )
    path = deployment_path(config)
    dep = Deployment.read(path)
    if dep.chain_id != client.chain_id:
        raise ChainConfigError(
            f"the deployment file {str(path)!r} is for chain {dep.chain_id}, but the node at "
            f"{url!r} is chain {client.chain_id}; point network.deployment at this chain's file"
        )
    code = client.w3.eth.get_code(dep.token)
    if not code:
        raise ChainConfigError(
            f"there is no contract at the token address {dep.token} on {url!r}: the deployment "
            f"file {str(path)!r} is stale (did the devnet restart?). Redeploy with "
            "`gensyn contracts deploy`, or point network.deployment at the current file"
        )
    return client, Protocol(client, dep)


def make_store(config: GensynConfig) -> Any:
    """The store the ``storage`` section names, built by the plugin that offers its backend."""
    from gensyn_integrations._manager import get_plugin_manager
    from gensyn_integrations.plugins import make_store as build

    return build(get_plugin_manager(config), config)


def configured(config: GensynConfig) -> bool:
    """True when the config names a network (``network.rpc_url``)."""
    return bool(config.network.rpc_url)


def open_network(config: GensynConfig, *, env: Mapping[str, str] | None = None) -> Network:
    """The configured network: node, deployment, signer and store, each checked."""
    _, protocol = connect(config)
    account = load_signer(config, env=env)
    return Network(protocol, account, make_store(config), rpc_url(config))


@contextlib.contextmanager
def embedded_network(root: Path, *, frameworks: tuple[str, ...]) -> Iterator[Network]:
    """Start the embedded devnet under ``root`` (one solver) for one call; stop it on exit."""
    from coordinator.devnet import devnet
    from coordinator.storage import LocalStore

    with devnet(root, solvers=1, verifiers=0, referees=0, frameworks=frameworks) as dn:
        yield Network(dn.protocol, dn.user, LocalStore(dn.store_path), dn.rpc_url, embedded=True)
