"""A Twisted ``Int32StringReceiver`` peer in both directions.

``Int32StringReceiver`` frames are a 4-byte big-endian length and the bytes:
``rframe.Codec(json_header=False, byteorder="big")``. The reactor runs in a
subprocess of its own (a reactor cannot be restarted in one process).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("twisted", reason="twisted is not installed (pip install twisted, or the 'test' extra)")

import rframe  # noqa: E402
from conftest import HANG_BOUND  # noqa: E402
from server_helpers import ENV, ROOT, CliProcess, running  # noqa: E402

CODEC = rframe.Codec(json_header=False, byteorder="big")

MESSAGES = ["hello", "", "中文 text", "x" * 100_000, "last"]

TWISTED_CLIENT = textwrap.dedent(
    """
    import json, sys
    from twisted.internet import protocol, reactor
    from twisted.protocols.basic import Int32StringReceiver

    port = int(sys.argv[1])
    messages = [m.encode("utf-8") for m in json.loads(sys.argv[2])]
    replies = []

    class Client(Int32StringReceiver):
        MAX_LENGTH = 1 << 24

        def connectionMade(self):
            for m in messages:  # all at once: pipelined
                self.sendString(m)

        def stringReceived(self, data):
            replies.append(data.decode("utf-8"))
            if len(replies) == len(messages):
                self.transport.loseConnection()

        def connectionLost(self, reason):
            print(json.dumps(replies), flush=True)
            reactor.stop()

    class Factory(protocol.ClientFactory):
        protocol = Client

        def clientConnectionFailed(self, connector, reason):
            print("connection failed:", reason.getErrorMessage(), file=sys.stderr, flush=True)
            reactor.stop()

    reactor.connectTCP("127.0.0.1", port, Factory())
    reactor.callLater(%d, reactor.stop)
    reactor.run()
    """  # noqa: UP031 - a template of Python source, filled with %
    % HANG_BOUND
)

TWISTED_SERVER = textwrap.dedent(
    """
    from twisted.internet import protocol, reactor
    from twisted.protocols.basic import Int32StringReceiver

    class Upper(Int32StringReceiver):
        MAX_LENGTH = 1 << 24

        def stringReceived(self, data):
            self.sendString(data.upper())

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Upper), interface="127.0.0.1")
    print(f"listening on 127.0.0.1:{port.getHost().port}", flush=True)
    reactor.run()  # SIGTERM stops it
    """
)


def test_twisted_client_against_rframe_server(tmp_path):
    script = tmp_path / "twisted_client.py"
    script.write_text(TWISTED_CLIENT)
    seen = []

    def handler(frame):
        seen.append(frame.header)
        return frame.body.upper()

    with running(rframe.Server(port=0, handler=handler, codec=CODEC)) as server:
        r = subprocess.run(
            [sys.executable, str(script), str(server.address[1]), json.dumps(MESSAGES)],
            capture_output=True,
            text=True,
            timeout=HANG_BOUND + 5,
            cwd=ROOT,
            env=ENV,
        )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [m.upper() for m in MESSAGES]
    assert seen == [{}] * len(MESSAGES)  # length-only frames carry no header


def test_rframe_client_against_twisted_server(tmp_path):
    script = tmp_path / "twisted_server.py"
    script.write_text(TWISTED_SERVER)
    server = CliProcess(str(script))
    try:
        port = int(server.wait_line(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        with rframe.Client("127.0.0.1", port, codec=CODEC, timeout=HANG_BOUND) as c:
            for m in MESSAGES:
                f = c.request(m.encode("utf-8"))
                assert f.body == m.upper().encode("utf-8")
                assert f.header == {}
            # pipelined: send several, then read the replies in order
            for m in ("a", "b", "c"):
                c.send(m)
            assert [c.recv().body for _ in range(3)] == [b"A", b"B", b"C"]
        server.proc.send_signal(signal.SIGTERM)
        server.wait()
    finally:
        server.stop()
