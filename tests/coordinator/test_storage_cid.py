"""CIDs: Kubo's vectors, chunk boundaries, the balanced layout, streaming, and bad CIDs."""

from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path

import multiformats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.storage import (
    CHUNK_SIZE,
    CID,
    MAX_LINKS,
    CIDMismatchError,
    InvalidCIDError,
    UnsupportedCIDError,
    compute_cid,
    compute_cid_stream,
    normalize_cid,
    parse_cid,
    verify_cid,
)
from coordinator.storage._cid import CODEC_DAG_PB, CODEC_RAW, b58decode, b58encode
from coordinator.storage._dagpb import decode_pbnode, decode_unixfs
from coordinator.storage._unixfs import DagBuilder, build
from tests.coordinator.storage_helpers import blob

HELLO = b"hello world"

# (size of blob(size), CIDv1 raw leaves, CIDv0), as printed by a js-ipfs 0.66.1 daemon with
# Kubo's defaults spelled out; test_storage_ipfs.py re-checks them against the live daemon.
VECTORS = [
    (0, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
    (1, "bafkreic75tvwn76in44nsutynrwws3dzyln4eoo5j2i3izzj245cp62x5e", "QmS6mcrMTFsZnT3wAptqEb8NpBPnv1H6WwZBMzEjT8SSDv"),
    (262143, "bafkreibnbdj54nbukhdunai4x4rupfapbmxcti6jpfwi2wzuvqrann7a6e", "QmXNhkGnWt3U1fNGxwtP4eZpiVcEtGPLpbHuERrY56iWdc"),
    (262144, "bafkreifqzkqqvrfxd6pecw5rvnssyviaabbwsc5j2p6xcnkvbul7egsq5e", "QmPa4GTqL1PLYA9z5vCvV2YeiSPnfWDiLKo14k2NxWuF8t"),
    (262145, "bafybeic74rzgu3bjh72c2njwkwerucvyvuw74bgritbpnkllro3xpjjppu", "QmenUZ8wGyfn8ucU6SasvGRJAjkf6JXLXoRjmmEagrSRJd"),
    (174 * 262144, "bafybeiemrvc2vtvyz5xozkhtuf4xwzh7c256diykblfv7xxeogf3vipm2m", "QmcVgfTTsXe3PdzBd7c3AptPsWsWf34T4HyCHdaLBq9FqG"),
    (174 * 262144 + 1, "bafybeicus6wtclxa75umws636jctwodoldxgpgczlrc25znll2w7s6vkbm", "QmQAH2Et2G4GNMG2qnBk3hV8CjtAiKR1NSoNGR2BgEVt9h"),
]  # fmt: skip


def test_hello_world_matches_kubo_published_cids() -> None:
    assert compute_cid(HELLO) == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    assert compute_cid(HELLO, cid_version=0) == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"


def test_hello_world_v0_block_is_the_go_merkledag_encoding() -> None:
    blocks: list[bytes] = []
    build(HELLO, cid_version=0, sink=lambda cid, block: blocks.append(bytes(block)))
    assert blocks == [bytes.fromhex("0a110802120b68656c6c6f20776f726c64180b")]


@pytest.mark.parametrize(("size", "v1", "v0"), VECTORS, ids=[str(v[0]) for v in VECTORS])
def test_chunk_boundaries_and_multi_level_sizes(size: int, v1: str, v0: str) -> None:
    data = blob(size)
    assert compute_cid(data) == v1
    assert compute_cid(data, cid_version=0) == v0
    assert compute_cid_stream(io.BytesIO(data)) == v1


def _tree(data: bytes, version: int = 1) -> tuple[CID, dict[CID, bytes]]:
    blocks: dict[CID, bytes] = {}
    root = build(data, cid_version=version, sink=lambda cid, b: blocks.__setitem__(cid, bytes(b)))
    return root, blocks


def _children(blocks: dict[CID, bytes], cid: CID) -> list[CID]:
    return [CID.from_binary(link.hash) for link in decode_pbnode(blocks[cid]).links]


def _depth(blocks: dict[CID, bytes], cid: CID) -> int:
    if cid.codec == CODEC_RAW or not _children(blocks, cid):
        return 0
    depths = {_depth(blocks, c) for c in _children(blocks, cid)}
    assert len(depths) == 1, "a balanced DAG keeps every leaf at the same depth"
    return 1 + depths.pop()


@pytest.mark.parametrize(
    ("chunks", "root_links", "depth"),
    [(1, 0, 0), (2, 2, 1), (MAX_LINKS, MAX_LINKS, 1), (MAX_LINKS + 1, 2, 2)],
)
def test_balanced_layout(chunks: int, root_links: int, depth: int) -> None:
    # Repeating one chunk keeps this fast; the layout depends only on the chunk count.
    data = blob(CHUNK_SIZE) * chunks
    root, blocks = _tree(data)
    assert (
        len(_children(blocks, root)) == root_links
        if root.codec == CODEC_DAG_PB
        else root_links == 0
    )
    assert _depth(blocks, root) == depth
    if chunks == MAX_LINKS + 1:
        first, last = _children(blocks, root)
        assert len(_children(blocks, first)) == MAX_LINKS
        assert len(_children(blocks, last)) == 1  # go-unixfs's balanced builder wraps the last leaf
    if root.codec == CODEC_DAG_PB:
        meta = decode_unixfs(decode_pbnode(blocks[root]).data or b"")
        assert meta.filesize == len(data)
        assert sum(meta.blocksizes) == len(data)


def test_tsize_is_the_cumulative_size_of_the_subtree() -> None:
    root, blocks = _tree(blob(3 * CHUNK_SIZE + 5), version=0)
    node = decode_pbnode(blocks[root])
    assert [link.tsize for link in node.links] == [
        len(blocks[CID.from_binary(link.hash)]) for link in node.links
    ]
    assert all(link.name == "" for link in node.links)


@settings(max_examples=30)
@given(
    data=st.binary(max_size=3 * CHUNK_SIZE // 4) | st.integers(0, 3 * CHUNK_SIZE).map(blob),
    cuts=st.lists(st.integers(0, 3 * CHUNK_SIZE), max_size=8),
    version=st.sampled_from([0, 1]),
)
def test_streaming_equals_whole_bytes(data: bytes, cuts: list[int], version: int) -> None:
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    parts = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    expected = compute_cid(data, cid_version=version)
    assert compute_cid_stream(iter(parts), cid_version=version) == expected
    assert compute_cid(bytearray(data), cid_version=version) == expected
    assert compute_cid(memoryview(data), cid_version=version) == expected


class _Trickle(io.RawIOBase):
    """A pipe-like binary file that returns at most 1000 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]  # narrower, enough here
        chunk = self._data.read(min(len(b), 1000))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_short_reads_are_reassembled_into_full_chunks() -> None:
    data = blob(2 * CHUNK_SIZE + 3)
    assert compute_cid_stream(_Trickle(data)) == compute_cid(data)


def test_a_path_is_hashed_as_a_stream(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(blob(CHUNK_SIZE + 9))
    assert compute_cid_stream(path) == compute_cid(blob(CHUNK_SIZE + 9))


def test_a_str_is_refused_as_ambiguous() -> None:
    with pytest.raises(TypeError, match="pathlib.Path"):
        compute_cid_stream("hello world")  # type: ignore[arg-type]  # a wrong type, on purpose
    with pytest.raises(TypeError, match="compute_cid_stream"):
        compute_cid("hello world")  # type: ignore[arg-type]  # a wrong type, on purpose


def test_text_mode_file_is_refused() -> None:
    with pytest.raises(TypeError, match="binary mode"):
        compute_cid_stream(io.StringIO("abc"))  # type: ignore[arg-type]  # a wrong type, on purpose


def test_unknown_cid_version_is_refused() -> None:
    with pytest.raises(InvalidCIDError, match="cid_version=2"):
        compute_cid(HELLO, cid_version=2)


def test_builder_refuses_a_short_chunk_in_the_middle() -> None:
    builder = DagBuilder()
    builder.add(b"x" * 10)
    with pytest.raises(ValueError, match="except the last"):
        builder.add(b"y")


def test_verify_cid_accepts_the_data_and_refuses_a_flipped_bit() -> None:
    data = blob(CHUNK_SIZE + 1)
    verify_cid(data, compute_cid(data))
    verify_cid(data, compute_cid(data, cid_version=0))
    tampered = bytearray(data)
    tampered[CHUNK_SIZE] ^= 1
    with pytest.raises(CIDMismatchError, match="altered"):
        verify_cid(bytes(tampered), compute_cid(data))


# ----------------------------------------------------------------------------- parsing


@settings(max_examples=50)
@given(digest=st.binary(min_size=32, max_size=32), codec=st.sampled_from([CODEC_RAW, CODEC_DAG_PB]))
def test_cid_text_agrees_with_the_multiformats_library(digest: bytes, codec: int) -> None:
    cid = CID(1, codec, digest)
    theirs = multiformats.CID.decode(str(cid))
    assert theirs.version == 1
    assert theirs.codec.code == codec
    assert bytes(theirs.digest) == cid.multihash
    assert parse_cid(str(theirs.encode("base58btc"))) == cid
    assert parse_cid(str(cid).upper()) == cid
    assert normalize_cid(str(theirs.encode("base16"))) == str(cid)
    v0 = CID(0, CODEC_DAG_PB, digest)
    assert str(v0) == str(multiformats.CID("base58btc", 0, "dag-pb", v0.multihash))
    assert parse_cid(str(v0)) == v0
    assert v0.key == v0.to_v1().key


@given(st.binary(max_size=40))
def test_base58_round_trip(raw: bytes) -> None:
    assert b58decode(b58encode(raw)) == raw


def test_js_ipfs_base58_cid_normalises_to_base32() -> None:
    assert (
        normalize_cid("zb2rhj7crUKTQYRGCRATFaQ6YFLTde2YzdqbbhAASkL9uRDXn")
        == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    )


_HELLO_V1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
BAD_CIDS = [
    pytest.param("", InvalidCIDError, "empty", id="empty"),
    pytest.param("   ", InvalidCIDError, "empty", id="blank"),
    pytest.param("hello", InvalidCIDError, "multibase prefix 'h'", id="no-multibase"),
    pytest.param("Qm" + "1" * 44, InvalidCIDError, "sha2-256 multihash", id="v0-garbage"),
    pytest.param("Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyf0", InvalidCIDError, "base58btc", id="v0-bad-char"),
    pytest.param(_HELLO_V1[:-3], InvalidCIDError, "digest has 32 bytes but 30 follow", id="truncated"),
    pytest.param(_HELLO_V1[:-4], InvalidCIDError, "cut short", id="truncated-odd-length"),
    pytest.param(_HELLO_V1 + "aa", InvalidCIDError, "digest", id="too-long"),
    pytest.param("b" + "!" * 20, InvalidCIDError, "base32", id="bad-base32"),
    pytest.param("bAfkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e", InvalidCIDError, "mixes", id="mixed-case"),
    pytest.param("f0170", InvalidCIDError, "truncated inside its multihash code", id="cut-before-hash"),
    pytest.param("f0180", InvalidCIDError, "truncated inside its codec", id="cut-in-varint"),
    # a CIDv2 prefix: version 2, raw, sha2-256
    pytest.param("f02551220" + "00" * 32, InvalidCIDError, "version 2", id="version-2"),
    pytest.param("f01711220" + "00" * 32, UnsupportedCIDError, "dag-cbor", id="dag-cbor"),
    pytest.param("f01551620" + "00" * 32, UnsupportedCIDError, "sha3-256", id="sha3"),
    pytest.param("f01550000", UnsupportedCIDError, "identity", id="identity-hash"),
    pytest.param("f1220" + "00" * 32, InvalidCIDError, "bare multihash", id="multibase-v0"),
    pytest.param("f018000", InvalidCIDError, "not minimally encoded", id="non-minimal-varint"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "error", "fragment"), BAD_CIDS)
def test_bad_cids_are_refused_with_a_clear_error(
    text: str, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment) as info:
        parse_cid(text)
    assert isinstance(info.value, ValueError)


def test_parse_cid_refuses_a_non_string() -> None:
    with pytest.raises(InvalidCIDError, match="is a str"):
        parse_cid(b"bafk")  # type: ignore[arg-type]  # a wrong type, on purpose


def test_random_strings_never_crash_the_parser() -> None:
    rng = random.Random(7)
    alphabet = "bafkreiQmz0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 70)))
        with contextlib.suppress(InvalidCIDError):
            parse_cid(text)
