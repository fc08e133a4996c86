"""Live commands (issue 18): Client.start and AsyncClient.start against a real
server on 127.0.0.1, port 0. Time bounds are generous hang guards only."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rframe
from conftest import HANG_BOUND
from server_helpers import cli_server, kill_all, pgrep, raise_open_files, sleep_marker, wait_until

pytestmark = pytest.mark.filterwarnings("error")


# --------------------------------------------------------------------------- blocking client


def test_output_arrives_as_it_is_written(client):
    with client.start("echo a; sleep 2; echo b") as proc:
        t0 = time.monotonic()
        assert proc.stdout.readline() == b"a\n"
        first = time.monotonic() - t0
        assert proc.stdout.readline() == b"b\n"
        second = time.monotonic() - t0
        assert proc.wait() == 0
    # a came well before b (b is two seconds later); the bounds are generous.
    assert first < 1.5, first
    assert second - first > 1.0, (first, second)


def test_cat_echoes_each_line_before_the_end_of_input(client):
    with client.start("cat") as proc:
        for line in (b"one\n", b"two\n", b"three\n"):
            proc.stdin.write(line)
            assert proc.stdout.readline() == line
        assert proc.poll() is None
        proc.stdin.close()
        assert proc.stdout.read() == b""
        assert proc.wait() == 0


def test_a_line_by_line_python_answers_each_line(client):
    script = "import sys\nfor line in sys.stdin: print(line.strip().upper(), flush=True)"
    with client.start(["python3", "-u", "-c", script]) as proc:
        for word in (b"a", b"bc"):
            proc.stdin.write(word + b"\n")
            assert proc.stdout.readline() == word.upper() + b"\n"


def test_head_exits_while_stdin_is_still_open(client):
    with client.start("head -n 1") as proc:
        proc.stdin.write(b"first\nsecond\n")
        assert proc.wait(timeout=HANG_BOUND) == 0
        assert proc.stdout.read() == b"first\n"
        assert not proc.stdin.closed
        with pytest.raises(BrokenPipeError):
            proc.stdin.write(b"more\n")


def test_sigint_to_sleep_gives_minus_two(client):
    proc = client.start(["sleep", "100"])
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=HANG_BOUND) == -2
    assert proc.returncode == -2


@pytest.mark.parametrize(("method", "code"), [("terminate", -15), ("kill", -9)])
def test_terminate_and_kill(client, method, code):
    with client.start("echo ready; sleep 100") as proc:
        assert proc.stdout.readline() == b"ready\n"
        getattr(proc, method)()
        assert proc.wait(timeout=HANG_BOUND) == code


def test_a_command_that_traps_term_gives_its_own_status(client):
    with client.start("trap 'exit 3' TERM; echo ready; sleep 100 & wait") as proc:
        assert proc.stdout.readline() == b"ready\n"
        proc.terminate()
        assert proc.wait(timeout=HANG_BOUND) == 3


def test_a_signal_not_allowed_is_refused_before_it_is_sent(client):
    with client.start("cat") as proc:
        with pytest.raises(ValueError, match="STOP"):
            proc.send_signal("STOP")
        proc.stdin.close()
        assert proc.wait() == 0


def test_binary_output_is_byte_exact_and_the_streams_apart(client):
    data = bytes(range(256)) * 64
    stdout, stderr = client.start("cat; printf 'err\\0' >&2").communicate(data)
    assert stdout == data
    assert stderr == b"err\x00"


def test_a_deterministic_stream_arrives_whole(client):
    expected = subprocess.run(["seq", "1", "300000"], capture_output=True, check=True).stdout
    with client.start(["seq", "1", "300000"]) as proc:
        got = hashlib.sha256()
        count = 0
        while chunk := proc.stdout.read1(65536):
            got.update(chunk)
            count += len(chunk)
        assert proc.wait() == 0
    assert (count, got.hexdigest()) == (len(expected), hashlib.sha256(expected).hexdigest())


def test_output_frames_stay_within_a_small_max_body():
    # Both ends hold frames to max_body: one output frame past it would be
    # FrameTooLarge on the client and the connection's end.
    codec = rframe.Codec(max_body=65536)
    with rframe.Server(port=0, codec=codec) as server, rframe.Client(*server.address, codec=codec) as c:
        with c.start("head -c 3000000 /dev/zero") as proc:
            stdout, stderr = proc.communicate(timeout=HANG_BOUND)
        assert (len(stdout), stdout.count(0), stderr, proc.returncode) == (3000000, 3000000, b"", 0)
        assert c.run("echo ok").stdout == b"ok\n", "the connection goes on"


def test_a_slow_reader_blocks_the_command_and_loses_nothing(client, tmp_path):
    marker = tmp_path / "written"
    size = 40 << 20
    with client.start(f"head -c {size} /dev/zero && touch {marker}") as proc:
        assert len(proc.stdout.read(1 << 20)) == 1 << 20
        time.sleep(1.0)
        # The server stopped reading the pipe: the command waits on its write.
        assert not marker.exists()
        total = 1 << 20
        while chunk := proc.stdout.read1(1 << 20):
            total += len(chunk)
        assert proc.wait() == 0
    assert total == size
    assert marker.exists()


GIB = 1 << 30


def _yes_digest(size: int) -> str:
    """The SHA-256 of the first ``size`` bytes of ``yes`` (``y\\n`` repeated)."""
    block = b"y\n" * (1 << 19)  # 1 MiB
    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)
    digest.update(block[: size % len(block)])
    return digest.hexdigest()


def test_a_gibibyte_read_slowly_keeps_the_servers_memory_flat_and_arrives_whole():
    # The server in a process of its own, to watch its memory.
    with cli_server() as server, server.client() as c:
        with c.start(f"yes | head -c {GIB}", timeout=HANG_BOUND * 30) as proc:
            count = 0
            digest = hashlib.sha256()

            def take(n):
                nonlocal count
                data = proc.stdout.read(n)
                count += len(data)
                digest.update(data)

            take(1 << 20)
            before = server.memory_kib()["VmRSS"]
            for _ in range(5):  # 1 MiB a second: the command writes far faster
                time.sleep(1.0)
                take(1 << 20)
            after = server.memory_kib()["VmRSS"]
            while chunk := proc.stdout.read1(1 << 20):
                count += len(chunk)
                digest.update(chunk)
            assert proc.wait() == 0
        peak = server.memory_kib()["VmHWM"]
    # Without backpressure the server would have read gigabytes meanwhile.
    assert after - before < 32 << 10, (before, after)
    assert peak - before < 64 << 10, (before, peak)
    assert (count, digest.hexdigest()) == (GIB, _yes_digest(GIB))


CONCURRENT = 100


def test_a_hundred_streaming_commands_at_once_on_one_server(arun, server):
    raise_open_files(8 * CONCURRENT + 200)
    script = "echo started $N; read go; seq 1 $go; echo done $N >&2"

    async def main(_c):
        clients = []
        try:
            for _ in range(CONCURRENT):
                clients.append(await rframe.AsyncClient.connect(*server.address, timeout=HANG_BOUND))
            procs = await asyncio.gather(*(c.start(script, env={"N": str(n)}) for n, c in enumerate(clients)))
            # Every one has started (and waits for its input) before any is told to go on.
            firsts = await asyncio.gather(*(p.stdout.readline() for p in procs))
            assert firsts == [f"started {n}\n".encode() for n in range(CONCURRENT)]
            for n, p in enumerate(procs):
                p.stdin.write(f"{1000 + n}\n".encode())
            results = await asyncio.gather(*(p.communicate() for p in procs))
            for n, (p, (out, err)) in enumerate(zip(procs, results, strict=True)):
                assert out.split() == [str(i).encode() for i in range(1, 1001 + n)], n
                assert (err, p.returncode) == (f"done {n}\n".encode(), 0)
        finally:
            for c in clients:
                await c.close()
        return len(results)

    assert arun(main) == CONCURRENT


def test_a_disconnect_kills_the_command(server):
    marker = sleep_marker()
    try:
        c = rframe.Client(*server.address, timeout=HANG_BOUND)
        proc = c.start(f"echo ready; sleep {marker}")
        assert proc.stdout.readline() == b"ready\n"
        assert pgrep(f"sleep {marker}")
        c.close()
        assert wait_until(lambda: not pgrep(f"sleep {marker}"))
    finally:
        kill_all(f"sleep {marker}")


def test_the_time_limit_kills_the_command(client):
    with client.start("echo ready; sleep 100", timeout=0.5) as proc:
        assert proc.wait(timeout=HANG_BOUND) == -9
        assert proc.timed_out
        assert proc.stdout.read() == b"ready\n"


def test_the_connection_is_dedicated_while_the_command_runs(client):
    proc = client.start("cat")
    with pytest.raises(RuntimeError, match="live command"):
        client.run("true")
    proc.stdin.close()
    assert proc.wait() == 0
    assert client.run("echo free").stdout == b"free\n"


def test_leaving_with_kills_and_waits(client):
    with client.start("sleep 100") as proc:
        pass
    assert proc.returncode == -9
    assert client.run("echo next").stdout == b"next\n"


def test_wait_times_out_and_the_command_runs_on(client):
    with client.start("sleep 100") as proc:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
        assert proc.poll() is None


def test_a_refused_start_raises_and_the_connection_goes_on(client):
    with pytest.raises(rframe.RemoteError):
        client.start(["/no/such/program"])
    assert client.run("echo ok").stdout == b"ok\n"


def test_the_allow_list_applies_to_start():
    with rframe.Server(port=0, allow=["echo"]) as server, rframe.Client(*server.address) as c:
        with pytest.raises(rframe.RemoteError, match="not an allowed program"):
            c.start(["cat"])
        assert c.start(["echo", "hi"]).communicate() == (b"hi\n", b"")


# --------------------------------------------------------------------------- asyncio client


def test_async_output_arrives_as_it_is_written(arun):
    async def main(c):
        async with await c.start("echo a; sleep 2; echo b") as proc:
            t0 = time.monotonic()
            assert await proc.stdout.readline() == b"a\n"
            first = time.monotonic() - t0
            assert await proc.stdout.readline() == b"b\n"
            return first, time.monotonic() - t0, await proc.wait()

    first, second, code = arun(main)
    assert code == 0
    assert first < 1.5 and second - first > 1.0, (first, second)


def test_async_interactive_cat_and_iteration(arun):
    async def main(c):
        proc = await c.start("cat")
        for line in (b"x\n", b"y\n"):
            proc.stdin.write(line)
            await proc.stdin.drain()
            assert await proc.stdout.readline() == line
        proc.stdin.write(b"1\n2\n")
        proc.stdin.close()
        lines = [line async for line in proc.stdout]
        return lines, await proc.wait()

    assert arun(main) == ([b"1\n", b"2\n"], 0)


def test_async_signals_and_trap(arun):
    async def main(c):
        proc = await c.start(["sleep", "100"])
        proc.send_signal(signal.SIGINT)
        first = await proc.wait()
        proc = await c.start("trap 'exit 3' TERM; echo ready; sleep 100 & wait")
        assert await proc.stdout.readline() == b"ready\n"
        proc.terminate()
        second = await proc.wait()
        proc = await c.start("sleep 100")
        proc.kill()
        return first, second, await proc.wait()

    assert arun(main) == (-2, 3, -9)


def test_a_signal_gets_through_while_the_command_leaves_its_stdin_unread(arun):
    # 300 KB of stdin that `sleep` never reads fills the pipe; the server
    # still reads the peer's frames behind it (up to a MiB held), so the
    # signal arrives now, not when the command ends.
    async def main(c):
        proc = await c.start(["sleep", "30"])
        proc.stdin.write(b"x" * 300_000)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = await proc.wait()
        return code, time.monotonic() - started

    code, took = arun(main)
    assert code == -2 and took < 10, took


def test_async_communicate_binary_and_streams_apart(arun):
    data = bytes(range(256)) * 64

    async def main(c):
        proc = await c.start("cat; printf 'err' >&2; exit 4")
        out, err = await proc.communicate(data)
        return out, err, proc.returncode

    assert arun(main) == (data, b"err", 4)


def test_async_slow_reader_blocks_the_command(arun, tmp_path):
    marker = tmp_path / "written"
    size = 40 << 20

    async def main(c):
        async with await c.start(f"head -c {size} /dev/zero && touch {marker}") as proc:
            total = len(await proc.stdout.read(1 << 20))
            await asyncio.sleep(1.0)
            blocked = not marker.exists()
            while chunk := await proc.stdout.read(1 << 20):
                total += len(chunk)
            return blocked, total, await proc.wait()

    assert arun(main) == (True, size, 0)
    assert marker.exists()


def test_async_other_calls_wait_for_the_command(arun):
    async def main(c):
        proc = await c.start("sleep 0.5; echo done")
        run = asyncio.ensure_future(c.run("echo after"))
        await asyncio.sleep(0.1)
        assert not run.done()
        out = await proc.stdout.read()
        return out, (await run).stdout

    assert arun(main) == (b"done\n", b"after\n")


def test_async_a_disconnect_kills_the_command(arun):
    marker = sleep_marker()

    async def main(c):
        proc = await c.start(f"echo ready; sleep {marker}")
        assert await proc.stdout.readline() == b"ready\n"
        assert pgrep(f"sleep {marker}")
        await c.close()
        with pytest.raises(ConnectionAbortedError):
            await proc.wait()

    try:
        arun(main)
        assert wait_until(lambda: not pgrep(f"sleep {marker}"))
    finally:
        kill_all(f"sleep {marker}")


def test_async_cancelling_a_waiter_kills_nothing(arun):
    async def main(c):
        proc = await c.start("echo ready; read x; echo got $x")
        assert await proc.stdout.readline() == b"ready\n"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await proc.wait()
        proc.stdin.write(b"it\n")
        return await proc.stdout.readline(), await proc.wait()

    assert arun(main) == (b"got it\n", 0)


def test_the_process_class_is_exported():
    assert rframe.RemoteProcess.__module__ == "rframe._process"
    assert Path(rframe.__file__).parent.joinpath("_process.py").exists()


# --------------------------------------------------------------------------- the CLI


def _cli(server, *args):
    import sys

    return [sys.executable, "-m", "rframe.client", "--port", str(server.address[1]), *args]


def test_cli_forwards_stdin_and_keeps_the_streams_and_status(server):
    r = subprocess.run(
        _cli(server, "-c", "cat; echo e >&2; exit 5"), input=b"hi\n", capture_output=True, timeout=HANG_BOUND
    )
    assert (r.returncode, r.stdout, r.stderr) == (5, b"hi\n", b"e\n")


def test_cli_streams_output_as_it_is_written(server):
    cmd = _cli(server, "-c", "echo a; sleep 2; echo b")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        t0 = time.monotonic()
        assert proc.stdout.readline() == b"a\n"
        first = time.monotonic() - t0
        assert proc.stdout.read() == b"b\n"
        assert proc.wait(timeout=HANG_BOUND) == 0
    assert first < 1.8, first


def test_cli_ctrl_c_is_sent_to_the_command(server):
    cmd = _cli(server, "-c", "trap 'echo INT; exit 9' INT; echo ready; sleep 100 & wait")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.read() == b"INT\n"
        assert proc.wait(timeout=HANG_BOUND) == 9


def test_bench_stream_quick():
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, str(root / "bench" / "stream.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=HANG_BOUND * 2,
        cwd=root,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = [line for line in r.stdout.splitlines() if line.startswith("| rframe |")]
    median, p99, rate, cpu, server_cpu, idle = (float(cell.replace(",", "")) for cell in row.split("|")[2:8])
    assert 0 < median <= p99 and rate > 0 and cpu > 0 and server_cpu > 0 and idle >= 0, row
    assert "asyncssh skipped: --quick" in r.stdout


def test_a_live_command_has_no_time_limit_unless_the_server_or_the_request_sets_one():
    # The server's `timeout` is for run; a live command runs while its client stays.
    with rframe.Server(port=0, timeout=0.5) as server, rframe.Client(*server.address, timeout=HANG_BOUND) as c:
        with c.start("sleep 1.5; echo outlived") as proc:
            assert proc.wait(timeout=HANG_BOUND) == 0 and not proc.timed_out
            assert proc.stdout.read() == b"outlived\n"
        with pytest.raises(rframe.CommandTimeout):
            c.run("sleep 5")
        with c.start("sleep 100", timeout=0.5) as proc:  # a request may ask for a limit
            assert proc.wait(timeout=HANG_BOUND) == -9 and proc.timed_out
    with rframe.Server(port=0, live_timeout=0.5) as server, rframe.Client(*server.address, timeout=HANG_BOUND) as c:
        with c.start("echo ready; sleep 100") as proc:
            assert proc.wait(timeout=HANG_BOUND) == -9 and proc.timed_out
            assert proc.stdout.read() == b"ready\n"
        with c.start("sleep 100", timeout=60) as proc:  # and never more than the server's
            assert proc.wait(timeout=HANG_BOUND) == -9 and proc.timed_out
    with pytest.raises(ValueError, match="live_timeout"):
        rframe.Server(port=0, live_timeout=0)


def test_the_server_cli_sets_a_live_limit_apart_from_runs():
    with cli_server("--timeout", "0.5", "--live-timeout", "1") as server, server.client() as c:
        with c.start("sleep 0.7; echo outlived-run-limit; sleep 100") as proc:
            assert proc.wait(timeout=HANG_BOUND) == -9 and proc.timed_out
            assert proc.stdout.read() == b"outlived-run-limit\n"
        with pytest.raises(rframe.CommandTimeout):
            c.run("sleep 5")


def test_a_command_that_takes_none_of_a_mib_of_stdin_is_killed_after_the_idle_timeout():
    """With that much stdin waiting, the server stops reading the client, so
    it could not see the client leave: the idle timeout bounds it instead."""
    marker = sleep_marker()
    try:
        with rframe.Server(port=0, idle_timeout=1) as server:
            c = rframe.Client(*server.address, timeout=HANG_BOUND)
            proc = c.start(f"echo ready; sleep {marker}")
            assert proc.stdout.readline() == b"ready\n"

            def feed():
                try:
                    proc.stdin.write(b"x" * (8 << 20))
                except OSError:
                    pass  # the server gave up on the connection

            writer = threading.Thread(target=feed, daemon=True)
            writer.start()
            assert wait_until(lambda: not pgrep(f"sleep {marker}"))
            writer.join(HANG_BOUND)
            assert not writer.is_alive()
            c.close()
    finally:
        kill_all(f"sleep {marker}")


def test_a_command_that_takes_its_stdin_slowly_is_not_taken_for_a_stalled_one():
    reader = f"{sys.executable} -c 'import sys, time\nwhile sys.stdin.buffer.read(65536): time.sleep(0.2)'"
    with rframe.Server(port=0, idle_timeout=1) as server, rframe.Client(*server.address, timeout=HANG_BOUND) as c:
        with c.start(reader) as proc:
            writer = threading.Thread(target=proc.stdin.write, args=(b"x" * (3 << 20),), daemon=True)
            writer.start()
            time.sleep(3)  # three idle timeouts, each with some stdin taken
            assert proc.poll() is None
            proc.kill()
            assert proc.wait(timeout=HANG_BOUND) == -9
        writer.join(HANG_BOUND)


def test_the_client_timeout_bounds_progress_not_a_silent_command_or_a_whole_stdin_write(server):
    with rframe.Client(*server.address, timeout=0.5) as c:
        with c.start("sleep 1; echo late") as proc:
            assert proc.stdout.read() == b"late\n" and proc.wait() == 0
        # 16 MiB taken 64 KiB every 10 ms: 2.6 s in all (past what the buffers
        # between hold), none of it stalled for 0.5 s
        slow_cat = (
            f"{sys.executable} -c 'import sys, time\n"
            "while b := sys.stdin.buffer.read(65536): sys.stdout.buffer.write(b); time.sleep(0.01)'"
        )
        data = os.urandom(16 << 20)
        with c.start(slow_cat) as proc:
            out, _ = proc.communicate(input=data)
        assert out == data and proc.returncode == 0


def test_a_buffer_that_cannot_be_written_is_refused_before_output_is_read_for_it(client):
    with client.start("echo kept") as proc:
        with pytest.raises(TypeError, match="writable"):
            proc.stdout.raw.readinto(b"read-only buffer")
        assert proc.stdout.read() == b"kept\n" and proc.wait(timeout=HANG_BOUND) == 0
