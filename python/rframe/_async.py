"""The asyncio client of rframe's command server, and async framing helpers.

:class:`AsyncClient` keeps its socket on the event loop: an
:class:`asyncio.BufferedProtocol` whose ``buffer_updated`` feeds a Rust
:class:`rframe.FrameDecoder` (the loop reads into one reused buffer per
thread, not a new ``bytes`` object per read), requests packed by
:meth:`rframe.Codec.pack` and written with ``transport.write``. No threads
and no cross-thread wake-ups: completing an awaitable from a tokio thread
(``pyo3-async-runtimes``) costs the event loop more CPU than a whole
pure-asyncio round trip (see bench/README.md), so the Rust code does the
framing and the loop does the I/O.

>>> import asyncio
>>> from rframe import Server
>>> async def main(address):
...     async with AsyncClient(*address) as client:
...         result = await client.run("echo hi; exit 3")
...         return result.returncode, result.stdout
>>> with Server(port=0) as server:
...     asyncio.run(main(server.address))
(3, b'hi\\n')
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
import socket
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from . import _files, _tls
from ._errors import FrameError, RemoteError
from ._files import Progress
from ._protocol import (
    AUTH_SERVER_FAILED,
    CommandResult,
    auth_answer,
    auth_check_welcome,
    auth_hello,
    auth_server_failed,
    check_client_timeout,
    closing_reason,
    command_result,
    raise_for_error,
    run_request,
    token_bytes,
    unix_socket,
    where,
)
from ._rframe import DEFAULT_PORT, Codec, Frame, _ReplyReader

__all__ = ["AsyncClient", "read_frame_async", "send_frame_async"]

_Body = bytes | bytearray | memoryview | str
_Header = Mapping[Any, Any] | None

_DEFAULT_CODEC = Codec()
_get_running_loop = asyncio.get_running_loop
_get_ident = threading.get_ident
#: asyncio's own loops (BaseEventLoop) keep the ident of the thread that
#: runs them in ``_thread_id``, None while stopped. Read only where
#: get_running_loop() is slow: Python 3.11.
_LOOP_CHECK_BY_THREAD = sys.version_info < (3, 12)

# Bumped in every child process right after a fork(): a client whose
# generation differs was created in another process (cheaper than os.getpid()
# on every call, which is a system call).
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------- the protocol


class _Connection(asyncio.BufferedProtocol):
    """One connection's state on the event loop: decoder, waiters, close reason.

    ``waiters`` holds one future per frame the client expects, in the order
    the frames will arrive (requests are answered in order). Each frame that
    arrives resolves the oldest waiter; a waiter whose caller went away
    (cancelled, timed out) still takes its frame, which is dropped, so later
    waiters keep theirs. Frames nobody waits for yet go to ``unclaimed``
    (for :meth:`AsyncClient.recv`).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, codec: Codec) -> None:
        self.loop = loop
        # Whether a call can tell that it runs on this loop from the thread
        # the loop runs in (see AsyncClient.request).
        self.loop_thread_known = _LOOP_CHECK_BY_THREAD and isinstance(loop, asyncio.BaseEventLoop)
        self.decoder = codec.decoder()
        self.waiters: collections.deque[asyncio.Future[Frame]] = collections.deque()
        # The loop asks for a buffer before every read: the reader answers
        # itself (this instance attribute shadows the method below).
        self.reader = _ReplyReader(self.decoder)
        # (Its parameter is positional-only, the method's is not: the same call.)
        self.get_buffer = self.reader.get_buffer  # type: ignore[method-assign,assignment]
        self.unclaimed: collections.deque[Frame] = collections.deque()
        self.transport: asyncio.Transport | None = None
        #: Why the connection can no longer be used; None while it can.
        self.reason: str | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.eof_error: EOFError | None = None
        self.paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        # Per-call deadlines: (deadline, future, timeout, close reason) in the
        # order the calls were made, and one timer for the earliest deadline
        # (a timer per call, as asyncio.timeout() makes, costs much more).
        self.timed: collections.deque[_Timed] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = 0.0
        # Requests made while others are in flight are joined into one write
        # per loop iteration (one system call for a whole gather() of them).
        self.outbuf: list[bytes] = []
        self.outbuf_size = 0
        self.flush_pending = False
        # A file transfer owns the connection while it runs: other calls wait
        # for this future (their frames would land inside the transfer's).
        self.held: asyncio.Future[None] | None = None
        # Reading pauses while this many frames wait unclaimed (a download
        # faster than its disk), so memory stays bounded.
        self.reading_paused = False

    # -- asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        # Shadowed by self.reader.get_buffer (see __init__).
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            # Frames for waiting calls go to their futures in Rust; the rest
            # (error frames, frames nobody waits for yet) come back, in order.
            frames = self.reader.deliver(nbytes, self.waiters)
        except FrameError as exc:
            self.fail(f"reading a frame failed: {type(exc).__name__}", first=exc)
            return
        if frames is None:
            return
        waiters = self.waiters
        for frame in frames:
            if waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(frame)
                # else: its caller went away; the frame was its, and is dropped
            else:
                self.unclaimed.append(frame)
                if len(self.unclaimed) >= _MAX_UNCLAIMED and not self.reading_paused and self.transport is not None:
                    self.reading_paused = True
                    self.transport.pause_reading()
            header = frame.header
            if header and header.get("op") == "error":
                why = closing_reason(header)
                if why is not None:  # the server closes the connection after this one
                    self.fail(why)
                    return

    def eof_received(self) -> bool:
        try:
            self.decoder.close()
        except EOFError as exc:  # rframe.IncompleteFrame: the stream ended mid-frame
            self.eof_error = exc
        return False  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.reason is None:
            if exc is None:
                self.reason = "the server closed the connection"
                detail = str(self.eof_error) if self.eof_error is not None else "connection closed before a frame began"
                cause: BaseException | None = self.eof_error

                def error() -> BaseException:
                    e = ConnectionResetError(f"the server closed the connection ({detail})")
                    e.__cause__ = cause
                    return e
            else:
                self.reason = f"the connection failed: {type(exc).__name__}: {exc}"

                def error() -> BaseException:
                    e: BaseException
                    if isinstance(exc, OSError):
                        try:  # the same error for every waiter, each its own instance
                            e = type(exc)(*exc.args)
                        except Exception:  # noqa: BLE001 - a subclass with its own signature
                            e = ConnectionResetError(str(exc))
                    else:
                        e = ConnectionAbortedError(f"the connection failed ({type(exc).__name__}: {exc})")
                    e.__cause__ = exc
                    return e

            self._fail_waiters(error)
        else:
            self._fail_waiters(self.aborted_error)
        self._wake_drainers()
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_drainers()

    def take_unclaimed(self) -> Frame:
        """The oldest frame nobody waited for (there must be one)."""
        frame = self.unclaimed.popleft()
        if self.reading_paused and len(self.unclaimed) < _MAX_UNCLAIMED // 2:
            self.reading_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
        return frame

    # -- deadlines

    def watch(self, fut: asyncio.Future[Frame], timeout: float, closes: str | None) -> None:
        """Fails ``fut`` with ``TimeoutError`` if it still waits ``timeout``
        seconds from now; then, with ``closes``, closes the connection."""
        deadline = self.loop.time() + timeout
        timed = self.timed
        while timed and timed[0][1].done():
            timed.popleft()
        timed.append((deadline, fut, timeout, closes))
        if self.timer is None or deadline < self.timer_when:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._expire)
        self.timer_when = when

    def _expire(self) -> None:
        self.timer = None
        now = self.loop.time() + _TIMER_SLACK
        keep: collections.deque[_Timed] = collections.deque()
        earliest: float | None = None
        close: str | None = None
        for entry in self.timed:
            deadline, fut, timeout, closes = entry
            if fut.done():
                continue
            if deadline <= now:
                # It keeps its place among the waiters: its reply is dropped.
                fut.set_exception(TimeoutError(f"no reply within {timeout:g} seconds"))
                if closes is not None:
                    close = closes
            else:
                keep.append(entry)
                if earliest is None or deadline < earliest:
                    earliest = deadline
        self.timed = keep
        if close is not None:
            self.fail(close)
        elif earliest is not None:
            self._arm(earliest)

    # -- writing

    def queue(self, data: bytes) -> None:
        """Writes ``data`` after what is queued, at the end of this loop
        iteration (at once when the queue reaches the transport's high-water
        mark, so that flow control still applies)."""
        self.outbuf.append(data)
        self.outbuf_size += len(data)
        if self.outbuf_size >= _FLUSH_SIZE:
            self.flush()
        elif not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_pending = False
        buf = self.outbuf
        if not buf:
            return
        self.outbuf, self.outbuf_size = [], 0
        transport = self.transport
        if self.reason is None and transport is not None and not transport.is_closing():
            transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    # -- failing

    def aborted_error(self) -> ConnectionAbortedError:
        return ConnectionAbortedError(f"the connection was closed ({self.reason})")

    def closed_error(self) -> ConnectionAbortedError:
        return ConnectionAbortedError(f"the connection is closed ({self.reason}); open a new AsyncClient")

    def raise_closed(self) -> None:
        """For a call on the closed connection: the error frame the server
        sent before it closed (busy, auth), if nobody has claimed it yet (that
        answer is more useful than "closed", and the blocking Client gives
        it too); else ``ConnectionAbortedError``."""
        unclaimed = self.unclaimed
        if unclaimed and unclaimed[0].header.get("op") == "error":
            raise_for_error(self.take_unclaimed(), self.fail)
        raise self.closed_error()

    def fail(self, reason: str, first: BaseException | None = None, graceful: bool = False) -> None:
        """Makes the connection unusable: records why, closes the transport
        (aborts it, unless ``graceful`` and nothing is left to write) and fails
        every waiter: the first with ``first`` if given, the others with
        ``ConnectionAbortedError``."""
        if graceful and self.reason is None:
            self.flush()  # what send() handed over goes out before the close
        if self.reason is None:
            self.reason = reason
        self.outbuf, self.outbuf_size = [], 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if graceful and not transport.get_write_buffer_size():
                transport.close()
            else:
                transport.abort()
        if first is not None:
            while self.waiters:
                fut = self.waiters.popleft()
                if not fut.done():
                    fut.set_exception(first)
                    break
        self._fail_waiters(self.aborted_error)
        self._wake_drainers()

    def _fail_waiters(self, make: Callable[[], BaseException]) -> None:
        waiters, self.waiters = self.waiters, collections.deque()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(make())
        self.timed.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _wake_drainers(self) -> None:
        drainers, self.drain_waiters = self.drain_waiters, []
        for fut in drainers:
            if not fut.done():
                fut.set_result(None)


_Timed = tuple[float, "asyncio.Future[Frame]", float, str | None]

#: Frames held for nobody before reading pauses (see _Connection.take_unclaimed).
_MAX_UNCLAIMED = 8

#: Queued requests are written at once when they reach this size (asyncio's
#: default high-water mark for a transport's write buffer).
_FLUSH_SIZE = 64 * 1024

#: A loop timer may fire this much before its time (the loop's clock resolution).
_TIMER_SLACK = 0.001


def _abandon(conn: _Connection, fut: asyncio.Future[Frame], closes: str | None) -> None:
    """The caller waiting on ``fut`` for a reply leaves (cancelled, timed out).

    The request is out, so ``fut`` keeps its place among the waiters and the
    reply is dropped when it comes; but with ``closes``, the connection is
    closed instead (the server then kills a command that may still run).
    Nothing to do if the reply had already come.
    """
    if fut.done() and not fut.cancelled():
        exc = fut.exception()  # retrieved: no "exception was never retrieved" log
        if not isinstance(exc, TimeoutError):
            return  # the reply (or the connection's failure) came before the caller left
    elif not fut.done():
        fut.cancel()
    if closes is not None:
        conn.fail(closes)


# --------------------------------------------------------------------------- the client


class AsyncClient:
    """An asyncio connection to an rframe server; calls are pipelined.

    ``async with AsyncClient(host, port) as client:`` connects on entry and
    closes on exit; ``client = await AsyncClient.connect(...)`` connects at
    once (then ``await client.close()``). Arguments, results and exceptions
    are those of the blocking :class:`rframe.Client`: ``(host, port)`` over
    TCP or the Unix socket ``unix_path``; ``token`` for the server's HMAC
    handshake (done while connecting); ``tls`` and ``fingerprint`` (TLS run by
    the event loop's ``ssl=``; the pin checked before the first frame);
    ``codec`` as the server's; ``timeout``
    (seconds, ``None`` = no limit) bounds connecting and each call, and
    :meth:`run` waits longer when the command's own ``timeout`` is longer. A
    call that runs out of time raises the builtin ``TimeoutError``.

    **Pipelining.** Any number of tasks may call one client at once. Each
    request is written as soon as it is made and its caller waits in a FIFO;
    the server answers in order, and each reply goes to the oldest waiter. So
    ``await asyncio.gather(*(client.request(x) for x in xs))`` has all of
    ``xs`` in flight on one connection and every caller gets its own reply.
    (The server works through one connection's requests one after another:
    use several clients for work that should run in parallel on the server.)

    **Cancellation** (``task.cancel()``, ``asyncio.wait_for``,
    ``asyncio.timeout``, or the client's own ``timeout``) never leaves the
    connection half-read; frames are only ever taken whole:

    * a cancelled :meth:`request` keeps its place in the FIFO; its reply is
      dropped when it arrives, and the connection stays in sync and usable;
    * a cancelled :meth:`run` (its command may still be running) closes the
      connection, so the server kills the command; calls then raise
      ``ConnectionAbortedError`` saying so. If the result had already
      arrived, the connection stays open;
    * a cancelled :meth:`recv` gives its place back if nothing else waits
      behind it (as if it had not been called); otherwise the frame it would
      have received is dropped;
    * a cancelled :meth:`send` has either written its whole frame or nothing.

    Errors: as for :class:`rframe.Client`. An error frame raises
    :class:`rframe.RemoteError` (and leaves the connection usable, except for
    the codes after which the server closes it); a failed handshake
    :class:`rframe.AuthenticationError`; a connection the server closed
    ``ConnectionResetError`` for the calls waiting on it, and
    ``ConnectionAbortedError`` for later calls, as after :meth:`close`.

    A client belongs to the event loop it connected on and to the process that
    created it: in a forked child every method raises ``RuntimeError`` (open a
    new client there), and nothing is done to the parent's connection.

    >>> import asyncio
    >>> from rframe import Server
    >>> async def main(address):
    ...     client = await AsyncClient.connect(*address, timeout=10)
    ...     try:
    ...         replies = await asyncio.gather(*(client.request(f"req {i}") for i in range(3)))
    ...         return [r.body for r in replies]
    ...     finally:
    ...         await client.close()
    >>> with Server(port=0, handler=lambda frame: frame.body.upper()) as echo:
    ...     asyncio.run(main(echo.address))
    [b'REQ 0', b'REQ 1', b'REQ 2']
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
        self.codec = codec if codec is not None else _DEFAULT_CODEC
        self.timeout = timeout
        self._token = token_bytes(token, self.codec)
        self.address: Any = os.fspath(unix_path) if unix_path is not None else (host, port)
        self._unix = unix_path is not None
        self._tls = _tls.ClientTLS(tls, host=None if self._unix else host, fingerprint=fingerprint, token=self._token)
        #: The server certificate's SHA-256 (lowercase hex) on TLS, else ``None``.
        self.tls_fingerprint: str | None = None
        self._pid = os.getpid()
        self._generation = _fork_generation
        self._conn: _Connection | None = None
        self._connecting = False
        self._closed_reason: str | None = None  # closed before it ever connected

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        unix_path: str | os.PathLike[str] | None = None,
        token: str | bytes | None = None,
        codec: Codec | None = None,
        timeout: float | None = None,
        tls: _tls.TLSArg = None,
        fingerprint: str | None = None,
    ) -> AsyncClient:
        """Create a client and connect it (arguments as for the constructor)."""
        client = cls(
            host, port, unix_path=unix_path, token=token, codec=codec, timeout=timeout, tls=tls, fingerprint=fingerprint
        )
        await client._open()
        return client

    async def __aenter__(self) -> AsyncClient:
        # Also enters a client that connect() opened: async with await AsyncClient.connect(...)
        conn = self._conn
        if conn is None:
            if self._closed_reason is not None:
                raise ConnectionAbortedError(
                    f"the connection is closed ({self._closed_reason}); open a new AsyncClient"
                )
            await self._open()
        elif conn.reason is not None:
            raise conn.closed_error()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _open(self) -> None:
        self._check_process()
        if self._conn is not None or self._connecting or self._closed_reason is not None:
            raise RuntimeError(f"{self!r} is already connecting, connected or closed; open a new AsyncClient")
        loop = asyncio.get_running_loop()
        self._connecting = True
        try:
            async with asyncio.timeout(self.timeout):  # (None: no limit)
                conn = await self._make_connection(loop)
        finally:
            self._connecting = False
        if self._closed_reason is not None:  # close() came while connecting
            await self._shut(conn, self._closed_reason)
            raise ConnectionAbortedError("the AsyncClient was closed while it connected")
        self._conn = conn
        binding = None
        try:
            if self._tls.context is not None:
                # Checked before a single frame goes out.
                # (A connection made has its transport.)
                ssl_object = conn.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
                cert = self._tls.check_peer(ssl_object, where(self.address))
                self.tls_fingerprint, binding = cert.fingerprint, cert.binding
            if self._token is not None:
                await self._authenticate(self._token, binding)
        except BaseException:
            # Aborted, not closed: a peer that failed the pin or the login
            # is not waited for (a TLS close waits for its close_notify).
            await self._shut(conn, "the handshake failed", graceful=False)
            raise

    async def _make_connection(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        sock = await (self._connect_unix(loop) if self._unix else self._connect_tcp(loop))
        conn = _Connection(loop, self.codec)
        # With TLS the handshake runs inside these calls (no name check: the
        # pin or the token's binding judges the certificate, unless the
        # caller's own context checks names).
        ssl_args: dict[str, Any] = {}
        if self._tls.context is not None:
            ssl_args = {"ssl": self._tls.context, "server_hostname": self._tls.server_hostname}
            if self.timeout is not None:
                # close() waits for the peer's close_notify no longer than a call may take.
                ssl_args["ssl_shutdown_timeout"] = self.timeout
        try:
            self._tls.check_plaintext(sock)
            if self._unix:
                await loop.create_unix_connection(lambda: conn, sock=sock, **ssl_args)
            else:
                await loop.create_connection(lambda: conn, sock=sock, **ssl_args)
        except BaseException:
            sock.close()
            raise
        return conn

    async def _connect_unix(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        sock = unix_socket()  # NotImplementedError where there are none (Windows)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, self.address)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _connect_tcp(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        # As socket.create_connection does it (so the errors are the same as
        # the blocking Client's): every address in turn, the last error raised.
        host, port = self.address
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"getaddrinfo returned nothing for {host!r}")
        error: BaseException | None = None
        for family, type_, proto, _, addr in infos:
            try:
                sock = socket.socket(family, type_, proto)
            except OSError as exc:  # a family this host lacks (IPv6 turned off): the next address
                error = exc
                continue
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, addr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not every platform allows it
                pass
            return sock
        assert error is not None
        raise error

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by :meth:`close` or after a failure), or before it opened."""
        conn = self._conn
        return conn is None or conn.reason is not None

    async def close(self) -> None:
        """Close the connection; calls still waiting raise ``ConnectionAbortedError``.

        Returns once the transport is closed. Calling it again does nothing.
        """
        self._check_process()
        conn = self._conn
        if conn is None:
            if self._closed_reason is None:
                self._closed_reason = "the client was closed"
            return
        if asyncio.get_running_loop() is not conn.loop:
            raise RuntimeError(f"{self!r} belongs to another event loop: close it there")
        await self._shut(conn, "the client was closed")

    async def _shut(self, conn: _Connection, reason: str, graceful: bool = True) -> None:
        conn.fail(reason, graceful=graceful)
        if not conn.lost.done():
            # connection_lost comes on the loop's next turn (abort() or an
            # empty write buffer); shielded so a cancelled close() still closes.
            await asyncio.shield(conn.lost)

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is None or conn.transport is None or getattr(self, "_generation", None) != _fork_generation:
            return
        if conn.transport.is_closing():
            return
        warnings.warn(
            f"unclosed {self!r}: use 'async with' or 'await client.close()'", ResourceWarning, stacklevel=1, source=self
        )
        if not conn.loop.is_closed():
            conn.reason = conn.reason or "the client was garbage-collected"
            conn.transport.abort()

    def __repr__(self) -> str:
        conn = self._conn
        if conn is None:
            state = f"closed: {self._closed_reason}" if self._closed_reason else "not connected"
        elif conn.reason is not None:
            state = f"closed: {conn.reason}"
        else:
            state = "open"
        return f"<rframe.AsyncClient {self.address!r} {state}>"

    def _check_process(self) -> None:
        if self._generation != _fork_generation:
            raise RuntimeError(
                f"this AsyncClient was created in process {self._pid}, and this is process {os.getpid()} "
                "(a fork): a connection cannot be shared between processes; open a new AsyncClient here"
            )

    def _usable(self) -> _Connection:
        """The connection, if this process and loop may use it and it is open."""
        if self._generation != _fork_generation:
            self._check_process()
        conn = self._conn
        if conn is None:
            if self._closed_reason is not None:
                raise ConnectionAbortedError(
                    f"the connection is closed ({self._closed_reason}); open a new AsyncClient"
                )
            raise RuntimeError(
                "the AsyncClient is not connected: use 'async with AsyncClient(...) as client' "
                "or 'client = await AsyncClient.connect(...)'"
            )
        if asyncio.get_running_loop() is not conn.loop:
            raise RuntimeError(f"{self!r} belongs to another event loop; open a new AsyncClient on this one")
        return conn

    # ------------------------------------------------------------------ frames

    async def _writable(self, conn: _Connection) -> None:
        """Waits (within the client's timeout) while the transport's write
        buffer is over its high-water mark; nothing is written meanwhile."""

        async def wait() -> None:
            while conn.paused and conn.reason is None:
                fut: asyncio.Future[None] = conn.loop.create_future()
                conn.drain_waiters.append(fut)
                try:
                    await fut
                finally:
                    if fut.cancelled():  # timed out or cancelled, not woken: still listed
                        with contextlib.suppress(ValueError):
                            conn.drain_waiters.remove(fut)

        async with asyncio.timeout(self.timeout):
            await wait()
        if conn.reason is not None:
            conn.raise_closed()

    async def _turn(self, conn: _Connection) -> None:
        """Waits until this call may write: no file transfer holds the
        connection and its write buffer has room. Both are checked again after
        every wait, so a transfer that began meanwhile is waited for too."""
        while True:
            if conn.held is not None:
                await self._behind_transfer(conn.held)
            elif conn.paused:
                await self._writable(conn)
            else:
                break
            if conn.reason is not None:
                conn.raise_closed()

    async def _behind_transfer(self, held: asyncio.Future[None]) -> None:
        """Waits, within the client's timeout like any wait, for the file
        transfer that holds the connection to end."""
        async with asyncio.timeout(self.timeout):
            await asyncio.shield(held)

    @staticmethod
    def _begin(conn: _Connection, data: bytes, timeout: float | None, closes: str | None) -> asyncio.Future[Frame]:
        """Writes a request; returns the future its reply will resolve."""
        fut: asyncio.Future[Frame] = conn.loop.create_future()
        if conn.outbuf or conn.waiters:  # others in flight: join this iteration's writes
            conn.queue(data)
        else:
            conn.transport.write(data)  # type: ignore[union-attr]
        if conn.unclaimed:  # a frame nobody claimed yet is the next one: ours
            fut.set_result(conn.take_unclaimed())
        else:
            conn.waiters.append(fut)
            if timeout is not None:
                conn.watch(fut, timeout, closes)
        return fut

    async def _exchange(
        self,
        body: _Body,
        header: _Header,
        fields: Mapping[str, Any],
        timeout: float | None,
        closes: str | None = None,
    ) -> Frame:
        """One request and its reply, error frames raised. ``closes``: the
        reason to close the connection with if the caller leaves before the
        reply came (cancelled, or out of time)."""
        conn = self._usable()
        if conn.reason is not None:
            conn.raise_closed()
        # Packed first: a header that cannot be encoded fails before a byte is
        # sent, and the connection is untouched.
        data = self.codec.pack(body, header, **fields)
        await self._turn(conn)
        return await self._reply(conn, data, timeout, closes)

    async def _reply(self, conn: _Connection, data: bytes, timeout: float | None, closes: str | None) -> Frame:
        """Writes a packed request and returns its reply, error frames raised.
        The caller has its turn (or holds the connection for a transfer)."""
        if conn.paused:
            await self._writable(conn)
        fut = self._begin(conn, data, timeout, closes)
        try:
            frame = await fut
        except BaseException:
            _abandon(conn, fut, closes)
            raise
        raise_for_error(frame, conn.fail)
        return frame

    async def send(self, body: _Body = b"", header: _Header = None, **fields: Any) -> None:
        """Send one frame (arguments as for :func:`rframe.send_frame`) without waiting for a reply.

        Pair each :meth:`send` with a :meth:`recv`, or use :meth:`request`.
        Returns once the frame is handed to the transport (first waiting,
        within the client's timeout, while its write buffer is full).
        """
        conn = self._usable()
        if conn.reason is not None:
            conn.raise_closed()
        data = self.codec.pack(body, header, **fields)
        await self._turn(conn)
        if conn.outbuf:
            conn.queue(data)
        else:
            conn.transport.write(data)  # type: ignore[union-attr]

    async def recv(self) -> Frame:
        """Wait for the next frame from the server that no earlier call claimed, and return it.

        An error frame raises :class:`rframe.RemoteError`; a server that closed
        the connection, ``ConnectionResetError``. Frames of a file transfer
        under way are the transfer's: this waits for it to end.
        """
        conn = self._usable()
        while conn.held is not None:
            await self._behind_transfer(conn.held)
        if conn.unclaimed:
            frame = conn.take_unclaimed()
        else:
            if conn.reason is not None:
                raise conn.closed_error()
            fut: asyncio.Future[Frame] = conn.loop.create_future()
            conn.waiters.append(fut)
            if self.timeout is not None:
                conn.watch(fut, self.timeout, None)
            try:
                frame = await fut
            except BaseException:
                if not fut.done():
                    fut.cancel()
                elif not fut.cancelled():
                    fut.exception()  # retrieved
                if conn.waiters and conn.waiters[-1] is fut:
                    conn.waiters.pop()  # nothing waits behind it: give the place back
                raise
        raise_for_error(frame, conn.fail)
        return frame

    async def request(self, body: _Body = b"", header: _Header = None, **fields: Any) -> Frame:
        """Send one frame and return the one the server answers with.

        ``body``, ``header`` and ``fields`` are as for :func:`rframe.send_frame`.
        Concurrent calls are pipelined (see the class documentation).

        >>> import asyncio
        >>> from rframe import Server
        >>> def handler(frame):
        ...     return {"greeting": "hello " + frame.header["name"]}, b""
        >>> async def main(address):
        ...     async with AsyncClient(*address) as client:
        ...         return (await client.request(name="world")).header["greeting"]
        >>> with Server(port=0, handler=handler) as server:
        ...     asyncio.run(main(server.address))
        'hello world'
        """
        # _exchange without its checks once the connection is known good: the hot path.
        conn = self._conn
        if (
            conn is None
            or conn.reason is not None
            or conn.paused
            or conn.held is not None
            or self._generation != _fork_generation
        ):
            return await self._exchange(body, header, fields, self.timeout)
        if conn.loop_thread_known:
            # A loop that runs in this thread is the running loop (a thread
            # runs one loop at a time): no get_running_loop(), which on
            # Python 3.11 makes a getpid() system call. (Loops patched to
            # nest, as nest_asyncio does, break that rule; a call from the
            # inner loop then fails at its await, with asyncio's error.)
            if conn.loop._thread_id != _get_ident():  # type: ignore[attr-defined]
                self._usable()  # the full check
        elif _get_running_loop() is not conn.loop:
            self._usable()  # raises
        if header is None and fields:
            # The same bytes as pack(body, None, **fields) (fields is this
            # call's own dict), without unpacking it into keywords and back.
            data = self.codec.pack(body, fields)
        else:
            data = self.codec.pack(body, header, **fields)
        fut = self._begin(conn, data, self.timeout, None)
        try:
            frame = await fut
        except BaseException:
            _abandon(conn, fut, None)
            raise
        h = frame.header
        if h and h.get("op") == "error":
            raise_for_error(frame, conn.fail)
        return frame

    # ------------------------------------------------------------------ authentication

    async def _authenticate(self, token: bytes, binding: bytes | None) -> None:
        hello = await self._exchange(b"", auth_hello(), {}, self.timeout)
        header, server_nonce, client_nonce = auth_answer(token, hello, binding)
        reply = await self._exchange(b"", header, {}, self.timeout)
        if not auth_check_welcome(token, reply, server_nonce, client_nonce, binding):
            conn = self._conn
            if conn is not None:
                conn.fail(AUTH_SERVER_FAILED)
            raise auth_server_failed()

    # ------------------------------------------------------------------ commands

    async def run(
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
        """Run a command on the server and return a :class:`rframe.CommandResult`.

        Arguments, result and exceptions are those of :meth:`rframe.Client.run`:
        a string runs under ``/bin/sh -c``, a list as argv; ``input`` feeds
        stdin; ``env`` and ``cwd``; ``timeout`` limits the command (the server
        kills it and this raises :class:`rframe.CommandTimeout`, the connection
        stays usable); ``check=True`` raises :class:`rframe.CommandError` on a
        non-zero status; ``text=True`` decodes the output.

        Cancelling a ``run`` while its command runs closes the connection, so
        the server kills the command (later calls raise
        ``ConnectionAbortedError``).

        >>> import asyncio
        >>> from rframe import Server
        >>> async def main(address):
        ...     async with AsyncClient(*address) as client:
        ...         try:
        ...             await client.run("sleep 5", timeout=0.2)
        ...         except TimeoutError as e:
        ...             print(e)
        ...         return (await client.run("cat", input="still usable", text=True)).stdout
        >>> with Server(port=0) as server:
        ...     asyncio.run(main(server.address))
        Command 'sleep 5' timed out after 0.2 seconds
        'still usable'
        """
        header, body, wait = run_request(cmd, timeout=timeout, input=input, env=env, cwd=cwd)
        limit = self.timeout
        if limit is not None and wait is not None and wait > limit:
            limit = wait
        reply = await self._exchange(body, header, {}, limit, _RUN_CANCELLED)
        return command_result(cmd, reply, timeout=timeout, check=check, text=text)

    # ------------------------------------------------------------------ files

    @contextlib.asynccontextmanager
    async def _hold(self) -> AsyncIterator[_Connection]:
        """Owns the connection for one transfer: other calls wait meanwhile."""
        conn = self._usable()
        while conn.held is not None:
            await self._behind_transfer(conn.held)
        if conn.reason is not None:
            conn.raise_closed()
        held = conn.held = conn.loop.create_future()
        try:
            yield conn
        finally:
            conn.held = None
            held.set_result(None)

    async def _next(self, conn: _Connection) -> Frame:
        """The next frame of a transfer, error frames raised."""
        if conn.unclaimed:
            frame = conn.take_unclaimed()
        else:
            if conn.reason is not None:
                conn.raise_closed()
            fut: asyncio.Future[Frame] = conn.loop.create_future()
            conn.waiters.append(fut)
            if self.timeout is not None:
                conn.watch(fut, self.timeout, _TRANSFER_CUT)
            try:
                frame = await fut
            except BaseException:
                _abandon(conn, fut, _TRANSFER_CUT)
                raise
        raise_for_error(frame, conn.fail)
        return frame

    async def upload(
        self,
        local_path: str | os.PathLike[str],
        remote_name: str | None = None,
        *,
        overwrite: bool = False,
        checksum: str = "sha256",
        progress: Progress = None,
    ) -> dict[str, Any]:
        """Send a file to a server started with ``root``: :meth:`rframe.Client.upload`.

        Other calls on this client wait while the transfer runs. Disk reads
        and hashing run in the loop's default executor, a chunk at a time.
        Cancelling an upload before its last chunk is out closes the
        connection, and the server keeps nothing.

        >>> import asyncio, tempfile, pathlib
        >>> from rframe import Server
        >>> root, here = tempfile.mkdtemp(), pathlib.Path(tempfile.mkdtemp())
        >>> _ = (here / "a.txt").write_text("hello")
        >>> async def main(address):
        ...     async with AsyncClient(*address) as client:
        ...         await client.upload(here / "a.txt", "b.txt")
        ...         return await client.download("b.txt", here)
        >>> with Server(port=0, root=root) as server:
        ...     asyncio.run(main(server.address))["size"]
        5
        """
        _files.check_checksum(checksum)
        path, name = _files.local_source(local_path, remote_name)
        loop = asyncio.get_running_loop()
        hasher = hashlib.new(checksum)

        def read_chunk(f: Any, want: int) -> bytearray:
            buf = bytearray(want)
            n = f.readinto(buf)
            del buf[n:]
            hasher.update(buf)
            return buf

        f, size = _files.open_source(path)
        with f:
            async with self._hold() as conn:
                request = self.codec.pack(b"", _files.put_request(name, size, overwrite=overwrite, checksum=checksum))
                ready = await self._reply(conn, request, self.timeout, _TRANSFER_CUT)
                chunk = _files.chunk_size(_files.expect(ready, "ready"))
                done = 0
                try:
                    if progress is not None:
                        progress(0, size)
                    while done < size:
                        buf = await loop.run_in_executor(None, read_chunk, f, min(chunk, size - done))
                        if not buf:
                            raise OSError(f"{path} shrank from {size} to {done} bytes while it was sent")
                        data = self.codec.pack(buf, {"op": "data"})
                        if conn.paused:
                            await self._writable(conn)
                        if conn.reason is not None:
                            conn.raise_closed()
                        conn.transport.write(data)  # type: ignore[union-attr]
                        done += len(buf)
                        if progress is not None:
                            progress(done, size)
                    digest = hasher.hexdigest()
                    end = self.codec.pack(b"", _files.end_request(checksum, digest))
                except BaseException:
                    conn.fail("an upload was interrupted")
                    raise
                stored = await self._reply(conn, end, self.timeout, _TRANSFER_CUT)
        return _files.stored_result(_files.expect(stored, "stored"), checksum, digest, size)

    async def download(
        self,
        remote_name: str,
        local_path: str | os.PathLike[str] | None = None,
        *,
        overwrite: bool = False,
        checksum: str = "sha256",
        progress: Progress = None,
    ) -> dict[str, Any]:
        """Fetch a file from a server started with ``root``: :meth:`rframe.Client.download`.

        Other calls on this client wait while the transfer runs. Disk writes
        and hashing run in the loop's default executor; reading from the
        socket pauses while chunks wait for the disk. Cancelling a download
        while data is still coming closes the connection and leaves no file
        behind; once all of it is in and verified, the file is saved even if
        the call is cancelled meanwhile. See :meth:`upload` for an example.
        """
        _files.check_checksum(checksum)
        path = _files.download_path(remote_name, local_path)
        target = _files.LocalFile(path, overwrite=overwrite, checksum=checksum)
        loop = asyncio.get_running_loop()
        committing: asyncio.Future[dict[str, Any]] | None = None
        try:
            async with self._hold() as conn:
                request = self.codec.pack(
                    b"", _files.get_request(remote_name, checksum=checksum, max_body=self.codec.max_body)
                )
                size = _files.expect(await self._reply(conn, request, self.timeout, _TRANSFER_CUT), "file").get("size")
                if not isinstance(size, int) or size < 0:
                    conn.fail("the server broke the download protocol")
                    raise ConnectionAbortedError(f"the server announced no size for {remote_name!r}")
                error_frame: RemoteError | None = None
                try:
                    if progress is not None:
                        progress(0, size)
                    while True:
                        try:
                            frame = await self._next(conn)
                        except RemoteError as exc:
                            error_frame = exc
                            raise
                        op = frame.header.get("op")
                        if op == "end":
                            break
                        if op != "data" or target.size + len(frame.body) > size:
                            conn.fail("the server broke the download protocol")
                            raise RemoteError("bad-response", f"expected {size} bytes of data, got {frame!r}")
                        await loop.run_in_executor(None, target.write, frame.body)
                        if progress is not None:
                            progress(target.size, size)
                except BaseException as exc:
                    # An error frame in place of the end leaves the stream in
                    # step; anything else (progress() or the disk raising too)
                    # leaves data coming.
                    if exc is not error_frame:
                        conn.fail("a download was interrupted")
                    raise
            # The commit (fsync, rename) runs to its end even if this task is
            # cancelled meanwhile; the temporary file goes only after it.
            committing = loop.run_in_executor(None, target.commit, frame.header, size)
            return await asyncio.shield(committing)
        finally:
            if committing is not None and not committing.done():

                def discard_after(done: asyncio.Future[Any]) -> None:
                    if not done.cancelled():
                        done.exception()  # retrieved: its caller is gone
                    target.discard()

                committing.add_done_callback(discard_after)
            else:
                target.discard()

    async def list_files(self, name: str = "") -> list[dict[str, Any]]:
        """The entries of a directory beneath the server's root: :meth:`rframe.Client.list_files`."""
        listing = await self._exchange(b"", _files.list_request(name), {}, self.timeout)
        _files.expect(listing, "listing")
        entries: list[dict[str, Any]] = json.loads(listing.body)
        return entries


_TRANSFER_CUT = "a file transfer was cancelled or timed out halfway; the connection was closed"

_RUN_CANCELLED = (
    "a run() was cancelled or timed out while its command ran; "
    "the connection was closed so that the server kills the command"
)


# --------------------------------------------------------------------------- framing helpers


async def read_frame_async(reader: asyncio.StreamReader, *, codec: Codec | None = None) -> Frame:
    """Read one frame from an :class:`asyncio.StreamReader`: the async :func:`rframe.read_frame`.

    Takes exactly the frame's bytes from ``reader``, nothing past it; the
    limits and errors are ``read_frame``'s (a Rust :class:`rframe.FrameDecoder`
    checks every length before its bytes are read): :class:`rframe.FrameTooLarge`,
    :class:`rframe.HeaderError`, ...; a stream that ends before the first byte
    raises ``EOFError``, one that ends mid-frame :class:`rframe.IncompleteFrame`.
    Cancelled after the frame began, it leaves the stream mid-frame: close it.

    ``codec`` is keyword-only (default: the course's format).

    >>> import asyncio, rframe
    >>> async def main():
    ...     reader = asyncio.StreamReader()
    ...     reader.feed_data(rframe.pack_frame(b"hello", file_name="a.txt") + b"rest")
    ...     reader.feed_eof()
    ...     frame = await read_frame_async(reader)
    ...     return frame.header, frame.body, await reader.read()
    >>> asyncio.run(main())
    ({'file_name': 'a.txt', 'total_size': 5}, b'hello', b'rest')
    """
    decoder = (codec if codec is not None else _DEFAULT_CODEC).decoder()
    while True:
        try:
            data = await reader.readexactly(decoder.needed or 1)  # (never 0 while a frame is unfinished)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                decoder.feed(exc.partial)
            decoder.close()  # raises IncompleteFrame if a frame began
            raise EOFError("connection closed before a frame began") from None
        frames = decoder.feed(data)
        if frames:
            return frames[0]


async def send_frame_async(
    writer: asyncio.StreamWriter,
    body: _Body = b"",
    header: _Header = None,
    *,
    codec: Codec | None = None,
    **fields: Any,
) -> None:
    """Write one frame to an :class:`asyncio.StreamWriter` and wait for ``drain()``.

    Arguments as for :func:`rframe.send_frame`; the frame is packed (and a bad
    header raises) before anything is written. ``codec`` is a keyword of this
    function, so a header field named ``codec`` must go in ``header``:
    ``send_frame_async(w, body, {"codec": "gzip"})``.
    """
    data = (codec if codec is not None else _DEFAULT_CODEC).pack(body, header, **fields)
    writer.write(data)
    await writer.drain()
