"""Live commands on :class:`rframe.AsyncClient`: :class:`AsyncRemoteProcess`.

The asyncio mirror of :class:`rframe.RemoteProcess` (and of
:class:`asyncio.subprocess.Process`): the session's ``output`` and ``exit``
events reach the process through its connection's ``live`` hook; output
nobody reads is held up to :data:`rframe._process.OUTPUT_BOUND` bytes a
stream, past which the connection stops reading (and the server, the
command's pipes).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ._process import OUTPUT_BOUND, _Controls
from ._protocol import FAILURES, event_failure

if TYPE_CHECKING:
    from ._async import _Connection
    from ._rframe import ClientSession

__all__ = ["AsyncRemoteProcess"]


class AsyncOutput:
    """One stream of a live command: ``await read(n)``, ``await readline()``, ``async for line in``."""

    def __init__(self, proc: AsyncRemoteProcess) -> None:
        self._proc = proc
        self._buf = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None

    def _feed(self, data: bytes) -> None:
        self._buf += data
        self._wake()

    def _feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._proc._conn.loop.create_future()
        await self._waiter

    def _cut(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._proc._maybe_resume()
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all of them to the end with ``n < 0``); ``b""`` at the end."""
        if n < 0:
            while not self._eof:
                self._proc._maybe_resume(force=True)
                await self._wait()
            return self._cut(len(self._buf))
        while not self._buf and not self._eof:
            await self._wait()
        return self._cut(n)

    async def readline(self) -> bytes:
        """The next line, with its ``\\n`` (without one at the end of the stream)."""
        while b"\n" not in self._buf and not self._eof:
            if len(self._buf) >= OUTPUT_BOUND:
                self._proc._maybe_resume(force=True)
            await self._wait()
        end = self._buf.find(b"\n")
        return self._cut(end + 1 if end >= 0 else len(self._buf))

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    def __aiter__(self) -> AsyncOutput:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line


class AsyncStdin:
    """The live command's stdin: ``write()`` (then ``await drain()``), ``close()`` ends the input."""

    def __init__(self, proc: AsyncRemoteProcess) -> None:
        self._proc = proc
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ValueError("write to closed stdin")
        if self._proc._done:
            raise BrokenPipeError("the command has exited")
        self._proc._send(self._proc._conn.session.stdin(data))

    async def drain(self) -> None:
        """Waits while the connection's write buffer is full."""
        conn = self._proc._conn
        while conn.paused and conn.reason is None:
            fut: asyncio.Future[None] = conn.loop.create_future()
            conn.drain_waiters.append(fut)
            await fut
        if conn.reason is not None and not self._proc._done:
            raise conn.aborted_error()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._proc._done:
                self._proc._send(self._proc._conn.session.stdin(b"", eof=True))

    def is_closing(self) -> bool:
        return self._closed


class AsyncRemoteProcess(_Controls):
    """A command running on the server, for asyncio: made by :meth:`rframe.AsyncClient.start`.

    ``stdout``/``stderr``: ``await read(n)``, ``await readline()``, ``async
    for line in proc.stdout``; ``stdin.write()`` and ``await
    stdin.drain()``, ``stdin.close()``; ``send_signal``, ``terminate``,
    ``kill``, ``resize``; ``await wait()``, ``await communicate(input)``,
    ``returncode``. ``async with`` kills it (and waits) if it still runs at
    the end. Cancelling a task that awaits the process kills nothing.
    While it runs, the client's other calls wait for it to exit.
    """

    def __init__(self, conn: _Connection, args: Any, id: int) -> None:
        self.args = args
        self._conn = conn
        self._id = id
        self.returncode: int | None = None
        self.duration: float | None = None
        self.timed_out = False
        self._failure: BaseException | None = None
        #: The server's refusal of a control frame (a signal, a resize), raised by the next one.
        self._refused: BaseException | None = None
        self._started = False
        self._paused = False
        self._exited: asyncio.Future[None] = conn.loop.create_future()
        self._held: asyncio.Future[None] | None = None
        self.stdout = AsyncOutput(self)
        self.stderr = AsyncOutput(self)
        self.stdin = AsyncStdin(self)

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"returncode: {self.returncode}"
        return f"<rframe.AsyncRemoteProcess {self.args!r} {state}>"

    @property
    def _done(self) -> bool:
        return self._exited.done()

    # -- the connection's hook

    def _on_event(self, event: Any) -> bool:
        """An event of the connection; True if it is this process's."""
        kind = event[0]
        if kind == "closed":
            self._finish(ConnectionAbortedError(f"the connection was closed ({event[1]})"))
            return False  # the connection fails too (its transport is closed, its calls told)
        if event[1] != self._id:
            return False
        if kind == "started":
            self._started = True  # output may follow in the same read
            return False  # for start(), waiting for it
        if not self._started:
            return False
        if kind == "output":
            (self.stdout if event[2] == 1 else self.stderr)._feed(event[3])
            if len(self.stdout._buf) >= OUTPUT_BOUND or len(self.stderr._buf) >= OUTPUT_BOUND:
                self._pause()
        elif kind == "exit":
            _, _, self.returncode, self.duration, self.timed_out, _ = event
            self._finish(None)
        elif kind in FAILURES:
            if self._conn.session.live == self._id:
                # A refused signal (or resize): the command runs on; the next
                # control call raises it.
                self._refused = event_failure(event)
                return True
            self._finish(event_failure(event))
        else:
            return False
        return True

    def _finish(self, failure: BaseException | None) -> None:
        if self._done:
            return
        self._failure = failure
        self.stdout._feed_eof()
        self.stderr._feed_eof()
        self._exited.set_result(None)
        self._detach()
        self._maybe_resume(force=True)

    def _detach(self) -> None:
        conn = self._conn
        if conn.live == self._on_event:
            conn.live = None
        held, self._held = self._held, None
        if held is not None:
            if conn.held is held:
                conn.held = None
            if not held.done():
                held.set_result(None)

    def _abandon(self, reason: str) -> None:
        """Drops the connection if the command may still run: the server kills
        it, and nothing waits for a host that may not answer."""
        if not self._done:
            self._conn.fail(reason)

    def _pause(self) -> None:
        transport = self._conn.transport
        if not self._paused and transport is not None and not transport.is_closing():
            self._paused = True
            transport.pause_reading()

    def _maybe_resume(self, force: bool = False) -> None:
        if not self._paused:
            return
        if force or (len(self.stdout._buf) < OUTPUT_BOUND // 2 and len(self.stderr._buf) < OUTPUT_BOUND // 2):
            self._paused = False
            conn = self._conn
            if conn.transport is not None and not conn.transport.is_closing() and not conn.reading_paused:
                conn.transport.resume_reading()

    # -- writing

    def _send(self, data: bytes) -> None:
        refused, self._refused = self._refused, None
        if refused is not None:
            raise refused
        self._conn.queue(data)

    def _session(self) -> ClientSession:
        return self._conn.session

    # -- waiting

    async def wait(self) -> int:
        """Waits for the command to exit: its returncode."""
        await asyncio.shield(self._exited)
        if self.returncode is None:
            assert self._failure is not None
            raise self._failure
        return self.returncode

    async def communicate(self, input: bytes | None = None) -> tuple[bytes, bytes]:
        """Sends ``input`` and the end of input, reads all output, waits: ``(stdout, stderr)``."""
        if input and not self.stdin.is_closing():
            self.stdin.write(input)
        self.stdin.close()
        out, err = await asyncio.gather(self.stdout.read(), self.stderr.read())
        await self.wait()
        return out, err

    async def __aenter__(self) -> AsyncRemoteProcess:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if not self._done:
            self.stdout._buf.clear()
            self.stderr._buf.clear()
            self.kill()
            while not self._done:
                self.stdout._buf.clear()
                self.stderr._buf.clear()
                self._maybe_resume(force=True)
                waiter = asyncio.ensure_future(self.stdout._wait())
                await asyncio.wait([waiter, self._exited], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
