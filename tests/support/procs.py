"""Small helpers shared by the test fixtures and benchmarks: stop a child process, GET a URL."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from typing import Any


def stop_process(proc: subprocess.Popen[Any] | None, *, kill: bool = False, wait: float = 5.0) -> None:
    """SIGTERM (or SIGKILL with ``kill``) a child, wait up to ``wait`` s, then SIGKILL; always reaped."""
    if proc is None or proc.poll() is not None:
        return
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; (0, error text) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)
