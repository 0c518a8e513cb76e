"""LocalStore: round trips, tampering, hostile DAGs, size limits, retention, and sharing."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.storage import (
    CHUNK_SIZE,
    CID,
    MAX_BLOCK_BYTES,
    CIDMismatchError,
    InvalidStoreError,
    LocalStore,
    MalformedObjectError,
    NotFoundError,
    ObjectTooLargeError,
    Source,
    Store,
    UnsupportedCIDError,
    compute_cid,
    parse_cid,
    store_from_config,
)
from coordinator.storage._cid import CODEC_DAG_PB, CODEC_RAW
from coordinator.storage._dagpb import (
    TYPE_DIRECTORY,
    TYPE_FILE,
    PBLink,
    PBNode,
    UnixFSData,
    encode_pbnode,
    encode_unixfs,
)
from coordinator.storage._packs import PackWriter
from tests.coordinator.storage_helpers import blob


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """One store for the property tests (hypothesis refuses function-scoped fixtures)."""
    return LocalStore(tmp_path_factory.mktemp("local") / "store")


def _blocks(store: LocalStore) -> list[bytes]:
    """The multihashes the store's index holds."""
    return sorted(row[0] for row in store._index.rows())


def _leftovers(store: LocalStore) -> list[Path]:
    return sorted((store.path / "tmp").iterdir())


# ----------------------------------------------------------------------------- round trips


@settings(max_examples=25)
@given(
    data=st.binary(max_size=CHUNK_SIZE // 2) | st.integers(0, 3 * CHUNK_SIZE).map(blob),
    kind=st.sampled_from(["bytes", "bytearray", "memoryview", "file", "iterable"]),
)
def test_put_get_round_trip(shared_store: LocalStore, data: bytes, kind: str) -> None:
    sources: dict[str, Source] = {
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "file": io.BytesIO(data),
        "iterable": iter([data[:7], data[7:]]),
    }
    cid = shared_store.put(sources[kind])
    assert cid == compute_cid(data)
    assert shared_store.get(cid) == data
    assert shared_store.has(cid)


def test_multi_level_round_trip_from_a_path(store: LocalStore, tmp_path: Path) -> None:
    data = blob(174 * CHUNK_SIZE + 1)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    cid = store.put(path)
    assert cid == "bafybeicus6wtclxa75umws636jctwodoldxgpgczlrc25znll2w7s6vkbm"
    assert store.get(cid) == data
    assert _leftovers(store) == []


def test_cid_version_0_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "v0", cid_version=0)
    data = blob(2 * CHUNK_SIZE + 1)
    cid = store.put(data)
    assert cid == compute_cid(data, cid_version=0)
    assert cid.startswith("Qm")
    assert store.get(cid) == data
    assert store.pins() == [cid]


def test_open_streams_with_partial_reads(store: LocalStore) -> None:
    data = blob(3 * CHUNK_SIZE + 17)
    cid = store.put(data)
    with store.open(cid) as reader:
        assert reader.size == len(data)
        assert str(reader.cid) == cid
        assert reader.read(10) == data[:10]
        buf = bytearray(CHUNK_SIZE)
        n = reader.readinto(buf)
        assert bytes(buf[:n]) == data[10 : 10 + n]
        assert reader.read() == data[10 + n :]
        assert reader.read() == b""


def test_identical_content_is_stored_once(store: LocalStore) -> None:
    data = blob(CHUNK_SIZE) * 3  # three identical leaves
    cid = store.put(data)
    assert store.put(data) == cid
    assert len(_blocks(store)) == 2  # one leaf, one root
    assert len(list((store.path / "packs").iterdir())) == 1  # the second put wrote nothing
    assert store.get(cid) == data


def test_durable_store_round_trip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "d", durable=True)
    data = blob(5 * CHUNK_SIZE + 3)
    assert store.get(store.put(data)) == data


def test_stores_satisfy_the_protocol(store: LocalStore) -> None:
    assert isinstance(store, Store)


# ----------------------------------------------------------------------------- tampering


def _leaf(data: bytes, index: int) -> CID:
    return CID.of_block(1, CODEC_RAW, data[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE])


def _flip(store: LocalStore, cid: CID, offset: int = 100) -> None:
    """Flip one bit of the block's bytes inside its pack file."""
    path, start, _ = store._locate(cid)
    path.chmod(0o644)
    with path.open("r+b") as f:
        f.seek(start + offset)
        byte = f.read(1)[0]
        f.seek(start + offset)
        f.write(bytes([byte ^ 0x01]))


def _forget(store: LocalStore, cid: CID) -> None:
    """Lose a block, as a disk that dropped it would."""
    store._index.forget([cid.multihash])


def _drain(reader: io.BufferedIOBase, into: bytearray) -> None:
    while chunk := reader.read(50_000):
        into += chunk


def test_a_flipped_byte_in_a_leaf_raises_and_returns_no_corrupt_data(store: LocalStore) -> None:
    data = blob(4 * CHUNK_SIZE)
    cid = store.put(data)
    _flip(store, _leaf(data, 2))
    with pytest.raises(CIDMismatchError, match="tampered"):
        store.get(cid)
    # Streaming: everything handed out before the error is the true prefix.
    store.put(data)  # repairs the block the failed read dropped
    _flip(store, _leaf(data, 2))
    got = bytearray()
    with store.open(cid) as reader, pytest.raises(CIDMismatchError):
        _drain(reader, got)
    assert len(got) <= 2 * CHUNK_SIZE
    assert bytes(got) == data[: len(got)]


def test_a_bad_block_is_dropped_and_a_new_put_repairs_it(store: LocalStore) -> None:
    data = blob(2 * CHUNK_SIZE)
    cid = store.put(data)
    _flip(store, _leaf(data, 1))
    with pytest.raises(CIDMismatchError):
        store.get(cid)
    assert not store.has(cid)  # the bad block was dropped from the index
    store.put(data)
    assert store.get(cid) == data


def test_a_deleted_pack_reads_as_absent_and_a_put_restores_it(store: LocalStore) -> None:
    data = blob(2 * CHUNK_SIZE)
    cid = store.put(data)
    (pack,) = (store.path / "packs").iterdir()
    pack.unlink()
    with pytest.raises(NotFoundError, match="pack is gone"):
        store.get(cid)
    assert store.put(data) == cid
    assert store.get(cid) == data


def test_a_truncated_pack_raises(store: LocalStore) -> None:
    data = blob(2 * CHUNK_SIZE)
    cid = store.put(data)
    path, _, _ = store._locate(parse_cid(cid))  # the root is the pack's last block
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CIDMismatchError):
        store.get(cid)


def test_a_tampered_root_raises_before_any_byte(store: LocalStore) -> None:
    data = blob(2 * CHUNK_SIZE)
    cid = parse_cid(store.put(data))
    _flip(store, cid, offset=3)
    with pytest.raises(CIDMismatchError):
        store.open(cid)


def test_an_oversized_block_is_refused(store: LocalStore) -> None:
    cid = _plant(store, b"\0" * (MAX_BLOCK_BYTES + 1), CODEC_RAW)
    with pytest.raises(ObjectTooLargeError, match="block limit"):
        store.get(cid)


def test_a_missing_object_is_not_found(store: LocalStore) -> None:
    cid = compute_cid(b"never stored")
    with pytest.raises(NotFoundError, match=cid) as info:
        store.get(cid)
    assert isinstance(info.value, KeyError)
    assert not store.has(cid)


# ----------------------------------------------------------------------------- hostile DAGs


def _plant(store: LocalStore, block: bytes, codec: int = CODEC_DAG_PB) -> CID:
    cid = CID.of_block(1, codec, block)
    writer = PackWriter(store._index, store._packs, store._tmp, durable=False)
    writer.append(cid.multihash, block)
    writer.commit()
    return cid


def _node(
    children: list[CID],
    blocksizes: list[int],
    filesize: int | None,
    type_: int = TYPE_FILE,
) -> bytes:
    meta = UnixFSData(type_, filesize=filesize, blocksizes=tuple(blocksizes))
    links = tuple(PBLink(c.binary, "", 1) for c in children)
    return encode_pbnode(PBNode(links, encode_unixfs(meta)))


def _leaves(store: LocalStore) -> tuple[CID, CID]:
    return _plant(store, b"a" * 10, CODEC_RAW), _plant(store, b"b" * 20, CODEC_RAW)


def filesize_lies(store: LocalStore) -> CID:
    a, b = _leaves(store)
    return _plant(store, _node([a, b], [10, 20], 31))


def blocksize_lies(store: LocalStore) -> CID:
    a, b = _leaves(store)
    return _plant(store, _node([a, b], [11, 19], 30))


def links_without_blocksizes(store: LocalStore) -> CID:
    a, b = _leaves(store)
    return _plant(store, _node([a, b], [10], 10))


def directory(store: LocalStore) -> CID:
    return _plant(store, _node([], [], None, TYPE_DIRECTORY))


def no_unixfs_data(store: LocalStore) -> CID:
    return _plant(store, encode_pbnode(PBNode()))


def foreign_codec_link(store: LocalStore) -> CID:
    cbor = bytes.fromhex("01711220") + b"\0" * 32
    return _plant(
        store,
        encode_pbnode(
            PBNode(
                (PBLink(cbor, "", 1),),
                encode_unixfs(UnixFSData(TYPE_FILE, filesize=1, blocksizes=(1,))),
            )
        ),
    )


def too_deep(store: LocalStore) -> CID:
    cid = _plant(store, b"x", CODEC_RAW)
    for _ in range(40):
        cid = _plant(store, _node([cid], [1], 1))
    return cid


def child_disagrees_with_parent(store: LocalStore) -> CID:
    a, b = _leaves(store)
    inner = _plant(store, _node([a, b], [10, 20], 30))
    return _plant(store, _node([inner], [29], 29))


def unsorted_fields(store: LocalStore) -> CID:
    a, _ = _leaves(store)
    data = encode_pbnode(
        PBNode(data=encode_unixfs(UnixFSData(TYPE_FILE, filesize=10, blocksizes=(10,))))
    )
    links = encode_pbnode(PBNode((PBLink(a.binary, "", 10),)))
    return _plant(store, data + links)  # Data before Links: not canonical dag-pb


HOSTILE: list[tuple[Callable[[LocalStore], CID], type[Exception], str]] = [
    (filesize_lies, MalformedObjectError, "declares filesize 31"),
    (blocksize_lies, MalformedObjectError, "its parent says 11"),
    (links_without_blocksizes, MalformedObjectError, "2 links but 1 blocksizes"),
    (directory, MalformedObjectError, "UnixFS Directory, not a file"),
    (no_unixfs_data, MalformedObjectError, "without UnixFS data"),
    (foreign_codec_link, UnsupportedCIDError, "dag-cbor"),
    (too_deep, MalformedObjectError, "deeper than 32"),
    (child_disagrees_with_parent, MalformedObjectError, "its parent says 29"),
    (unsorted_fields, MalformedObjectError, "Data must come last"),
]


@pytest.mark.parametrize(
    ("attack", "error", "fragment"), HOSTILE, ids=[h[0].__name__ for h in HOSTILE]
)
def test_hostile_dags_are_refused(
    store: LocalStore, attack: Callable[[LocalStore], CID], error: type[Exception], fragment: str
) -> None:
    root = attack(store)
    with pytest.raises(error, match=fragment):
        store.get(root)


def test_a_repeated_subtree_bomb_is_stopped_by_the_declared_size(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", max_object_bytes=10**9)
    leaf = _plant(store, b"z" * CHUNK_SIZE, CODEC_RAW)
    inner = _plant(store, _node([leaf] * 174, [CHUNK_SIZE] * 174, 174 * CHUNK_SIZE))
    bomb = _plant(store, _node([inner] * 174, [174 * CHUNK_SIZE] * 174, 174 * 174 * CHUNK_SIZE))
    with pytest.raises(ObjectTooLargeError, match=f"{174 * 174 * CHUNK_SIZE} bytes"):
        store.open(bomb)


# ----------------------------------------------------------------------------- size limits


def test_put_over_the_limit_writes_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", max_object_bytes=CHUNK_SIZE)
    with pytest.raises(ObjectTooLargeError, match=f"{CHUNK_SIZE + 1} bytes.*max_object_bytes"):
        store.put(blob(CHUNK_SIZE + 1))
    path = tmp_path / "f"
    path.write_bytes(blob(CHUNK_SIZE + 1))
    with pytest.raises(ObjectTooLargeError, match=f"{CHUNK_SIZE + 1} bytes"):
        store.put(path)
    assert _blocks(store) == []


def test_a_stream_over_the_limit_is_stopped_and_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", max_object_bytes=3 * CHUNK_SIZE)
    endless = (blob(CHUNK_SIZE, seed=i) for i in range(10**6))
    with pytest.raises(ObjectTooLargeError, match="more than"):
        store.put(endless)
    assert next(endless)  # the generator was not drained
    assert _blocks(store) == []
    assert _leftovers(store) == []
    assert list((store.path / "packs").iterdir()) == []
    assert store.put(blob(3 * CHUNK_SIZE))  # exactly at the limit is fine


def test_leftovers_of_a_crashed_writer_are_ignored_then_collected(store: LocalStore) -> None:
    cid = store.put(b"kept")
    (store.path / "tmp" / "dead.pack").write_bytes(b"half a pack")
    (store.path / "packs" / "orphan.pack").write_bytes(b"renamed, never indexed")
    assert store.get(cid) == b"kept"
    assert store.gc() == 0
    assert _leftovers(store) == []
    assert [p.name for p in (store.path / "packs").iterdir()] != ["orphan.pack"]
    assert not (store.path / "packs" / "orphan.pack").exists()


def test_gc_compacts_a_mostly_dead_pack(store: LocalStore) -> None:
    x, y, z = (blob(CHUNK_SIZE, seed=s) for s in (4, 5, 6))
    store.put(x + y + z, pin=False)  # one pack: three leaves and a root
    kept = store.put(x)  # a single chunk is its own root: the leaf already stored
    (old,) = (store.path / "packs").iterdir()
    assert store.gc() == 3
    (new,) = (store.path / "packs").iterdir()
    assert new != old
    assert new.stat().st_size == CHUNK_SIZE
    assert store.get(kept) == x


def test_get_checks_the_declared_size_before_reading_any_leaf(tmp_path: Path) -> None:
    big = LocalStore(tmp_path / "s")
    data = blob(3 * CHUNK_SIZE)
    cid = big.put(data)
    _forget(big, _leaf(data, 0))  # had get read a leaf, this would be NotFoundError
    small = LocalStore(tmp_path / "s", max_object_bytes=CHUNK_SIZE)
    with pytest.raises(ObjectTooLargeError, match=f"{3 * CHUNK_SIZE} bytes.*{CHUNK_SIZE}"):
        small.get(cid)


def test_negative_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidStoreError, match="max_object_bytes=-1"):
        LocalStore(tmp_path / "s", max_object_bytes=-1)


# ----------------------------------------------------------------------------- retention


def test_gc_removes_only_what_no_pin_reaches(store: LocalStore) -> None:
    x, y, z = (blob(CHUNK_SIZE, seed=s) for s in (1, 2, 3))
    kept = store.put(x + y)  # pinned
    dropped = store.put(y + z, pin=False)  # shares leaf y
    assert set(store.pins()) == {kept}
    assert store.gc() == 2  # leaf z and the root of y+z
    assert store.get(kept) == x + y
    assert not store.has(dropped)
    assert store.has(compute_cid(y))  # the shared leaf stays


def test_unpin_then_gc_frees_everything(store: LocalStore) -> None:
    cid = store.put(blob(3 * CHUNK_SIZE))
    assert store.unpin(cid) is True
    assert store.unpin(cid) is False
    assert store.gc() == 4
    assert _blocks(store) == []


def test_pin_needs_the_whole_object(store: LocalStore) -> None:
    data = blob(2 * CHUNK_SIZE)
    cid = store.put(data, pin=False)
    store.pin(cid)
    assert store.pins() == [cid]
    store.unpin(cid)
    _forget(store, _leaf(data, 1))
    with pytest.raises(NotFoundError, match="does not hold all of its blocks"):
        store.pin(cid)
    with pytest.raises(NotFoundError):
        store.pin(compute_cid(b"absent"))


def test_gc_removes_nothing_when_a_pinned_object_is_incomplete(store: LocalStore) -> None:
    data = blob(2 * CHUNK_SIZE)
    cid = parse_cid(store.put(data))
    store.put(b"garbage", pin=False)
    _forget(store, cid)
    with pytest.raises(NotFoundError, match="gc removed nothing"):
        store.gc()
    assert store.has(compute_cid(b"garbage"))


def test_gc_clears_leftovers_of_a_crashed_writer(store: LocalStore) -> None:
    (store.path / "tmp" / "0123.pack").write_bytes(b"half")
    store.gc()
    assert _leftovers(store) == []


# ----------------------------------------------------------------------------- the directory


def test_a_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InvalidStoreError, match="not a gensyn store"):
        LocalStore(tmp_path)


def test_a_store_of_another_format_is_refused(tmp_path: Path) -> None:
    LocalStore(tmp_path / "s")
    (tmp_path / "s" / "store.json").write_text('{"format":"other"}')
    with pytest.raises(InvalidStoreError, match="another store format"):
        LocalStore(tmp_path / "s")


def test_store_from_config(tmp_path: Path) -> None:
    section = SimpleNamespace(
        backend="local",
        path=str(tmp_path / "cfg"),
        ipfs_api_url="http://127.0.0.1:1",
        max_object_bytes=5,
    )
    store = store_from_config(section)
    assert isinstance(store, LocalStore)
    assert store.max_object_bytes == 5
    with pytest.raises(ObjectTooLargeError):
        store.put(b"123456")
    section.backend = "s3"
    with pytest.raises(InvalidStoreError, match="'s3' is not a built-in store"):
        store_from_config(section)


def test_the_store_directory_survives_reopening(tmp_path: Path) -> None:
    cid = LocalStore(tmp_path / "s").put(b"persist")
    assert LocalStore(tmp_path / "s").get(cid) == b"persist"
    assert os.listdir(tmp_path / "s")
