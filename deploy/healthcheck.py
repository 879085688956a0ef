#!/usr/bin/env python3
"""Container health check: GET $L2LB_HEALTH_URL (default http://127.0.0.1:9100/healthz); exit 0 on 2xx.

Used by the image's HEALTHCHECK and by docker-compose.yml. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("L2LB_HEALTH_URL", "http://127.0.0.1:9100/healthz")
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            ok = 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
        return 1
    if not ok:
        print(f"unhealthy: {url}: HTTP {resp.status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
