"""Fuzzing of everything users and peers feed the pure core: Service annotations, pool and policy
specs, bus messages of every kind and version. Rejected input gives a clear error (ParseError,
PolicyError, an ``invalid_request`` result, MessageError) -- never another exception -- and leaves
the Allocator as it was. ARP/NDP frames are fuzzed in tests/announcer/test_codec_fuzz.py.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2lb.core import messages
from l2lb.core.allocator import Allocator
from l2lb.core.models import ParseError, Reason
from l2lb.core.parse import IP_ANNOTATIONS, POOL_ANNOTATIONS, SHARING_ANNOTATIONS, parse_pool, parse_service
from l2lb.core.policy import PolicyError, parse_policies, parse_policy

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=False), st.text(max_size=20))
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                         max_size=3), max_leaves=8)
ip_like = st.one_of(
    st.sampled_from(["198.51.100.7", "198.51.100.300", "2001:db8::1", "2001:db8::1%eth0", "198.51.100.0/24",
                     "::", "0.0.0.0", "198.51.100.7,198.51.100.8", " 198.51.100.9 ", "fe80::1", ",", "1.2.3"]),
    st.text(alphabet="0123456789abcdef.:/,% -", max_size=40),
)
ANN_KEYS = [*IP_ANNOTATIONS, *SHARING_ANNOTATIONS, *POOL_ANNOTATIONS, "lbipam.cilium.io/sharing-cross-namespace"]


def base_allocator() -> tuple[Allocator, dict[str, Any]]:
    a = Allocator()
    a.upsert_pool(parse_pool({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                              "metadata": {"name": "p"}, "spec": {"blocks": [{"cidr": "198.51.100.0/28"}]}}))
    for i in range(3):
        res = a.allocate(parse_service({"metadata": {"name": f"s{i}", "namespace": "default"},
                                        "spec": {"type": "LoadBalancer", "ports": [{"port": 80 + i}]}}))
        assert res.ok
    return a, snapshot(a)


def snapshot(a: Allocator) -> dict[str, Any]:
    return {"results": {k: (r.reason, r.ips) for k, r in a.results().items()},
            "usage": {k: (u.used, u.available) for k, u in a.pool_usage().items()},
            "users": {ip: a.users_of(ip) for ip in (f"198.51.100.{i}" for i in range(16))}}


@FUZZ
@given(ann=st.dictionaries(st.sampled_from(ANN_KEYS), ip_like, max_size=4),
       labels=st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3), json_any),
       lbip=st.one_of(st.none(), ip_like, json_leaf),
       spec_extra=st.dictionaries(st.sampled_from(["ipFamilies", "ipFamilyPolicy", "externalTrafficPolicy",
                                                   "loadBalancerClass", "ports", "externalIPs", "selector"]),
                                  json_any, max_size=3))
def test_annotations_and_spec_never_crash_and_rejections_change_nothing(
        ann: dict[str, str], labels: Any, lbip: Any, spec_extra: dict[str, Any]) -> None:
    obj = {"metadata": {"name": "fuzzed", "namespace": "default", "annotations": ann, "labels": labels},
           "spec": {"type": "LoadBalancer", "loadBalancerIP": lbip, **spec_extra}}
    try:
        req = parse_service(obj)
    except ParseError:
        return
    a, before = base_allocator()
    res = a.allocate(req)
    if not req.handled:  # another loadBalancerClass: not ours, whatever else is wrong with it
        assert res.reason is Reason.NOT_HANDLED and not res.ips, res
    elif req.problems:
        assert res.reason is Reason.INVALID_REQUEST, res
        assert res.message and not res.ips
    if not res.ok:
        # a request not (fully) satisfied takes nothing from anybody else; on a Cilium pool it keeps what
        # could be allocated (res.ips, listed in the result), as Cilium does
        after = snapshot(a)
        assert {k: v for k, v in after["results"].items() if k != req.key} == before["results"]
        assert {ip: tuple(u for u in users if u != req.key) for ip, users in after["users"].items()} == before["users"]
        new = [ip for ip in res.ips if not before["users"].get(ip)]
        assert after["usage"]["p"][0] == before["usage"]["p"][0] + len(new)
        if req.problems or not req.handled:
            assert after["usage"] == before["usage"] and not res.ips
    else:
        for ip in res.ips:
            assert req.key in a.users_of(ip)


@FUZZ
@given(obj=st.one_of(json_any, st.fixed_dictionaries({"metadata": json_any, "spec": json_any})))
def test_service_objects_of_any_shape_only_raise_parse_error(obj: Any) -> None:
    try:
        parse_service(obj)
    except ParseError as e:
        assert str(e)


block = st.one_of(
    st.fixed_dictionaries({"cidr": st.one_of(ip_like, json_leaf)}),
    st.fixed_dictionaries({"start": st.one_of(ip_like, json_leaf), "stop": st.one_of(ip_like, json_leaf)}),
    json_any,
)
pool_spec = st.fixed_dictionaries({}, optional={
    "blocks": st.one_of(st.lists(block, max_size=3), json_leaf),
    "cidrs": st.lists(block, max_size=2),
    "addresses": st.one_of(st.lists(st.one_of(ip_like, st.builds(lambda a, b: f"{a}-{b}", ip_like, ip_like),
                                              json_leaf), max_size=3), json_leaf),
    "disabled": json_leaf, "allowFirstLastIPs": st.one_of(st.sampled_from(["Yes", "No"]), json_leaf),
    "serviceSelector": st.one_of(json_any, st.fixed_dictionaries({"matchLabels": json_any,
                                                                  "matchExpressions": json_any})),
    "autoAssign": json_leaf, "avoidBuggyIPs": json_leaf, "serviceAllocation": json_any,
})
pool_kind = st.sampled_from([("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool"),
                             ("cilium.io/v2", "CiliumLoadBalancerIPPool"), ("l2lb.io/v1alpha1", "LoadBalancerIPPool"),
                             ("metallb.io/v1beta1", "IPAddressPool"),
                             ("v1", "Service")])


@FUZZ
@given(kind=pool_kind, spec=st.one_of(pool_spec, json_any), meta=st.one_of(
    st.fixed_dictionaries({"name": st.text(min_size=1, max_size=10)}, optional={"labels": json_any,
                                                                                 "generation": json_leaf}),
    json_any))
def test_pool_specs_parse_or_raise_parse_error_and_parsed_pools_are_usable(
        kind: tuple[str, str], spec: Any, meta: Any) -> None:
    obj = {"apiVersion": kind[0], "kind": kind[1], "metadata": meta, "spec": spec}
    a, before = base_allocator()
    try:
        pool = parse_pool(obj)
    except ParseError as e:
        assert str(e)
        assert snapshot(a) == before  # nothing reached the allocator
        return
    # a pool that parses must be accepted by the allocator without an exception
    a.upsert_pool(pool)
    a.retry()
    a.remove_pool(pool.name)
    usage = a.pool_usage()
    assert all(u.used <= u.total for u in usage.values())


policy_kind = st.sampled_from([("cilium.io/v2alpha1", "CiliumL2AnnouncementPolicy"),
                               ("metallb.io/v1beta1", "L2Advertisement"), ("l2lb.io/v1alpha1", "L2AnnouncementPolicy"),
                               ("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool")])
regexish = st.one_of(st.sampled_from(["^eth[0-9]+", "(", "[a-", "enp0s25", "*", "a{99999999999}", "(?P<x", ".*"]),
                     st.text(max_size=12))
selector = st.one_of(json_any, st.fixed_dictionaries({}, optional={
    "matchLabels": st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2), json_any),
    "matchExpressions": st.lists(st.fixed_dictionaries({}, optional={
        "key": st.one_of(st.text(max_size=8), json_leaf),
        "operator": st.one_of(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "in"]), json_leaf),
        "values": st.one_of(st.lists(st.text(max_size=5), max_size=2), json_any)}), max_size=2)}))
policy_spec = st.fixed_dictionaries({}, optional={
    "interfaces": st.one_of(st.lists(regexish, max_size=3), json_leaf),
    "serviceSelector": selector, "nodeSelector": selector, "nodeSelectors": st.lists(selector, max_size=2),
    "ipAddressPoolSelectors": st.lists(selector, max_size=2), "ipPoolSelector": selector,
    "ipAddressPools": st.one_of(st.lists(st.text(max_size=5), max_size=2), json_any),
    "externalIPs": json_leaf, "loadBalancerIPs": json_leaf,
})


@FUZZ
@given(kind=policy_kind, spec=st.one_of(policy_spec, json_any), meta=st.one_of(
    st.fixed_dictionaries({"name": st.text(min_size=1, max_size=10)}, optional={"namespace": st.text(max_size=5)}),
    json_any))
def test_policy_specs_parse_or_raise_policy_error(kind: tuple[str, str], spec: Any, meta: Any) -> None:
    obj = {"apiVersion": kind[0], "kind": kind[1], "metadata": meta, "spec": spec}
    try:
        pol = parse_policy(obj)
    except PolicyError as e:
        assert str(e)
        good, bad = parse_policies([obj])
        assert good == [] and len(bad) == 1  # the batch parser reports it, and goes on
        return
    # a parsed policy answers its questions without exceptions
    pol.selects_service("default", "x", {"app": "x"})
    pol.selects_node({"kubernetes.io/hostname": "node-1"})
    pol.interface_allowed("enp0s25")
    pol.selects_pool("p", {})


# -- bus messages ------------------------------------------------------------------------------------
SAMPLES: list[messages.Message] = [
    messages.Allocation(key="a/b", namespace="a", name="b", uid="u", generation=1, seq=1, term=1,
                        ips=("198.51.100.1",), ports=(messages.PortSpec("TCP", 80),), labels={"x": "y"},
                        ip_pools={"198.51.100.1": "p"}, pool_labels={"p": {"k": "v"}}),
    messages.AllocationSnapshot(term=1, seq=2, allocations=(
        messages.Allocation(key="a/b", namespace="a", name="b", uid="u", generation=1, seq=1, term=1),)),
    messages.SnapshotRequest(topic="allocations", requester="leases", reason="x"),
    messages.Heartbeat(node="n", instance="i", seq=1, sent_at=1.0, interval_ms=100, labels={"a": "b"},
                       interfaces=(messages.InterfaceInfo("eth0", "02:00:00:00:00:01", True, ("198.51.100.2/24",)),),
                       serving={"198.51.100.1": 3}),
    messages.NodeAssignments(node="n", term=1, seq=1, ttl_ms=1000, sent_at=1.0,
                             vips=(messages.VipAssignment("198.51.100.1", 5, ("eth0",), ("a/b",)),)),
    messages.Conflict(node="n", ip="198.51.100.1", our_mac="a", their_mac="b", interface="eth0", at=1.0),
]


def _paths(o: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(o, dict):
        for k, v in o.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            out += _paths(v, (*prefix, i))
    return out


def _set(o: Any, path: tuple[Any, ...], val: Any) -> Any:
    if not path:
        return val
    o[path[0]] = _set(o[path[0]], path[1:], val)
    return o


@FUZZ
@given(i=st.integers(0, len(SAMPLES) - 1), version=st.one_of(st.integers(-5, 10), st.booleans(), st.floats(),
                                                              st.text(max_size=3), st.none()),
       data=st.data())
def test_every_kind_and_version_with_nested_mutations_only_raises_message_error(
        i: int, version: Any, data: st.DataObject) -> None:
    body = json.loads(messages.encode(SAMPLES[i]))
    body["v"] = version
    path = data.draw(st.sampled_from(_paths(body)[1:]))
    body = _set(body, path, data.draw(json_any))
    raw = json.dumps(body).encode()
    try:
        msg = messages.decode(raw)
    except messages.MessageError as e:
        assert str(e)
        return
    assert body.get("k") == msg.KIND  # what was accepted is the kind it claims to be
    messages.decode(messages.encode(msg))  # and survives a round trip


@FUZZ
@given(i=st.integers(0, len(SAMPLES) - 1), cut=st.integers(0, 400), flips=st.lists(
    st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4))
def test_truncated_and_corrupted_encodings_only_raise_message_error(
        i: int, cut: int, flips: list[tuple[int, int]]) -> None:
    raw = bytearray(messages.encode(SAMPLES[i]))
    for pos, byte in flips:
        if raw:
            raw[pos % len(raw)] = byte
    raw = raw[:cut] if cut < len(raw) else raw
    try:
        messages.decode(bytes(raw))
    except messages.MessageError:
        pass
