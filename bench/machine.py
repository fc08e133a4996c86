"""What the benchmarks share: the lines every report starts with (what ran,
and on what), and a process's CPU time."""

from __future__ import annotations

import os
import platform
import time


def rframe_version() -> str:
    try:
        from importlib.metadata import version

        return version("rframe")
    except Exception:  # noqa: BLE001 - run from a source tree without metadata
        return "?"


def describe() -> list[str]:
    """Markdown list items: Python, rframe, platform and the CPUs this process may use."""
    return [
        f"- Python {platform.python_version()} ({platform.python_implementation()}), rframe {rframe_version()}",
        f"- machine: {platform.platform()}, {platform.machine()}, nproc={len(os.sched_getaffinity(0))}",
    ]


def cpu_seconds(pid: int) -> float:
    """user + system time of all threads of a process, dead ones included.

    Read from the process's CPU-time clock, in nanoseconds: Linux names it
    by its pid (glibc's clock_getcpuclockid, which Python does not expose,
    computes the same id). ``/proc/PID/stat`` counts in clock ticks (10 ms:
    0.5 us per request over 20,000 requests) and is the fallback.
    """
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    except OSError:
        pass
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # after the comm field: state is field 3, so utime (14) and stime (15)
    # are at indexes 11 and 12
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
