"""The announcer runs on every node: its import footprint is part of its memory budget (RSS <= 60 MiB at
10k VIPs). The Kubernetes client library alone is ~35 MiB and is only needed with --kubeconfig."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import services.announcer.main  # noqa: F401
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'kubernetes_asyncio', 'kubernetes', 'scapy', 'hypothesis'})
rss = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS'))
print(','.join(heavy) or '-', rss)
"""


def test_announcer_does_not_import_the_kubernetes_client() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    heavy, rss_kib = out.stdout.split()
    assert heavy == "-", f"the announcer imports {heavy} at start-up (import it lazily, see _kube_labels)"
    # ~49 MiB measured with uvloop, aiohttp, redis, yaml; the Kubernetes client would add ~35 MiB
    assert int(rss_kib) < 60 * 1024, f"announcer modules alone take {int(rss_kib) // 1024} MiB"
