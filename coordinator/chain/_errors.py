"""Errors of the chain client, and the decoder that turns revert data into them.

A revert carries ABI-encoded data: ``Error(string)``, ``Panic(uint256)``, or one
of the contracts' custom errors. :class:`RevertDecoder` knows every error of
every artifact, so a :class:`ChainError` names the error and its arguments, and
adds a hint that says what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address, to_hex

from ree._errors import GensynError

_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
_PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)

# What to do about the errors a caller can fix (the rest are protocol bugs or attacks).
_HINTS: Mapping[str, str] = {
    "ERC20InsufficientBalance": "the sender holds too few AI tokens; mint or transfer some first",
    "ERC20InsufficientAllowance": "approve the contract to spend the amount first",
    "InsufficientFreeStake": "stake more, or wait until locked bonds are released",
    "TooEarly": "wait until chain time passes the deadline, then retry",
    "TooLate": "the deadline has passed; this action can no longer be taken",
    "RevealPhaseNotOpen": "wait until every replica has committed or the commit deadline passes",
    "CommitmentMismatch": "reveal exactly the fields and salt that were committed, from the committing account",
    "BadProof": "the Merkle proof does not match the committed root, index and leaf count",
    "NotGovernance": "send this from the governance address",
    "StillUnbonding": "wait for the unbonding delay to pass",
    "NoRefereeAvailable": "more staked referees must join the pool, or wait for the no-referee timeout",
    "BadTaskParams": "fix the task parameters named in the message",
    "NotStaked": "stake at least the task's bond before spot-checking",
}


class ChainError(GensynError, RuntimeError):
    """A transaction or call failed on chain; carries the decoded revert.

    ``error`` is the revert's name (a custom error, ``Error`` or ``Panic``) or
    None when the node gave no data; ``args`` its decoded arguments.
    """

    def __init__(
        self,
        action: str,
        error: str | None,
        args: Mapping[str, Any] | None = None,
        *,
        detail: str = "",
        tx_hash: str | None = None,
    ) -> None:
        self.action = action
        self.error = error
        self.args_decoded: dict[str, Any] = dict(args or {})
        self.tx_hash = tx_hash
        shown = ", ".join(f"{k}={_show(v)}" for k, v in self.args_decoded.items())
        what = f"{error}({shown})" if error else (detail or "reverted without data")
        hint = _HINTS.get(error or "", "")
        msg = f"{action} failed on chain: {what}"
        if tx_hash:
            msg += f" [tx {tx_hash}]"
        if hint:
            msg += f". What to do: {hint}"
        super().__init__(msg)


class ChainConfigError(GensynError, ValueError):
    """The chain connection or deployment settings are wrong (URL, key, deployment file)."""


def _show(v: Any) -> str:
    if isinstance(v, bytes | bytearray):
        return "0x" + bytes(v).hex()
    return repr(v)


class RevertDecoder:
    """Maps 4-byte selectors of every error in a set of ABIs to their names and argument types."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = [_abi_type(i) for i in item["inputs"]]
                sig = f"{item['name']}({','.join(types)})"
                names = [i["name"] or f"arg{k}" for k, i in enumerate(item["inputs"])]
                self._errors[function_signature_to_4byte_selector(sig)] = (
                    item["name"],
                    types,
                    names,
                )

    def decode(self, data: bytes) -> tuple[str | None, dict[str, Any]]:
        """The error name and arguments in revert ``data``; (None, {}) when it is empty or unknown."""
        if len(data) < 4:
            return None, {}
        sel, body = data[:4], data[4:]
        try:
            if sel == _ERROR_STRING:
                return "Error", {"reason": abi_decode(["string"], body)[0]}
            if sel == _PANIC:
                return "Panic", {"code": abi_decode(["uint256"], body)[0]}
            if sel in self._errors:
                name, types, names = self._errors[sel]
                values = [
                    to_checksum_address(v) if t == "address" else v
                    for t, v in zip(types, abi_decode(types, body), strict=True)
                ]
                return name, dict(zip(names, values, strict=True))
        except Exception:  # noqa: BLE001 - malformed revert data is reported raw below
            return None, {"data": to_hex(data)}
        return None, {"selector": to_hex(sel), "data": to_hex(data)}


def _abi_type(param: Mapping[str, Any]) -> str:
    t = str(param["type"])
    if t.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){t[5:]}"
    return t
