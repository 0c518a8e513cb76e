"""Bundles: canonical manifests, safe names, size checks, extraction, and pins."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from coordinator.storage import (
    CHUNK_SIZE,
    Bundle,
    BundleEntry,
    BundleError,
    LocalStore,
    compute_cid,
    extract_bundle,
    get_bundle,
    pin_bundle,
    put_bundle,
    unpin_bundle,
)
from tests.coordinator.storage_helpers import blob

HELLO_V1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_manifest_is_canonical_json(store: LocalStore) -> None:
    cid = put_bundle(store, {"b.txt": b"", "a/hello.txt": b"hello world"})
    raw = store.get(cid)
    assert raw == (
        b'{"files":[{"cid":"' + HELLO_V1.encode() + b'","name":"a/hello.txt","size":11},'
        b'{"cid":"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku","name":"b.txt","size":0}],'
        b'"format":"gensyn-bundle/1"}'
    )
    assert cid == compute_cid(raw)
    # The same files in another order give the same CID.
    assert put_bundle(store, {"a/hello.txt": b"hello world", "b.txt": b""}) == cid


def test_round_trip_from_a_folder_and_extract(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg" / "data").mkdir(parents=True)
    files = {
        "pkg/__init__.py": b"",
        "pkg/model.py": b"import torch\n",
        "pkg/data/shard-0.bin": blob(2 * CHUNK_SIZE + 1, seed=1),
        "README \u00e9t\u00e9.md": "caf\u00e9".encode(),
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    cid = put_bundle(store, src)
    bundle = get_bundle(store, cid)
    assert bundle.names == sorted(files)
    assert bundle.size == sum(len(d) for d in files.values())
    assert bundle["pkg/model.py"].size == len(files["pkg/model.py"])
    assert bundle.read(store, "pkg/data/shard-0.bin") == files["pkg/data/shard-0.bin"]
    out = extract_bundle(store, cid, tmp_path / "out")
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    with pytest.raises(BundleError, match="exists"):
        extract_bundle(store, cid, out)


def test_a_symlink_in_the_folder_is_refused(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret").symlink_to("/etc/hostname")
    with pytest.raises(BundleError, match="symbolic link"):
        put_bundle(store, src)


BAD_NAMES = [
    "",
    "/etc/passwd",
    "../up",
    "a/../../b",
    "a//b",
    "./a",
    "a/.",
    "a\\b",
    "a\nb",
    "a\0b",
    "x" * 300,
    "e\u0301",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_unsafe_names_are_refused(store: LocalStore, name: str) -> None:
    with pytest.raises(BundleError, match="refused"):
        put_bundle(store, {name: b"x"})


def test_a_name_that_is_both_file_and_folder_is_refused(store: LocalStore) -> None:
    with pytest.raises(BundleError, match="both a file and a folder"):
        put_bundle(store, {"a": b"1", "a/b": b"2"})


def _manifest(files: list[dict[str, object]], **extra: object) -> bytes:
    return json.dumps(
        {"files": files, "format": "gensyn-bundle/1", **extra},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


_OK = {"cid": HELLO_V1, "name": "a", "size": 11}
BAD_MANIFESTS = [
    pytest.param(b"\xff", "not UTF-8 JSON", id="not-json"),
    pytest.param(b"[]", "exactly the keys", id="not-an-object"),
    pytest.param(_manifest([_OK], extra=1), "exactly the keys", id="extra-key"),
    pytest.param(_manifest([_OK]).replace(b"gensyn-bundle/1", b"gensyn-bundle/9"), "upgrade", id="future-format"),
    pytest.param(_manifest([{**_OK, "mode": 1}]), "exactly cid, name and size", id="extra-entry-key"),
    pytest.param(_manifest([{**_OK, "size": -1}]), "size -1", id="negative-size"),
    pytest.param(_manifest([{**_OK, "size": True}]), "size True", id="bool-size"),
    pytest.param(_manifest([{**_OK, "cid": "zb2rhj7crUKTQYRGCRATFaQ6YFLTde2YzdqbbhAASkL9uRDXn"}]), "non-canonical form", id="base58-cid"),
    pytest.param(_manifest([{**_OK, "cid": "Qmnope"}]), "multibase", id="bad-cid"),
    pytest.param(_manifest([{**_OK, "name": "b"}, _OK]), "sorted", id="unsorted"),
    pytest.param(_manifest([_OK, _OK]), "appears twice", id="duplicate"),
    pytest.param(_manifest([{**_OK, "name": "../x"}]), "refused", id="traversal"),
    pytest.param(b'{"files":[],"files":[],"format":"gensyn-bundle/1"}', "repeats a key", id="duplicate-key"),
    pytest.param(b'{"files": [], "format": "gensyn-bundle/1"}', "not canonical", id="spaces"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "fragment"), BAD_MANIFESTS)
def test_bad_manifests_are_refused(store: LocalStore, raw: bytes, fragment: str) -> None:
    with pytest.raises(BundleError, match=fragment):
        get_bundle(store, store.put(raw))


def test_a_file_whose_size_disagrees_with_the_manifest_is_refused(
    store: LocalStore, tmp_path: Path
) -> None:
    real = store.put(b"hello world")
    lying = Bundle.of([BundleEntry("f.txt", 5, real)])
    cid = store.put(lying.manifest())
    with pytest.raises(BundleError, match="holds 11 bytes, but the manifest says 5"):
        get_bundle(store, cid).read(store, "f.txt")
    with pytest.raises(BundleError, match="holds 11 bytes"):
        extract_bundle(store, cid, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out")] == []


def test_an_oversized_manifest_is_refused_before_reading(store: LocalStore) -> None:
    cid = store.put(blob(16 * 1024 * 1024 + 1))
    with pytest.raises(BundleError, match="not a bundle"):
        get_bundle(store, cid)


def test_pin_and_unpin_a_bundle(store: LocalStore) -> None:
    cid = put_bundle(store, {"a": blob(100, seed=1), "b": blob(200, seed=2)}, pin=False)
    pin_bundle(store, cid)
    assert len(store.pins()) == 3
    assert store.gc() == 0
    unpin_bundle(store, cid)
    assert store.pins() == []
    assert store.gc() == 3
