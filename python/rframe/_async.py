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
import functools
import json
import os
import socket
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _files, _tls
from ._errors import RemoteError
from ._files import Progress
from ._protocol import (
    FAILURES,
    CommandResult,
    check_client_timeout,
    command_result,
    event_failure,
    run_request,
    token_bytes,
    unix_socket,
    where,
)
from ._rframe import DEFAULT_PORT, ClientSession, Codec, Frame, _SessionReader

if TYPE_CHECKING:
    from ._async_process import AsyncRemoteProcess

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
    """One connection's state on the event loop: its session, waiters, close reason.

    The session (:class:`rframe.ClientSession`) owns the protocol: it makes
    each request's bytes and turns the server's bytes into events that name
    the request they answer. ``waiters`` maps a request's id to the future of
    the call waiting for it: a reply goes to its future in Rust
    (``_SessionReader.deliver``), every other event through :meth:`on_event`.
    Events that nobody waits for yet wait, in order: a transfer's (a
    download's chunks ahead of its disk) in ``early`` under its id, for its
    next step; frames nobody asked for (and failures that name no request) in
    ``backlog``, for :meth:`AsyncClient.recv`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, session: ClientSession) -> None:
        self.loop = loop
        # Whether a call can tell that it runs on this loop from the thread
        # the loop runs in (see AsyncClient.request).
        self.loop_thread_known = _LOOP_CHECK_BY_THREAD and isinstance(loop, asyncio.BaseEventLoop)
        self.session = session
        self.waiters: dict[int, asyncio.Future[Any]] = {}
        # The loop asks for a buffer before every read: the reader answers
        # itself (this instance attribute shadows the method below).
        self.reader = _SessionReader(session)
        # (Its parameter is positional-only, the method's is not: the same call.)
        self.get_buffer = self.reader.get_buffer  # type: ignore[method-assign,assignment]
        self.backlog: collections.deque[Any] = collections.deque()
        self.early: dict[int, collections.deque[Any]] = {}
        self.held_events = 0
        self.transport: asyncio.Transport | None = None
        #: Why the connection can no longer be used; None while it can.
        self.reason: str | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.eof_error: BaseException | None = None
        self.paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        # Per-call deadlines: (deadline, future, timeout, request id) in the
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
        # A file transfer or the login owns the connection while it runs:
        # other calls wait for this future.
        self.held: asyncio.Future[None] | None = None
        # Reading pauses while _MAX_HELD events wait in backlog and early
        # (a download faster than its disk), so memory stays bounded.
        self.reading_paused = False
        # A live command's events go to its process (AsyncRemoteProcess._on_event).
        self.live: Callable[[Any], bool] | None = None

    # -- asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        # Shadowed by self.reader.get_buffer (see __init__).
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        # Replies for waiting calls go to their futures in Rust; the rest
        # come back, in order.
        rest = self.reader.deliver(nbytes, self.waiters)
        if rest is not None:
            for event in rest:
                self.on_event(event)

    def on_event(self, event: Any) -> None:
        """What the session made of the server's bytes, other than a reply
        handed over already (see ``ClientSession`` for the events)."""
        kind = event[0]
        if self.live is not None and self.live(event):
            return
        if kind == "send":  # the login's answer to the server's challenge
            self.queue(event[1])
            return
        if kind == "closed":  # the last event: the session is closed
            self.fail(event[1], first=event[2])
            return
        id = event[1] if kind != "unsolicited" else None
        fut = self.waiters.pop(id, None) if id is not None else None
        if fut is None:
            if id is None:
                self.backlog.append(event)
            else:
                self.early.setdefault(id, collections.deque()).append(event)
            self.held_events += 1
            if self.held_events >= _MAX_HELD and not self.reading_paused and self.transport is not None:
                self.reading_paused = True
                self.transport.pause_reading()
        elif not fut.done():
            _resolve(fut, event)

    def eof_received(self) -> bool:
        for event in self.reader.receive_eof():
            if event[0] == "closed":  # connection_lost says so, with what was cut short
                self.eof_error = event[2]
            else:
                self.on_event(event)
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

            self.session.abort(self.reason)
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

    def take_backlog(self) -> Any:
        """The oldest event that names no request (there must be one)."""
        return self._taken(self.backlog.popleft())

    def take_early(self, id: int) -> Any:
        """The oldest event of request ``id`` that came before its caller
        waited for it, or ``None``."""
        queue = self.early.get(id)
        if not queue:
            return None
        event = queue.popleft()
        if not queue:
            del self.early[id]
        return self._taken(event)

    def _taken(self, event: Any) -> Any:
        self.held_events -= 1
        if self.reading_paused and self.held_events < _MAX_HELD // 2:
            self.reading_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
        return event

    # -- deadlines

    def watch(self, fut: asyncio.Future[Any], timeout: float, id: int) -> None:
        """Fails ``fut``, the waiter of request ``id``, with ``TimeoutError`` if
        it still waits ``timeout`` seconds from now (the session then says
        whether the connection goes on)."""
        deadline = self.loop.time() + timeout
        timed = self.timed
        while timed and timed[0][1].done():
            timed.popleft()
        timed.append((deadline, fut, timeout, id))
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
            deadline, fut, timeout, id = entry
            if fut.done():
                continue
            if deadline <= now:
                fut.set_exception(TimeoutError(f"no reply within {timeout:g} seconds"))
                self.waiters.pop(id, None)
                close = self.session.cancel(id) or close
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

    def raise_for(self, id: int) -> None:
        """For a transfer ``id`` whose data goes out: if the server spoke up
        meanwhile (an error in place of the rest, or it closed), raises that."""
        event = self.take_early(id)
        if event is not None:
            _claim(event)  # raises: only failures come while data goes out
            raise RemoteError("bad-response", f"the server answered an upload before its end: {event!r}")
        if self.reason is not None:
            self.raise_closed()

    def raise_closed(self) -> None:
        """For a call on the closed connection: the failure the server sent
        before it closed (busy, auth), if nobody has claimed it yet (that
        answer is more useful than "closed", and the blocking Client gives
        it too); else ``ConnectionAbortedError``."""
        if self.backlog and self.backlog[0][0] in FAILURES:
            _claim(self.take_backlog())  # raises
        raise self.closed_error()

    def fail(self, reason: str, first: BaseException | None = None, graceful: bool = False) -> None:
        """Makes the connection unusable: records why, closes the transport
        (aborts it, unless ``graceful`` and nothing is left to write) and fails
        every waiter: the oldest with ``first`` if given, the others with
        ``ConnectionAbortedError``."""
        if graceful and self.reason is None:
            self.flush()  # what send() handed over goes out before the close
        if self.reason is None:
            self.reason = reason
        self.session.abort(self.reason)
        self.outbuf, self.outbuf_size = [], 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if graceful and not transport.get_write_buffer_size():
                transport.close()
            else:
                transport.abort()
        # (What the server said before it closed stays in backlog and early:
        # the calls it answers raise it, not "closed".)
        if first is not None:
            for fut in self.waiters.values():  # (in the order the calls were made)
                if not fut.done():
                    fut.set_exception(first)
                    break
        self._fail_waiters(self.aborted_error)
        self._wake_drainers()

    def _fail_waiters(self, make: Callable[[], BaseException]) -> None:
        if self.live is not None:
            self.live(("closed", self.reason))
        waiters, self.waiters = self.waiters, {}
        for fut in waiters.values():
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


_Timed = tuple[float, "asyncio.Future[Any]", float, int]

#: Events held for nobody before reading pauses (see _Connection._taken).
_MAX_HELD = 8

#: Queued requests are written at once when they reach this size (asyncio's
#: default high-water mark for a transport's write buffer).
_FLUSH_SIZE = 64 * 1024

#: A loop timer may fire this much before its time (the loop's clock resolution).
_TIMER_SLACK = 0.001


def _claim(event: Any) -> Any:
    """What ``event`` means for the call it answers: a reply's frame, or the
    event itself (a transfer's or the login's step); a failure raises."""
    kind = event[0]
    if kind == "reply":
        return event[2]
    if kind == "unsolicited":
        return event[1]
    if kind in FAILURES:
        raise event_failure(event)
    return event


def _resolve(fut: asyncio.Future[Any], event: Any) -> None:
    """Resolves ``fut`` with what ``event`` means for its caller (:func:`_claim`)."""
    try:
        answer = _claim(event)
    except Exception as exc:  # noqa: BLE001 - a failure event's exception, for the caller
        fut.set_exception(exc)
    else:
        fut.set_result(answer)


def _abandon(conn: _Connection, fut: asyncio.Future[Any], id: int) -> None:
    """The caller waiting on ``fut`` for request ``id`` leaves (cancelled,
    timed out). The session says what that leaves behind: nothing if the
    answer was the last of its request; else its reply is dropped when it
    comes and the connection goes on, or (a command that may still run, a
    transfer or a live command under way) the connection closes."""
    if not fut.done():
        fut.cancel()
    elif not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" log
    conn.waiters.pop(id, None)
    reason = conn.session.cancel(id)
    if reason is not None:
        conn.fail(reason)


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
            if binding is not None:
                conn.session.bind_channel(binding)
            if self._token is not None:
                await self._authenticate(conn)
        except BaseException:
            # Aborted, not closed: a peer that failed the pin or the login
            # is not waited for (a TLS close waits for its close_notify).
            await self._shut(conn, "the handshake failed", graceful=False)
            raise

    async def _make_connection(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        sock = await (self._connect_unix(loop) if self._unix else self._connect_tcp(loop))
        # Every rule of the protocol is the session's; this client moves its
        # bytes on the event loop, keeps the time, and does the disk work.
        conn = _Connection(loop, ClientSession(self.codec, token=self._token))
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
    def _begin(conn: _Connection, id: int, data: bytes, timeout: float | None) -> asyncio.Future[Any]:
        """Writes the bytes of request ``id``; returns the future its answer will resolve."""
        fut: asyncio.Future[Any] = conn.loop.create_future()
        if conn.outbuf or conn.waiters:  # others in flight: join this iteration's writes
            conn.queue(data)
        else:
            conn.transport.write(data)  # type: ignore[union-attr]
        conn.waiters[id] = fut
        if timeout is not None:
            conn.watch(fut, timeout, id)
        return fut

    async def _open_call(self) -> _Connection:
        """The connection, once this call may write on it: no transfer or
        login holds it and its write buffer has room."""
        conn = self._usable()
        if conn.reason is not None:
            conn.raise_closed()
        await self._turn(conn)
        return conn

    async def _answer(self, conn: _Connection, made: tuple[int, bytes], timeout: float | None) -> Any:
        """Writes a request the session ``made``; returns its answer (a
        reply's frame, or a transfer's or login's event), failures raised.
        The caller has its turn (or holds the connection)."""
        if conn.paused:
            await self._writable(conn)
        id, data = made
        fut = self._begin(conn, id, data, timeout)
        try:
            return await fut
        except BaseException:
            _abandon(conn, fut, id)
            raise

    async def _next(self, conn: _Connection, id: int) -> Any:
        """The next event of transfer ``id``, which holds the connection; failures raised."""
        event = conn.take_early(id)
        if event is not None:
            return _claim(event)
        if conn.reason is not None:
            conn.raise_closed()
        return await self._wait(conn, id)

    async def _wait(self, conn: _Connection, id: int) -> Any:
        """Waits, within the client's timeout, for what answers ``id`` next."""
        fut: asyncio.Future[Any] = conn.loop.create_future()
        conn.waiters[id] = fut
        if self.timeout is not None:
            conn.watch(fut, self.timeout, id)
        try:
            return await fut
        except BaseException:
            _abandon(conn, fut, id)
            raise

    async def send(self, body: _Body = b"", header: _Header = None, **fields: Any) -> None:
        """Send one frame (arguments as for :func:`rframe.send_frame`) without waiting for a reply.

        Pair each :meth:`send` with a :meth:`recv`, or use :meth:`request`.
        Returns once the frame is handed to the transport (first waiting,
        within the client's timeout, while its write buffer is full).
        """
        conn = await self._open_call()
        data = conn.session.send(body, header, **fields)
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
        if conn.backlog:
            claimed: Frame = _claim(conn.take_backlog())
            return claimed
        if conn.reason is not None:
            raise conn.closed_error()
        # Left before the frame came, with nothing behind it, the claim is
        # withdrawn: as if never made.
        frame: Frame = await self._wait(conn, conn.session.expect_reply())
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
        # The checks of _open_call only where the connection may not be good: the hot path.
        conn = self._conn
        if (
            conn is None
            or conn.reason is not None
            or conn.paused
            or conn.held is not None
            or self._generation != _fork_generation
        ):
            conn = await self._open_call()
        elif conn.loop_thread_known:
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
            # The same bytes as request(body, None, **fields) (fields is this
            # call's own dict), without unpacking it into keywords and back.
            id, data = conn.session.request(body, fields)
        else:
            id, data = conn.session.request(body, header, **fields)
        # _begin, inlined: a call less per request.
        fut = conn.loop.create_future()
        if conn.outbuf or conn.waiters:  # others in flight: join this iteration's writes
            conn.queue(data)
        else:
            conn.transport.write(data)  # type: ignore[union-attr]
        conn.waiters[id] = fut
        if self.timeout is not None:
            conn.watch(fut, self.timeout, id)
        try:
            frame: Frame = await fut
        except BaseException:
            _abandon(conn, fut, id)
            raise
        return frame

    # ------------------------------------------------------------------ authentication

    async def _authenticate(self, conn: _Connection) -> None:
        # The session answers the challenge itself (an event the connection
        # sends); this waits for the outcome, holding the connection.
        async with self._hold() as held:
            await self._answer(held, held.session.login(), self.timeout)

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
        conn = await self._open_call()
        reply = await self._answer(conn, conn.session.run(header, body), limit)
        return command_result(cmd, reply, timeout=timeout, check=check, text=text)

    async def start(
        self,
        cmd: str | Sequence[str],
        *,
        pty: bool = False,
        term: str | None = None,
        size: tuple[int, int] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
    ) -> AsyncRemoteProcess:
        """Start a command on the server: :meth:`rframe.Client.start` for asyncio.

        Returns an :class:`rframe._async_process.AsyncRemoteProcess`, the
        mirror of :class:`asyncio.subprocess.Process`; ``pty``, ``term`` and
        ``size`` ask for a terminal as there. While the command runs
        the connection is dedicated to it: other calls on this client wait
        (within the client's timeout) until it exits; use another client for
        them meanwhile.
        """
        from ._async_process import AsyncRemoteProcess
        from ._process import start_request

        header = start_request(cmd, pty=pty, term=term, size=size, env=env, cwd=cwd, timeout=timeout)
        conn = await self._open_call()
        id, data = conn.session.start(header)
        proc = AsyncRemoteProcess(conn, cmd, id)
        proc._held = conn.held = conn.loop.create_future()
        conn.live = proc._on_event
        try:
            await self._answer(conn, (id, data), self.timeout)
        except BaseException:
            proc._detach()
            raise
        proc._started = True
        return proc

    # ------------------------------------------------------------------ files

    @contextlib.asynccontextmanager
    async def _hold(self) -> AsyncIterator[_Connection]:
        """Owns the connection for one transfer (or the login): other calls wait meanwhile."""
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

    async def _pick_checksum(self, checksum: str | None) -> str:
        """``checksum``, checked; for ``None``, the fastest the server offers,
        asked once per connection (the session remembers the answer)."""
        if checksum is not None:
            return _files.check_checksum(checksum)
        picked = self._usable().session.default_checksum
        if picked is None:
            async with self._hold() as conn:
                picked = conn.session.default_checksum
                if picked is None:  # nobody asked while this call waited its turn
                    _step(await self._answer(conn, conn.session.features(), self.timeout), "features", conn)
                    picked = conn.session.default_checksum
        assert picked is not None  # the features event sets it
        return picked

    async def upload(
        self,
        local_path: str | os.PathLike[str],
        remote_name: str | None = None,
        *,
        overwrite: bool = False,
        checksum: str | None = None,
        progress: Progress = None,
        resume: bool = False,
    ) -> dict[str, Any]:
        """Send a file to a server started with ``root``: :meth:`rframe.Client.upload`.

        Other calls on this client wait while the transfer runs. Disk reads
        and hashing run in the loop's default executor, a chunk at a time.
        Cancelling an upload before its last chunk is out closes the
        connection, and the server keeps nothing (with ``resume=True``, what
        arrived, for the next ``resume=True`` upload of the name).

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
        path, name = _files.local_source(local_path, remote_name)
        f, size = _files.open_source(path)
        with f:
            checksum = await self._pick_checksum(checksum)
            async with self._hold() as conn:
                stored, digest = await self._put_stream(
                    conn, f, path, name, size, overwrite=overwrite, checksum=checksum, progress=progress, resume=resume
                )
        return _files.transfer_result(stored, size, checksum, digest)

    async def _put_stream(
        self,
        conn: _Connection,
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
        """One file's upload on a held connection: the name the server stored
        it under and its digest."""
        loop = asyncio.get_running_loop()
        session = conn.session
        mtime = _files.mtime_ns(f) if resume else None
        made = session.put(
            name, size, overwrite=overwrite, checksum=checksum, mode=mode, sync=sync, resume_mtime_ns=mtime
        )
        ready = _step(await self._answer(conn, made, self.timeout), "upload-ready", conn)
        buf = bytearray(ready[2])
        offered: int = ready[3]
        done = 0
        try:
            prefix = None
            if offered:
                # The server kept a prefix: is it this file's?
                prefix = await _stoppable(loop, _files.hash_prefix, f, offered, checksum)
                done = session.put_resume(prefix.hexdigest())
                if not done:
                    prefix = None
                    f.seek(0)
            reader = _files.ChunkReader(f, size, checksum, start=done, hash=prefix)
            if progress is not None:
                progress(done, size)
            while done < size:
                n = await loop.run_in_executor(None, reader.read_into, buf)
                if not n:
                    raise OSError(f"{path} shrank from {size} to {done} bytes while it was sent")
                if conn.paused:
                    await self._writable(conn)
                if conn.early or conn.reason is not None:
                    conn.raise_for(made[0])  # the server refused the rest, or closed
                conn.transport.write(session.put_data(memoryview(buf)[:n]))  # type: ignore[union-attr]
                done += n
                if progress is not None:
                    progress(done, size)
            digest: str = reader.hash.hexdigest()
            end = session.put_end(digest)
        except BaseException:
            # Mid-transfer: the server must not take what was sent as whole.
            conn.fail("an upload was interrupted")
            raise
        stored: str = _step(await self._answer(conn, (made[0], end), self.timeout), "transfer-end", conn)[2]
        return stored, digest

    async def download(
        self,
        remote_name: str,
        local_path: str | os.PathLike[str] | None = None,
        *,
        overwrite: bool = False,
        checksum: str | None = None,
        progress: Progress = None,
        resume: bool = False,
    ) -> dict[str, Any]:
        """Fetch a file from a server started with ``root``: :meth:`rframe.Client.download`.

        Other calls on this client wait while the transfer runs. Disk writes
        and hashing run in the loop's default executor; reading from the
        socket pauses while chunks wait for the disk. Cancelling a download
        while data is still coming closes the connection and leaves no file
        behind; once all of it is in and verified, the file is saved even if
        the call is cancelled meanwhile (with ``resume=True``, what arrived
        is kept for the next ``resume=True`` download to the same path). See
        :meth:`upload` for an example.
        """
        path = _files.download_path(remote_name, local_path)
        _files.check_download_target(path, overwrite)
        checksum = await self._pick_checksum(checksum)
        target = _files.LocalFile(path, overwrite=overwrite, checksum=checksum, resume=resume)
        loop = asyncio.get_running_loop()
        committing: asyncio.Future[dict[str, Any]] | None = None
        try:
            # The kept bytes are hashed before the connection is taken: the
            # server's idle timeout does not run meanwhile.
            asked = await _stoppable(loop, target.resume_request)
            async with self._hold() as conn:
                made = conn.session.get(remote_name, checksum=checksum, resume=asked)
                started = _step(await self._answer(conn, made, self.timeout), "download-started", conn)
                size, offset, mtime = started[2], started[3], started[4]
                answered: BaseException | None = None
                try:
                    await loop.run_in_executor(None, target.begin, size, offset, mtime)
                    if progress is not None:
                        progress(offset, size)
                    while True:
                        try:
                            event = await self._next(conn, made[0])
                        except BaseException as exc:
                            answered = exc
                            raise
                        if _step(event, ("file-chunk", "transfer-end"), conn)[0] == "transfer-end":
                            break
                        await loop.run_in_executor(None, target.write, event[2])
                        if progress is not None:
                            progress(target.size, size)
                except BaseException as exc:
                    # What the session said (an error frame in place of the
                    # end, a cut) leaves the stream in step or closed
                    # already; anything else (progress() or the disk raising
                    # too) leaves data coming.
                    if exc is not answered:
                        conn.fail("a download was interrupted")
                    raise
            # The commit (fsync, rename) runs to its end even if this task is
            # cancelled meanwhile; the temporary file goes only after it.
            committing = loop.run_in_executor(None, target.commit, event[6])
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

    async def list_files(self, name: str = "", *, recursive: bool = False) -> list[dict[str, Any]]:
        """The entries of a directory beneath the server's root: :meth:`rframe.Client.list_files`."""
        return await self._listing(name, recursive=recursive)

    async def _listing(self, name: str, *, recursive: bool, checksum: str | None = None) -> list[dict[str, Any]]:
        """A listing; a tree's page after page, until the last."""
        entries: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            conn = await self._open_call()
            if recursive:
                made = conn.session.list(name, recursive=True, checksum=checksum, after=after)
            else:
                made = conn.session.list(name)
            listing: Frame = await self._answer(conn, made, self.timeout)
            page: list[dict[str, Any]] = json.loads(listing.body)
            entries += page
            after = _files.next_page(name, listing.header, page, recursive, after)
            if after is None:
                return entries

    async def upload_tree(
        self,
        local_dir: str | os.PathLike[str],
        remote_dir: str = "",
        *,
        checksum: str | None = None,
        symlinks: str = "refuse",
    ) -> dict[str, Any]:
        """Send a directory tree beneath ``remote_dir``: :meth:`rframe.Client.upload_tree`.

        Other calls on this client wait while the tree goes. Local disk work
        runs in the loop's default executor. Cancelling it closes the
        connection; the files stored by then stay (calling it again skips them).

        >>> import asyncio, tempfile, pathlib
        >>> from rframe import Server
        >>> root, here = tempfile.mkdtemp(), pathlib.Path(tempfile.mkdtemp())
        >>> (here / "src" / "empty").mkdir(parents=True)
        >>> _ = (here / "src" / "a.txt").write_text("hello")
        >>> async def main(address):
        ...     async with AsyncClient(*address) as client:
        ...         sent = await client.upload_tree(here / "src", "dst")
        ...         got = await client.download_tree("dst", here / "copy")
        ...         return sent["files"], sent["dirs"], got["files"]
        >>> with Server(port=0, root=root) as server:
        ...     asyncio.run(main(server.address))
        (1, 1, 1)
        """
        _files.check_symlinks(symlinks)
        loop = asyncio.get_running_loop()
        local = os.fspath(local_dir)
        items = await loop.run_in_executor(None, _files.scan_tree, local, symlinks)
        checksum = await self._pick_checksum(checksum)
        try:
            entries = await self._listing(remote_dir, recursive=True, checksum=checksum)
            existing: list[_files.TreeItem] | None = _files.remote_tree(entries, "copy", remote_dir)
        except FileNotFoundError:
            existing = None
        await loop.run_in_executor(None, _files.local_digests, items, existing, checksum)
        plan = _files.TreePlan(items, existing, checksum)
        join = _files.remote_join
        small, large = plan.inline_and_streamed()
        async with self._hold() as conn:
            session = conn.session
            first: list[tuple[int, bytes]] = []
            if remote_dir.strip("/") and existing is None:
                first.append(session.mkdir(remote_dir.strip("/")))
            # Writable while the tree goes in; their modes at the end.
            first += [session.mkdir(join(remote_dir, d.name), mode=d.mode) for d in plan.unlock]
            await self._pipelined(conn, first)

            async def smalls() -> Any:
                for item in small:
                    data, digest = await loop.run_in_executor(None, _files.read_small, item, checksum)
                    name = join(remote_dir, item.name)
                    yield session.put_inline(
                        name, data, digest, overwrite=True, checksum=checksum, mode=item.mode, sync=False
                    )
                for item in plan.links:
                    yield session.symlink(join(remote_dir, item.name), item.target, overwrite=True)

            try:
                await self._pipelined(conn, smalls())
                for item in large:
                    f, size = _files.open_source(item.path)
                    with f:
                        name = join(remote_dir, item.name)
                        await self._put_stream(
                            conn,
                            f,
                            item.path,
                            name,
                            size,
                            overwrite=True,
                            checksum=checksum,
                            mode=item.mode,
                            sync=False,
                        )
                modes = [session.mkdir(join(remote_dir, d.name), mode=d.mode) for d in reversed(plan.dirs)]
                await self._pipelined(conn, modes)
            except Exception:
                # What was stored before the failure is made durable all the
                # same (a refused file leaves the connection in step).
                if conn.reason is None:
                    with contextlib.suppress(Exception):
                        await self._answer(conn, session.sync(), self.timeout)
                raise
            await self._answer(conn, session.sync(), self.timeout)
        return plan.result(local, remote_dir)

    async def _pipelined(self, conn: _Connection, requests: Any) -> None:
        """Sends requests back to back on a held connection, at most
        ``TREE_WINDOW`` waiting for replies; raises the first failure once
        every reply is in. Interrupted, it closes the connection."""
        waiting: collections.deque[tuple[int, asyncio.Future[Any]]] = collections.deque()
        failure: BaseException | None = None

        async def settle() -> None:
            nonlocal failure
            id, fut = waiting.popleft()
            try:
                await fut
            except Exception as exc:  # noqa: BLE001 - the first failure is raised at the end
                _abandon(conn, fut, id)
                if conn.reason is not None:
                    raise
                failure = failure or exc

        async def each() -> Any:
            if hasattr(requests, "__aiter__"):
                async for made in requests:
                    yield made
            else:
                for made in requests:
                    yield made

        try:
            async for id, data in each():
                if len(waiting) >= _files.TREE_WINDOW:
                    await settle()
                if conn.paused:
                    await self._writable(conn)
                waiting.append((id, self._begin(conn, id, data, self.timeout)))
            while waiting:
                await settle()
        except BaseException:
            for id, fut in waiting:
                _abandon(conn, fut, id)
            raise
        if failure is not None:
            raise failure

    async def download_tree(
        self,
        remote_dir: str,
        local_dir: str | os.PathLike[str],
        *,
        checksum: str | None = None,
        symlinks: str = "refuse",
    ) -> dict[str, Any]:
        """Fetch the tree beneath ``remote_dir`` into ``local_dir``: :meth:`rframe.Client.download_tree`.

        See :meth:`upload_tree` for an example.
        """
        _files.check_symlinks(symlinks)
        checksum = await self._pick_checksum(checksum)
        loop = asyncio.get_running_loop()
        local = os.fspath(local_dir)
        entries = await self._listing(remote_dir, recursive=True, checksum=checksum)
        items = _files.remote_tree(entries, symlinks, remote_dir)
        _files.check_tree_names(items)
        mirror = await loop.run_in_executor(None, _files.LocalTree, local, items, checksum)
        files = iter(mirror.plan.files)
        # (id, item, receiving file) of each get sent, in the order of the replies
        pending: collections.deque[tuple[int, _files.TreeItem, _files.LocalFile]] = collections.deque()

        async with self._hold() as conn:
            session = conn.session
            try:
                while True:
                    while len(pending) < _files.TREE_WINDOW and (item := next(files, None)) is not None:
                        target = await loop.run_in_executor(None, mirror.receiver, item)
                        pending.append((-1, item, target))
                        id, data = session.get(_files.remote_join(remote_dir, item.name), checksum=checksum)
                        pending[-1] = (id, item, target)
                        if conn.paused:
                            await self._writable(conn)
                        conn.queue(data)
                    if not pending:
                        break
                    id, item, target = pending[0]
                    event = await self._next(conn, id)
                    kind = _step(event, ("download-started", "file-chunk", "transfer-end"), conn)[0]
                    if kind == "file-chunk":
                        await loop.run_in_executor(None, target.write, event[2])
                    elif kind == "transfer-end":
                        await loop.run_in_executor(None, mirror.save, target, event[6], item)
                        pending.popleft()
            except BaseException:
                if pending:
                    conn.fail("a tree download was interrupted")
                raise
            finally:
                for _id, _item, target in pending:
                    target.discard()
        await loop.run_in_executor(None, _files.sync_path, local)
        await loop.run_in_executor(None, mirror.finish)
        return mirror.plan.result(local, remote_dir)


async def _stoppable(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args, stop)`` in the loop's executor: a long hashing, which a
    cancelled caller tells to stop at its next chunk (a thread cannot be
    cancelled, and would go on reading the file for nobody)."""
    stop = threading.Event()
    try:
        return await loop.run_in_executor(None, functools.partial(fn, *args, stop))
    except BaseException:
        stop.set()
        raise


def _step(answer: Any, kind: str | tuple[str, ...], conn: _Connection) -> Any:
    """``answer``, a transfer's next event, which must be ``kind``. Anything
    else is a frame that came before the transfer began and that nobody
    claimed (a reply to a ``send``): the transfer took it for its own, and
    the connection is out of step."""
    if isinstance(answer, tuple) and (answer[0] == kind if isinstance(kind, str) else answer[0] in kind):
        return answer
    conn.fail("the server broke the file transfer protocol")
    raise RemoteError("bad-response", f"expected a file transfer's {kind}, got {answer!r}")


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
