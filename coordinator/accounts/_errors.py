"""Errors of accounts: keystores, passwords, amounts and the devnet faucet.

Each leaf also inherits the builtin it stands for (STYLE.md, "Errors"), and its
message says what was wrong, with the value, and what to do.
"""

from __future__ import annotations

from ree._errors import GensynError

__all__ = [
    "AccountError",
    "AccountExistsError",
    "AccountNotFoundError",
    "AmountError",
    "FaucetError",
    "KeystoreError",
    "PasswordError",
    "WrongPasswordError",
]


class AccountError(GensynError):
    """Root of the errors about accounts, keystores and amounts."""


class KeystoreError(AccountError, ValueError):
    """A keystore file or directory is unreadable or malformed."""


class WrongPasswordError(AccountError, ValueError):
    """The password does not decrypt the keystore (its MAC does not match)."""


class PasswordError(AccountError, ValueError):
    """No usable password: none given, empty, unreadable file, or the two prompts differ."""


class AccountNotFoundError(AccountError, LookupError):
    """No keystore holds the address or alias asked for, or several could be meant."""


class AccountExistsError(AccountError, ValueError):
    """The keystore already holds this address or alias."""


class AmountError(AccountError, ValueError):
    """An amount of ETH or AI is not a number, negative, in another unit, or too precise."""


class FaucetError(AccountError, RuntimeError):
    """The faucet refused: not a devnet, or the deployer cannot fund the request."""
