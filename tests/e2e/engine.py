"""A real Docker engine (Debian's docker.io: dockerd + its managed containerd + runc) inside a network
namespace the caller made, with every piece of state in one temp directory, always cleaned up.

* Network: dockerd runs in the given namespace (``nsenter --net``), so ``network_mode: host`` is that
  namespace and the bridges/veths of compose networks are made inside it, never on this machine's
  interfaces. ``--iptables=false --ip6tables=false --bridge=none``: no firewall rule anywhere (no
  NAT, no published-port DNAT; ports are published by docker-proxy, the userland proxy); address
  pools for compose networks are TEST-NET-3 (203.0.113.0/24).
* Mounts: dockerd starts in its own mount namespace (``unshare --mount``, private propagation) with a
  sysfs of its network namespace and the host's cgroup hierarchies bound back in, and a private tmpfs
  on /run (containerd puts its shims' sockets in /run/containerd/s whatever its state directory).
  Every overlay/bind/netns mount it makes dies with that namespace, and none reach this machine.
* State: data-root, exec-root, pidfile, socket and config under ``workdir`` (default a new
  /tmp/l2lb-dk-XXXX); the CLI is Debian's /usr/bin/docker with DOCKER_HOST/DOCKER_CONFIG pointing
  there (nothing in ~/.docker or /var/lib/docker is used).
* Processes: dockerd and everything below it (containerd, shims, docker-proxy, containers, via
  ``--cgroup-parent``) are in cgroup ``/l2lb-e2e-<id>`` of every v1 controller; :meth:`stop` stops
  dockerd (SIGTERM, bounded wait) and then SIGKILLs whatever is still in that cgroup, removes the
  cgroups and the workdir, and :meth:`leftovers` reports anything that survived.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

DOCKER = "/usr/bin/docker"  # Debian's docker.io CLI (a docker earlier on PATH may be another build)
DOCKERD = "/usr/sbin/dockerd"
CGROUP_ROOT = Path("/sys/fs/cgroup")
ADDRESS_POOL = "base=203.0.113.0/24,size=27"


# Names of what this module makes carry the owner's pid, so that a run killed before its cleanup is
# swept by the next one (sweep_stale): /tmp/l2lb-dk-<pid>-*, cgroups of the same name, and network
# namespaces l2lbdk<pid><letter> (private_netns).
STATE_PREFIX = "l2lb-dk-"
NETNS_PREFIX = "l2lbdk"


class EngineError(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def netns_name(letter: str) -> str:
    """A network namespace name for this process (swept once it is gone): l2lbdk<pid><letter>."""
    return f"{NETNS_PREFIX}{os.getpid()}{letter}"


def sweep_stale() -> list[str]:
    """Remove what engines of dead processes left: their processes (by cgroup), cgroups, state
    directories and network namespaces. Returns what was removed."""
    gone: list[str] = []
    names = set()
    for ctl in _cgroup_controllers():
        for d in ctl.glob(f"{STATE_PREFIX}*"):
            names.add(d.name)
    for name in sorted(names):
        m = re.fullmatch(rf"{re.escape(STATE_PREFIX)}(\d+)-\w+", name)
        if not m or _alive(int(m.group(1))):
            continue
        for _ in range(50):
            pids = _cgroup_pids(name)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for d in _cgroup_dirs(name):
            with contextlib.suppress(OSError):
                d.rmdir()
        gone.append(f"cgroup {name}")
    for wd in Path("/tmp").glob(f"{STATE_PREFIX}*"):
        m = re.fullmatch(rf"{re.escape(STATE_PREFIX)}(\d+)-\w+", wd.name)
        if m and not _alive(int(m.group(1))) and not _mounts_under(wd):
            shutil.rmtree(wd, ignore_errors=True)
            gone.append(f"directory {wd}")
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        ns = line.split()[0] if line.strip() else ""
        m = re.fullmatch(rf"{NETNS_PREFIX}(\d+)[a-z]", ns)
        if m and not _alive(int(m.group(1))):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False, timeout=20)
            gone.append(f"netns {ns}")
    return gone


def _cgroup_controllers() -> list[Path]:
    """Mount points of the v1 hierarchies (cpu, memory, pids, ..., name=systemd); not the unified one."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, mnt, fstype, *_ = line.split()
        if fstype == "cgroup" and mnt.startswith(str(CGROUP_ROOT) + "/"):
            out.append(Path(mnt))
    return out


def _cgroup_dirs(name: str) -> list[Path]:
    """Every directory of cgroup ``name`` in every v1 hierarchy, deepest first."""
    dirs: list[Path] = []
    for ctl in _cgroup_controllers():
        top = ctl / name
        if top.is_dir():
            for root, subdirs, _ in os.walk(top):
                dirs.extend(Path(root) / d for d in subdirs)
            dirs.append(top)
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs(name):
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
    return pids


def _mounts_under(path: Path) -> list[str]:
    p = str(path)
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4] == p or line.split()[4].startswith(p + "/")]


class DockerEngine:
    """dockerd in network namespace ``ns``; use as a context manager (stop() runs on any exit)."""

    def __init__(self, ns: str, *, workdir: Path | None = None, log_level: str = "warn"):
        if not Path(f"/run/netns/{ns}").exists():
            raise EngineError(f"network namespace {ns} does not exist (create it first: ip netns add {ns})")
        for exe in (DOCKER, DOCKERD, "/usr/bin/containerd", "/usr/sbin/runc"):
            if not Path(exe).exists():
                raise EngineError(f"{exe} is missing: install Debian's docker.io (bash scripts/dev e2e installs it)")
        self.ns = ns
        sweep_stale()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{STATE_PREFIX}{os.getpid()}-", dir="/tmp"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cgroup = self.workdir.name
        self.sock = self.workdir / "docker.sock"
        self.log_path = self.workdir / "dockerd.log"
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False

    # -- environment of the CLI -------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=str(self.workdir / "cli"), DOCKER_BUILDKIT="1")
        return env

    def docker(self, args: Sequence[str], *, timeout: float = 120, check: bool = True,
               input: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, timeout=timeout, check=False,
                              input=input.decode() if input is not None else None, text=True, cwd=cwd)
        if check and proc.returncode != 0:
            raise EngineError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-3000:]}")
        return proc

    def add_cli_plugin(self, name: str, binary: Path) -> None:
        """Install a CLI plugin (e.g. docker-compose) for this engine's CLI only (DOCKER_CONFIG)."""
        d = self.workdir / "cli" / "cli-plugins"
        d.mkdir(parents=True, exist_ok=True)
        target = d / name
        target.unlink(missing_ok=True)
        target.symlink_to(binary)

    # -- lifecycle ----------------------------------------------------------------------------------
    def _make_cgroups(self) -> None:
        for ctl in _cgroup_controllers():
            d = ctl / self.cgroup
            d.mkdir(exist_ok=True)
            if ctl.name == "cpuset" or "cpuset" in ctl.name.split(","):
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((ctl / f).read_text())

    def start(self, timeout: float = 60.0) -> None:
        w = self.workdir
        (w / "cli").mkdir(exist_ok=True)
        (w / "daemon.json").write_text("{}\n")  # never /etc/docker/daemon.json
        self._make_cgroups()
        procs_files = " ".join(str(c / self.cgroup / "cgroup.procs") for c in _cgroup_controllers())
        dockerd = [
            DOCKERD, f"--config-file={w / 'daemon.json'}", f"--data-root={w / 'data'}", f"--exec-root={w / 'exec'}",
            f"--pidfile={w / 'dockerd.pid'}", f"--host=unix://{self.sock}", "--iptables=false",
            "--ip6tables=false", "--bridge=none", "--ip-masq=false", f"--cgroup-parent=/{self.cgroup}",
            "--exec-opt=native.cgroupdriver=cgroupfs", f"--default-address-pool={ADDRESS_POOL}",
            "--storage-driver=overlay2", f"--log-level={self.log_level}", "--userland-proxy=true",
            "--userland-proxy-path=/usr/sbin/docker-proxy",
        ]
        # In the new mount namespace: this netns's sysfs (with the host's cgroup hierarchies bound back
        # in), a private /run, then join the cgroup and become dockerd.
        script = (
            'set -e; mkdir -p "$W/cg"; '
            'mount --rbind /sys/fs/cgroup "$W/cg"; umount -l /sys; mount -t sysfs sysfs /sys; '
            'mount --rbind "$W/cg" /sys/fs/cgroup; umount -l "$W/cg"; '
            "mount -t tmpfs -o mode=0755 tmpfs /run; "
            f'for f in {procs_files}; do echo $$ > "$f"; done; exec "$@"'
        )
        argv = ["nsenter", f"--net=/run/netns/{self.ns}", "--", "unshare", "--mount", "--propagation", "private",
                "--", "sh", "-c", script, "l2lb-dockerd", *dockerd]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "W": str(w), "HOME": str(w)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(f"dockerd exited {self.proc.returncode} while starting:\n{self.log()}")
            if self.sock.exists() and self.docker(["version", "--format", "{{.Server.Version}}"], check=False,
                                                  timeout=10).returncode == 0:
                return
            time.sleep(0.2)
        raise EngineError(f"dockerd not ready after {timeout:.0f} s:\n{self.log()}")

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def info(self) -> dict[str, object]:
        return dict(json.loads(self.docker(["info", "--format", "{{json .}}"]).stdout))

    def stop(self, timeout: float = 30.0) -> list[str]:
        """Stop everything (idempotent); returns what could not be removed (empty = clean)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # whatever dockerd left (shims, containers, docker-proxy): SIGKILL by cgroup, bounded rounds
        for _ in range(50):
            pids = _cgroup_pids(self.cgroup)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for _ in range(50):
            busy = False
            for d in _cgroup_dirs(self.cgroup):
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    busy = True
            if not busy:
                break
            time.sleep(0.1)
        if not _mounts_under(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.stopped = True
        return self.leftovers()

    def pids(self) -> set[int]:
        """Every process of the engine: dockerd, containerd, shims, docker-proxy, containers."""
        return _cgroup_pids(self.cgroup)

    def leftovers(self) -> list[str]:
        out = [f"process {p} in cgroup {self.cgroup}" for p in sorted(_cgroup_pids(self.cgroup))]
        out += [f"cgroup {d}" for d in _cgroup_dirs(self.cgroup)]
        out += [f"mount {m}" for m in _mounts_under(self.workdir)]
        if self.workdir.exists():
            out.append(f"directory {self.workdir}")
        return out

    def __enter__(self) -> DockerEngine:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def private_netns(letter: str) -> Iterator[str]:
    """A fresh network namespace (netns_name(letter)) with only loopback up; deleted on exit."""
    name = netns_name(letter)
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=20)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True,
                       capture_output=True, timeout=20)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=20)
