"""The hand-written dag-pb and UnixFS codecs: round trips, and strict refusal of bad bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.storage import MalformedObjectError
from coordinator.storage._dagpb import (
    TYPE_FILE,
    PBLink,
    PBNode,
    UnixFSData,
    decode_pbnode,
    decode_unixfs,
    encode_pbnode,
    encode_unixfs,
)

u64 = st.integers(0, 2**64 - 1)
links = st.builds(
    PBLink,
    hash=st.binary(min_size=1, max_size=40),
    name=st.none() | st.text(max_size=12),
    tsize=st.none() | u64,
)
nodes = st.builds(
    PBNode, links=st.lists(links, max_size=5).map(tuple), data=st.none() | st.binary(max_size=64)
)
unixfs = st.builds(
    UnixFSData,
    type=st.integers(0, 5),
    data=st.none() | st.binary(max_size=64),
    filesize=st.none() | u64,
    blocksizes=st.lists(u64, max_size=6).map(tuple),
    hash_type=st.none() | u64,
    fanout=st.none() | u64,
    mode=st.none() | st.integers(0, 2**32 - 1),
    mtime=st.none() | st.binary(max_size=12),
)


@given(nodes)
def test_pbnode_round_trip(node: PBNode) -> None:
    assert decode_pbnode(encode_pbnode(node)) == node


@given(unixfs)
def test_unixfs_round_trip(data: UnixFSData) -> None:
    assert decode_unixfs(encode_unixfs(data)) == data


def test_packed_blocksizes_are_read_too() -> None:
    # field 4, wire type 2, 3 bytes: varints 1, 2, 300
    packed = encode_unixfs(UnixFSData(TYPE_FILE, filesize=303)) + bytes([0x22, 4, 1, 2, 0xAC, 0x02])
    assert decode_unixfs(packed).blocksizes == (1, 2, 300)


def test_links_are_written_before_data_with_empty_names() -> None:
    block = encode_pbnode(PBNode((PBLink(b"\x01", "", 5),), b"D"))
    # Links=2 {Hash=1 0x01, Name=2 "", Tsize=3 5}, then Data=1 "D"
    assert block == bytes.fromhex("12070a010112001805") + bytes.fromhex("0a0144")


_LINK = encode_pbnode(PBNode((PBLink(b"\x01", "", 1),)))
_DATA = encode_pbnode(PBNode(data=b"x"))
BAD_NODES = [
    pytest.param(_DATA + _LINK, "Data must come last", id="data-before-links"),
    pytest.param(_DATA + _DATA, "Data must come last", id="data-twice"),
    pytest.param(bytes([0x1A, 0x00]), "unexpected field 3", id="unknown-field"),
    pytest.param(bytes([0x10, 0x01]), "unexpected field 2", id="links-as-varint"),
    pytest.param(bytes([0x0A, 0x05, 0x01]), "claims 5 bytes", id="length-overrun"),
    pytest.param(bytes([0x0A]), "truncated varint", id="truncated-key"),
    pytest.param(bytes([0x0A]) + b"\xff" * 11, "longer than 10 bytes", id="endless-varint"),
    pytest.param(bytes([0x0A]) + b"\xff" * 9 + b"\x7f", "overflows 64 bits", id="varint-overflow"),
    pytest.param(bytes([0x12, 0x02, 0x18, 0x01]), "Hash field is missing", id="link-without-hash"),
    pytest.param(bytes([0x12, 0x05, 0x12, 0x00, 0x0A, 0x01, 0x01]), "out of order", id="link-fields-out-of-order"),
    pytest.param(bytes([0x12, 0x06, 0x0A, 0x01, 0x01, 0x12, 0x01, 0xFF]), "not UTF-8", id="name-not-utf8"),
    pytest.param(bytes([0x12, 0x05, 0x0A, 0x01, 0x01, 0x1A, 0x00]), "wire type 2, not 0", id="tsize-as-bytes"),
    pytest.param(bytes([0x0B]), "unsupported wire type 3", id="group-wire-type"),
]  # fmt: skip


@pytest.mark.parametrize(("block", "fragment"), BAD_NODES)
def test_malformed_dag_pb_is_refused(block: bytes, fragment: str) -> None:
    with pytest.raises(MalformedObjectError, match=fragment):
        decode_pbnode(block)


BAD_UNIXFS = [
    pytest.param(bytes([0x12, 0x00]), "Type field is missing", id="no-type"),
    pytest.param(bytes([0x08, 0x02, 0x08, 0x02]), "appears twice", id="type-twice"),
    pytest.param(bytes([0x08, 0x02, 0x48, 0x01]), "unexpected field 9", id="unknown-field"),
    pytest.param(bytes([0x08, 0x02, 0x1A, 0x00]), "unexpected field 3", id="filesize-as-bytes"),
]


@pytest.mark.parametrize(("data", "fragment"), BAD_UNIXFS)
def test_malformed_unixfs_is_refused(data: bytes, fragment: str) -> None:
    with pytest.raises(MalformedObjectError, match=fragment):
        decode_unixfs(data)


@given(st.binary(max_size=64))
def test_random_bytes_either_decode_or_raise_malformed(raw: bytes) -> None:
    for decode in (decode_pbnode, decode_unixfs):
        with contextlib.suppress(MalformedObjectError):
            decode(raw)
