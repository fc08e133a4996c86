"""rframe.Group and rframe.AsyncGroup: one operation on many servers.

Each "host" is a server of its own on its own loopback address (127.0.0.2,
127.0.0.3, ...), so hosts differ as they would on a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import platforms
import rframe
from rframe import _group, _group_process
from rframe._group import AsyncGroup, Group, GroupError, GroupResult, HostCancelled, parse_host
from server_helpers import cli_server

pytestmark = platforms.commands

#: A generous bound that only catches a hang.
HANG_BOUND = 60


@contextlib.contextmanager
def servers(tmp_path, n: int, first: int = 2, **kwargs) -> Iterator[list[tuple[str, str]]]:
    """``n`` command servers on 127.0.0.<first>..., each with a working
    directory (and file root) of its own holding ``id``: ``[(name, dir)]``."""
    started = []
    try:
        for i in range(first, first + n):
            d = tmp_path / f"host{i}"
            d.mkdir()
            (d / "id").write_text(f"host {i}")
            server = rframe.Server(f"127.0.0.{i}", 0, cwd=str(d), root=str(d), **kwargs)
            server.start()
            started.append((server, str(d)))
        yield [(f"{s.address[0]}:{s.address[1]}", d) for s, d in started]
    finally:
        for server, _ in started:
            server.stop()


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def group_run(kind: str, hosts, cmd, group_kwargs=None, **kwargs) -> GroupResult:
    """``run`` through the blocking Group or the AsyncGroup."""
    group_kwargs = group_kwargs or {}
    if kind == "blocking":
        with Group(hosts, **group_kwargs) as group:
            return group.run(cmd, **kwargs)

    async def main() -> GroupResult:
        async with AsyncGroup(hosts, **group_kwargs) as group:
            return await group.run(cmd, **kwargs)

    return asyncio.run(main())


# --------------------------------------------------------------------------- results


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_every_host_answers_under_its_own_name(tmp_path, kind):
    with servers(tmp_path, 100) as hosts:
        result = group_run(kind, [name for name, _ in hosts], "cat id", {"timeout": HANG_BOUND})
    assert result.ok and list(result) == [name for name, _ in hosts]
    for i, (name, _) in enumerate(hosts, start=2):
        assert result[name].stdout == f"host {i}".encode()


def test_each_failure_stays_with_its_host_and_within_its_deadline(tmp_path):
    token = "a token shared by the group"
    silent = socket.create_server(("127.0.0.30", 0))
    with silent, servers(tmp_path, 3, token=token) as good, servers(tmp_path, 1, first=40, token="another") as wrong:
        (tmp_path / "host3" / "id").write_text("30")  # host 3's command outlives the deadline
        dead = f"127.0.0.31:{free_port('127.0.0.31')}"
        quiet = f"127.0.0.30:{silent.getsockname()[1]}"
        hosts = [name for name, _ in good] + [dead, quiet, wrong[0][0]]
        started = time.monotonic()
        with Group(hosts, token=token, timeout=3) as group:
            result = group.run("case $(cat id) in 30) sleep 30;; esac; cat id")
        elapsed = time.monotonic() - started
    assert elapsed < 3 + 10, "a failing host delayed the group past its deadline"
    assert set(result.succeeded) == {good[0][0], good[2][0]}
    failed = result.failed
    assert isinstance(failed[good[1][0]], TimeoutError) and "within 3 seconds" in str(failed[good[1][0]])
    assert isinstance(failed[dead], ConnectionRefusedError)
    assert isinstance(failed[quiet], TimeoutError)
    assert isinstance(failed[wrong[0][0]], rframe.AuthenticationError)
    assert all(exc.host == host for host, exc in failed.items())
    with pytest.raises(GroupError) as info:
        result.raise_for_failures()
    assert set(info.value.failures) == set(failed) and dead in str(info.value)


def test_a_changed_certificate_fails_its_host_alone(tmp_path):
    tls_dir = tmp_path / "tls"
    tls = [rframe.Server(f"127.0.0.{i}", 0, tls=True, tls_dir=str(tls_dir)) for i in (2, 3)]
    try:
        for s in tls:
            s.start()
        names = [f"{h}:{p}" for h, p in (s.address for s in tls)]
        real = rframe._rframe.server_fingerprint(tls_dir=str(tls_dir))
        pins = {names[0]: real, names[1]: "ab" * 32}  # the second host's certificate is not the one pinned
        with Group(names, fingerprints=pins, timeout=HANG_BOUND) as group:
            result = group.run("echo over tls")
    finally:
        for s in tls:
            s.stop()
    assert result[names[0]].stdout == b"over tls\n"
    exc = result.failed[names[1]]
    assert isinstance(exc, rframe.FingerprintMismatch) and exc.host == names[1] and real in str(exc)


def test_check_counts_an_exit_status_as_a_failure(tmp_path):
    with servers(tmp_path, 2) as hosts:
        names = [name for name, _ in hosts]
        with Group(names, timeout=HANG_BOUND) as group:
            assert group.run("exit 3").ok  # a status is a result...
            with pytest.raises(GroupError) as info:
                group.run("case $(cat id) in 'host 2') exit 3;; esac", check=True)  # ...unless checked
    (host, exc), *rest = info.value.failures.items()
    assert not rest and host == names[0] and isinstance(exc, rframe.CommandError) and exc.returncode == 3


def test_at_most_max_concurrency_hosts_run_at_once(tmp_path):
    with servers(tmp_path, 9) as hosts:
        names = [name for name, _ in hosts]
        cmd = "python3 -c 'import time; print(time.time())'; sleep 0.4; python3 -c 'import time; print(time.time())'"
        with Group(names, max_concurrency=3, timeout=HANG_BOUND) as group:
            result = group.run(cmd)
    assert result.ok
    spans = [tuple(map(float, r.stdout.split())) for r in result.values()]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert 1 <= most <= 3, spans


def test_fail_fast_cancels_the_others_and_kills_their_commands(tmp_path):
    with servers(tmp_path, 3) as hosts:
        dead = f"127.0.0.31:{free_port('127.0.0.31')}"
        names = [name for name, _ in hosts] + [dead]
        started = time.monotonic()
        with Group(names, timeout=HANG_BOUND) as group:
            result = group.run("sleep 2; touch finished", fail_fast=True)
        assert time.monotonic() - started < 2, "fail_fast waited for the others"
        time.sleep(3)  # long enough for a command that was not killed to finish
        assert not any(os.path.exists(os.path.join(d, "finished")) for _, d in hosts)
    assert isinstance(result[dead], ConnectionRefusedError)
    assert all(isinstance(result[name], HostCancelled) and result[name].host == name for name, _ in hosts)


def test_run_iter_yields_as_hosts_finish(tmp_path):
    with servers(tmp_path, 3) as hosts:
        delays = ["1.2", "0.1", "0.6"]
        for (_, d), delay in zip(hosts, delays):
            with open(os.path.join(d, "delay"), "w") as f:
                f.write(delay)
        names = [name for name, _ in hosts]
        with Group(names, timeout=HANG_BOUND) as group:
            order = [host for host, result in group.run_iter("sleep $(cat delay); cat id") if result.ok]

        async def main() -> list[str]:
            async with AsyncGroup(names, timeout=HANG_BOUND) as group:
                return [host async for host, _ in group.run_iter("sleep $(cat delay)")]

        async_order = asyncio.run(main())
    expected = [names[1], names[2], names[0]]
    assert order == expected and async_order == expected


def test_leaving_run_iter_early_cancels_the_rest(tmp_path):
    with servers(tmp_path, 2) as hosts:
        for (_, d), delay in zip(hosts, ["0", "3"]):
            with open(os.path.join(d, "delay"), "w") as f:
                f.write(delay)
        with Group([name for name, _ in hosts], timeout=HANG_BOUND) as group:
            started = time.monotonic()
            results = group.run_iter("sleep $(cat delay); touch finished")
            first = next(results)
            results.close()  # leaves the loop: the host still running is cancelled
            assert time.monotonic() - started < 2.5
            time.sleep(4)
            assert first[0] == hosts[0][0]
            assert not os.path.exists(os.path.join(hosts[1][1], "finished"))
            assert group.run("true").ok  # the group goes on: a new connection where one was closed


def test_connections_are_kept_between_calls_and_replaced_when_lost(tmp_path):
    with servers(tmp_path, 2) as hosts:
        names = [name for name, _ in hosts]

        async def main() -> None:
            async with AsyncGroup(names, timeout=2) as group:
                assert (await group.run("true")).ok
                first = dict(group._clients)
                assert (await group.run("true")).ok
                assert group._clients == first  # the same connections
                # A host out of time loses its connection (its command is killed)...
                result = await group.run("case $(cat id) in 'host 2') sleep 30;; esac")
                assert isinstance(result[names[0]], TimeoutError) and result[names[1]].ok
                assert names[0] not in group._clients and group._clients[names[1]] is first[names[1]]
                # ...and gets a new one next time.
                assert (await group.run("true")).ok and group._clients[names[0]] is not first[names[0]]
            assert group._clients == {}

        asyncio.run(main())


def test_operations_at_once_share_one_connection_per_host(tmp_path, monkeypatch):
    connects = []
    real = rframe.AsyncClient.connect.__func__

    async def counting(cls, *args, **kwargs):
        connects.append(args[:2])
        return await real(cls, *args, **kwargs)

    monkeypatch.setattr(rframe.AsyncClient, "connect", classmethod(counting))
    with servers(tmp_path, 3) as hosts:
        names = [name for name, _ in hosts]

        async def main() -> None:
            async with AsyncGroup(names, timeout=HANG_BOUND) as group:
                results = await asyncio.gather(*(group.run("true") for _ in range(4)))
                assert all(r.ok for r in results)

        asyncio.run(main())
    assert len(connects) == len(names)


def test_a_call_timeout_bounds_each_step_on_a_host(tmp_path):
    silent = socket.create_server(("127.0.0.30", 0))
    with silent, servers(tmp_path, 1) as hosts:
        quiet = f"127.0.0.30:{silent.getsockname()[1]}"
        started = time.monotonic()
        with Group([hosts[0][0], quiet], call_timeout=1) as group:  # no deadline for the whole
            result = group.list_files()
        assert time.monotonic() - started < HANG_BOUND
    assert isinstance(result[quiet], TimeoutError) and result[hosts[0][0]] is not None


def test_files_to_and_from_every_host(tmp_path):
    data = os.urandom(300_000)
    local = tmp_path / "payload.bin"
    local.write_bytes(data)
    with servers(tmp_path, 20) as hosts:
        names = [name for name, _ in hosts]
        with Group(names, timeout=HANG_BOUND) as group:
            stored = group.upload(local, "copy.bin")
            assert stored.ok, stored.failed
            assert all((tmp_path / d / "copy.bin").read_bytes() == data for _, d in hosts)
            here = tmp_path / "down"
            here.mkdir()
            got = group.download("copy.bin", str(here / "{host}" / "c.bin"))
            listed = group.list_files()
    assert got.ok, got.failed
    import blake3

    digest = blake3.blake3(data).hexdigest()
    for name in names:
        assert got[name]["checksum"] == "blake3" and got[name]["digest"] == digest
        assert (here / name / "c.bin").read_bytes() == data
        assert "copy.bin" in [e["name"] for e in listed[name]]


def test_a_download_lands_in_a_directory_per_host_by_default(tmp_path, monkeypatch):
    with servers(tmp_path, 2) as hosts:
        monkeypatch.chdir(tmp_path)
        with Group([name for name, _ in hosts], timeout=HANG_BOUND) as group:
            got = group.download("id")
            with pytest.raises(ValueError, match="host"):
                group.download("id", "same-for-all.txt")
    assert got.ok, got.failed
    for i, (name, _) in enumerate(hosts, start=2):
        assert (tmp_path / name / "id").read_text() == f"host {i}"


def test_request_on_every_handler_server():
    echo = [rframe.Server(f"127.0.0.{i}", 0, handler=lambda frame: frame.body.upper()) for i in (2, 3)]
    try:
        for s in echo:
            s.start()
        with Group([s.address for s in echo], timeout=HANG_BOUND) as group:
            result = group.request(b"hi")
        assert [frame.body for frame in result.values()] == [b"HI", b"HI"]
        assert list(result) == [f"127.0.0.{i}:{s.address[1]}" for i, s in zip((2, 3), echo)]
    finally:
        for s in echo:
            s.stop()


# --------------------------------------------------------------------------- arguments


def test_hosts_are_parsed_like_ssh_destinations():
    assert parse_host("web1") == ("web1", "web1", 8848)
    assert parse_host("web1:22", 9) == ("web1:22", "web1", 22)
    assert parse_host("[::1]") == ("[::1]", "::1", 8848)
    assert parse_host("::1") == ("::1", "::1", 8848)
    assert parse_host(("10.0.0.1", 80)) == ("10.0.0.1:80", "10.0.0.1", 80)
    for bad in ["", "  ", "web:", "web:x", "web:0", "web:70000", "[::1", "[::1]x", ":80"]:
        with pytest.raises(ValueError):
            parse_host(bad)
    with pytest.raises(TypeError):
        parse_host(80)  # type: ignore[arg-type]


def test_a_group_refuses_bad_arguments():
    with pytest.raises(ValueError, match="twice"):
        AsyncGroup(["a", "a"])
    with pytest.raises(ValueError, match="the same host"):
        AsyncGroup(["a", "a:8848"])
    with pytest.raises(ValueError, match="at least one"):
        AsyncGroup([])
    with pytest.raises(TypeError, match="list of hosts"):
        AsyncGroup("web1")
    with pytest.raises(ValueError, match="max_concurrency"):
        AsyncGroup(["a"], max_concurrency=0)
    with pytest.raises(ValueError, match="timeout"):
        AsyncGroup(["a"], timeout=-1)
    with pytest.raises(ValueError, match="fingerprint"):
        AsyncGroup(["a"], fingerprints={"a": "not one"})


def test_a_closed_group_refuses_calls(tmp_path):
    with servers(tmp_path, 1) as hosts:
        group = Group([hosts[0][0]], timeout=HANG_BOUND)
        group.close()
        group.close()  # again: nothing
        with pytest.raises(ConnectionAbortedError, match="closed"):
            group.run("true")


@pytest.mark.parametrize("module", [_group, _group_process])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- live commands


def group_start(kind: str, hosts, cmd, use, group_kwargs=None, **kwargs):
    """``use(procs, lines)`` on ``start(cmd)`` through the blocking Group or
    the AsyncGroup, where ``lines()`` gives the output lines in turn (a
    blocking iterator in both cases: the asyncio one is driven a line at a
    time); returns ``(use's result, procs.wait())``, or the GroupError that
    ``wait()`` raised."""
    group_kwargs = {"timeout": HANG_BOUND, **(group_kwargs or {})}
    if kind == "blocking":
        with Group(hosts, **group_kwargs) as group, group.start(cmd, **kwargs) as procs:
            used = use(procs, lambda: iter(procs))
            return used, _wait_result(procs.wait)

    async def main():
        async with AsyncGroup(hosts, **group_kwargs) as group:
            async with await group.start(cmd, **kwargs) as procs:
                loop = asyncio.get_running_loop()
                lines = aiter(procs)

                def blocking_lines():
                    while True:
                        try:
                            yield asyncio.run_coroutine_threadsafe(anext(lines), loop).result()
                        except StopAsyncIteration:
                            return

                used = await asyncio.to_thread(use, _AsyncControls(procs, loop), blocking_lines)
                try:
                    return used, await procs.wait()
                except GroupError as e:
                    return used, e

    return asyncio.run(main())


def _wait_result(wait):
    """``wait()``'s GroupResult, or the GroupError it raised (``check=True``)."""
    try:
        return wait()
    except GroupError as e:
        return e


class _AsyncControls:
    """An AsyncGroupProcess's control calls, made from another thread."""

    def __init__(self, procs, loop):
        self._procs, self._loop = procs, loop

    def send_signal(self, sig):
        async def call():
            self._procs.send_signal(sig)

        asyncio.run_coroutine_threadsafe(call(), self._loop).result()  # raises what it raised

    def kill(self):
        self.send_signal("KILL")


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_start_gives_each_hosts_lines_as_they_are_written(tmp_path, kind):
    # Each command writes a line, then waits for a file that the test makes
    # only once it holds every host's first line: the lines came while the
    # commands ran, not at their end.
    cmd = "echo first; echo to-stderr >&2; while [ ! -e go ]; do sleep 0.02; done; printf 'last, no newline'"
    with servers(tmp_path, 3) as hosts:
        names = [name for name, _ in hosts]

        def use(procs, lines):
            got = []
            for line in lines():
                got.append(line)
                if sum(line.data == b"first\n" for line in got) == len(hosts):
                    for _, d in hosts:
                        open(os.path.join(d, "go"), "w").close()
            return got

        got, result = group_start(kind, names, cmd, use)
    assert result.ok and dict(result) == {name: 0 for name in names}
    for name in names:
        mine = [(line.fd, line.data) for line in got if line.host == name]
        assert sorted(mine) == [(1, b"first\n"), (1, b"last, no newline"), (2, b"to-stderr\n")]
        assert mine.index((1, b"first\n")) < mine.index((1, b"last, no newline"))
    assert all(isinstance(line, rframe.OutputLine) for line in got)


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_start_cuts_a_long_line_into_pieces_and_keeps_every_byte(tmp_path, kind):
    from rframe._group_process import LINE_MAX

    cmd = f"head -c {LINE_MAX * 2 + 10} /dev/zero | tr '\\0' x; echo; seq 1000"
    with servers(tmp_path, 2) as hosts:
        got, result = group_start(kind, [n for n, _ in hosts], cmd, lambda procs, lines: list(lines()))
    assert result.ok
    for name, _ in hosts:
        data = [line.data for line in got if line.host == name]
        assert b"".join(data) == b"x" * (LINE_MAX * 2 + 10) + b"\n" + b"".join(b"%d\n" % i for i in range(1, 1001))
        assert max(map(len, data)) == LINE_MAX and len(data) == 3 + 1000


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_start_failures_stay_with_their_hosts(tmp_path, kind):
    with servers(tmp_path, 3) as hosts:
        dead = f"127.0.0.31:{free_port('127.0.0.31')}"
        names = [name for name, _ in hosts]
        cmd = 'case "$(cat id)" in "host 3") exit 7;; "host 4") echo slow; sleep 30;; esac; echo done'
        got, result = group_start(kind, names + [dead], cmd, lambda procs, lines: list(lines()), check=True, timeout=1)
    assert isinstance(result, GroupError), "check=True raises GroupError from wait()"
    failed = result.failures
    assert list(failed) == names[1:] + [dead]
    assert isinstance(failed[dead], ConnectionRefusedError) and failed[dead].host == dead
    assert isinstance(failed[names[1]], rframe.CommandError) and failed[names[1]].returncode == 7
    assert isinstance(failed[names[2]], rframe.CommandTimeout) and failed[names[2]].timeout == 1
    assert {(line.host, line.data) for line in got} == {(names[0], b"done\n"), (names[2], b"slow\n")}


def test_start_with_check_raises_for_failures_on_wait(tmp_path):
    with servers(tmp_path, 2) as hosts, Group([n for n, _ in hosts], timeout=HANG_BOUND) as group:
        with group.start('test "$(cat id)" = "host 2"', check=True) as procs:
            with pytest.raises(GroupError) as info:
                procs.wait()
    assert list(info.value.failures) == [hosts[1][0]]


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_start_sends_signals_to_every_host(tmp_path, kind):
    cmd = "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.02; done"
    with servers(tmp_path, 2) as hosts:

        def use(procs, lines):
            ready = 0
            for line in lines():
                if line.data == b"ready\n":
                    ready += 1
                    if ready == len(hosts):
                        procs.send_signal("TERM")
            with pytest.raises(ValueError):
                procs.send_signal("STOP")  # refused before any host is signalled

        _, result = group_start(kind, [n for n, _ in hosts], cmd, use)
    assert dict(result) == {name: 3 for name, _ in hosts}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_leaving_start_kills_the_commands_still_running(tmp_path, kind):
    with servers(tmp_path, 2) as hosts:
        pids = []

        def use(procs, lines):
            for line in lines():
                pids.append(int(line.data))
                if len(pids) == len(hosts):
                    return

        # Without waiting for the commands: leaving the with block kills them.
        if kind == "blocking":
            with Group([n for n, _ in hosts], timeout=HANG_BOUND) as group:
                with group.start("echo $$; exec sleep 100") as procs:
                    use(procs, lambda: iter(procs))
        else:

            async def main():
                async with AsyncGroup([n for n, _ in hosts], timeout=HANG_BOUND) as group:
                    procs = await group.start("echo $$; exec sleep 100")
                    async for line in procs:
                        pids.append(int(line.data))
                        if len(pids) == len(hosts):
                            break
                # the group's close() ended the process it started

            asyncio.run(main())
        deadline = time.monotonic() + HANG_BOUND
        while any(map(pid_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids) == 2 and not any(map(pid_alive, pids))


def test_start_output_nobody_reads_waits_in_a_bounded_buffer(tmp_path):
    from rframe._group_process import LINES_HELD

    async def main(names):
        async with AsyncGroup(names, timeout=HANG_BOUND) as group:
            # 20 MB a host, in lines of 1,000 bytes: far more than is held.
            procs = await group.start("yes \"$(printf '%0999d' 0)\" | head -n 20000; echo finished > done")
            deadline = time.monotonic() + HANG_BOUND
            while len(procs.processes) < len(names) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(1)
            assert len(procs.processes) == len(names)
            assert len(procs._held) <= LINES_HELD
            # The commands wait for their reader, still running.
            assert all(p.returncode is None for p in procs.processes.values())
            count = 0
            async for line in procs:
                assert line.data == b"0" * 999 + b"\n"
                count += 1
            return count, await procs.wait()

    with servers(tmp_path, 2) as hosts:
        count, result = asyncio.run(main([n for n, _ in hosts]))
        assert all(os.path.exists(os.path.join(d, "done")) for _, d in hosts)
    assert count == 2 * 20000 and result.ok and set(result.values()) == {0}


def test_wait_without_reading_drops_the_output_and_does_not_hang(tmp_path):
    with servers(tmp_path, 2) as hosts, Group([n for n, _ in hosts], timeout=HANG_BOUND) as group:
        with group.start("seq 100000") as procs:
            result = procs.wait()
            assert list(procs) == []
    assert dict(result) == {name: 0 for name, _ in hosts}


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_start_input_reaches_every_command_and_a_quick_one_loses_nothing(tmp_path, kind):
    with servers(tmp_path, 2) as hosts:
        names = [n for n, _ in hosts]
        got, result = group_start(kind, names, "cat; echo end", lambda procs, lines: list(lines()), input=b"in\n")
        assert dict(result) == {n: 0 for n in names}
        assert sorted((line.host, line.data) for line in got) == sorted(
            (n, data) for n in names for data in (b"in\n", b"end\n")
        )
        # A command that exits before its input goes: its output is kept, its input dropped.
        for _ in range(20):
            got, result = group_start(kind, names, "echo hi", lambda procs, lines: list(lines()), input=b"x" * 100)
            assert dict(result) == {n: 0 for n in names}
            assert sorted((line.host, line.data) for line in got) == [(n, b"hi\n") for n in sorted(names)]


def test_a_host_that_stops_answering_fails_within_its_deadline(tmp_path):
    with cli_server("--host", "127.0.0.41") as server, Group([server.address], timeout=3) as group:
        outcome = []

        def run():
            with group.start("echo started; sleep 60") as procs:
                lines = iter(procs)
                outcome.append(next(lines).data)
                os.kill(server.proc.pid, signal.SIGSTOP)  # the host stops answering, its connection open
                outcome.append(procs.wait())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(HANG_BOUND)
        os.kill(server.proc.pid, signal.SIGCONT)
        assert not thread.is_alive(), "wait() went on past the host's deadline"
    started, result = outcome
    assert started == b"started\n"
    (exc,) = result.values()
    assert isinstance(exc, TimeoutError) and "within 3 seconds" in str(exc)


def test_after_a_stopping_signal_hosts_not_yet_started_are_not(tmp_path):
    # One host at a time: the others wait for their turn when SIGINT goes.
    with servers(tmp_path, 3) as hosts, Group([n for n, _ in hosts], max_concurrency=1) as group:
        with group.start("echo started; exec sleep 60") as procs:
            lines = iter(procs)
            first = next(lines)
            procs.send_signal("INT")
            assert list(lines) == []
            result = procs.wait()
    assert first.data == b"started\n" and result[first.host] == -signal.SIGINT
    others = [n for n, _ in hosts if n != first.host]
    assert all(isinstance(result[n], HostCancelled) and "not started" in str(result[n]) for n in others)


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_a_closed_group_process_reports_its_hosts_and_ignores_signals(tmp_path, kind):
    with servers(tmp_path, 2) as hosts:
        names = [n for n, _ in hosts]
        if kind == "blocking":
            with Group(names, timeout=HANG_BOUND) as group:
                procs = group.start("echo started; exec sleep 60")
                next(iter(procs))
                procs.close()
                result = procs.wait()
                procs.send_signal("INT")  # nothing: it ended
            procs.send_signal("INT")  # nothing: the group is closed
        else:

            async def main():
                async with AsyncGroup(names, timeout=HANG_BOUND) as group:
                    procs = await group.start("echo started; exec sleep 60")
                    await anext(aiter(procs))
                    await procs.close()
                    procs.send_signal("INT")
                    return await procs.wait()

            result = asyncio.run(main())
    assert set(result) == set(names)
    # The host that printed was running (killed), or ended; none hangs or raises.
    assert all(isinstance(r, (HostCancelled, int)) for r in result.values())
    assert any(isinstance(r, HostCancelled) for r in result.values())


def test_a_closed_group_refuses_start(tmp_path):
    with servers(tmp_path, 1) as hosts:
        group = Group([hosts[0][0]])
        group.close()
        with pytest.raises(ConnectionAbortedError, match="closed"):
            group.start("true")
        with Group([hosts[0][0]]) as group, pytest.raises(TypeError, match="bytes"):
            group.start("cat", input="text")


# --------------------------------------------------------------------------- the CLI


def cli(*args: str, timeout: float = HANG_BOUND) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RFRAME_TOKEN", "NO_COLOR")}
    return subprocess.run(
        [sys.executable, "-m", "rframe.client", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_cli_runs_on_every_host_with_prefixed_lines_and_a_summary(tmp_path):
    with servers(tmp_path, 3) as hosts:
        dead = f"127.0.0.31:{free_port('127.0.0.31')}"
        names = [name for name, _ in hosts]
        r = cli("--hosts", ",".join(names + [dead]), "-c", "cat id; echo; echo oops >&2")
        width = max(map(len, names + [dead]))
        for i, name in enumerate(names, start=2):
            assert f"{name:<{width}} | host {i}\n" in r.stdout
            assert f"{name:<{width}} | oops\n" in r.stderr
        assert f"{dead:<{width}} | rframe: connection refused" in r.stderr
        assert r.stderr.rstrip().endswith(f"3 ok, 1 failed: {dead} (connection refused)")
        assert r.returncode == 1
        # Every host succeeding is status 0; a command's status counts as a failure.
        r = cli("--hosts", ",".join(names), "-c", "true")
        assert (r.returncode, r.stderr) == (0, "3 ok, 0 failed\n")
        r = cli("--hosts", ",".join(names), "-c", 'case "$(cat id)" in "host 3") exit 7;; esac')
        assert r.returncode == 1 and r.stderr.endswith(f"2 ok, 1 failed: {names[1]} (exit 7)\n")


def test_cli_prints_lines_as_they_come_and_ctrl_c_interrupts_every_command(tmp_path):
    with servers(tmp_path, 2) as hosts:
        names = [name for name, _ in hosts]
        env = {k: v for k, v in os.environ.items() if k not in ("RFRAME_TOKEN", "NO_COLOR")}
        cmd = "trap 'echo interrupted; exit 130' INT; echo ready; while :; do sleep 0.02; done"
        with subprocess.Popen(
            [sys.executable, "-m", "rframe.client", "--hosts", ",".join(names), "-c", cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        ) as cli_proc:
            try:
                # Each host's first line is printed while its command runs on.
                seen = {cli_proc.stdout.readline() for _ in names}
                width = max(map(len, names))
                assert seen == {f"{name:<{width}} | ready\n".encode() for name in names}
                cli_proc.send_signal(signal.SIGINT)  # one Ctrl-C: SIGINT to every command
                out, err = cli_proc.communicate(timeout=HANG_BOUND)
            finally:
                cli_proc.kill()
    assert sorted(out.decode().splitlines()) == sorted(f"{name:<{width}} | interrupted" for name in names)
    assert cli_proc.returncode == 1
    assert err.decode().endswith(f"0 ok, 2 failed: {names[0]} (exit 130), {names[1]} (exit 130)\n")


def test_cli_ctrl_c_starts_no_more_hosts(tmp_path):
    with servers(tmp_path, 3) as hosts:
        names = [name for name, _ in hosts]
        env = {k: v for k, v in os.environ.items() if k not in ("RFRAME_TOKEN", "NO_COLOR")}
        with subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rframe.client",
                "--hosts",
                ",".join(names),
                "-j",
                "1",
                "-c",
                "echo up; exec sleep 60",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        ) as cli_proc:
            try:
                first = cli_proc.stdout.readline().decode()
                cli_proc.send_signal(signal.SIGINT)
                out, err = cli_proc.communicate(timeout=HANG_BOUND)
            finally:
                cli_proc.kill()
    assert first.endswith(" | up\n") and out == b""
    summary = err.decode().splitlines()[-1]
    assert summary.startswith("0 ok, 3 failed: ") and summary.count("(cancelled)") == 2, summary
    assert "(killed by signal 2)" in summary and cli_proc.returncode == 1


def test_cli_by_host_and_a_hosts_file(tmp_path):
    with servers(tmp_path, 2) as hosts:
        names = [name for name, _ in hosts]
        listing = tmp_path / "fleet.txt"
        listing.write_text(f"# the fleet\n{names[0]}  # the first\n\n{names[1]}\n")
        r = cli("--hosts-file", str(listing), "--by-host", "-c", "printf 'a\\nb'")
    assert r.returncode == 0, r.stderr
    for name in names:
        assert f"=== {name} ===\na\nb\n" in r.stdout


def test_cli_moves_files_on_every_host(tmp_path):
    local = tmp_path / "notes.txt"
    local.write_text("hello fleet")
    with servers(tmp_path, 2) as hosts:
        names = [name for name, _ in hosts]
        r = cli("--hosts", ",".join(names), "put", str(local))
        assert r.returncode == 0, r.stderr
        assert all((tmp_path / d / "notes.txt").read_text() == "hello fleet" for _, d in hosts)
        target = tmp_path / "got"
        r = cli("--hosts", ",".join(names), "get", "notes.txt", str(target / "{host}" / "n.txt"))
        assert r.returncode == 0, r.stderr
        assert all((target / name / "n.txt").read_text() == "hello fleet" for name in names)
        r = cli("--hosts", ",".join(names), "ls")
        assert r.returncode == 0 and r.stdout.count("notes.txt") == 2


def test_group_transfers_report_each_hosts_progress(tmp_path):
    local = tmp_path / "data.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    seen: dict[str, list[tuple[int, int]]] = {}
    with servers(tmp_path, 2) as hosts, Group([n for n, _ in hosts], timeout=HANG_BOUND) as group:
        result = group.upload(local, progress=lambda host, done, total: seen.setdefault(host, []).append((done, total)))
        assert result.ok
        size = local.stat().st_size
        assert set(seen) == {n for n, _ in hosts}
        for calls in seen.values():
            assert calls[0] == (0, size) and calls[-1] == (size, size)
            assert [d for d, _ in calls] == sorted(d for d, _ in calls)
        seen.clear()
        result = group.download(
            "data.bin", str(tmp_path / "got" / "{host}"), progress=lambda *a: seen.setdefault(a[0], []).append(a[1:])
        )
        assert result.ok and {calls[-1] for calls in seen.values()} == {(size, size)}


def test_cli_progress_is_a_line_a_host_or_one_for_all(monkeypatch):
    import io

    from rframe import _fleet_cli

    names = ["web1", "web22"]
    monkeypatch.setattr(_fleet_cli.shutil, "get_terminal_size", lambda: os.terminal_size((80, 24)))
    clock = iter(range(1, 1000))  # a call within 0.1 s of a draw draws not; here they are all 1 s apart
    monkeypatch.setattr(_fleet_cli, "time", type("Clock", (), {"monotonic": staticmethod(lambda: next(clock))}))
    out = io.StringIO()
    progress = _fleet_cli._Progress(names, out)
    progress("web1", 0, 100)
    progress.draw()
    progress("web22", 50, 200)
    progress.draw()
    progress("web1", 100, 100)
    progress.draw()
    screen = out.getvalue()
    # Each draw goes back over the lines it drew, and rewrites each host's line
    # (six draws: each call's, 1 s after the last, and three by hand).
    assert screen.count("\x1b[2K") == 1 + 1 + 2 + 2 + 2 + 2
    assert screen.count("\x1b[1F") == 2 and screen.count("\x1b[2F") == 3
    last = screen.rsplit("\x1b[2F", 1)[1]
    assert "web1 " in last and "100 B/100 B" in last and "done" in last
    assert "web22" in last and "50 B/200 B" in last
    # Too many hosts for the terminal: one line for all of them.
    monkeypatch.setattr(_fleet_cli.shutil, "get_terminal_size", lambda: os.terminal_size((120, 3)))
    out = io.StringIO()
    progress = _fleet_cli._Progress(names, out)
    progress("web1", 100, 100)
    progress("web22", 50, 200)
    progress.draw()
    (line,) = out.getvalue().rsplit("\x1b[2K", 1)[1:]
    assert line.startswith("2 hosts") and "150 B/300 B" in line and "2 started" in line
    # A line is cut to the terminal's width: a wrapped one would take two rows.
    monkeypatch.setattr(_fleet_cli.shutil, "get_terminal_size", lambda: os.terminal_size((30, 24)))
    out = io.StringIO()
    _fleet_cli._Progress(["a-rather-long-host-name.example:8848"], out)("a-rather-long-host-name.example:8848", 1, 2)
    assert max(len(line) for line in out.getvalue().split("\x1b[2K")) <= 29 + 1


@pytest.mark.parametrize(
    "args",
    [
        ["--hosts", "a:b", "-c", "true"],
        ["--hosts", ",", "-c", "true"],
        ["--hosts", "127.0.0.2", "--unix", "/tmp/x", "-c", "true"],
        ["--hosts", "127.0.0.2"],
        ["--hosts-file", "/nonexistent/fleet.txt", "-c", "true"],
        ["--hosts", "127.0.0.2,127.0.0.3", "get", "f", "same.txt"],
    ],
)
def test_cli_bad_fleet_arguments_are_status_2(args):
    r = cli(*args)
    assert r.returncode == 2 and r.stderr.startswith("rframe: "), r.stderr


def test_bench_fleet_quick():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(
        [sys.executable, os.path.join(root, "bench", "fleet.py"), "--quick", "--hosts", "4"],
        capture_output=True,
        text=True,
        timeout=HANG_BOUND * 2,
        cwd=root,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = [line for line in r.stdout.splitlines() if line.startswith("| rframe ")]
    wall, cpu, ratio = (cell.strip() for cell in row.split("|")[2:5])
    assert float(wall) > 0 and float(cpu) > 0 and ratio == "1.0x", row
    assert "on 4 hosts" in r.stdout and "asyncssh skipped: --quick" in r.stdout
