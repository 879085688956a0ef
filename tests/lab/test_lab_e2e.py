"""`l2lb lab` end to end (shortened): exit status, measured failover figures, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from l2lb.lab import netns
from tests.support.netns import require_netns_privileges

pytestmark = [pytest.mark.net, pytest.mark.slow]
PIHOLE = "198.51.100.153"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd}")
    return found


@pytest.mark.timeout(300)
def test_lab_runs_measures_failover_and_cleans_up(tmp_path: Path) -> None:
    require_netns_privileges()
    prefix = f"lb{os.getpid() % 100000:05d}"
    report = tmp_path / "report.json"
    work = tmp_path / "lab"
    proc = subprocess.run(
        [sys.executable, "-m", "l2lb.cli", "lab", "--nodes", "2", "--rounds", "kill,linkdown", "--prefix", prefix,
         "--workdir", str(work), "--json-report", str(report), "--timeout", "60"],
        capture_output=True, text=True, timeout=280, check=False,
    )
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in (work / "logs").glob("*.log")) \
        if (work / "logs").is_dir() else ""
    assert proc.returncode == 0, f"lab failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{logs}"
    data = json.loads(report.read_text())
    # the seed's Services got IPs from the (TEST-NET-mapped) seed pool; the Pi-hole pair shares one
    ips = {s["service"]: s["ip"] for s in data["services"]}
    assert ips["pihole/pihole-dns-tcp"] == ips["pihole/pihole-dns-udp"] == PIHOLE
    assert ips["pihole/pihole-web"].startswith("198.51.100.")
    assert ips["pihole/pihole-web"] != PIHOLE
    # the dual-stack Service got one address of each family, both answered by a node of the lab
    v4 = [s["ip"] for s in data["services"] if s["service"] == "web/whoami" and ":" not in s["ip"]]
    assert len(v4) == 1 and v4[0].startswith("198.51.100.") and v4[0] not in (ips["pihole/pihole-web"], PIHOLE)
    v6 = [s for s in data["services"] if s["service"] == "web/whoami" and ":" in s["ip"]]
    assert [s["ip"] for s in v6] == ["2001:db8:53::1"], data["services"]
    assert all(s["node"] in ("node-1", "node-2") for s in data["services"]), data["services"]
    # the client's kernel resolved the shared VIP and the IPv6 VIP to a node MAC; arping and ndisc6 agree
    view = data["client_view"]
    assert "lladdr" in view["198.51.100.153"]["neigh"]
    mac6 = view["2001:db8:53::1"]["neigh"].split("lladdr ")[1].split()[0]
    assert view["2001:db8:53::1"]["ndisc6"] == mac6, view
    rounds = data["failovers"]
    assert [(r["how"], r["family"]) for r in rounds] == [("kill", 4), ("kill", 6), ("linkdown", 4), ("linkdown", 6)]
    for r in rounds:
        assert r["new_node"] is not None and r["new_node"] != r["old_node"], r
        assert r["outage_ms"] is not None and 0 < r["outage_ms"] < 5000, r
        assert r["probes_sent"] > 100, r
        assert r["flapped_back"] is False, r
        assert r["dual_ms"] <= 1000, r
    for r in rounds[1::2]:
        # the NDP prober saw solicited NAs (S, O) and unsolicited ones (O only) from the new node, and the
        # client's kernel entry moved to it by the unsolicited NA alone (the prober's answers never reach it)
        assert r["na_flags"] == {"reply": [0x60], "garp": [0x20]}, r
        assert r["kernel_switch_ms"] is not None and 0 < r["kernel_switch_ms"] < 5000, r
        assert r["new_mac"] in r["neigh_after"], r
    assert data["cleanup"]["leftover_namespaces"] == []
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]
    assert _processes_mentioning(str(work)) == []
