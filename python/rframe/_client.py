"""The blocking client of rframe's command server (see PROTOCOL.md).

>>> from rframe import Client, Server
>>> with Server(port=0) as server, Client(*server.address) as client:
...     result = client.run("echo hi; echo oops >&2; exit 3")
>>> result.returncode, result.stdout, result.stderr
(3, b'hi\\n', b'oops\\n')
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import _files, _tls
from ._files import Progress
from ._protocol import CLOSING_CODES as _CLOSING_CODES  # noqa: F401 - its old home
from ._protocol import (
    FAILURES,
    REPLY_GRACE,  # noqa: F401 - its old home
    CommandResult,
    check_client_timeout,
    command_result,
    event_failure,
    run_request,
    token_bytes,
    unix_socket,
    where,
)
from ._rframe import DEFAULT_PORT, ClientSession, Codec, Frame

if TYPE_CHECKING:
    from ._process import RemoteProcess

__all__ = ["Client", "CommandResult"]

_Body = bytes | bytearray | memoryview | str


# --------------------------------------------------------------------------- the client


class Client:
    """A connection to an rframe server; many requests, one at a time.

    Connects in the constructor: to ``(host, port)`` over TCP, or to the Unix
    socket ``unix_path``. ``timeout`` (seconds, ``None`` = wait forever) bounds
    connecting and each request's send and reply; :meth:`run` waits longer
    when the command itself has a longer ``timeout``. With ``token`` (``str``
    or ``bytes``) the client proves it holds the server's token, and checks the
    server's proof in turn, before the constructor returns (so a server without
    a token is refused: it cannot prove it). ``codec`` must match the server's
    (default: the course's format, a JSON header).

    Connection failures are the builtin exceptions (``ConnectionRefusedError``,
    ``ConnectionResetError``, ``TimeoutError``, ...); an error frame from the
    server raises :class:`rframe.RemoteError`, a failed handshake
    :class:`rframe.AuthenticationError`. If a request is interrupted halfway
    (Ctrl-C, a timeout, a broken connection) the client closes the connection,
    whose stream has lost its place; later calls raise
    ``ConnectionAbortedError``.

    Run commands:

    >>> from rframe import Server
    >>> server = Server(port=0); server.start()
    >>> with Client(*server.address) as client:
    ...     client.run(["echo", "hello"]).stdout
    ...     client.run("cat", input="fed to stdin", text=True).stdout
    ...     client.run("echo $GREETING", env={"GREETING": "hi"}, text=True).stdout
    b'hello\\n'
    'fed to stdin'
    'hi\\n'

    Talk to a server with a ``handler`` (your own protocol):

    >>> echo = Server(port=0, handler=lambda frame: frame.body.upper())
    >>> echo.start()
    >>> with Client(*echo.address) as client:
    ...     client.request(b"hello").body
    b'HELLO'
    >>> echo.stop(); server.stop()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        unix_path: str | os.PathLike[str] | None = None,
        token: str | bytes | None = None,
        codec: Codec | None = None,
        timeout: float | None = None,
        tls: _tls.TLSArg = None,
        fingerprint: str | None = None,
    ) -> None:
        check_client_timeout(timeout)
        self.codec = codec if codec is not None else Codec()
        self.timeout = timeout
        self._lock = threading.RLock()
        self._in_call = 0
        self._close_requested = False
        self._closed_reason: str | None = None
        self._sock: socket.socket | None = None
        self._session: ClientSession | None = None
        #: The server certificate's SHA-256 (lowercase hex) on TLS, else ``None``.
        self.tls_fingerprint: str | None = None
        token_data = token_bytes(token, self.codec)
        choice = _tls.ClientTLS(
            tls, host=None if unix_path is not None else host, fingerprint=fingerprint, token=token_data
        )
        if unix_path is not None:
            self.address: Any = os.fspath(unix_path)
            sock = unix_socket()
            try:
                sock.settimeout(timeout)
                sock.connect(self.address)
            except BaseException:
                sock.close()
                raise
        else:
            self.address = (host, port)
            sock = socket.create_connection((host, port), timeout=timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not every platform allows it
                pass
        sock.settimeout(timeout)
        binding = None
        try:
            if choice.context is not None:
                # The handshake runs here, within the timeout; the pin is
                # checked before a single frame goes out.
                sock = choice.context.wrap_socket(sock, server_hostname=choice.host)
                cert = choice.check_peer(sock, where(self.address))
                self.tls_fingerprint, binding = cert.fingerprint, cert.binding
            else:
                choice.check_plaintext(sock)
        except BaseException:
            sock.close()
            raise
        # Every rule of the protocol is the session's; this client moves its
        # bytes, keeps the time, and does the disk work and hashing.
        self._session = ClientSession(self.codec, token=token_data, binding=binding)
        self._sock = sock
        if token_data is not None:
            try:
                self._authenticate()
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by :meth:`close` or after a failure)."""
        return self._sock is None or self._close_requested

    def close(self) -> None:
        """Close the connection. Calling it again does nothing.

        Safe to call from another thread while a call waits on the server:
        that call wakes up and raises ``ConnectionAbortedError``.
        """
        sock = self._sock
        if sock is None or self._close_requested:
            return
        self._close_requested = True
        self._closed_reason = "the client was closed"
        if self._finish_close():
            return
        # A call is under way: wake it; it closes the socket on its way out
        # (closing it here could hand its descriptor number to another socket).
        # The socket's own shutdown, not SSLSocket's: that one drops its TLS
        # state first, and a send racing it would go out unencrypted.
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()

    def fileno(self) -> int:
        """The socket's file descriptor (for ``select``); -1 once closed."""
        return self._sock.fileno() if self._sock is not None else -1

    def __repr__(self) -> str:
        state = f"closed: {self._closed_reason}" if self.closed else "open"
        return f"<rframe.Client {self.address!r} {state}>"

    def _abort(self, reason: str) -> None:
        """Closes the connection (it is unusable: closed, failed or out of sync)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            if not self._close_requested:
                self._closed_reason = reason
            sock.close()
            self._require_session().abort(self._closed_reason or reason)

    def _require_sock(self) -> socket.socket:
        if self._sock is None or self._close_requested:
            raise ConnectionAbortedError(f"the connection is closed ({self._closed_reason}); open a new Client")
        return self._sock

    def _require_session(self) -> ClientSession:
        assert self._session is not None, "a client with a socket has its session"
        return self._session

    def _finish_close(self) -> bool:
        """Closes the socket if close() was asked for and no call is under
        way; True if it is closed. close() and every call's end both try: the
        call holds the lock until just before its own try, so a close() that
        found it taken is finished by that call."""
        if not (self._close_requested and self._lock.acquire(blocking=False)):
            return False
        try:
            if self._in_call:
                return False
            self._abort("the client was closed")
            return True
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """Holds the lock for one call; finishes a close() that came meanwhile."""
        try:
            with self._lock:
                self._in_call += 1
                try:
                    yield
                except BaseException as exc:
                    if self._close_requested and not isinstance(exc, ConnectionAbortedError):
                        self._abort("the client was closed")
                        raise ConnectionAbortedError(f"the connection was closed ({self._closed_reason})") from exc
                    raise
                finally:
                    self._in_call -= 1
        finally:
            self._finish_close()

    # ------------------------------------------------------------------ frames

    def _write(self, data: bytes | None, chunk: _Body | None = None) -> None:
        """Sends ``data`` (bytes the session made), or an upload's ``chunk``
        as its next ``data`` frame, from its own buffer."""
        sock = self._require_sock()
        try:
            if data is None:
                self._require_session().send_data(sock, chunk if chunk is not None else b"")
            else:
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The server may have said why before it closed (busy, auth): that
            # answer is more useful than the broken pipe.
            pending = self._salvage(sock)
            self._abort(f"sending a frame failed: {type(exc).__name__}")
            if pending is not None:
                raise pending from exc
            raise
        except BaseException as exc:
            self._abort(f"sending a frame failed: {type(exc).__name__}")
            raise

    def _salvage(self, sock: socket.socket) -> Exception | None:
        """The failure the server already sent on a connection whose send side broke, if any."""
        if not self.codec.json_header:
            return None
        try:
            sock.settimeout(0.5)
            event = self._require_session().read_event(sock)
        except Exception:  # noqa: BLE001 - nothing to salvage
            return None
        return event_failure(event) if event[0] in FAILURES else None

    def _event(self, wait: float | None = None, untimed: bool = False, direct: Any = None) -> Any:
        """The session's next event, read from the socket; ``wait`` extends
        the socket timeout for this read, ``untimed`` lifts it. ``direct``:
        ``(into, (id, fd))``, see ``ClientSession.read_event``."""
        sock = self._require_sock()
        restore = None
        into, want = direct if direct is not None else (None, None)
        if wait is not None and self.timeout is not None and wait > self.timeout:
            restore = self.timeout
            sock.settimeout(wait)
        try:
            event = self._require_session().read_event(sock, untimed=untimed, into=into, want=want)
        except EOFError as exc:  # a clean close, or rframe.IncompleteFrame
            if self._close_requested:  # close() from another thread; _call says so
                raise
            self._abort("the server closed the connection")
            raise ConnectionResetError(f"the server closed the connection ({exc})") from exc
        except BaseException as exc:
            self._abort(f"reading a frame failed: {type(exc).__name__}")
            raise
        if restore is not None:
            sock.settimeout(restore)
        return event

    def _failure(self, event: Any) -> Exception:
        """The exception of a failure event; closes this end too if the session closed."""
        reason = self._require_session().closed
        if reason is not None:
            self._abort(reason)
        return event_failure(event)

    def _expect(self, kind: str, wait: float | None = None) -> Any:
        """The next event, which must be ``kind``; a failure raises."""
        event = self._event(wait)
        if event[0] != kind:
            raise self._failure(event)
        return event

    def _exchange(self, made: tuple[int, bytes], wait: float | None = None) -> Frame:
        """Sends a request the session ``made``; its reply."""
        self._write(made[1])
        reply: Frame = self._expect("reply", wait)[2]
        return reply

    def send(self, body: _Body = b"", header: Mapping[str, Any] | None = None, **fields: Any) -> None:
        """Send one frame (arguments as for :func:`rframe.send_frame`) without waiting for a reply.

        Pair each :meth:`send` with a :meth:`recv`, or use :meth:`request`.
        """
        with self._call():
            self._require_sock()
            self._write(self._require_session().send(body, header, **fields))

    def recv(self) -> Frame:
        """Wait for the next frame from the server and return it.

        An error frame raises :class:`rframe.RemoteError`; a server that closed
        the connection, ``ConnectionResetError``.
        """
        with self._call():
            self._require_sock()
            self._require_session().expect_reply()
            reply: Frame = self._expect("reply")[2]
            return reply

    def request(self, body: _Body = b"", header: Mapping[str, Any] | None = None, **fields: Any) -> Frame:
        """Send one frame and return the one the server answers with.

        ``body``, ``header`` and ``fields`` are as for :func:`rframe.send_frame`.

        >>> from rframe import Server
        >>> def handler(frame):
        ...     return {"greeting": "hello " + frame.header["name"]}, b""
        >>> with Server(port=0, handler=handler) as server, Client(*server.address) as client:
        ...     client.request(name="world").header["greeting"]
        'hello world'
        """
        with self._call():
            self._require_sock()
            return self._exchange(self._require_session().request(body, header, **fields))

    # ------------------------------------------------------------------ authentication

    def _authenticate(self) -> None:
        with self._call():
            self._require_sock()
            self._write(self._require_session().login()[1])
            while (event := self._event())[0] == "send":  # the answer to the challenge
                self._write(event[1])
            if event[0] != "logged-in":
                raise self._failure(event)

    # ------------------------------------------------------------------ commands

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = False,
        input: _Body | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        text: bool = False,
    ) -> CommandResult:
        """Run a command on the server and return a :class:`CommandResult`.

        A string runs under ``/bin/sh -c`` (or is split with shell rules on a
        server without a shell); a list runs as argv, without a shell.
        ``input`` (``bytes`` or ``str``) is fed to the command's stdin, which is
        otherwise ``/dev/null``. ``env`` adds variables to the server's
        environment; ``cwd`` sets the working directory. Neither is ever spliced
        into the command line.

        ``timeout`` (seconds) limits the command; the server also applies its
        own limit, and the smaller one wins. At the limit the server kills the
        command's whole process group and this raises
        :class:`rframe.CommandTimeout` with the output so far; the connection
        stays usable. ``check=True`` raises :class:`rframe.CommandError` on a
        non-zero exit status. ``text=True`` decodes stdout and stderr once, at
        the end, with the encoding the server names and ``errors="replace"``.

        >>> from rframe import Server
        >>> server = Server(port=0); server.start()
        >>> client = Client(*server.address)
        >>> client.run("printf 'a\\\\nb'", text=True).stdout.splitlines()
        ['a', 'b']
        >>> client.run("sleep 5", timeout=0.2)
        Traceback (most recent call last):
          ...
        rframe._errors.CommandTimeout: Command 'sleep 5' timed out after 0.2 seconds
        >>> client.run("echo still usable").stdout
        b'still usable\\n'
        >>> client.close(); server.stop()
        """
        header, body, wait = run_request(cmd, timeout=timeout, input=input, env=env, cwd=cwd)
        with self._call():
            self._require_sock()
            reply = self._exchange(self._require_session().run(header, body), wait)
        return command_result(cmd, reply, timeout=timeout, check=check, text=text)

    def start(
        self,
        cmd: str | Sequence[str],
        *,
        pty: bool = False,
        term: str | None = None,
        size: tuple[int, int] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
    ) -> RemoteProcess:
        """Start a command on the server; a :class:`rframe.RemoteProcess` to talk to it while it runs.

        Its output arrives as the command writes it, its stdin takes what you
        write, and signals reach its process group: see
        :class:`rframe.RemoteProcess`, shaped like :class:`subprocess.Popen`.
        ``cmd``, ``env``, ``cwd`` and ``timeout`` are :meth:`run`'s (the server
        kills the command at the time limit).

        ``pty=True`` runs it on a pseudo-terminal (Unix servers), as ``ssh -t``:
        ``TERM`` is ``term``, else this process's ``$TERM``, else
        ``xterm-256color``; the window size is ``size=(columns, lines)``, else
        this terminal's, else 80x24, and :meth:`RemoteProcess.resize` changes
        it. On a terminal stdout and stderr arrive merged on ``proc.stdout``
        (with ``\\r\\n`` line ends), input is echoed, ``b"\\x03"`` written to
        stdin is Ctrl-C and ``stdin.close()`` types Ctrl-D. A server started
        with ``--no-pty``, or with ``--allow`` but not ``--allow-pty``, refuses
        a terminal (:class:`rframe.RemoteError`, code ``"not-allowed"``); a
        bad ``size`` is a ``ValueError``.

        >>> from rframe import Client, Server
        >>> with Server(port=0) as server, Client(*server.address) as client:
        ...     out, err = client.start("stty size; tty", pty=True, size=(100, 30)).communicate()
        ...     out.split(b"\\r\\n")[0], out.split(b"\\r\\n")[1].startswith(b"/dev/pts/"), err
        (b'30 100', True, b'')

        The connection is dedicated to the command until it exits: other
        calls on this client raise ``RuntimeError`` meanwhile; use another
        client for them. A failure to start raises as :meth:`run` does
        (:class:`rframe.RemoteError`).
        """
        from ._process import RemoteProcess, start_request

        header = start_request(cmd, pty=pty, term=term, size=size, env=env, cwd=cwd, timeout=timeout)
        with self._call():
            self._require_sock()
            id, data = self._require_session().start(header)
            self._write(data)
            self._expect("started")
        return RemoteProcess(self, cmd, id)

    # ------------------------------------------------------------------ files

    def upload(
        self,
        local_path: str | os.PathLike[str],
        remote_name: str | None = None,
        *,
        overwrite: bool = False,
        checksum: str | None = None,
        progress: Progress = None,
        resume: bool = False,
    ) -> dict[str, Any]:
        """Send a file to a server started with ``root``; return what was stored.

        The file moves in chunks (memory stays flat, whatever its size) with
        its ``checksum`` digest, which the server verifies before the file
        takes ``remote_name`` (default: the local file's name), relative to
        the server's root. ``checksum`` is ``"blake3"``, ``"sha256"`` or
        ``"md5"``; by default the fastest the server offers: ``"blake3"``,
        or ``"sha256"`` from a server that cannot say (the first transfer on a
        connection asks the server, one round trip). Until then the server
        writes to a temporary name, so a cut or corrupt upload leaves any old
        file of that name as it was. ``overwrite=False`` refuses an existing
        name with :class:`FileExistsError` (a :class:`rframe.RemoteError` too).
        ``progress(done, total)`` is called with byte counts as chunks go out.
        Returns ``{"name": ..., "size": ..., "checksum": "blake3", "digest":
        ..., "blake3": ...}``: the digest verified, also under its algorithm's
        name.

        If the upload is interrupted (an exception from ``progress``, Ctrl-C,
        a timeout) the connection is closed: the stream is mid-transfer, and
        the server keeps nothing unless the whole file and its digest were
        already out.

        ``resume=True``: a cut upload's bytes are kept by the server (under
        a temporary name, swept after the server's usual age), and the next
        ``resume=True`` upload of the same name continues from them: the
        server proves its kept prefix with a digest, which is checked against
        this file's first bytes; if they match only the rest is sent
        (``progress`` starts at the kept size), if not all of it. The whole
        file's digest is verified as always. A file whose size or mtime is not
        that of the one whose bytes were kept is refused with
        :class:`rframe.SourceChangedError` (upload with ``resume=False`` to
        start over). A server older than resume sends everything.

        >>> import tempfile, pathlib
        >>> from rframe import Server
        >>> root, here = tempfile.mkdtemp(), pathlib.Path(tempfile.mkdtemp())
        >>> (here / "notes.txt").write_text("hello")
        5
        >>> with Server(port=0, root=root) as server, Client(*server.address) as client:
        ...     client.upload(here / "notes.txt")["size"]
        ...     client.list_files()[0]["name"]
        ...     client.download("notes.txt", here / "copy.txt")["size"]
        5
        'notes.txt'
        5
        >>> (here / "copy.txt").read_text()
        'hello'
        """
        path, name = _files.local_source(local_path, remote_name)
        f, size = _files.open_source(path)
        with f:
            checksum = self._pick_checksum(checksum)
            with self._call():
                self._require_sock()
                stored, digest = self._put_stream(
                    f, path, name, size, overwrite=overwrite, checksum=checksum, progress=progress, resume=resume
                )
        return _files.transfer_result(stored, size, checksum, digest)

    def _pick_checksum(self, checksum: str | None) -> str:
        """``checksum``, checked; for ``None``, the fastest the server offers,
        asked once per connection (the session remembers the answer)."""
        if checksum is not None:
            return _files.check_checksum(checksum)
        with self._call():
            session = self._require_session()
            picked = session.default_checksum
            if picked is None:
                self._require_sock()
                self._write(session.features()[1])
                self._expect("features")
                picked = session.default_checksum
        assert picked is not None  # the features event sets it
        return picked

    def _put_stream(
        self,
        f: Any,
        path: str,
        name: str,
        size: int,
        *,
        overwrite: bool,
        checksum: str,
        progress: Progress = None,
        mode: int | None = None,
        sync: bool = True,
        resume: bool = False,
    ) -> tuple[str, str]:
        """One file's upload (the caller holds the call): the name the server
        stored it under and its digest."""
        session = self._require_session()
        mtime = _files.mtime_ns(f) if resume else None
        made = session.put(
            name, size, overwrite=overwrite, checksum=checksum, mode=mode, sync=sync, resume_mtime_ns=mtime
        )
        self._write(made[1])
        _, _, chunk, offered, _ = self._expect("upload-ready")
        buffers = (bytearray(chunk), bytearray(chunk))
        done = 0
        try:
            prefix = None
            if offered:
                # The server kept a prefix: is it this file's?
                prefix = _files.hash_prefix(f, offered, checksum)
                done = session.put_resume(prefix.hexdigest())
                if not done:
                    prefix = None
                    f.seek(0)
            reader = _files.ChunkReader(f, size, checksum, start=done, hash=prefix)
            if progress is not None:
                progress(done, size)
            # Disk and hash on a worker thread, a chunk ahead of the socket.
            with ThreadPoolExecutor(1, thread_name_prefix="rframe-upload") as worker:
                pending = worker.submit(reader.read_into, buffers[0]) if done < size else None
                turn = 0
                while pending is not None:
                    n = pending.result()
                    if not n:
                        raise OSError(f"{path} shrank from {size} to {done} bytes while it was sent")
                    done += n
                    pending = worker.submit(reader.read_into, buffers[1 - turn]) if done < size else None
                    self._write(None, memoryview(buffers[turn])[:n])
                    turn = 1 - turn
                    if progress is not None:
                        progress(done, size)
            digest: str = reader.hash.hexdigest()
            self._write(session.put_end(digest))
        except BaseException:
            # Mid-transfer: the server must not take what was sent as whole.
            self._abort("an upload was interrupted")
            raise
        stored: str = self._expect("transfer-end")[2]
        return stored, digest

    def download(
        self,
        remote_name: str,
        local_path: str | os.PathLike[str] | None = None,
        *,
        overwrite: bool = False,
        checksum: str | None = None,
        progress: Progress = None,
        resume: bool = False,
    ) -> dict[str, Any]:
        """Fetch a file from a server started with ``root``; return what was saved.

        ``local_path`` defaults to the remote file's name in the current
        directory; an existing directory receives the file under that name.
        Chunks go to a temporary file beside it, which takes the final name
        (atomically) only after the size and ``checksum`` digest are
        verified: :class:`rframe.ChecksumError` otherwise, and nothing is left
        behind. ``overwrite=False`` refuses an existing local file with
        :class:`FileExistsError` before the server is asked for the file. A
        missing remote file raises :class:`FileNotFoundError` (a
        :class:`rframe.RemoteError` too). Returns ``{"name": local path,
        "size": ..., "checksum": ..., "digest": ..., ...}`` as :meth:`upload`
        does. See :meth:`upload` for an example.

        ``resume=True``: a cut download keeps what arrived (a temporary file
        beside ``local_path``, with the server's file's size and mtime
        recorded beside it), and the next ``resume=True`` download to the
        same path continues from it, if the server's first bytes have the
        kept part's digest (else it starts over); the whole file's digest is
        verified as always. If the server's file's size or mtime changed
        meanwhile, :class:`rframe.SourceChangedError` (download with
        ``resume=False`` to start over).
        """
        path = _files.download_path(remote_name, local_path)
        _files.check_download_target(path, overwrite)
        checksum = self._pick_checksum(checksum)
        target = _files.LocalFile(path, overwrite=overwrite, checksum=checksum, resume=resume)
        try:
            # The kept bytes are hashed before the connection is taken: the
            # server's idle timeout does not run meanwhile.
            asked = target.resume_request()
            with self._call():
                self._require_sock()
                self._write(self._require_session().get(remote_name, checksum=checksum, resume=asked)[1])
                _, _, size, offset, mtime = self._expect("download-started")
                received = offset
                try:
                    target.begin(size, offset, mtime)
                    if progress is not None:
                        progress(received, size)
                    # Each chunk is written and hashed here, as it arrives
                    # (both release the GIL): the server goes on sending into
                    # the socket buffers meanwhile, so the two processes
                    # overlap anyway. A worker thread cost two thread
                    # hand-offs per chunk, which on two busy cores left the
                    # worker waiting for work about a quarter of the time.
                    while (event := self._event())[0] == "file-chunk":
                        data = event[2]
                        received += len(data)
                        target.write(data)
                        if progress is not None:
                            progress(received, size)
                except BaseException:
                    # progress() or the disk raising leaves data coming.
                    self._abort("a download was interrupted")
                    raise
                if event[0] != "transfer-end":
                    # An error frame in place of the end leaves the stream in
                    # step; the session says when it does not.
                    raise self._failure(event)
                return target.commit(event[6])
        finally:
            target.discard()

    def list_files(self, name: str = "", *, recursive: bool = False) -> list[dict[str, Any]]:
        """The entries of a directory beneath the server's root (default: the root).

        Each entry is ``{"name", "type", "size", "mtime", "mode"}``, sorted by
        name; ``type`` is ``"file"``, ``"dir"``, ``"link"`` (a symlink, not
        followed; its entry has the link's ``"target"``) or ``"other"``;
        ``mode`` has the permission bits. ``recursive=True`` lists the whole
        tree beneath ``name``, with names relative to it (``"sub/file.txt"``).
        At most 10,000 entries (or 4 MiB of them): a longer listing is cut
        short. See :meth:`upload` for an example.
        """
        return self._listing(name, recursive=recursive)

    def _listing(self, name: str, *, recursive: bool, checksum: str | None = None) -> list[dict[str, Any]]:
        """A listing; a tree's page after page, until the last."""
        entries: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            with self._call():
                self._require_sock()
                session = self._require_session()
                if recursive:
                    made = session.list(name, recursive=True, checksum=checksum, after=after)
                else:
                    made = session.list(name)
                listing = self._exchange(made)
            page: list[dict[str, Any]] = json.loads(listing.body)
            entries += page
            after = _files.next_page(name, listing.header, page, recursive, after)
            if after is None:
                return entries

    def _remote_items(self, remote_dir: str, symlinks: str, checksum: str) -> list[_files.TreeItem] | None:
        """The tree on the server, with digests; ``None`` if there is none yet."""
        try:
            entries = self._listing(remote_dir, recursive=True, checksum=checksum)
        except FileNotFoundError:
            return None
        return _files.remote_tree(entries, symlinks, remote_dir)

    def upload_tree(
        self,
        local_dir: str | os.PathLike[str],
        remote_dir: str = "",
        *,
        checksum: str | None = None,
        symlinks: str = "refuse",
    ) -> dict[str, Any]:
        """Send a directory tree beneath ``remote_dir`` on a server started with ``root``.

        Directories are made as needed (empty ones too), files and
        directories keep their permission bits, and a file the server has
        already with the same size, ``checksum`` digest and mode is skipped
        (anything else of that name is replaced, each file atomically as
        :meth:`upload` stores one). A symlink in the tree refuses the whole
        transfer before anything is sent (``OSError`` ELOOP), unless
        ``symlinks="copy"``: then it is made as a link on the server, if its
        target stays inside the tree. Small files go back to back on the
        connection, not one round trip each, and are made durable together at
        the end (one sync of the server's file system): once this returns,
        every file is on the server's disk; a crash of the server before
        that may leave some of them short or empty under their names, which
        calling this again repairs. Returns ``{"files", "bytes", "skipped",
        "dirs", "links", "checksum", "local", "remote"}``: what was sent.

        >>> import tempfile, pathlib
        >>> from rframe import Server
        >>> root, here = tempfile.mkdtemp(), pathlib.Path(tempfile.mkdtemp())
        >>> (here / "src" / "pkg").mkdir(parents=True)
        >>> _ = (here / "src" / "pkg" / "mod.py").write_text("x = 1")
        >>> with Server(port=0, root=root) as server, Client(*server.address) as client:
        ...     client.upload_tree(here / "src", "app")["files"]
        ...     client.upload_tree(here / "src", "app")["skipped"]
        ...     [e["name"] for e in client.list_files("app", recursive=True)]
        ...     client.download_tree("app", here / "copy")["files"]
        1
        1
        ['pkg', 'pkg/mod.py']
        1
        """
        _files.check_symlinks(symlinks)
        local = os.fspath(local_dir)
        items = _files.scan_tree(local, symlinks)
        checksum = self._pick_checksum(checksum)
        existing = self._remote_items(remote_dir, symlinks="copy", checksum=checksum)
        _files.local_digests(items, existing, checksum)
        plan = _files.TreePlan(items, existing, checksum)
        join = _files.remote_join
        with self._call():
            self._require_sock()
            session = self._require_session()
            small, large = plan.inline_and_streamed()

            def requests() -> Iterator[tuple[int, bytes]]:
                if remote_dir.strip("/") and existing is None:
                    yield session.mkdir(remote_dir.strip("/"))
                for d in plan.unlock:  # writable while the tree goes in; their modes at the end
                    yield session.mkdir(join(remote_dir, d.name), mode=d.mode)
                for item in small:
                    data, digest = _files.read_small(item, checksum)
                    yield session.put_inline(
                        join(remote_dir, item.name),
                        data,
                        digest,
                        overwrite=True,
                        checksum=checksum,
                        mode=item.mode,
                        sync=False,
                    )
                for item in plan.links:
                    yield session.symlink(join(remote_dir, item.name), item.target, overwrite=True)

            try:
                self._upload_tree_steps(requests(), large, plan, remote_dir, checksum)
            except Exception:
                # What was stored before the failure is made durable all the
                # same (a refused file leaves the connection in step).
                with contextlib.suppress(Exception):
                    self._exchange(self._require_session().sync())
                raise
            self._exchange(session.sync())
        return plan.result(local, remote_dir)

    def _upload_tree_steps(
        self,
        requests: Iterator[tuple[int, bytes]],
        large: list[_files.TreeItem],
        plan: _files.TreePlan,
        remote_dir: str,
        checksum: str,
    ) -> None:
        """The small files and links back to back, then the large files one
        by one, then the directories' modes (the caller holds the call)."""
        session = self._require_session()
        join = _files.remote_join
        self._pipelined(requests)
        for item in large:
            f, size = _files.open_source(item.path)
            with f:
                self._put_stream(
                    f,
                    item.path,
                    join(remote_dir, item.name),
                    size,
                    overwrite=True,
                    checksum=checksum,
                    mode=item.mode,
                    sync=False,
                )
        # Modes last, deepest first: a directory without write permission
        # is made so only once what goes in it is there.
        self._pipelined(session.mkdir(join(remote_dir, d.name), mode=d.mode) for d in reversed(plan.dirs))

    def _pipelined(self, requests: Iterator[tuple[int, bytes]]) -> None:
        """Sends the requests back to back, at most ``TREE_WINDOW`` waiting
        for their replies (which are small, so the server never blocks on
        them); raises the first failure once every reply is in. Interrupted
        (a local error, Ctrl-C), it closes the connection."""
        out = bytearray()
        waiting = 0
        failure: Exception | None = None
        try:
            for _id, data in requests:
                if waiting >= _files.TREE_WINDOW:
                    if out:
                        self._write(bytes(out))
                        out.clear()
                    failure = self._pipelined_reply(failure)
                    waiting -= 1
                out += data
                waiting += 1
                if len(out) >= _files.CHUNK:
                    self._write(bytes(out))
                    out.clear()
            if out:
                self._write(bytes(out))
            while waiting:
                failure = self._pipelined_reply(failure)
                waiting -= 1
        except BaseException:
            if waiting:
                self._abort("a tree transfer was interrupted")
            raise
        if failure is not None:
            raise failure

    def _pipelined_reply(self, failure: Exception | None) -> Exception | None:
        """Reads one reply of :meth:`_pipelined`: the first failure so far."""
        event = self._event()
        if event[0] in FAILURES:
            exc = self._failure(event)
            if self._require_session().closed is not None:
                raise exc
            return failure or exc
        return failure

    def download_tree(
        self,
        remote_dir: str,
        local_dir: str | os.PathLike[str],
        *,
        checksum: str | None = None,
        symlinks: str = "refuse",
    ) -> dict[str, Any]:
        """Fetch the tree beneath ``remote_dir`` on a server started with ``root`` into ``local_dir``.

        The mirror of :meth:`upload_tree`: directories are made as needed,
        modes kept, a local file with the same size, ``checksum`` digest and
        mode skipped and any other replaced (each atomically and verified, as
        :meth:`download` saves one); a symlink on the server refuses the
        transfer before anything is written, unless ``symlinks="copy"`` (and
        its target stays inside the tree). Names that would lead out of
        ``local_dir`` (through a local symlink, say) are refused. The files
        are asked for back to back on the connection and made durable
        together at the end (one sync of the local file system), as
        :meth:`upload_tree` does on the server. Returns what
        :meth:`upload_tree` returns. See it for an example.
        """
        _files.check_symlinks(symlinks)
        checksum = self._pick_checksum(checksum)
        local = os.fspath(local_dir)
        entries = self._listing(remote_dir, recursive=True, checksum=checksum)
        items = _files.remote_tree(entries, symlinks, remote_dir)
        _files.check_tree_names(items)
        mirror = _files.LocalTree(local, items, checksum)
        files = iter(mirror.plan.files)
        # (item, receiving file) of each get sent, in the order of the replies
        pending: collections.deque[tuple[_files.TreeItem, _files.LocalFile]] = collections.deque()
        with self._call():
            self._require_sock()
            session = self._require_session()
            try:
                while True:
                    if len(pending) <= _files.TREE_WINDOW // 2:
                        # Gets go back to back, a batch a write; their replies are small
                        # next to the socket buffers, so neither side blocks the other.
                        out = bytearray()
                        while len(pending) < _files.TREE_WINDOW and (item := next(files, None)) is not None:
                            target = mirror.receiver(item)
                            pending.append((item, target))
                            out += session.get(_files.remote_join(remote_dir, item.name), checksum=checksum)[1]
                        if out:
                            self._write(bytes(out))
                    if not pending:
                        break
                    item, target = pending[0]
                    event = self._event()
                    if event[0] == "file-chunk":
                        target.write(event[2])
                    elif event[0] == "transfer-end":
                        mirror.save(target, event[6], item)
                        pending.popleft()
                    elif event[0] != "download-started":
                        raise self._failure(event)
            except BaseException:
                if pending:
                    self._abort("a tree download was interrupted")
                raise
            finally:
                for _item, target in pending:
                    target.discard()
        _files.sync_path(local)
        mirror.finish()
        return mirror.plan.result(local, remote_dir)
