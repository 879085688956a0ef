"""`l2lb allocate`: the offline command on the seed's YAML."""

from __future__ import annotations

import json
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
    assert lines["default-pool"].split()[3:6] == ["126", "2", "124"]


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
