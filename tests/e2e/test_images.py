"""The images, checked by running them in a real Docker engine (and importing them into a real containerd).

* l2lb (target runtime): uid/gid 65532, no capability left with `cap_drop: [ALL]`, runs its CLI on a
  read-only root filesystem (only /tmp as tmpfs, as docker-compose.yml gives it), HEALTHCHECK kept;
* l2lb-announcer (target announcer): uid 0 with exactly CAP_NET_RAW effective under compose's and
  the DaemonSet's `drop ALL, add NET_RAW` + no-new-privileges, and that is enough (and needed) to
  open the AF_PACKET socket it answers ARP with; the runtime image's uid 65532 gets no effective
  capability even when NET_RAW is added (why the announcer target is uid 0);
* the small images: pause exits 0 on SIGTERM at once, dnsmasq answers a DNS query, http serves its
  page, redis (uid 999) runs on a read-only root with sh + redis-cli for the probes;
* every archive is what `ctr -n k8s.io images import` takes (a real containerd from Debian);
* sizes are printed (uncompressed, as `docker image inspect` reports).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.engine import STATE_PREFIX, DockerEngine, private_netns
from tests.e2e.images import REFS, Built, containerd_name, load_into

pytestmark = [pytest.mark.e2e, pytest.mark.net, pytest.mark.timeout(1800)]

CAP_NET_RAW = 1 << 13
STATUS_PY = (
    "import os,socket\n"
    "st=dict(l.split(':\\t',1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
    "try:\n"
    "    socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)).close(); raw='ok'\n"
    "except PermissionError as e:\n"
    "    raw='denied'\n"
    "try:\n"
    "    open('/probe','w'); rootfs='writable'\n"
    "except OSError as e:\n"
    "    rootfs=e.strerror\n"
    "open('/tmp/probe','w').write('x')\n"
    "print(os.getuid(), os.getgid(), st['CapEff'].strip(), st['NoNewPrivs'].strip(), raw, rootfs)\n"
)
LOCKED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"]


@pytest.fixture(scope="module")
def engine(e2e_images: dict[str, Built]) -> Iterator[DockerEngine]:
    with private_netns("i") as ns:
        e = DockerEngine(ns)
        try:
            e.start()
            load_into(e, e2e_images)
            yield e
        finally:
            left = e.stop()
    assert not left, f"the docker engine left: {left}"


def probe(engine: DockerEngine, image: str, *flags: str) -> tuple[int, int, int, str, str, str]:
    out = engine.docker(["run", "--rm", "--network", "none", *flags, "--entrypoint", "python", image, "-c",
                         STATUS_PY], timeout=60).stdout.split()
    uid, gid, cap, nnp, raw, rootfs = out[0], out[1], out[2], out[3], out[4], " ".join(out[5:])
    return int(uid), int(gid), int(cap, 16), nnp, raw, rootfs


def test_sizes(e2e_images: dict[str, Built]) -> None:
    for name, b in e2e_images.items():
        assert Path(b.archive).is_file(), b
        print(f"{name:16} {b.ref:28} {b.size / 1e6:7.1f} MB  archive {Path(b.archive).stat().st_size / 1e6:7.1f} MB"
              f"  built in {b.build_seconds:.0f} s")
    # python:3.11-slim-bookworm + the locked dependencies is ~230 MB; a budget that catches a build
    # stage (compilers, pip caches) leaking into the runtime image
    assert e2e_images["l2lb"].size < 400e6
    assert e2e_images["pause"].size < 2e6


def test_runtime_image(engine: DockerEngine) -> None:
    cfg = json.loads(engine.docker(["image", "inspect", REFS["l2lb"]]).stdout)[0]["Config"]
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["l2lb"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", "l2lb-healthcheck"]
    # as docker-compose.yml runs allocator/leases/apiserver: read-only root, /tmp tmpfs, no capability
    uid, gid, cap, nnp, raw, rootfs = probe(engine, REFS["l2lb"], *LOCKED)
    assert (uid, gid, cap, nnp) == (65532, 65532, 0, "1")
    assert raw == "denied"
    assert rootfs == "Read-only file system"
    # a non-root user gets no effective capability even when one is added: why the announcer is uid 0
    uid, _, cap, _, raw, _ = probe(engine, REFS["l2lb"], *LOCKED, "--cap-add", "NET_RAW")
    assert (uid, cap, raw) == (65532, 0, "denied")
    # the CLI runs on the read-only root
    for cmd in (["--help"], ["allocator", "--help"], ["leases", "--help"], ["apiserver", "--help"]):
        got = engine.docker(["run", "--rm", "--network", "none", *LOCKED, REFS["l2lb"], *cmd], timeout=60)
        assert "usage" in got.stdout.lower(), (cmd, got.stdout, got.stderr)


def test_announcer_image(engine: DockerEngine) -> None:
    cfg = json.loads(engine.docker(["image", "inspect", REFS["l2lb-announcer"]]).stdout)[0]["Config"]
    assert cfg["User"] == "0:0"
    assert cfg["Cmd"] == ["announcer", "--help"]
    uid, _, cap, nnp, raw, rootfs = probe(engine, REFS["l2lb-announcer"], *LOCKED, "--cap-add", "NET_RAW")
    assert (uid, cap, nnp, raw) == (0, CAP_NET_RAW, "1", "ok")
    assert rootfs == "Read-only file system"
    # without NET_RAW, uid 0 can do nothing: no AF_PACKET socket
    uid, _, cap, _, raw, _ = probe(engine, REFS["l2lb-announcer"], *LOCKED)
    assert (uid, cap, raw) == (0, 0, "denied")


@contextlib.contextmanager
def container(engine: DockerEngine, *args: str) -> Iterator[str]:
    cid = engine.docker(["run", "-d", *args], timeout=60).stdout.strip()
    try:
        yield cid
    finally:
        engine.docker(["rm", "-f", cid], check=False, timeout=60)


def test_pause_image(engine: DockerEngine) -> None:
    with container(engine, "--network", "none", REFS["pause"]) as cid:
        t0 = time.monotonic()
        engine.docker(["stop", "--time", "10", cid], timeout=30)
        took = time.monotonic() - t0
        state = json.loads(engine.docker(["inspect", cid]).stdout)[0]["State"]
        assert state["ExitCode"] == 0, state
        assert took < 5, f"pause ignored SIGTERM ({took:.1f} s)"
    uid = json.loads(engine.docker(["image", "inspect", REFS["pause"]]).stdout)[0]["Config"]["User"]
    assert uid == "65535:65535"


def test_dns_http_redis_images(engine: DockerEngine) -> None:
    query = (
        "import socket,struct\n"
        "q=struct.pack('>HHHHHH',0x1234,0x0100,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in "
        "'pihole.lab.test'.split('.'))+b'\\0'+struct.pack('>HH',1,1)\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(5); s.sendto(q,('127.0.0.1',53))\n"
        "r=s.recv(512); print(socket.inet_ntoa(r[-4:]))\n"
    )
    with container(engine, "--network", "none", REFS["dnsmasq"]) as dns:
        got = ""
        for _ in range(20):  # dnsmasq binds within a moment
            p = engine.docker(["run", "--rm", "--network", f"container:{dns}", "--entrypoint", "python3", REFS["http"],
                               "-c", query], check=False, timeout=60)
            got = p.stdout.strip()
            if p.returncode == 0:
                break
            time.sleep(0.3)
        assert got == "198.51.100.80", engine.docker(["logs", dns], check=False).stderr
    fetch = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/', timeout=5).read().decode())"
    with container(engine, "--network", "none", *LOCKED, REFS["http"]) as web:
        page = ""
        for _ in range(20):
            p = engine.docker(["exec", web, "python3", "-c", fetch], check=False, timeout=60)
            page = p.stdout
            if p.returncode == 0:
                break
            time.sleep(0.3)
        assert "l2lb-e2e-http-ok" in page
    # redis as k8s/base runs it: uid 999, read-only root, args [redis-server, CONF]; the probe's sh/grep
    with tempfile.TemporaryDirectory() as conf_dir:
        os.chmod(conf_dir, 0o755)
        Path(conf_dir, "redis.conf").write_text("port 6379\nsave \"\"\nappendonly no\n")
        with container(engine, "--network", "none", *LOCKED, "--user", "999:999", "-v", f"{conf_dir}:/conf:ro",
                       REFS["redis"], "redis-server", "/conf/redis.conf") as rds:
            ok = False
            for _ in range(20):
                p = engine.docker(["exec", rds, "sh", "-c", "redis-cli ping | grep -q PONG"], check=False, timeout=30)
                if p.returncode == 0:
                    ok = True
                    break
                time.sleep(0.3)
            assert ok, engine.docker(["logs", rds], check=False).stdout


def test_archives_import_into_containerd(e2e_images: dict[str, Built], tmp_path: Path) -> None:
    """The archives are what the e2e cluster's containerd imports (`ctr -n k8s.io images import`)."""
    root = Path(tempfile.mkdtemp(prefix=f"{STATE_PREFIX}{os.getpid()}-ctrd", dir="/tmp"))
    sock = root / "containerd.sock"
    cfg = root / "config.toml"
    cfg.write_text(f'version = 2\nroot = "{root}/root"\nstate = "{root}/state"\n'
                   f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{sock}"\n')
    with private_netns("c") as ns:
        log = open(root / "containerd.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "containerd", "--config", str(cfg)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        ctr: Callable[..., subprocess.CompletedProcess[str]] = lambda *a, timeout=300: subprocess.run(  # noqa: E731
            ["ctr", "--address", str(sock), "-n", "k8s.io", *a], capture_output=True, text=True, timeout=timeout,
            check=False)
        try:
            for _ in range(100):
                if sock.exists() and ctr("version", timeout=10).returncode == 0:
                    break
                time.sleep(0.1)
            for b in e2e_images.values():
                p = ctr("images", "import", b.archive)
                assert p.returncode == 0, (b.name, p.stderr)
            listed = ctr("images", "ls", "-q").stdout.split()
            for b in e2e_images.values():
                assert containerd_name(b.ref) in listed, (containerd_name(b.ref), listed)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            log.close()
            subprocess.run(["rm", "-rf", str(root)], check=False, timeout=120)
