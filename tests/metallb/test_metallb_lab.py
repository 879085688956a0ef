"""The real MetalLB (go.universe.tf/metallb, tests/support/metallb) in the process lab: its controller
gives the Pi-hole Services their IPs through the real kube-apiserver, and one speaker answers ARP for
the VIP on the wire (arping from a client namespace at default sysctls); killing that speaker moves
the VIP to the other node (memberlist).

Runs only where ``tests/support/metallb/build.sh`` has built MetalLB (``scripts/dev setup`` does,
niced); otherwise it skips with the reason -- also in CI, where the build may be switched off with
L2LB_WITH_METALLB=0.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from l2lb.lab import netns
from l2lb.lab.procs import Supervisor
from tests.support.kube_real import binary_path as kas_binary
from tests.support.metallb import harness

pytestmark = [pytest.mark.net, pytest.mark.kube, pytest.mark.slow]

VIP = "198.51.100.153"
CTL_IP = "198.51.100.2"


def _need_binaries() -> None:
    why = harness.missing()
    if why:
        pytest.skip(why.splitlines()[0])
    if not kas_binary().is_file():
        pytest.skip(f"real kube-apiserver not built ({kas_binary()}): bash tests/support/kube-apiserver/build.sh")


def _arping_macs(client: netns.Host, count: int = 3) -> list[str]:
    out = client.exec(["arping", "-c", str(count), "-w", str(count + 2), "-I", client.ifname, VIP],
                      check=False, timeout=count + 10).stdout
    return sorted({m.lower() for m in re.findall(r"\[([0-9A-Fa-f:]{17})\]", out)})


async def _wait_single_mac(client: netns.Host, sup: Supervisor, timeout: float, exclude: str = "") -> str:
    deadline = time.monotonic() + timeout
    macs: list[str] = []
    while time.monotonic() < deadline:
        macs = await asyncio.to_thread(_arping_macs, client, 2)
        if len(macs) == 1 and macs[0] != exclude:
            return macs[0]
        sup.check_alive()
    logs = "\n".join(f"--- {p.name}\n{p.tail(15)}" for p in sup.procs.values())
    raise AssertionError(f"no single MAC (other than {exclude or '-'}) answers ARP for {VIP} after "
                         f"{timeout:.0f} s: {macs}\n{logs}")


@pytest.mark.timeout(240)
async def test_metallb_announces_the_vip_and_fails_over(topology: netns.Topology, tmp_path: Path) -> None:
    _need_binaries()
    ctl = topology.add_host("ctl", addrs=[f"{CTL_IP}/24"], arp_accept=False)
    nodes = []
    for i in (1, 2):
        h = topology.add_host(f"node-{i}", ifname="enp0s25", addrs=[f"198.51.100.{10 + i}/24"], arp_accept=False)
        nodes.append(harness.LabNode(f"node-{i}", h.ns, f"198.51.100.{10 + i}", "enp0s25"))
    client = topology.add_host("cli", addrs=["198.51.100.100/24"], arp_accept=False)
    mac_node = {topology.hosts[n.name].mac.lower(): n.name for n in nodes}
    sup = Supervisor(tmp_path / "logs")
    api: harness.LabApiServer | None = None
    try:
        with netns.entered(ctl.ns):
            api = harness.LabApiServer(kas_binary(), tmp_path / "kas", harness.MetalLB.users(nodes))
            api.start()
            mlb = harness.MetalLB(api, sup, tmp_path, nodes, ctl_ns=ctl.ns, api_host=CTL_IP)
            mlb.install()
            docs: list[dict[str, Any]] = [
                d for d in yaml.safe_load_all((harness.SRC_DIR / "fixtures" / "pihole.yaml").read_text()) if d]
            api.apply_docs(harness.node_objects(nodes) + docs)
            api.apply_docs(harness.endpoint_slices([d for d in docs if d["kind"] == "Service"], nodes))
            await mlb.start()
            # the controller (not l2lb) wrote the IP: the shared DNS IP from the annotation
            deadline = time.monotonic() + 60
            ingress: list[Any] = []
            while time.monotonic() < deadline and not ingress:
                svc = api.call("GET", "/api/v1/namespaces/pihole/services/pihole-dns-udp")
                ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                if not ingress:
                    sup.check_alive()
                    await asyncio.sleep(0.3)
            assert [i["ip"] for i in ingress] == [VIP], sup.procs["metallb-controller"].tail()
            # one speaker answers ARP for it on the wire, with its node's MAC
            mac = await _wait_single_mac(client, sup, 60)
            owner = mac_node.get(mac)
            assert owner is not None, f"{mac} is not a node's MAC: {mac_node}"
            # kill the announcing speaker: memberlist tells the other one, which takes the VIP over
            other = next(n for n in nodes if n.name != owner)
            await sup.kill(f"speaker-{owner}")
            t0 = time.monotonic()
            new_mac = await _wait_single_mac(client, sup, 60, exclude=mac)
            assert mac_node.get(new_mac) == other.name
            took = time.monotonic() - t0
            assert took < 60, took
    finally:
        await sup.stop_all()
        if api is not None:
            api.stop()
