"""Pack files and their index: how LocalStore keeps blocks on disk, keyed by multihash.

A put writes the blocks it does not already have into ONE new pack file
(``tmp/`` first, renamed into ``packs/`` when whole), then records each
block's (pack, offset, length) under its multihash in an SQLite index, in
one transaction. So an object appears all at once or not at all, a failed
put leaves nothing (a crashed one leaves a file in ``tmp/`` that ``gc``
removes), and readers never see a partial block.

Why packs rather than one file per block (Kubo's flatfs): creating a file
costs as much as hashing a 256 KiB chunk on the ext4 here, and a rename as
much again; appending to one file per put halves a put's CPU time
(``bench/storage.py``).

The index is SQLite in WAL mode, so several processes share it. Two processes putting the same new
block both write it; the first index row wins and ``gc`` compacts the other
copy away.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from coordinator.storage._cid import CID
from coordinator.storage._unixfs import BytesLike

Row = tuple[bytes, str, int, int]
"""(multihash, pack file name, offset, length)."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS blocks (
    key BLOB PRIMARY KEY,
    pack TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_by_pack ON blocks (pack);
"""


def write_all(fd: int, block: BytesLike, offset: int) -> None:
    """``pwrite`` every byte of ``block`` at ``offset``."""
    view = memoryview(block)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _close(holder: list[sqlite3.Connection]) -> None:
    for conn in holder:
        conn.close()
    holder.clear()


def _retry_locked(run: Callable[[], object], deadline_s: float = 60.0) -> None:
    """Run ``run``, retrying while another process holds the database lock.

    Switching a new database to WAL, and creating its schema, can answer
    ``database is locked`` at once, without waiting on the busy timeout, when
    several processes open the same new store together.
    """
    end = time.monotonic() + deadline_s
    delay = 0.005
    while True:
        try:
            run()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > end:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class PackIndex:
    """The SQLite table from multihash to (pack, offset, length).

    One connection per process, shared by its threads under a lock (a lookup
    takes microseconds); a child process after ``fork`` opens its own.
    """

    def __init__(self, path: Path, *, durable: bool) -> None:
        self.path = path
        self._durable = durable
        self._lock = threading.RLock()
        self._holder: list[sqlite3.Connection] = []
        self._pid = -1
        weakref.finalize(self, _close, self._holder)
        with self._lock:
            conn = self._conn()
            _retry_locked(lambda: conn.executescript(_SCHEMA))

    def _conn(self) -> sqlite3.Connection:
        """The process's connection; call with the lock held."""
        if self._holder and self._pid == os.getpid():
            return self._holder[0]
        self._holder.clear()  # a connection inherited through fork is never used
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
        conn.execute(f"PRAGMA synchronous={'FULL' if self._durable else 'NORMAL'}")
        self._holder.append(conn)
        self._pid = os.getpid()
        return conn

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        with self._lock:
            if self._pid == os.getpid():
                _close(self._holder)
            self._holder.clear()

    def locate(self, key: bytes) -> tuple[str, int, int] | None:
        """Where the block with multihash ``key`` is: (pack, offset, length), or None."""
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT pack, offset, length FROM blocks WHERE key = ?", (key,))
                .fetchone()
            )
        return None if row is None else (row[0], row[1], row[2])

    def _write(self, sql: str, params: Iterable[tuple[object, ...]]) -> int:
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = conn.executemany(sql, params).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return count

    def insert(self, rows: Iterable[Row]) -> None:
        """Record blocks; a block already recorded keeps its first location."""
        self._write("INSERT OR IGNORE INTO blocks VALUES (?, ?, ?, ?)", rows)

    def move(self, rows: Iterable[Row]) -> None:
        """Point blocks at a new location (after compaction)."""
        self._write(
            "UPDATE blocks SET pack = ?, offset = ?, length = ? WHERE key = ?",
            ((pack, off, n, key) for key, pack, off, n in rows),
        )

    def forget(self, keys: Iterable[bytes], pack: str | None = None) -> int:
        """Drop blocks from the index (only their copy in ``pack``, if given); return how many."""
        if pack is None:
            return self._write("DELETE FROM blocks WHERE key = ?", ((k,) for k in keys))
        return self._write(
            "DELETE FROM blocks WHERE key = ? AND pack = ?", ((k, pack) for k in keys)
        )

    def forget_pack(self, pack: str) -> int:
        """Drop every block recorded in ``pack``; return how many."""
        return self._write("DELETE FROM blocks WHERE pack = ?", [(pack,)])

    def rows(self) -> list[Row]:
        """Every recorded block."""
        with self._lock:
            cursor = self._conn().execute("SELECT key, pack, offset, length FROM blocks")
            return [(r[0], r[1], r[2], r[3]) for r in cursor]


class PackWriter:
    """Appends the blocks of one put to a new pack; :meth:`commit` publishes them all at once.

    :meth:`add` is thread-safe: offsets are handed out under a lock and the
    bytes are written with ``pwrite`` outside it, so worker threads write in
    parallel. Blocks the index already holds are skipped.
    """

    def __init__(self, index: PackIndex, packs: Path, tmp: Path, *, durable: bool) -> None:
        self._index = index
        self._packs = packs
        self._durable = durable
        self.name = f"{secrets.token_hex(12)}.pack"
        self._tmp = tmp / self.name
        self._fd: int | None = None
        self._end = 0
        self._rows: list[Row] = []
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()

    def add(self, cid: CID, block: BytesLike) -> None:
        """Write ``block`` into the pack, unless this put or the store already has it."""
        key = cid.multihash
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        if self._index.locate(key) is not None:
            return  # already stored; a bad copy is caught on read and forgotten
        self.append(key, block)

    def append(self, key: bytes, block: BytesLike) -> None:
        """Write ``block`` under multihash ``key`` unconditionally (compaction moves blocks so)."""
        with self._lock:
            if self._fd is None:
                self._fd = os.open(
                    self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444
                )
            offset = self._end
            self._end += len(block)
            self._rows.append((key, self.name, offset, len(block)))
            fd = self._fd
        write_all(fd, block, offset)

    @property
    def keys(self) -> set[bytes]:
        """The multihashes written into this pack."""
        return {row[0] for row in self._rows}

    def commit(self, *, moving: bool = False) -> None:
        """Make the pack whole (durable, if asked), move it into ``packs/``, index its blocks.

        With ``moving``, the blocks are already indexed elsewhere and are
        pointed here instead (compaction).
        """
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp, self._packs / self.name)
        if self._durable:
            fsync_dir(self._packs)
        if moving:
            self._index.move(self._rows)
        else:
            self._index.insert(self._rows)

    def abort(self) -> None:
        """Remove the unfinished pack."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)
