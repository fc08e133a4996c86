"""Live commands on the blocking :class:`rframe.Client`: :class:`RemoteProcess`.

The protocol is the session's (``ClientSession.start``, its ``output`` and
``exit`` events); this is its driver: a demultiplexer that reads the
connection's events and keeps each stream's bytes until they are read.
"""

from __future__ import annotations

import io
import os
import select
import signal as _signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _rframe
from ._protocol import FAILURES, run_request
from ._rframe import DEFAULT_TERM, DEFAULT_TERMINAL_SIZE, STDIN_CHUNK

if TYPE_CHECKING:
    from ._client import Client
    from ._rframe import ClientSession

__all__ = ["RemoteProcess", "start_request", "OUTPUT_BOUND"]

#: Bytes of one stream's output held while nobody reads it; past this, the
#: connection is not read until they are (and the server stops reading the
#: command's pipes: the command blocks on its write, as with a full pipe).
OUTPUT_BOUND = 1 << 20


def start_request(
    cmd: str | Sequence[str],
    *,
    pty: bool = False,
    term: str | None = None,
    size: tuple[int, int] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """The ``start`` request's header for these arguments (``ValueError`` for bad ones).

    >>> start_request(["cat"], timeout=5)
    {'op': 'start', 'cmd': ['cat'], 'timeout': 5.0}
    """
    header, _, _ = run_request(cmd, timeout=timeout, env=env, cwd=cwd)
    header["op"] = "start"
    if pty:
        header["pty"] = True
        header["term"] = term or os.environ.get("TERM") or DEFAULT_TERM
        header["columns"], header["lines"] = window_size(*size) if size is not None else _terminal_size()
    elif term is not None or size is not None:
        raise ValueError("term and size are a terminal's: start(..., pty=True)")
    return header


def window_size(columns: int, lines: int) -> tuple[int, int]:
    """``(columns, lines)`` checked: whole numbers from 1 to 65535 (``ValueError`` otherwise).

    >>> window_size(80, 24)
    (80, 24)
    """
    for name, n in (("columns", columns), ("lines", lines)):
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 0xFFFF:
            raise ValueError(f"{name} must be a whole number from 1 to 65535, got {n!r}")
    return columns, lines


def _terminal_size() -> tuple[int, int]:
    try:
        got = os.get_terminal_size()
    except OSError:
        return DEFAULT_TERMINAL_SIZE
    if got.columns <= 0 or got.lines <= 0:  # a terminal that does not know its size
        return DEFAULT_TERMINAL_SIZE
    return got.columns, got.lines


def signal_name(sig: int | str) -> str:
    """A signal as the protocol names it: ``signal.SIGINT`` or ``"SIGINT"`` -> ``"INT"``;
    ``ValueError`` for one a live command may not be sent."""
    return _rframe.signal_name(_signal.Signals(sig).name if isinstance(sig, int) else str(sig))


class _OutputRaw(io.RawIOBase):
    """One stream of a live command, read from the demultiplexer."""

    def __init__(self, proc: RemoteProcess, fd: int) -> None:
        self._proc = proc
        self._fd = fd

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self._proc._take_into(self._fd, b)


class _Stdin(io.RawIOBase):
    """The live command's stdin: each write goes out at once (``flush`` does nothing);
    ``close()`` sends the end of input."""

    def __init__(self, proc: RemoteProcess) -> None:
        self._proc = proc

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.closed:
            raise ValueError("write to closed stdin")
        data = bytes(b)
        self._proc._send_stdin(data, eof=False)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._proc._send_stdin(b"", eof=True)
            finally:
                super().close()


class _Controls:
    """The control calls of a live command, the same for both clients: each
    is a frame the session makes, sent by the class's ``_send``."""

    @property
    def _done(self) -> bool:
        raise NotImplementedError

    def _session(self) -> ClientSession:
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def send_signal(self, sig: int | str) -> None:
        """Send ``sig`` (``signal.SIGINT``, ``"INT"``, ...) to the command's process
        group; nothing once it exited. Signals other than INT, TERM, KILL, HUP,
        QUIT, USR1, USR2 and WINCH raise ``ValueError``."""
        name = signal_name(sig)
        if not self._done:
            self._send(self._session().signal(name))

    def terminate(self) -> None:
        """SIGTERM to the command's process group."""
        self.send_signal("TERM")

    def kill(self) -> None:
        """SIGKILL to the command's process group."""
        self.send_signal("KILL")

    def resize(self, columns: int, lines: int) -> None:
        """The command's terminal (``pty=True``) is now ``columns`` x ``lines``."""
        columns, lines = window_size(columns, lines)
        if not self._done:
            self._send(self._session().resize(columns, lines))


class RemoteProcess(_Controls):
    """A command running on the server, shaped like :class:`subprocess.Popen`.

    Made by :meth:`rframe.Client.start`. ``stdout`` and ``stderr`` are binary
    readable streams (``read``, ``read1``, ``readline``, iteration by lines)
    that give the command's output as it writes it; ``stdin`` is writable
    (``close()`` ends the input). ``send_signal``, ``terminate`` and ``kill``
    reach the command's whole process group on the server; ``wait``,
    ``poll``, ``returncode`` (negative: killed by that signal) and
    ``communicate`` are :class:`subprocess.Popen`'s. Leaving a ``with`` block
    with the command still running kills it and waits.

    While the command runs the client's connection is dedicated to it: other
    calls on that client raise ``RuntimeError`` until it exits (use another
    :class:`rframe.Client` meanwhile). As with ``Popen``'s pipes, output
    nobody reads is held only up to :data:`OUTPUT_BOUND` bytes a stream;
    past that the command waits for its reader, so read both streams (two
    threads) or use :meth:`communicate`, which keeps everything.

    >>> from rframe import Client, Server
    >>> with Server(port=0) as server, Client(*server.address) as client:
    ...     with client.start("read name; echo hi $name; echo oops >&2") as proc:
    ...         _ = proc.stdin.write(b"you\\n")
    ...         proc.stdout.readline(), proc.wait(), proc.stderr.read()
    (b'hi you\\n', 0, b'oops\\n')
    """

    def __init__(self, client: Client, args: Any, id: int) -> None:
        self.args = args
        self._client = client
        self._id = id
        self.returncode: int | None = None
        #: Seconds the command ran on the server (once it exited), and whether its time limit killed it.
        self.duration: float | None = None
        self.timed_out = False
        self._cond = threading.Condition()
        self._buffers = {1: bytearray(), 2: bytearray()}
        self._reading = False
        #: Threads in the condition's wait: only they need a notify, and one
        #: on every frame adds to each line's latency.
        self._waiting = 0
        self._unbounded = False
        self._discard = False
        self._failure: BaseException | None = None
        self.stdin: io.RawIOBase = _Stdin(self)
        self.stdout = io.BufferedReader(_OutputRaw(self, 1))
        self.stderr = io.BufferedReader(_OutputRaw(self, 2))

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"returncode: {self.returncode}"
        return f"<rframe.RemoteProcess {self.args!r} {state}>"

    # ------------------------------------------------------------------ reading

    @property
    def _done(self) -> bool:
        return self.returncode is not None or self._failure is not None

    def _take_into(self, fd: int, b: Any) -> int:
        """Moves up to ``len(b)`` bytes of stream ``fd`` into ``b`` (a writable
        buffer), waiting for one at least; 0 at its end. (One copy: from the
        frame, or from the stream's buffer, into ``b``.)"""
        # Checked here, before the wait (the session checks again, for its
        # copy): the client takes any failure of a read as the connection's.
        with memoryview(b) as view:
            if view.readonly or not view.c_contiguous:
                raise TypeError(f"readinto() needs a writable, contiguous buffer, not {type(b).__name__}")
        with self._cond:
            buf = self._buffers[fd]
            while not buf and not self._done:
                n = self._pump(fd, None, b)
                if n:
                    return n
            if not buf and self._failure is not None and self.returncode is None:
                raise self._failure
            with memoryview(b) as target, target.cast("B") as target, memoryview(buf) as source:
                n = min(len(buf), len(target))
                target[:n] = source[:n]
            del buf[:n]
            if self._waiting:
                self._cond.notify_all()
            return n

    def _pump(self, want: int | None, deadline: float | None, into: Any = None) -> int:
        """Reads one event from the connection (the condition held), or
        waits while another thread does, or while a stream other than
        ``want`` holds its bound (its reader must take some first). Output
        of ``want`` that fits ``into``, while nothing of that stream is held,
        goes straight there: the number of bytes put there (else 0)."""
        if self._reading or (
            not self._unbounded and any(len(b) >= OUTPUT_BOUND for fd, b in self._buffers.items() if fd != want)
        ):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._waiting += 1
            try:
                self._cond.wait(remaining)
            finally:
                self._waiting -= 1
            return 0
        # The usual case, one reader waiting for its stream with nothing of
        # it held: the session puts its bytes straight into the reader's
        # buffer (the stream's is empty, and only this reader adds to it).
        # Decided before the read: output a `with` block's exit discards
        # meanwhile may still reach this reader, whose stream then closes.
        # Python code run between the socket and the reader, cold after
        # the wait, was a large part of a line's latency on the client.
        direct = None
        if into is not None and want is not None and not self._discard and not self._buffers[want]:
            direct = (into, (self._id, want))
        self._reading = True
        self._cond.release()
        try:
            event = self._read_event(deadline, direct)
        finally:
            self._cond.acquire()
            self._reading = False
            if self._waiting:
                self._cond.notify_all()
        if event is None:
            return 0
        if type(event) is int:
            return event
        self._on_event(event)
        return 0

    def _read_event(self, deadline: float | None, direct: tuple[Any, tuple[int, int]] | None = None) -> Any:
        """The next event of the connection; ``None`` if ``deadline`` passed first.
        ``direct``: ``(into, (id, fd))``, output of that stream that fits goes
        into ``into``, and its length comes back instead."""
        client = self._client
        sock = client._require_sock()
        if deadline is not None:
            pending = sock.pending() if hasattr(sock, "pending") else 0
            if not pending and not select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return None
        # A command may be silent for as long as it likes: no timeout while
        # a frame is awaited (Ctrl-C still interrupts). A plain socket's own
        # stays as it is, for the writes of other threads meanwhile; an
        # ssl.SSLSocket's is lifted for the read (it has one for both ways).
        try:
            return client._event(untimed=True, direct=direct)
        except BaseException as exc:
            self._failure = exc
            raise

    def _on_event(self, event: Any) -> None:
        kind = event[0]
        if kind == "output" and event[1] == self._id:
            if not self._discard:
                self._buffers[event[2]] += event[3]
        elif kind == "exit" and event[1] == self._id:
            _, _, self.returncode, self.duration, self.timed_out, _ = event
        elif kind in FAILURES:
            failure = self._client._failure(event)
            if self._client._require_session().live != self._id:
                self._failure = failure  # the command is gone with the connection
            raise failure
        else:
            raise RuntimeError(f"unexpected event while a command runs: {event!r}")

    # ------------------------------------------------------------------ writing

    def _send(self, data: bytes) -> None:
        with self._client._call():
            self._client._write(data)

    def _send_stdin(self, data: bytes, eof: bool) -> None:
        # A frame at a time: the client's timeout bounds each frame's send
        # (progress), not a whole write, which a command may take in slowly.
        view = memoryview(data)
        while True:
            if self._done:
                if eof and not view:
                    return
                raise BrokenPipeError(f"the command has exited ({self!r})")
            piece, view = view[:STDIN_CHUNK], view[STDIN_CHUNK:]
            last = not view
            self._send(self._client._require_session().stdin(piece, eof=eof and last))
            if last:
                return

    def _session(self) -> ClientSession:
        return self._client._require_session()

    # ------------------------------------------------------------------ waiting

    def poll(self) -> int | None:
        """The returncode if the command has exited, else ``None`` (reads what already arrived)."""
        with self._cond:
            while not self._done and not self._reading:
                before = (len(self._buffers[1]), len(self._buffers[2]))
                self._pump(None, time.monotonic())
                if (len(self._buffers[1]), len(self._buffers[2])) == before and not self._done:
                    break
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the command to exit; its returncode. ``subprocess.TimeoutExpired``
        after ``timeout`` seconds (the command runs on). Output is kept for its
        readers meanwhile, up to :data:`OUTPUT_BOUND` a stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._done:
                if deadline is not None and time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]
                self._pump(None, deadline)
            if self.returncode is None:
                assert self._failure is not None
                raise self._failure
            return self.returncode

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Send ``input`` (then the end of input), read all the output, wait
        for the exit: ``(stdout, stderr)``, as ``Popen.communicate``."""
        writer: threading.Thread | None = None
        errors: list[BaseException] = []
        if input and not self.stdin.closed:

            def feed() -> None:
                try:
                    self.stdin.write(input)
                    self.stdin.close()
                except BaseException as exc:  # noqa: BLE001 - raised by communicate
                    errors.append(exc)

            writer = threading.Thread(target=feed, name="rframe-stdin", daemon=True)
            writer.start()
        elif not self.stdin.closed:
            self.stdin.close()
        self._unbounded = True
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            out, err = bytes(self._buffers[1]), bytes(self._buffers[2])
            raise subprocess.TimeoutExpired(self.args, exc.timeout, out, err) from None
        if writer is not None:
            writer.join()
        if errors and not isinstance(errors[0], BrokenPipeError):
            raise errors[0]
        return self.stdout.read(), self.stderr.read()

    # ------------------------------------------------------------------ with

    def __enter__(self) -> RemoteProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if not self._done:
                self._discard = True
                with self._cond:
                    for buf in self._buffers.values():
                        buf.clear()
                self.kill()
                self.wait()
        except (OSError, ValueError):
            pass
        finally:
            for stream in (self.stdout, self.stderr):
                stream.close()
            if not self.stdin.closed:
                try:
                    self.stdin.close()
                except (OSError, ValueError):
                    io.RawIOBase.close(self.stdin)
