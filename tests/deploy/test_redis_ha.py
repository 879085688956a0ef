"""k8s/base's Redis + Sentinel, run for real: the StatefulSet's start scripts (k8s/base/redis/*.sh),
its redis.conf and the ACL users the init container renders, three "pods" in their own network
namespaces, l2lb's bus connecting with the redis+sentinel:// DSN the install script writes.

What must hold: a fresh install makes pod 0 the master and the others its replicas; the death of
the master's node (cable out + SIGKILL, no FIN/RST) is followed by a promotion, and the bus writes
again through the new master (the time is printed); the dead pod, when its node comes back, joins
as a replica of the new master, not as a second master; a second node death is handled as well.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from l2lb.lab import netns
from l2lb.lab.netns import Topology
from tests.deploy.support import ROOT

pytestmark = [pytest.mark.net, pytest.mark.slow]

REDIS_DIR = ROOT / "k8s" / "base" / "redis"
PW = {"allocator": "pa", "leases": "pl", "announcer": "pn", "replication": "pr", "sentinel": "ps"}
IPS = ["198.51.100.61", "198.51.100.62", "198.51.100.63"]
CLIENT = "198.51.100.69"


class Pod:
    """One StatefulSet pod: its Redis and its Sentinel, run by the manifests' scripts in a namespace."""

    def __init__(self, topo: Topology, i: int, root: Path) -> None:
        self.i, self.topo, self.ip = i, topo, IPS[i]
        self.name = f"r{i}"
        self.dir = root / f"pod-{i}"
        self.tmpl, self.run, self.data, self.acl = (self.dir / d for d in ("tmpl", "run", "data", "acl"))
        for d in (self.tmpl, self.run, self.data, self.acl):
            d.mkdir(parents=True, exist_ok=True)
        conf = (REDIS_DIR / "redis.conf").read_text()
        conf = conf.replace("/etc/redis-acl/users.acl", str(self.acl / "users.acl")).replace("dir /data",
                                                                                           f"dir {self.data}")
        (self.tmpl / "redis.conf").write_text(conf)
        shutil.copy(REDIS_DIR / "peers.sh", self.tmpl / "peers.sh")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def env(self) -> dict[str, str]:
        return dict(os.environ, L2LB_REDIS_TMPL=str(self.tmpl), L2LB_REDIS_RUN=str(self.run),
                    L2LB_SENTINEL_DIR=str(self.data / "sentinel"), L2LB_REDIS_SELF=self.ip,
                    L2LB_REDIS_PEERS=" ".join(IPS), REPLICATION_PASSWORD=PW["replication"],
                    SENTINEL_PASSWORD=PW["sentinel"])

    def render_acl(self) -> None:
        """What the init container runs (its command line, taken from the StatefulSet)."""
        out = subprocess.run(
            [sys.executable, "-m", "l2lb.adapters.bus.acl", "--prefix", "l2lb",
             *(f"--password={s}={PW[s]}" for s in ("allocator", "leases", "announcer")),
             f"--replication-password={PW['replication']}", f"--sentinel-password={PW['sentinel']}"],
            capture_output=True, text=True, check=True)
        (self.acl / "users.acl").write_text(out.stdout)

    def start(self, what: str, **env: str) -> None:
        log = open(self.dir / f"{what}.log", "ab")  # noqa: SIM115 - handed to the child
        self.procs[what] = subprocess.Popen(
            ["ip", "netns", "exec", self.topo.hosts[self.name].ns, "sh", str(REDIS_DIR / f"start-{what}.sh")],
            env=self.env() | env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def kill(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def log(self) -> str:
        out = []
        for f in sorted(self.dir.glob("*.log")):
            text = f.read_text(errors="replace")
            mine = [ln for ln in text.splitlines() if ln.startswith("l2lb ")]  # what the start scripts decided
            out.append(f"--- pod {self.i} {f.name}\n" + "\n".join(mine) + "\n...\n" + text[-1500:])
        return "\n".join(out)


async def cmd(host: str, port: int, *args: str, user: str | None = None, pw: str | None = None) -> Any:
    import redis.asyncio as aioredis

    r = aioredis.Redis(host=host, port=port, username=user, password=pw, socket_timeout=1, socket_connect_timeout=1)
    execute: Any = r.execute_command
    try:
        return await execute(*args)
    finally:
        await r.aclose()


async def sentinel_master(ip: str) -> str | None:
    try:
        got = await cmd(ip, 26379, "SENTINEL", "get-master-addr-by-name", "l2lb", pw=PW["sentinel"])
    except Exception:
        return None
    return got[0].decode() if got else None


async def role(ip: str) -> str | None:
    try:
        got = await cmd(ip, 6379, "ROLE", user="sentinel", pw=PW["sentinel"])
    except Exception:
        return None
    return str(got[0].decode())


async def wait_for(pred: Any, timeout: float, what: str, pods: list[Pod]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s\n" + "\n".join(p.log() for p in pods))


def _entries(reply: Any) -> list[dict[str, str]]:
    """SENTINEL SENTINELS/REPLICAS as dicts of text (redis-py may or may not have parsed them)."""
    out = []
    for item in reply or []:
        if isinstance(item, dict):
            out.append({str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in item.items()})
        else:
            txt = [x.decode() if isinstance(x, bytes) else str(x) for x in item]
            out.append(dict(zip(txt[::2], txt[1::2], strict=False)))
    return out


async def sentinel_knows(ip: str, what: str) -> int:
    """How many healthy other sentinels / replicas the sentinel at ``ip`` knows."""
    try:
        reply = await cmd(ip, 26379, "SENTINEL", what, "l2lb", pw=PW["sentinel"])
    except Exception:
        return -1
    bad = {"s_down", "o_down", "disconnected"}
    return sum(1 for e in _entries(reply) if not bad & set(e.get("flags", "").split(",")))


async def sentinel_entries(ip: str) -> int:
    """How many other sentinels the sentinel at ``ip`` counts, healthy or not: every one counts as a voter."""
    try:
        return len(_entries(await cmd(ip, 26379, "SENTINEL", "SENTINELS", "l2lb", pw=PW["sentinel"])))
    except Exception:
        return -1


async def settled(pods: list[Pod], live: list[int], master: str) -> bool:
    """Every live sentinel names ``master`` and knows the other live sentinels and every live replica
    (before that, a death of the master could not be failed over); the master has them online. Each counts
    exactly the other pods' sentinels (a restarted one comes back with the same id: start-sentinel.sh)."""
    for i in live:
        if await sentinel_master(IPS[i]) != master:
            return False
        if await sentinel_knows(IPS[i], "SENTINELS") < len(live) - 1:
            return False
        if await sentinel_entries(IPS[i]) != len(IPS) - 1:
            return False
        if await sentinel_knows(IPS[i], "REPLICAS") < len(live) - 1:
            return False
    try:
        info = await cmd(master, 6379, "INFO", "replication", user="sentinel", pw=PW["sentinel"])
    except Exception:
        return False
    online = [v for k, v in info.items()
              if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"]
    return bool(info.get("role") == "master" and len(online) == len(live) - 1)


@pytest.mark.timeout(240)
async def test_k8s_redis_sentinel_failover_and_rejoin(topology: Topology, tmp_path: Path) -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed (scripts/dev installs redis-server redis-tools)")
    for i, ip in enumerate(IPS):
        topology.add_host(f"r{i}", addrs=[f"{ip}/24"])
    topology.add_host("client", addrs=[f"{CLIENT}/24"])
    pods = [Pod(topology, i, tmp_path) for i in range(3)]
    from l2lb.adapters.bus.client import Bus

    bus: Bus | None = None
    try:
        for p in pods:  # OrderedReady: pod 0 first
            p.render_acl()
            p.start("redis")
            p.start("sentinel")
            await asyncio.sleep(0.3)
        dsn = (f"redis+sentinel://allocator:{PW['allocator']}@{IPS[0]}:26379,{IPS[1]}:26379,{IPS[2]}:26379"
               f"/l2lb/0?sentinel_password={PW['sentinel']}&socket_timeout=2&connect_timeout=0.5")
        with netns.entered(topology.hosts["client"].ns):  # every connection below is made from the client
            await wait_for(lambda: settled(pods, [0, 1, 2], IPS[0]), 30, "fresh install: pod 0 master, 2 replicas",
                           pods)
            bus = await Bus.connect(dsn, client_name="test", health_interval=0.2)
            assert bus.readiness()[0], bus.readiness()
            await bus.redis.set(bus.keys.incarnation, "x")  # the allocator's ACL user may write this key
            with pytest.raises(Exception, match="no permissions"):  # least privilege holds through Sentinel
                await bus.redis.execute_command("ROLE")

            errors: list[str] = []

            async def write_ok() -> bool:
                t = time.monotonic()
                try:
                    await asyncio.wait_for(bus.redis.set(bus.keys.incarnation, "y"), 5)  # type: ignore[union-attr]
                    return True
                except Exception as e:
                    errors.append(f"{t:.2f}: {type(e).__name__}: {str(e)[:200]}")
                    return False

            figures = []
            live = [0, 1, 2]
            master = 0
            for death in range(2):
                # node death of the master's pod: cable out first (no FIN/RST leaves), then SIGKILL
                t0 = time.monotonic()
                topology.cut(f"r{master}", False)
                pods[master].kill()
                live.remove(master)
                try:
                    await wait_for(write_ok, 30, f"writes through the new master after death {death + 1}", pods)
                except AssertionError as e:
                    raise AssertionError(f"{e}\nlast write errors: {errors[-5:]}") from None
                figures.append(time.monotonic() - t0)
                new = await sentinel_master(IPS[live[0]])
                assert new in [IPS[i] for i in live], new
                # the node comes back: its pod starts again with the same volume and joins as a replica
                old, master = master, IPS.index(new)  # type: ignore[arg-type]
                topology.cut(f"r{old}", True)
                pods[old].start("redis")
                pods[old].start("sentinel")
                live = sorted([*live, old])
                await wait_for(lambda: settled(pods, live, IPS[master]), 40,  # noqa: B023
                               f"pod {old} back as a replica of {IPS[master]}", pods)
                assert await role(IPS[old]) == "slave"
                masters = [i for i in live if await role(IPS[i]) == "master"]
                assert masters == [master], masters
            print(f"Sentinel failover as the bus sees it (kill master node -> writes again): "
                  f"{', '.join(f'{f:.2f} s' for f in figures)}")
            assert await write_ok()
    finally:
        if bus is not None:
            await bus.close()
        for p in pods:
            p.kill()


@pytest.mark.timeout(120)
async def test_k8s_redis_single_node_mode(topology: Topology, tmp_path: Path) -> None:
    """k8s/overlays/single-node: the same start script, L2LB_REDIS_MODE=single: one master, no replica
    options, and the bus connects with the -dsn-single form of the Secret."""
    topology.add_host("r0", addrs=[f"{IPS[0]}/24"])
    topology.add_host("client", addrs=[f"{CLIENT}/24"])
    pod = Pod(topology, 0, tmp_path)
    pod.render_acl()
    pod.start("redis", L2LB_REDIS_MODE="single")
    from l2lb.adapters.bus.client import Bus

    try:
        with netns.entered(topology.hosts["client"].ns):
            await wait_for(lambda: _is_master(IPS[0]), 20, "single Redis up", [pod])
            bus = await Bus.connect(f"redis://announcer:{PW['announcer']}@{IPS[0]}:6379/0", client_name="t")
            try:
                assert bus.readiness()[0], bus.readiness()
                await bus.publish_raw(bus.keys.heartbeats, b"x")
            finally:
                await bus.close()
        assert "I am" not in (pod.dir / "redis.log").read_text()  # no peer discovery in single mode
    finally:
        pod.kill()


async def _is_master(ip: str) -> bool:
    return await role(ip) == "master"


@pytest.mark.timeout(240)
async def test_k8s_redis_partitioned_master_stops_taking_writes(topology: Topology, tmp_path: Path) -> None:
    """The master's node is cut off (its processes live on): the others promote a replica; the old
    master, without replicas, refuses writes after min-replicas-max-lag (start-redis.sh), so clients
    on its side cannot go on with a diverging Redis; when the cable is back it becomes a replica."""
    for i, ip in enumerate(IPS):
        topology.add_host(f"r{i}", addrs=[f"{ip}/24"])
    topology.add_host("client", addrs=[f"{CLIENT}/24"])
    pods = [Pod(topology, i, tmp_path) for i in range(3)]

    def write_on_old_master() -> str:
        """SET as the allocator, from the old master's own namespace (a client on its node)."""
        out = topology.hosts["r0"].exec(
            ["redis-cli", "--no-auth-warning", "--user", "allocator", "-a", PW["allocator"], "-h", IPS[0],
             "set", "l2lb:incarnation", "z"], check=False, timeout=10)
        return (out.stdout + out.stderr).strip()

    try:
        for p in pods:
            p.render_acl()
            p.start("redis")
            p.start("sentinel")
            await asyncio.sleep(0.3)
        with netns.entered(topology.hosts["client"].ns):
            await wait_for(lambda: settled(pods, [0, 1, 2], IPS[0]), 40, "fresh install", pods)
            await asyncio.sleep(1.5)  # the replicas' first acknowledgements
            assert write_on_old_master() == "OK"
            t0 = time.monotonic()
            topology.cut("r0", False)  # partition: nothing in or out, every process keeps running
            refused = None
            while time.monotonic() - t0 < 15:
                if "NOREPLICAS" in write_on_old_master():
                    refused = time.monotonic() - t0
                    break
                await asyncio.sleep(0.2)
            assert refused is not None and refused <= 3 + 2.5, refused
            print(f"the cut-off master refuses writes {refused:.2f} s after the cut")

            async def promoted() -> bool:
                m = await sentinel_master(IPS[1])
                return m in (IPS[1], IPS[2]) and m == await sentinel_master(IPS[2])

            await wait_for(promoted, 30, "a replica promoted by the two others", pods)
            topology.cut("r0", True)

            async def back_as_replica() -> bool:
                # the master the sentinels name now: two sentinels can each run a failover a second apart
                # (the second one wins, final CI 2026-12-06), so the master read right after the first is stale
                m = await sentinel_master(IPS[1])
                return m in (IPS[1], IPS[2]) and await settled(pods, [0, 1, 2], m)

            await wait_for(back_as_replica, 60, "the old master back as a replica", pods)
            assert await role(IPS[0]) == "slave"
    finally:
        for p in pods:
            p.kill()
