#!/usr/bin/env python3
"""Sticky packets (粘包), shown and fixed with rframe.

Replaces the demo of course sections 10-12 ("粘包现象" / "什么情况下出现粘包"):
a client that does ``phone.send(b'he'); phone.send(b'll'); phone.send(b'o')``
and a server whose single ``conn.recv(1024)`` gets ``b'hello'`` glued together.

The script runs everything itself, on 127.0.0.1 with a free port:

1. plain ``sock.send`` of a burst of messages, read with plain ``recv(1024)``:
   the boundaries are gone, the server sees one glued blob;
2. the same burst sent with ``rframe.send_frame`` and read with
   ``rframe.read_frame``: every message arrives on its own;
3. the same framed burst read with the very same ``recv(1024)`` loop as in 1,
   but fed to an ``rframe.FrameDecoder``: the messages come back apart again.

Run it (no arguments, no input; exits 0 when the framed messages round-trip):

    python examples/sticky_packets.py
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading

import rframe

# The course's three tiny sends, then a few more messages, one of them
# non-ASCII and one empty (an empty frame is still a message).
MESSAGES = [b"he", b"ll", b"o", b"first message", "第二条消息".encode(), b"", b"q"]


def run_demo(send_burst, receive):
    """Start a server thread on a free port, let a client send a burst, and
    return what ``receive(conn)`` made of it.

    The server starts reading only once the client has sent everything, the
    way a busy server would: that is when TCP has the best chance to glue.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    burst_sent = threading.Event()
    result: dict = {}

    def server():
        try:
            conn, _ = listener.accept()
            with conn:
                burst_sent.wait(10)
                result["value"] = receive(conn)
        except BaseException as e:  # report it in the main thread
            result["error"] = e
        finally:
            listener.close()

    t = threading.Thread(target=server, name="demo-server", daemon=True)
    t.start()
    with socket.create_connection(listener.getsockname(), timeout=10) as client:
        send_burst(client)
        burst_sent.set()
    t.join(20)
    if t.is_alive():
        raise RuntimeError("server thread did not finish")
    if "error" in result:
        raise result["error"]
    return result["value"]


def recv_all_chunks(conn):
    """Plain recv(1024) until the client closes: what the course server does."""
    chunks = []
    while True:
        data = conn.recv(1024)
        if not data:
            return chunks
        chunks.append(data)


def plain_send(client):
    for m in MESSAGES:
        client.send(m)  # the course's phone.send(...); an empty send sends nothing


def framed_send(client):
    for i, m in enumerate(MESSAGES):
        rframe.send_frame(client, m, {"seq": i})


def read_frames(conn):
    frames = []
    while True:
        try:
            frames.append(rframe.read_frame(conn))
        except EOFError:  # the client closed cleanly between two frames
            return frames


def decode_chunks(conn):
    decoder = rframe.FrameDecoder()
    frames = []
    for chunk in recv_all_chunks(conn):
        frames.extend(decoder.feed(chunk))
    if decoder.pending:
        raise RuntimeError(f"{decoder.pending} bytes left over after the stream ended")
    return frames


def show_frames(frames):
    ok = len(frames) == len(MESSAGES)
    for i, frame in enumerate(frames):
        header, body = frame
        print(f"   frame #{i + 1}: header={header!r} body={body!r}")
        if i < len(MESSAGES) and (body != MESSAGES[i] or header.get("seq") != i):
            ok = False
    return ok


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    print(f"the client sends {len(MESSAGES)} messages in a burst: {MESSAGES!r}")
    print()

    chunks = run_demo(plain_send, recv_all_chunks)
    print(f"1) plain sock.send + recv(1024): the server's recv() returned {len(chunks)} chunk(s):")
    for i, c in enumerate(chunks):
        print(f"   recv #{i + 1}: {c!r}")
    if len(chunks) < len(MESSAGES):
        print("   -> the messages are glued together: their boundaries are lost (sticky packets)")
    else:
        print("   -> (this time TCP happened to keep them apart, but nothing guarantees it)")
    print()

    frames = run_demo(framed_send, read_frames)
    print(f"2) rframe.send_frame + rframe.read_frame: {len(frames)} frame(s):")
    ok2 = show_frames(frames)
    print()

    frames = run_demo(framed_send, decode_chunks)
    print(f"3) the same recv(1024) loop as in 1, fed to rframe.FrameDecoder: {len(frames)} frame(s):")
    ok3 = show_frames(frames)
    print()

    if ok2 and ok3:
        print("OK: with framing every message arrived separately and intact")
        return 0
    print("FAILED: the framed messages did not come back as sent", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
