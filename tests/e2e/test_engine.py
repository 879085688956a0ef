"""The engine harness cleans up after failures too (tests/e2e/engine.py).

* dockerd SIGKILLed while a container runs on a compose-style bridge network (veth, overlay root,
  shim): stop() still removes every process (by cgroup), cgroup, mount and the state directory, and
  deleting the namespace leaves no link on this machine;
* a test process killed outright (nothing of its own cleanup runs): the next engine's
  sweep_stale() finds the dead owner's engine by the pid in its names and removes all of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.support import ROOT
from tests.e2e.engine import STATE_PREFIX, DockerEngine, _cgroup_dirs, _mounts_under, private_netns, sweep_stale
from tests.e2e.images import REFS, Built

pytestmark = [pytest.mark.e2e, pytest.mark.net, pytest.mark.timeout(600)]


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()}


def test_stop_after_dockerd_killed(e2e_images: dict[str, Built]) -> None:
    links = _links()
    with private_netns("k") as ns:
        e = DockerEngine(ns)
        try:
            e.start()
            e.docker(["load", "--input", e2e_images["pause"].archive], timeout=300)
            e.docker(["network", "create", "--driver", "bridge", "crashnet"])
            cid = e.docker(["run", "-d", "--network", "crashnet", REFS["pause"]]).stdout.strip()
            pid = json.loads(e.docker(["inspect", cid]).stdout)[0]["State"]["Pid"]
            veths = subprocess.run(["ip", "netns", "exec", ns, "ip", "-o", "link", "show", "type", "veth"],
                                   capture_output=True, text=True, check=True).stdout
            assert veths.strip(), "the container got no veth in the engine's namespace"
            assert pid in e.pids()
            assert e.proc is not None
            e.proc.kill()  # dockerd dies without stopping anything
            e.proc.wait(10)
            assert Path(f"/proc/{pid}").exists(), "the container should outlive dockerd (its shim keeps it)"
        finally:
            left = e.stop()
        assert left == [], left
        assert _gone(pid), f"container process {pid} survived"
    assert _links() - links == set()


CHILD = """
import sys, time
from tests.e2e.engine import DockerEngine, private_netns
ctx = private_netns("z")
ns = ctx.__enter__()
e = DockerEngine(ns)
e.start()
print(e.workdir, e.proc.pid, ns, flush=True)
time.sleep(300)
"""


def test_sweep_after_owner_killed() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line, "the child engine did not start"
        workdir_s, dockerd_s, ns = line.split()
        workdir, dockerd = Path(workdir_s), int(dockerd_s)
        assert workdir.name.startswith(f"{STATE_PREFIX}{child.pid}-")
    finally:
        child.kill()
        child.wait(10)
        if child.stdout:
            child.stdout.close()
    assert Path(f"/proc/{dockerd}").exists(), "dockerd runs in its own session: it outlives its owner"
    gone = sweep_stale()
    assert f"cgroup {workdir.name}" in gone and f"netns {ns}" in gone, gone
    assert _gone(dockerd), "dockerd survived the sweep"
    assert not _cgroup_dirs(workdir.name)
    assert not workdir.exists() and not _mounts_under(workdir)
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """The process is gone (or a zombie waiting for init to reap it), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
        except (OSError, IndexError):
            return True
        if "Z" in state:
            return True
        time.sleep(0.1)
    return False
