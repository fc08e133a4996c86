"""Connections that have not proven the token yet (issue 15).

A flood of idle or guessing connections from one address must not keep a
client from another address out: unauthenticated connections are capped per
address and in all (``max_startups_per_source``, ``max_startups``), and only
sources that guessed wrong lately wait for the server-wide login turn.

Loopback is all a test has, so "another address" is 127.0.0.2 (the client
socket is bound to it; Linux routes all of 127/8 to lo) while the flood comes
from 127.0.0.1. Logins are done by hand on raw sockets, as rframe.Client cannot
pick its source address; each is timed from connect() to the checked welcome.
The issue's bound is 1 s: asserted on the median of several logins, so that one
login slowed by the shared machine does not fail the run. Each test prints what
it measured (``pytest -s`` shows it).
"""

from __future__ import annotations

import argparse
import hmac
import os
import re
import socket
import statistics
import threading
import time

import pytest

import rframe
from conftest import HANG_BOUND
from server_helpers import cli_server, raise_open_files, running, wait_until

TOKEN = "preauth-token"
FLOODER, CLIENT = "127.0.0.1", "127.0.0.2"
LOGIN_BOUND = 1.0  # the number, for the median login


def report(name: str, **figures) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def proof(role: str, server_nonce: str, client_nonce: str, token: str = TOKEN) -> str:
    return hmac.new(token.encode(), f"rframe-{role}:{server_nonce}:{client_nonce}".encode(), "sha256").hexdigest()


def connect_from(source: str, address) -> socket.socket:
    s = socket.socket()
    s.settimeout(HANG_BOUND)
    try:
        s.bind((source, 0))
        s.connect(address)
    except BaseException:
        s.close()
        raise
    return s


def challenge(sock) -> str:
    rframe.send_frame(sock, b"", op="auth")
    header = rframe.read_frame(sock).header
    assert header["op"] == "challenge", header
    return header["nonce"]


def log_in(sock, token: str = TOKEN) -> None:
    """The handshake, checking the server's proof too."""
    sn, cn = challenge(sock), os.urandom(32).hex()
    rframe.send_frame(sock, b"", op="auth", nonce=sn, client_nonce=cn, proof=proof("client", sn, cn, token))
    welcome = rframe.read_frame(sock).header
    assert (welcome["op"], welcome["proof"]) == ("welcome", proof("server", sn, cn, token)), welcome


def timed_login(address, source: str = CLIENT) -> float:
    """Seconds from connect() to a checked welcome; then a command must run."""
    t0 = time.monotonic()
    with connect_from(source, address) as s:
        log_in(s)
        elapsed = time.monotonic() - t0
        rframe.send_frame(s, b"", op="run", cmd=["echo", "in"])
        assert rframe.read_frame(s).body == b"in\n"
    return elapsed


def closed_at_once(sock, within: float = HANG_BOUND) -> bool:
    """True if the server closes ``sock`` without a word (a refusal at accept)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def still_open(sock, within: float = 0.3) -> bool:
    """True if the server holds ``sock`` open for ``within`` seconds, saying nothing."""
    sock.settimeout(within)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    except ConnectionError:
        pass
    return False


def summary(logins: list[float]) -> dict:
    return {
        "logins": len(logins),
        "median_s": round(statistics.median(logins), 4),
        "max_s": round(max(logins), 4),
        "all_s": [round(t, 4) for t in logins],
    }


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    return path


# --------------------------------------------------------------------------- flood of idle and hello-only connections

IDLE = 2000
HELLO_RATE = 200  # connections a second, each sending only {"op": "auth"}
HELLO_SECONDS = 3.0
PER_SOURCE = 16  # the default max_startups_per_source


def test_preauth_flood_from_one_address_does_not_keep_another_out(token_file):
    """2,000 idle connections from 127.0.0.1, then 200 a second sending only
    {"op": "auth"} for 3 s: 127.0.0.1 holds its 16 unauthenticated slots and
    every other connection from it is closed at once, unread; a client from
    127.0.0.2 logs in meanwhile, in well under a second. Refusals are logged
    as a first line and a summary every 5 s, not one line each."""
    raise_open_files(IDLE + int(HELLO_RATE * HELLO_SECONDS) + 400)
    with cli_server("--token-file", token_file) as server:
        t0 = time.monotonic()
        idle, hellos, flood_errors = [], [], []
        try:
            for _ in range(IDLE):
                idle.append(connect_from(FLOODER, server.address))
            idle_connected_s = time.monotonic() - t0
            stop = threading.Event()

            def hello_flood():
                start = time.monotonic()
                for i in range(int(HELLO_RATE * HELLO_SECONDS)):
                    if stop.wait(max(0.0, start + i / HELLO_RATE - time.monotonic())):
                        return
                    try:
                        s = connect_from(FLOODER, server.address)
                    except OSError as e:
                        flood_errors.append(e)
                        continue
                    hellos.append(s)
                    try:
                        rframe.send_frame(s, b"", op="auth")
                    except OSError:
                        pass  # already closed by the server: what this test wants

            flood = threading.Thread(target=hello_flood, daemon=True)
            flood_t0 = time.monotonic()
            flood.start()
            logins = []
            try:
                while flood.is_alive() and time.monotonic() - flood_t0 < HELLO_SECONDS + HANG_BOUND:
                    logins.append(timed_login(server.address))
                    time.sleep(0.2)
            finally:
                stop.set()
                flood.join(HANG_BOUND)
            flood_s = time.monotonic() - flood_t0
            assert not flood_errors, flood_errors[:3]
            # Every connection from 127.0.0.1 past its 16 was closed unread.
            held = [s for s in idle if not closed_at_once(s, within=0.05)]
            hello_refused = sum(closed_at_once(s, within=0.05) for s in hellos)
            assert len(held) == PER_SOURCE, len(held)
            assert hello_refused == len(hellos), (hello_refused, len(hellos))
            assert len(logins) >= 5 and statistics.median(logins) < LOGIN_BOUND, logins
        finally:
            for s in idle:
                s.close()
            for s in hellos:
                s.close()
        # One line at the first refusal, then a summary per 5 s window.
        refusal_lines = lambda: [  # noqa: E731
            line for line in server.stderr.splitlines() if "closed at once" in line or "more unauthenticated" in line
        ]
        assert wait_until(lambda: any("more unauthenticated" in line for line in refusal_lines()), 7)
        assert len(refusal_lines()) <= (time.monotonic() - t0) / 5 + 2, refusal_lines()
        summed = sum(int(m.group(1)) for m in map(re.compile(r"closed (\d+) more").search, refusal_lines()) if m)
        report(
            "pre-auth flood",
            idle_from_one_address=IDLE,
            idle_connect_all_s=round(idle_connected_s, 3),
            held_unauthenticated=len(held),
            hello_connections=len(hellos),
            hello_rate_per_s=HELLO_RATE,
            flood_s=round(flood_s, 3),
            refusals_in_log_summaries=summed,
            refusal_log_lines=len(refusal_lines()),
            **summary(logins),
        )


# --------------------------------------------------------------------------- guessing connections

GUESSERS = 30
GUESS_SECONDS = 3.0


def test_right_token_is_not_held_up_by_guessers_from_another_address(token_file):
    """30 connections from 127.0.0.1 send wrong proofs in a loop. Their source
    failed, so its proofs wait for the server-wide turn, answered about two a
    second; a client from 127.0.0.2, which never failed, is checked at once and
    logs in in well under a second. (The per-source cap is raised to 64 here so
    that all 30 guess; the cap is tested below.)"""
    with cli_server(
        "--token-file", token_file, "--max-startups-per-source", 64, "--header-timeout", 3, "--log-level", "WARNING"
    ) as server:
        stop = threading.Event()
        answered, unanswered, errors = [], [], []

        def guesser():
            while not stop.is_set():
                try:
                    with connect_from(FLOODER, server.address) as s:
                        sn = challenge(s)
                        cn = os.urandom(32).hex()
                        rframe.send_frame(s, b"", op="auth", nonce=sn, client_nonce=cn, proof="00" * 32)
                        try:
                            header = rframe.read_frame(s).header
                        except (EOFError, ConnectionError):
                            unanswered.append(time.monotonic())
                            continue
                        assert header["error"] == "auth", header
                        answered.append(time.monotonic())
                except (EOFError, ConnectionError, TimeoutError) as e:
                    if not stop.is_set():
                        errors.append(e)
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)
                    return

        threads = [threading.Thread(target=guesser, daemon=True) for _ in range(GUESSERS)]
        for t in threads:
            t.start()
        try:
            # Let 127.0.0.1 fail once and queue up for the turn.
            assert wait_until(lambda: len(answered) >= 1, HANG_BOUND), errors[:3]
            t0 = time.monotonic()
            first = len(answered)
            logins = []
            while time.monotonic() - t0 < GUESS_SECONDS:
                logins.append(timed_login(server.address))
                time.sleep(0.25)
            window_s = time.monotonic() - t0
            answers_in_window = len([a for a in answered[first:] if a <= t0 + window_s])
        finally:
            stop.set()
            for t in threads:
                t.join(HANG_BOUND)
        assert not errors, errors[:3]
        assert not any(t.is_alive() for t in threads)
        assert len(logins) >= 5 and statistics.median(logins) < LOGIN_BOUND, logins
        # Still throttled: answers to guesses come from the turn, 0.5 s apart.
        assert answers_in_window <= window_s / 0.5 + 2, (answers_in_window, window_s)
        report(
            "guessers from another address",
            guessing_connections=GUESSERS,
            window_s=round(window_s, 3),
            wrong_proofs_answered_in_window=answers_in_window,
            closed_unanswered_total=len(unanswered),
            **summary(logins),
        )


# --------------------------------------------------------------------------- the caps themselves


def test_per_source_cap_closes_the_next_from_that_address_only():
    with running(rframe.Server(port=0, token=TOKEN, max_startups_per_source=4)) as s:
        socks = []
        try:
            socks += [connect_from(FLOODER, s.address) for _ in range(4)]
            assert all(still_open(x) for x in socks)
            over = connect_from(FLOODER, s.address)
            socks.append(over)
            assert closed_at_once(over)
            # Another address is served meanwhile.
            assert timed_login(s.address) < HANG_BOUND
            # A connection that ends gives its place back.
            socks[0].close()
            again = []

            def admitted():
                x = connect_from(FLOODER, s.address)
                again.append(x)
                return still_open(x, 0.1)

            assert wait_until(admitted, HANG_BOUND)
            socks += again
        finally:
            for x in socks:
                x.close()


def test_authenticated_connections_do_not_count():
    with running(rframe.Server(port=0, token=TOKEN, max_startups_per_source=2, max_startups=3)) as s:
        socks = []
        try:
            for _ in range(6):
                socks.append(connect_from(FLOODER, s.address))
                log_in(socks[-1])
            # Six logged in from one address, and still room for two logins in progress.
            socks += [connect_from(FLOODER, s.address) for _ in range(2)]
            sn = challenge(socks[-1])
            assert sn and still_open(socks[-2])
            # The total cap (a single N: none past N) holds for every address.
            socks.append(connect_from(CLIENT, s.address))
            assert still_open(socks[-1])
            socks.append(connect_from(CLIENT, s.address))
            assert closed_at_once(socks[-1])
            rframe.send_frame(socks[0], b"", op="run", cmd=["echo", "ok"])
            assert rframe.read_frame(socks[0]).body == b"ok\n"
        finally:
            for x in socks:
                x.close()


def test_without_a_token_nothing_is_capped():
    """Every connection is authenticated at once: the caps never apply."""
    with running(rframe.Server(port=0, max_startups_per_source=1, max_startups=1)) as s:
        socks = [connect_from(FLOODER, s.address) for _ in range(5)]
        try:
            for x in socks:
                rframe.send_frame(x, b"", op="run", cmd=["echo", "ok"])
            assert [rframe.read_frame(x).body for x in socks] == [b"ok\n"] * 5
        finally:
            for x in socks:
                x.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_startups": 0}, "1 <= start <= full"),
        ({"max_startups": (10, 30, 5)}, "1 <= start <= full"),
        ({"max_startups": (1, 101, 5)}, "rate is a percentage"),
        ({"max_startups": (1, 30)}, "whole number N or a tuple"),
        ({"max_startups": "10:30:100"}, "whole number N or a tuple"),
        ({"max_startups_per_source": 0}, "max_startups_per_source must be from 1"),
    ],
)
def test_bad_limits_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        rframe.Server(port=0, token=TOKEN, **kwargs)


def test_cli_parses_max_startups():
    from rframe.server import build_parser

    parse = build_parser().parse_args
    assert parse([]).max_startups == (64, 30, 256)
    assert parse([]).max_startups_per_source == 16
    assert parse(["--max-startups", "10:30:100"]).max_startups == (10, 30, 100)
    assert parse(["--max-startups", "50", "--max-startups-per-source", "4"]).max_startups == 50
    for bad in ("10:30", "a:b:c", ""):
        with pytest.raises(SystemExit):
            parse(["--max-startups", bad])
    with pytest.raises(argparse.ArgumentTypeError):
        from rframe.server import _max_startups

        _max_startups("1:2:3:4")
