"""`l2lb allocate`: the offline command on the seed's YAML."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from l2lb.lab.allocate import main

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def test_seed_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(FIX / "seed")]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "192.168.1.153" in lines["pihole/pihole-dns-tcp"] and "satisfied" in lines["pihole/pihole-dns-tcp"]
    assert "192.168.1.153" in lines["pihole/pihole-dns-udp"]
    # Cilium >= 1.16: the whole /25 (allowFirstLastIPs unset means Yes); pihole-web gets its first address
    assert lines["default-pool"].split()[3:6] == ["128", "2", "126"]
    assert "192.168.1.128" in lines["pihole/pihole-web"]


def test_metallb_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(FIX / "metallb" / "pihole-metallb.yaml"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {s["service"]: s["ips"] for s in report["services"]} == {
        "pihole/pihole-dns-tcp": ["192.168.1.153"], "pihole/pihole-dns-udp": ["192.168.1.153"]}
    assert report["pools"][0]["total"] == 139 and report["errors"] == []


def test_bad_input_reported_not_crashing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.yaml").write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: bad}\n"
        "spec: {blocks: [{cidr: 300.0.0.0/8}]}\n---\n"
        "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: good}\n"
        "spec: {blocks: [{cidr: 198.51.100.0/24}]}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: d, annotations: {lbipam.cilium.io/ips: nope}}\n"
        "spec: {type: LoadBalancer, ports: [{port: 1}]}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: t, namespace: d}\n"
        "spec: {type: LoadBalancer, ports: [{port: 1}]}\n"
        "status: {loadBalancer: {ingress: [{ip: 198.51.100.42}]}}\n")
    assert main([str(tmp_path)]) == 1
    cap = capsys.readouterr()
    assert "spec.blocks[0].cidr" in cap.err
    assert "invalid_request" in cap.out
    t_line = next(ln for ln in cap.out.splitlines() if ln.startswith("d/t"))
    assert "198.51.100.42" in t_line  # existing status IP adopted


def test_missing_path() -> None:
    assert main(["/nonexistent/dir"]) == 2


def test_ipv6_pool_sizes_read_as_a_person_reads_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(FIX / "lab")]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    cols = lines["ipv6-pool"].split()
    assert cols[3] in ("2^64", "1.8e19") and cols[4] == "1" and cols[5] == "1.8e19", lines["ipv6-pool"]
    assert "2001:db8:53::1" in lines["web/whoami"] and "18446744073709551" not in out


def test_json_shape_is_stable(capsys: pytest.CaptureFixture[str]) -> None:
    """``--json`` drives scripts and the conformance suite: these keys stay (new ones may be added)."""
    assert main([str(FIX / "seed"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"services", "pools", "pool_events", "errors"}
    for s in report["services"]:
        assert set(s) >= {"service", "ips", "pools", "reason", "message", "invalid_existing"}
        assert isinstance(s["ips"], list) and isinstance(s["pools"], dict)
    (pool,) = report["pools"]
    assert set(pool) >= {"name", "kind", "blocks", "total", "used", "available", "disabled", "conflict"}
    assert (pool["name"], pool["kind"], pool["total"], pool["used"]) == (
        "default-pool", "CiliumLoadBalancerIPPool", 128, 2)


@pytest.mark.parametrize("json_flag", [False, True])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path, json_flag: bool) -> None:
    """``l2lb allocate DIR | head`` exits without a BrokenPipe traceback (and with its own status)."""
    docs = ["apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: six}\n"
            "spec: {blocks: [{cidr: '2001:db8::/112'}]}\n"]
    docs += [f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: many}}\n"
             "spec: {type: LoadBalancer, ipFamilies: [IPv6], ports: [{port: 80}]}\n" for i in range(1500)]
    (tmp_path / "state.yaml").write_text("---\n".join(docs))
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "l2lb.cli", "allocate", str(tmp_path), *(["--json"] if json_flag else [])]
    shell = " ".join(shlex.quote(c) for c in cmd) + " | head -n 3"
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    p = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, cwd=root,
                       env=env, timeout=60, check=False)
    assert p.stderr == "", p.stderr
    assert p.returncode == 0
    assert len(p.stdout.splitlines()) == 3
