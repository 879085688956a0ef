"""Build the e2e images with a real builder, once per machine: the project's own Dockerfile and the
small images the e2e cluster and the compose stack need.

    python -m tests.e2e.images            # build what is missing, print {name: {ref, archive, ...}} as JSON
    python -m tests.e2e.images --list     # only print names, refs and whether each is cached
    from tests.e2e.images import build_all, load_into
    imgs = build_all()                    # {name: Built}; imgs["l2lb"].archive is a `docker save` tar

Builder: Debian's docker.io (dockerd 20.10 + its containerd + runc) run by tests.e2e.engine inside
a network namespace of its own; `docker build` with BuildKit (DOCKER_BUILDKIT=1: the builder every
current Docker uses by default; the Dockerfile also builds with 20.10's classic builder).
No registry is reachable, so the base images are made here from Debian packages with mmdebstrap
(bookworm, from the Debian sources apt uses on this machine) and imported with `docker import`:

* ``python-base``: bookworm minbase + python3 (3.11) + python3-venv + python-is-python3 +
  ca-certificates, plus this machine's CA bundle (its egress re-signs TLS: pip in the build must
  trust what the machine trusts). It stands in for ``python:3.11-slim-bookworm`` and is passed as
  ``--build-arg PYTHON_IMAGE=...``: the Dockerfile users build is the file built here, unchanged.
* ``tools-base``: bookworm minbase + dnsmasq-base + redis-server/redis-tools (the base of the
  dnsmasq and redis images).

Images (refs are fixed; archives are `docker save` tars that `docker load` and
`ctr -n k8s.io images import` read; containerd names them docker.io/library/<ref>):

    l2lb            l2lb:e2e                Dockerfile --target runtime
    l2lb-announcer  l2lb-announcer:e2e      Dockerfile --target announcer
    pause           l2lb-e2e/pause:3.10     static C program (Debian's gcc), FROM scratch
    dnsmasq         l2lb-e2e/dnsmasq:e2e    tests/e2e/images/dnsmasq
    http            l2lb-e2e/http:e2e       tests/e2e/images/http (python3 -m http.server)
    redis           l2lb-e2e/redis:e2e      tests/e2e/images/redis (Debian's redis-server, uid 999)
    kubectl         l2lb-e2e/kubectl:e2e    tests/e2e/images/kubectl (the machine's static kubectl)

Cache: ${XDG_CACHE_HOME:-~/.cache}/l2lb/images/<name>-<hash>.tar (+ .json with ref, id, size,
build seconds), the hash covering every input (files, recipe, dependency hashes), like
tests/support/kube-apiserver/build.sh. One build at a time per machine (flock); builds are niced.
The `pip install` of the Dockerfile reaches the package index through tests.e2e.egress (a CONNECT
proxy allowing only pip's index hosts), passed as Docker's predefined HTTPS_PROXY build argument.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.e2e.egress import EgressProxy
from tests.e2e.engine import STATE_PREFIX, DockerEngine, EngineError, private_netns

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "l2lb" / "images"
RECIPE_VERSION = "2"  # bump to rebuild everything after a change of this file's recipes
SUITE = "bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
KEEP_PER_NAME = 2
DPKG_EXCLUDES = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/share/lintian/*", "/usr/share/linda/*"]

BASES: dict[str, tuple[str, list[str], bool]] = {
    # name: (ref, Debian packages on top of minbase, add this machine's CA bundle)
    "python-base": ("l2lb-e2e/python:3.11-bookworm",
                    ["python3", "python3-venv", "python-is-python3", "ca-certificates"], True),
    "tools-base": ("l2lb-e2e/debian-tools:bookworm", ["dnsmasq-base", "redis-server", "redis-tools"], False),
}
REFS = {
    **{n: ref for n, (ref, _, _) in BASES.items()},
    "l2lb": "l2lb:e2e",
    "l2lb-announcer": "l2lb-announcer:e2e",
    "pause": "l2lb-e2e/pause:3.10",
    "dnsmasq": "l2lb-e2e/dnsmasq:e2e",
    "http": "l2lb-e2e/http:e2e",
    "redis": "l2lb-e2e/redis:e2e",
    "kubectl": "l2lb-e2e/kubectl:e2e",
}
DEPS = {
    "l2lb": ["python-base"], "l2lb-announcer": ["python-base"], "http": ["python-base"],
    "dnsmasq": ["tools-base"], "redis": ["tools-base"],
}
DEFAULT = ["l2lb", "l2lb-announcer", "pause", "dnsmasq", "http", "redis", "kubectl"]


class ImageBuildError(RuntimeError):
    pass


@dataclass
class Built:
    name: str
    ref: str
    archive: str
    key: str
    image_id: str
    size: int  # bytes, as `docker image inspect` reports (uncompressed, all layers)
    build_seconds: float
    cached: bool = True


# -- inputs and keys ----------------------------------------------------------------------------------
def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def _files_digest(paths: list[Path], base: Path) -> bytes:
    out = []
    for p in sorted(paths):
        out.append(str(p.relative_to(base)).encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return b"".join(out)


def dockerignore_files(context: Path) -> list[Path]:
    """The files of ``context`` that its .dockerignore lets through (the "deny all, allow a list" form
    the project uses: `*`, then `!path` lines, then exclusion patterns matched on any component)."""
    lines = [ln.strip() for ln in (context / ".dockerignore").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if lines[:1] != ["*"]:
        raise ImageBuildError(f"{context}/.dockerignore must start with '*' for the cache key to follow it")
    allowed = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    denied = [ln.removeprefix("**/") for ln in lines[1:] if not ln.startswith("!")]
    files: list[Path] = []
    for a in allowed:
        p = context / a
        cands = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]
        for q in cands:
            rel = q.relative_to(context).parts
            if not any(fnmatch.fnmatch(part, d) for part in rel for d in denied):
                files.append(q)
    return files


def debian_sources() -> str:
    """This machine's apt sources for the bookworm suites, as a deb822 file for mmdebstrap (the same
    mirror apt uses here); empty when apt has none (mmdebstrap then takes Debian's default mirror)."""
    entries: list[str] = []
    src_dir = Path("/etc/apt/sources.list.d")
    for f in sorted(src_dir.glob("*.sources")) if src_dir.is_dir() else []:
        for para in f.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for ln in para.splitlines():
                if ln.startswith("#") or ":" not in ln:
                    continue
                k, _, v = ln.partition(":")
                fields[k.strip()] = v.strip()
            suites = [s for s in fields.get("Suites", "").split() if s.split("-")[0] == SUITE]
            if "deb" in fields.get("Types", "").split() and suites and fields.get("URIs"):
                entries.append(
                    f"Types: deb\nURIs: {fields['URIs']}\nSuites: {' '.join(suites)}\n"
                    f"Components: {fields.get('Components', 'main')}\n"
                    + (f"Signed-By: {fields['Signed-By']}\n" if "Signed-By" in fields else "")
                )
    for f in [Path("/etc/apt/sources.list"), *sorted(src_dir.glob("*.list"))]:
        if not f.is_file():
            continue
        for ln in f.read_text().splitlines():
            parts = ln.split()
            if len(parts) >= 4 and parts[0] == "deb" and not parts[1].startswith("[") \
                    and parts[2].split("-")[0] == SUITE:
                entries.append(f"Types: deb\nURIs: {parts[1]}\nSuites: {parts[2]}\nComponents: {' '.join(parts[3:])}\n")
    return "\n".join(entries)


def _static_kubectl() -> Path:
    exe = shutil.which("kubectl")
    if exe is None:
        raise ImageBuildError("no kubectl on PATH: the kubectl image (docker-compose.yml's crds/seed one-shots) "
                              "packs the machine's kubectl")
    real = Path(exe).resolve()
    out = subprocess.run(["file", "-b", str(real)], capture_output=True, text=True, check=False).stdout
    if "statically linked" not in out:
        raise ImageBuildError(f"{real} is not a static binary ({out.strip()}); it cannot run in a FROM scratch image")
    return real


def _inputs(name: str) -> list[bytes]:
    """Hash material of one image, its dependencies' keys excluded."""
    if name in BASES:
        _, pkgs, ca = BASES[name]
        parts = [SUITE.encode(), " ".join(pkgs).encode(), " ".join(DPKG_EXCLUDES).encode(), debian_sources().encode()]
        if ca:
            parts.append(HOST_CA_BUNDLE.read_bytes())
        return parts
    if name in ("l2lb", "l2lb-announcer"):
        return [name.encode(), _files_digest(dockerignore_files(ROOT), ROOT), (ROOT / "Dockerfile").read_bytes()]
    if name == "kubectl":
        return [(HERE / "images" / "kubectl" / "Dockerfile").read_bytes(), _static_kubectl().read_bytes()]
    d = HERE / "images" / name
    parts = [_files_digest([p for p in d.rglob("*") if p.is_file()], d)]
    if name == "pause":
        parts.append(subprocess.run(["gcc", "--version"], capture_output=True, check=False).stdout)
    return parts


def keys(names: list[str]) -> dict[str, str]:
    """name -> cache key for ``names`` and everything they depend on."""
    out: dict[str, str] = {}

    def key(n: str) -> str:
        if n not in out:
            dep_keys = [key(d).encode() for d in DEPS.get(n, [])]
            out[n] = _sha(RECIPE_VERSION.encode(), REFS[n].encode(), *dep_keys, *_inputs(n))
        return out[n]

    for n in names:
        key(n)
    return out


def archive_path(name: str, key: str) -> Path:
    return CACHE / f"{name}-{key}.tar"


def cached(name: str, key: str) -> Built | None:
    meta = archive_path(name, key).with_suffix(".json")
    if archive_path(name, key).is_file() and meta.is_file():
        with contextlib.suppress(ValueError, TypeError):
            return Built(**{**json.loads(meta.read_text()), "cached": True})
    return None


# -- building ----------------------------------------------------------------------------------------
def _run(argv: list[str], log: Path, *, timeout: float, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> None:
    with open(log, "ab") as f:
        f.write(f"\n$ {' '.join(argv)}\n".encode())
        f.flush()
        try:
            rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, cwd=cwd, env=env,
                                check=False).returncode
        except subprocess.TimeoutExpired as e:
            raise ImageBuildError(f"{argv[0]} timed out after {timeout:.0f} s; log: {log}") from e
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise ImageBuildError(f"{' '.join(argv[:3])} ... failed (exit {rc}); log: {log}\n{tail}")


class Builder:
    def __init__(self, engine: DockerEngine, proxy: EgressProxy, tmp: Path, log: Path):
        self.engine = engine
        self.proxy = proxy
        self.tmp = tmp
        self.log = log

    def docker(self, args: list[str], timeout: float = 1800) -> None:
        _run(["nice", "-n", "10", "/usr/bin/docker", *args], self.log, timeout=timeout, env=self.engine.env)

    def build(self, name: str, deps: dict[str, Built]) -> None:
        ref = REFS[name]
        if name in BASES:
            self._base(name, ref)
            return
        proxy = [f"--build-arg=HTTPS_PROXY={self.proxy.url}", f"--build-arg=https_proxy={self.proxy.url}"]
        common = ["build", "--progress=plain", "--network=host", "--tag", ref]
        if name in ("l2lb", "l2lb-announcer"):
            target = "runtime" if name == "l2lb" else "announcer"
            self.docker([*common, *proxy, f"--build-arg=PYTHON_IMAGE={deps['python-base'].ref}",
                         "--target", target, str(ROOT)])
            return
        ctx = self.tmp / f"ctx-{name}"
        shutil.copytree(HERE / "images" / name, ctx)
        args = list(common)
        for d in DEPS.get(name, []):
            args.append(f"--build-arg=BASE={deps[d].ref}")
        if name == "pause":
            _run(["nice", "-n", "10", "gcc", "-static", "-Os", "-s", "-Wall", "-Werror", "-o", str(ctx / "pause"),
                  str(ctx / "pause.c")], self.log, timeout=300)
        if name == "kubectl":
            shutil.copy2(_static_kubectl(), ctx / "kubectl")
        self.docker([*args, str(ctx)])

    def _base(self, name: str, ref: str) -> None:
        _, pkgs, ca = BASES[name]
        rootfs = self.tmp / f"{name}.tar"
        argv = ["nice", "-n", "10", "mmdebstrap", "--variant=minbase", f"--include={','.join(pkgs)}",
                "--aptopt=Acquire::Languages \"none\"", "--aptopt=APT::Install-Recommends \"false\""]
        for ex in DPKG_EXCLUDES:
            argv.append(f"--dpkgopt=path-exclude={ex}")
        argv.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        if ca:
            argv.append(f"--customize-hook=cat {HOST_CA_BUNDLE} > \"$1/etc/ssl/certs/ca-certificates.crt\"")
        argv += ["--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/* \"$1\"/var/log/*"]
        argv += [SUITE, str(rootfs)]
        sources = debian_sources()
        if sources:
            src = self.tmp / "bookworm.sources"
            src.write_text(sources)
            argv.append(str(src))
        _run(argv, self.log, timeout=1800)
        self.docker(["import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["bash"]' if not ca
                     else 'CMD ["python3"]', str(rootfs), ref], timeout=600)
        rootfs.unlink()

    def save(self, name: str, key: str, seconds: float) -> Built:
        ref = REFS[name]
        out = archive_path(name, key)
        tmp = out.with_name(out.name + f".tmp.{os.getpid()}")
        self.docker(["save", "--output", str(tmp), ref], timeout=600)
        inspect = json.loads(self.engine.docker(["image", "inspect", ref]).stdout)[0]
        built = Built(name=name, ref=ref, archive=str(out), key=key, image_id=inspect["Id"], size=int(inspect["Size"]),
                      build_seconds=round(seconds, 1), cached=False)
        os.replace(tmp, out)
        out.with_suffix(".json").write_text(json.dumps(asdict(built), indent=1) + "\n")
        return built


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prune(name: str) -> None:
    mine = [p for p in CACHE.glob(f"{name}-*.tar") if re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}\.tar", p.name)]
    olds = sorted(mine, key=lambda p: p.stat().st_mtime, reverse=True)
    for old in olds[KEEP_PER_NAME:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)


def _closure(names: list[str]) -> list[str]:
    order: list[str] = []

    def visit(n: str) -> None:
        if n not in REFS:
            raise ImageBuildError(f"unknown image {n!r}; known: {', '.join(REFS)}")
        for d in DEPS.get(n, []):
            visit(d)
        if n not in order:
            order.append(n)

    for n in names:
        visit(n)
    return order


def build_all(names: list[str] | None = None, *, progress: Callable[[str], None] | None = None) -> dict[str, Built]:
    """Every image of ``names`` (default: all but the bases), built when not cached; {name: Built}."""
    say = progress or (lambda m: print(f"images: {m}", file=sys.stderr))
    want = list(names or DEFAULT)
    order = _closure(want)
    k = keys(order)
    with _lock():
        got: dict[str, Built] = {}
        missing = []
        for n in order:
            b = cached(n, k[n])
            if b is not None:
                got[n] = b
            else:
                missing.append(n)
        if not missing:
            return {n: got[n] for n in want}
        say(f"building {', '.join(missing)} (cache {CACHE})")
        _build(missing, got, k, say)
        for n in missing:
            _prune(n)
        return {n: got[n] for n in want}


def _build(missing: list[str], got: dict[str, Built], k: dict[str, str], say: Callable[[str], None]) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix=f"{STATE_PREFIX}{os.getpid()}-build", dir="/tmp")))
        log = CACHE / "build.log"
        log.write_text(f"# image build {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        ns = stack.enter_context(private_netns("b"))
        engine = DockerEngine(ns)
        stack.enter_context(engine)
        proxy = stack.enter_context(EgressProxy(ns))
        b = Builder(engine, proxy, tmp, log)
        loaded: set[str] = set()
        for n in missing:
            for d in DEPS.get(n, []):
                if d not in missing and d not in loaded:
                    engine.docker(["load", "--input", got[d].archive], timeout=600)
                    loaded.add(d)
            t0 = time.monotonic()
            say(f"{n} ({REFS[n]}) ...")
            try:
                b.build(n, got)
            except (ImageBuildError, EngineError) as e:
                raise ImageBuildError(f"building {n}: {e}\n(dockerd log tail:\n{engine.log(1500)})") from e
            got[n] = b.save(n, k[n], time.monotonic() - t0)
            say(f"{n}: {got[n].size / 1e6:.1f} MB in {got[n].build_seconds:.0f} s -> {got[n].archive}")
        denied = [r for r in proxy.requests if not r[2]]
        if denied:
            say(f"egress proxy refused: {denied}")
        left = engine.stop()
        if left:
            raise ImageBuildError(f"the build engine left: {left}")


def containerd_name(ref: str) -> str:
    """The name containerd (and kubelet) gives ``ref``: l2lb:e2e -> docker.io/library/l2lb:e2e,
    l2lb-e2e/pause:3.10 -> docker.io/l2lb-e2e/pause:3.10."""
    first = ref.split("/", maxsplit=1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." in first or ":" in first or first == "localhost":
        return ref
    return f"docker.io/{ref}"


def load_into(engine: DockerEngine, images: dict[str, Built]) -> None:
    """`docker load` the archives into a running engine."""
    for b in images.values():
        engine.docker(["load", "--input", b.archive], timeout=600)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.e2e.images", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"images to build (default: {' '.join(DEFAULT)})")
    p.add_argument("--list", action="store_true", help="print refs, cache keys and cache state; build nothing")
    args = p.parse_args(argv)
    names = args.names or DEFAULT
    if args.list:
        k = keys(_closure(names))
        for n, key in k.items():
            state = "cached" if cached(n, key) else "missing"
            print(f"{n:16} {REFS[n]:34} {key} {state}")
        return 0
    try:
        t0 = time.monotonic()
        got = build_all(names)
    except (ImageBuildError, EngineError) as e:
        print(f"images: {e}", file=sys.stderr)
        return 1
    print(json.dumps({n: asdict(b) for n, b in got.items()}, indent=1))
    print(f"images: done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
