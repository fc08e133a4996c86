#!/usr/bin/env python3
"""What receiving over TLS costs a Python client, with nothing of rframe's in it.

A thread of this process sends N MiB over TLS 1.3 on loopback (Python's
``ssl``, the certificate rframe's server makes for itself); the receiving
thread reads it two ways, and its own CPU time (``time.thread_time``) is
measured for each:

* ``SSLSocket.recv_into`` a 256 KiB buffer, as a blocking client reads;
* an ``SSLObject`` over ``MemoryBIO``s, fed by ``recv_into`` of 256 KiB from the
  plain socket: one system call per 256 KiB in place of OpenSSL's two per
  16 KiB record, with only the decryption left in OpenSSL.

Plain TCP is measured the same way for scale. The difference between the TLS
rows and plain TCP is the floor of what TLS costs any client that uses
Python's ``ssl`` (bench/README.md, "files.py").

Run::

    python bench/tls_decrypt.py            # 512 MiB each way, 3 rounds
    python bench/tls_decrypt.py --mib 64   # smaller
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time

import rframe


def make_certificate(folder: str) -> str:
    """rframe's own server certificate and key, one PEM file."""
    server = rframe.Server("127.0.0.1", 0, tls=True, tls_dir=folder)
    server.stop()
    return os.path.join(folder, "server.pem")


def sender(listener: socket.socket, context: ssl.SSLContext | None, total: int, rounds: int) -> None:
    block = memoryview(os.urandom(1 << 20))
    for _ in range(rounds):
        conn, _ = listener.accept()
        with conn:
            out = context.wrap_socket(conn, server_side=True) if context else conn
            for _ in range(total >> 20):
                out.sendall(block)


#: The cipher suites the TLS rows agreed on (Python's ssl picks them; 3.11 has
#: no way to choose a TLS 1.3 suite).
CIPHERS: set[str] = set()


def receive_plain(sock: socket.socket, total: int, view: memoryview) -> None:
    if isinstance(sock, ssl.SSLSocket):
        CIPHERS.add(str((sock.cipher() or ("?",))[0]))
    got = 0
    while got < total:
        n = sock.recv_into(view)
        if not n:
            raise EOFError("the sender stopped early")
        got += n


def receive_bio(raw: socket.socket, context: ssl.SSLContext, total: int, view: memoryview) -> None:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                raw.sendall(outgoing.read())
            incoming.write(raw.recv(65536))
    if outgoing.pending:
        raw.sendall(outgoing.read())
    CIPHERS.add(str((tls.cipher() or ("?",))[0]))
    feed = bytearray(len(view))
    got = 0
    while got < total:
        try:
            got += tls.read(len(view), view)
        except ssl.SSLWantReadError:
            n = raw.recv_into(feed)
            if not n:
                raise EOFError("the sender stopped early") from None
            incoming.write(memoryview(feed)[:n])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=512, help="MiB per transfer (default 512)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    total = args.mib << 20
    folder = tempfile.mkdtemp(prefix="rframe-bench-tls-")
    try:
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.minimum_version = ssl.TLSVersion.TLSv1_3
        server_context.load_cert_chain(make_certificate(folder))
        client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_context.check_hostname = False
        client_context.verify_mode = ssl.CERT_NONE  # the sender is this process
        view = memoryview(bytearray(256 << 10))
        ways = {
            "plain TCP, recv_into": (None, lambda s: receive_plain(s, total, view)),
            "TLS 1.3, SSLSocket.recv_into": (
                server_context,
                lambda s: receive_plain(client_context.wrap_socket(s), total, view),
            ),
            "TLS 1.3, SSLObject + MemoryBIO": (server_context, lambda s: receive_bio(s, client_context, total, view)),
        }
        cpu: dict[str, list[float]] = {name: [] for name in ways}
        for name, (context, receive) in ways.items():
            with socket.create_server(("127.0.0.1", 0)) as listener:
                thread = threading.Thread(target=sender, args=(listener, context, total, args.rounds), daemon=True)
                thread.start()
                for _ in range(args.rounds):
                    with socket.create_connection(listener.getsockname()) as sock:
                        start = time.thread_time()
                        receive(sock)
                        cpu[name].append(time.thread_time() - start)
                thread.join(timeout=60)
        print(f"# Receiving {args.mib} MiB over loopback, the receiving thread's CPU, best of {args.rounds}")
        print()
        print(
            f"- Python's ssl: {ssl.OPENSSL_VERSION}; TLS 1.3 with {', '.join(sorted(CIPHERS))} (rframe's server "
            "prefers TLS_AES_128_GCM_SHA256)"
        )
        print()
        print("| way | CPU s | CPU s per GiB | more than plain TCP, per GiB |")
        print("|---|---:|---:|---:|")
        base = min(cpu["plain TCP, recv_into"]) / total * (1 << 30)
        for name, times in cpu.items():
            per_gib = min(times) / total * (1 << 30)
            print(f"| {name} | {min(times):.4f} | {per_gib:.2f} | {per_gib - base:.2f} |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
