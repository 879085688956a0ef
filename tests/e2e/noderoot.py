"""A per-machine cache of a lab node's containerd root with every e2e image already imported.

Importing the e2e images (~1 GB: l2lb and its announcer 269 MB each, redis, dnsmasq, http, pause,
CoreDNS) into the containerd of each of the 3 nodes took 95-200 s of every cluster start, and
deleting the ~3 GB of unpacked layers again 1-3 min of every teardown. Instead:

* :func:`ensure_root` keeps ``~/.cache/l2lb/containerd-roots/<key>/root``: a containerd root
  (content store + overlayfs snapshots + metadata) into which the images were imported once, by a
  throwaway containerd (Debian's, CRI plugin off) in a network and mount namespace of its own. The
  key is a hash of containerd's version and of each image archive (its name, which carries the
  image's content key, and its size). When the key is new, the newest cached root is copied
  (hard links) and only the archives that changed are imported into the copy (usually l2lb and
  l2lb-announcer after a source change: only their top layer is new), the others are kept; the
  two newest roots are kept.
* :func:`link_root` gives a node its own copy of it before its containerd starts: directories
  anew, every file a hard link (content blobs and committed snapshot layers are never written
  in place: containers write to their own new snapshot, the overlay's upper directory), except the
  bolt databases, which are copied. A copy costs seconds; removing it only unlinks.

``L2LB_E2E_NODE_CACHE=0`` switches this off (every node imports every archive, as before).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.e2e.cluster import ClusterError, run, spawn, wait_for

CACHE = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "l2lb" / "containerd-roots"
KEEP = 2
RECIPE = "1"  # bump when the way a root is made changes
# files containerd changes in place: copied into a node's root, never linked (relative to the root)
BOLT_FILES = ("io.containerd.metadata.v1.bolt/meta.db", "io.containerd.snapshotter.v1.overlayfs/metadata.db")


def enabled() -> bool:
    return os.environ.get("L2LB_E2E_NODE_CACHE", "1") != "0"


def containerd_version() -> str:
    return run(["containerd", "--version"]).stdout.strip()


def archive_id(path: Path) -> str:
    """What identifies an archive: its file name, which images.py and ociarchive.py make from the image's
    content key (``<name>-<hex>.tar``), and its size; for any other name (``L2LB_E2E_IMAGES``) also its mtime."""
    st = path.stat()
    if re.fullmatch(r".+-[0-9a-f]{12,64}\.tar", path.name):
        return f"{path.name}:{st.st_size}"
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(images: Mapping[str, Path], version: str) -> str:
    h = hashlib.sha256(f"{RECIPE}\0{version}".encode())
    for name in sorted(images):
        h.update(f"\0{name}={archive_id(images[name])}".encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _lock(shared: bool) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _roots() -> list[Path]:
    """Finished roots, newest first."""
    out = [d for d in CACHE.iterdir() if d.is_dir() and (d / "manifest.json").is_file()] if CACHE.is_dir() else []
    return sorted(out, key=lambda d: (d / "manifest.json").stat().st_mtime, reverse=True)


def link_tree(src: Path, dest: Path) -> None:
    """``dest`` = ``src`` with every file hard-linked, except :data:`BOLT_FILES` (copied)."""
    if dest.exists() and any(dest.iterdir()):
        raise ClusterError(f"{dest} is not empty: a node's containerd root is made only once")
    dest.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", "--link", "--no-target-directory", str(src), str(dest)], timeout=600)
    for rel in BOLT_FILES:
        d = dest / rel
        if d.exists():
            tmp = d.with_name(d.name + ".copy")
            shutil.copy2(src / rel, tmp)
            tmp.replace(d)


def link_root(root: Path, dest: Path) -> float:
    """Give one node its own containerd root (``dest``, empty) made from the cached ``root``; seconds."""
    t0 = time.monotonic()
    with _lock(shared=True):
        if not (root.parent / "manifest.json").is_file():
            raise ClusterError(f"{root} was removed from the cache meanwhile")
        link_tree(root, dest)
    return time.monotonic() - t0


def _imported_refs(output: str) -> list[str]:
    """The image names ``ctr images import`` reported ("unpacking <name> (sha256:...)...done")."""
    return [line.split()[1] for line in output.splitlines() if line.startswith("unpacking ")]


class _Containerd:
    """A throwaway containerd on ``root`` (CRI off) in its own network + mount namespace."""

    def __init__(self, work: Path, root: Path) -> None:
        self.work, self.root = work, root
        self.sock = work / "c.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Containerd:
        cfg = self.work / "config.toml"
        cfg.write_text(f"""version = 2
root = "{self.root}"
state = "{self.work / 'state'}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.work / 'opt'}"
""")
        self.proc = spawn(["unshare", "--net", "--mount", "--propagation", "private", "--",
                           "containerd", "--config", str(cfg)], log=self.work / "containerd.log", cgroup=None)
        wait_for("the image cache's containerd", lambda: self.ctr("version", check=False).returncode == 0,
                 timeout=60)
        return self

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return run(["ctr", "--address", str(self.sock), "-n", "k8s.io", *args], check=check, timeout=timeout)

    def __exit__(self, *_exc: object) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)  # containerd closes its databases cleanly
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def _sweep() -> None:
    """Remove half-made roots of runs that are gone (``tmp-<pid>-...``) and all but the newest KEEP."""
    for d in CACHE.glob("tmp-*"):
        pid = d.name.split("-")[1]
        if not pid.isdigit() or not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(d, ignore_errors=True)
    for d in _roots()[KEEP:]:
        shutil.rmtree(d, ignore_errors=True)


def ensure_root(images: Mapping[str, Path], log: list[str] | None = None) -> Path:
    """The cached containerd root holding ``images`` (name -> docker-archive), made when missing."""
    log = log if log is not None else []
    version = containerd_version()
    key = cache_key(images, version)
    final = CACHE / key
    if (final / "manifest.json").is_file():
        log.append(f"containerd root {key}: cached")
        return final / "root"
    with _lock(shared=False):
        if (final / "manifest.json").is_file():
            log.append(f"containerd root {key}: made meanwhile by another run")
            return final / "root"
        _sweep()
        t0 = time.monotonic()
        work = CACHE / f"tmp-{os.getpid()}-{key}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        want = {name: archive_id(path) for name, path in images.items()}
        base = next((d for d in _roots() if json.loads((d / "manifest.json").read_text()).get("containerd") == version),
                    None)
        have: dict[str, dict[str, object]] = {}
        if base is not None:
            link_tree(base / "root", work / "root")
            have = json.loads((base / "manifest.json").read_text())["images"]
        else:
            (work / "root").mkdir()
        refs: dict[str, dict[str, object]] = {}
        imported: list[str] = []
        try:
            with _Containerd(work, work / "root") as ctrd:
                stale = [n for n in have if want.get(n) != have[n]["archive"]]
                for name in sorted(stale):  # replaced or no longer wanted: their refs go (GC frees what nobody uses)
                    for ref in have[name]["refs"]:  # type: ignore[union-attr]
                        ctrd.ctr("images", "rm", "--sync", str(ref), check=False, timeout=300)
                for name in sorted(images):
                    if name in have and name not in stale:
                        refs[name] = have[name]
                        continue
                    t1 = time.monotonic()
                    out = ctrd.ctr("images", "import", "--snapshotter", "overlayfs", str(images[name]), timeout=900)
                    names = _imported_refs(out.stdout)
                    if not names:
                        raise ClusterError(f"ctr images import {images[name]} named no image: {out.stdout[-500:]}")
                    refs[name] = {"archive": want[name], "refs": names}
                    imported.append(name)
                    log.append(f"containerd root {key}: imported {name} in {time.monotonic() - t1:.1f} s")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        for d in ("state", "opt"):
            shutil.rmtree(work / d, ignore_errors=True)
        (work / "manifest.json").write_text(json.dumps({
            "containerd": version, "images": refs, "from": base.name if base is not None else None,
            "seconds": round(time.monotonic() - t0, 1)}, indent=1))
        work.rename(final)
        log.append(f"containerd root {key}: made in {time.monotonic() - t0:.1f} s"
                   + (f" from {base.name}, imported {', '.join(imported) or 'nothing'}" if base is not None
                      else " (all imported)"))
        _sweep()
        return final / "root"
