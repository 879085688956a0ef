"""The development/test toolchain is reproducible: one hashed lock, a project venv, pinned Go builds.

* requirements-dev.lock (uv, ``sh deploy/lock.sh``) pins, with sha256 hashes, everything
  ``scripts/dev`` installs into ``.venv``: pyproject's dependencies and [test] extra, the build
  backend of the editable install, at the same versions as the image's requirements.lock.
* ``scripts/dev`` installs from that lock only (``--require-hashes --no-deps``, no build isolation).
* Go programs build with ``GOTOOLCHAIN=local`` and ``GOFLAGS=-mod=mod`` against committed go.sum
  files; no ``@latest``.
* Missing Debian packages / an unreachable mirror end ``scripts/dev`` with the package and the command.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.test_image import locked

ROOT = Path(__file__).resolve().parents[2]


def dev_lock_problems(pyproject: str, dev_text: str, runtime_text: str, tools_in: str) -> list[str]:
    dev = locked(dev_text)
    runtime = locked(runtime_text)
    project = tomllib.loads(pyproject)["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    wanted += [ln.strip() for ln in tools_in.splitlines() if ln.strip() and not ln.startswith("#")]
    problems: list[str] = []
    for dep in wanted:
        req = Requirement(dep)
        name = str(canonicalize_name(req.name))
        if name not in dev:
            problems.append(f"{req.name} is installed by scripts/dev but not in requirements-dev.lock")
        elif not req.specifier.contains(dev[name][0], prereleases=True):
            problems.append(f"requirements-dev.lock pins {name}=={dev[name][0]}, wanted {req.specifier}")
    for name, (version, _, hashes) in dev.items():
        if not hashes or not all(h.startswith("sha256:") for h in hashes):
            problems.append(f"{name} has no sha256 hashes in requirements-dev.lock")
        if name in runtime and runtime[name][0] != version:
            problems.append(f"{name}: requirements-dev.lock {version} != requirements.lock {runtime[name][0]}")
    problems += [f"{name} is in requirements.lock but not in requirements-dev.lock"
                 for name in runtime if name not in dev]
    return problems


def read(rel: str) -> str:
    return (ROOT / rel).read_text()


def test_dev_lock_pins_everything_scripts_dev_installs() -> None:
    problems = dev_lock_problems(read("pyproject.toml"), read("requirements-dev.lock"), read("requirements.lock"),
                                 read("deploy/dev-tools.in"))
    assert problems == [], "run: bash scripts/dev lock"
    head = read("requirements-dev.lock").splitlines()[:3]
    assert any("deploy/lock.sh" in h for h in head)
    names = set(locked(read("requirements-dev.lock")))
    assert {"pytest", "mypy", "ruff", "import-linter", "hatchling", "editables", "redis", "uv"} <= names


def test_dev_lock_check_catches_drift() -> None:
    pyproject, dev, runtime, tools = (read("pyproject.toml"), read("requirements-dev.lock"), read("requirements.lock"),
                                      read("deploy/dev-tools.in"))
    assert dev_lock_problems(pyproject, dev, runtime, tools) == []
    added = pyproject.replace('"pytest>=8",', '"pytest>=8",\n  "httpx>=0.27",')
    assert any("httpx" in p for p in dev_lock_problems(added, dev, runtime, tools))
    newer = pyproject.replace('"mypy>=1.10"', '"mypy>=99"')
    assert any("mypy" in p for p in dev_lock_problems(newer, dev, runtime, tools))
    redis_pin = re.search(r"^redis==(\S+)", runtime, re.M)
    assert redis_pin
    skewed = runtime.replace(f"redis=={redis_pin.group(1)}", "redis==0.0.1", 1)
    assert any("redis" in p for p in dev_lock_problems(pyproject, dev, skewed, tools))
    no_hash = re.sub(r"\n\s+--hash=sha256:[0-9a-f]+ ?\\?", "", dev)
    assert any("hashes" in p for p in dev_lock_problems(pyproject, no_hash, runtime, tools))


def test_scripts_dev_installs_from_the_lock_only() -> None:
    dev = read("scripts/dev")
    installs = [ln for ln in dev.splitlines() if "pip install" in ln and "deps_check" not in ln]
    locked_install = [ln for ln in installs if "requirements-dev.lock" in ln]
    assert locked_install and all("--require-hashes" in ln and "--no-deps" in ln for ln in locked_install)
    editable = [ln for ln in installs if " -e ." in ln and "[test]" not in ln]
    assert editable and all("--no-build-isolation" in ln and "--no-deps" in ln for ln in editable)
    # the only unpinned install is deps-check's throwaway venv
    unpinned = [ln for ln in installs if "[test]" in ln]
    assert all("tmp/venv" in ln for ln in unpinned), unpinned
    assert 'VENV=${L2LB_VENV:-$ROOT/.venv}' in dev
    # CI: README's test command, then (only if it passed: set -e) the end-to-end suite
    ci = [ln.strip() for ln in read(".ci/run").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert "set -euo pipefail" in ci
    test_at = ci.index("bash scripts/dev test")
    e2e_at = [i for i, ln in enumerate(ci) if ln.endswith("bash scripts/dev e2e")]
    assert e2e_at and test_at < e2e_at[0], ci


GO_MODULES = sorted(p.parent for p in ROOT.rglob("go.mod") if ".venv" not in p.parts and ".git" not in p.parts)


def test_go_modules_are_pinned() -> None:
    assert GO_MODULES, "no Go module found"
    for mod in GO_MODULES:
        text = (mod / "go.mod").read_text()
        rel = mod.relative_to(ROOT)
        if re.search(r"^require\b", text, re.M):
            assert (mod / "go.sum").is_file(), f"{rel}: go.mod requires modules but go.sum is not committed"
        assert "latest" not in text, f"{rel}/go.mod names 'latest'"
        assert re.search(r"^go \d+\.\d+", text, re.M), f"{rel}/go.mod has no go directive"


def test_go_builds_use_the_local_toolchain() -> None:
    """Every file that runs `go build` sets GOTOOLCHAIN=local and GOFLAGS=-mod=mod (or is run by scripts/dev,
    which exports both)."""
    candidates = [p for p in ROOT.rglob("*") if p.suffix in {".sh", ".py", ""} and p.is_file()
                  and not {".git", ".venv", "__pycache__"} & set(p.parts)]
    builders = []
    for p in candidates:
        try:
            text = p.read_text()
        except (UnicodeDecodeError, PermissionError):
            continue
        if p.name == "test_toolchain.py":
            continue
        rel = p.relative_to(ROOT)
        if re.search(r"""go build|\[go, "build"|"go", "build"|"build", "-trimpath""", text):
            builders.append(rel)
            assert "GOTOOLCHAIN" in text and "local" in text, f"{rel} builds Go without GOTOOLCHAIN=local"
            assert "-mod=mod" in text, f"{rel} builds Go without GOFLAGS=-mod=mod"
        assert not re.search(r"go (install|get) \S+@latest", text), f"{rel} installs @latest"
    assert builders, "found no Go build at all"
    assert "export GOTOOLCHAIN=local GOFLAGS=-mod=mod" in read("scripts/dev")


def _fake_bin(tmp_path: Path, uid: str, apt_rc: int) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "dpkg-query": "#!/bin/sh\nexit 1\n",  # nothing installed
        "apt-get": f"#!/bin/sh\necho 'Temporary failure resolving deb.debian.org' >&2\nexit {apt_rc}\n",
        "id": f"#!/bin/sh\necho {uid}\n",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "L2LB_WITH_BROWSER": "0"}


@pytest.mark.parametrize(("uid", "expect"), [
    ("1000", "missing Debian packages: redis-server"),
    ("0", "apt-get update failed (is the Debian mirror reachable?"),
])
def test_missing_debian_packages_are_named(tmp_path: Path, uid: str, expect: str) -> None:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "dev"), "setup"], capture_output=True, text=True,
                          timeout=60, env=_fake_bin(tmp_path, uid, 100), check=False)
    assert proc.returncode != 0
    assert expect in proc.stderr, proc.stderr
    assert "redis-server" in proc.stderr and "iputils-arping" in proc.stderr  # every missing package named
