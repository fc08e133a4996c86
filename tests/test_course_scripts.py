"""The course's section-15 scripts (tests/course/, copied with only the address
changed) against rframe, in both directions.

* The unmodified course client, talking to ``rframe.Server`` and to
  ``python -m rframe.server``, prints byte for byte what the same commands give
  when run locally with ``subprocess`` (and what it prints against the course's
  own server).
* The course server, talked to with ``rframe.read_frame`` (and a
  ``FrameDecoder``): rframe reads its replies, custom header and all.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

import rframe
from conftest import HANG_BOUND
from server_helpers import ENV, ROOT, CliProcess, CliServer, running, wait_until

COURSE = ROOT / "tests" / "course"

COMMANDS = [
    "echo hello",
    "ls /nonexistent-rframe-dir",
    "echo out; echo err 1>&2",
    "seq 1 3000",  # far more than one recv(1024)
    "printf 'no newline'",
    # a command line in UTF-8, output in GBK (你好, as Windows' cmd would print it)
    r"echo 中文 > /dev/null; printf '\304\343\272\303\n'",
    "exit 3",  # no output at all
]


def local_output(cmd: str) -> bytes:
    """What the course server sends back: stdout followed by stderr."""
    p = subprocess.run(cmd, shell=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=HANG_BOUND, cwd=ROOT)
    return p.stdout + p.stderr


def expected_transcript(commands) -> bytes:
    """What the course client prints for ``commands`` then ``q`` (its prompt included)."""
    text = ""
    for cmd in commands:
        result = local_output(cmd)
        text += "强输入" + f"来自服务的消息:{result.decode('gbk')}\n" + f"来自服务的消息:{len(result)}\n"
    return (text + "强输入您退出了\n").encode("utf-8")


def course_client(port: int, commands) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(COURSE / "course_client.py"), str(port)],
        input="".join(c + "\n" for c in commands).encode("utf-8") + b"q\n",
        capture_output=True,
        timeout=HANG_BOUND,
        cwd=ROOT,
        env=ENV,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CourseServer(CliProcess):
    def __init__(self):
        self.port = free_port()
        super().__init__(str(COURSE / "course_server.py"), str(self.port))
        self.wait_line("开启通信")


@pytest.fixture
def course_server():
    server = CourseServer()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- course client -> rframe


def test_course_client_against_rframe_server():
    expected = expected_transcript(COMMANDS)
    with running(rframe.Server(port=0)) as server:
        r = course_client(server.address[1], COMMANDS)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == expected


def test_course_client_against_the_cli_server():
    expected = expected_transcript(COMMANDS[:3])
    server = CliServer("--cwd", ROOT)
    try:
        r = course_client(server.port, COMMANDS[:3])
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout == expected
        assert wait_until(lambda: "echo hello" in server.stderr, 5)  # logged like any request
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_course_client_against_course_server_is_the_reference(course_server):
    """The expected transcript is what the course's own pair prints."""
    r = course_client(course_server.port, COMMANDS)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == expected_transcript(COMMANDS)


def test_course_client_without_server():
    r = course_client(free_port(), ["echo hi"])
    assert r.returncode == 1 and "服务端没开" in r.stderr.decode()


# --------------------------------------------------------------------------- rframe -> course server


def test_rframe_reads_the_course_servers_replies(course_server):
    with socket.create_connection(("127.0.0.1", course_server.port), timeout=HANG_BOUND) as s:
        for cmd in COMMANDS:
            s.sendall(cmd.encode("utf-8"))  # the course client's request: the bare command
            header, body = rframe.read_frame(s)
            expected = local_output(cmd)
            assert header == {"file_name": "text1", "md5": 54645898788, "total_size": len(expected)}
            assert body == expected


def test_frame_decoder_on_the_course_servers_replies(course_server):
    decoder = rframe.FrameDecoder()
    with socket.create_connection(("127.0.0.1", course_server.port), timeout=HANG_BOUND) as s:
        s.sendall(b"seq 1 5000")
        frames = []
        while not frames:
            data = s.recv(1000)
            assert data, "the course server closed the connection"
            frames = decoder.feed(data)
    assert frames[0].body == local_output("seq 1 5000")
    assert decoder.pending == 0
