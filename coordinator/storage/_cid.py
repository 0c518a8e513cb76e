"""CIDs: parse, check and print the content identifiers ``ipfs add`` prints.

A CID names a block by the hash of its bytes and says how to read them (its
codec). Only what Kubo's ``ipfs add`` produces is verified here:

* CIDv0: ``Qm...`` (base58btc of a sha2-256 multihash), always dag-pb;
* CIDv1: ``varint(1) ‖ varint(codec) ‖ multihash``, printed as base32 with the
  multibase prefix ``b`` (``bafk...`` raw, ``bafy...`` dag-pb).

Parsing also accepts base58btc (``z``, which js-ipfs prints), upper-case
base32 (``B``) and base16 (``f``/``F``), and prints the canonical form.
Hashes other than sha2-256 and codecs other than raw and dag-pb are refused
with :class:`UnsupportedCIDError`: a block we cannot re-hash is never trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Final

from coordinator.storage._errors import InvalidCIDError, UnsupportedCIDError

CODEC_RAW: Final = 0x55
CODEC_DAG_PB: Final = 0x70
HASH_SHA2_256: Final = 0x12
DIGEST_LEN: Final = 32

# Names for the codes people are likely to paste, so an error can say what it saw.
_CODEC_NAMES: Final = {
    0x55: "raw",
    0x70: "dag-pb",
    0x71: "dag-cbor",
    0x0129: "dag-json",
    0x0200: "json",
    0x0202: "car",
    0x78: "git-raw",
    0x72: "libp2p-key",
}
_HASH_NAMES: Final = {
    0x00: "identity",
    0x11: "sha1",
    0x12: "sha2-256",
    0x13: "sha2-512",
    0x16: "sha3-256",
    0x1B: "keccak-256",
    0x1E: "blake3",
    0xB220: "blake2b-256",
}

_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX: Final = {c: i for i, c in enumerate(_B58_ALPHABET)}
_MAX_VARINT_BYTES: Final = 9  # the multiformats unsigned-varint limit
_HOW: Final = "pass the CID exactly as `ipfs add` printed it (e.g. bafk..., bafy... or Qm...)"


def _name(table: dict[int, str], code: int) -> str:
    return f"0x{code:x} ({table[code]})" if code in table else f"0x{code:x}"


def encode_uvarint(n: int) -> bytes:
    """The unsigned LEB128 varint of ``n`` (multiformats and protobuf use the same one)."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _decode_uvarint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    """Decode a minimal multiformats varint at ``pos``; returns (value, next position)."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise InvalidCIDError(f"CID is truncated inside its {what} varint; {_HOW}")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise InvalidCIDError(f"CID's {what} varint is not minimally encoded; {_HOW}")
            return value, pos + i + 1
    raise InvalidCIDError(f"CID's {what} varint is longer than {_MAX_VARINT_BYTES} bytes; {_HOW}")


def b58encode(raw: bytes) -> str:
    """Bitcoin base58 (base58btc) of ``raw``, leading zero bytes kept as ``1``."""
    n = int.from_bytes(raw, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    pad = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; raises :class:`InvalidCIDError` on a foreign character."""
    n = 0
    for c in text:
        digit = _B58_INDEX.get(c)
        if digit is None:
            raise InvalidCIDError(f"{c!r} is not a base58btc character in {text!r}; {_HOW}")
        n = n * 58 + digit
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def b32encode(raw: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (the multibase ``b`` alphabet)."""
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _b32decode(text: str) -> bytes:
    if text != text.lower() and text != text.upper():
        raise InvalidCIDError(f"base32 CID body {text!r} mixes upper and lower case; {_HOW}")
    if len(text) % 8 in (1, 3, 6):
        raise InvalidCIDError(
            f"base32 CID body {text!r} has {len(text)} characters, which no whole number of "
            f"bytes encodes to: it was cut short or extended; {_HOW}"
        )
    try:
        return base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except binascii.Error as exc:
        raise InvalidCIDError(f"{text!r} is not valid base32 ({exc}); {_HOW}") from None


def _b16decode(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InvalidCIDError(f"{text!r} is not valid base16; {_HOW}") from None


@dataclass(frozen=True, slots=True)
class CID:
    """A parsed content identifier: version, codec and sha2-256 digest.

    ``str(cid)`` is the canonical text (``Qm...`` for v0, base32 ``b...`` for
    v1); ``cid.binary`` is what a dag-pb link holds; ``cid.key`` names the
    block in a blockstore, shared by every CID with the same multihash.
    """

    version: int
    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise InvalidCIDError(f"CID version {self.version!r} does not exist; use 0 or 1")
        if self.version == 0 and self.codec != CODEC_DAG_PB:
            raise InvalidCIDError(
                f"CIDv0 is always dag-pb, not codec {_name(_CODEC_NAMES, self.codec)}; "
                "use version 1 for raw blocks"
            )
        if self.codec not in (CODEC_RAW, CODEC_DAG_PB):
            raise UnsupportedCIDError(
                f"CID codec {_name(_CODEC_NAMES, self.codec)} is not supported: only raw (0x55) "
                "and dag-pb (0x70) files, as `ipfs add` makes them, can be verified here"
            )
        if len(self.digest) != DIGEST_LEN:
            raise InvalidCIDError(
                f"a sha2-256 digest has {DIGEST_LEN} bytes, this one has {len(self.digest)}"
            )

    @classmethod
    def of_block(cls, version: int, codec: int, block: bytes | bytearray | memoryview) -> CID:
        """The CID of ``block`` hashed with sha2-256."""
        return cls(version, codec, hashlib.sha256(block).digest())

    @property
    def multihash(self) -> bytes:
        """``0x12 0x20 ‖ digest``: the multihash, which keys blocks on disk."""
        return bytes((HASH_SHA2_256, DIGEST_LEN)) + self.digest

    @property
    def binary(self) -> bytes:
        """The binary CID, as it appears in a dag-pb link."""
        if self.version == 0:
            return self.multihash
        return b"\x01" + encode_uvarint(self.codec) + self.multihash

    @property
    def key(self) -> str:
        """The blockstore key: hex of the multihash (v0 and v1 of one block share it)."""
        return self.multihash.hex()

    def to_v1(self) -> CID:
        """The same block as a CIDv1 (a v1 CID is returned unchanged)."""
        return CID(1, self.codec, self.digest)

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + b32encode(self.binary)

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def matches(self, block: bytes | bytearray | memoryview) -> bool:
        """True when ``block`` hashes to this CID's digest."""
        return hashlib.sha256(block).digest() == self.digest

    @classmethod
    def from_binary(cls, raw: bytes) -> CID:
        """Parse a binary CID (a dag-pb link's ``Hash``), v0 or v1."""
        raw = bytes(raw)
        if len(raw) == 2 + DIGEST_LEN and raw[0] == HASH_SHA2_256 and raw[1] == DIGEST_LEN:
            return cls(0, CODEC_DAG_PB, raw[2:])
        version, pos = _decode_uvarint(raw, 0, "version")
        if version != 1:
            raise InvalidCIDError(
                f"binary CID {raw.hex()!r} has version {version}; only CIDv0 and CIDv1 exist"
            )
        codec, pos = _decode_uvarint(raw, pos, "codec")
        hash_code, pos = _decode_uvarint(raw, pos, "multihash code")
        length, pos = _decode_uvarint(raw, pos, "multihash length")
        digest = raw[pos:]
        if len(digest) != length:
            raise InvalidCIDError(
                f"binary CID {raw.hex()!r} says its digest has {length} bytes but "
                f"{len(digest)} follow; {_HOW}"
            )
        if hash_code != HASH_SHA2_256:
            raise UnsupportedCIDError(
                f"CID {raw.hex()!r} uses hash {_name(_HASH_NAMES, hash_code)}; only sha2-256 "
                "(0x12), the `ipfs add` default, is verified here"
            )
        return cls(1, codec, digest)


def parse_cid(text: str | CID) -> CID:
    """Parse a CID string in any multibase this package reads; raises :class:`InvalidCIDError`."""
    if isinstance(text, CID):
        return text
    if not isinstance(text, str):
        raise InvalidCIDError(f"a CID is a str, got {type(text).__name__} {text!r:.60}; {_HOW}")
    stripped = text.strip()
    if not stripped:
        raise InvalidCIDError(f"the CID {text!r} is empty; {_HOW}")
    if len(stripped) == 46 and stripped.startswith("Qm"):
        raw = b58decode(stripped)
        if len(raw) != 2 + DIGEST_LEN or raw[:2] != bytes((HASH_SHA2_256, DIGEST_LEN)):
            raise InvalidCIDError(f"{text!r} looks like a CIDv0 but is not a sha2-256 multihash")
        return CID(0, CODEC_DAG_PB, raw[2:])
    prefix, body = stripped[0], stripped[1:]
    if prefix in "bB":
        raw = _b32decode(body)
    elif prefix == "z":
        raw = b58decode(body)
    elif prefix in "fF":
        raw = _b16decode(body)
    else:
        raise InvalidCIDError(
            f"{text!r} is not a CID: its multibase prefix {prefix!r} is not one of b, B, z, f, F "
            f"and it is not a 46-character Qm... CIDv0; {_HOW}"
        )
    if raw and raw[0] == HASH_SHA2_256:
        raise InvalidCIDError(f"{text!r} encodes a bare multihash (a CIDv0) in multibase; {_HOW}")
    try:
        return CID.from_binary(raw)
    except InvalidCIDError as exc:
        raise type(exc)(f"{text!r}: {exc}") from None


def normalize_cid(text: str | CID) -> str:
    """The canonical text of a CID: ``Qm...`` stays v0, v1 becomes base32 (``b...``)."""
    return str(parse_cid(text))
