"""A typed client over web3.py: one connection, local signing, a locked nonce manager.

It runs on py-evm in process (``web3[tester]``) for unit tests and on any JSON-RPC
URL (anvil on the devnet, an L2 or testnet in a real deployment). Every write is
signed locally and sent raw, so the same code path runs everywhere.

Why a local nonce counter: web3.py's default asks the node for the ``pending``
count on each transaction, so concurrent sends from one key collide (NOTES.md,
"Nonces"). :class:`NonceManager` hands out nonces under a lock and resynchronises
from the chain when a send fails.
"""

from __future__ import annotations

import ast
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError
from web3.logs import DISCARD
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import TxReceipt

from coordinator.chain._artifacts import Artifact, all_abis
from coordinator.chain._errors import ChainConfigError, ChainError, RevertDecoder

# py-evm's default accounts have the private keys 1..10 (eth-tester's genesis).
_TESTER_KEYS = [f"0x{i:064x}" for i in range(1, 11)]
# anvil's first dev key, from the public mnemonic "test test ... junk" (chain id 31337 only).
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # noqa: S105
ANVIL_CHAIN_ID = 31337
_GAS_HEADROOM = 1.25
_IN_PROCESS_GAS = 8_000_000
_TESTER_PREFIX = "execution reverted: "
# web3 raises these for a node's revert; py-evm raises eth-tester's TransactionFailed.
_REVERTS = (ContractCustomError, ContractLogicError, ContractPanicError, TransactionFailed)


class NonceManager:
    """Hands out consecutive nonces per account under a lock, so concurrent sends all land."""

    def __init__(self, fetch: Callable[[str], int]) -> None:
        self._fetch = fetch
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop every cached nonce (after a chain revert); the next send re-reads the chain."""
        with self._lock:
            self._next.clear()

    @contextlib.contextmanager
    def reserve(self, address: str) -> Iterator[int]:
        """Yield the next nonce for ``address``; it is consumed only if the block exits cleanly.

        The lock is held for the whole send, so nonces reach the node in order and a
        failed send never leaves a gap: the counter is re-read from the chain instead.
        """
        with self._lock:
            if address not in self._next:
                self._next[address] = self._fetch(address)
            nonce = self._next[address]
            try:
                yield nonce
            except BaseException:
                self._next.pop(address, None)
                raise
            self._next[address] = nonce + 1


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction: its gas, its decoded events, and the action's result value."""

    tx_hash: str
    block_number: int
    gas_used: int
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    value: int | None = None

    def event(self, name: str) -> dict[str, Any]:
        """The arguments of the first event called ``name``; raises KeyError if none was emitted."""
        for n, args in self.events:
            if n == name:
                return args
        raise KeyError(f"transaction {self.tx_hash} emitted no {name!r} event")


class ChainClient:
    """A connection to one chain, with local signing and revert decoding."""

    def __init__(self, w3: Web3, *, funder_key: str | None = None) -> None:
        self.w3 = w3
        self.is_local = isinstance(w3.provider, EthereumTesterProvider)
        # py-evm is not thread-safe: serialise every request to it. A node takes its own.
        self._io: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.is_local else contextlib.nullcontext()
        )
        self.nonces = NonceManager(self._pending_count)
        self.decoder = RevertDecoder(all_abis())
        self.chain_id: int = self._rpc(lambda: w3.eth.chain_id)
        self._funder = Account.from_key(funder_key) if funder_key else None
        self._contracts: list[Contract] = []

    # ------------------------------------------------------------ construction

    @classmethod
    def in_process(cls) -> ChainClient:
        """A fresh py-evm chain in this process (unit tests)."""
        return cls(Web3(EthereumTesterProvider()), funder_key=_TESTER_KEYS[0])

    @classmethod
    def connect(
        cls, rpc_url: str, *, funder_key: str | None = None, timeout: float = 30.0
    ) -> ChainClient:
        """A client on a JSON-RPC endpoint. On anvil (chain id 31337) the first dev key funds accounts."""
        if not rpc_url.startswith(("http://", "https://")):
            raise ChainConfigError(f"rpc url {rpc_url!r} must start with http:// or https://")
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        try:
            chain_id = w3.eth.chain_id
        except Exception as exc:
            raise ChainConfigError(
                f"cannot reach an EVM JSON-RPC node at {rpc_url!r} ({exc}); is it running?"
            ) from exc
        if funder_key is None and chain_id == ANVIL_CHAIN_ID:
            funder_key = ANVIL_DEV_KEY
        return cls(w3, funder_key=funder_key)

    # ------------------------------------------------------------ accounts

    @property
    def funder(self) -> LocalAccount:
        """The account that pays gas money to new accounts (a dev key on test chains)."""
        if self._funder is None:
            raise ChainConfigError("this chain has no funder key; pass funder_key= to connect()")
        return self._funder

    def new_account(self, eth: int = 10 * 10**18) -> LocalAccount:
        """A fresh local account with ``eth`` wei of gas money from the funder."""
        acct: LocalAccount = Account.create()
        if eth:
            self.send_value(self.funder, acct.address, eth)
        return acct

    def balance(self, address: str) -> int:
        """The ether balance of ``address``, in wei."""
        return int(self._rpc(lambda: self.w3.eth.get_balance(to_checksum_address(address))))

    # ------------------------------------------------------------ chain time

    def now(self) -> int:
        """The latest block's timestamp: the chain time that deadlines are measured in."""
        return int(self._rpc(lambda: self.w3.eth.get_block("latest")["timestamp"]))

    def get_logs(self, from_block: int, to_block: int, addresses: list[str]) -> list[Any]:
        """Raw logs of ``addresses`` in a block range (inclusive)."""
        flt = {"fromBlock": from_block, "toBlock": to_block, "address": addresses}
        return list(self._rpc(lambda: self.w3.eth.get_logs(flt)))  # type: ignore[arg-type]

    def block_number(self) -> int:
        """The latest block number."""
        return int(self._rpc(lambda: self.w3.eth.block_number))

    def advance_time(self, seconds: int) -> int:
        """Move chain time forward by ``seconds`` and mine a block (test chains only); returns the new time."""
        if self.is_local:
            tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
            with self._io:
                tester.time_travel(self.now() + seconds)
        else:
            self._rpc(lambda: self.w3.provider.make_request("evm_increaseTime", [seconds]))  # type: ignore[arg-type]
            self._rpc(lambda: self.w3.provider.make_request("evm_mine", []))  # type: ignore[arg-type]
        return self.now()

    def snapshot(self) -> Any:
        """Save the chain state (test chains only); :meth:`revert` returns to it."""
        if self.is_local:
            with self._io:
                return self.w3.provider.ethereum_tester.take_snapshot()  # type: ignore[attr-defined]
        return self._rpc(lambda: self.w3.provider.make_request("evm_snapshot", []))["result"]  # type: ignore[arg-type]

    def revert(self, snapshot: Any) -> None:
        """Return to a :meth:`snapshot`; the local nonce counters are re-read afterwards."""
        if self.is_local:
            with self._io:
                self.w3.provider.ethereum_tester.revert_to_snapshot(snapshot)  # type: ignore[attr-defined]
        else:
            self._rpc(lambda: self.w3.provider.make_request("evm_revert", [snapshot]))  # type: ignore[arg-type]
        self.nonces.forget()

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks (test chains only)."""
        for _ in range(blocks):
            if self.is_local:
                with self._io:
                    self.w3.provider.ethereum_tester.mine_blocks(1)  # type: ignore[attr-defined]
            else:
                self._rpc(lambda: self.w3.provider.make_request("evm_mine", []))  # type: ignore[arg-type]

    # ------------------------------------------------------------ contracts

    def contract(self, artifact: Artifact, address: str) -> Contract:
        """A web3 contract object for a deployed artifact."""
        c = self.w3.eth.contract(address=to_checksum_address(address), abi=artifact.abi)
        self._contracts.append(c)
        return c

    def deploy(self, sender: LocalAccount, artifact: Artifact, *args: Any) -> Contract:
        """Deploy ``artifact`` with constructor ``args``; returns the bound contract."""
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        tx = factory.constructor(*args)
        result = self._transact(sender, f"deploy {artifact.name}", tx, to=None)
        receipt = self._rpc(lambda: self.w3.eth.get_transaction_receipt(result.tx_hash))  # type: ignore[arg-type]
        return self.contract(artifact, receipt["contractAddress"])

    def call(self, fn: Any, action: str = "call") -> Any:
        """Run a view function; a revert raises :class:`ChainError`."""
        try:
            return self._rpc(fn.call)
        except _REVERTS as exc:
            raise self._revert_error(action, exc) from exc

    def transact(self, sender: LocalAccount, fn: Any, action: str) -> TxResult:
        """Sign, send and wait for ``fn`` (a bound contract function) from ``sender``."""
        return self._transact(sender, action, fn, to=fn.address)

    def send_value(self, sender: LocalAccount, to: str, wei: int) -> TxResult:
        """Send plain ether."""
        tx = {"to": to_checksum_address(to), "value": wei, "gas": 21000}
        return self._send(sender, "send ether", tx)

    # ------------------------------------------------------------ internals

    def _rpc(self, fn: Callable[[], Any]) -> Any:
        with self._io:
            return fn()

    def _pending_count(self, address: str) -> int:
        return int(self._rpc(lambda: self.w3.eth.get_transaction_count(address, "pending")))  # type: ignore[arg-type]

    def _fees(self) -> dict[str, int]:
        base = int(self._rpc(lambda: self.w3.eth.get_block("latest")).get("baseFeePerGas", 0) or 0)
        tip = 10**9
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def _transact(self, sender: LocalAccount, action: str, fn: Any, *, to: str | None) -> TxResult:
        base: dict[str, Any] = {"from": sender.address, "chainId": self.chain_id}
        try:
            if self.is_local:
                # py-evm estimates by binary search (~20 runs); one dry run finds reverts, and
                # the receipt's gasUsed is exact whatever limit is sent.
                # "pending": eth-tester runs a "latest" call one second before the next block
                self._rpc(lambda: self.w3.eth.call({**base, **_call_fields(fn)}, "pending"))
                gas = _IN_PROCESS_GAS
            else:
                gas = int(self._rpc(lambda: fn.estimate_gas(base)))
        except _REVERTS as exc:
            raise self._revert_error(action, exc) from exc
        tx = fn.build_transaction(
            {**base, "gas": int(gas * _GAS_HEADROOM) + 10_000, "nonce": 0, **self._fees()}
        )
        return self._send(sender, action, tx)

    def _send(self, sender: LocalAccount, action: str, tx: dict[str, Any]) -> TxResult:
        tx = {**tx, "chainId": self.chain_id, **self._fees()}
        tx.pop("from", None)
        with self.nonces.reserve(sender.address) as nonce:
            signed = sender.sign_transaction({**tx, "nonce": nonce})
            tx_hash = self._rpc(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction))
        receipt: TxReceipt = self._rpc_wait(tx_hash)
        if receipt["status"] != 1:
            raise self._replay_failure(action, sender, tx, receipt)
        return TxResult(
            tx_hash=receipt["transactionHash"].to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=self.decode_events(receipt),
        )

    def _rpc_wait(self, tx_hash: Any) -> TxReceipt:
        if self.is_local:
            return self._rpc(lambda: self.w3.eth.get_transaction_receipt(tx_hash))  # type: ignore[no-any-return]
        return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.05)

    def decode_events(self, receipt: TxReceipt) -> list[tuple[str, dict[str, Any]]]:
        """Every log in ``receipt`` from a known contract, as (event name, args), in log order."""
        out: list[tuple[int, str, dict[str, Any]]] = []
        by_address = {c.address: c for c in self._contracts}
        for log in receipt["logs"]:
            c = by_address.get(log["address"])
            if c is None:
                continue
            for ev in c.events:
                for decoded in ev().process_receipt({"logs": [log]}, errors=DISCARD):  # type: ignore[arg-type]
                    out.append((int(log["logIndex"]), decoded["event"], dict(decoded["args"])))
        out.sort(key=lambda t: t[0])
        return [(n, a) for _, n, a in out]

    def _replay_failure(
        self, action: str, sender: LocalAccount, tx: dict[str, Any], receipt: TxReceipt
    ) -> ChainError:
        call = {k: v for k, v in tx.items() if k in ("to", "data", "value", "gas")}
        call["from"] = sender.address
        tx_hash = receipt["transactionHash"].to_0x_hex()
        try:
            self._rpc(
                lambda: self.w3.eth.call(call, block_identifier=int(receipt["blockNumber"]) - 1)
            )  # type: ignore[arg-type]
        except _REVERTS as exc:
            err = self._revert_error(action, exc)
            err.tx_hash = tx_hash
            return err
        return ChainError(
            action, None, detail="reverted (the replay did not reproduce it)", tx_hash=tx_hash
        )

    def _revert_error(self, action: str, exc: BaseException) -> ChainError:
        name, args = self.decoder.decode(_revert_data(exc))
        return ChainError(action, name, args, detail=str(exc))


def _call_fields(fn: Any) -> dict[str, Any]:
    """``to`` and ``data`` of a bound contract function, or ``data`` of a constructor."""
    if getattr(fn, "address", None):
        return {"to": fn.address, "data": fn._encode_transaction_data()}
    return {"data": fn.data_in_transaction}


def _revert_data(exc: BaseException) -> bytes:
    """The raw revert data in a web3 error (hex ``data``) or, on py-evm, in the chained eth-tester error."""
    seen: BaseException | None = exc
    while seen is not None:
        data = getattr(seen, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        for a in seen.args:
            if isinstance(a, bytes | bytearray):
                return bytes(a)
            if isinstance(a, str) and _TESTER_PREFIX in a:
                # eth-tester flattens the revert bytes into its message as a Python bytes literal
                with contextlib.suppress(ValueError, SyntaxError):
                    lit = ast.literal_eval(a.split(_TESTER_PREFIX, 1)[1])
                    if isinstance(lit, bytes):
                        return lit
        seen = seen.__cause__ or seen.__context__
    return b""
