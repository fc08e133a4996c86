"""rframe.AsyncClient, read_frame_async and send_frame_async, against real servers.

The key scenarios run on both event loops (the ``arun`` fixture: the default
loop and uvloop); the others are pytest-asyncio tests on the default loop.
Warnings are errors here: no unclosed transports, no "coroutine was never
awaited", no "Event loop is closed". Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import doctest
import gc
import io
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rframe
import rframe._async
import rframe._protocol
from conftest import HANG_BOUND
from server_helpers import ENV, ROOT, kill_all, pgrep, running, sleep_marker

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the "test" extra
    uvloop = None

pytestmark = pytest.mark.filterwarnings("error")

LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")),
]


@pytest.fixture(params=LOOPS)
def arun(request):
    """arun(coroutine_function, *args): runs it to completion on a fresh event
    loop of the parametrized kind (default asyncio, uvloop), bounded in time."""

    def run(fn, *args, bound=HANG_BOUND * 2, **kwargs):
        factory = uvloop.new_event_loop if request.param == "uvloop" else None

        async def bounded():
            async with asyncio.timeout(bound):
                return await fn(*args, **kwargs)

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(bounded())

    run.loop_name = request.param
    return run


def _echo(frame):
    """Handler: echoes the header and body, after header["delay"] seconds;
    header["fail"] makes it raise."""
    h = frame.header
    delay = h.get("delay")
    if delay:
        time.sleep(delay)
    if h.get("fail"):
        raise ValueError(h["fail"])
    return h, frame.body


# The shared servers serve TLS too: with "tls" every test that takes them and
# opens its clients with client() runs over TLS (the loop's ssl= transport).
TRANSPORTS = ["plain", "tls"]


@pytest.fixture(scope="module", params=TRANSPORTS)
def server(request):
    with running(rframe.Server(port=0, tls=request.param == "tls")) as s:
        yield s


@pytest.fixture(scope="module", params=TRANSPORTS)
def echo_server(request):
    with running(rframe.Server(port=0, handler=_echo, tls=request.param == "tls")) as s:
        yield s


def client(server, **kwargs) -> rframe.AsyncClient:
    kwargs.setdefault("timeout", HANG_BOUND)
    if server.tls_fingerprint is not None:
        kwargs.setdefault("tls", True)
        kwargs.setdefault("fingerprint", server.tls_fingerprint)
    if isinstance(server.address, str):
        return rframe.AsyncClient(unix_path=server.address, **kwargs)
    return rframe.AsyncClient(*server.address, **kwargs)


async def wait_for_condition(predicate, bound=HANG_BOUND, interval=0.02):
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the same results as Client


RUNS = [
    (("echo hi; echo oops >&2; exit 3",), {}),
    ((["printf", "%s|", "a b", "$HOME"],), {}),
    (("cat",), {"input": b"fed \x00 to stdin"}),
    (("cat",), {"input": "text in", "text": True}),
    (("echo $GREETING",), {"env": {"GREETING": "hi there"}, "text": True}),
    (("pwd",), {"cwd": "/tmp"}),
    ((r"printf '\377\344\270\255'",), {"text": True}),
    (("kill -KILL $$",), {}),
    ((Path("/bin/true"),), {}),
]


def test_run_gives_the_blocking_clients_results(arun, server):
    expected = []
    with rframe.Client(*server.address, timeout=HANG_BOUND) as blocking:
        for args, kwargs in RUNS:
            expected.append(blocking.run(*args, **kwargs))

    async def main():
        async with client(server) as c:
            return [await c.run(*args, **kwargs) for args, kwargs in RUNS]

    got = arun(main)
    assert got == expected
    assert [r.returncode for r in got][:2] == [3, 0] and got[7].returncode == -signal.SIGKILL
    assert got[0].stdout == b"hi\n" and got[0].stderr == b"oops\n" and got[4].stdout == "hi there\n"
    assert all(type(a.stdout) is type(b.stdout) for a, b in zip(got, expected))


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001 - compared below
        return (type(e), str(e), getattr(e, "code", None), getattr(e, "stdout", None))


async def _aoutcome(coro):
    try:
        return ("ok", await coro)
    except Exception as e:  # noqa: BLE001 - compared below
        return (type(e), str(e), getattr(e, "code", None), getattr(e, "stdout", None))


def test_errors_are_the_blocking_clients(arun):
    calls = [
        ((["sh", "-c", "exit 2"],), {"check": True}),
        ((["sh", "-c", "echo started; sleep 5"],), {"timeout": 0.3}),
        ((["ls"],), {}),  # not allowed
        ((["echo", "allowed"],), {}),
        (("echo",), {"timeout": 0}),
        (("echo",), {"timeout": -1}),
    ]
    with running(rframe.Server(port=0, allow=["echo", "sh", "sleep"])) as s:
        with rframe.Client(*s.address, timeout=HANG_BOUND) as blocking:
            expected = [_outcome(lambda a=a, k=k: blocking.run(*a, **k)) for a, k in calls]

        async def main():
            async with client(s) as c:
                got = [await _aoutcome(c.run(*a, **k)) for a, k in calls]
                got.append(("still usable", (await c.run(["echo", "x"])).stdout))
                return got

        got = arun(main)
    assert got[:-1] == expected
    assert got[-1] == ("still usable", b"x\n")
    kinds = [g[0] for g in got[:-1]]
    assert kinds == [rframe.CommandError, rframe.CommandTimeout, rframe.RemoteError, "ok", ValueError, ValueError]
    assert got[1][3] == b"started\n" and got[2][2] == "not-allowed"


def test_command_timeout_is_a_timeout_error_and_the_connection_stays(arun, server):
    async def main():
        async with client(server) as c:
            with pytest.raises(TimeoutError) as info:
                await c.run("echo begun; sleep 5", timeout=0.3)
            assert isinstance(info.value, rframe.CommandTimeout) and info.value.stdout == b"begun\n"
            assert not c.closed
            return (await c.run("echo after")).stdout

    assert arun(main) == b"after\n"


@pytest.mark.asyncio
async def test_spawn_error_and_handler_error(echo_server, server):
    async with client(server) as c:
        with pytest.raises(rframe.RemoteError) as info:
            await c.run(["/nonexistent/program"])
        assert info.value.code == "spawn" and not c.closed
    async with client(echo_server) as c:
        with pytest.raises(rframe.RemoteError) as info:
            await c.request(b"x", fail="boom")
        assert info.value.code == "handler" and "boom" in info.value.message
        assert (await c.request(b"fine", seq=1)).body == b"fine"


@pytest.mark.asyncio
async def test_header_that_cannot_be_encoded_keeps_the_connection(echo_server):
    async with client(echo_server) as c:
        with pytest.raises(TypeError):
            await c.request(header={"x": object()})
        with pytest.raises(ValueError):
            await c.request(header={"x": float("nan")})
        with pytest.raises(TypeError):
            await c.send(header={"x": object()})
        assert not c.closed
        assert (await c.request(b"fine")).body == b"fine"


# --------------------------------------------------------------------------- connecting and closing


def test_unix_socket(arun, tmp_path):
    path = tmp_path / "rframe.sock"

    async def main():
        async with rframe.AsyncClient(unix_path=path, timeout=HANG_BOUND) as c:
            assert c.address == str(path)
            r = await c.run("echo over-unix")
            replies = await asyncio.gather(*(c.run(["echo", str(i)]) for i in range(20)))
            return r.stdout, [x.stdout for x in replies]

    with running(rframe.Server(unix_path=str(path))):
        out, many = arun(main)
    assert out == b"over-unix\n" and many == [f"{i}\n".encode() for i in range(20)]


def test_unix_socket_handler_server(arun, tmp_path):
    path = tmp_path / "h.sock"

    async def main():
        c = await rframe.AsyncClient.connect(unix_path=path, timeout=HANG_BOUND)
        try:
            return [f.body for f in await asyncio.gather(*(c.request(b"%d" % i) for i in range(100)))]
        finally:
            await c.close()

    with running(rframe.Server(unix_path=str(path), handler=_echo)):
        assert arun(main) == [b"%d" % i for i in range(100)]


@pytest.mark.asyncio
async def test_connect_errors_are_the_builtins(tmp_path):
    with pytest.raises(ConnectionRefusedError):
        await rframe.AsyncClient.connect("127.0.0.1", free_port(), timeout=HANG_BOUND)
    with pytest.raises(FileNotFoundError):
        await rframe.AsyncClient.connect(unix_path=tmp_path / "nothing.sock", timeout=HANG_BOUND)
    with pytest.raises(ConnectionRefusedError):
        async with rframe.AsyncClient("127.0.0.1", free_port()):
            pass  # pragma: no cover


def test_bad_arguments():
    with pytest.raises(ValueError):
        rframe.AsyncClient(timeout=0)
    with pytest.raises(ValueError):
        rframe.AsyncClient(token="")
    with pytest.raises(ValueError, match="JSON"):
        rframe.AsyncClient(token="t", codec=rframe.Codec(json_header=False))


@pytest.mark.asyncio
async def test_timeout_covers_connecting():
    """A listener whose accept queue is full: the SYN is dropped, connect() hangs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    loop = asyncio.get_running_loop()
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            fillers.append(s)
            try:
                await asyncio.wait_for(loop.sock_connect(s, srv.getsockname()), 0.3)
            except TimeoutError:
                break
        else:
            pytest.skip("could not fill the accept queue on this platform")
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await rframe.AsyncClient.connect(*srv.getsockname(), timeout=0.3)
        assert time.monotonic() - t0 < 3
    finally:
        for s in fillers:
            s.close()
        srv.close()


@pytest.mark.asyncio
async def test_timeout_covers_the_handshake():
    """A server that accepts and never answers: the token handshake times out."""
    conns = []
    server = await asyncio.start_server(lambda r, w: conns.append(w), "127.0.0.1", 0)
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await rframe.AsyncClient.connect(*server.sockets[0].getsockname()[:2], token="t", timeout=0.3)
        assert time.monotonic() - t0 < 3
    finally:
        server.close()
        for w in conns:
            w.close()
        await server.wait_closed()


def test_token(arun):
    async def main(address):
        async with rframe.AsyncClient(*address, token="s3cret", timeout=HANG_BOUND) as c:
            ok = (await c.run("echo authenticated")).stdout
        with pytest.raises(rframe.AuthenticationError):
            await rframe.AsyncClient.connect(*address, token=b"wrong", timeout=HANG_BOUND)
        async with rframe.AsyncClient(*address, timeout=HANG_BOUND) as c:  # no token
            with pytest.raises(rframe.AuthenticationError, match="required"):
                await c.run("echo x")
            assert c.closed
            with pytest.raises(ConnectionAbortedError, match="refused"):
                await c.run("echo x")
        return ok

    with running(rframe.Server(port=0, token="s3cret")) as s:
        assert arun(main, s.address) == b"authenticated\n"


@pytest.mark.asyncio
async def test_token_client_refuses_a_server_without_token(server):
    with pytest.raises(rframe.AuthenticationError, match="has no token"):
        await rframe.AsyncClient.connect(*server.address, token="anything", timeout=HANG_BOUND)
    async with client(server) as c:  # without a token it serves
        assert (await c.run("echo welcome")).stdout == b"welcome\n"


@pytest.mark.asyncio
async def test_server_that_cannot_prove_the_token():
    """A fake server that challenges but then welcomes without a valid proof."""

    async def fake(reader, writer):
        try:
            await rframe.read_frame_async(reader)
            await rframe.send_frame_async(writer, op="challenge", nonce="00" * 32)
            await rframe.read_frame_async(reader)
            await rframe.send_frame_async(writer, op="welcome", proof="ab" * 32)
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(fake, "127.0.0.1", 0)
    try:
        with pytest.raises(rframe.AuthenticationError, match="could not prove"):
            await rframe.AsyncClient.connect(*server.sockets[0].getsockname()[:2], token="t", timeout=HANG_BOUND)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_busy_server_answer_is_a_remote_error():
    with running(rframe.Server(port=0, max_connections=1)) as s:
        async with client(s) as first:
            assert (await first.run("echo first")).ok
            for wait_first in (False, True):
                second = await rframe.AsyncClient.connect(*s.address, timeout=HANG_BOUND)
                try:
                    if wait_first:  # the answer came before the call: it is still given
                        assert await wait_for_condition(lambda second=second: second.closed)
                    with pytest.raises(rframe.RemoteError) as info:
                        await second.run("echo second")
                    assert info.value.code == "busy"
                    assert await wait_for_condition(lambda second=second: second.closed)
                    with pytest.raises(ConnectionAbortedError, match="busy"):
                        await second.run("echo second")
                finally:
                    await second.close()


@pytest.mark.asyncio
async def test_close(echo_server):
    c = client(echo_server)
    assert c.closed and "not connected" in repr(c)
    with pytest.raises(RuntimeError, match="not connected"):
        await c.request(b"x")
    await c.__aenter__()
    assert not c.closed and "open" in repr(c)
    waiting = asyncio.ensure_future(c.request(b"slow", delay=0.3))
    await asyncio.sleep(0.05)
    await c.close()
    await c.close()  # twice is fine
    assert c.closed and "closed: the client was closed" in repr(c)
    with pytest.raises(ConnectionAbortedError, match="client was closed"):
        await asyncio.wait_for(waiting, HANG_BOUND)
    for call in (lambda: c.request(b"x"), lambda: c.run("true"), lambda: c.send(b"x"), c.recv):
        with pytest.raises(ConnectionAbortedError, match="closed"):
            await call()
    with pytest.raises(ConnectionAbortedError, match="closed"):
        async with c:
            pass  # pragma: no cover
    # closed before it ever connected
    d = client(echo_server)
    await d.close()
    with pytest.raises(ConnectionAbortedError, match="closed"):
        await d.request(b"x")
    with pytest.raises(ConnectionAbortedError, match="closed"):
        async with d:
            pass  # pragma: no cover
    # async with on a client that connect() opened
    async with await rframe.AsyncClient.connect(*echo_server.address, timeout=HANG_BOUND) as e:
        assert (await e.request(b"e")).body == b"e"
    assert e.closed


@pytest.mark.asyncio
async def test_unclosed_client_warns_and_its_transport_is_closed(echo_server):
    c = await rframe.AsyncClient.connect(*echo_server.address, timeout=HANG_BOUND)
    conn = c._conn
    with pytest.warns(ResourceWarning, match="unclosed <rframe.AsyncClient"):
        del c
        gc.collect()
    await asyncio.wait_for(conn.lost, HANG_BOUND)


@pytest.mark.asyncio
async def test_client_is_bound_to_its_event_loop(echo_server):
    async with client(echo_server) as c:

        def elsewhere():
            return asyncio.run(c.request(b"x"))

        def close_elsewhere():
            return asyncio.run(c.close())

        with pytest.raises(RuntimeError, match="another event loop"):
            await asyncio.get_running_loop().run_in_executor(None, elsewhere)
        with pytest.raises(RuntimeError, match="another event loop"):
            await asyncio.get_running_loop().run_in_executor(None, close_elsewhere)
        assert not c.closed
        assert (await c.request(b"still mine")).body == b"still mine"


def test_client_is_bound_to_its_loop_not_to_a_thread(echo_server):
    loop = asyncio.new_event_loop()
    c = loop.run_until_complete(client(echo_server).__aenter__())
    conn = c._conn
    assert conn.get_buffer.__self__ is conn.reader  # the loop's reads go to Rust
    # Stopped, not closed: a later loop in the same thread must not use it.
    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(c.request(b"x"))
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(HANG_BOUND)  # running there now
        # The thread that opened it and ran its loop may not, while the loop runs elsewhere...
        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(c.request(b"y"))
        # ...and the thread its loop runs in may.
        reply = asyncio.run_coroutine_threadsafe(c.request(b"moved"), loop).result(HANG_BOUND)
        assert reply.body == b"moved"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(HANG_BOUND)
    assert not t.is_alive()
    assert loop.run_until_complete(c.request(b"back")).body == b"back"
    loop.run_until_complete(c.close())
    loop.close()


@pytest.mark.parametrize("loop_name", LOOPS)
def test_loops_in_two_threads_read_into_buffers_of_their_own(echo_server, loop_name):
    # Clients opened in this thread, then used by loops running at the same
    # time in two threads: each thread's reads must land in its own buffer.
    new_loop = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    loops = [new_loop() for _ in range(2)]
    clients = []
    together = threading.Barrier(2, timeout=HANG_BOUND)
    threads = set()

    async def exchange(c, tag):
        together.wait()  # both loops run from here on
        threads.add(threading.get_ident())
        bodies = [bytes([tag, k % 256]) * 50_000 for k in range(40)]
        async with asyncio.timeout(HANG_BOUND):
            replies = await asyncio.gather(*(c.request(b) for b in bodies))
        return [r.body for r in replies] == bodies

    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        clients = [lp.run_until_complete(client(echo_server).__aenter__()) for lp in loops]
        runs = [pool.submit(lp.run_until_complete, exchange(c, tag)) for tag, (lp, c) in enumerate(zip(loops, clients))]
        assert [r.result(HANG_BOUND * 2) for r in runs] == [True, True]
        assert len(threads) == 2
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for lp, c in zip(loops, clients):
            if not lp.is_running():
                lp.run_until_complete(c.close())
        for lp in loops:
            if not lp.is_running():
                lp.close()


# --------------------------------------------------------------------------- the server goes away


async def _serve_once(respond):
    """An asyncio server: reads one frame, writes ``respond`` (raw bytes), ends its side."""

    async def handle(reader, writer):
        try:
            await rframe.read_frame_async(reader)
            writer.write(respond)
            writer.write_eof()  # a clean close: FIN, not RST for unread requests
            await reader.read()
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize(
    "respond, cause",
    [
        (b"", None),
        (rframe.pack_frame(b"hello")[:-2], rframe.IncompleteFrame),
    ],
    ids=["eof", "mid-frame"],
)
@pytest.mark.asyncio
async def test_server_closing_is_a_connection_reset(respond, cause):
    server = await _serve_once(respond)
    try:
        async with rframe.AsyncClient(*server.sockets[0].getsockname()[:2], timeout=HANG_BOUND) as c:
            second = asyncio.ensure_future(c.request(b"2"))
            with pytest.raises(ConnectionResetError, match="the server closed the connection") as info:
                await c.request(b"1")
            assert type(info.value.__cause__) is cause if cause else info.value.__cause__ is None
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(second, HANG_BOUND)
            assert c.closed
            with pytest.raises(ConnectionAbortedError, match="the server closed the connection"):
                await c.request(b"3")
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_garbage_from_the_server_is_the_frame_error():
    server = await _serve_once(b"\xff\xff\xff\xff more garbage")
    try:
        async with rframe.AsyncClient(*server.sockets[0].getsockname()[:2], timeout=HANG_BOUND) as c:
            with pytest.raises(rframe.FrameError, match="negative"):
                await c.request(b"1")
            with pytest.raises(ConnectionAbortedError, match="reading a frame failed: FrameError"):
                await c.request(b"2")
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_a_reply_whose_header_python_cannot_read_is_a_header_error():
    # JSON the codec takes (a string with a byte that is not UTF-8) that
    # json.loads would refuse: its caller gets the HeaderError, nothing hangs
    # (the stream cannot be trusted past it: the connection closes).
    header = b'{"total_size": 2, "x": "\xff"}'
    server = await _serve_once(len(header).to_bytes(4, "little") + header + b"hi")
    try:
        async with rframe.AsyncClient(*server.sockets[0].getsockname()[:2], timeout=HANG_BOUND) as c:
            with pytest.raises(rframe.HeaderError):
                await asyncio.wait_for(c.request(b"1"), HANG_BOUND)
    finally:
        server.close()
        await server.wait_closed()


def test_a_transfer_cancelled_just_after_it_began_closes_the_connection(tmp_path):
    # The cancellation lands in the loop iteration that resolved the
    # download's first step: the session, not the driver, says what is left
    # (a transfer under way), so the connection closes rather than hand its
    # chunks to later calls.
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(3 << 20))

    async def main(address):
        loop = asyncio.get_running_loop()
        async with rframe.AsyncClient(*address, timeout=HANG_BOUND) as c:
            task = None

            class Cancelling(asyncio.Future):
                def set_result(self, result):
                    super().set_result(result)
                    if isinstance(result, tuple) and result[0] == "download-started":
                        task.cancel()

            loop.create_future = lambda: Cancelling(loop=loop)
            try:
                task = asyncio.ensure_future(c.download("big.bin", str(tmp_path / "copy.bin")))
                with pytest.raises(asyncio.CancelledError):
                    await task
            finally:
                del loop.create_future
            assert c.closed and "halfway" in repr(c)
            with pytest.raises(ConnectionAbortedError):
                await c.run("echo hi")
        async with rframe.AsyncClient(*address, timeout=HANG_BOUND) as c:
            assert (await c.run("echo hi")).stdout == b"hi\n"

    with rframe.Server(port=0, root=str(root)) as server:
        asyncio.run(main(server.address))  # (asyncio's loop: its create_future can be wrapped)
    assert not (tmp_path / "copy.bin").exists()


def test_a_framing_error_during_a_live_command_closes_the_connection(arun):
    # The live command's hook sees the close, and the connection closes too:
    # its transport, so the server kills the command.
    async def main(address):
        c = await rframe.AsyncClient.connect(*address, codec=rframe.Codec(max_body=1000), timeout=HANG_BOUND)
        try:
            proc = await c.start(
                [sys.executable, "-c", "import sys, time; sys.stdout.write('x' * 100000); time.sleep(60)"]
            )
            with pytest.raises(ConnectionAbortedError, match="FrameTooLarge"):
                await asyncio.wait_for(proc.wait(), HANG_BOUND)
            assert c.closed and c._conn.transport.is_closing()
        finally:
            await c.close()

    with rframe.Server(port=0) as server:
        arun(main, server.address)


def _session_reader(codec=None):
    return rframe._rframe._SessionReader(rframe._rframe.ClientSession(codec))


def test_session_reader_decodes_what_each_read_put_in_its_buffer():
    # The protocol's read side: the loop fills get_buffer()'s view, then
    # reports how many bytes it wrote; frames split over reads come out whole.
    reader = _session_reader()
    view = reader.get_buffer(-1)
    assert len(view) == 256 * 1024 and not view.readonly
    stream = rframe.pack_frame(b"one", seq=1) + rframe.pack_frame(b"two", seq=2)
    got = []
    for i in range(0, len(stream), 7):
        piece = stream[i : i + 7]
        reader.get_buffer(65536)[: len(piece)] = piece
        got += reader.deliver(len(piece), {}) or []
    # Nobody asked: both come back as frames nobody claimed, whole and in order.
    assert [(kind, f.header, f.body) for kind, f in got] == [
        ("unsolicited", {"seq": 1, "total_size": 3}, b"one"),
        ("unsolicited", {"seq": 2, "total_size": 3}, b"two"),
    ]
    with pytest.raises(ValueError, match="262145 bytes read into a smaller buffer"):
        reader.deliver(len(view) + 1, {})
    with pytest.raises(OverflowError):
        reader.deliver(-1, {})
    # One buffer per thread, shared by the readers of that thread.
    assert _session_reader().get_buffer(-1).obj is view.obj
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(lambda: reader.get_buffer(-1).obj).result(HANG_BOUND) is not view.obj
    # A thread that never asked for a buffer has nothing to read.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with pytest.raises(RuntimeError, match="get_buffer"):
            pool.submit(reader.deliver, 1, {}).result(HANG_BOUND)


def test_session_reader_delivers_replies_by_id_and_returns_the_rest_in_order():
    # buffer_updated's hot path: each reply goes to the future of its
    # request's id; a done future keeps what it has; the first other event
    # (an error, a reply nobody waits for) comes back with all after it.
    loop = asyncio.new_event_loop()
    try:
        session = rframe._rframe.ClientSession()
        reader = rframe._rframe._SessionReader(session)

        def read(data: bytes, waiters):
            reader.get_buffer(-1)[: len(data)] = data
            return reader.deliver(len(data), waiters)

        ids = [session.request(b"%d" % i)[0] for i in range(3)]
        a, done, b = loop.create_future(), loop.create_future(), loop.create_future()
        done.set_result("kept")
        waiters = dict(zip(ids, (a, done, b)))
        assert read(b"".join(rframe.pack_frame(b"%d" % i) for i in range(3)), waiters) is None
        assert (a.result().body, done.result(), b.result().body, waiters) == (b"0", "kept", b"2", {})

        ids = [session.request(b"x")[0] for _ in range(3)]
        c, d = loop.create_future(), loop.create_future()
        waiters = {ids[0]: c, ids[2]: d}
        error = rframe.pack_frame(b"", op="error", error="not-found", message="gone")
        rest = read(rframe.pack_frame(b"x") + error + rframe.pack_frame(b"y"), waiters)
        assert c.result().body == b"x" and not d.done() and waiters == {ids[2]: d}
        # The error answers ids[1], which nobody waits for here; the reply after it is d's, left to the driver.
        assert [e[:4] for e in rest] == [("remote-error", ids[1], "not-found", "gone"), ("reply", ids[2], rest[1][2])]
        assert rest[1][2].body == b"y" and not d.done()
        # "op" equal to "error" only as that string, as json.loads gives it.
        ids = [session.request(b"")[0] for _ in range(2)]
        e, f = loop.create_future(), loop.create_future()
        not_errors = rframe.pack_frame(b"", op=["error"]) + rframe.pack_frame(b"", op="errors")
        assert read(not_errors, dict(zip(ids, (e, f)))) is None
        assert e.result().header["op"] == ["error"] and f.result().header["op"] == "errors"
        # A length-only codec's frames have empty headers: never errors.
        raw_session = rframe._rframe.ClientSession(rframe.Codec(json_header=False))
        raw = rframe._rframe._SessionReader(raw_session)
        g = loop.create_future()
        raw.get_buffer(-1)[:5] = b"\x01\x00\x00\x00q"
        assert raw.deliver(5, {raw_session.request(b"q")[0]: g}) is None and g.result().body == b"q"
        # Garbage closes the session: the last event says why, with the framing error.
        ((kind, reason, exc),) = read(b"\xff\xff\xff\xff", {})
        assert kind == "closed" and reason == "reading a frame failed: FrameError"
        assert isinstance(exc, rframe.FrameError) and session.closed == reason
        # At the end of the stream, a frame cut short is the close's error.
        cut = _session_reader()
        cut.get_buffer(-1)[:6] = rframe.pack_frame(b"abc")[:6]
        assert cut.deliver(6, {}) is None
        ((kind, reason, exc),) = cut.receive_eof()
        assert (kind, reason) == ("closed", "the server closed the connection")
        assert isinstance(exc, rframe.IncompleteFrame)
    finally:
        loop.close()


def test_server_stopping(arun):
    async def main(s):
        c = client(s)
        await c.__aenter__()
        try:
            assert (await c.run("true")).ok
            s.stop()
            with pytest.raises(ConnectionError):
                await c.run("true")
            assert c.closed
        finally:
            await c.close()

    s = rframe.Server(port=0)
    s.start()
    try:
        arun(main, s)
    finally:
        s.stop()


# --------------------------------------------------------------------------- pipelining


def test_1000_concurrent_requests_over_50_connections(arun, echo_server):
    rng = random.Random(4)
    bodies = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))) for _ in range(1000)]

    async def main():
        clients = await asyncio.gather(
            *(rframe.AsyncClient.connect(*echo_server.address, timeout=HANG_BOUND) for _ in range(50))
        )
        try:
            replies = await asyncio.gather(
                *(clients[i % 50].request(body, seq=i, conn=i % 50) for i, body in enumerate(bodies))
            )
        finally:
            await asyncio.gather(*(c.close() for c in clients))
        return replies

    replies = arun(main)
    assert len(replies) == 1000
    for i, (reply, body) in enumerate(zip(replies, bodies)):
        assert reply.header["seq"] == i and reply.header["conn"] == i % 50 and reply.body == body


def test_requests_on_one_connection_are_answered_in_order(arun, echo_server):
    async def main():
        async with client(echo_server) as c:
            # a slow one first: the fast ones behind it wait their turn
            tasks = [asyncio.ensure_future(c.request(b"slow", seq=0, delay=0.2))]
            tasks += [asyncio.ensure_future(c.request(b"%d" % i, seq=i)) for i in range(1, 200)]
            done_order = []
            for t in tasks:
                t.add_done_callback(lambda t: done_order.append(t.result().header["seq"]))
            replies = await asyncio.gather(*tasks)
            return replies, done_order

    replies, done_order = arun(main)
    assert [r.header["seq"] for r in replies] == list(range(200))
    assert done_order == list(range(200))


@pytest.mark.asyncio
async def test_large_bodies_concurrently(echo_server, server):
    bodies = [os.urandom(2 * 1024 * 1024 + i) for i in range(4)]
    async with client(echo_server) as c:
        replies = await asyncio.gather(*(c.request(b, seq=i) for i, b in enumerate(bodies)))
        assert [r.body for r in replies] == bodies
    async with client(server) as c:
        r = await c.run(f"{sys.executable} -c \"import sys; sys.stdout.write('x' * 3000000)\"")
        assert r.stdout == b"x" * 3000000


@pytest.mark.asyncio
async def test_send_and_recv(echo_server):
    async with client(echo_server, timeout=0.5) as c:
        await c.send(b"one", seq=1)
        await c.send(b"two", seq=2)
        assert (await c.recv()).body == b"one"
        assert (await c.recv()).body == b"two"
        # a recv with nothing to come times out and gives its place back
        with pytest.raises(TimeoutError):
            await c.recv()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.recv(), 0.05)
        assert (await c.request(b"mine", seq=3)).header["seq"] == 3
        # a frame that arrived before anyone asked is kept for the next call
        await c.send(b"early", seq=4)
        await asyncio.sleep(0.1)
        assert (await c.recv()).header["seq"] == 4


# --------------------------------------------------------------------------- cancellation


def test_cancelled_requests_keep_the_connection_in_sync(arun, echo_server):
    """Requests cancelled at random points (task.cancel, wait_for, asyncio.timeout;
    the client's own timeout: test_request_timeout_keeps_the_connection): every
    later request still gets its own reply."""
    rng = random.Random(20240)

    async def main():
        stats = {"cancelled": 0, "completed": 0}
        async with client(echo_server) as c:
            for round_ in range(25):

                async def one(i, round_=round_):
                    how = rng.choice(["plain", "wait_for", "timeout"])
                    call = c.request(b"r%d-%d" % (round_, i), seq=i, delay=rng.choice([0, 0, 0.002, 0.01]))
                    if how == "wait_for":
                        return await asyncio.wait_for(call, rng.uniform(0, 0.02))
                    if how == "timeout":
                        async with asyncio.timeout(rng.uniform(0, 0.02)):
                            return await call
                    return await call

                tasks = [asyncio.ensure_future(one(i)) for i in range(12)]
                await asyncio.sleep(rng.uniform(0, 0.01))
                for t in tasks:
                    if rng.random() < 0.3:
                        t.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
                for i, r in enumerate(results):
                    if isinstance(r, (asyncio.CancelledError, TimeoutError)):
                        stats["cancelled"] += 1
                    else:
                        assert not isinstance(r, BaseException), r
                        stats["completed"] += 1
                        assert r.header["seq"] == i and r.body == b"r%d-%d" % (round_, i)
                # in sync: a fresh request gets its own reply
                check = await c.request(b"check %d" % round_, seq=-round_)
                assert check.header["seq"] == -round_ and check.body == b"check %d" % round_
                assert not c.closed
        return stats

    stats = arun(main, bound=30)
    assert stats["cancelled"] > 10 and stats["completed"] > 10, stats


def test_close_while_connecting_leaves_it_closed(arun, server):
    async def main():
        c = client(server)
        opening = asyncio.ensure_future(c.__aenter__())
        await asyncio.sleep(0)  # it is connecting
        await c.close()
        with pytest.raises(ConnectionAbortedError, match="closed while it connected"):
            await opening
        assert c.closed
        with pytest.raises(ConnectionAbortedError):
            await c.request(b"after")

    arun(main)


def test_waits_for_a_full_write_buffer_that_time_out_leave_nothing_behind(arun):
    """A peer that stops reading pauses the transport; calls that time out
    waiting for room must not each leave a waiter behind."""
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (in the kernel), never reads

    async def main():
        async with rframe.AsyncClient(*listener.getsockname()[:2], timeout=0.05) as c:
            conn = c._conn
            for _ in range(64):
                if conn.paused:
                    break
                await c.send(b"x" * (1 << 20))
            assert conn.paused
            for _ in range(50):
                with pytest.raises(TimeoutError):
                    await c.request(b"y")
            assert conn.drain_waiters == []

    try:
        arun(main)
    finally:
        listener.close()


def test_waits_behind_a_file_transfer_keep_the_client_timeout(arun, server, tmp_path):
    (tmp_path / "a").write_bytes(b"a")

    async def main():
        async with client(server, timeout=0.2) as c:
            conn = c._conn
            conn.held = asyncio.get_running_loop().create_future()  # what a transfer under way sets
            try:
                for call in (c.recv(), c.request(b"x"), c.upload(tmp_path / "a"), c.download("a", tmp_path / "b")):
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(call, HANG_BOUND)
            finally:
                conn.held.set_result(None)
                conn.held = None
            assert not (tmp_path / "b").exists()

    arun(main)


def test_cancelled_run_closes_the_connection_and_kills_the_command(arun, server):
    marker = sleep_marker()

    async def main():
        for how in ("cancel", "wait_for", "timeout", "client timeout"):
            async with client(server, timeout=0.5 if how == "client timeout" else HANG_BOUND) as c:

                async def within(coro):
                    async with asyncio.timeout(0.3):
                        return await coro

                call = c.run(["sleep", marker])
                if how == "wait_for":  # (the run in a task of its own first, so it is written first)
                    task = asyncio.ensure_future(asyncio.wait_for(asyncio.ensure_future(call), 0.3))
                elif how == "timeout":
                    task = asyncio.ensure_future(within(call))
                else:
                    task = asyncio.ensure_future(call)
                pipelined = asyncio.ensure_future(c.run("echo behind"))  # queued behind the sleep
                if how == "cancel":
                    assert await wait_for_condition(lambda: pgrep(marker))
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                else:
                    with pytest.raises(TimeoutError):
                        await task
                assert c.closed
                if how == "client timeout":
                    # Its own deadline is the sleep's plus the moment between
                    # the two calls: within the timer's slack it timed out too,
                    # else the close that the sleep's timeout made failed it.
                    with pytest.raises((TimeoutError, ConnectionAbortedError)) as failed:
                        await asyncio.wait_for(pipelined, HANG_BOUND)
                    if isinstance(failed.value, ConnectionAbortedError):
                        assert "run() was cancelled" in str(failed.value)
                    else:  # (not wait_for's own TimeoutError: a hang)
                        assert "no reply within 0.5 seconds" in str(failed.value)
                else:
                    with pytest.raises(ConnectionAbortedError, match="run.. was cancelled"):
                        await asyncio.wait_for(pipelined, HANG_BOUND)
                with pytest.raises(ConnectionAbortedError, match="run.. was cancelled or timed out"):
                    await c.run("true")
                assert await wait_for_condition(lambda: not pgrep(marker)), f"{how}: the command still runs"

    try:
        arun(main, bound=60)
    finally:
        kill_all(marker)


def test_runs_cancelled_at_random_points(arun, server):
    """A cancelled run either closed the connection (and later calls say so) or
    its result had arrived and the connection is still usable."""
    rng = random.Random(99)

    async def main():
        closed = kept = 0
        for _ in range(12):
            async with client(server) as c:
                task = asyncio.ensure_future(c.run(f"sleep {rng.choice([0, 0.01, 0.03])}; echo done"))
                await asyncio.sleep(rng.uniform(0, 0.06))
                task.cancel()
                try:
                    result = await task
                    assert result.stdout == b"done\n"
                except asyncio.CancelledError:
                    pass
                if c.closed:
                    closed += 1
                    with pytest.raises(ConnectionAbortedError, match="cancelled"):
                        await c.request(b"x")
                else:
                    kept += 1
                    assert (await c.run("echo again")).stdout == b"again\n"
        return closed, kept

    closed, kept = arun(main, bound=60)
    assert closed + kept == 12 and closed > 0


@pytest.mark.asyncio
async def test_request_timeout_keeps_the_connection(echo_server):
    async with client(echo_server, timeout=0.2) as c:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await c.request(b"late", seq=1, delay=0.6)
        assert time.monotonic() - t0 < 0.5
        assert not c.closed
        # the late reply is dropped when it comes; later calls get their own
        await asyncio.sleep(0.6)
        reply = await asyncio.wait_for(c.request(b"mine", seq=2), HANG_BOUND)
        assert reply.header["seq"] == 2 and reply.body == b"mine"
        # and a call made while the late reply is still on its way
        with pytest.raises(TimeoutError):
            await c.request(b"late again", seq=3, delay=0.3)
        reply = await asyncio.wait_for(c.request(b"mine again", seq=4), HANG_BOUND)
        assert reply.header["seq"] == 4 and reply.body == b"mine again"


# --------------------------------------------------------------------------- processes and interpreter exit


@pytest.mark.asyncio
async def test_forked_child_gets_a_clear_error(echo_server):
    async with client(echo_server) as c:
        assert (await c.request(b"before")).body == b"before"
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                codes = []
                for coro in (c.request(b"x"), c.run("true"), c.close()):
                    try:
                        coro.send(None)
                        codes.append(2)
                    except RuntimeError as e:
                        codes.append(0 if "fork" in str(e) and str(os.getpid()) in str(e) else 3)
                    except BaseException:  # noqa: BLE001
                        codes.append(4)
                    finally:
                        coro.close()
                code = 17 if codes == [0, 0, 0] else 10 + max(codes)
            finally:
                os._exit(code)
        deadline = time.monotonic() + HANG_BOUND
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung")
            await asyncio.sleep(0.01)
        assert os.waitstatus_to_exitcode(status) == 17
        # nothing was done to the parent's connection
        assert (await c.request(b"after")).body == b"after"


EXIT_SCRIPT = r"""
import asyncio, sys, rframe

def handler(frame):
    return frame.header, frame.body

background = []

async def forever(address):
    async with rframe.AsyncClient(*address, timeout=10) as e:
        while True:
            await e.request(b"z" * 100000)

async def main(address):
    c = await rframe.AsyncClient.connect(*address, timeout=10)
    async with rframe.AsyncClient(*address, timeout=10) as d:
        assert [f.body for f in await asyncio.gather(c.request(b"a"), d.request(b"b"))] == [b"a", b"b"]
        t = asyncio.ensure_future(d.request(b"x"))
        await asyncio.sleep(0)
        t.cancel()
        assert (await d.request(b"y")).body == b"y"
    await c.close()
    # a task in the middle of requests when the loop ends: asyncio.run cancels it
    background.append(asyncio.ensure_future(forever(address)))
    await asyncio.sleep(0.05)

with rframe.Server(port=0, handler=handler) as s:
    asyncio.run(main(s.address))
    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.run(main(s.address))
print("ok", flush=True)
"""


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_no_warnings_at_interpreter_exit(loop_name):
    if loop_name == "uvloop" and uvloop is None:
        pytest.skip("uvloop is not installed")
    r = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", EXIT_SCRIPT, loop_name],
        capture_output=True,
        text=True,
        timeout=HANG_BOUND * 3,
        cwd=ROOT,
        env=ENV,
    )
    assert r.returncode == 0 and r.stdout == "ok\n", r.stdout + r.stderr
    for bad in (
        "Event loop is closed",
        "never awaited",
        "ResourceWarning",
        "unclosed",
        "Traceback",
        "Exception ignored",
        "was never retrieved",
        "Task was destroyed",
    ):
        assert bad not in r.stderr, r.stderr


# --------------------------------------------------------------------------- read_frame_async / send_frame_async


def _reader_with(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def _error_of(exc):
    return type(exc), str(exc), {k: v for k, v in vars(exc).items()}


FRAME = rframe.pack_frame(b"hello body", file_name="a.txt")
READ_CASES = {
    "empty": (b"", None),
    "half-length": (FRAME[:2], None),
    "half-header": (FRAME[:10], None),
    "half-body": (FRAME[:-3], None),
    "negative-length": (b"\xff\xff\xff\xff" + b"x" * 10, None),
    "text": (b"GET / HTTP/1.1\r\n\r\n", None),
    "bad-json": (b"\x03\x00\x00\x00{x}", None),
    "no-total-size": (b"\x02\x00\x00\x00{}", None),
    "body-too-large": (rframe.pack_frame(b"x" * 100), rframe.Codec(max_body=10)),
    "header-too-large": (FRAME, rframe.Codec(max_header=8)),
    "checksum": (rframe.Codec(checksum="md5").pack(b"abc")[:-1] + b"X", rframe.Codec(checksum="md5")),
    "length-only-half": (rframe.Codec(json_header=False).pack(b"abcdef")[:-1], rframe.Codec(json_header=False)),
}


@pytest.mark.parametrize("case", sorted(READ_CASES))
@pytest.mark.asyncio
async def test_read_frame_async_errors_are_read_frames(case):
    data, codec = READ_CASES[case]
    source = io.BytesIO(data)
    with pytest.raises(Exception) as sync_info:
        (codec or rframe.Codec()).read(source)
    with pytest.raises(Exception) as async_info:
        await asyncio.wait_for(rframe.read_frame_async(_reader_with(data), codec=codec), HANG_BOUND)
    assert _error_of(async_info.value) == _error_of(sync_info.value)
    assert isinstance(async_info.value, (EOFError, rframe.FrameError))
    if case == "empty":
        assert type(async_info.value) is EOFError
    if case.startswith("half"):
        assert isinstance(async_info.value, rframe.IncompleteFrame)
        assert async_info.value.part == case.split("-")[1]


@pytest.mark.asyncio
async def test_read_frame_async_takes_only_its_frame():
    second = rframe.pack_frame(b"second", n=2)
    reader = _reader_with(FRAME + second + b"trailing")
    f1 = await rframe.read_frame_async(reader)
    assert f1 == ({"file_name": "a.txt", "total_size": 10}, b"hello body")
    assert (await rframe.read_frame_async(reader)).header == {"n": 2, "total_size": 6}
    assert await reader.read() == b"trailing"
    lo = rframe.Codec(json_header=False, byteorder="big")
    reader = _reader_with(lo.pack(b"abc") + lo.pack(b"") + b"z")
    assert (await rframe.read_frame_async(reader, codec=lo)).body == b"abc"
    assert (await rframe.read_frame_async(reader, codec=lo)).body == b""
    assert await reader.read() == b"z"


@pytest.mark.asyncio
async def test_read_frame_async_refuses_an_oversize_length_before_its_bytes_arrive():
    """The limit is checked on the length: it does not wait for the announced bytes."""
    big_body = b"\x17\x00\x00\x00" + b'{"total_size": 1000000}'
    for data, codec in [(big_body, rframe.Codec(max_body=1000)), ((70000).to_bytes(4, "little"), None)]:
        reader = _reader_with(data, eof=False)
        with pytest.raises(rframe.FrameTooLarge):
            await asyncio.wait_for(rframe.read_frame_async(reader, codec=codec), 2)


@pytest.mark.asyncio
async def test_send_and_read_over_a_real_connection():
    received = []

    async def handle(reader, writer):
        try:
            while True:
                try:
                    frame = await rframe.read_frame_async(reader)
                except EOFError:
                    break
                received.append(frame)
                await rframe.send_frame_async(writer, frame.body.upper(), frame.header)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        try:
            big = os.urandom(3 * 1024 * 1024)
            await rframe.send_frame_async(writer, b"abc", {"codec": "field in header"}, seq=1)
            await rframe.send_frame_async(writer, big, seq=2)
            await rframe.send_frame_async(writer, b"", header={"seq": 3})
            r1 = await asyncio.wait_for(rframe.read_frame_async(reader), HANG_BOUND)
            r2 = await asyncio.wait_for(rframe.read_frame_async(reader), HANG_BOUND)
            r3 = await asyncio.wait_for(rframe.read_frame_async(reader), HANG_BOUND)
            assert r1 == ({"codec": "field in header", "seq": 1, "total_size": 3}, b"ABC")
            assert r2.header["seq"] == 2 and r2.body == big.upper()
            assert r3 == ({"seq": 3, "total_size": 0}, b"")
            with pytest.raises(TypeError):
                await rframe.send_frame_async(writer, header={"x": object()})
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    assert [f.header.get("seq") for f in received] == [1, 2, 3]


@pytest.mark.asyncio
async def test_send_and_read_with_a_codec_over_a_socketpair():
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    try:
        lo = rframe.Codec(json_header=False, byteorder="big")
        await rframe.send_frame_async(wa, b"raw", codec=lo)
        await rframe.send_frame_async(wa, b"", codec=lo)
        await rframe.send_frame_async(wa, b"x" * 20, codec=lo)
        assert await asyncio.wait_for(rb.readexactly(7), HANG_BOUND) == b"\x00\x00\x00\x03raw"
        assert (await asyncio.wait_for(rframe.read_frame_async(rb, codec=lo), HANG_BOUND)) == ({}, b"")
        with pytest.raises(rframe.FrameTooLarge):
            await asyncio.wait_for(
                rframe.read_frame_async(rb, codec=rframe.Codec(json_header=False, byteorder="big", max_body=10)),
                HANG_BOUND,
            )
        wb.write_eof()
        with pytest.raises(EOFError):
            await asyncio.wait_for(rframe.read_frame_async(ra), HANG_BOUND)  # nothing came the other way
    finally:
        for w in (wa, wb):
            w.close()
            await w.wait_closed()


def test_exported():
    for name in ("AsyncClient", "read_frame_async", "send_frame_async"):
        assert name in rframe.__all__ and getattr(rframe, name) is getattr(rframe._async, name)


@pytest.mark.parametrize("module", [rframe._async, rframe._protocol], ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- bench/async.py --quick


def test_bench_async_quick():
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "async.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=ENV,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert re.search(r"Python 3\.\d+", out) and "nproc=" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "req/s |" not in line]
    table = [row for row in rows if "AsyncClient" in row or "pure asyncio:" in row]
    nloops = 2 if uvloop is not None else 1
    assert len(table) == 4 * nloops, out
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 5, row
        assert cells[0] in ("sequential", "pipelined") and cells[2] in ("asyncio", "uvloop"), row
        assert float(cells[3].replace(",", "")) > 0 and float(cells[4].replace(",", "")) > 0
    for workload in ("sequential", "pipelined"):
        floor = [row for row in rows if row.startswith(f"| {workload} | floor, no framing")]
        assert len(floor) == nloops, out
        assert len([row for row in rows if row.startswith(f"| {workload}, ") and "above the floor" in row]) == nloops, (
            out
        )
        floor_ratios = [
            row for row in rows if row.startswith(f"| {workload}, ") and "no-framing floor CPU/request vs" in row
        ]
        assert len(floor_ratios) == nloops, out
        for row in floor_ratios:
            assert re.search(r"\| \d+\.\d\dx \| \(info\) \| - \|$", row), row
    # The framing floor: a sequential reference row and its room line per loop.
    assert len([row for row in rows if row.startswith("| sequential | framing floor:")]) == nloops, out
    room = [row for row in rows if "framing floor's CPU/request over the floor" in row]
    assert len(room) == nloops and all(row.startswith("| sequential, ") for row in room), out
    for row in room:
        assert re.search(r"\| -?[\d.]+ / -?[\d.]+ us \| \(info\) \| - \|$", row), row
    # The median of the rounds' paired ratios: rframe in both workloads, the
    # framing floor in the sequential one.
    medians = [row for row in rows if "median of the rounds' ratios" in row]
    assert len(medians) == 3 * nloops, out
    for row in medians:
        assert re.search(r"^\| (sequential|pipelined), (asyncio|uvloop): (rframe|framing floor) CPU/request ", row), row
        assert re.search(r"\| \d+\.\d\dx \| \(info\) \| - \|$", row), row
    ratios = [row for row in rows if ": rframe " in row and "vs pure asyncio" in row and "median" not in row]
    assert len(ratios) == 4 * nloops, out
    for row in ratios:
        assert re.search(r"\| \d+\.\d\dx \| (<=|>=) [\d.]+x \| (yes|no) \|$", row), row
