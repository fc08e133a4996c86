"""rframe.Group and rframe.AsyncGroup: one operation on many servers.

Each "host" is a server of its own on its own loopback address (127.0.0.2,
127.0.0.3, ...), so hosts differ as they would on a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import platforms
import rframe
from rframe import _group
from rframe._group import AsyncGroup, Group, GroupError, GroupResult, HostCancelled, parse_host

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
    digest = hashlib.sha256(data).hexdigest()
    for name in names:
        assert got[name]["sha256"] == digest
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


def test_doctests():
    result = doctest.testmod(_group, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


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
