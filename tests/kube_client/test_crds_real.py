"""The CRDs on a REAL kube-apiserver (skipped when its binary is not built): they install
(the fixture applies k8s/crds/), the seed's YAML is accepted unchanged, the CEL and schema rules
reject bad objects with a 422, the status subresource works, and the printer columns show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from l2lb.adapters.kube.client import RESOURCES, KubeError
from tests.kube_client.helpers import client_for

pytestmark = pytest.mark.kube

FIX = Path(__file__).resolve().parents[1] / "fixtures"
POOLS = RESOURCES["l2lb_pools"]
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def docs(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((FIX / path).read_text()) if d]


async def test_seed_yaml_is_accepted_unchanged(kube_real: Any) -> None:
    c = await client_for(kube_real)
    try:
        for path, key in (("seed/ip-pool.yaml", "cilium_pools_v2alpha1"), ("seed/announce.yaml", "cilium_l2policies")):
            for d in docs(path):
                made = await c.create_object(RESOURCES[key], d)
                assert {k: made["spec"][k] for k in d["spec"]} == d["spec"]
        # the v2alpha1 pool is readable as v2 (same schema)
        v2 = await c.get(RESOURCES["cilium_pools_v2"], "default-pool")
        assert v2["spec"]["blocks"] == [{"cidr": "192.168.1.128/25"}]
        assert v2["spec"]["disabled"] is False  # defaulted by the schema
        await _ns(c, "metallb-system")
        for d in docs("metallb/pihole-metallb.yaml"):
            if d["kind"] == "IPAddressPool":
                made = await c.create_object(RESOURCES["metallb_pools"], d)
                assert made["spec"]["autoAssign"] is True  # defaulted
            elif d["kind"] == "L2Advertisement":
                made = await c.create_object(RESOURCES["metallb_l2ads"], d)
                assert made["spec"]["ipAddressPools"] == ["homelab"]
    finally:
        await c.close()


async def _ns(c: Any, name: str) -> None:
    try:
        await c.create_object(RESOURCES["namespaces"], {"metadata": {"name": name}})
    except KubeError as e:
        if not e.conflict:
            raise


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (
            {"blocks": [{"cidr": "198.51.100.0/25", "start": "198.51.100.1", "stop": "198.51.100.2"}]},
            "either a cidr, or a start and a stop",
        ),
        ({"blocks": [{"start": "198.51.100.1"}]}, "either a cidr, or a start and a stop"),
        ({"blocks": [{"cidr": "300.0.0.0/8"}]}, "cidr"),
        ({"blocks": []}, "blocks"),
        (
            {
                "blocks": [{"cidr": "198.51.100.0/25"}],
                "serviceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
            },
            "In/NotIn need values",
        ),
        ({"blocks": [{"cidr": "198.51.100.0/25"}], "allowFirstLastIPs": "maybe"}, "allowFirstLastIPs"),
    ],
)
async def test_bad_pools_get_a_422(kube_real: Any, spec: dict[str, Any], needle: str) -> None:
    c = await client_for(kube_real)
    try:
        with pytest.raises(KubeError) as ei:
            await c.create_object(POOLS, {"metadata": {"name": "bad"}, "spec": spec})
    finally:
        await c.close()
    assert ei.value.status == 422, ei.value
    assert needle in ei.value.message


async def test_status_subresource_and_printer_columns(kube_real: Any) -> None:
    c = await client_for(kube_real)
    try:
        await c.create_object(POOLS, {"metadata": {"name": "p"}, "spec": {"blocks": [{"cidr": "198.51.100.0/25"}]}})
        # a status sent with the main resource is ignored (status subresource on)
        p = await c.patch(POOLS, "p", {"status": {"conditions": [{"type": "x", "status": "True"}]}})
        assert not (p.get("status") or {}).get("conditions")
        conds = [
            {
                "type": "l2lb.io/IPsUsed",
                "status": "True",
                "reason": "Counted",
                "message": "3",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
            {
                "type": "l2lb.io/IPsAvailable",
                "status": "True",
                "reason": "Counted",
                "message": "123",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
            {
                "type": "l2lb.io/PoolConflict",
                "status": "False",
                "reason": "NoConflict",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
        ]
        await c.patch(POOLS, "p", {"status": {"conditions": conds}}, subresource="status")
        table = await c.request("GET", POOLS.api_path(), accept=TABLE, resource="loadbalancerippools")
    finally:
        await c.close()
    assert table["kind"] == "Table"
    names = [col["name"] for col in table["columnDefinitions"]]
    assert names[:6] == ["Name", "CIDRs", "Disabled", "Used", "Available", "Conflict"]
    row = table["rows"][0]["cells"]
    assert row[:6] == ["p", "198.51.100.0/25", False, "3", "123", "False"]
