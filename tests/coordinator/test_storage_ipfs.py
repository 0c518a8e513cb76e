"""IpfsStore against a real js-ipfs daemon: CIDs, round trips, retention, and a hostile network.

No IPFS is mocked. Misbehaviour is injected by a small HTTP proxy in front of
the real daemon (it flips bytes, or rewrites the chunker, the way a tampering
gateway or a daemon with other defaults would), or by servers that refuse or
never answer.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.storage import (
    CHUNK_SIZE,
    MAX_BLOCK_BYTES,
    CIDMismatchError,
    InvalidStoreError,
    IpfsStore,
    NotFoundError,
    ObjectTooLargeError,
    Store,
    StoreTimeoutError,
    StoreUnavailableError,
    compute_cid,
    get_bundle,
    normalize_cid,
    put_bundle,
    store_from_config,
)
from coordinator.storage._ipfs import api_base_url
from tests.coordinator.storage_helpers import FakeServer, JsIpfs, blob
from tests.coordinator.test_storage_cid import VECTORS

BIG = 174 * CHUNK_SIZE + 1


@pytest.fixture(scope="module")
def ipfs(jsipfs: JsIpfs) -> Iterator[IpfsStore]:
    store = IpfsStore(jsipfs.api_url, has_timeout_s=0.3, fetch_timeout_s=1)
    try:
        yield store
    finally:
        store.close()


# ----------------------------------------------------------------------------- CIDs


@pytest.mark.parametrize(("size", "v1", "v0"), VECTORS, ids=[str(v[0]) for v in VECTORS])
def test_compute_cid_equals_the_daemons_add(jsipfs: JsIpfs, size: int, v1: str, v0: str) -> None:
    data = blob(size)
    kubo = {"chunker": "size-262144", "hash": "sha2-256", "pin": "false"}
    theirs_v1 = normalize_cid(
        jsipfs.add(data, **kubo, **{"cid-version": "1", "raw-leaves": "true"})
    )
    theirs_v0 = jsipfs.add(data, **kubo, **{"cid-version": "0", "raw-leaves": "false"})
    assert (
        (compute_cid(data), compute_cid(data, cid_version=0)) == (theirs_v1, theirs_v0) == (v1, v0)
    )


def test_the_daemons_defaults_are_kubos(jsipfs: JsIpfs) -> None:
    """js-ipfs 0.66 with no options: 256 KiB chunks, balanced, 174 links, as Kubo."""
    data = blob(BIG)
    assert jsipfs.add(data, pin="false") == compute_cid(data, cid_version=0)
    assert normalize_cid(jsipfs.add(data, pin="false", **{"cid-version": "1"})) == compute_cid(data)


# ----------------------------------------------------------------------------- round trips


@settings(max_examples=15)
@given(data=st.binary(max_size=4096) | st.integers(0, 3 * CHUNK_SIZE).map(blob))
def test_put_get_round_trip(ipfs: IpfsStore, data: bytes) -> None:
    cid = ipfs.put(data, pin=False)
    assert cid == compute_cid(data)
    assert ipfs.get(cid) == data


def test_multi_level_round_trip_from_a_path(ipfs: IpfsStore, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(blob(BIG))
    cid = ipfs.put(path, pin=False)
    assert cid == "bafybeicus6wtclxa75umws636jctwodoldxgpgczlrc25znll2w7s6vkbm"
    with ipfs.open(cid) as reader:
        assert reader.size == BIG
        assert reader.read() == blob(BIG)


def test_files_and_iterables_are_uploaded_as_streams(ipfs: IpfsStore) -> None:
    data = blob(2 * CHUNK_SIZE + 5, seed=3)
    assert ipfs.put(io.BytesIO(data), pin=False) == compute_cid(data)
    assert ipfs.put(iter([data[:100], data[100:]]), pin=False) == compute_cid(data)
    assert ipfs.put(b"", pin=False) == compute_cid(b"")


def test_cid_version_0(jsipfs: JsIpfs) -> None:
    with IpfsStore(jsipfs.api_url, cid_version=0) as store:
        data = blob(CHUNK_SIZE + 1, seed=4)
        cid = store.put(data, pin=False)
        assert cid == compute_cid(data, cid_version=0)
        assert store.get(cid) == data


def test_the_store_satisfies_the_protocol(ipfs: IpfsStore) -> None:
    assert isinstance(ipfs, Store)


def test_a_bundle_round_trips(ipfs: IpfsStore) -> None:
    files = {"model.py": b"print('hi')\n", "data/shard-0.bin": blob(CHUNK_SIZE + 3, seed=5)}
    cid = put_bundle(ipfs, files, pin=False)
    bundle = get_bundle(ipfs, cid)
    assert bundle.names == ["data/shard-0.bin", "model.py"]
    assert bundle.read(ipfs, "data/shard-0.bin") == files["data/shard-0.bin"]


# ----------------------------------------------------------------------------- retention


def test_has_pin_unpin_gc(ipfs: IpfsStore) -> None:
    kept = ipfs.put(blob(2 * CHUNK_SIZE, seed=10))
    dropped = ipfs.put(blob(2 * CHUNK_SIZE, seed=11), pin=False)
    assert kept in ipfs.pins()
    assert dropped not in ipfs.pins()
    assert ipfs.has(kept)
    assert ipfs.has(dropped)
    assert ipfs.gc() >= 3
    assert ipfs.has(kept)
    assert not ipfs.has(dropped)
    with pytest.raises(NotFoundError, match=dropped):
        ipfs.get(dropped)
    assert ipfs.unpin(kept) is True
    assert ipfs.unpin(kept) is False
    ipfs.pin(kept)
    assert kept in ipfs.pins()
    ipfs.unpin(kept)


def test_pinning_what_the_daemon_cannot_find(jsipfs: JsIpfs) -> None:
    with (
        IpfsStore(jsipfs.api_url, fetch_timeout_s=0.5) as store,
        pytest.raises(NotFoundError, match="cannot pin"),
    ):
        store.pin(compute_cid(b"nobody has this"))


def test_an_unknown_object_is_not_found_and_names_the_daemon(ipfs: IpfsStore) -> None:
    cid = compute_cid(b"never added anywhere")
    assert not ipfs.has(cid)
    with pytest.raises(NotFoundError, match=re.escape(ipfs.url)) as info:
        ipfs.get(cid)
    assert cid in str(info.value)


# ----------------------------------------------------------------------------- size limits


def test_put_over_the_limit_fails_before_any_request(closed_port_url: str) -> None:
    with (
        IpfsStore(closed_port_url, max_object_bytes=10) as store,
        pytest.raises(ObjectTooLargeError, match="11 bytes"),
    ):
        store.put(b"x" * 11)


def test_get_over_the_limit_fails_from_the_root(ipfs: IpfsStore, jsipfs: JsIpfs) -> None:
    cid = ipfs.put(blob(3 * CHUNK_SIZE, seed=12), pin=False)
    with (
        IpfsStore(jsipfs.api_url, max_object_bytes=CHUNK_SIZE) as small,
        pytest.raises(ObjectTooLargeError, match=f"{3 * CHUNK_SIZE} bytes"),
    ):
        small.open(cid)


# ----------------------------------------------------------------------------- a hostile network


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, upstream: str, edit: Callable[[str, bytes], bytes], query: Callable[[str], str]
    ) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.edit = edit
        self.query = query


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _Proxy

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while size := int(self.rfile.readline().split(b";")[0], 16):
                out += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return bytes(out)
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_POST(self) -> None:
        body = self._body()
        headers = {"Content-Type": self.headers.get("Content-Type", "application/octet-stream")}
        upstream = httpx.post(
            self.server.upstream + self.server.query(self.path),
            content=body,
            headers=headers,
            timeout=60,
        )
        payload = self.server.edit(self.path, upstream.content)
        self.send_response(upstream.status_code)
        self.send_header("Content-Type", upstream.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy(jsipfs: JsIpfs) -> Iterator[Callable[..., str]]:
    """Starts a proxy to the daemon with given edits; returns its URL. Stopped after the test."""
    servers: list[tuple[_Proxy, threading.Thread]] = []

    def start(
        edit: Callable[[str, bytes], bytes] = lambda path, body: body,
        query: Callable[[str], str] = lambda path: path,
    ) -> str:
        server = _Proxy(jsipfs.api_url, edit, query)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield start
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            assert not thread.is_alive()


def _flip_leaf(leaf: str) -> Callable[[str, bytes], bytes]:
    def edit(path: str, body: bytes) -> bytes:
        if path.startswith("/api/v0/block/get") and f"arg={leaf}" in path:
            return body[:100] + bytes([body[100] ^ 1]) + body[101:]
        return body

    return edit


def _drain(reader: io.BufferedIOBase, into: bytearray) -> None:
    while chunk := reader.read(100_000):
        into += chunk


def test_a_tampered_block_on_the_wire_is_refused(
    ipfs: IpfsStore, proxy: Callable[..., str]
) -> None:
    data = blob(4 * CHUNK_SIZE, seed=20)
    cid = ipfs.put(data, pin=False)
    third_leaf = compute_cid(data[2 * CHUNK_SIZE : 3 * CHUNK_SIZE])
    with IpfsStore(proxy(_flip_leaf(third_leaf)), parallel=2) as store:
        with pytest.raises(CIDMismatchError, match=third_leaf):
            store.get(cid)
        got = bytearray()
        with store.open(cid) as reader, pytest.raises(CIDMismatchError):
            _drain(reader, got)
        assert bytes(got) == data[: len(got)]
        assert len(got) <= 2 * CHUNK_SIZE


def test_an_oversized_block_on_the_wire_is_refused(
    ipfs: IpfsStore, proxy: Callable[..., str]
) -> None:
    cid = ipfs.put(b"tiny", pin=False)

    def pad(path: str, body: bytes) -> bytes:
        return body + b"\0" * MAX_BLOCK_BYTES if path.startswith("/api/v0/block/get") else body

    with IpfsStore(proxy(pad)) as store, pytest.raises(ObjectTooLargeError, match="more than"):
        store.get(cid)


def test_a_daemon_with_other_chunking_is_caught_at_put(
    ipfs: IpfsStore, proxy: Callable[..., str]
) -> None:
    data = blob(CHUNK_SIZE + 7, seed=21)
    url = proxy(query=lambda path: path.replace("chunker=size-262144", "chunker=size-1024"))
    with IpfsStore(url) as store, pytest.raises(CIDMismatchError, match=compute_cid(data)) as info:
        store.put(data)
    theirs = re.search(r"as (\S+),", str(info.value))
    assert theirs is not None
    assert theirs.group(1) not in ipfs.pins()  # its pin was taken back


def test_a_daemon_that_is_down_is_named(closed_port_url: str) -> None:
    with IpfsStore(closed_port_url) as store:
        with pytest.raises(StoreUnavailableError, match=re.escape(closed_port_url)) as info:
            store.get(compute_cid(b"x"))
        assert isinstance(info.value, ConnectionError)
        with pytest.raises(StoreUnavailableError, match="ipfs daemon"):
            store.put(b"x")


def test_a_daemon_that_never_answers_times_out(silent_server: FakeServer) -> None:
    with (
        IpfsStore(silent_server.url, timeout_s=0.3, fetch_timeout_s=0.2) as store,
        pytest.raises(StoreTimeoutError, match=re.escape(silent_server.url)) as info,
    ):
        store.get(compute_cid(b"x"))
    assert isinstance(info.value, TimeoutError)


def test_the_gateway_port_is_not_the_rpc_api(jsipfs: JsIpfs) -> None:
    match = re.search(
        r"Gateway \(read only\) listening on /ip4/[\d.]+/tcp/(\d+)", jsipfs.log.read_text()
    )
    assert match, jsipfs.log.read_text()
    with (
        IpfsStore(f"http://127.0.0.1:{match.group(1)}") as store,
        pytest.raises(StoreUnavailableError, match="HTTP 404.*RPC API port"),
    ):
        store.pins()


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("given_url", "expected"),
    [
        ("http://127.0.0.1:5001", "http://127.0.0.1:5001"),
        ("http://127.0.0.1:5001/", "http://127.0.0.1:5001"),
        ("http://127.0.0.1:5001/api/v0", "http://127.0.0.1:5001"),
        ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001"),
        ("/ip4/127.0.0.1/tcp/5001/http", "http://127.0.0.1:5001"),
        ("/ip6/::1/tcp/5001", "http://[::1]:5001"),
        ("/dns4/ipfs.local/tcp/443/https", "https://ipfs.local:443"),
    ],
)
def test_api_url_forms(given_url: str, expected: str) -> None:
    assert api_base_url(given_url) == expected


@pytest.mark.parametrize("bad", ["ftp://host:21", "not a url", "/ip4/127.0.0.1/udp/5001"])
def test_bad_api_urls_are_refused(bad: str) -> None:
    with pytest.raises(InvalidStoreError, match="ipfs_api_url"):
        IpfsStore(bad)


def test_store_from_config_builds_the_ipfs_store(jsipfs: JsIpfs, tmp_path: Path) -> None:
    section = SimpleNamespace(
        backend="ipfs", path=str(tmp_path), ipfs_api_url=jsipfs.api_url, max_object_bytes=1000
    )
    store = store_from_config(section)
    try:
        assert isinstance(store, IpfsStore)
        assert store.max_object_bytes == 1000
        assert store.get(store.put(b"configured", pin=False)) == b"configured"
    finally:
        store.close()
