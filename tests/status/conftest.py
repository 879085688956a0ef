"""Fixtures of the status tests: a real Redis (redis_url), parts written through StatusPublisher,
and a StatusServer with the cluster API mounted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from l2lb.adapters.bus.client import Bus
from l2lb.adapters.bus.status import StatusPublisher
from l2lb.adapters.http.cluster import ClusterAPI, mount_cluster_api
from l2lb.adapters.http.server import StatusServer

from .cdp import Browser, chromium_path

PIHOLE_IP = "198.51.100.153"


def seed_parts(now: float | None = None, node: str = "node-a") -> dict[str, list[dict[str, Any]]]:
    """The lab copy of the seed (tests/fixtures/lab): Pi-hole DNS over TCP+UDP sharing one IP, plus web."""
    now = time.time() if now is None else now
    return {
        "services": [
            {"key": "pihole/pihole-dns-tcp", "namespace": "pihole", "name": "pihole-dns-tcp", "ips": [PIHOLE_IP],
             "pools": {PIHOLE_IP: "default-pool"}, "ports": [{"protocol": "TCP", "port": 53}],
             "external_traffic_policy": "Cluster", "reason": "", "message": ""},
            {"key": "pihole/pihole-dns-udp", "namespace": "pihole", "name": "pihole-dns-udp", "ips": [PIHOLE_IP],
             "pools": {PIHOLE_IP: "default-pool"}, "ports": [{"protocol": "UDP", "port": 53}],
             "external_traffic_policy": "Cluster", "reason": "", "message": ""},
            {"key": "pihole/pihole-web", "namespace": "pihole", "name": "pihole-web", "ips": ["198.51.100.129"],
             "pools": {"198.51.100.129": "default-pool"}, "ports": [{"protocol": "TCP", "port": 80}],
             "external_traffic_policy": "Cluster", "reason": "", "message": ""},
            {"key": "other/no-ip", "namespace": "other", "name": "no-ip", "ips": [], "pools": {},
             "ports": [{"protocol": "TCP", "port": 443}], "external_traffic_policy": "Cluster",
             "reason": "no_pool", "message": "no pool matches this Service"},
        ],
        "pools": [{"name": "default-pool", "kind": "CiliumLoadBalancerIPPool", "cidrs": ["198.51.100.128/25"],
                   "total": 126, "used": 2, "available": 124, "conflict": False, "disabled": False, "message": ""}],
        "assignments": [
            {"ip": PIHOLE_IP, "node": node, "epoch": 3, "since": now - 30, "moves": 0,
             "services": ["pihole/pihole-dns-tcp", "pihole/pihole-dns-udp"]},
            {"ip": "198.51.100.129", "node": "node-b", "epoch": 2, "since": now - 60, "moves": 1,
             "services": ["pihole/pihole-web"]},
        ],
        "nodes": [
            {"node": "node-a", "alive": True, "heartbeat_at": now - 0.1, "assignments": 1,
             "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:0a", "up": True,
                             "addresses": ["198.51.100.10/24"]}]},
            {"node": "node-b", "alive": True, "heartbeat_at": now - 0.2, "assignments": 1,
             "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:0b", "up": True,
                             "addresses": ["198.51.100.11/24"]}]},
        ],
    }


def synthetic_services(n: int, nodes: int = 3) -> dict[str, list[dict[str, Any]]]:
    """``n`` Services in 10 namespaces, one IP each from 2001:db8::/32 (TEST-NET), spread over nodes."""
    services, assignments = [], []
    for i in range(n):
        ip = f"2001:db8::{i + 1:x}"
        key = f"ns{i % 10}/svc-{i:05d}"
        services.append({"key": key, "namespace": f"ns{i % 10}", "name": f"svc-{i:05d}", "ips": [ip],
                         "pools": {ip: "big"}, "ports": [{"protocol": "TCP", "port": 80}],
                         "external_traffic_policy": "Cluster", "reason": "", "message": ""})
        assignments.append({"ip": ip, "node": f"node-{i % nodes}", "epoch": 1, "since": 1.0e9, "moves": 0,
                            "services": [key]})
    return {"services": services, "assignments": assignments,
            "pools": [{"name": "big", "kind": "IPAddressPool", "cidrs": ["2001:db8::/112"], "total": 65535,
                       "used": n, "available": 65535 - n, "conflict": False, "disabled": False, "message": ""}],
            "nodes": [{"node": f"node-{k}", "alive": True, "heartbeat_at": time.time(), "assignments": n // nodes,
                       "interfaces": []} for k in range(nodes)]}


async def write_parts(bus: Bus, parts: dict[str, list[dict[str, Any]]]) -> None:
    for name, items in parts.items():
        pub = StatusPublisher(bus, name, min_interval=0.0)
        pub.update({"items": items})
        await pub.close()


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(redis_url, client_name="status-test")
    try:
        yield b
    finally:
        await b.close()


@dataclass
class Served:
    url: str
    api: ClusterAPI
    server: StatusServer

    def session(self, token: str | None = None) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=20))


@pytest.fixture
async def serve(bus: Bus, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """serve(token=None) -> Served: a StatusServer with the cluster API on a free loopback port."""
    started: list[StatusServer] = []

    async def make(token: str | None = None) -> Served:
        tf = None
        if token:
            tf = tmp_path / "token"
            tf.write_text(token + "\n")
        srv = StatusServer("status-test", port=0, token_file=str(tf) if tf else None)
        api = mount_cluster_api(srv, bus)
        api.source.poll_interval = 0.1
        port = await srv.start()
        started.append(srv)
        return Served(f"http://127.0.0.1:{port}", api, srv)

    try:
        yield make
    finally:
        for s in started:
            await asyncio.wait_for(s.stop(), 10)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium over CDP (tests that use it skip when it is not installed)."""
    exe = chromium_path()
    assert exe is not None
    b = Browser(exe)
    try:
        await b.start()
        yield b
    finally:
        await b.close()
