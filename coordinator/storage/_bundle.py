"""Bundles: a set of named files stored under one CID, by way of a canonical JSON manifest.

A task bundle (code, initial weights, settings) or a dataset's shards travel
as one CID (DESIGN.md, "Data flow", step 2). Each file is stored as its own
object; the manifest lists them and is stored last::

    {"files":[{"cid":"bafk...","name":"data/shard-0.bin","size":1048576},...],
     "format":"gensyn-bundle/1"}

It is canonical JSON (``ree._encoding.canonical_json``: sorted keys, no
spaces, UTF-8) with files sorted by name, so one set of files has one
manifest CID. A manifest that is not in that exact form is refused, and so is
a file whose size differs from its entry. Names are relative POSIX paths with
no ``.``/``..`` segments, so extracting a bundle never writes outside its
target folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from coordinator.storage._cid import normalize_cid
from coordinator.storage._errors import BundleError, InvalidCIDError
from coordinator.storage._store import Store
from coordinator.storage._unixfs import Source

FORMAT: Final = "gensyn-bundle/1"
MAX_MANIFEST_BYTES: Final = 16 * 1024 * 1024
MAX_NAME_BYTES: Final = 1024
MAX_SEGMENT_BYTES: Final = 255


def check_name(name: object) -> str:
    """Return ``name`` if it is a safe relative POSIX path; raise :class:`BundleError` otherwise."""
    if not isinstance(name, str):
        raise BundleError(f"a bundle file name is a str, got {type(name).__name__} {name!r:.80}")
    problem = None
    if not name:
        problem = "it is empty"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        problem = f"it is longer than {MAX_NAME_BYTES} bytes"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        problem = "it holds a control character"
    elif "\\" in name:
        problem = "it holds a backslash; separate folders with '/'"
    elif name.startswith("/"):
        problem = "it is absolute; names are relative to the bundle"
    elif unicodedata.normalize("NFC", name) != name:
        problem = "it is not in Unicode NFC form"
    else:
        for segment in name.split("/"):
            if segment in ("", ".", ".."):
                problem = f"it has a {segment or 'empty'!r} segment"
                break
            if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
                problem = f"a segment is longer than {MAX_SEGMENT_BYTES} bytes"
                break
    if problem is None:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            problem = "it is not valid UTF-8"
    if problem is not None:
        raise BundleError(
            f"bundle file name {name!r:.120} is refused: {problem}. Use a relative path like "
            "'src/model.py' whose segments are not '.', '..' or empty"
        )
    return name


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One file of a bundle: its name, its size in bytes and its CID."""

    name: str
    size: int
    cid: str


@dataclass(frozen=True, slots=True)
class Bundle:
    """A parsed, validated manifest: entries sorted by name, names unique and non-overlapping."""

    entries: tuple[BundleEntry, ...]

    def __post_init__(self) -> None:
        names = [check_name(e.name) for e in self.entries]
        if names != sorted(names):
            raise BundleError("bundle entries must be sorted by name (byte order of UTF-8)")
        dirs: set[str] = set()
        for e in self.entries:
            if isinstance(e.size, bool) or not isinstance(e.size, int) or e.size < 0:
                raise BundleError(f"bundle entry {e.name!r} has size {e.size!r}; use a byte count")
            try:
                if normalize_cid(e.cid) != e.cid:
                    raise BundleError(
                        f"bundle entry {e.name!r} has CID {e.cid!r} in non-canonical form; "
                        f"use {normalize_cid(e.cid)!r}"
                    )
            except InvalidCIDError as exc:
                raise BundleError(f"bundle entry {e.name!r}: {exc}") from None
            parts = e.name.split("/")
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        for a, b in zip(names, names[1:], strict=False):
            if a == b:
                raise BundleError(f"bundle file name {a!r} appears twice")
        clash = dirs.intersection(names)
        if clash:
            raise BundleError(
                f"bundle name {sorted(clash)[0]!r} is both a file and a folder of other files"
            )

    @classmethod
    def of(cls, entries: list[BundleEntry]) -> Bundle:
        """A bundle of ``entries`` in any order (they are sorted here)."""
        return cls(tuple(sorted(entries, key=lambda e: e.name.encode("utf-8"))))

    def manifest(self) -> bytes:
        """The canonical JSON bytes stored under the bundle's CID."""
        from ree._encoding import canonical_json  # imports torch: only when a bundle is written

        files = [{"cid": e.cid, "name": e.name, "size": e.size} for e in self.entries]
        return canonical_json({"files": files, "format": FORMAT})

    @classmethod
    def from_manifest(cls, raw: bytes) -> Bundle:
        """Parse and check manifest bytes; anything but the canonical form is refused."""
        try:
            doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"the bundle manifest is not UTF-8 JSON ({exc})") from None
        if not isinstance(doc, dict) or set(doc) != {"files", "format"}:
            keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise BundleError(
                f"a bundle manifest has exactly the keys files and format, got {keys}"
            )
        if doc["format"] != FORMAT:
            raise BundleError(
                f"bundle format {doc['format']!r} is not {FORMAT!r}; upgrade gensyn to read it"
            )
        if not isinstance(doc["files"], list):
            raise BundleError("a bundle manifest's files is a list")
        entries = []
        for item in doc["files"]:
            if not isinstance(item, dict) or set(item) != {"cid", "name", "size"}:
                raise BundleError(f"a bundle entry has exactly cid, name and size: {item!r:.200}")
            if not isinstance(item["cid"], str):
                raise BundleError(f"bundle entry cid {item['cid']!r:.80} is not a string")
            entries.append(BundleEntry(item["name"], item["size"], item["cid"]))
        bundle = cls(tuple(entries))
        if bundle.manifest() != raw:
            raise BundleError(
                "the bundle manifest is valid JSON but not canonical (sorted keys, no spaces, "
                "files sorted by name); it was not written by put_bundle"
            )
        return bundle

    def __iter__(self) -> Iterator[BundleEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> BundleEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no file named {name!r} in the bundle; it holds {self.names[:5]!r}...")

    @property
    def names(self) -> list[str]:
        """The file names, sorted."""
        return [e.name for e in self.entries]

    @property
    def size(self) -> int:
        """Total bytes of the files."""
        return sum(e.size for e in self.entries)

    def read(self, store: Store, name: str) -> bytes:
        """The bytes of one file, verified against its CID and its size in the manifest."""
        entry = self[name]
        with store.open(entry.cid) as reader:
            _check_size(entry, reader.size)
            return reader.read()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise BundleError(f"the bundle manifest repeats a key: {keys!r}")
    return dict(pairs)


def _check_size(entry: BundleEntry, actual: int) -> None:
    if actual != entry.size:
        raise BundleError(
            f"bundle file {entry.name!r} ({entry.cid}) holds {actual} bytes, but the manifest "
            f"says {entry.size}; the manifest is inconsistent: do not use this bundle"
        )


def _walk_dir(root: Path) -> dict[str, Source]:
    files: dict[str, Source] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in [*filenames, *dirnames]:
            path = Path(dirpath, name)
            if path.is_symlink():
                raise BundleError(
                    f"{str(path)!r} is a symbolic link; a bundle holds regular files only "
                    "(copy the target in, or leave it out)"
                )
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_file():
                raise BundleError(f"{str(path)!r} is not a regular file")
            files[path.relative_to(root).as_posix()] = path
    return files


def put_bundle(
    store: Store, files: Mapping[str, Source] | os.PathLike[str], *, pin: bool = True
) -> str:
    """Store every file, then the manifest; return the manifest's CID.

    ``files`` maps names to anything ``store.put`` takes, or is a folder
    (every regular file under it, named by its relative path; a symbolic link
    is refused).
    """
    if isinstance(files, os.PathLike):
        root = Path(files)
        if not root.is_dir():
            raise BundleError(f"{str(root)!r} is not a folder; pass a folder or a name->file map")
        files = _walk_dir(root)
    for name in files:
        check_name(name)
    entries = []
    for name, source in files.items():
        cid = store.put(source, pin=pin)
        with store.open(cid) as reader:
            size = reader.size
        entries.append(BundleEntry(name, size, cid))
    bundle = Bundle.of(entries)
    return store.put(bundle.manifest(), pin=pin)


def get_bundle(store: Store, cid: str) -> Bundle:
    """Fetch, verify and parse the manifest stored under ``cid``."""
    with store.open(cid) as reader:
        if reader.size > MAX_MANIFEST_BYTES:
            raise BundleError(
                f"{cid} is {reader.size} bytes, more than a bundle manifest may be "
                f"({MAX_MANIFEST_BYTES}); it is not a bundle"
            )
        raw = reader.read()
    return Bundle.from_manifest(raw)


def extract_bundle(store: Store, cid: str, dest: str | os.PathLike[str]) -> Path:
    """Write every file of the bundle under ``dest``, which must not exist yet; return it.

    Files are written to a sibling temporary folder, each verified as it is
    streamed, and the folder is renamed to ``dest`` only when all are
    complete: a failure leaves nothing at ``dest``.
    """
    target = Path(dest)
    if target.exists():
        raise BundleError(f"{str(target)!r} exists; extract a bundle into a new folder")
    bundle = get_bundle(store, cid)
    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    staging.mkdir(parents=True)
    try:
        for entry in bundle:
            path = staging.joinpath(*entry.name.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            with store.open(entry.cid) as reader:
                _check_size(entry, reader.size)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(reader, out, 1024 * 1024)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def pin_bundle(store: Store, cid: str) -> None:
    """Pin the manifest and every file of the bundle."""
    bundle = get_bundle(store, cid)
    for entry in bundle:
        store.pin(entry.cid)
    store.pin(cid)


def unpin_bundle(store: Store, cid: str) -> None:
    """Unpin the manifest and every file (pins are a set: a file shared with a pinned bundle is unpinned too)."""
    bundle = get_bundle(store, cid)
    store.unpin(cid)
    for entry in bundle:
        store.unpin(entry.cid)
