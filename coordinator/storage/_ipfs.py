"""IpfsStore: a store backed by a Kubo-compatible IPFS daemon, over its RPC API (httpx).

Every call is a ``POST /api/v0/<command>``, the RPC API's only method, and
works with Kubo and with js-ipfs 0.66 (which the tests run). Nothing the
daemon says is trusted:

* ``put`` hashes the bytes locally while uploading them to ``/add`` with
  Kubo's defaults spelled out (``cid-version``, ``raw-leaves``,
  ``chunker=size-262144``), and raises :class:`CIDMismatchError` if the daemon
  names the object differently (a daemon with other defaults, such as Helia's
  1 MiB chunks, would);
* ``get``/``open`` fetch block by block with ``/block/get`` (a few in parallel)
  and verify each against its CID before any byte is returned.

Commands that may wait for the network carry the daemon's own ``timeout``
option, so a block nobody has becomes :class:`NotFoundError` rather than a hung
request. A daemon that is down or too slow raises
:class:`StoreUnavailableError` or :class:`StoreTimeoutError`, naming its URL.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import httpx

from coordinator.storage._cid import CID, normalize_cid, parse_cid
from coordinator.storage._errors import (
    CIDMismatchError,
    InvalidStoreError,
    NotFoundError,
    ObjectTooLargeError,
    StorageError,
    StoreTimeoutError,
    StoreUnavailableError,
)
from coordinator.storage._reader import MAX_BLOCK_BYTES
from coordinator.storage._store import BlockStore
from coordinator.storage._unixfs import BytesLike, DagBuilder, Source, iter_chunks

_MULTIADDR: Final = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d+)(/(http|https))?/?$")
_MISSING_HINTS: Final = ("not found", "timed out", "timeout", "no link named", "context deadline")


def api_base_url(api_url: str) -> str:
    """Normalise ``http://host:port`` (optionally ending in ``/api/v0``) or a multiaddr.

    ``/ip4/127.0.0.1/tcp/5001`` (what ``$IPFS_PATH/api`` holds) becomes
    ``http://127.0.0.1:5001``.
    """
    text = str(api_url).strip()
    if m := _MULTIADDR.match(text):
        proto, host, port, scheme = m.group(1), m.group(2), m.group(3), m.group(5) or "http"
        if proto == "ip6":
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise InvalidStoreError(f"storage.ipfs_api_url {text!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidStoreError(
            f"storage.ipfs_api_url {text!r} is not an http(s) URL; use the daemon's RPC API "
            "address, e.g. http://127.0.0.1:5001 or /ip4/127.0.0.1/tcp/5001"
        )
    return str(url.copy_with(path="/", query=None)).rstrip("/").removesuffix("/api/v0")


class _HashingReader:
    """A file-like object for httpx's multipart upload that hashes every chunk it hands out."""

    def __init__(self, chunks: Iterator[BytesLike], builder: DagBuilder) -> None:
        self._chunks = chunks
        self._builder = builder

    def read(self, size: int = -1) -> bytes:
        for chunk in self._chunks:
            if len(chunk):
                self._builder.add(chunk)
                return chunk if isinstance(chunk, bytes) else bytes(chunk)
        return b""


class IpfsStore(BlockStore):
    """A store on an IPFS daemon's RPC API (Kubo, or js-ipfs), every block verified locally.

    ``api_url`` is ``http://host:5001`` or a multiaddr. ``timeout_s`` bounds
    each HTTP exchange; ``fetch_timeout_s`` is how long the daemon may look for
    a block it does not hold; ``has_timeout_s`` the same for :meth:`has`
    (js-ipfs waits even offline); ``parallel`` blocks are fetched at once.
    """

    def __init__(
        self,
        api_url: str = "http://127.0.0.1:5001",
        *,
        max_object_bytes: int | None = None,
        cid_version: int = 1,
        timeout_s: float = 60.0,
        fetch_timeout_s: float = 30.0,
        has_timeout_s: float = 1.0,
        gc_timeout_s: float = 600.0,
        parallel: int = 8,
    ) -> None:
        super().__init__(max_object_bytes=max_object_bytes, cid_version=cid_version)
        if parallel < 1:
            raise InvalidStoreError(f"parallel={parallel!r}: fetch at least 1 block at a time")
        self.url = api_base_url(api_url)
        self.timeout_s = timeout_s
        self.fetch_timeout_s = fetch_timeout_s
        self.has_timeout_s = has_timeout_s
        self.gc_timeout_s = gc_timeout_s
        self.parallel = parallel
        self._client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s))
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_config(cls, section: Any) -> IpfsStore:
        """Build from a ``storage`` config section (uses ``ipfs_api_url`` and ``max_object_bytes``)."""
        return cls(section.ipfs_api_url, max_object_bytes=section.max_object_bytes)

    def __repr__(self) -> str:
        return f"IpfsStore({self.url!r}, max_object_bytes={self.max_object_bytes!r})"

    def close(self) -> None:
        """Close the HTTP connections and the fetch threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._client.close()

    # -- HTTP --------------------------------------------------------------------

    def _fail(self, command: str, exc: httpx.HTTPError) -> StorageError:
        where = f"the IPFS RPC API at {self.url} ({command})"
        if isinstance(exc, httpx.TimeoutException):
            return StoreTimeoutError(
                f"{where} did not answer within {self.timeout_s}s ({type(exc).__name__}); "
                "check the daemon is healthy, or raise the store's timeout_s"
            )
        return StoreUnavailableError(
            f"cannot reach {where}: {type(exc).__name__}: {exc}; start the daemon "
            "(`ipfs daemon`), or fix storage.ipfs_api_url"
        )

    def _refused(self, command: str, response: httpx.Response) -> StoreUnavailableError:
        message = _error_message(response)
        hint = ""
        if response.status_code == 404:
            hint = "; is this the RPC API port (5001), not the gateway's?"
        return StoreUnavailableError(
            f"the IPFS RPC API at {self.url} refused {command} with HTTP "
            f"{response.status_code}: {message}{hint}"
        )

    def _call(
        self,
        command: str,
        params: dict[str, str],
        *,
        files: Any = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """POST ``/api/v0/<command>`` and return the (read) response; HTTP errors are left to the caller."""
        try:
            return self._client.post(
                f"/api/v0/{command}",
                params=params,
                files=files,
                timeout=httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise self._fail(command, exc) from None

    def _ndjson(self, command: str, response: httpx.Response) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in response.text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise StoreUnavailableError(
                f"the IPFS RPC API at {self.url} answered {command} with something that is not "
                f"JSON ({response.text[:120]!r}); is storage.ipfs_api_url a Kubo RPC API?"
            ) from None

    # -- block primitives --------------------------------------------------------

    def _block(self, cid: CID, *, timeout: float, offline: bool = False) -> bytes:
        params = {"arg": str(cid), "timeout": f"{timeout}s"}
        if offline:
            params["offline"] = "true"
        command = "block/get"
        try:
            with self._client.stream(
                "POST", f"/api/v0/{command}", params=params, timeout=self.timeout_s + timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    message = _error_message(response)
                    if any(h in message.lower() for h in _MISSING_HINTS):
                        raise NotFoundError(
                            f"block {cid} is not available from the IPFS daemon at {self.url} "
                            f"within {timeout}s (it said: {message}); put the object there, or "
                            "connect the daemon to a peer that has it"
                        )
                    raise self._refused(command, response)
                buf = bytearray()
                for part in response.iter_bytes():
                    buf += part
                    if len(buf) > MAX_BLOCK_BYTES:
                        raise ObjectTooLargeError(
                            f"the IPFS daemon at {self.url} sent more than {MAX_BLOCK_BYTES} bytes "
                            f"for block {cid}; no block `ipfs add` makes is that large"
                        )
                return bytes(buf)
        except httpx.HTTPError as exc:
            raise self._fail(command, exc) from None

    def _fetch_many(self, cids: Sequence[CID]) -> Iterator[bytes]:
        if len(cids) == 1 or self.parallel == 1:
            for cid in cids:
                yield self._block(cid, timeout=self.fetch_timeout_s)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="IpfsStore-fetch")
        pending: deque[Future[bytes]] = deque()
        todo = iter(cids)
        try:
            for cid in todo:
                pending.append(self._pool.submit(self._block, cid, timeout=self.fetch_timeout_s))
                if len(pending) == self.parallel:
                    break
            while pending:
                block = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(
                        self._pool.submit(self._block, nxt, timeout=self.fetch_timeout_s)
                    )
                yield block
        finally:
            for future in pending:
                future.cancel()

    def _read_node(self, cid: CID) -> bytes:
        return self._block(cid, timeout=self.has_timeout_s, offline=True)

    def _exists(self, cid: CID) -> bool:
        params = {"arg": str(cid), "timeout": f"{self.has_timeout_s}s", "offline": "true"}
        response = self._call("block/stat", params, timeout=self.timeout_s + self.has_timeout_s)
        if response.status_code == 200:
            return True
        message = _error_message(response)
        if any(h in message.lower() for h in _MISSING_HINTS):
            return False
        raise self._refused("block/stat", response)

    # -- the store protocol ------------------------------------------------------

    def put(self, source: Source, *, pin: bool = True) -> str:
        """Add ``source`` to the daemon with Kubo's defaults and return the CID, checked locally.

        Raises :class:`CIDMismatchError` if the daemon's CID differs from the
        one computed here (its pin is then removed), and
        :class:`ObjectTooLargeError` before uploading bytes or a file over the
        limit, or as soon as a stream passes it.
        """
        builder = DagBuilder(self.cid_version)
        reader = _HashingReader(iter_chunks(source, limit=self.max_object_bytes), builder)
        first = reader.read()  # a size error is raised before any request is made
        body = _Prepend(first, reader)
        params = {
            "cid-version": str(self.cid_version),
            "raw-leaves": "true" if self.cid_version == 1 else "false",
            "chunker": "size-262144",
            "hash": "sha2-256",
            "trickle": "false",
            "wrap-with-directory": "false",
            "inline": "false",
            "progress": "false",
            "pin": "true" if pin else "false",
        }
        files = {"file": ("blob", body, "application/octet-stream")}
        response = self._call("add", params, files=files)
        if response.status_code != 200:
            raise self._refused("add", response)
        entries = [e for e in self._ndjson("add", response) if "Hash" in e]
        if not entries:
            raise StoreUnavailableError(
                f"the IPFS RPC API at {self.url} answered add without a Hash: {response.text[:200]!r}"
            )
        theirs = normalize_cid(entries[-1]["Hash"])
        ours = str(builder.finish())
        if theirs != ours:
            if pin:
                self.unpin(theirs)
            raise CIDMismatchError(
                f"the IPFS daemon at {self.url} stored the object as {theirs}, but `ipfs add` "
                f"with Kubo's defaults gives {ours}: the daemon chunks or links differently "
                "(Helia uses 1 MiB chunks and 1024 links); use a Kubo-compatible daemon"
            )
        return ours

    def pin(self, cid: str | CID) -> None:
        """Pin recursively; the daemon may fetch missing blocks for up to ``fetch_timeout_s``."""
        root = parse_cid(cid)
        params = {"arg": str(root), "recursive": "true", "timeout": f"{self.fetch_timeout_s}s"}
        response = self._call("pin/add", params, timeout=self.timeout_s + self.fetch_timeout_s)
        if response.status_code == 200:
            return
        message = _error_message(response)
        if any(h in message.lower() for h in _MISSING_HINTS):
            raise NotFoundError(
                f"cannot pin {root}: the IPFS daemon at {self.url} could not get all of its "
                f"blocks within {self.fetch_timeout_s}s ({message}); put the object first"
            )
        raise self._refused("pin/add", response)

    def unpin(self, cid: str | CID) -> bool:
        """Remove the recursive pin; False when the object was not pinned."""
        root = parse_cid(cid)
        response = self._call("pin/rm", {"arg": str(root), "recursive": "true"})
        if response.status_code == 200:
            return True
        if "not pinned" in _error_message(response).lower():
            return False
        raise self._refused("pin/rm", response)

    def pins(self) -> list[str]:
        """The daemon's recursive pins (canonical CID text)."""
        response = self._call("pin/ls", {"type": "recursive", "stream": "true"})
        if response.status_code != 200:
            raise self._refused("pin/ls", response)
        out: list[str] = []
        for entry in self._ndjson("pin/ls", response):
            if "Cid" in entry:
                out.append(normalize_cid(entry["Cid"]))
            out.extend(normalize_cid(k) for k in entry.get("Keys", {}))
        return out

    def gc(self) -> int:
        """Run the daemon's garbage collector (it removes every unpinned block it holds)."""
        response = self._call("repo/gc", {}, timeout=self.gc_timeout_s)
        if response.status_code != 200:
            raise self._refused("repo/gc", response)
        entries = self._ndjson("repo/gc", response)
        errors = [e["Error"] for e in entries if e.get("Error")]
        if errors:
            raise StoreUnavailableError(
                f"the IPFS daemon at {self.url} reported errors during gc: {errors[:3]!r}"
            )
        return sum(1 for e in entries if e.get("Key"))


class _Prepend:
    """A reader that returns ``first`` and then the rest of ``reader``."""

    def __init__(self, first: bytes, reader: _HashingReader) -> None:
        self._first: bytes | None = first
        self._reader = reader

    def read(self, size: int = -1) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return self._reader.read(size)


def _error_message(response: httpx.Response) -> str:
    """The ``Message`` of an RPC API error body, or the start of the body."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and "Message" in body:
        return str(body["Message"])
    return response.text[:200]
