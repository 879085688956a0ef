"""Every flag the compose stack and the Kubernetes manifests pass to `l2lb <command>` exists.

Asks the real entry points (`python -m l2lb.cli <command> --help`); a command whose module is not
written yet is skipped (the CLI answers "not yet available", exit 3).
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.deploy.support import OVERLAYS, ROOT, built, compose_interpolate, kustomize_cmd, long_flags

COMMANDS = ("allocator", "leases", "announcer", "apiserver")


def help_flags(command: str) -> set[str] | None:
    proc = subprocess.run(
        [sys.executable, "-m", "l2lb.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode == 3 and "not yet available" in proc.stderr:
        return None
    assert proc.returncode == 0, f"l2lb {command} --help failed:\n{proc.stderr[-2000:]}"
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", proc.stdout))


def used_flags() -> dict[str, dict[str, set[str]]]:
    """command -> where -> flags."""
    out: dict[str, dict[str, set[str]]] = {c: {} for c in COMMANDS}
    compose: dict[str, Any] = compose_interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))
    for name, svc in compose["services"].items():
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd and cmd[0] in COMMANDS:
            out[cmd[0]][f"compose:{name}"] = long_flags(cmd[1:])
    if kustomize_cmd() is not None:
        for overlay in OVERLAYS:
            for d in built(overlay):
                if d["kind"] not in ("Deployment", "DaemonSet", "StatefulSet"):
                    continue
                for c in d["spec"]["template"]["spec"]["containers"]:
                    args = c.get("args", [])
                    if args and args[0] in COMMANDS:
                        out[args[0]][f"{overlay}:{d['metadata']['name']}"] = long_flags(args[1:])
    return out


def test_flag_parser() -> None:
    assert long_flags(["allocator", "--a=1", "--b", "x", "-v", "--c-d=$(X)"]) == {"--a", "--b", "--c-d"}


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_exist(command: str) -> None:
    have = help_flags(command)
    if have is None:
        pytest.skip(f"l2lb {command} is not written yet")
    uses = used_flags()[command]
    assert uses, f"nothing runs l2lb {command}?"
    bad = {where: sorted(flags - have) for where, flags in uses.items() if flags - have}
    assert not bad, f"l2lb {command} does not accept: {bad}"
