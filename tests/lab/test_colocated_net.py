"""The co-located lab for real: every piece runs in its node's namespace; a node death kills exactly
that node's processes and takes its cable out at once; its return brings them back."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from l2lb.lab import netns
from l2lb.lab.main import Progress
from l2lb.lab.placement import ColocatedLab, Placement, host_ip, redis_ping
from l2lb.lab.procs import Supervisor, wait_http_ready
from tests.support.netns import require_netns_privileges

pytestmark = [pytest.mark.net, pytest.mark.slow]


def _netns_inode(path: str) -> int:
    return os.stat(path).st_ino


@pytest.mark.timeout(240)
async def test_colocated_processes_live_in_their_nodes_and_die_with_them(tmp_path: Path) -> None:
    require_netns_privileges()
    prefix = f"lp{os.getpid() % 100000:05d}"
    args = argparse.Namespace(nodes=3, manifests=None, probe_ms=10.0, round_timeout=10.0, timeout=60.0,
                              json_logs=False, keep=False)
    lab = ColocatedLab(args, tmp_path, netns.Topology(prefix), Supervisor(tmp_path / "logs"), Progress(quiet=True),
                       placement=Placement.k8s(3), persist=True)
    try:
        lab.build_network()
        with netns.entered(lab.topo.hosts["ctl"].ns):
            await lab.bring_up()
            # every process runs in the namespace of the host the placement gave it
            for name, proc in lab.sup.procs.items():
                host = "ctl" if name == "apiserver" else lab.placement.host_of(name)
                assert proc.pid is not None
                want = _netns_inode(f"/run/netns/{lab.topo.hosts[host].ns}")
                assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == want, name
            assert sorted(lab.procs_on("node-1")) == ["allocator-a", "announcer-node-1", "leases-a", "redis-0"]
            assert lab.procs_on("node-3") == ["leases-b", "announcer-node-3"]
            assert await redis_ping(host_ip("node-1"), 6379)

            lab.node_death("node-1")
            await lab.reap("node-1")
            for name in lab.procs_on("node-1"):
                assert not lab.sup.procs[name].alive, name
            for name in lab.procs_on("node-2") + lab.procs_on("node-3"):
                assert lab.sup.procs[name].alive, name
            assert lab.sup.procs["apiserver"].alive
            peer = lab.topo.hosts["node-1"].peer
            state = netns.ns_exec(lab.topo.switch, ["cat", f"/sys/class/net/{peer}/operstate"]).stdout.strip()
            assert state == "down"
            assert not await redis_ping(host_ip("node-1"), 6379)  # Redis died with its node
            with pytest.raises(RuntimeError, match="already dead"):
                lab.node_death("node-1")

            await lab.node_return("node-1")
            await lab.wait_redis_ready(30)
            for name in lab.procs_on("node-1"):
                assert lab.sup.procs[name].alive, name
            await wait_http_ready(f"http://{host_ip('node-1')}:9103/readyz", lab.sup.procs["announcer-node-1"])
            await wait_http_ready(f"http://{host_ip('node-1')}:{lab.http_port('leases-a')}/healthz",
                                  lab.sup.procs["leases-a"])
            # the append-only file kept the dataset across the "reboot"
            assert (tmp_path / "redis-0" / "appendonlydir").is_dir()

            # two nodes at one instant (bench/failover --scenarios redis+leases ...): exactly their processes
            with pytest.raises(ValueError, match="distinct"):
                lab.nodes_death(["node-2", "node-2"])
            lab.nodes_death(["node-2", "node-3"])
            for node in ("node-2", "node-3"):
                await lab.reap(node)
                for name in lab.procs_on(node):
                    assert not lab.sup.procs[name].alive, name
                peer = lab.topo.hosts[node].peer
                assert netns.ns_exec(lab.topo.switch, ["cat", f"/sys/class/net/{peer}/operstate"]).stdout.strip() \
                    == "down", node
            for name in lab.procs_on("node-1"):
                assert lab.sup.procs[name].alive, name
            assert lab.dead == {"node-2", "node-3"}
            assert [d["node"] for d in lab.deaths[-2:]] == ["node-2", "node-3"]
            assert lab.deaths[-1]["t"] == lab.deaths[-2]["t"]  # one instant for both
            with pytest.raises(RuntimeError, match="already dead"):
                lab.nodes_death(["node-1", "node-3"])
            assert "node-1" not in lab.dead  # nothing done when one of them was dead already
    finally:
        await lab.sup.stop_all()
        lab.topo.destroy()
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]


@pytest.mark.timeout(60)
def test_partition_cuts_a_node_off_from_all_but_the_clients(topology: netns.Topology) -> None:
    from l2lb.lab.placement import heal_partition, partition

    for name, ip in (("node-1", "198.51.100.11"), ("node-2", "198.51.100.12"), ("client", "198.51.100.100")):
        topology.add_host(name, addrs=[f"{ip}/24"])

    def ping(src: str, dst: str) -> bool:
        return topology.hosts[src].exec(["ping", "-c", "1", "-W", "1", dst], check=False).returncode == 0

    assert ping("node-2", "198.51.100.11") and ping("client", "198.51.100.11")
    for h in topology.hosts.values():  # forget learnt neighbours: the partition must hold for fresh ARP too
        h.exec(["ip", "neigh", "flush", "all"], check=False)
    partition(topology, "node-1", allow_macs=[topology.hosts["client"].mac])
    assert not ping("node-2", "198.51.100.11"), "node-2 still reaches the partitioned node"
    assert not ping("node-1", "198.51.100.12"), "the partitioned node still reaches node-2"
    assert ping("client", "198.51.100.11"), "LAN clients must still reach it"
    assert ping("node-2", "198.51.100.100")  # the rest of the LAN is untouched
    heal_partition(topology, "node-1")
    for h in topology.hosts.values():  # entries that failed during the partition
        h.exec(["ip", "neigh", "flush", "all"], check=False)
    assert ping("node-2", "198.51.100.11")


def test_loss_drops_a_share_of_a_nodes_frames_but_not_the_clients(topology: netns.Topology) -> None:
    """The chaos suite's ``loss`` fault (the real-time check of the simulator's message-loss model): about half of
    node-1's frames are dropped at the switch, both ways; the LAN client's pass; healed, nothing is dropped."""
    from l2lb.lab.placement import heal_loss, lossy

    for name, ip in (("node-1", "198.51.100.11"), ("node-2", "198.51.100.12"), ("client", "198.51.100.100")):
        topology.add_host(name, addrs=[f"{ip}/24"])
    for h in ("node-2", "client"):  # resolve first: ARP itself is lossy once the fault is on
        topology.hosts[h].exec(["ping", "-c", "1", "-W", "1", "198.51.100.11"], check=False)

    def received(src: str, n: int = 100) -> int:
        out = topology.hosts[src].exec(["ping", "-c", str(n), "-i", "0.01", "-W", "1", "-q", "198.51.100.11"],
                                       check=False, timeout=30).stdout
        return int(out.split(" received")[0].rsplit(" ", 1)[-1])

    with pytest.raises(ValueError):
        lossy(topology, "node-1", 0.0, allow_macs=[])
    lossy(topology, "node-1", 0.5, allow_macs=[topology.hosts["client"].mac])
    try:
        got = received("node-2")
        assert 10 <= got <= 45, got  # a request and its reply each pass with p = 0.5: ~25 of 100
        assert received("client") == 100
    finally:
        heal_loss(topology, "node-1")
    assert received("node-2") == 100
