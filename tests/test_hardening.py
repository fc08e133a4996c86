"""Regressions for defects found in review: each test failed before its fix."""

from __future__ import annotations

import collections
import json
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import rframe
from conftest import HANG_BOUND
from server_helpers import client_for, kill_all, pgrep, running, sleep_marker, wait_until


def run_python(code: str, timeout: float = HANG_BOUND) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def test_allow_list_refuses_env_and_cwd_that_could_pick_the_binary(tmp_path):
    evil = tmp_path / "ls"
    evil.write_text("#!/bin/sh\necho pwned\n")
    evil.chmod(0o755)
    with running(rframe.Server(port=0, allow=["ls"])) as s, client_for(s) as c:
        for kwargs in ({"env": {"PATH": str(tmp_path)}}, {"cwd": str(tmp_path)}):
            with pytest.raises(rframe.RemoteError) as info:
                c.run(["ls"], **kwargs)
            assert info.value.code == "not-allowed"
        assert b"pwned" not in c.run(["ls", "/"]).stdout


def test_unauthenticated_connections_are_closed_at_the_login_deadline():
    with running(rframe.Server(port=0, token="t", max_connections=2, header_timeout=0.5)) as s:
        silent = [socket.create_connection(s.address) for _ in range(2)]
        try:
            # Sending `{"op": "auth"}` again and again must not keep a slot either.
            rframe.send_frame(silent[0], b"", op="auth")
            rframe.read_frame(silent[0])
            assert wait_until(lambda: _served(s), timeout=HANG_BOUND)
        finally:
            for sock in silent:
                sock.close()


def _served(server) -> bool:
    try:
        with client_for(server, token="t") as c:
            return c.run("echo ok").stdout == b"ok\n"
    except rframe.RemoteError as e:
        assert e.code == "busy"
        time.sleep(0.1)
        return False


def test_frame_decoder_shared_by_threads_does_not_deadlock():
    result = run_python(
        """
        import sys, threading, rframe
        sys.setswitchinterval(1e-6)
        dec = rframe.FrameDecoder()
        try:
            dec.feed((10**6).to_bytes(4, "little"))
        except rframe.FrameTooLarge:
            pass
        def feed():
            for _ in range(2000):
                try:
                    dec.feed(b"x")
                except rframe.FrameTooLarge:
                    pass
        def look():
            for _ in range(2000):
                dec.pending
        threads = [threading.Thread(target=f) for f in (feed, look, feed, look)]
        for t in threads: t.start()
        for t in threads: t.join()
        print("done")
        """
    )
    assert result.stdout.strip() == "done", result.stderr


def test_read_frame_of_an_announced_but_unsent_body_costs_no_memory():
    result = run_python(
        """
        import resource, socket, rframe
        a, b = socket.socketpair()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        head = b'{"total_size": 268435456}'
        a.sendall(len(head).to_bytes(4, "little") + head)
        a.close()
        try:
            rframe.read_frame(b)
        except rframe.IncompleteFrame as e:
            print(e.part, e.received)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(grown // 1024)
        """
    )
    lines = result.stdout.split()
    assert lines[:2] == ["body", "0"], result.stderr
    assert int(lines[2]) < 32, f"max RSS grew by {lines[2]} MiB"


def test_commands_do_not_outlive_the_python_process():
    marker = sleep_marker()
    result = run_python(
        f"""
        import threading, time, rframe
        server = rframe.Server(port=0)
        server.start()
        client = rframe.Client(*server.address)
        threading.Thread(target=client.run, args=("{marker}",), daemon=True).start()
        time.sleep(0.5)
        print("exiting")
        """
    )
    try:
        assert "exiting" in result.stdout, result.stderr
        assert wait_until(lambda: not pgrep(marker)), f"{marker} survived the process"
    finally:
        kill_all(marker)


def test_checksum_codec_server_signs_its_replies():
    codec = rframe.Codec(checksum="sha256")
    with running(rframe.Server(port=0, codec=codec)) as s, client_for(s, codec=codec) as c:
        assert c.run("echo signed").stdout == b"signed\n"


def test_token_server_with_a_big_endian_codec_authenticates():
    codec = rframe.Codec(byteorder="big")
    server = rframe.Server(port=0, token="t", codec=codec, handler=lambda f: f.body.upper())
    with running(server) as s, client_for(s, token="t", codec=codec) as c:
        assert c.request(b"hi").body == b"HI"


def test_dict_subclass_header_keys_in_items_order():
    d = collections.OrderedDict(a=1, b=2)
    d.move_to_end("a")
    packed = rframe.pack_frame(b"", d)
    assert packed[4:] == json.dumps({**d, "total_size": 0}).encode()


def test_a_refused_long_command_line_is_answered_not_dropped():
    # Found by fuzzing (fuzz/, target `request`): the refusal quoted the whole
    # line, JSON escaping made its header 80 KiB, over max_header, and the
    # server closed the connection without a reply.
    with running(rframe.Server(port=0, shell=False)) as s, client_for(s) as c:
        with pytest.raises(rframe.RemoteError) as info:
            c.run('"' * 20_001)
        assert info.value.code == "bad-request"
        assert "unbalanced quotes" in str(info.value)
