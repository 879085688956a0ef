"""docker-compose.yml: valid against the Compose Specification schema, offline, plus the stack's
own rules (health-gated start order, the announcer's host network + NET_RAW only, Redis ACL).

No container engine here: the schema is the one check-jsonschema ships (vendored compose-spec.json,
Apache-2.0), loaded from its installed package -- nothing is downloaded.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.support import ROOT, compose_interpolate

COMPOSE = ROOT / "docker-compose.yml"
ACL = ROOT / "deploy" / "redis" / "users.acl"


def compose_schema() -> dict[str, Any]:
    path = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = compose_interpolate(raw)
    return out


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(compose_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_valid_against_compose_spec(raw: dict[str, Any], compose: dict[str, Any]) -> None:
    assert schema_errors(raw) == []
    assert schema_errors(compose) == []


def test_schema_check_catches_mistakes(compose: dict[str, Any]) -> None:
    # the validator really looks: each of these edits must be reported
    bad = copy.deepcopy(compose)
    bad["services"]["allocator"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert any("depends_on" in e for e in schema_errors(bad))
    bad = copy.deepcopy(compose)
    bad["services"]["announcer"]["cap_add"] = "NET_RAW"
    assert schema_errors(bad)
    bad = copy.deepcopy(compose)
    bad["services"]["redis"]["healthcheck"]["interval"] = 5
    assert schema_errors(bad)


def test_stack_has_every_part(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "apiserver", "allocator", "leases", "announcer", "seed"} <= set(services)
    for name in ("apiserver", "allocator", "leases", "announcer"):
        cmd = services[name]["command"]
        assert cmd[0] == name, f"{name} runs `l2lb {cmd[0]}`"
    assert "--state-file" in " ".join(services["apiserver"]["command"])


def test_start_order_is_health_gated(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            cond = spec["condition"]
            if cond == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            elif cond == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} is a one-shot; it must not restart"
            else:
                pytest.fail(f"{name} -> {dep}: condition {cond} does not wait for readiness")
    for name in ("redis", "apiserver", "allocator", "leases", "announcer"):
        assert "healthcheck" in services[name], name
    assert services["allocator"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["announcer"]["depends_on"]["leases"]["condition"] == "service_healthy"
    assert services["seed"]["depends_on"]["crds"]["condition"] == "service_completed_successfully"


def test_seed_is_loaded_unchanged(compose: dict[str, Any]) -> None:
    seed = compose["services"]["seed"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in seed["volumes"]}
    src = ROOT / mounts["/manifests/seed"]
    assert (src / "kustomization.yaml").is_file(), src
    assert "-k" in seed["command"] and "/manifests/seed" in seed["command"]
    crds = compose["services"]["crds"]
    crd_mount = next(v for v in crds["volumes"] if ":/manifests/crds" in v).split(":")[0]
    assert crd_mount == "./k8s/crds", "the dev stack installs the same CRDs as the cluster manifests"


def test_least_privilege(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        assert not svc.get("privileged"), f"{name} is privileged"
    ann = services["announcer"]
    assert ann["network_mode"] == "host"
    assert ann["cap_add"] == ["NET_RAW"]
    assert ann["cap_drop"] == ["ALL"]
    assert ann["build"]["target"] == "announcer"
    for name in ("apiserver", "allocator", "leases"):
        svc = services[name]
        assert svc["cap_drop"] == ["ALL"] and "cap_add" not in svc, name
        assert svc["build"]["target"] == "runtime", name  # the non-root image
        assert svc["read_only"] is True
        assert "no-new-privileges:true" in svc["security_opt"]


def test_bind_mounts_exist(compose: dict[str, Any]) -> None:
    missing = []
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith((".", "/")) and not (ROOT / src).exists():
                missing.append(f"{name}: {src}")
    if missing == ["redis: ./deploy/redis/users.acl"]:
        pytest.skip("deploy/redis/users.acl (the bus work's ACL file) is not written yet")
    assert missing == []


def _acl_users(text: str) -> dict[str, dict[str, Any]]:
    users: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "user":
            users[words[1]] = {
                "on": "on" in words[2:],
                "passwords": [w[1:] for w in words[2:] if w.startswith(">")],
                "hashes": [w[1:] for w in words[2:] if w.startswith("#")],
                "nopass": "nopass" in words[2:],
            }
    return users


def test_redis_has_acl_and_passwords(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    conf = (ROOT / "deploy" / "redis" / "redis.conf").read_text()
    assert re.search(r"^aclfile /etc/redis/users.acl$", conf, re.M)
    assert any(v.endswith(":/etc/redis/users.acl:ro") for v in redis["volumes"])
    assert redis["ports"] == ["127.0.0.1:6379:6379"], "Redis is published on loopback only"
    if not ACL.exists():
        pytest.skip("deploy/redis/users.acl (the bus work's ACL file) is not written yet")
    import hashlib

    users = _acl_users(ACL.read_text())
    assert users.get("default", {"on": False})["on"] is False, "the default user must be off"
    for svc, user in (("allocator", "allocator"), ("leases", "leases"), ("announcer", "announcer")):
        dsn = compose["services"][svc]["environment"]["L2LB_REDIS"]
        m = re.match(r"redis://([^:]+):([^@]+)@", dsn)
        assert m, dsn
        assert m.group(1) == user
        acl = users[user]
        assert acl["on"] and not acl["nopass"]
        pw = m.group(2)
        assert pw in acl["passwords"] or hashlib.sha256(pw.encode()).hexdigest() in acl["hashes"], (
            f"{svc}'s DSN password does not match user {user} in users.acl"
        )
    health = redis["environment"]["REDISCLI_AUTH"]
    assert "--user allocator ping" in redis["healthcheck"]["test"][1]
    assert hashlib.sha256(health.encode()).hexdigest() in users["allocator"]["hashes"] or health in users[
        "allocator"
    ]["passwords"]
