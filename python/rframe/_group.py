"""Many servers at once: :class:`AsyncGroup` (asyncio) and :class:`Group` (blocking).

A group holds one connection per host, opened on first use and kept until
:meth:`close`. Each operation runs on every host at once, at most
``max_concurrency`` of them in flight, and gives back a :class:`GroupResult`:
each host's result, or the exception that host raised (which names it:
``exc.host``). A host that fails never hides the others' results, and never
delays them: ``timeout`` is one deadline per host that covers looking up its
name, connecting, TLS, the login, and the operation itself.

``Group`` runs an ``AsyncGroup`` on an event loop of its own, in a thread:
the implementation is one.

>>> from rframe import Server
>>> with Server("127.0.0.2", 0) as a, Server("127.0.0.3", 0) as b:
...     hosts = [f"{h}:{p}" for h, p in (a.address, b.address)]
...     with Group(hosts, timeout=10) as group:
...         result = group.run("echo hi")
...     [r.stdout for r in result.values()], result.ok
([b'hi\\n', b'hi\\n'], True)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from . import _files, _tls
from ._async import AsyncClient
from ._group_process import AsyncGroupProcess, GroupProcess, OutputLine
from ._protocol import CommandResult, check_client_timeout, where
from ._rframe import DEFAULT_PORT, Codec

__all__ = [
    "AsyncGroup",
    "AsyncGroupProcess",
    "Group",
    "GroupError",
    "GroupProcess",
    "GroupResult",
    "HostCancelled",
    "OutputLine",
    "parse_host",
]

HostArg = str | tuple[str, int]
_Body = bytes | bytearray | memoryview | str
_T = TypeVar("_T")
_Op = Callable[[AsyncClient, str], Awaitable[Any]]
HostProgress = Callable[[str, int, int], None] | None
_Admit = Callable[[str], BaseException | None] | None


def parse_host(spec: HostArg, port: int = DEFAULT_PORT) -> tuple[str, str, int]:
    """``(name, host, port)`` of a host as a group takes it: ``"host"``,
    ``"host:port"``, ``"[v6]:port"``, a bare IPv6 address, or ``(host,
    port)``. ``name`` is how results and errors call the host: the text as
    given, or ``host:port`` for a tuple.

    >>> parse_host("web1"), parse_host("web2:8849"), parse_host("[::1]:9000"), parse_host(("::1", 7))
    (('web1', 'web1', 8848), ('web2:8849', 'web2', 8849), ('[::1]:9000', '::1', 9000), ('[::1]:7', '::1', 7))
    """
    if isinstance(spec, tuple):
        host, number = spec
        number = _port(number, spec)
        return where((host, number)), host, number
    if not isinstance(spec, str):
        raise TypeError(f"a host is a str or a (host, port) tuple, not {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise ValueError("a host must not be empty")
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end > 0 else "?"
        if rest and not rest.startswith(":"):
            raise ValueError(f"not a host: {spec!r} (write [v6] or [v6]:port)")
        return text, text[1:end], _port(rest[1:], spec) if rest else port
    if text.count(":") == 1:
        host, _, digits = text.partition(":")
        if not host:
            raise ValueError(f"not a host: {spec!r}")
        return text, host, _port(digits, spec)
    return text, text, port  # a name, an IPv4 address or a bare IPv6 address


def _port(value: Any, spec: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a port in {spec!r}: {value!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"not a port in {spec!r}: {number} (1 to 65535)")
    return number


class HostCancelled(Exception):
    """The operation did not run on this host, or was stopped: an earlier
    host failed and the group was told ``fail_fast=True``, or a live command
    (:meth:`AsyncGroup.start`) was stopped before this host's turn."""


class GroupError(Exception):
    """Some hosts failed: ``failures`` maps each one to its exception.

    >>> err = GroupError({"web1": TimeoutError("no answer within 5 seconds")})
    >>> print(err)
    1 host failed: web1 (TimeoutError: no answer within 5 seconds)
    """

    def __init__(self, failures: Mapping[str, BaseException]) -> None:
        self.failures = dict(failures)
        parts = [f"{host} ({type(exc).__name__}: {exc})" for host, exc in self.failures.items()]
        n = len(parts)
        super().__init__(f"{n} host{'s' if n != 1 else ''} failed: {', '.join(parts)}")


class GroupResult(Mapping[str, Any]):
    """What an operation gave on each host, in the group's order: the
    host's result, or the exception it raised.

    >>> r = GroupResult({"a": CommandResult("true", 0), "b": ConnectionRefusedError("refused")})
    >>> list(r.succeeded), list(r.failed), r.ok
    (['a'], ['b'], False)
    >>> r.raise_for_failures()
    Traceback (most recent call last):
      ...
    rframe._group.GroupError: 1 host failed: b (ConnectionRefusedError: refused)
    """

    def __init__(self, results: Mapping[str, Any]) -> None:
        self._results = dict(results)

    def __getitem__(self, host: str) -> Any:
        return self._results[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def succeeded(self) -> dict[str, Any]:
        """The hosts that gave a result, and their results."""
        return {h: r for h, r in self._results.items() if not isinstance(r, BaseException)}

    @property
    def failed(self) -> dict[str, BaseException]:
        """The hosts that raised, and their exceptions."""
        return {h: r for h, r in self._results.items() if isinstance(r, BaseException)}

    @property
    def ok(self) -> bool:
        """True if no host failed."""
        return not self.failed

    def raise_for_failures(self) -> None:
        """Raise :class:`GroupError`, listing every failed host, if any failed."""
        failed = self.failed
        if failed:
            raise GroupError(failed)

    def __repr__(self) -> str:
        failed = list(self.failed)
        return f"GroupResult({len(self) - len(failed)} ok, failed={failed!r})"


def _name_host(exc: BaseException, host: str) -> BaseException:
    try:
        exc.host = host  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - an exception type without a __dict__
        pass
    return exc


class AsyncGroup:
    """Many rframe servers from one event loop; every operation on all of them at once.

    ``hosts``: ``"host"``, ``"host:port"``, ``"[v6]:port"`` or ``(host,
    port)`` (``port`` is the default). ``token``, ``tls`` and ``codec`` are
    those of :class:`rframe.AsyncClient`, the same for every host;
    ``fingerprints`` maps a host (its name as given, or its address) to its
    certificate's pin. ``timeout`` (seconds, ``None``: no limit) is one
    deadline per host and operation: name lookup, connecting, TLS, the login
    and the operation together; a host out of time is a ``TimeoutError`` for
    that host alone, and its command is killed (the connection closes).
    ``max_concurrency`` hosts at most are worked on at once; a host's deadline
    starts when its turn does. ``call_timeout`` is :class:`rframe.AsyncClient`'s
    ``timeout`` on each host (connecting, and each call or step of a
    transfer): for long transfers, bound each step rather than the whole.

    Operations return a :class:`GroupResult`; with ``fail_fast=True`` the
    first failure cancels the hosts still running (their commands killed)
    and those not started, which report :class:`HostCancelled`. Connections
    are kept between operations until :meth:`close` (``async with``).

    >>> import asyncio
    >>> from rframe import Server
    >>> async def main(hosts):
    ...     async with AsyncGroup(hosts, timeout=10) as group:
    ...         async for host, result in group.run_iter("echo hi"):
    ...             print(host == hosts[0] or host == hosts[1], result.stdout)
    >>> with Server("127.0.0.2", 0) as a, Server("127.0.0.3", 0) as b:
    ...     asyncio.run(main([f"{h}:{p}" for h, p in (a.address, b.address)]))
    True b'hi\\n'
    True b'hi\\n'
    """

    def __init__(
        self,
        hosts: Iterable[HostArg],
        *,
        port: int = DEFAULT_PORT,
        token: str | bytes | None = None,
        tls: _tls.TLSArg = None,
        fingerprints: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_concurrency: int = 64,
        codec: Codec | None = None,
        call_timeout: float | None = None,
    ) -> None:
        check_client_timeout(timeout)
        check_client_timeout(call_timeout)
        if isinstance(hosts, (str, tuple)):
            raise TypeError("hosts is a list of hosts: Group(['web1', 'web2']), not Group('web1')")
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
        self.hosts: dict[str, tuple[str, int]] = {}
        named: dict[tuple[str, int], str] = {}
        for spec in hosts:
            name, host, number = parse_host(spec, port)
            if name in self.hosts:
                raise ValueError(f"host {name!r} is listed twice")
            if (host, number) in named:
                raise ValueError(f"{named[host, number]!r} and {name!r} are the same host")
            self.hosts[name] = (host, number)
            named[host, number] = name
        if not self.hosts:
            raise ValueError("a group needs at least one host")
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self._options: dict[str, Any] = {"token": token, "tls": tls, "codec": codec, "timeout": call_timeout}
        self._fingerprints = {str(k): _tls.normalize_fingerprint(v) for k, v in (fingerprints or {}).items()}
        self._clients: dict[str, AsyncClient] = {}
        # One connection per host: calls that find none wait for the one being made.
        self._connecting: dict[str, asyncio.Lock] = {}
        self._turns: asyncio.Semaphore | None = None
        self._live: set[AsyncGroupProcess] = set()  # started, for close() to end
        self._closed = False

    def __repr__(self) -> str:
        return f"<rframe.AsyncGroup {len(self.hosts)} hosts{' closed' if self._closed else ''}>"

    async def __aenter__(self) -> AsyncGroup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection. Calling it again does nothing."""
        self._closed = True
        live, self._live = self._live, set()
        await asyncio.gather(*(p.close() for p in live), return_exceptions=True)
        clients, self._clients = self._clients, {}
        await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)

    # ------------------------------------------------------------------ running on every host

    async def _client(self, name: str) -> AsyncClient:
        async with self._connecting.setdefault(name, asyncio.Lock()):
            client = self._clients.get(name)
            if client is not None and not client.closed:
                return client
            host, number = self.hosts[name]
            fingerprint = self._fingerprints.get(name) or self._fingerprints.get(where((host, number)))
            client = await AsyncClient.connect(host, number, fingerprint=fingerprint, **self._options)
            self._clients[name] = client
            return client

    async def _one(self, name: str, op: _Op, admit: _Admit = None) -> Any:
        """``op`` on host ``name``, within its deadline: the result, or the
        exception raised, with the host's name (``exc.host``). ``admit(name)``,
        asked when the host's turn comes, may refuse it with an exception."""
        if self._closed:
            return _name_host(ConnectionAbortedError(f"the group is closed; open a new one ({name})"), name)
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.max_concurrency)
        try:
            async with self._turns:
                if admit is not None and (refused := admit(name)) is not None:
                    return _name_host(refused, name)
                try:
                    async with asyncio.timeout(self.timeout):
                        return await op(await self._client(name), name)
                finally:
                    client = self._clients.get(name)
                    if client is not None and client.closed:  # failed, timed out or cancelled: the next call reconnects
                        del self._clients[name]
        except TimeoutError as exc:
            if type(exc) is TimeoutError and not exc.args:  # the host's deadline, not a command's own limit
                exc = TimeoutError(f"no answer from {name} within {self.timeout:g} seconds")
            return _name_host(exc, name)
        except Exception as exc:  # noqa: BLE001 - the host's failure is its result
            return _name_host(exc, name)

    async def _on_all(
        self,
        op: _Op,
        fail_fast: bool,
        *,
        admit: _Admit = None,
        stop: asyncio.Future[str] | None = None,
        on_done: Callable[[str, Any], None] | None = None,
    ) -> GroupResult:
        """``op`` on every host: their results. ``on_done(host, result)`` as
        each host ends (not for those cancelled); ``stop``, once it has a
        result (why), cancels the hosts still running, as ``fail_fast`` does."""
        tasks = {name: asyncio.ensure_future(self._one(name, op, admit)) for name in self.hosts}
        if on_done is not None:
            for name, task in tasks.items():
                task.add_done_callback(functools.partial(_report_done, on_done, name))
        why = "another host failed first (fail_fast)"
        try:
            pending: set[asyncio.Future[Any]] = set(tasks.values())
            while pending:
                done, _ = await asyncio.wait(
                    pending if stop is None else pending | {stop}, return_when=asyncio.FIRST_COMPLETED
                )
                pending -= done
                if stop is not None and stop.done():
                    why = stop.result()
                    break
                if fail_fast and any(isinstance(t.result(), BaseException) for t in done):
                    break
        finally:
            # The caller left (cancelled) or fail_fast: stop the rest, and wait
            # for them so their connections are closed (their commands killed).
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        results: dict[str, Any] = {}
        for name, task in tasks.items():
            if task.cancelled():
                results[name] = _name_host(HostCancelled(f"{name}: not run to its end: {why}"), name)
            else:
                results[name] = task.result()
        return GroupResult(results)

    async def _each(self, op: _Op, *, fail_fast: bool = False, check: bool = False) -> GroupResult:
        result = await self._on_all(op, fail_fast)
        if check:
            result.raise_for_failures()
        return result

    # ------------------------------------------------------------------ operations

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
        fail_fast: bool = False,
    ) -> GroupResult:
        """:meth:`rframe.AsyncClient.run` on every host: a
        :class:`GroupResult` of :class:`rframe.CommandResult`. ``timeout`` is
        the command's own limit on each server (the group's ``timeout``
        bounds everything on a host). ``check=True`` counts a non-zero exit
        status as a failure (:class:`rframe.CommandError`) and raises
        :class:`GroupError` if any host failed."""

        op = _run_op(cmd, timeout=timeout, check=check, input=input, env=env, cwd=cwd, text=text)
        return await self._each(op, fail_fast=fail_fast, check=check)

    async def run_iter(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = False,
        input: _Body | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        text: bool = False,
    ) -> AsyncIterator[tuple[str, Any]]:
        """As :meth:`run`, but ``(host, result or exception)`` as each host
        finishes: ``async for host, result in group.run_iter(cmd)``. Leaving
        the loop early cancels the hosts still running."""

        op = _run_op(cmd, timeout=timeout, check=check, input=input, env=env, cwd=cwd, text=text)

        async def named(name: str) -> tuple[str, Any]:
            return name, await self._one(name, op)

        tasks = [asyncio.ensure_future(named(name)) for name in self.hosts]
        try:
            for next_done in asyncio.as_completed(tasks):
                yield await next_done
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def start(
        self,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = False,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        fail_fast: bool = False,
    ) -> AsyncGroupProcess:
        """Starts ``cmd`` on every host, each in its turn, and returns at once:
        an :class:`rframe.AsyncGroupProcess`, whose ``async for`` gives each
        host's output lines, tagged with the host, as they are written.

        ``timeout`` is the command's own limit on each server (the group's
        ``timeout`` bounds everything on a host, its output included: leave
        it ``None`` for a command that runs until stopped). ``input`` is
        written to every command's stdin, which is then closed (without it,
        the commands' stdin is closed at once). ``check`` and ``fail_fast`` as
        for :meth:`run`. Each host's connection is dedicated to its command
        until it exits."""
        if self._closed:
            raise ConnectionAbortedError("the group is closed; open a new one")
        if input is not None and not isinstance(input, bytes):
            raise TypeError(f"input must be bytes, not {type(input).__name__}")
        run = {"env": env, "cwd": cwd, "timeout": timeout}
        procs = AsyncGroupProcess(self, cmd, run, input, check, fail_fast)
        self._live.add(procs)
        procs._task.add_done_callback(lambda _: self._live.discard(procs))
        return procs

    async def request(
        self, body: _Body = b"", header: Mapping[str, Any] | None = None, *, fail_fast: bool = False, **fields: Any
    ) -> GroupResult:
        """:meth:`rframe.AsyncClient.request` on every host: a :class:`GroupResult` of frames."""

        async def op(client: AsyncClient, name: str) -> Any:
            return await client.request(body, header, **fields)

        return await self._each(op, fail_fast=fail_fast)

    async def upload(
        self,
        local_path: str | os.PathLike[str],
        remote_name: str | None = None,
        *,
        overwrite: bool = False,
        checksum: str | None = None,
        fail_fast: bool = False,
        progress: HostProgress = None,
    ) -> GroupResult:
        """:meth:`rframe.AsyncClient.upload` of one local file to every host.
        ``progress(host, done, total)``, if given, is called as each host's
        bytes go (on the group's event loop: keep it quick)."""
        if checksum is not None:
            _files.check_checksum(checksum)

        async def op(client: AsyncClient, name: str) -> dict[str, Any]:
            return await client.upload(
                local_path, remote_name, overwrite=overwrite, checksum=checksum, progress=_of_host(progress, name)
            )

        return await self._each(op, fail_fast=fail_fast)

    async def download(
        self,
        remote_name: str,
        local_path: str | os.PathLike[str] | None = None,
        *,
        overwrite: bool = False,
        checksum: str | None = None,
        fail_fast: bool = False,
        progress: HostProgress = None,
    ) -> GroupResult:
        """:meth:`rframe.AsyncClient.download` from every host. ``local_path``
        may hold ``{host}``, replaced by each host's name; by default each
        host's file lands in ``./{host}/NAME``. Directories named after a host
        are made as needed. ``progress`` as for :meth:`upload`."""
        if checksum is not None:
            _files.check_checksum(checksum)
        template = os.fspath(local_path) if local_path is not None else os.path.join("{host}", "")
        if "{host}" not in template:
            raise ValueError(
                f"local_path must hold {{host}}, or each host's file would overwrite the last: {template!r}"
            )

        async def op(client: AsyncClient, name: str) -> dict[str, Any]:
            path = template.replace("{host}", name.replace(os.sep, "_"))
            parent = os.path.dirname(path) if not path.endswith(os.sep) else path
            if parent:
                os.makedirs(parent, exist_ok=True)
            return await client.download(
                remote_name, path, overwrite=overwrite, checksum=checksum, progress=_of_host(progress, name)
            )

        return await self._each(op, fail_fast=fail_fast)

    async def list_files(self, name: str = "", *, fail_fast: bool = False) -> GroupResult:
        """:meth:`rframe.AsyncClient.list_files` on every host."""

        async def op(client: AsyncClient, host: str) -> list[dict[str, Any]]:
            return await client.list_files(name)

        return await self._each(op, fail_fast=fail_fast)


def _report_done(on_done: Callable[[str, Any], None], name: str, task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        on_done(name, task.result())


def _of_host(progress: HostProgress, host: str) -> Callable[[int, int], None] | None:
    """A client's ``progress(done, total)`` that reports as ``host``'s."""
    if progress is None:
        return None
    return lambda done, total: progress(host, done, total)


def _run_op(cmd: str | Sequence[str], **kwargs: Any) -> _Op:
    """The operation ``run`` and ``run_iter`` make on each host."""

    async def op(client: AsyncClient, name: str) -> CommandResult:
        return await client.run(cmd, **kwargs)

    return op


_END = object()

#: How long a cancelled blocking call waits for the hosts it cancelled to
#: close their connections (closing takes a loop turn; this only bounds it).
_CANCEL_WAIT = 10.0


class Group:
    """Many rframe servers from plain code: :class:`AsyncGroup`'s operations, blocking.

    Arguments and results are :class:`AsyncGroup`'s. The group runs them on
    an event loop of its own, in a thread, so it can be used from any
    thread; Ctrl-C (or any exception) in the waiting call cancels the hosts
    still running. Close it (``with``) to close its connections and thread.

    >>> from rframe import Server
    >>> with Server("127.0.0.2", 0) as a:
    ...     with Group([a.address, ("127.0.0.1", 9)], timeout=5) as group:
    ...         result = group.run("echo hi")
    >>> sorted(result.succeeded), [type(e).__name__ for e in result.failed.values()]
    (['127.0.0.2:...'], ['ConnectionRefusedError'])
    """

    def __init__(
        self,
        hosts: Iterable[HostArg],
        *,
        port: int = DEFAULT_PORT,
        token: str | bytes | None = None,
        tls: _tls.TLSArg = None,
        fingerprints: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_concurrency: int = 64,
        codec: Codec | None = None,
        call_timeout: float | None = None,
    ) -> None:
        self._group = AsyncGroup(
            hosts,
            port=port,
            token=token,
            tls=tls,
            fingerprints=fingerprints,
            timeout=timeout,
            max_concurrency=max_concurrency,
            codec=codec,
            call_timeout=call_timeout,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rframe-group", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def hosts(self) -> dict[str, tuple[str, int]]:
        """Each host's name and its ``(host, port)``."""
        return self._group.hosts

    def __repr__(self) -> str:
        return f"<rframe.Group {len(self.hosts)} hosts{' closed' if self._closed else ''}>"

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection and the group's thread. Calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._group.close(), self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._closed:
            coro.close()
            raise ConnectionAbortedError("the group is closed; open a new one")
        started: list[asyncio.Task[Any]] = []
        ended = threading.Event()

        async def runner() -> _T:
            started.append(asyncio.current_task())  # type: ignore[arg-type]
            try:
                return await coro
            finally:
                ended.set()

        fut = asyncio.run_coroutine_threadsafe(runner(), self._loop)
        try:
            return fut.result()
        except BaseException:
            # Ctrl-C or the caller's own exception: the hosts still running
            # are cancelled, and their connections closed (their commands
            # killed), before this returns.
            fut.cancel()
            if started:
                ended.wait(_CANCEL_WAIT)
            raise

    def run(self, cmd: str | Sequence[str], **kwargs: Any) -> GroupResult:
        """:meth:`AsyncGroup.run`, blocking."""
        return self._call(self._group.run(cmd, **kwargs))

    def run_iter(self, cmd: str | Sequence[str], **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """:meth:`AsyncGroup.run_iter`, blocking: ``for host, result in group.run_iter(cmd)``."""
        if self._closed:
            raise ConnectionAbortedError("the group is closed; open a new one")
        items: queue.Queue[Any] = queue.Queue()

        async def feed() -> None:
            try:
                async for item in self._group.run_iter(cmd, **kwargs):
                    items.put(item)
            finally:
                items.put(_END)

        fut = asyncio.run_coroutine_threadsafe(feed(), self._loop)
        try:
            while (item := items.get()) is not _END:
                yield item
            fut.result()  # raises what feed() raised, if anything
        finally:
            if not fut.done():
                fut.cancel()  # the hosts still running are cancelled
                with contextlib.suppress(BaseException):
                    concurrent.futures.wait([fut], _CANCEL_WAIT)

    def start(self, cmd: str | Sequence[str], **kwargs: Any) -> GroupProcess:
        """:meth:`AsyncGroup.start`, blocking: a :class:`rframe.GroupProcess`,
        ``for line in procs`` its hosts' output lines as they are written."""
        return GroupProcess(self, self._call(self._group.start(cmd, **kwargs)))

    def request(self, body: _Body = b"", header: Mapping[str, Any] | None = None, **fields: Any) -> GroupResult:
        """:meth:`AsyncGroup.request`, blocking."""
        return self._call(self._group.request(body, header, **fields))

    def upload(self, local_path: str | os.PathLike[str], remote_name: str | None = None, **kwargs: Any) -> GroupResult:
        """:meth:`AsyncGroup.upload`, blocking."""
        return self._call(self._group.upload(local_path, remote_name, **kwargs))

    def download(
        self, remote_name: str, local_path: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> GroupResult:
        """:meth:`AsyncGroup.download`, blocking."""
        return self._call(self._group.download(remote_name, local_path, **kwargs))

    def list_files(self, name: str = "", **kwargs: Any) -> GroupResult:
        """:meth:`AsyncGroup.list_files`, blocking."""
        return self._call(self._group.list_files(name, **kwargs))
