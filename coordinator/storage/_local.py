"""LocalStore: the embedded default store, a folder of packed blocks shared by processes.

Layout of a store folder::

    store.json            format marker, written once
    index.sqlite          multihash -> (pack, offset, length), SQLite in WAL mode
    packs/<id>.pack       the blocks of one put, back to back (see _packs.py)
    pins/<cidv1>          one file per pinned root, holding the CID as given
    tmp/                  packs and pins being written
    lock                  flock: put and pin hold it shared, gc exclusive

Writes are atomic: a put's blocks become visible together, in one index
transaction, after their pack is whole; a put that fails or is over the
limit leaves nothing (a crashed one leaves a file in ``tmp/`` that ``gc``
removes). Reads take
no lock; every block read is re-hashed, and one that fails its hash is
dropped from the index (it reads as absent until a put stores it again).

Packs are not fsynced unless ``durable=True``: a block torn by a power loss
fails its hash, is never returned, and the next put of that content writes
it again. ``durable=True`` fsyncs packs, the index, pins and folders before
``put`` returns, at the disk's speed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final

from coordinator.storage._cid import CID, CODEC_RAW, parse_cid
from coordinator.storage._errors import InvalidStoreError, NotFoundError, ObjectTooLargeError
from coordinator.storage._packs import PackIndex, PackWriter, fsync_dir
from coordinator.storage._reader import MAX_BLOCK_BYTES, missing, walk_dag
from coordinator.storage._store import BlockStore, not_found
from coordinator.storage._unixfs import (
    CHUNK_SIZE,
    BytesLike,
    DagBuilder,
    Source,
    iter_chunks,
    make_leaf,
)

_MARKER: Final = b'{"format":"gensyn-localstore","layout":"packs+sqlite-index","version":1}\n'
_LAYOUT: Final = frozenset({"store.json", "index.sqlite", "packs", "pins", "tmp", "lock"})
_WORKERS: Final = max(2, min(4, os.cpu_count() or 1))  # threads hashing and writing leaves
_BATCH: Final = 4  # chunks per task: fewer hand-offs between threads
_THREADED_OVER: Final = 4 * CHUNK_SIZE  # smaller puts are hashed inline: threads cost more
_COMPACT_BELOW: Final = 0.5  # gc rewrites a pack whose live blocks fill less than this


def _batched(items: Iterator[BytesLike], n: int) -> Iterator[list[BytesLike]]:
    batch: list[BytesLike] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


class LocalStore(BlockStore):
    """The embedded default store: a folder of blocks, shared by processes on one machine.

    Its CIDs equal ``ipfs add --cid-version 1 --raw-leaves`` (or plain
    ``ipfs add`` with ``cid_version=0``). ``max_object_bytes`` bounds what
    ``put`` accepts and what ``get``/``open`` return (None: no limit).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_object_bytes: int | None = None,
        cid_version: int = 1,
        durable: bool = False,
    ) -> None:
        super().__init__(max_object_bytes=max_object_bytes, cid_version=cid_version)
        self.path = Path(path).absolute()
        self.durable = durable
        self._packs = self.path / "packs"
        self._pins = self.path / "pins"
        self._tmp = self.path / "tmp"
        self._open_layout()
        self._index = PackIndex(self.path / "index.sqlite", durable=durable)

    @classmethod
    def from_config(cls, section: Any) -> LocalStore:
        """Build from a ``storage`` config section (uses ``path`` and ``max_object_bytes``)."""
        return cls(section.path, max_object_bytes=section.max_object_bytes)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r}, max_object_bytes={self.max_object_bytes!r})"

    def close(self) -> None:
        """Close the index connections (the store stays usable: they reopen on demand)."""
        self._index.close()

    def _open_layout(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidStoreError(
                f"storage path {str(self.path)!r} exists and is not a folder; "
                "choose a folder for storage.path"
            ) from None
        marker = self.path / "store.json"
        if not marker.exists():
            unknown = sorted(
                n
                for n in os.listdir(self.path)
                if n not in _LAYOUT and not n.startswith((".store.", "index.sqlite-"))
            )
            if unknown:
                raise InvalidStoreError(
                    f"{str(self.path)!r} is not empty ({', '.join(unknown[:5])}...) and is not a "
                    "gensyn store; choose a new or empty folder for storage.path"
                )
            tmp = self.path / f".store.{os.getpid()}.{secrets.token_hex(4)}"
            tmp.write_bytes(_MARKER)
            os.replace(tmp, marker)
        elif (found := marker.read_bytes()) != _MARKER:
            raise InvalidStoreError(
                f"{str(marker)!r} describes another store format ({found[:120]!r}); this "
                "version reads only its own: choose another storage.path"
            )
        for d in (self._packs, self._pins, self._tmp):
            d.mkdir(exist_ok=True)

    @contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # -- block primitives --------------------------------------------------------

    def _locate(self, cid: CID) -> tuple[Path, int, int]:
        """The pack file, offset and length of a block; raises :class:`NotFoundError`."""
        where = self._index.locate(cid.multihash)
        if where is None:
            raise not_found(cid, f"the local store at {str(self.path)!r}")
        pack, offset, length = where
        if length > MAX_BLOCK_BYTES:
            raise ObjectTooLargeError(
                f"block {cid} is {length} bytes, over the {MAX_BLOCK_BYTES}-byte block limit; "
                "no block `ipfs add` makes is that large"
            )
        return self._packs / pack, offset, length

    def _open_block(self, cid: CID) -> tuple[int, int, int]:
        """Open the block's pack: (descriptor, offset, length)."""
        # gc may compact the pack between the lookup and the open: look it up again.
        for _ in range(3):
            path, offset, length = self._locate(cid)
            with suppress(FileNotFoundError):
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC), offset, length
        # The pack was deleted by hand: forget its blocks so a put stores them again.
        self._index.forget_pack(path.name)
        raise not_found(cid, f"{str(path)!r} (its pack is gone)")

    def _read_node(self, cid: CID) -> bytes:
        fd, offset, length = self._open_block(cid)
        try:
            block = os.pread(fd, length, offset)
            # A short read means a truncated pack: the hash check reports it.
            while len(block) < length and (
                more := os.pread(fd, length - len(block), offset + len(block))
            ):
                block += more
        finally:
            os.close(fd)
        return block

    def _fetch_many(self, cids: Sequence[CID]) -> Iterator[bytes]:
        for cid in cids:
            yield self._read_node(cid)

    def _exists(self, cid: CID) -> bool:
        return self._index.locate(cid.multihash) is not None

    def _on_corrupt(self, cid: CID) -> None:
        where = self._index.locate(cid.multihash)
        if where is not None:
            self._index.forget([cid.multihash], pack=where[0])

    # -- the store protocol ------------------------------------------------------

    def put(self, source: Source, *, pin: bool = True) -> str:
        """Store ``source`` and return its CID; with ``pin`` (the default) it survives ``gc``.

        Raises :class:`ObjectTooLargeError` before reading a bytes object or a
        file over the limit, and as soon as a stream passes it; the store is
        then unchanged.
        """
        with self._locked(exclusive=False):
            writer = PackWriter(self._index, self._packs, self._tmp, durable=self.durable)
            try:
                root = self._build(source, writer)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            if pin:
                self._write_pin(root)
        return str(root)

    def _build(self, source: Source, writer: PackWriter) -> CID:
        # Leaves are hashed and written by worker threads (hashlib and os.pwrite release
        # the GIL) and collected in order; the few internal nodes are made here.
        builder = DagBuilder(self.cid_version, sink=writer.add)
        chunks = iter_chunks(source, limit=self.max_object_bytes)
        if isinstance(source, bytes | bytearray | memoryview) and len(source) <= _THREADED_OVER:
            for chunk in chunks:
                builder.add(chunk)
            return builder.finish()
        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="LocalStore-put") as pool:
            pending: deque[Future[list[tuple[CID, int, int]]]] = deque()
            try:
                for batch in _batched(chunks, _BATCH):
                    pending.append(pool.submit(self._leaves, batch, writer))
                    if len(pending) >= 2 * _WORKERS:
                        for leaf in pending.popleft().result():
                            builder.add_leaf(*leaf)
                while pending:
                    for leaf in pending.popleft().result():
                        builder.add_leaf(*leaf)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return builder.finish()

    def _leaves(self, chunks: list[BytesLike], writer: PackWriter) -> list[tuple[CID, int, int]]:
        out = []
        for chunk in chunks:
            cid, block, tsize = make_leaf(chunk, self.cid_version)
            writer.add(cid, block)
            out.append((cid, tsize, len(chunk)))
        return out

    def _pin_path(self, cid: CID) -> Path:
        return self._pins / str(cid.to_v1())

    def _write_pin(self, cid: CID) -> None:
        path = self._pin_path(cid)
        if path.exists():
            return
        tmp = self._tmp / f"pin.{secrets.token_hex(6)}"
        with open(tmp, "wb") as f:
            f.write(str(cid).encode("ascii"))
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self.durable:
            fsync_dir(self._pins)

    def pin(self, cid: str | CID) -> None:
        """Pin an object this store holds in full; raises :class:`NotFoundError` otherwise."""
        root = parse_cid(cid)
        with self._locked(exclusive=False):
            if missing(root, self._read_node, self._exists):
                raise NotFoundError(
                    f"cannot pin {root}: the local store at {str(self.path)!r} does not hold "
                    "all of its blocks; put the object first"
                )
            self._write_pin(root)

    def unpin(self, cid: str | CID) -> bool:
        """Remove the pin on ``cid``; False when it was not pinned."""
        try:
            self._pin_path(parse_cid(cid)).unlink()
        except FileNotFoundError:
            return False
        return True

    def pins(self) -> list[str]:
        """The pinned CIDs, as they were given to ``pin``/``put``."""
        out = []
        for entry in sorted(os.listdir(self._pins)):
            try:
                out.append((self._pins / entry).read_text("ascii"))
            except FileNotFoundError:  # unpinned meanwhile
                continue
        return out

    def gc(self) -> int:
        """Remove every block no pin reaches, and leftovers of crashed writers; return the count.

        Holds the store's lock exclusively, so no put or pin runs meanwhile
        (reads may: a block moved by compaction is looked up again). If a
        pinned object is incomplete or corrupt, nothing is removed: put it
        again (or unpin it) and retry.
        """
        with self._locked(exclusive=True):
            live = self._live_keys()
            rows = self._index.rows()
            removed = self._index.forget(key for key, *_ in rows if key not in live)
            self._compact([row for row in rows if row[0] in live])
            # No writer runs under the exclusive lock: whatever is in tmp/ is a leftover.
            for entry in os.scandir(self._tmp):
                os.unlink(entry.path)
        return removed

    def _live_keys(self) -> set[bytes]:
        live: set[bytes] = set()
        for text in self.pins():
            try:
                for cid in walk_dag(parse_cid(text), self._read_node):
                    if cid.codec == CODEC_RAW and not self._exists(cid):
                        raise not_found(cid, "the store (a block of a pinned object)")
                    live.add(cid.multihash)
            except (NotFoundError, ValueError) as exc:
                raise type(exc)(
                    f"gc removed nothing: pinned object {text} cannot be walked ({exc}); "
                    "put it again or unpin it, then run gc again"
                ) from exc
        return live

    def _compact(self, live_rows: list[tuple[bytes, str, int, int]]) -> None:
        """Delete packs no live block is in; rewrite packs that are mostly dead."""
        by_pack: dict[str, list[tuple[bytes, str, int, int]]] = {}
        for row in live_rows:
            by_pack.setdefault(row[1], []).append(row)
        for entry in os.scandir(self._packs):
            kept = by_pack.get(entry.name, [])
            if not kept:
                os.unlink(entry.path)
            elif sum(r[3] for r in kept) < _COMPACT_BELOW * entry.stat().st_size:
                self._rewrite(Path(entry.path), kept)

    def _rewrite(self, old: Path, rows: list[tuple[bytes, str, int, int]]) -> None:
        # Copy the live blocks to a new pack, re-hashing each (a bad copy is dropped and
        # reads as absent until put again), point the index there, then delete the old.
        writer = PackWriter(self._index, self._packs, self._tmp, durable=self.durable)
        try:
            fd = os.open(old, os.O_RDONLY | os.O_CLOEXEC)
            try:
                for key, _, offset, length in rows:
                    block = os.pread(fd, length, offset)
                    if hashlib.sha256(block).digest() == key[2:]:
                        writer.append(key, block)
            finally:
                os.close(fd)
            writer.commit(moving=True)
        except BaseException:
            writer.abort()
            raise
        moved = writer.keys
        self._index.forget([r[0] for r in rows if r[0] not in moved], pack=old.name)
        old.unlink()
