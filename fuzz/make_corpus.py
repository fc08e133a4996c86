"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/*.bin).

Frames are made the way the Python course makes them (struct.pack('i') and
json.dumps), so the fuzzers start from what real peers send. Each seed is laid
out as fuzz/src/lib.rs says: flags, limits, k, k piece sizes, then the stream.

    python3 fuzz/make_corpus.py        # rewrites the seeds; deterministic
"""

import hashlib
import hmac
import json
import pathlib
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"

# The fuzz server's token and challenge (fuzz_targets/request.rs).
TOKEN = b"fuzz-token"
SERVER_NONCE = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def seed(flags=0, limits=0, sizes=(), stream=b""):
    assert len(sizes) < 256
    return bytes([flags, limits, len(sizes), *sizes]) + stream


def frame(header, body=b"", fmt="i"):
    """The course's sender: struct.pack('i', len(head)) + head + body."""
    head = json.dumps(header).encode() if isinstance(header, dict) else header
    return struct.pack(fmt, len(head)) + head + body


def course(name, body):
    return frame({"file_name": name, "total_size": len(body)}, body)


def length_only(body, fmt="<i"):
    return struct.pack(fmt, len(body)) + body


def digest_frame(algorithm, body):
    digest = hashlib.new(algorithm, body).hexdigest()
    return frame({"file_name": "a.txt", algorithm: digest, "total_size": len(body)}, body)


# Decoder flags: bit 0 length-only, bit 1 big endian, bits 2-3 checksum (1 md5,
# 2 sha256). Limits: low nibble max_header = 16n, high nibble max_body = 8(m-1).
LENGTH_ONLY, BIG, MD5, SHA256 = 1, 2, 4, 8


def limits(max_header_16=0, max_body_8=None):
    return max_header_16 | (0 if max_body_8 is None else (max_body_8 + 1) << 4)


def decoder_seeds():
    hello = course("a.txt", b"hello")
    three = hello + frame({"total_size": 0}) + course("b.bin", bytes(range(40)))
    nested = frame({"total_size": len(hello)}, hello)
    return {
        "course-frame": seed(stream=hello),
        "course-frame-bytewise": seed(sizes=[1], stream=hello),
        "three-frames-split": seed(sizes=[5, 1, 2, 0, 13], stream=three),
        "body-looks-like-a-frame": seed(sizes=[3], stream=nested),
        "length-only-little": seed(LENGTH_ONLY, sizes=[2, 7], stream=length_only(b"abc") + length_only(b"")),
        "length-only-big": seed(LENGTH_ONLY | BIG, sizes=[4], stream=length_only(b"hi", ">i") + length_only(b"x", ">i")),
        "json-big-endian": seed(BIG, sizes=[6], stream=frame({"total_size": 2}, b"ok", ">i")),
        "md5": seed(MD5, sizes=[9], stream=digest_frame("md5", b"hello")),
        "md5-mismatch": seed(MD5, stream=frame({"md5": hashlib.md5(b"hello").hexdigest(), "total_size": 5}, b"jello")),
        "md5-missing": seed(MD5, stream=frame({"total_size": 5}, b"hello")),
        "sha256": seed(SHA256, sizes=[17, 1], stream=digest_frame("sha256", b"some body")),
        "negative-length": seed(stream=struct.pack("i", -1) + b"{}"),
        "total-size-missing": seed(stream=frame({"file_name": "a"}, b"")),
        "total-size-negative": seed(stream=frame({"total_size": -5}, b"")),
        "total-size-float": seed(stream=frame({"total_size": 5.0}, b"hello")),
        "total-size-string": seed(stream=frame({"total_size": "5"}, b"hello")),
        "total-size-huge": seed(stream=frame({"total_size": 2**70})),
        "total-size-twice": seed(stream=frame(b'{"total_size": 9, "total_size": 2}', b"ok")),
        "header-nan": seed(stream=frame(b'{"x": NaN, "y": -Infinity, "total_size": 0}')),
        "header-not-json": seed(stream=frame(b"{not json", b"")),
        "header-array": seed(stream=frame(b"[1, 2]", b"")),
        "header-unicode": seed(stream=frame({"file_name": "\u4e2d\u6587\U0001f600", "total_size": 1}, b"x")),
        "header-lone-surrogate": seed(stream=frame(b'{"file_name": "\\udcff", "total_size": 1}', b"x")),
        "cut-in-length": seed(sizes=[1], stream=hello[:2]),
        "cut-in-header": seed(sizes=[3], stream=hello[:10]),
        "cut-in-body": seed(sizes=[8], stream=hello[:-1]),
        "header-over-limit": seed(0, limits(2), stream=hello),
        "body-over-limit": seed(0, limits(15, 0), stream=hello),
        "length-only-over-limit": seed(LENGTH_ONLY, limits(0, 1), sizes=[3], stream=length_only(b"x" * 9)),
        "text-on-binary-port": seed(stream=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        "empty-reads": seed(sizes=[0, 0, 3], stream=frame({"total_size": 0})),
    }


# Request flags: bit 0 token, bit 1 length-only, bit 2 big endian, bit 3 md5,
# bit 4 allow list (echo, ls), bit 5 no shell, bit 6 a server cwd.
# Limits: bits 0-1 max_header 64K/4K/512/64, bits 2-3 max_body 16M/1K/16/0.
TOKENED, R_LENGTH_ONLY, R_BIG, R_MD5, ALLOW, NO_SHELL, CWD = 1, 2, 4, 8, 16, 32, 64


def run(cmd, body=b"", **fields):
    return frame({"op": "run", "cmd": cmd, **fields, "total_size": len(body)}, body)


def login(client_nonce="c0ffee", proof=None, upper=False):
    if proof is None:
        message = b"rframe-client:" + SERVER_NONCE.encode() + b":" + client_nonce.encode()
        proof = hmac.new(TOKEN, message, "sha256").hexdigest()
        proof = proof.upper() if upper else proof
    challenge = frame({"op": "auth", "total_size": 0})
    answer = frame(
        {"op": "auth", "nonce": SERVER_NONCE, "client_nonce": client_nonce, "proof": proof, "total_size": 0}
    )
    return challenge + answer


def request_seeds():
    return {
        "run-line": seed(stream=run("ls -l")),
        "run-argv-input": seed(sizes=[7], stream=run(["echo", "hi"], b"abc", input=True)),
        "run-env-cwd-timeout": seed(stream=run("env", env={"A": "1"}, cwd="/tmp", timeout=2.5)),
        "run-pipelined": seed(sizes=[3, 30], stream=run("a") + run(["b"]) + frame({"op": "ping", "total_size": 0})),
        "run-body-without-input": seed(stream=run("cat", b"xyz")),
        "run-timeout-negative": seed(stream=run("ls", timeout=-1)),
        "run-timeout-huge": seed(stream=run("ls", timeout=1e300)),
        "run-empty": seed(stream=run("  ") + run([])),
        "run-no-cmd": seed(stream=frame({"op": "run", "total_size": 0})),
        "run-bad-types": seed(stream=frame(b'{"op": "run", "cmd": 5, "env": {"A": 1}, "total_size": 0}')),
        "no-op": seed(stream=frame({"cmd": "ls", "total_size": 0})),
        "allow-listed": seed(ALLOW, stream=run(["ls", "-l"]) + run("echo 'a b'")),
        "allow-refused": seed(ALLOW, stream=run(["rm", "-rf", "/"]) + run("ls", env={"PATH": "."})),
        "allow-cwd-refused": seed(ALLOW | CWD, stream=run(["ls"], cwd="/")),
        "no-shell-unbalanced": seed(NO_SHELL, stream=run('echo "hi') + run("echo 'a b' c")),
        "raw-line": seed(stream=b"dir"),
        "raw-line-newline": seed(stream=b"ls -l\n"),
        "raw-line-utf8": seed(NO_SHELL, stream="echo \u4e2d\u6587".encode()),
        "raw-line-latin1": seed(stream=b"echo \xe9"),
        "raw-short-then-frame": seed(sizes=[2, 50], stream=b"ab" + run("ls")),
        "auth-login-run": seed(TOKENED, sizes=[40, 200], stream=login() + run("whoami")),
        "auth-uppercase-proof": seed(TOKENED, stream=login("n", upper=True) + run(["ls"])),
        "auth-wrong-proof": seed(TOKENED, stream=login(proof="00" * 32)),
        "auth-proof-no-challenge": seed(TOKENED, stream=frame({"op": "auth", "proof": "ab", "client_nonce": "c", "total_size": 0})),
        "auth-raw-refused": seed(TOKENED, stream=b"ls"),
        "auth-run-first": seed(TOKENED, stream=run("ls")),
        "length-only": seed(R_LENGTH_ONLY, stream=length_only(b"\x00\x01payload")),
        "length-only-big-text": seed(R_LENGTH_ONLY | R_BIG, stream=b"whoami\n"),
        "md5-request": seed(R_MD5, stream=frame({"op": "run", "cmd": "ls", "md5": hashlib.md5(b"").hexdigest(), "total_size": 0})),
        "negative-length": seed(stream=struct.pack("i", -2) + b"\x00"),
        "header-too-large": seed(0, 3, stream=run("x" * 100)),
        "total-size-missing": seed(stream=frame({"op": "run", "cmd": "ls"})),
    }


# Session flags: bit 0 token, bit 1 TLS, bit 2 handler, bit 3 root, bit 4
# length-only, bit 5 the disk refuses, bit 6 files shrink, bit 7 end by deadline.
# Limits as for `request`.
S_TOKEN, S_TLS, S_HANDLER, S_ROOT, S_LENGTH_ONLY, S_REFUSES, S_SHRINKS, S_DEADLINE = 1, 2, 4, 8, 16, 32, 64, 128
CERT_HASH_HEX = "07" * 32


def tls_login(client_nonce="c0ffee"):
    message = b"rframe-client:" + SERVER_NONCE.encode() + b":" + client_nonce.encode() + b":" + CERT_HASH_HEX.encode()
    proof = hmac.new(TOKEN, message, "sha256").hexdigest()
    challenge = frame({"op": "auth", "total_size": 0})
    answer = frame(
        {
            "op": "auth",
            "nonce": SERVER_NONCE,
            "client_nonce": client_nonce,
            "proof": proof,
            "channel_binding": "tls-server-end-point",
            "total_size": 0,
        }
    )
    return challenge + answer


def put(name, data, chunk=4, algorithm="sha256", digest=None, **fields):
    head = frame({"op": "put", "name": name, "size": len(data), "checksum": algorithm, **fields, "total_size": 0})
    chunks = b"".join(frame({"op": "data", "total_size": len(data[i : i + chunk])}, data[i : i + chunk]) for i in range(0, len(data), chunk))
    digest = hashlib.new(algorithm, data).hexdigest() if digest is None else digest
    return head + chunks + frame({"op": "end", "checksum": algorithm, "digest": digest, "total_size": 0})


def file_op(op, name, **fields):
    return frame({"op": op, "name": name, **fields, "total_size": 0})


def session_seeds():
    transfers = put("a.txt", b"hello world") + file_op("get", "a.txt", chunk_size=100) + file_op("list", "")
    return {
        "run-and-raw": seed(sizes=[40, 3], stream=run("ls -l") + b"dir"),
        "login-run": seed(S_TOKEN, sizes=[40, 200], stream=login() + run("whoami")),
        "login-wrong-proof": seed(S_TOKEN, stream=login(proof="00" * 32)),
        "login-before-auth": seed(S_TOKEN, stream=run("ls")),
        "tls-login-transfers": seed(S_TOKEN | S_TLS | S_ROOT, stream=tls_login() + transfers),
        "tls-unbound-proof": seed(S_TOKEN | S_TLS, stream=login() + run("ls")),
        "transfers": seed(S_ROOT, sizes=[30, 7, 64], stream=transfers),
        "put-md5-get-md5": seed(S_ROOT, stream=put("m", b"abcdefgh", 3, "md5") + file_op("get", "m", checksum="md5")),
        "put-digest-mismatch": seed(S_ROOT, stream=put("b", b"xyz", digest="00" * 32) + file_op("list", "d")),
        "put-too-much": seed(S_ROOT, stream=put("c", b"abc")[:60] + frame({"op": "data", "total_size": 9}, b"123456789")),
        "put-then-run": seed(S_ROOT, stream=file_op("put", "d", size=3) + run("ls")),
        "put-small-chunks": seed(S_ROOT, 0b0100, stream=put("e", b"0123456789abcdefghij", 16)),
        "disk-refuses": seed(S_ROOT | S_REFUSES, stream=put("ab", b"12345678", 2) + put("abc", b"1234", 2) + transfers),
        "file-shrinks": seed(S_ROOT | S_SHRINKS, stream=file_op("get", "big-file-name", chunk_size=7)),
        "no-root": seed(0, stream=transfers),
        "handler": seed(S_HANDLER, stream=run("ls") + frame({"op": "x", "total_size": 1}, b"y") + b"ls"),
        "handler-login": seed(S_TOKEN | S_HANDLER, stream=login() + frame({"op": "x", "total_size": 0})),
        "length-only": seed(S_LENGTH_ONLY, stream=length_only(b"\x00\x01payload")),
        "deadline-mid-request": seed(S_DEADLINE, stream=run("ls")[:10]),
        "unknown-ops": seed(stream=frame({"op": "dance", "total_size": 0}) + frame({"op": "end", "total_size": 0}) + frame({"total_size": 0})),
    }


# Client session flags (fuzz_targets/client_session.rs): bit 0 token, bit 1
# TLS, bits 2-3 the requests (0 run + two requests, 1 get, 2 put, 3 list +
# run), bit 4 cancel the first, bit 5 send the upload, bit 6 the peer leaves,
# bit 7 the driver hands over whole frames (the blocking client's way).
C_TOKEN, C_TLS, C_GET, C_PUT, C_LIST, C_CANCEL, C_SEND, C_EOF, C_FRAMES = 1, 2, 4, 8, 12, 16, 32, 64, 128


def reply(op, body=b"", **fields):
    return frame({"op": op, **fields, "total_size": len(body)}, body)


def client_session_seeds():
    result = reply("result", b"hi\n", returncode=0, stdout_size=3, duration=0.01)
    data = b"0123456789"
    digest = hashlib.sha256(data).hexdigest()
    download = reply("file", size=10) + reply("data", data[:4]) + reply("data", data[4:])
    download += reply("end", checksum="sha256", digest=digest)
    challenge = reply("challenge", nonce=SERVER_NONCE, version=1, channel_binding="none")
    return {
        "run-and-requests": seed(C_EOF, sizes=[20, 5], stream=result + frame({"seq": 1, "total_size": 1}, b"X") + reply("x")),
        "cancel-first": seed(C_CANCEL | C_EOF, sizes=[3], stream=result + frame({"seq": 1, "total_size": 1}, b"X")),
        "remote-errors": seed(stream=reply("error", error="not-found", message="no") + reply("error", error="busy")),
        "get": seed(C_GET | C_EOF, sizes=[9, 30], stream=download),
        "get-too-much": seed(C_GET, stream=reply("file", size=2) + reply("data", data)),
        "get-error": seed(C_GET, stream=reply("file", size=10) + reply("error", error="io", message="disk")),
        "put": seed(C_PUT | C_SEND, stream=reply("ready", chunk_size=2) + reply("stored", name="f", size=5, sha256="00" * 32)),
        "put-reply-early": seed(C_PUT, stream=reply("ready", chunk_size=2) + reply("stored", name="f", size=5)),
        "list-and-run": seed(C_LIST | C_EOF, stream=reply("listing", b"[]") + result),
        "login-challenge": seed(C_TOKEN, stream=challenge + reply("welcome", proof="00" * 32)),
        "login-welcome-first": seed(C_TOKEN, stream=reply("welcome")),
        "login-tls-unbound": seed(C_TOKEN | C_TLS, stream=challenge),
        "login-auth-error": seed(C_TOKEN | C_EOF, stream=reply("error", error="auth", message="wrong token")),
        "garbage": seed(C_EOF, stream=b"\xff\xff\xff\x7fnot a frame"),
        "frames-get": seed(C_GET | C_FRAMES | C_EOF, sizes=[9, 30], stream=download),
        "frames-cancel-first": seed(C_CANCEL | C_FRAMES, sizes=[3], stream=result + frame({"seq": 1, "total_size": 1}, b"X")),
        "frames-login": seed(C_TOKEN | C_FRAMES, stream=challenge + reply("welcome", proof="00" * 32)),
    }


def main():
    targets = [
        ("decoder", decoder_seeds()),
        ("request", request_seeds()),
        ("session", session_seeds()),
        ("client_session", client_session_seeds()),
    ]
    for target, seeds in targets:
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.bin"):
            old.unlink()
        for name, data in seeds.items():
            (folder / f"{name}.bin").write_bytes(data)
        print(f"{folder}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
