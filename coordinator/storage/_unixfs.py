"""Chunk a byte stream and build the UnixFS DAG ``ipfs add`` builds, one chunk at a time.

Kubo's defaults (and js-ipfs 0.66's, checked against a daemon in the tests):

* fixed chunks of 256 KiB (``--chunker size-262144``);
* a balanced DAG of at most 174 links per node, every leaf at the same depth,
  filled left to right (go-unixfs ``importer/balanced``);
* a file of one chunk is its own root; the empty file is one empty leaf;
* CIDv1 implies raw leaves (codec 0x55); CIDv0 wraps each chunk in a dag-pb
  node holding UnixFS ``{Type=File, Data, filesize}``;
* internal nodes are dag-pb: links (empty names, Tsize = the child's
  cumulative size) then UnixFS ``{Type=File, filesize, blocksizes}``.

:class:`DagBuilder` keeps one pending list of links per level, so memory is
O(depth × 174) links whatever the file size; blocks go to a ``sink`` as they
are made, which is how a store writes them while the CID is computed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Final, cast

from coordinator.storage._cid import CID, CODEC_DAG_PB, CODEC_RAW, parse_cid
from coordinator.storage._dagpb import (
    TYPE_FILE,
    PBLink,
    PBNode,
    UnixFSData,
    encode_pbnode,
    encode_unixfs,
)
from coordinator.storage._errors import CIDMismatchError, InvalidCIDError, ObjectTooLargeError

CHUNK_SIZE: Final = 256 * 1024
MAX_LINKS: Final = 174

BytesLike = bytes | bytearray | memoryview
Source = BytesLike | os.PathLike[str] | IO[bytes] | Iterable[bytes]
"""What a store can ``put`` and :func:`compute_cid_stream` can hash.

Bytes-like objects, a path (``pathlib.Path``, never a ``str``: a string is
too easily data), an open binary file, or an iterable of byte strings.
"""

BlockSink = Callable[[CID, BytesLike], None]
"""Receives each block as it is made: leaves first, every block before its parent."""

_Entry = tuple[bytes, int, int]  # (binary CID, Tsize, filesize) of a child


def check_version(cid_version: int) -> int:
    """Return ``cid_version`` if it is 0 or 1; raise :class:`InvalidCIDError` otherwise."""
    if cid_version not in (0, 1):
        raise InvalidCIDError(
            f"cid_version={cid_version!r}: use 1 (`ipfs add --cid-version 1 --raw-leaves`, "
            "the default) or 0 (plain `ipfs add`)"
        )
    return cid_version


class DagBuilder:
    """Builds, chunk by chunk, the balanced DAG and root CID of a file as ``ipfs add`` does.

    Call :meth:`add` with consecutive chunks of exactly :data:`CHUNK_SIZE`
    bytes (the last may be shorter), then :meth:`finish` for the root CID.
    """

    def __init__(self, cid_version: int = 1, sink: BlockSink | None = None) -> None:
        self.version = check_version(cid_version)
        self._sink = sink
        self._levels: list[list[_Entry]] = [[]]
        self._short_seen = False
        self.size = 0
        """Bytes added so far."""

    def add(self, chunk: BytesLike) -> None:
        """Add the next chunk of the file (hashed here; see :meth:`add_leaf` to hash elsewhere)."""
        if len(chunk) == 0:
            return
        cid, block, tsize = make_leaf(chunk, self.version)
        if self._sink is not None:
            self._sink(cid, block)
        self.add_leaf(cid, tsize, len(chunk))

    def add_leaf(self, cid: CID, tsize: int, size: int) -> None:
        """Add the next leaf, already made by :func:`make_leaf` (and stored, if it must be)."""
        if self._short_seen or not 0 < size <= CHUNK_SIZE:
            raise ValueError(
                f"chunks must be {CHUNK_SIZE} bytes except the last; got {size} bytes "
                f"after {self.size} (use iter_chunks to split a stream)"
            )
        self._short_seen = size < CHUNK_SIZE
        self.size += size
        self._push(0, (cid.binary, tsize, size))

    def _push(self, level: int, entry: _Entry) -> None:
        # A full node is final: close it only when one more entry needs its level.
        if len(self._levels) == level:
            self._levels.append([])
        if len(self._levels[level]) == MAX_LINKS:
            self._push(level + 1, self._node(self._levels[level]))
            self._levels[level] = []
        self._levels[level].append(entry)

    def _node(self, entries: list[_Entry]) -> _Entry:
        sizes = tuple(e[2] for e in entries)
        filesize = sum(sizes)
        data = encode_unixfs(UnixFSData(TYPE_FILE, filesize=filesize, blocksizes=sizes))
        block = encode_pbnode(PBNode(tuple(PBLink(e[0], "", e[1]) for e in entries), data))
        cid = CID.of_block(self.version, CODEC_DAG_PB, block)
        if self._sink is not None:
            self._sink(cid, block)
        return (cid.binary, len(block) + sum(e[1] for e in entries), filesize)

    def finish(self) -> CID:
        """Close every pending node and return the root CID."""
        if self.size == 0:
            return self._empty()
        levels = self._levels
        level = 0
        # Wrap each level into a node and push it up, until one entry is left at the top.
        while True:
            top = all(not lv for lv in levels[level + 1 :])
            if top and len(levels[level]) == 1:
                return CID.from_binary(levels[level][0][0])
            entry = self._node(levels[level])
            levels[level] = []
            self._push(level + 1, entry)
            level += 1

    def _empty(self) -> CID:
        if self.version == 1:
            block = b""
            cid = CID.of_block(1, CODEC_RAW, block)
        else:
            block = encode_pbnode(PBNode(data=encode_unixfs(UnixFSData(TYPE_FILE, filesize=0))))
            cid = CID.of_block(0, CODEC_DAG_PB, block)
        if self._sink is not None:
            self._sink(cid, block)
        return cid


def make_leaf(chunk: BytesLike, cid_version: int) -> tuple[CID, BytesLike, int]:
    """The leaf block of ``chunk``: (CID, block bytes, Tsize).

    Version 1: the chunk itself, a raw block. Version 0: a dag-pb node holding
    UnixFS ``{Type=File, Data=chunk, filesize}``. Safe to call from threads.
    """
    if cid_version == 1:
        return CID.of_block(1, CODEC_RAW, chunk), chunk, len(chunk)
    data = encode_unixfs(UnixFSData(TYPE_FILE, data=bytes(chunk), filesize=len(chunk)))
    block = encode_pbnode(PBNode(data=data))
    return CID.of_block(0, CODEC_DAG_PB, block), block, len(block)


def _too_large(limit: int, seen: str) -> ObjectTooLargeError:
    return ObjectTooLargeError(
        f"the object is {seen} bytes, over the store's limit of {limit} bytes "
        "(storage.max_object_bytes); split it into several objects (a bundle), "
        "or raise the limit"
    )


def iter_chunks(source: Source, *, limit: int | None = None) -> Iterator[BytesLike]:
    """Split ``source`` into :data:`CHUNK_SIZE` chunks, never holding more than one chunk.

    With ``limit``, raises :class:`ObjectTooLargeError` as soon as the object is
    known to be larger: before reading for bytes and paths, while reading for
    files and iterables.
    """
    if isinstance(source, str):
        raise TypeError(
            f"got a str ({source!r:.60}): pass bytes for data, or a pathlib.Path for a file"
        )
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        if limit is not None and len(view) > limit:
            raise _too_large(limit, str(len(view)))
        for start in range(0, len(view), CHUNK_SIZE):
            yield view[start : start + CHUNK_SIZE]
        return
    if isinstance(source, os.PathLike):
        path = Path(source)
        with path.open("rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if limit is not None and size > limit:
                raise _too_large(limit, str(size))
            yield from _limited(_read_chunks(f), limit)
        return
    if hasattr(source, "read"):
        yield from _limited(_read_chunks(cast(IO[bytes], source)), limit)
        return
    yield from _limited(_rechunk(source), limit)


def _limited(chunks: Iterator[BytesLike], limit: int | None) -> Iterator[BytesLike]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if limit is not None and total > limit:
            raise _too_large(limit, f"more than {total - len(chunk)}")
        yield chunk


def _read_chunks(f: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = f.read(CHUNK_SIZE)
        if not isinstance(chunk, bytes | bytearray):
            raise TypeError(f"{f!r} returned {type(chunk).__name__}: open the file in binary mode")
        if not chunk:
            return
        while len(chunk) < CHUNK_SIZE:  # a pipe or socket may return short reads
            more = f.read(CHUNK_SIZE - len(chunk))
            if not more:
                break
            chunk += more
        yield chunk
        if len(chunk) < CHUNK_SIZE:
            return


def _rechunk(parts: Iterable[bytes]) -> Iterator[bytes]:
    buf = bytearray()
    for part in parts:
        if not isinstance(part, bytes | bytearray | memoryview):
            raise TypeError(f"an iterable source must yield bytes, got {type(part).__name__}")
        buf += part
        while len(buf) >= CHUNK_SIZE:
            yield bytes(buf[:CHUNK_SIZE])
            del buf[:CHUNK_SIZE]
    if buf:
        yield bytes(buf)


def build(
    source: Source,
    *,
    cid_version: int = 1,
    sink: BlockSink | None = None,
    limit: int | None = None,
) -> CID:
    """Chunk ``source`` and build its DAG, sending blocks to ``sink``; returns the root CID."""
    builder = DagBuilder(cid_version, sink)
    for chunk in iter_chunks(source, limit=limit):
        builder.add(chunk)
    return builder.finish()


def compute_cid(data: BytesLike, *, cid_version: int = 1) -> str:
    """The CID ``ipfs add`` prints for ``data`` (v1: ``--cid-version 1 --raw-leaves``; v0: plain).

    >>> compute_cid(b"hello world")
    'bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e'
    >>> compute_cid(b"hello world", cid_version=0)
    'Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD'
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            f"compute_cid takes bytes, got {type(data).__name__}; "
            "use compute_cid_stream for a path, a file or an iterable"
        )
    return str(build(data, cid_version=cid_version))


def compute_cid_stream(source: Source, *, cid_version: int = 1) -> str:
    """Like :func:`compute_cid` for a path, a binary file or an iterable, read in 256 KiB chunks."""
    return str(build(source, cid_version=cid_version))


def verify_cid(data: BytesLike, cid: str | CID) -> None:
    """Raise :class:`CIDMismatchError` unless ``ipfs add`` of ``data`` gives ``cid``.

    The layout is Kubo's default for the CID's version (raw leaves for v1).
    """
    expected = parse_cid(cid)
    actual = build(data, cid_version=expected.version)
    if actual != expected:
        raise CIDMismatchError(
            f"{len(data)} bytes hash to {actual}, not {expected}: the data was altered, "
            "truncated or is another object; fetch it again from a trusted source"
        )
