"""Hand-written protobuf codecs for dag-pb nodes and UnixFS file data.

Two schemas, from the dag-pb and UnixFS specs (no protobuf dependency)::

    message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
    message Data   { required DataType Type = 1; optional bytes Data = 2;
                     optional uint64 filesize = 3; repeated uint64 blocksizes = 4;
                     optional uint64 hashType = 5; optional uint64 fanout = 6;
                     optional uint32 mode = 7; optional UnixTime mtime = 8; }

Encoding follows go-merkledag byte for byte (links first, empty link names
written, ``blocksizes`` unpacked), because the bytes decide the CID. Decoding
of dag-pb is strict, as the dag-pb spec asks: fields in canonical order, no
unknown or repeated fields, valid UTF-8 names. A violation raises
:class:`MalformedObjectError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from coordinator.storage._cid import encode_uvarint
from coordinator.storage._errors import MalformedObjectError

# protobuf wire types
_VARINT: Final = 0
_LEN: Final = 2

# UnixFS DataType
TYPE_RAW: Final = 0
TYPE_DIRECTORY: Final = 1
TYPE_FILE: Final = 2
TYPE_METADATA: Final = 3
TYPE_SYMLINK: Final = 4
TYPE_HAMT_SHARD: Final = 5
TYPE_NAMES: Final = {
    0: "Raw",
    1: "Directory",
    2: "File",
    3: "Metadata",
    4: "Symlink",
    5: "HAMTShard",
}


@dataclass(frozen=True, slots=True)
class PBLink:
    """One dag-pb link: the child's binary CID, its name and its cumulative size."""

    hash: bytes
    name: str | None = ""
    tsize: int | None = None


@dataclass(frozen=True, slots=True)
class PBNode:
    """A dag-pb node: its links, then an opaque ``Data`` payload (UnixFS here)."""

    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class UnixFSData:
    """The UnixFS ``Data`` message of a file node (``mode``/``mtime`` are kept as raw fields)."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: bytes | None = None


# --------------------------------------------------------------------------- wire helpers


def _key(field: int, wire: int) -> bytes:
    return encode_uvarint(field << 3 | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, _LEN) + encode_uvarint(len(payload)) + payload


def _varint_field(field: int, value: int) -> bytes:
    return _key(field, _VARINT) + encode_uvarint(value)


def _read_varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise MalformedObjectError(f"{what}: truncated varint at byte {pos}")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >= 1 << 64:
                raise MalformedObjectError(f"{what}: varint at byte {pos} overflows 64 bits")
            return value, pos + i + 1
    raise MalformedObjectError(f"{what}: varint at byte {pos} is longer than 10 bytes")


def _read_field(buf: bytes, pos: int, what: str) -> tuple[int, int, int | bytes, int]:
    """Read one field at ``pos``: (field number, wire type, value, next position)."""
    key, pos = _read_varint(buf, pos, what)
    field, wire = key >> 3, key & 7
    if wire == _VARINT:
        value, pos = _read_varint(buf, pos, what)
        return field, wire, value, pos
    if wire == _LEN:
        length, pos = _read_varint(buf, pos, what)
        end = pos + length
        if end > len(buf):
            raise MalformedObjectError(
                f"{what}: field {field} claims {length} bytes but only {len(buf) - pos} remain"
            )
        return field, wire, bytes(buf[pos:end]), end
    raise MalformedObjectError(f"{what}: field {field} has unsupported wire type {wire}")


# --------------------------------------------------------------------------- dag-pb


def encode_pbnode(node: PBNode) -> bytes:
    """The canonical dag-pb bytes of ``node`` (links first, then data)."""
    parts = []
    for link in node.links:
        body = _len_field(1, link.hash)
        if link.name is not None:
            body += _len_field(2, link.name.encode("utf-8"))
        if link.tsize is not None:
            body += _varint_field(3, link.tsize)
        parts.append(_len_field(2, body))
    if node.data is not None:
        parts.append(_len_field(1, node.data))
    return b"".join(parts)


def _decode_link(buf: bytes) -> PBLink:
    what = "dag-pb link"
    pos, last = 0, 0
    hash_: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    while pos < len(buf):
        field, wire, value, pos = _read_field(buf, pos, what)
        if field <= last or field > 3:
            raise MalformedObjectError(
                f"{what}: field {field} is unknown, repeated or out of order (Hash=1, Name=2, Tsize=3)"
            )
        last = field
        expected = _VARINT if field == 3 else _LEN
        if wire != expected:
            raise MalformedObjectError(
                f"{what}: field {field} has wire type {wire}, not {expected}"
            )
        if field == 1:
            assert isinstance(value, bytes)
            hash_ = value
        elif field == 2:
            assert isinstance(value, bytes)
            try:
                name = value.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedObjectError(f"{what}: Name {value!r} is not UTF-8") from None
        else:
            assert isinstance(value, int)
            tsize = value
    if hash_ is None:
        raise MalformedObjectError(f"{what}: the Hash field is missing")
    return PBLink(hash_, name, tsize)


def decode_pbnode(block: bytes | memoryview) -> PBNode:
    """Parse dag-pb bytes strictly: Links (field 2) first, then at most one Data (field 1)."""
    buf = bytes(block)
    what = "dag-pb node"
    pos = 0
    links: list[PBLink] = []
    data: bytes | None = None
    while pos < len(buf):
        field, wire, value, pos = _read_field(buf, pos, what)
        if wire != _LEN or field not in (1, 2):
            raise MalformedObjectError(
                f"{what}: unexpected field {field} (wire type {wire}); only Links=2 and Data=1 exist"
            )
        assert isinstance(value, bytes)
        if data is not None:
            raise MalformedObjectError(f"{what}: a field follows Data; Data must come last, once")
        if field == 2:
            links.append(_decode_link(value))
        else:
            data = value
    return PBNode(tuple(links), data)


# --------------------------------------------------------------------------- UnixFS


def encode_unixfs(d: UnixFSData) -> bytes:
    """The UnixFS ``Data`` bytes, fields in number order as go-unixfs writes them."""
    out = _varint_field(1, d.type)
    if d.data is not None:
        out += _len_field(2, d.data)
    if d.filesize is not None:
        out += _varint_field(3, d.filesize)
    for size in d.blocksizes:
        out += _varint_field(4, size)
    if d.hash_type is not None:
        out += _varint_field(5, d.hash_type)
    if d.fanout is not None:
        out += _varint_field(6, d.fanout)
    if d.mode is not None:
        out += _varint_field(7, d.mode)
    if d.mtime is not None:
        out += _len_field(8, d.mtime)
    return out


def _packed_varints(buf: bytes, what: str) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        value, pos = _read_varint(buf, pos, what)
        out.append(value)
    return out


def decode_unixfs(buf: bytes) -> UnixFSData:
    """Parse a UnixFS ``Data`` message; ``blocksizes`` may be packed or not."""
    what = "UnixFS data"
    pos = 0
    fields: dict[int, int | bytes] = {}
    blocksizes: list[int] = []
    wires = {1: _VARINT, 2: _LEN, 3: _VARINT, 5: _VARINT, 6: _VARINT, 7: _VARINT, 8: _LEN}
    while pos < len(buf):
        field, wire, value, pos = _read_field(buf, pos, what)
        if field == 4:
            if isinstance(value, bytes):
                blocksizes.extend(_packed_varints(value, what))
            else:
                blocksizes.append(value)
            continue
        if field not in wires or wires[field] != wire:
            raise MalformedObjectError(f"{what}: unexpected field {field} with wire type {wire}")
        if field in fields:
            raise MalformedObjectError(f"{what}: field {field} appears twice")
        fields[field] = value
    if 1 not in fields:
        raise MalformedObjectError(f"{what}: the required Type field is missing")

    def num(f: int) -> int | None:
        v = fields.get(f)
        assert v is None or isinstance(v, int)
        return v

    def raw(f: int) -> bytes | None:
        v = fields.get(f)
        assert v is None or isinstance(v, bytes)
        return v

    type_ = num(1)
    assert type_ is not None
    return UnixFSData(
        type=type_,
        data=raw(2),
        filesize=num(3),
        blocksizes=tuple(blocksizes),
        hash_type=num(5),
        fanout=num(6),
        mode=num(7),
        mtime=raw(8),
    )
