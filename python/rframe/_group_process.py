"""Live commands on many servers: ``group.start(cmd)`` and each host's output lines as they are written.

One command runs on every host of a group (:meth:`AsyncGroup.start`,
:meth:`Group.start`); its output reaches the caller line by line, each line
tagged with its host and stream (:class:`OutputLine`), in the order the
lines arrive. The lines wait for their reader in a bounded buffer: when
nobody reads, the hosts' commands block on their writes (as a local pipe
would make them) rather than the client holding their output.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import CommandError, CommandTimeout
from ._process import signal_name

if TYPE_CHECKING:
    from ._async import AsyncClient
    from ._async_process import AsyncOutput, AsyncRemoteProcess
    from ._group import AsyncGroup, Group, GroupResult

__all__ = ["LINE_MAX", "AsyncGroupProcess", "GroupProcess", "OutputLine"]

#: The longest line handed over whole; a longer one comes in pieces of this size.
LINE_MAX = 65536
#: Lines held for the reader, all hosts together, before the hosts' output waits.
LINES_HELD = 1024


class OutputLine(NamedTuple):
    """One line of one host's output: ``host`` (its name in the group), ``fd``
    (1 for stdout, 2 for stderr) and ``data``: the line with its ``b"\\n"``
    (the last bytes of a stream may lack one; a line longer than
    :data:`LINE_MAX` comes in pieces)."""

    host: str
    fd: int
    data: bytes


class AsyncGroupProcess:
    """One command running on every host of an :class:`rframe.AsyncGroup`.

    Made by :meth:`rframe.AsyncGroup.start`. ``async for line in procs``
    gives each host's output as :class:`OutputLine` tuples, in the order they
    arrive, and ends when every host's command has ended (or failed);
    :meth:`wait` then gives a :class:`rframe.GroupResult` of return codes
    (or of the exception each failed host raised: a
    :class:`rframe.CommandTimeout` past ``timeout``, a
    :class:`rframe.CommandError` for a non-zero status with ``check=True``).
    :meth:`send_signal`, :meth:`terminate` and :meth:`kill` reach every
    command still running. ``async with`` (or :meth:`close`) kills those
    still running at its end.

    >>> import asyncio
    >>> from rframe import AsyncGroup, Server
    >>> async def main(hosts):
    ...     async with AsyncGroup(hosts, timeout=10) as group:
    ...         async with await group.start("echo one; echo two >&2") as procs:
    ...             lines = sorted([(line.fd, line.data) async for line in procs])
    ...             return lines, dict(await procs.wait())
    >>> with Server("127.0.0.2", 0) as a:
    ...     asyncio.run(main([a.address]))
    ([(1, b'one\\n'), (2, b'two\\n')], {'127.0.0.2:...': 0})
    """

    def __init__(
        self,
        group: AsyncGroup,
        cmd: str | Sequence[str],
        run: Mapping[str, Any],
        input: bytes | None,
        check: bool,
        fail_fast: bool,
    ) -> None:
        self.args = cmd
        #: Each host's process, once it has started.
        self.processes: dict[str, AsyncRemoteProcess] = {}
        self._run = run
        self._input = input
        self._check = check
        self._held: collections.deque[OutputLine] = collections.deque()
        self._ended: list[tuple[str, Any]] = []  # (host, result) as hosts end, for the CLI
        self._readable = asyncio.Event()  # lines held, a host ended, or the end
        self._room = asyncio.Event()  # fewer than LINES_HELD lines held
        self._room.set()
        self._discard = False  # nobody will read: lines are dropped
        self._stopping: str | None = None  # a signal that ends commands was sent: start no more
        self._stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(
            group._on_all(self._on_host, fail_fast, admit=self._admit, stop=self._stop, on_done=self._on_done)
        )
        self._task.add_done_callback(lambda _: self._readable.set())

    def __repr__(self) -> str:
        state = "done" if self._task.done() else "running"
        return f"<rframe.AsyncGroupProcess {self.args!r} {state}>"

    # -- each host

    def _admit(self, host: str) -> BaseException | None:
        if self._stopping is None:
            return None
        from ._group import HostCancelled

        return HostCancelled(f"{host}: not started: the others were sent SIG{self._stopping}")

    async def _on_host(self, client: AsyncClient, host: str) -> int:
        proc = await client.start(self.args, **self._run)
        self.processes[host] = proc
        try:
            if self._stopping is not None:  # sent while this one was starting
                proc.send_signal(self._stopping)
            # Reading first: a quick command may have exited (and closed its
            # stdin) before its input goes.
            pumps = asyncio.gather(self._pump(host, 1, proc.stdout), self._pump(host, 2, proc.stderr))
            if self._input and not proc._done:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(self._input)
            proc.stdin.close()
            await pumps
            code = await proc.wait()
        except BaseException:
            # Cancelled (fail_fast, the host's deadline, close()) or failed:
            # the connection is dropped, which kills the command on the
            # server without waiting for a host that may not answer.
            proc._abandon("the group stopped waiting for the command")
            raise
        if proc.timed_out:
            limit = self._run["timeout"]  # or the server's own limit
            raise CommandTimeout(
                self.args, limit if limit is not None else proc.duration or 0.0
            )  # output went out as lines
        if self._check and code:
            raise CommandError(code, self.args)
        return code

    def _on_done(self, host: str, result: Any) -> None:
        self._ended.append((host, result))
        self._readable.set()

    async def _pump(self, host: str, fd: int, stream: AsyncOutput) -> None:
        """One stream of one host, cut into lines."""
        buf = bytearray()
        while chunk := await stream.read(LINE_MAX):
            buf += chunk
            start = 0
            while True:
                end = buf.find(b"\n", start, start + LINE_MAX)
                if end >= 0:
                    end += 1
                elif len(buf) - start >= LINE_MAX:
                    end = start + LINE_MAX  # a piece of a long line
                else:
                    break
                await self._put(OutputLine(host, fd, bytes(buf[start:end])))
                start = end
            del buf[:start]
        if buf:
            await self._put(OutputLine(host, fd, bytes(buf)))

    async def _put(self, line: OutputLine) -> None:
        await self._room.wait()
        if self._discard:
            return
        self._held.append(line)
        if len(self._held) >= LINES_HELD:
            self._room.clear()
        self._readable.set()

    # -- reading

    async def _batch(self) -> tuple[list[OutputLine], list[tuple[str, Any]]]:
        """The lines held now, and the hosts ended since the last batch
        (waiting for one or the other); two empty lists at the end."""
        while not self._held and not self._ended and not self._task.done():
            self._readable.clear()
            await self._readable.wait()
        lines = list(self._held)
        self._held.clear()
        self._room.set()
        ended, self._ended = self._ended, []
        return lines, ended

    async def __aiter__(self) -> AsyncIterator[OutputLine]:
        while True:
            lines, ended = await self._batch()
            if not lines and not ended:
                return
            for line in lines:
                yield line

    # -- control

    def send_signal(self, sig: int | str) -> None:
        """Sends ``sig`` (``signal.SIGINT``, ``"INT"``, ...) to every host's
        command still running. After INT, TERM, KILL, HUP or QUIT, hosts whose
        turn has not come (``max_concurrency``) are not started: they report
        :class:`rframe.HostCancelled`; one starting meanwhile gets the signal
        as soon as it has started."""
        name = signal_name(sig)  # ValueError for one the server refuses, before any host is signalled
        if name in _ENDING:
            self._stopping = name
        for proc in list(self.processes.values()):
            # A host that cannot be signalled (its connection gone, the
            # server refusing) says so in its result.
            with contextlib.suppress(Exception):
                proc.send_signal(name)

    def terminate(self) -> None:
        """SIGTERM to every command still running."""
        self.send_signal("TERM")

    def kill(self) -> None:
        """SIGKILL to every command still running."""
        self.send_signal("KILL")

    # -- the end

    async def wait(self) -> GroupResult:
        """Waits for every host: a :class:`rframe.GroupResult` of return codes
        (negative: killed by that signal) or exceptions. Output not read yet
        is dropped from then on (read it first, with ``async for``), so that
        waiting never waits for a reader. With ``check=True``, raises
        :class:`rframe.GroupError` if any host failed."""
        self._drop_output()
        result = await asyncio.shield(self._task)
        if self._check:
            result.raise_for_failures()
        return result

    def _drop_output(self) -> None:
        self._discard = True
        self._held.clear()
        self._room.set()

    async def close(self) -> None:
        """Kills the commands still running (their connections are dropped)
        and starts no more; :meth:`wait` then reports those hosts as
        :class:`rframe.HostCancelled`. Calling it again does nothing."""
        self._drop_output()
        if not self._stop.done():
            self._stop.set_result("the group's live command was closed")
        await asyncio.shield(self._task)

    async def __aenter__(self) -> AsyncGroupProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


#: The signals after which a group starts no more hosts.
_ENDING = frozenset({"INT", "TERM", "KILL", "HUP", "QUIT"})


class GroupProcess:
    """One command running on every host of an :class:`rframe.Group`: the
    blocking :class:`AsyncGroupProcess`.

    Made by :meth:`rframe.Group.start`. ``for line in procs`` gives the
    :class:`OutputLine` tuples as they arrive; :meth:`wait`,
    :meth:`send_signal`, :meth:`terminate`, :meth:`kill` and ``with`` are
    :class:`AsyncGroupProcess`'s.

    >>> from rframe import Group, Server
    >>> with Server("127.0.0.2", 0) as a, Group([a.address], timeout=10) as group:
    ...     with group.start("echo hi; exit 3") as procs:
    ...         [line.data for line in procs], list(procs.wait().values())
    ([b'hi\\n'], [3])
    """

    def __init__(self, group: Group, procs: AsyncGroupProcess) -> None:
        self._group = group
        self._procs = procs

    @property
    def args(self) -> str | Sequence[str]:
        return self._procs.args

    def __repr__(self) -> str:
        return repr(self._procs).replace("AsyncGroupProcess", "GroupProcess")

    def _batches(self) -> Iterator[tuple[list[OutputLine], list[tuple[str, Any]]]]:
        while True:
            lines, ended = self._group._call(self._procs._batch())
            if not lines and not ended:
                return
            yield lines, ended

    def __iter__(self) -> Iterator[OutputLine]:
        for lines, _ in self._batches():
            yield from lines

    def send_signal(self, sig: int | str) -> None:
        """:meth:`AsyncGroupProcess.send_signal`; nothing once the group is closed."""
        name = signal_name(sig)
        with contextlib.suppress(RuntimeError):  # the group's loop closed meanwhile
            if not self._group._closed:
                self._group._loop.call_soon_threadsafe(self._procs.send_signal, name)

    def terminate(self) -> None:
        """SIGTERM to every command still running."""
        self.send_signal("TERM")

    def kill(self) -> None:
        """SIGKILL to every command still running."""
        self.send_signal("KILL")

    def wait(self) -> GroupResult:
        """:meth:`AsyncGroupProcess.wait`, blocking."""
        return self._group._call(self._procs.wait())

    def close(self) -> None:
        """:meth:`AsyncGroupProcess.close`, blocking (the group's ``close()`` closes it too)."""
        if not self._group._closed:
            self._group._call(self._procs.close())

    def __enter__(self) -> GroupProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
