"""The lines every benchmark report starts with: what ran, and on what."""

from __future__ import annotations

import os
import platform


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
