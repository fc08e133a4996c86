"""The local side of file transfers, shared by ``Client`` and ``AsyncClient``.

The steps on the wire are the ``ClientSession``'s (PROTOCOL.md, "Files");
this is the disk work the clients supply: the file to upload, read and
hashed a chunk at a time, and the receiving end of a download, a temporary
file beside the destination that takes the final name only once its digest
is verified (fsync, then an atomic rename), so a cut or corrupt transfer never
leaves a half-written file under the final name.

>>> download_path("logs/today.txt", None)
'today.txt'
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from typing import Any

from ._errors import ChecksumError, RemoteError
from ._rframe import CHECKSUMS as _CHECKSUMS
from ._rframe import (
    MODE_BITS,
    PART_SUFFIX,
    TRANSFER_CHUNK,
    TREE_DEPTH,
    WRITEBACK_EVERY,
    _Hasher,
    _PartFile,
    check_link_target,
    sync_path,
)

__all__ = [
    "CHUNK",
    "CHECKSUMS",
    "PART_SUFFIX",
    "WRITEBACK_EVERY",
    "Progress",
    "check_checksum",
    "check_download_target",
    "transfer_result",
    "open_source",
    "local_source",
    "LocalFile",
    "SYMLINKS",
    "TreeItem",
    "scan_tree",
    "remote_tree",
    "TreePlan",
    "check_tree_names",
    "LocalTree",
    "sync_path",
]

#: The largest chunk a client sends (the server may ask for less): the Rust
#: core's ``TRANSFER_CHUNK``, the server's too.
CHUNK = TRANSFER_CHUNK
#: The checksums a transfer may name (the Rust core's). A transfer that names
#: none uses the fastest the server offers (``ClientSession.default_checksum``).
CHECKSUMS = _CHECKSUMS
# Re-exported from the Rust core, whose temporary files serve the server's
# uploads and LocalFile alike: PART_SUFFIX, the suffix (after a leading dot)
# that uploads and downloads in progress carry; WRITEBACK_EVERY, every how many
# bytes what was written is handed to the disk, so the fsync at the end waits
# for the last stretch only.

Progress = Callable[[int, int], Any] | None
_Path = str | os.PathLike[str]


def new_hash(checksum: str) -> Any:
    """A hasher of ``checksum`` with ``hashlib``'s ``update`` and
    ``hexdigest``: ``hashlib``'s own where it has the algorithm (sha256, md5),
    the Rust core's otherwise (blake3), so both ends of a transfer hash alike.

    >>> h = new_hash("blake3")
    >>> h.update(b"abc")
    >>> h.hexdigest()
    '6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85'
    """
    if checksum in hashlib.algorithms_guaranteed:
        return hashlib.new(checksum)
    return _Hasher(checksum)


def check_checksum(checksum: str) -> str:
    if checksum not in CHECKSUMS:
        raise ValueError(f"checksum must be {' or '.join(map(repr, CHECKSUMS))}, got {checksum!r}")
    return checksum


def transfer_result(name: str, size: int, checksum: str, digest: str) -> dict[str, Any]:
    """What an upload or download returns: the file's name and size, the
    ``checksum`` it was verified with and its hex ``digest``, the digest also
    under the algorithm's own name (``result["sha256"]``).

    >>> transfer_result("a.txt", 5, "blake3", "ab12")
    {'name': 'a.txt', 'size': 5, 'checksum': 'blake3', 'digest': 'ab12', 'blake3': 'ab12'}
    """
    return {"name": name, "size": size, "checksum": checksum, "digest": digest, checksum: digest}


def local_source(local_path: _Path, remote_name: str | None) -> tuple[str, str]:
    """``(path, name)`` of an upload: the remote name defaults to the file's own."""
    path = os.fspath(local_path)
    name = remote_name if remote_name is not None else os.path.basename(path)
    if not name:
        raise ValueError(f"cannot tell a remote name from {path!r}: pass remote_name")
    return path, name


def open_source(path: str) -> tuple[Any, int]:
    """Opens a file to upload: ``(binary file, size)``. Only a regular file
    has a size to announce: a directory raises ``IsADirectoryError``, a FIFO
    or device ``ValueError`` (without waiting for a FIFO's writer)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file: only regular files can be uploaded")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def download_path(remote_name: str, local_path: _Path | None) -> str:
    """Where a download goes: ``local_path``, inside it if it is a directory,
    or the remote file's own name in the current directory."""
    base = remote_name.rstrip("/").rpartition("/")[2]
    if local_path is None:
        if not base or base in (".", ".."):
            raise ValueError(f"cannot tell a local name from {remote_name!r}: pass local_path")
        return base
    path = os.fspath(local_path)
    if os.path.isdir(path):
        return os.path.join(path, base)
    return path


def hash_prefix(f: Any, length: int, checksum: str, stop: threading.Event | None = None) -> Any:
    """The ``checksum`` hasher of the first ``length`` bytes of the binary
    file ``f``, read from its start (``f`` is left after them). A file
    shorter than that raises ``OSError``: it changed. ``stop``, once set,
    ends the hashing at the next chunk with ``InterruptedError`` (the
    transfer that waited for it was cancelled)."""
    h = new_hash(checksum)
    f.seek(0)
    left = length
    buf = bytearray(min(length, 1 << 20) or 1)
    while left:
        if stop is not None and stop.is_set():
            raise InterruptedError("hashing stopped: the transfer was cancelled")
        view = memoryview(buf)[: min(len(buf), left)]
        n = f.readinto(view) or 0
        if not n:
            raise OSError(f"{getattr(f, 'name', 'the file')} is shorter than the {length} bytes being resumed")
        h.update(view[:n])
        left -= n
    return h


def mtime_ns(f: Any) -> int:
    """The open file's mtime in nanoseconds: with its size, the identity a
    resumed transfer checks (see PROTOCOL.md, "Resume")."""
    return os.fstat(f.fileno()).st_mtime_ns


class ChunkReader:
    """Reads a file to upload chunk by chunk, hashing as it goes; meant to run
    on a worker thread while the caller sends the previous chunk (``readinto``
    and ``hashlib`` both release the GIL). ``start``: a resumed upload's
    data starts there (``f`` is positioned at it), and ``hash`` has hashed
    the bytes before it already."""

    def __init__(self, f: Any, size: int, checksum: str, *, start: int = 0, hash: Any = None) -> None:
        self.f = f
        self.left = size - start
        self.hash = hash if hash is not None else new_hash(checksum)

    def read_into(self, buf: bytearray) -> int:
        """Fills ``buf`` (less at the end of the file); 0 if the file ended early."""
        view = memoryview(buf)[: min(len(buf), self.left)]
        n = self.f.readinto(view) or 0
        self.hash.update(view[:n])
        self.left -= n
        return n


def check_download_target(path: str, overwrite: bool) -> str:
    """Refuses a download to ``path`` that could not be saved (a directory,
    an existing file without ``overwrite``, a missing directory), before the
    server is asked anything; returns the directory it goes to."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "already exists, and overwrite was not asked for", path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "no such directory", directory)
    return directory


class LocalFile:
    """The receiving end of a download.

    Bytes go to a temporary file beside ``path`` (the Rust core's, the one the
    server's uploads use); :meth:`commit` checks the size and digest, fsyncs
    and renames it into place (refusing an existing ``path`` unless
    ``overwrite``, atomically); :meth:`discard` removes it.

    ``resume=True``: the temporary file is the part an earlier cut download
    to ``path`` kept, with the server's file's size and mtime recorded beside
    it (:meth:`resume_request` says what to ask the server for;
    :meth:`begin`, where the server starts); a cut leaves it for the next
    try, a digest that does not match removes it.
    """

    def __init__(self, path: str, *, overwrite: bool, checksum: str, resume: bool = False) -> None:
        self.path = path
        self.overwrite = overwrite
        self.checksum = checksum
        directory = check_download_target(path, overwrite)
        # Created and locked (as the server's uploads are: a server whose root
        # holds this directory then never sweeps it away), written with the
        # GIL released, handed to the disk every WRITEBACK_EVERY bytes.
        self._part = _PartFile(os.path.abspath(path), overwrite, resume)
        self.temp = os.path.join(directory, os.fsdecode(self._part.temp))
        self._hash = new_hash(checksum)
        self.size = 0
        self._resumable = resume
        self._prefix: Any = None

    def resume_request(self, stop: threading.Event | None = None) -> tuple[int, str, int, int] | None:
        """What a resumed ``get`` asks with: ``(kept bytes, their digest,
        the server's file's size, its mtime_ns)``; ``None`` if nothing
        usable was kept (no bytes, or no source recorded). ``stop``: as
        :func:`hash_prefix`'s."""
        recorded = self._part.recorded
        if not self._resumable or not self._part.kept or recorded is None:
            return None
        with open(self.temp, "rb") as f:
            self._prefix = hash_prefix(f, self._part.kept, self.checksum, stop)
        return (self._part.kept, self._prefix.hexdigest(), recorded[0], recorded[1])

    def begin(self, size: int, offset: int, mtime_ns: int | None) -> None:
        """The server sends ``size`` bytes from ``offset`` on: the kept
        bytes stand (``offset`` is what was kept), or the part starts over,
        recording the server's file (``mtime_ns``; a server that does not
        say cannot be resumed from, and its part is not kept)."""
        if not self._resumable:
            return
        if offset and self._prefix is not None and offset == self._part.kept:
            self._hash, self.size = self._prefix, offset
            return
        self._part.restart(size, mtime_ns if mtime_ns is not None else 0)
        self._resumable = mtime_ns is not None

    def write(self, data: bytes) -> None:
        self._part.write(data)
        self._hash.update(data)
        self.size += len(data)

    def commit(self, end: dict[str, Any], *, durable: bool = True) -> dict[str, Any]:
        """Verifies the digest the ``end`` header claims (the session checked
        the size), then gives the file its name (``durable=False``: without
        waiting for the disk, as a tree's files, synced together by
        :func:`sync_path` at the end)."""
        digest = self._hash.hexdigest()
        claimed = end.get("digest")
        if not isinstance(claimed, str) or claimed.lower() != digest:
            self._part.discard()  # a resumable part too: its bytes are wrong
            raise ChecksumError(
                f"{self.path}: {self.checksum} mismatch: the server sent {claimed}, we received {digest}",
                algorithm=self.checksum,
                expected=claimed if isinstance(claimed, str) else None,
                actual=digest,
            )
        try:
            self._part.commit(durable)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "already exists, and overwrite was not asked for", self.path) from None
        return transfer_result(self.path, self.size, self.checksum, digest)

    def discard(self) -> None:
        """Removes the temporary file, or keeps a resumable part for the
        next try; ``path`` is left as it was."""
        if self._resumable:
            self._part.release()
        else:
            self._part.discard()


# --------------------------------------------------------------------------- trees

#: What a tree transfer does with a symlink: refuse the whole transfer before
#: anything moves (the default), or copy it as a link (whose target must stay
#: inside the tree).
SYMLINKS = ("refuse", "copy")
#: In a tree, files up to this size go whole in one ``put`` frame each,
#: back to back, rather than one round trip each.
INLINE_MAX = 256 * 1024
#: At most this many requests of a tree wait for their replies at once.
TREE_WINDOW = 128


def next_page(
    name: str, header: dict[str, Any], page: list[dict[str, Any]], recursive: bool, after: str | None = None
) -> str | None:
    """Where the next page of a listing starts (``None``: this was the last).
    A plain listing has one page (``truncated`` says it was cut short); a
    tree's continues after its last name. A tree listing without
    ``"recursive": true`` comes from a server that predates trees."""
    if not recursive:
        return None
    if header.get("recursive") is not True:
        raise RemoteError(
            "bad-request", "the server lists no trees (it predates them): upgrade it to move directory trees"
        )
    if not header.get("truncated"):
        return None
    if not page:
        raise ValueError(f"the tree beneath {name!r} cannot be listed: one entry is over the server's max_body")
    last: str = page[-1]["name"]
    if after is not None and _tree_order(last) <= _tree_order(after):
        # A server that pages in circles would be listed for ever.
        raise RemoteError("bad-request", f"the server's listing of {name!r} went back (after {after!r}: {last!r})")
    return last


def _tree_order(name: str) -> list[str]:
    """A tree listing's order: depth first, each directory's names sorted."""
    return name.split("/")


class TreeItem:
    """One entry of a tree: ``name`` relative to the tree's top,
    ``/``-separated; ``kind`` ``"dir"``, ``"file"`` or ``"link"``."""

    __slots__ = ("name", "kind", "mode", "size", "path", "target", "digest")

    def __init__(self, name: str, kind: str, mode: int, *, size: int = 0, path: str = "", target: str = "") -> None:
        self.name = name
        self.kind = kind
        self.mode = mode & MODE_BITS
        self.size = size
        self.path = path
        self.target = target
        self.digest: str | None = None

    def __repr__(self) -> str:
        return f"TreeItem({self.name!r}, {self.kind!r}, {oct(self.mode)})"


def check_symlinks(symlinks: str) -> str:
    if symlinks not in SYMLINKS:
        raise ValueError(f"symlinks must be {' or '.join(map(repr, SYMLINKS))}, got {symlinks!r}")
    return symlinks


def _refuse_link(path: str, name: str, target: str, symlinks: str) -> None:
    if symlinks == "refuse":
        raise OSError(errno.ELOOP, "a symlink in the tree, refused (symlinks='copy' copies links as links)", path)
    try:
        check_link_target(name, target)
    except ValueError as exc:
        raise OSError(errno.ELOOP, f"a symlink that leads out of the tree, refused ({exc})", path) from None


def scan_tree(local_dir: _Path, symlinks: str) -> list[TreeItem]:
    """Everything beneath ``local_dir`` (not itself), parents before what
    they hold, symlinks not followed: refused (``OSError`` ELOOP) unless
    ``symlinks="copy"``, and then only those whose target stays inside.
    Anything else that is not a regular file or directory raises
    ``ValueError``. Nothing is sent before the whole tree is read."""
    top = os.fspath(local_dir)
    if not os.path.isdir(top):
        if os.path.lexists(top):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", top)
        raise FileNotFoundError(errno.ENOENT, "no such directory", top)
    items: list[TreeItem] = []

    def walk(path: str, prefix: str) -> None:
        if prefix.count("/") > TREE_DEPTH:
            # The server lists no deeper: a tree sent deeper could never come back whole.
            raise ValueError(f"{path} is deeper than {TREE_DEPTH} levels beneath {top}: too deep for a tree")
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(entry.path)
                _refuse_link(entry.path, name, target, symlinks)
                items.append(TreeItem(name, "link", st.st_mode, path=entry.path, target=target))
            elif stat.S_ISDIR(st.st_mode):
                items.append(TreeItem(name, "dir", st.st_mode, path=entry.path))
                walk(entry.path, name + "/")
            elif stat.S_ISREG(st.st_mode):
                items.append(TreeItem(name, "file", st.st_mode, size=st.st_size, path=entry.path))
            else:
                raise ValueError(f"{entry.path} is not a regular file, directory or symlink: a tree holds only those")

    walk(top, "")
    return items


def remote_tree(entries: list[dict[str, Any]], symlinks: str, remote_dir: str) -> list[TreeItem]:
    """The items of a recursive listing (parents first: the listing is
    sorted by name), checked as :func:`scan_tree` checks a local tree."""
    items = []
    kinds: dict[str, str] = {}
    for e in entries:
        name, kind = e["name"], e["type"]
        shown = f"{remote_dir.rstrip('/')}/{name}" if remote_dir.strip("/") else name
        # Every name once, each beneath a directory of the listing: a name
        # beneath a link (which a listing never follows) would be made
        # through it, wherever it leads.
        parent = name.rpartition("/")[0]
        if name in kinds or (parent and kinds.get(parent) != "dir"):
            raise RemoteError("bad-request", f"the server listed {shown!r} out of place: not a tree")
        kinds[name] = kind
        if kind == "link":
            _refuse_link(shown, name, e.get("target", ""), symlinks)
            items.append(TreeItem(name, "link", e.get("mode", 0o777), target=e.get("target", "")))
        elif kind in ("dir", "file"):
            item = TreeItem(name, kind, e.get("mode", 0o644), size=e.get("size", 0))
            item.digest = e.get("digest")
            items.append(item)
        else:
            raise ValueError(f"{shown} on the server is not a regular file, directory or symlink")
    return items


def check_tree_names(items: list[TreeItem]) -> None:
    """Refuses names a tree cannot hold on the other side: each component
    must be a plain name (never ``..``, never a transfer's temporary name)."""
    for item in items:
        for part in item.name.split("/"):
            if part in ("", ".", "..") or part.endswith(PART_SUFFIX):
                raise ValueError(f"cannot transfer {item.name!r}: {part!r} is not a name a tree may hold")


def hash_file(path: str, checksum: str) -> tuple[int, str]:
    """``(size, hex digest)`` of a local file (``hashlib`` releases the GIL)."""
    h = new_hash(checksum)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


_OWNER_RWX = 0o700


class TreePlan:
    """What a tree transfer does: the directories to make, the links to make,
    the files to send, and the files skipped because the other side has them
    with the same size, digest and mode (``--update``-like; a file that
    differs in any of them is replaced)."""

    def __init__(self, source: list[TreeItem], existing: list[TreeItem] | None, checksum: str) -> None:
        there = {item.name: item for item in existing or ()}
        self.dirs: list[TreeItem] = []
        #: Directories there already that their owner may not write to: opened
        #: (``mode | 0o700``) before anything goes in, given their mode at the end.
        self.unlock: list[TreeItem] = []
        self.links: list[TreeItem] = []
        self.files: list[TreeItem] = []
        self.skipped: list[TreeItem] = []
        self.checksum = checksum
        for item in source:
            other = there.get(item.name)
            if item.kind == "dir":
                if other is not None and other.kind == "dir" and other.mode & _OWNER_RWX != _OWNER_RWX:
                    self.unlock.append(TreeItem(item.name, "dir", other.mode | _OWNER_RWX))
                    self.dirs.append(item)
                elif other is None or other.kind != "dir" or other.mode != item.mode:
                    self.dirs.append(item)
            elif item.kind == "link":
                if other is None or other.kind != "link" or other.target != item.target:
                    self.links.append(item)
            elif (
                other is not None
                and other.kind == "file"
                and other.size == item.size
                and other.mode == item.mode
                and other.digest is not None
                and item.digest is not None
                and other.digest.lower() == item.digest.lower()
            ):
                self.skipped.append(item)
            else:
                self.files.append(item)

    def inline_and_streamed(self) -> tuple[list[TreeItem], list[TreeItem]]:
        """The files to send: those small enough to go whole in one frame, and the rest."""
        small = [f for f in self.files if f.size <= INLINE_MAX]
        return small, [f for f in self.files if f.size > INLINE_MAX]

    def result(self, local: str, remote: str) -> dict[str, Any]:
        return {
            "local": local,
            "remote": remote,
            "files": len(self.files),
            "bytes": sum(f.size for f in self.files),
            "skipped": len(self.skipped),
            "dirs": len(self.dirs),
            "links": len(self.links),
            "checksum": self.checksum,
        }


def remote_join(remote_dir: str, name: str) -> str:
    """``name`` of a tree beneath ``remote_dir`` on the server (``""``: the root)."""
    top = remote_dir.strip("/")
    return f"{top}/{name}" if top else name


def local_digests(items: list[TreeItem], existing: list[TreeItem] | None, checksum: str) -> None:
    """Hashes the local files whose counterpart has the same size: the only
    ones that may be skipped."""
    there = {item.name: item for item in existing or ()}
    for item in items:
        if item.kind != "file":
            continue
        other = there.get(item.name)
        if other is not None and other.kind == "file" and other.size == item.size:
            size, item.digest = hash_file(item.path, checksum)
            item.size = size


def read_small(item: TreeItem, checksum: str) -> tuple[bytes, str]:
    """The whole of a small file and its digest (hashed again: it may have
    changed since it was scanned; what is sent is what is hashed)."""
    with open(item.path, "rb") as f:
        data = f.read(INLINE_MAX + 1)
    if len(data) > INLINE_MAX:
        raise OSError(f"{item.path} grew past {INLINE_MAX} bytes while the tree was sent")
    h = new_hash(checksum)
    h.update(data)
    return data, h.hexdigest()


class LocalTree:
    """The local end of a tree download: compares what is there already
    (:class:`TreePlan`), makes the directories and links, says where each
    file goes, never through a symlink out of the tree's top."""

    def __init__(self, top: str, items: list[TreeItem], checksum: str) -> None:
        os.makedirs(top, exist_ok=True)
        self.top = top
        existing = []
        for item in items:
            path = self.path_of(item.name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if item.kind == "file" and stat.S_ISREG(st.st_mode) and st.st_size == item.size:
                self._inside(item.name)
                here = TreeItem(item.name, "file", st.st_mode, size=st.st_size, path=path)
                here.size, here.digest = hash_file(path, checksum)
                existing.append(here)
            elif item.kind == "dir" and stat.S_ISDIR(st.st_mode):
                existing.append(TreeItem(item.name, "dir", st.st_mode, path=path))
            elif item.kind == "link" and stat.S_ISLNK(st.st_mode):
                existing.append(TreeItem(item.name, "link", st.st_mode, path=path, target=os.readlink(path)))
        self.plan = TreePlan(items, existing, checksum)
        unlock = {d.name: d.mode for d in self.plan.unlock}
        for item in items:  # parents first: a directory is opened before what goes in it is made
            if item.kind == "dir":
                self._make_dirs(item.name.split("/"))  # no symlink on the way: checked before any chmod
                if item.name in unlock:
                    os.chmod(self.path_of(item.name), unlock[item.name])
        for item in self.plan.links:
            self._make_link(item)

    def path_of(self, name: str) -> str:
        return os.path.join(self.top, *name.split("/"))

    def _make_dirs(self, parts: list[str]) -> None:
        """Makes the directories ``parts`` beneath the top, one level at a
        time, refusing any that is a symlink (which could lead out of the
        tree; the top itself may be one)."""
        path = self.top
        for part in parts:
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise PermissionError(errno.EACCES, f"a symlink on the way, which may lead out of {self.top}", path)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)

    def _inside(self, name: str) -> None:
        """Refuses a name whose directories beneath the top are not all real
        directories (a symlink on the way may lead out)."""
        self._make_dirs(name.split("/")[:-1])

    def prepare(self, item: TreeItem) -> str:
        """Where file ``item`` goes, its directory made, checked to be inside."""
        self._inside(item.name)
        return self.path_of(item.name)

    def _make_link(self, item: TreeItem) -> None:
        path = self.prepare(item)
        if os.path.lexists(path) and not os.path.islink(path):
            raise FileExistsError(errno.EEXIST, "exists, and is not a symlink", path)
        temp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.link{PART_SUFFIX}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        os.symlink(item.target, temp)
        os.replace(temp, path)

    def receiver(self, item: TreeItem) -> LocalFile:
        """The file that receives ``item``, in its place (checked to be inside)."""
        return LocalFile(self.prepare(item), overwrite=True, checksum=self.plan.checksum)

    @staticmethod
    def save(target: LocalFile, end: dict[str, Any], item: TreeItem) -> None:
        """Stores a received file under its name, with its mode; durable at the end, with the rest."""
        target.commit(end, durable=False)
        os.chmod(target.path, item.mode)

    def finish(self) -> None:
        """Directory modes last, deepest first (as the upload does)."""
        for item in reversed(self.plan.dirs):
            os.chmod(self.path_of(item.name), item.mode)
