#!/usr/bin/env python3
"""Instructions per decoded frame, counted by valgrind's callgrind.

Wall-clock times on a shared VM move by tens of percent from one minute to the
next; instruction counts do not. This runs the decode row of ``framing.py``
(small frames fed in 1024-byte chunks) for each decoder under callgrind, once
with one pass over the stream and once with two, and reports the difference
per frame: the cost of decoding alone, without start-up and set-up.

Run::

    python bench/decode_count.py            # needs valgrind; two to three minutes
    python bench/decode_count.py --frames 2000   # quicker, noisier

The decoders are the ones ``framing.py`` measures: the tuned pure-Python
decoder with the course's ``json.loads``, with json's C scanner called
directly, or with orjson; and ``rframe.FrameDecoder``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def child(name: str, frames: int, passes: int) -> None:
    sys.path.insert(0, HERE)
    import framing

    stream = framing.make_stream(frames)
    chunks = [stream[i : i + 1024] for i in range(0, len(stream), 1024)]
    if name == "rframe":
        import rframe

        make = rframe.FrameDecoder
    else:
        make = lambda: framing.PyFrameDecoder(name)  # noqa: E731
    for _ in range(passes):
        feed = make().feed
        n = 0
        for c in chunks:
            out = feed(c)
            if out:
                n += len(out)
        if n != frames:
            raise SystemExit(f"{name}: {n} frames decoded, expected {frames}")


def collected(name: str, frames: int, passes: int) -> int:
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        name,
        "--frames",
        str(frames),
        "--passes",
        str(passes),
    ]
    # A fixed string hash seed: dict probing, and so the count, then repeats exactly.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    run = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    match = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or not match:
        raise SystemExit(f"callgrind run failed for {name}:\n{run.stderr[-2000:]}")
    return int(match.group(1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20_000, help="frames in the stream (default 20000)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--passes", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.frames, args.passes)
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (Debian: apt install valgrind)")
    names = ["json", "json-scanner", "rframe"]
    try:
        import orjson  # noqa: F401

        names.insert(2, "orjson")
    except ImportError:
        pass
    counts = {}
    for name in names:
        counts[name] = (collected(name, args.frames, 2) - collected(name, args.frames, 1)) / args.frames
    print(f"instructions per frame, {args.frames:,} small frames fed in 1024 B chunks (callgrind)\n")
    print("| decoder | instructions/frame | vs rframe |")
    print("|---|---:|---:|")
    for name in names:
        print(f"| {name} | {counts[name]:,.0f} | {counts[name] / counts['rframe']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
