"""Read a UnixFS file DAG block by block, verifying every block before any byte is used.

Shared by every store: a store only knows how to fetch blocks by CID
(unverified, in order); this module re-hashes each block against its CID,
checks each dag-pb node's structure (UnixFS file type, one ``blocksizes``
entry per link, sizes that add up to ``filesize``, every child's real size
equal to what its parent declared), bounds the depth, and enforces the
object size limit from the root's declared ``filesize`` before any child is
fetched (DESIGN.md, "What must never happen": a fetched blob is never used
before its CID is checked).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Final

from coordinator.storage._cid import CID, CODEC_RAW
from coordinator.storage._dagpb import (
    TYPE_FILE,
    TYPE_NAMES,
    TYPE_RAW,
    decode_pbnode,
    decode_unixfs,
)
from coordinator.storage._errors import (
    CIDMismatchError,
    InvalidCIDError,
    MalformedObjectError,
    NotFoundError,
    ObjectTooLargeError,
)
from coordinator.storage._unixfs import CHUNK_SIZE

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MAX_BLOCK_BYTES: Final = 2 * 1024 * 1024
"""The largest block a store reads or writes.

``ipfs add`` never makes a block over 1 MiB plus a few bytes of framing (its
largest chunk size); 2 MiB leaves room, and bounds the memory one fetch takes.
"""

MAX_DEPTH: Final = 32
"""Deepest DAG read. A balanced DAG of depth 8 already holds more than 174**8 chunks."""

OnCorrupt = Callable[[CID], None]
"""Told the CID of a block that failed its hash, before the error is raised."""

FetchMany = Callable[[Sequence[CID]], Iterator[bytes]]
"""A store's block source: yields the blocks of ``cids`` in order, unverified.

It raises :class:`NotFoundError` for a missing block and
:class:`ObjectTooLargeError` for one over :data:`MAX_BLOCK_BYTES`.
"""

_Children = list[tuple[CID, int]]


def verify_block(cid: CID, block: bytes | memoryview, on_corrupt: OnCorrupt | None = None) -> None:
    """Raise :class:`CIDMismatchError` unless ``block`` hashes to ``cid``."""
    if len(block) > MAX_BLOCK_BYTES:
        raise ObjectTooLargeError(
            f"block {cid} is {len(block)} bytes, over the {MAX_BLOCK_BYTES}-byte block limit; "
            "`ipfs add` never makes such a block, so this is not a file it added"
        )
    if not cid.matches(block):
        if on_corrupt is not None:
            on_corrupt(cid)
        actual = CID.of_block(cid.version, cid.codec, block)
        raise CIDMismatchError(
            f"block {cid} holds {len(block)} bytes that hash to {actual}: it was tampered with "
            "or truncated. Nothing from it was returned; fetch the object again from a "
            "trusted source, or put it again"
        )


def parse_file_node(cid: CID, block: bytes) -> tuple[bytes, _Children, int]:
    """Decode a verified dag-pb block as a UnixFS file node: (own data, children, filesize).

    ``children`` pairs each child's CID with the filesize its parent declares
    for it. Raises :class:`MalformedObjectError` when the node is not a
    consistent file node.
    """
    node = decode_pbnode(block)
    if node.data is None:
        raise MalformedObjectError(
            f"{cid} is a dag-pb node without UnixFS data: it is not a file `ipfs add` made"
        )
    meta = decode_unixfs(node.data)
    if meta.type not in (TYPE_FILE, TYPE_RAW):
        kind = TYPE_NAMES.get(meta.type, f"type {meta.type}")
        raise MalformedObjectError(
            f"{cid} is a UnixFS {kind}, not a file; fetch a file's CID (a directory's "
            "entries each have their own)"
        )
    if len(meta.blocksizes) != len(node.links):
        raise MalformedObjectError(
            f"{cid} has {len(node.links)} links but {len(meta.blocksizes)} blocksizes"
        )
    own = meta.data or b""
    total = len(own) + sum(meta.blocksizes)
    if meta.filesize is not None and meta.filesize != total:
        raise MalformedObjectError(
            f"{cid} declares filesize {meta.filesize} but its data and blocksizes add up to {total}"
        )
    children: _Children = []
    for link, size in zip(node.links, meta.blocksizes, strict=True):
        try:
            children.append((CID.from_binary(link.hash), size))
        except InvalidCIDError as exc:
            raise type(exc)(f"a link of {cid}: {exc}") from None
    return own, children, total


def _walk(
    fetch_many: FetchMany,
    own: bytes,
    children: _Children,
    depth: int,
    on_corrupt: OnCorrupt | None,
) -> Iterator[bytes]:
    if own:
        yield own
    if not children:
        return
    if depth >= MAX_DEPTH:
        raise MalformedObjectError(
            f"the DAG is deeper than {MAX_DEPTH} levels; refusing to read it"
        )
    blocks = fetch_many([cid for cid, _ in children])
    try:
        for (cid, declared), block in zip(children, blocks, strict=True):
            verify_block(cid, block, on_corrupt)
            if cid.codec == CODEC_RAW:
                actual = len(block)
                if actual != declared:
                    raise MalformedObjectError(
                        f"raw leaf {cid} holds {actual} bytes; its parent says {declared}"
                    )
                yield block
                continue
            child_own, grandchildren, actual = parse_file_node(cid, bytes(block))
            if actual != declared:
                raise MalformedObjectError(
                    f"node {cid} holds {actual} bytes; its parent says {declared}"
                )
            yield from _walk(fetch_many, child_own, grandchildren, depth + 1, on_corrupt)
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()


def _checked_total(chunks: Iterator[bytes], root: CID, size: int) -> Iterator[bytes]:
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise MalformedObjectError(f"{root} yields more than its declared {size} bytes")
        yield chunk
    if seen != size:
        raise MalformedObjectError(f"{root} yields {seen} bytes, not its declared {size}")


def check_limit(cid: CID, size: int, limit: int | None) -> None:
    """Raise :class:`ObjectTooLargeError` when ``size`` is over ``limit``."""
    if limit is not None and size > limit:
        raise ObjectTooLargeError(
            f"object {cid} is {size} bytes, over the store's limit of {limit} bytes "
            "(storage.max_object_bytes); raise the limit to fetch it, or refuse the object"
        )


def first_block(fetch_many: FetchMany, cid: CID, on_corrupt: OnCorrupt | None = None) -> bytes:
    """Fetch and verify one block."""
    blocks = fetch_many([cid])
    try:
        block = next(blocks)
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
    verify_block(cid, block, on_corrupt)
    return block


class _ChunkStream(io.RawIOBase):
    """A read-only raw stream over an iterator of verified chunks."""

    def __init__(self, chunks: Iterator[bytes], size: int) -> None:
        super().__init__()
        self._chunks = chunks
        self._buf = memoryview(b"")
        self._size = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        while not self._buf:
            try:
                self._buf = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        out = memoryview(buffer).cast("B")
        n = min(len(out), len(self._buf))
        out[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def readall(self) -> bytes:
        # Copy each chunk into one buffer of the known size as it arrives, so chunk
        # buffers are freed and reused, and getvalue() hands that buffer over uncopied.
        out = io.BytesIO()
        if self._size:
            out.seek(self._size - 1)
            out.write(b"\0")
            out.seek(0)
        out.write(self._buf)
        self._buf = memoryview(b"")
        for chunk in self._chunks:
            out.write(chunk)
        out.truncate()
        return out.getvalue()

    def close(self) -> None:
        if not self.closed:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        super().close()


class ObjectReader(io.BufferedReader):
    """A binary stream over a stored object whose every block is verified as it is read.

    ``cid`` and ``size`` (the root's declared size, already checked against
    the store's limit) are known when the stream opens. A tampered block
    raises :class:`CIDMismatchError` from ``read`` before any of its bytes
    are returned.
    """

    def __init__(self, cid: CID, size: int, chunks: Iterator[bytes]) -> None:
        super().__init__(
            _ChunkStream(_checked_total(chunks, cid, size), size), buffer_size=CHUNK_SIZE
        )
        self.cid = cid
        self.size = size


def open_object(
    fetch_many: FetchMany, cid: CID, limit: int | None, on_corrupt: OnCorrupt | None = None
) -> ObjectReader:
    """Fetch and check the root now, and return a reader that fetches the rest as it goes."""
    root = first_block(fetch_many, cid, on_corrupt)
    if cid.codec == CODEC_RAW:
        check_limit(cid, len(root), limit)
        return ObjectReader(cid, len(root), iter((root,)))
    own, children, size = parse_file_node(cid, root)
    check_limit(cid, size, limit)
    return ObjectReader(cid, size, _walk(fetch_many, own, children, 0, on_corrupt))


def walk_dag(root: CID, read_node: Callable[[CID], bytes]) -> Iterator[CID]:
    """Every CID in the DAG under ``root``, parents first; dag-pb nodes are read and verified.

    Raw leaves are named, not read: a caller that needs them checks them
    itself. ``read_node`` raises :class:`NotFoundError` for a missing block.
    """
    stack = [(root, 0)]
    while stack:
        cid, depth = stack.pop()
        yield cid
        if cid.codec == CODEC_RAW:
            continue
        if depth >= MAX_DEPTH:
            raise MalformedObjectError(f"the DAG under {root} is deeper than {MAX_DEPTH} levels")
        block = read_node(cid)
        verify_block(cid, block)
        node = decode_pbnode(block)
        children = [CID.from_binary(link.hash) for link in node.links]
        stack.extend((c, depth + 1) for c in reversed(children))


def missing(root: CID, read_node: Callable[[CID], bytes], exists: Callable[[CID], bool]) -> bool:
    """True when some block of the DAG under ``root`` is absent (or a node is unreadable)."""
    try:
        return not all(cid.codec != CODEC_RAW or exists(cid) for cid in walk_dag(root, read_node))
    except NotFoundError:
        return True
