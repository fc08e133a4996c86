#!/usr/bin/env python3
"""Checks a built wheel's file list: the compiled module for its platform, the
package's Python files, the type stubs and ``py.typed``, and nothing else.

    python .ci/check-wheel.py dist/rframe-0.1.0-cp311-abi3-win_amd64.whl

The extension is ``rframe/_rframe.pyd`` in a Windows wheel and
``rframe/_rframe.abi3.so`` in a Linux or macOS one (abi3: one file for every
CPython from 3.11 on). Exits 1 with every problem listed, 0 with the list.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "rframe"


def expected_extension(wheel_name: str) -> str:
    """The compiled module's name for the wheel's platform tag."""
    tag = wheel_name.removesuffix(".whl").split("-")[-1]
    if tag.startswith("win"):
        return "rframe/_rframe.pyd"
    return "rframe/_rframe.abi3.so"


def problems(wheel: Path) -> tuple[list[str], list[str]]:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        bad = z.testzip()
    found: list[str] = []
    if bad is not None:
        found.append(f"corrupt member: {bad}")
    if "-cp311-abi3-" not in wheel.name:
        found.append(f"not an abi3 wheel for CPython >= 3.11: {wheel.name}")
    wanted = {expected_extension(wheel.name), "rframe/py.typed"}
    wanted |= {
        f"rframe/{p.relative_to(PACKAGE).as_posix()}"
        for p in PACKAGE.rglob("*")
        if p.suffix in (".py", ".pyi") and "__pycache__" not in p.parts
    }
    for name in sorted(wanted - set(names)):
        found.append(f"missing: {name}")
    dist_info = [n for n in names if ".dist-info/" in n]
    for meta in ("METADATA", "WHEEL", "RECORD"):
        if not any(n.endswith(f".dist-info/{meta}") for n in dist_info):
            found.append(f"missing: *.dist-info/{meta}")
    extra = [n for n in names if n not in wanted and n not in dist_info]
    for name in extra:
        found.append(f"unexpected: {name}")
    return found, sorted(names)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    wheel = Path(argv[1])
    found, names = problems(wheel)
    for name in names:
        print(f"  {name}")
    if found:
        for p in found:
            print(f"check-wheel: {wheel.name}: {p}", file=sys.stderr)
        return 1
    print(f"check-wheel: {wheel.name}: {len(names)} files, as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
