"""Smoke tests for examples/ and the bench scripts' --quick modes.

Every example runs as a real subprocess of ``sys.executable``; servers listen on
port 0 and are found through their first output line, ``listening on HOST:PORT``.
Every subprocess call has a timeout, and servers are always terminated.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BENCH = ROOT / "bench" / "framing.py"
TIMEOUT = 20  # seconds, for any one subprocess

ENV = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")

PAIRS = {
    "remote_command": ("remote_command_server.py", "remote_command_client.py"),
    "custom_header": ("custom_header_server.py", "custom_header_client.py"),
}


def run_py(*args, input=None, timeout=TIMEOUT):
    return subprocess.run(
        [sys.executable, *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        cwd=ROOT,
        env=ENV,
    )


class ServerProcess:
    """An example server on port 0; collects its output in the background."""

    def __init__(self, script: str):
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), "--port", "0", "--timeout", "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            cwd=ROOT,
            env=ENV,
        )
        self.lines: list[str] = []
        self._first = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._first.wait(TIMEOUT):
            self.stop()
            pytest.fail(f"{script} printed nothing within {TIMEOUT} s")
        m = re.fullmatch(r"listening on (\S+):(\d+)", self.lines[0].strip()) if self.lines else None
        if not m:
            self.stop()
            pytest.fail(f"{script}: unexpected first line(s): {self.lines!r}")
        self.host, self.port = m.group(1), int(m.group(2))
        assert self.port > 0

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            self._first.set()
        self._first.set()  # EOF (the server died) also wakes the waiter

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            time.sleep(0.02)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(5)
        if self._reader.is_alive():
            # Something else holds the pipe open: fail here, not in the later
            # test whose garbage collection would warn about it.
            pytest.fail(f"the output pipe of {self.proc.args!r} is still open 5 s after the process ended")
        self.proc.stdout.close()


@pytest.fixture(scope="module", params=sorted(PAIRS))
def pair(request):
    server_script, client_script = PAIRS[request.param]
    server = ServerProcess(server_script)
    try:
        yield request.param, server, EXAMPLES / client_script
    finally:
        server.stop()
    # SIGTERM is handled: the server shuts down cleanly
    assert server.proc.returncode == 0, server.output()
    assert "shutting down" in server.output()


def client(server, client_script, *args, input=None):
    return run_py(client_script, "--host", server.host, "--port", server.port, *args, input=input)


# --------------------------------------------------------------------------- sticky packets


def test_sticky_packets():
    r = run_py(EXAMPLES / "sticky_packets.py")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    # 1) plain recv glues the burst together
    assert "recv #1: b'hello" in out
    assert "glued" in out
    # 2) and 3) framed: each message separately, in order, twice
    for expected in (
        "frame #1: header={'seq': 0, 'total_size': 2} body=b'he'",
        "frame #2: header={'seq': 1, 'total_size': 2} body=b'll'",
        "frame #3: header={'seq': 2, 'total_size': 1} body=b'o'",
        "frame #4: header={'seq': 3, 'total_size': 13} body=b'first message'",
        "frame #6: header={'seq': 5, 'total_size': 0} body=b''",
    ):
        assert out.count(expected) == 2, (expected, out)
    assert "OK: with framing every message arrived separately and intact" in out


# --------------------------------------------------------------------------- command servers


def test_one_command(pair):
    kind, server, client_script = pair
    r = client(server, client_script, "-c", "echo hi")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "hi" in lines
    if kind == "custom_header":
        md5 = hashlib.md5(b"hi\n").hexdigest()
        assert re.search(rf"\[result-\d+\.txt, 3 bytes, md5 {md5} ok\]", r.stdout), r.stdout
    assert server.wait_for("$ echo hi")


def test_stdout_and_stderr_are_both_returned(pair):
    kind, server, client_script = pair
    r = client(server, client_script, "-c", "echo out-line; echo err-line 1>&2; exit 3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "out-line" in r.stdout and "err-line" in r.stdout


def test_large_output(pair):
    """A reply much larger than one recv(1024) arrives whole."""
    kind, server, client_script = pair
    cmd = f'"{sys.executable}" -c "import sys; sys.stdout.write(\'x\' * 300000)"'
    r = client(server, client_script, "-c", cmd)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "x" * 300000 in r.stdout
    if kind == "custom_header":
        assert "300000 bytes" in r.stdout and " ok]" in r.stdout


def test_prompt_loop(pair):
    kind, server, client_script = pair
    r = client(server, client_script, input="\necho one\n   \necho two\nq\necho never\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("empty command refused") == 2
    lines = r.stdout.replace(">>> ", "\n").splitlines()
    assert "one" in lines and "two" in lines
    assert "bye" in r.stdout and "never" not in r.stdout


def test_prompt_loop_ends_at_end_of_input(pair):
    kind, server, client_script = pair
    r = client(server, client_script, input="echo last\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "last" in r.stdout


def test_empty_command_refused(pair):
    kind, server, client_script = pair
    r = client(server, client_script, "-c", "   ")
    assert r.returncode != 0
    assert "empty command refused" in r.stderr


def test_survives_clients_leaving_and_serves_many(pair):
    kind, server, client_script = pair
    addr = (server.host, server.port)
    # a client that connects and leaves at once
    socket.create_connection(addr, timeout=5).close()
    # a client that leaves in the middle of a frame
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b'\x40\x00\x00\x00{"tot')
    # a client that sends garbage (a negative length)
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b"\xff\xff\xff\xff garbage")
        s.settimeout(5)
        try:
            s.recv(1)  # the server drops us (b'' or a reset)
        except OSError:
            pass
    # a client that leaves while its command runs
    with socket.create_connection(addr, timeout=5) as s:
        body = b"sleep 0.3; echo late"
        if kind == "custom_header":
            hb = b'{"total_size": %d}' % len(body)
            s.sendall(len(hb).to_bytes(4, "little") + hb + body)
        else:
            s.sendall(len(body).to_bytes(4, "little") + body)
    # many clients at once are all served
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(client_script),
                "--host",
                server.host,
                "--port",
                str(server.port),
                "-c",
                f"sleep 0.3; echo client-{i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=ENV,
        )
        for i in range(4)
    ]
    t0 = time.monotonic()
    try:
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    elapsed = time.monotonic() - t0
    for i, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, out + err
        assert f"client-{i}" in out.splitlines()
    assert elapsed < 0.3 * 4 + 5  # served concurrently (generous bound for slow CI)
    assert server.proc.poll() is None, server.output()
    assert server.wait_for("left")
    # and a fresh client still works
    r = client(server, client_script, "-c", "echo still-here")
    assert r.returncode == 0 and "still-here" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_client_without_server(kind):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_py(EXAMPLES / PAIRS[kind][1], "--port", port, "-c", "echo hi")
    assert r.returncode == 1
    assert "cannot connect" in r.stderr


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_help(kind):
    for script in PAIRS[kind]:
        r = run_py(EXAMPLES / script, "--help")
        assert r.returncode == 0 and "--port" in r.stdout and "--host" in r.stdout


# --------------------------------------------------------------------------- benchmark


def test_bench_quick():
    r = run_py(BENCH, "--quick", timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert re.search(r"Python 3\.\d+", out) and "nproc=" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")]
    assert len(rows) == 7, out
    labels = [row.split("|")[1].strip() for row in rows]
    assert labels[0] == labels[1] == "pack small frame (2-key header, 100 B body)"
    assert labels[2] == labels[3] == labels[4] and labels[2].startswith("decode ") and "1024 B chunks" in labels[2]
    assert labels[5] == "read_frame 4 MiB over loopback TCP"
    assert labels[6] == "read_frame 256 KiB over loopback TCP"
    peers = [row.split("|")[2].strip() for row in rows]
    assert peers[0].startswith("struct + json") and peers[1] == "struct + orjson"
    assert peers[2] == "bytearray decoder + json (course)"
    assert peers[3] == "bytearray decoder + json's C scanner" and peers[4] == "bytearray decoder + orjson"
    assert "recv_into" in peers[5] and "recv(1024)" in peers[6]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 8, row
        float(cells[2].replace(",", ""))  # peer value
        float(cells[3].replace(",", ""))  # rframe value
        assert re.fullmatch(r"\d[\d.]*x", cells[5]), row


def run_bench(script, *args, tmp_path, timeout):
    """A bench script in a session of its own, its temporary files in
    ``tmp_path``; if it hangs, it and everything it started are killed."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(ENV, TMPDIR=str(tmp_path)),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_bench_server_tls_quick(tmp_path):
    """bench/server.py --quick, the rframe rows only: the TLS servers answer the
    pinning TLS clients (the Python one, and the native one where cargo can
    build it), their rows and the TLS / plaintext ratios are printed, and
    their certificate directories are removed."""
    only = [arg for kind in ("rframe", "rframe-tls", "rframe-int32", "rframe-int32-tls") for arg in ("--only", kind)]
    # the native client's first build is part of this run
    r = run_bench("server.py", "--quick", *only, tmp_path=tmp_path, timeout=420)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| rframe.Server(")]
    native = shutil.which("cargo") is not None
    assert len(rows) == (8 if native else 4), r.stdout
    assert sum("tls=True), TLS 1.3" in row for row in rows) == len(rows) // 2, r.stdout
    if not native:
        assert "Skipped: no `cargo` on PATH" in r.stdout, r.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2].replace(",", "")) > 0 and float(cells[5]) > 0, row
    names = [
        "rframe TLS server CPU/request vs rframe plaintext, Python client",
        "rframe TLS req/s vs rframe plaintext, Python client (the client's TLS sets the rate)",
        "rframe length-only TLS server CPU/request vs plaintext",
        "rframe length-only TLS req/s vs plaintext",
    ]
    if native:
        names += [
            "rframe TLS server CPU/request vs rframe plaintext, native client",
            "rframe TLS req/s vs rframe plaintext, native client",
        ]
    for name in names:
        assert re.search(rf"^\| {re.escape(name)} \| \d+\.\d\dx \|", r.stdout, re.M), (name, r.stdout)
    assert "FAILED" not in r.stdout
    assert os.listdir(tmp_path) == []


def test_bench_tls_decrypt_small(tmp_path):
    """bench/tls_decrypt.py: the three ways of receiving, each a row with its CPU."""
    r = run_bench("tls_decrypt.py", "--mib", "16", "--rounds", "1", tmp_path=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in r.stdout.splitlines() if line.startswith("| ")]
    assert [row[0] for row in rows[1:]] == [
        "plain TCP, recv_into",
        "TLS 1.3, SSLSocket.recv_into",
        "TLS 1.3, SSLObject + MemoryBIO",
    ], r.stdout
    for row in rows[1:]:  # CPU seconds (a short plain run can round to 0.0000), and per GiB
        assert float(row[1]) >= 0 and float(row[2]) > 0, row
    assert float(rows[2][2]) > float(rows[1][2]), r.stdout  # TLS costs more than plain TCP
    assert "TLS_AES_" in r.stdout
    assert os.listdir(tmp_path) == []


def test_bench_setup_quick(tmp_path):
    """bench/setup.py --quick times both rframe rows; ssh and asyncssh each
    get a row or a note saying why not; nothing is left behind."""
    r = run_bench("setup.py", "--quick", tmp_path=tmp_path, timeout=240)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert re.search(r"Python 3\.\d+", out) and "nproc=" in out
    rows = {
        cells[0]: cells
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in out.splitlines())
        if cells[0].startswith(("rframe ", "`ssh ", "asyncssh "))
    }
    names = {name.split()[0].strip("`"): cells for name, cells in rows.items()}
    rframe_rows = [cells for name, cells in rows.items() if name.startswith("rframe ")]
    assert [("plaintext" in c[0], "TLS" in c[0]) for c in rframe_rows] == [(True, False), (False, True)], out
    for cells in rows.values():
        assert len(cells) == 5, cells
        assert float(cells[1]) > 0 and float(cells[2]) >= float(cells[1]), cells  # median <= p90
        assert 1 <= int(cells[3]) <= 5 and re.fullmatch(r"\d+\.\d\dx", cells[4]), cells
    assert rframe_rows[1][4] == "1.00x"
    for peer in ("ssh", "asyncssh"):
        # a peer that cannot run here is skipped, one that fails is dropped: a note either way
        assert peer in names or re.search(rf"^Note: (.* )?{peer}\b.*(skipped|dropped after)", out, re.M), out
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_bench_decode_count_small():
    """bench/decode_count.py counts every decoder's instructions per frame."""
    r = run_py(ROOT / "bench" / "decode_count.py", "--frames", "300", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = dict(re.findall(r"^\| ([\w-]+) \| ([\d,]+) \|", r.stdout, re.M))
    assert {"json", "json-scanner", "rframe"} <= rows.keys(), r.stdout
    assert all(int(v.replace(",", "")) > 0 for v in rows.values()), r.stdout


# --------------------------------------------------------------------------- chat (rframe.Server with a handler)


@pytest.fixture
def chat_server():
    server = ServerProcess("chat_server.py")
    try:
        yield server
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.output()
    assert "shutting down" in server.output()


def test_chat_messages_from_arguments(chat_server):
    r = run_py(
        EXAMPLES / "chat_client.py",
        "--host",
        chat_server.host,
        "--port",
        chat_server.port,
        "--name",
        "ann",
        "hello",
        "how are you 你好",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["server: HELLO", "server: HOW ARE YOU 你好"]
    assert chat_server.wait_for("ann: how are you 你好"), chat_server.output()


def test_chat_prompt_loop(chat_server):
    r = run_py(EXAMPLES / "chat_client.py", "--port", chat_server.port, input="one\n\ntwo\nq\nnever\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["server: ONE", "empty message refused", "server: TWO", "bye"]
    assert chat_server.wait_for("client: two")
    assert "never" not in chat_server.output()


def test_chat_server_reply_option():
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "chat_server.py"), "--port", "0", "--reply", "got it"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        env=ENV,
    )
    killer = threading.Timer(TIMEOUT, proc.kill)  # bounds the readline below
    killer.start()
    try:
        first = proc.stdout.readline()
        m = re.fullmatch(r"listening on (\S+):(\d+)", first.strip())
        assert m, first
        r = run_py(EXAMPLES / "chat_client.py", "--port", m.group(2), "anything")
        assert r.returncode == 0 and r.stdout.strip() == "server: got it", r.stdout + r.stderr
        proc.terminate()
        rest, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0
    assert "client: anything" in rest and "shutting down" in rest


def test_chat_client_without_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_py(EXAMPLES / "chat_client.py", "--port", port, "hello")
    assert r.returncode == 1 and "cannot connect" in r.stderr


# --------------------------------------------------------------------------- remote shell (Server + Client)


@pytest.mark.parametrize("args", [[], ["--token", "s3cret"]], ids=["no-token", "token"])
def test_remote_shell(args):
    r = run_py(EXAMPLES / "remote_shell.py", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert re.match(r"server listening on 127\.0\.0\.1:\d+\n", out)
    assert "returncode=3 stdout='hello\\n' stderr='oops\\n'" in out
    assert "stdout='no shell|$HOME|'" in out
    assert "stdout='FED THROUGH STDIN'" in out
    assert "stdout='hi; not a command\\n'" in out
    assert "timed out" in out and "output so far b'started\\n'" in out
    assert "CommandError: exit status 2" in out
    assert "the connection is still fine" in out
    assert out.rstrip().endswith("server stopped")
