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

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from typing import Any

from ._errors import ChecksumError
from ._rframe import CHECKSUMS as _CHECKSUMS
from ._rframe import PART_SUFFIX, TRANSFER_CHUNK, WRITEBACK_EVERY, _PartFile

__all__ = [
    "CHUNK",
    "CHECKSUMS",
    "PART_SUFFIX",
    "WRITEBACK_EVERY",
    "Progress",
    "check_checksum",
    "open_source",
    "local_source",
    "LocalFile",
]

#: The largest chunk a client sends (the server may ask for less): the Rust
#: core's ``TRANSFER_CHUNK``, the server's too.
CHUNK = TRANSFER_CHUNK
#: The checksums a transfer may name (the Rust core's), the default first.
CHECKSUMS = _CHECKSUMS
# Re-exported from the Rust core, whose temporary files serve the server's
# uploads and LocalFile alike: PART_SUFFIX, the suffix (after a leading dot)
# that uploads and downloads in progress carry; WRITEBACK_EVERY, every how many
# bytes what was written is handed to the disk, so the fsync at the end waits
# for the last stretch only.

Progress = Callable[[int, int], Any] | None
_Path = str | os.PathLike[str]


def check_checksum(checksum: str) -> str:
    if checksum not in CHECKSUMS:
        raise ValueError(f"checksum must be {' or '.join(map(repr, CHECKSUMS))}, got {checksum!r}")
    return checksum


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


class ChunkReader:
    """Reads a file to upload chunk by chunk, hashing as it goes; meant to run
    on a worker thread while the caller sends the previous chunk (``readinto``
    and ``hashlib`` both release the GIL)."""

    def __init__(self, f: Any, size: int, checksum: str) -> None:
        self.f = f
        self.left = size
        self.hash = hashlib.new(checksum)

    def read_into(self, buf: bytearray) -> int:
        """Fills ``buf`` (less at the end of the file); 0 if the file ended early."""
        view = memoryview(buf)[: min(len(buf), self.left)]
        n = self.f.readinto(view) or 0
        self.hash.update(view[:n])
        self.left -= n
        return n


class LocalFile:
    """The receiving end of a download.

    Bytes go to a temporary file beside ``path`` (the Rust core's, the one the
    server's uploads use); :meth:`commit` checks the size and digest, fsyncs
    and renames it into place (refusing an existing ``path`` unless
    ``overwrite``, atomically); :meth:`discard` removes it.
    """

    def __init__(self, path: str, *, overwrite: bool, checksum: str) -> None:
        self.path = path
        self.overwrite = overwrite
        self.checksum = checksum
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        if not overwrite and os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "already exists, and overwrite was not asked for", path)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(errno.ENOENT, "no such directory", directory)
        # Created and locked (as the server's uploads are: a server whose root
        # holds this directory then never sweeps it away), written with the
        # GIL released, handed to the disk every WRITEBACK_EVERY bytes.
        self._part = _PartFile(os.path.abspath(path), overwrite)
        self.temp = os.path.join(directory, os.fsdecode(self._part.temp))
        self._hash = hashlib.new(checksum)
        self.size = 0

    def write(self, data: bytes) -> None:
        self._part.write(data)
        self._hash.update(data)
        self.size += len(data)

    def commit(self, end: dict[str, Any]) -> dict[str, Any]:
        """Verifies the digest the ``end`` header claims (the session checked
        the size), then gives the file its name."""
        digest = self._hash.hexdigest()
        claimed = end.get("digest")
        if not isinstance(claimed, str) or claimed.lower() != digest:
            raise ChecksumError(
                f"{self.path}: {self.checksum} mismatch: the server sent {claimed}, we received {digest}",
                algorithm=self.checksum,
                expected=claimed if isinstance(claimed, str) else None,
                actual=digest,
            )
        try:
            self._part.commit()
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "already exists, and overwrite was not asked for", self.path) from None
        return {"name": self.path, "size": self.size, self.checksum: digest}

    def discard(self) -> None:
        """Removes the temporary file; ``path`` is left as it was."""
        self._part.discard()
