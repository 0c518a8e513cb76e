"""Accounts: encrypted keystores, passwords, token amounts, and the devnet faucet.

Keys live in Ethereum V3 keystore files (scrypt) in a keystore directory, one
per account, mode 0600. A password comes from ``GENSYN_PASSWORD``,
``GENSYN_PASSWORD_FILE`` or a hidden prompt, never from an argument.
:func:`load_signer` decrypts a keystore into the ``LocalAccount`` that
``coordinator.chain`` signs with. Importing this package does not import web3;
:func:`faucet` imports the chain client when called.
"""

from coordinator.accounts._errors import (
    AccountError,
    AccountExistsError,
    AccountNotFoundError,
    AmountError,
    FaucetError,
    KeystoreError,
    PasswordError,
    WrongPasswordError,
)
from coordinator.accounts._faucet import FaucetReceipt, faucet
from coordinator.accounts._keystore import (
    DEFAULT_KEYSTORE,
    KEYSTORE_ENV,
    SCRYPT_N,
    KeystoreEntry,
    find_account,
    import_account,
    keystore_dir,
    list_accounts,
    load_signer,
    new_account,
)
from coordinator.accounts._password import PASSWORD_ENV, PASSWORD_FILE_ENV, read_password
from coordinator.accounts._units import DECIMALS, format_amount, parse_amount

__all__ = [
    "DECIMALS",
    "DEFAULT_KEYSTORE",
    "KEYSTORE_ENV",
    "PASSWORD_ENV",
    "PASSWORD_FILE_ENV",
    "SCRYPT_N",
    "AccountError",
    "AccountExistsError",
    "AccountNotFoundError",
    "AmountError",
    "FaucetError",
    "FaucetReceipt",
    "KeystoreEntry",
    "KeystoreError",
    "PasswordError",
    "WrongPasswordError",
    "faucet",
    "find_account",
    "format_amount",
    "import_account",
    "keystore_dir",
    "list_accounts",
    "load_signer",
    "new_account",
    "parse_amount",
    "read_password",
]
