"""Print how installed packages (``pip list --format=freeze`` on stdin) differ from a lock file.

Used by ``bash scripts/dev deps-check``: one line per package whose newest release differs from the
pin, so a failing check names the likely culprit (``mypy 1.19.0 -> 2.4.1``).
"""

from __future__ import annotations

import re
import sys


def pins(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        locked = pins(f.read())
    now = pins(sys.stdin.read())
    moved = [(n, locked[n], v) for n, v in sorted(now.items()) if n in locked and locked[n] != v]
    new = [n for n in sorted(now) if n not in locked and n not in {"pip", "setuptools", "l2lb"}]
    for name, old, v in moved:
        print(f"  {name:30} {old} -> {v}")
    for name in new:
        print(f"  {name:30} (not in the lock) {now[name]}")
    if not moved and not new:
        print("  nothing moved: the lock has the newest releases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
