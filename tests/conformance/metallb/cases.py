"""MetalLB scenarios, from the facts asserted in MetalLB's own tests.

Sources (read, not copied): ``internal/allocator/allocator_test.go`` (TestAssignment, TestPoolAllocation,
TestAllocation, TestBuggyIPs, TestConfigReload, TestAutoAssign, TestPoolCount, TestPoolMetrics) and
``controller/controller_test.go`` (TestControllerMutation, TestControllerConfig, TestDeleteRecyclesIP,
TestControllerReassign, TestControllerDualStackConfig), with the rules of ``controller/service.go`` and
``internal/allocator/allocator.go`` they exercise.

Translation into static states:

* ``Assign(svc, ips)`` is a Service asking for those IPs with ``metallb.io/loadBalancerIPs``;
  ``AllocateFromPool`` is ``metallb.io/address-pool``; ``Allocate`` is a Service without either. The
  ports/sharing key/backend key given to the allocator become the Service's ports,
  ``metallb.io/allow-shared-ip`` and ``externalTrafficPolicy: Local`` with the selector
  ``app=<backend key>``. The family passed to the allocator becomes ``spec.ipFamilies``; in the
  controller tests the Service's ``clusterIPs`` are kept as they are (MetalLB derives the family from them).
* The state before a step is the Services that hold IPs at that point, with those IPs in their status
  and created earlier. "frees its IP" steps are states without that Service.
* MetalLB's tests let pools overlap (its allocator does not check; its configuration parser and webhook
  refuse overlapping pools). Here each pool has its own addresses; where that changes an IP, the
  case says so. MetalLB walks pools in Go map order, so where more than one pool fits, any of their
  first free addresses is accepted (``alt``).
* Addresses moved to TEST-NET: 1.2.3.x -> 198.51.100.x, 1.2.4.0/24 -> 203.0.113.0/24, the other IPv4
  pools into 192.0.2.0/24 (each case says where), 1000::/16-style IPv6 -> 2001:db8::/32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.conformance.harness import Case, PoolWant, Want, got, ignored, mpool, namespace, refused, svc

__all__ = ["CASES"]

AT = "allocator_test.go"
CT = "controller_test.go"
LBIPS = "metallb.io/loadBalancerIPs"
SHARE = "metallb.io/allow-shared-ip"
POOL = "metallb.io/address-pool"
D = "default/"
V4 = {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}
V6 = {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}
DUAL = {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}
PREFER_DUAL = {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"]}

CASES: list[Case] = []


def add(name: str, source: str, objects: tuple[Any, ...], want: Mapping[str, Want], **kw: Any) -> None:
    CASES.append(Case(name, source, objects, want, reasons=False, **kw))


def alloc_to(**kw: Any) -> dict[str, Any]:
    return {"serviceAllocation": kw}


def backend(key: str) -> dict[str, Any]:
    return {"externalTrafficPolicy": "Local", "selector": {"app": key}}


# ---------------------------------------------------------------------------------------------------
# TestAssignment: Assign() with explicit IPs (metallb.io/loadBalancerIPs)
# "test" 1.2.3.4/31 -> 198.51.100.4/31; "test2" 1.2.4.0/24 (avoidBuggyIPs) -> 203.0.113.0/24;
# "test3".."test6" 1.2.5-8.0/24 -> 192.0.2.0/26, .64/26, .128/26, .192/26 (1.2.N.10 -> the /26's .10)
ASSIGN_POOLS = (
    mpool("test", "198.51.100.4/31", "2001:db8::4/127"),
    mpool("test2", "203.0.113.0/24", "2001:db8::4:0/120", avoidBuggyIPs=True),
    mpool("test3", "192.0.2.0/26", "2001:db8::5:0/120", avoidBuggyIPs=True, **alloc_to(namespaces=["test-ns1"])),
    mpool("test4", "192.0.2.64/26", "2001:db8::6:0/120", avoidBuggyIPs=True,
          **alloc_to(serviceSelectors=[{"matchLabels": {"team": "metallb"}}])),
    mpool("test5", "192.0.2.128/26", "2001:db8::7:0/120", avoidBuggyIPs=True,
          **alloc_to(priority=20, namespaces=["test-ns1"], serviceSelectors=[{"matchLabels": {"team": "metallb"}}])),
    mpool("test6", "192.0.2.192/26", "2001:db8::9:0/120", avoidBuggyIPs=True,
          **alloc_to(priority=20, namespaces=["test-ns2"], serviceSelectors=[{"matchLabels": {"foo": "bar"}}])),
)


def _assign_steps(fam: int) -> None:
    """The IPv4 and the IPv6 half of TestAssignment (same steps, the IPv6 half skips the buggy IPs)."""
    if fam == 4:
        ip1, ip2, other, shared = "198.51.100.4", "198.51.100.5", "203.0.113.254", "203.0.113.3"
        spec, tag, pre = V4, "", ""
    else:
        ip1, ip2, other, shared = "2001:db8::4", "2001:db8::4:5", "2001:db8::4:ff", "2001:db8::4:3"
        spec, tag, pre = V6, "-v6", "ipv6 "
    ip2_desc = "s2 can get the other IP (1000::4:5, in test2)" if fam == 6 else "s2 can get the other IP"

    def s(name: str, *, ips: str | None = None, status: tuple[str, ...] = (), key: str | None = None,
          ports: tuple[str, ...] = (), be: str | None = None) -> dict[str, Any]:
        ann: dict[str, str] = {}
        if ips:
            ann[LBIPS] = ips
        if key:
            ann[SHARE] = key
        return svc(name, ann=ann, status=status, ports=ports, **spec, **(backend(be) if be else {}))

    P = ASSIGN_POOLS
    src = f"{AT} TestAssignment: "
    add(f"assign-s1{tag}", src + f'"{pre}assign s1"', (*P, s("s1", ips=ip1)), {D + "s1": got(ip1)})
    add(f"assign-idempotent{tag}", src + '"s1 idempotent reassign"', (*P, s("s1", ips=ip1, status=(ip1,))),
        {D + "s1": got(ip1)})
    add(f"assign-taken{tag}", src + "\"s2 can't grab s1's IP\"",
        (*P, s("s1", ips=ip1, status=(ip1,)), s("s2", ips=ip1)), {D + "s1": got(ip1), D + "s2": refused()})
    add(f"assign-other-ip{tag}", src + f'"{ip2_desc}"',
        (*P, s("s1", ips=ip1, status=(ip1,)), s("s2", ips=ip2)), {D + "s1": got(ip1), D + "s2": got(ip2)})
    add(f"assign-taken-back{tag}", src + "\"s1 now can't grab s2's IP\"",
        (*P, s("s2", ips=ip2, status=(ip2,)), s("s1", ips=ip2, status=(ip1,))),
        {D + "s2": got(ip2), D + "s1": refused()})
    add(f"assign-freed{tag}", src + "\"s1 frees its IP\" + \"s2 can grab s1's former IP\"",
        (*P, s("s2", ips=ip1, status=(ip2,))), {D + "s2": got(ip1)},
        pools={"test": PoolWant(used=1)} if fam == 4 else {})
    add(f"assign-former{tag}", src + "\"s1 can now grab s2's former IP\"",
        (*P, s("s2", ips=ip1, status=(ip1,)), s("s1", ips=ip2)), {D + "s2": got(ip1), D + "s1": got(ip2)})
    if fam == 4:
        add("assign-buggy-0", src + '"s3 cannot grab a 0 buggy IP"', (*P, s("s3", ips="203.0.113.0")),
            {D + "s3": refused()})
        add("assign-buggy-255", src + '"s3 cannot grab a 255 buggy IP"', (*P, s("s3", ips="203.0.113.255")),
            {D + "s3": refused()})
    add(f"assign-other-in-pool{tag}", src + '"s3 can grab another IP in that pool"', (*P, s("s3", ips=other)),
        {D + "s3": got(other)})
    add(f"assign-with-sharing{tag}", src + '"s4 takes an IP, with sharing"',
        (*P, s("s4", ips=shared, key="sharing", ports=("TCP/80",), be="backend")), {D + "s4": got(shared)})
    add(f"assign-key-changed-in-place{tag}", src + '"s4 changes its sharing key in place"',
        (*P, s("s4", ips=shared, status=(shared,), key="share", ports=("TCP/80",), be="backend")),
        {D + "s4": got(shared)})
    s4 = s("s4", ips=shared, status=(shared,), key="share", ports=("TCP/80",), be="backend")
    add(f"assign-share-port-conflict{tag}", src + "\"s3 can't share with s4 (port conflict)\"",
        (*P, s4, s("s3", ips=shared, key="share", ports=("TCP/80",), be="backend")),
        {D + "s4": got(shared), D + "s3": refused()})
    add(f"assign-share-wrong-key{tag}", src + "\"s3 can't share with s4 (wrong sharing key)\"",
        (*P, s4, s("s3", ips=shared, key="othershare", ports=("TCP/443",), be="backend")),
        {D + "s4": got(shared), D + "s3": refused()})
    add(f"assign-share-wrong-backend{tag}", src + "\"s3 can't share with s4 (wrong backend key)\"",
        (*P, s4, s("s3", ips=shared, key="share", ports=("TCP/443",), be="otherbackend")),
        {D + "s4": got(shared), D + "s3": refused()})
    add(f"assign-share{tag}", src + '"s3 takes the same IP as s4"',
        (*P, s4, s("s3", ips=shared, key="share", ports=("TCP/443",), be="backend")),
        {D + "s4": got(shared), D + "s3": got(shared)},
        pools={"test2": PoolWant(used=1)} if fam == 4 else {})
    add(f"assign-share-new-ports{tag}", src + '"s3 can change its ports while keeping the same IP"',
        (*P, s4, s("s3", ips=shared, status=(shared,), key="share", ports=("UDP/53",), be="backend")),
        {D + "s4": got(shared), D + "s3": got(shared)})
    add(f"assign-share-key-locked{tag}", src + "\"s3 can't change its sharing key while keeping the same IP\"",
        (*P, s4, s("s3", ips=shared, status=(shared,), key="othershare", ports=("TCP/443",), be="backend")),
        {D + "s4": got(shared), D + "s3": refused()})
    add(f"assign-share-backend-locked{tag}", src + "\"s3 can't change its backend key while keeping the same IP\"",
        (*P, s4, s("s3", ips=shared, status=(shared,), key="share", ports=("TCP/443",), be="otherbackend")),
        {D + "s4": got(shared), D + "s3": refused()})
    add(f"assign-takes-former{tag}", src + "\"s4 takes s3's former IP\"",
        (*P, s("s3", ips=shared, status=(shared,), key="share", ports=("UDP/53",), be="backend"),
         s("s4", ips=other, status=(shared,), key="share", ports=("TCP/80",), be="backend")),
        {D + "s3": got(shared), D + "s4": got(other)})


_assign_steps(4)
_assign_steps(6)

_src = f"{AT} TestAssignment: "
add("assign-dual-stack", _src + '"ip dual-stack assign s1"',
    (*ASSIGN_POOLS, svc("s1", ann={LBIPS: "198.51.100.4,2001:db8::4"}, **DUAL)),
    {D + "s1": got("198.51.100.4", "2001:db8::4")})
add("assign-dual-stack-two-pools", _src + '"ip dual-stack assign s1 from different pools"',
    (*ASSIGN_POOLS, svc("s1", ann={LBIPS: "203.0.113.5,2001:db8::4"}, **DUAL)), {D + "s1": refused()})
add("assign-pinned-namespace", _src + '"attempt to assign ip from pool pinned on same namespace"',
    (*ASSIGN_POOLS, svc("s1", "test-ns1", ann={LBIPS: "192.0.2.10"}, ports=["TCP/8080"])),
    {"test-ns1/s1": got("192.0.2.10")})
add("assign-pinned-other-namespace", _src + '"attempt to assign ip from pool pinned on different namespace"',
    (*ASSIGN_POOLS, svc("s1", "testns-not-exist", ann={LBIPS: "192.0.2.10"}, ports=["TCP/8080"])),
    {"testns-not-exist/s1": refused()})
add("assign-pinned-label", _src + '"attempt to assign ip from pool pinned with same service label"',
    (*ASSIGN_POOLS, svc("s1", "testns-not-exist", labels={"team": "metallb"}, ann={LBIPS: "192.0.2.74"},
                        ports=["TCP/8080"], selector={"team": "metallb"})),
    {"testns-not-exist/s1": got("192.0.2.74")})
add("assign-pinned-other-label", _src + '"attempt to assign ip from pool pinned with different service label"',
    (*ASSIGN_POOLS, svc("s1", "testns-not-exist", labels={"team": "red"}, ann={LBIPS: "192.0.2.74"},
                        ports=["TCP/8080"], selector={"team": "red"})),
    {"testns-not-exist/s1": refused()})
add("assign-pinned-namespace-and-label", _src + '"attempt to assign ip from pool pinned with namespace and '
    'service label"',
    (*ASSIGN_POOLS, svc("s1", "test-ns1", labels={"team": "metallb"}, ann={LBIPS: "192.0.2.138"},
                        ports=["TCP/8080"], selector={"team": "metallb"})),
    {"test-ns1/s1": got("192.0.2.138")})
add("assign-pinned-namespace-wrong-label", _src + '"attempt to assign ip from pool pinned with namespace and '
    'incompatible service label"',
    (*ASSIGN_POOLS, svc("s1", "test-ns2", labels={"team": "metallb"}, ann={LBIPS: "192.0.2.202"},
                        ports=["TCP/8080"], selector={"team": "metallb"})),
    {"test-ns2/s1": refused()})
add("assign-pinned-label-wrong-namespace", _src + '"attempt to assign ip from pool pinned with service label '
    'and incompatible namespace"',
    (*ASSIGN_POOLS, svc("s1", "testns-not-exist", labels={"foo": "bar"}, ann={LBIPS: "192.0.2.202"},
                        ports=["TCP/8080"], selector={"foo": "bar"})),
    {"testns-not-exist/s1": refused()})
add("assign-share-across-namespaces", _src + '"s3 takes the same IP as s4" with s3 in another namespace '
    "(the allocator's sharing check ignores namespaces)",
    (*ASSIGN_POOLS, svc("s4", ann={LBIPS: "203.0.113.3", SHARE: "share"}, ports=["TCP/80"], status=["203.0.113.3"],
                        **V4),
     svc("s3", "other-ns", ann={LBIPS: "203.0.113.3", SHARE: "share"}, ports=["TCP/443"], **V4)),
    {D + "s4": got("203.0.113.3"), "other-ns/s3": got("203.0.113.3")})
add("auto-share-across-namespaces", f"{AT} TestAllocation: \"s6 can get an IPv4 with sharing\" with s6 in another "
    "namespace (allow-shared-ip works across namespaces)",
    (mpool("test1", "198.51.100.4/32"),
     svc("s5", ann={SHARE: "share"}, ports=["TCP/80"], status=["198.51.100.4"], **V4),
     svc("s6", "other-ns", ann={SHARE: "share"}, ports=["TCP/443"], **V4)),
    {D + "s5": got("198.51.100.4"), "other-ns/s6": got("198.51.100.4")})
add("namespace-selector-matching-nothing", _src + '"attempt to assign ip from pool pinned on different namespace" '
    "with the pool pinned by a namespaceSelector that matches no namespace (config.go then leaves the pool "
    "without namespaces, and Assign treats it as unrestricted)",
    (mpool("sel", "192.0.2.0/26", **alloc_to(namespaceSelectors=[{"matchLabels": {"team": "x"}}])),
     namespace("elsewhere"), svc("s1", "elsewhere", ann={LBIPS: "192.0.2.10"}, **V4)),
    {"elsewhere/s1": got("192.0.2.10")},
    l2lb={"elsewhere/s1": refused("pool_selector_mismatch")},
    differs="a pool restricted by namespaceSelectors serves only namespaces that match, also while none does "
            "(MetalLB then lets every namespace request its IPs)")

# ---------------------------------------------------------------------------------------------------
# TestPoolAllocation: AllocateFromPool() (metallb.io/address-pool). The anchor's pools test-v4, test-v6
# and test-dualstack repeat "test"'s addresses; here they have their own.
PA_POOLS = (
    mpool("not-this-one", "192.0.2.0/24", "2001:db8:fc00::1:0/112"),  # "not_this_one": no valid object name
    mpool("test", "198.51.100.4/31", "198.51.100.10/31", "2001:db8:1000::/127", "2001:db8:2000::/127"),
    mpool("test2", "203.0.113.0/24", "2001:db8:fc00::2:0/120"),
    mpool("test-v4", "198.51.100.20/31", "198.51.100.30/31"),
    mpool("test-v6", "2001:db8:1000::10/127", "2001:db8:2000::10/127"),
    mpool("test-dualstack", "198.51.100.40/31", "198.51.100.50/31", "2001:db8:1000::20/127",
          "2001:db8:2000::20/127"),
)
V4_IPS = ("198.51.100.4", "198.51.100.5", "198.51.100.10", "198.51.100.11")
V6_IPS = ("2001:db8:1000::", "2001:db8:1000::1", "2001:db8:2000::", "2001:db8:2000::1")
_src = f"{AT} TestPoolAllocation: "


def _from_pool(name: str, pool: str, fam: dict[str, Any], **kw: Any) -> dict[str, Any]:
    ann = {POOL: pool, **kw.pop("ann", {})}
    return svc(name, ann=ann, **fam, **kw)


for _fam, _ips, _label in ((V4, V4_IPS, "IPv4"), (V6, V6_IPS, "IP6")):
    _t = _label.lower()
    add(f"pool-{_t}-fills", _src + f'"s1".."s4 gets an {_label}", "s5 can\'t get an {_label}", '
        f'"s6 can\'t get an {_label}"',
        (*PA_POOLS, *(_from_pool(f"s{i}", "test", _fam) for i in range(1, 7))),
        {**{f"{D}s{i}": got(_ips[i - 1]) for i in range(1, 5)}, D + "s5": refused(), D + "s6": refused()},
        pools={"test": PoolWant(used=4)})
    _held = tuple(_from_pool(f"s{i}", "test", _fam, status=[_ips[i - 1]]) for i in range(2, 5))
    add(f"pool-{_t}-former", _src + f'"s1 releases its {_label}", "s5 can now grab s1\'s former {_label}", '
        f'"s6 still can\'t get an {_label}"',
        (*PA_POOLS, *_held, _from_pool("s5", "test", _fam), _from_pool("s6", "test", _fam)),
        {D + "s5": got(_ips[0]), D + "s6": refused()})
    add(f"pool-{_t}-sharing", _src + f'"s5 enables {_label} sharing", "s6 can get an {_label} now, with sharing"',
        (*PA_POOLS, *_held, _from_pool("s5", "test", _fam, ann={SHARE: "share"}, ports=["TCP/80"]),
         _from_pool("s6", "test", _fam, ann={SHARE: "share"}, ports=["TCP/443"])),
        {D + "s5": got(_ips[0]), D + "s6": got(_ips[0])})

add("pool-dual-fills", _src + '"s1".."s4 gets dual-stack IPs", "s5 can\'t", "s6 can\'t" (RequireDualStack)',
    (*PA_POOLS, *(_from_pool(f"s{i}", "test", DUAL) for i in range(1, 7))),
    {**{f"{D}s{i}": got(V4_IPS[i - 1], V6_IPS[i - 1]) for i in range(1, 5)}, D + "s5": refused(),
     D + "s6": refused()})
_held = tuple(_from_pool(f"s{i}", "test", DUAL, status=[V4_IPS[i - 1], V6_IPS[i - 1]]) for i in range(2, 5))
add("pool-dual-former", _src + '"s1 releases its dual-stack IPs", "s5 can now grab s1\'s former dual-stack IPs", '
    '"s6 still can\'t"',
    (*PA_POOLS, *_held, _from_pool("s5", "test", DUAL), _from_pool("s6", "test", DUAL)),
    {D + "s5": got(V4_IPS[0], V6_IPS[0]), D + "s6": refused()})
add("pool-dual-sharing", _src + '"s5 enables dual-stack IP sharing", "s6 can get an dual-stack IPs now, with sharing"',
    (*PA_POOLS, *_held, _from_pool("s5", "test", DUAL, ann={SHARE: "share"}, ports=["TCP/80"]),
     _from_pool("s6", "test", DUAL, ann={SHARE: "share"}, ports=["TCP/443"])),
    {D + "s5": got(V4_IPS[0], V6_IPS[0]), D + "s6": got(V4_IPS[0], V6_IPS[0])})
add("pool-prefer-dual", _src + '"s1 gets dual-stack IPs" (PreferDualStack)',
    (*PA_POOLS, _from_pool("s1", "test", PREFER_DUAL)), {D + "s1": got(V4_IPS[0], V6_IPS[0])})
add("pool-prefer-dual-v4-pool", _src + '"s2 gets ipv4 IP" (PreferDualStack, test-v4)',
    (*PA_POOLS, _from_pool("s2", "test-v4", {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4"]})),
    {D + "s2": got("198.51.100.20")})
add("pool-prefer-dual-v6-pool", _src + '"s3 gets ipv6 IP" (PreferDualStack, test-v6)',
    (*PA_POOLS, _from_pool("s3", "test-v6", {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6"]})),
    {D + "s3": got("2001:db8:1000::10")})
add("pool-prefer-dual-moved-pool", _src + '"s3 gets dualstack" (test-dualstack; its test-v6 IP is from another '
    "pool, so the controller lets it go)",
    (*PA_POOLS, _from_pool("s3", "test-dualstack", PREFER_DUAL, status=["2001:db8:1000::10"])),
    {D + "s3": got("198.51.100.40", "2001:db8:1000::20")})
add("pool-nonexistent", _src + "AllocateFromPool(\"nonexistentpool\") fails",
    (*PA_POOLS, _from_pool("s5", "nonexistentpool", V4)), {D + "s5": refused()})

# ---------------------------------------------------------------------------------------------------
# TestAllocation: Allocate() over two pools (Go map order: either pool first)
AL_POOLS = (mpool("test1", "198.51.100.4/31", "2001:db8::4/127"), mpool("test2", "198.51.100.10/31",
                                                                        "2001:db8::10/127"))
_src = f"{AT} TestAllocation: "
for _fam, _ips, _label in ((V4, ("198.51.100.4", "198.51.100.5", "198.51.100.10", "198.51.100.11"), "IPv4"),
                           (V6, ("2001:db8::4", "2001:db8::5", "2001:db8::10", "2001:db8::11"), "IPv6")):
    _t = _label.lower()
    add(f"alloc-{_t}-fills", _src + f'"s1".."s4 gets an {_label}", "s5 can\'t get an {_label}", '
        f'"s6 can\'t get an {_label}"',
        (*AL_POOLS, *(svc(f"s{i}", **_fam) for i in range(1, 7))),
        {**{f"{D}s{i}": got(_ips[i - 1], alt=[(x,) for x in _ips if x != _ips[i - 1]]) for i in range(1, 5)},
         D + "s5": refused(), D + "s6": refused()},
        pools={"test1": PoolWant(used=2), "test2": PoolWant(used=2)})
    _held = tuple(svc(f"s{i}", status=[_ips[i - 1]], **_fam) for i in range(2, 5))
    add(f"alloc-{_t}-former", _src + f'"s1 gives up its {_label}", "s5 can now get an {_label}", '
        f'"s6 still can\'t get an {_label}"',
        (*AL_POOLS, *_held, svc("s5", **_fam), svc("s6", **_fam)),
        {D + "s5": got(_ips[0]), D + "s6": refused()})
    add(f"alloc-{_t}-sharing", _src + f'"s6 can get an {_label} with sharing"',
        (*AL_POOLS, *_held, svc("s5", ann={SHARE: "share"}, ports=["TCP/80"], status=[_ips[0]], **_fam),
         svc("s6", ann={SHARE: "share"}, ports=["TCP/443"], **_fam)),
        {D + "s5": got(_ips[0]), D + "s6": got(_ips[0])})
_pairs = [("198.51.100.4", "2001:db8::4"), ("198.51.100.5", "2001:db8::5"), ("198.51.100.10", "2001:db8::10"),
          ("198.51.100.11", "2001:db8::11")]
add("alloc-dual-fills", _src + '"s1".."s4 gets dual-stack IPs" (both from one pool), "s5 can\'t", "s6 can\'t"',
    (*AL_POOLS, *(svc(f"s{i}", **DUAL) for i in range(1, 7))),
    {**{f"{D}s{i}": got(*_pairs[i - 1], alt=[p for p in _pairs if p != _pairs[i - 1]]) for i in range(1, 5)},
     D + "s5": refused(), D + "s6": refused()})
_held = tuple(svc(f"s{i}", status=_pairs[i - 1], **DUAL) for i in range(2, 5))
add("alloc-dual-former", _src + '"s1 gives up its IPs", "s5 can now get dual-stack IPs", "s6 still can\'t"',
    (*AL_POOLS, *_held, svc("s5", **DUAL), svc("s6", **DUAL)), {D + "s5": got(*_pairs[0]), D + "s6": refused()})
add("alloc-dual-sharing", _src + '"s6 can get dual-stack IPs with sharing"',
    (*AL_POOLS, *_held, svc("s5", ann={SHARE: "share"}, ports=["TCP/80"], status=_pairs[0], **DUAL),
     svc("s6", ann={SHARE: "share"}, ports=["TCP/443"], **DUAL)),
    {D + "s5": got(*_pairs[0]), D + "s6": got(*_pairs[0])})

# ---------------------------------------------------------------------------------------------------
_buggy_ok = ("198.51.100.0", "198.51.100.1", "198.51.100.254", "198.51.100.255", "203.0.113.1", "203.0.113.254")
add("buggy-ips", f"{AT} TestBuggyIPs: six Services get the six allowed IPs (avoidBuggyIPs pools skip .0 and .255), "
    "the seventh none",
    (mpool("test", "198.51.100.0/31"), mpool("test2", "198.51.100.254/31"),
     mpool("test3", "203.0.113.0/31", avoidBuggyIPs=True), mpool("test4", "203.0.113.254/31", avoidBuggyIPs=True),
     *(svc(f"s{i}", **V4) for i in range(1, 8))),
    {**{f"{D}s{i}": got(_buggy_ok[i - 1], alt=[(x,) for x in _buggy_ok if x != _buggy_ok[i - 1]])
        for i in range(1, 7)}, D + "s7": refused()},
    pools={"test3": PoolWant(total=1), "test4": PoolWant(total=1)})

# ---------------------------------------------------------------------------------------------------
# TestConfigReload: s1 holds 1.2.3.0 (-> 198.51.100.0), s2 1000:: (-> 2001:db8::); a new configuration.
# Where the allocator drops an allocation ("" pool), the controller then allocates afresh.
_src = f"{AT} TestConfigReload: "


def _reload(name: str, step: str, config: tuple[Any, ...], s1: Want, s2: Want, **kw: Any) -> None:
    add(name, _src + f'"{step}"',
        (*config, svc("s1", status=["198.51.100.0"], **V4), svc("s2", status=["2001:db8::"], **V6)),
        {D + "s1": s1, D + "s2": s2}, **kw)


_reload("reload-same", "set same config is no-op",
        (mpool("test", "198.51.100.0/30", "2001:db8::/126"), mpool("unused", "203.0.113.0/30", "2001:db8:1::/126")),
        got("198.51.100.0"), got("2001:db8::"), pools={"test": PoolWant(used=2)})
_reload("reload-expand", "expand pool", (mpool("test", "198.51.100.0/24", "2001:db8::/120"),),
        got("198.51.100.0"), got("2001:db8::"), pools={"test": PoolWant(used=2)})
_reload("reload-shrink", "shrink pool", (mpool("test", "198.51.100.0/30", "2001:db8::/126"),),
        got("198.51.100.0"), got("2001:db8::"), pools={"test": PoolWant(used=2)})
_reload("reload-shrink-out-v4", "can't shrink further, removing the service allocation",
        (mpool("test", "198.51.100.2/31", "2001:db8::/126"),), got("198.51.100.2"), got("2001:db8::"))
_reload("reload-shrink-out-v6", "can't shrink further ipv6, removing the service allocation",
        (mpool("test", "198.51.100.0/30", "2001:db8::2/127"),), got("198.51.100.0"), got("2001:db8::2"))
_reload("reload-rename", "rename the pool", (mpool("test2", "198.51.100.0/30", "2001:db8::/126"),),
        got("198.51.100.0"), got("2001:db8::"), pools={"test2": PoolWant(used=2)})
_reload("reload-split", "split pool",
        (mpool("test", "198.51.100.0/31", "2001:db8::2/127"), mpool("test2", "198.51.100.2/31", "2001:db8::/127")),
        got("198.51.100.0"), got("2001:db8::"), pools={"test": PoolWant(used=1), "test2": PoolWant(used=1)})
_reload("reload-buggy", "enable buggy IPs not allowed",
        (mpool("test2", "198.51.100.0/31", "2001:db8::/127", avoidBuggyIPs=True),),
        got("198.51.100.1"), got("2001:db8::"))

# ---------------------------------------------------------------------------------------------------
AA_POOLS = (mpool("test1", "198.51.100.4/31", "2001:db8::4/127", autoAssign=False),
            mpool("test2", "198.51.100.10/31", "2001:db8::10/127"))
_src = f"{AT} TestAutoAssign: "
for _fam, _a, _b, _label in ((V4, ("198.51.100.10",), ("198.51.100.11",), "ipv4"),
                             (V6, ("2001:db8::10",), ("2001:db8::11",), "ipv6"),
                             (DUAL, ("198.51.100.10", "2001:db8::10"), ("198.51.100.11", "2001:db8::11"), "dual")):
    add(f"auto-assign-{_label}", _src + f"{_label}: s1 and s2 get test2's addresses, never test1's "
        "(autoAssign false); s3..s5 get nothing",
        (*AA_POOLS, *(svc(f"s{i}", **_fam) for i in range(1, 6))),
        {D + "s1": got(*_a), D + "s2": got(*_b), D + "s3": refused(), D + "s4": refused(), D + "s5": refused()})

# ---------------------------------------------------------------------------------------------------
_src = f"{AT} TestPoolCount: "
add("count-24", _src + '"BGP /24"', (mpool("p", "198.51.100.0/24"),), {}, pools={"p": PoolWant(total=256)})
add("count-24-25", _src + '"BGP /24 and /25"', (mpool("p", "198.51.100.0/24", "203.0.113.128/25"),), {},
    pools={"p": PoolWant(total=384)})
add("count-buggy", _src + '"BGP /24 and /25, no buggy IPs"',
    (mpool("p", "198.51.100.0/24", "203.0.113.128/25", avoidBuggyIPs=True),), {}, pools={"p": PoolWant(total=381)})
add("count-big-ipv6", _src + '"BGP a BIG ipv6 range": the count saturates at MaxInt64',
    (mpool("p", "198.51.100.0/24", "203.0.113.128/25", "2001:db8::/64", avoidBuggyIPs=True),), {},
    pools={"p": PoolWant(total=2**63 - 1)}, l2lb_pools={"p": PoolWant(total=2**64 + 381)},
    differs="pool sizes are exact integers (JSON numbers), also beyond 2**63")
add("count-dual-buggy", _src + '"ipv4 and ipv6 range"',
    (mpool("p", "198.51.100.0/31", "2001:db8::/127", avoidBuggyIPs=True),), {}, pools={"p": PoolWant(total=3)})

_src = f"{AT} TestPoolMetrics: "
PM_POOL = mpool("test", "198.51.100.4/30", "2001:db8::4/126")
add("metrics-capacity", _src + "capacity of 1.2.3.4/30 + 1000::4/126 is 8", (PM_POOL,), {},
    pools={"test": PoolWant(total=8, used=0)})
add("metrics-one", _src + '"assign s1"', (PM_POOL, svc("s1", ann={LBIPS: "198.51.100.4"}, **V4)),
    {D + "s1": got("198.51.100.4")}, pools={"test": PoolWant(used=1)})
add("metrics-two", _src + '"assign s2"',
    (PM_POOL, svc("s1", ann={LBIPS: "198.51.100.4"}, status=["198.51.100.4"], **V4),
     svc("s2", ann={LBIPS: "198.51.100.5"}, **V4)),
    {D + "s2": got("198.51.100.5")}, pools={"test": PoolWant(used=2)})
add("metrics-shared", _src + '"assign s1 shared", "assign s2 shared", "assign s3 shared": one IP in use',
    (PM_POOL, *(svc(f"s{i}", ann={LBIPS: "198.51.100.4", SHARE: "key"}, ports=[f"TCP/{p}"], **V4)
                for i, p in ((1, 80), (2, 443), (3, 23)))),
    {f"{D}s{i}": got("198.51.100.4") for i in (1, 2, 3)}, pools={"test": PoolWant(used=1)})

# ---------------------------------------------------------------------------------------------------
# TestControllerMutation: one Service "test", its steady state for each input. Pools re-addressed:
# pool1 1.2.3.0/31 -> 198.51.100.0/31, pool2 3.4.5.6/32 -> 203.0.113.6/32, pool3 1000::/127 ->
# 2001:db8:1000::/127, pool4 2000::1/128 -> 2001:db8:2000::1/128, pool5 (in MetalLB the same addresses
# as pool1 + pool3) -> 198.51.100.2/31 + 2001:db8:1000::2/127, pool6..pool12 -> 192.0.2.0/31, .10/31 ...
# .60/31; clusterIPs 1.2.3.4 -> 10.96.0.4, 3000::1 -> fd00::1.
_team = [{"matchLabels": {"team": "metallb"}}]
MUT_POOLS = (
    mpool("pool1", "198.51.100.0/31"),
    mpool("pool2", "203.0.113.6/32", autoAssign=False),
    mpool("pool3", "2001:db8:1000::/127"),
    mpool("pool4", "2001:db8:2000::1/128", autoAssign=False),
    mpool("pool5", "198.51.100.2/31", "2001:db8:1000::2/127"),
    mpool("pool6", "192.0.2.0/31", **alloc_to(namespaces=["test-ns1"], priority=10)),
    mpool("pool7", "192.0.2.10/31", **alloc_to(namespaces=["test-ns1"], priority=11)),
    mpool("pool8", "192.0.2.20/31", **alloc_to(serviceSelectors=_team, priority=9)),
    mpool("pool9", "192.0.2.30/31", **alloc_to(namespaces=["test-ns2"])),
    mpool("pool10", "192.0.2.40/31", **alloc_to(serviceSelectors=_team, priority=8)),
    mpool("pool11", "192.0.2.50/31", **alloc_to(namespaces=["test-ns1"], serviceSelectors=_team, priority=8)),
    mpool("pool12", "192.0.2.60/31", **alloc_to(namespaces=["test-ns1"], serviceSelectors=_team, priority=5)),
)
C4 = ["10.96.0.4"]
C6 = ["fd00::1"]
C46 = ["10.96.0.4", "fd00::1"]
V4_FIRST = got("198.51.100.0", alt=[("198.51.100.2",)])  # pool1 or pool5, in map order
V6_FIRST = got("2001:db8:1000::", alt=[("2001:db8:1000::2",)])  # pool3 or pool5
DUAL_POOL5 = got("198.51.100.2", "2001:db8:1000::2")
T = D + "test"


def mut(step: str, want: Want, *, ns: str = "default", name: str | None = None, **kw: Any) -> None:
    name = name or "ctl-" + "".join(c if c.isalnum() else "-" for c in step.lower()).strip("-")
    while "--" in name:
        name = name.replace("--", "-")
    name = name[:72].rstrip("-")
    status = kw.pop("status", ())
    raw_status = kw.pop("raw_status", None)
    differs = kw.pop("differs", "")
    l2lb = kw.pop("l2lb", None)
    s = svc("test", ns, status=status, **kw)
    if raw_status is not None:
        s["status"] = raw_status
    add(name, f'{CT} TestControllerMutation: "{step}"', (*MUT_POOLS, s), {f"{ns}/test": want},
        **({"differs": differs, "l2lb": {f"{ns}/test": l2lb}} if differs else {}))


mut("simple non-LoadBalancer", ignored(), type="ClusterIP", clusterIPs=C4)
mut("simple LoadBalancer", V4_FIRST, clusterIPs=C4)
mut("request specific IP", got("198.51.100.1"), clusterIPs=C4, loadBalancerIP="198.51.100.1")
mut("request specific IP via custom annotation", got("198.51.100.1"), clusterIPs=C4, ann={LBIPS: "198.51.100.1"})
mut("request IP from both svc.spec.LoadBalancerIP and custom annotation", refused("invalid_request"),
    clusterIPs=C4, ann={LBIPS: "198.51.100.1"}, loadBalancerIP="198.51.100.2")
mut("request IP from both svc.spec.LoadBalancerIP and custom annotation, the same IP (service.go refuses both "
    "whatever their values)", refused("invalid_request"), clusterIPs=C4, ann={LBIPS: "198.51.100.1"},
    loadBalancerIP="198.51.100.1")
mut("request invalid IP", refused("invalid_request"), clusterIPs=C4,
    loadBalancerIP="please sir may I have an IP address thank you")
mut("incompatible ip and address pool annotations", refused(), clusterIPs=C4,
    ann={LBIPS: "198.51.100.1", POOL: "pool2"})
mut("request invalid IP via custom annotation", refused("invalid_request"), clusterIPs=C4,
    ann={LBIPS: "please sir may I have an IP address thank you"})
mut("request two IPs from same ip family via custom annotation", refused("invalid_request"), clusterIPs=C4,
    ann={LBIPS: "198.51.100.1,198.51.100.0"})
mut("request infeasible IP", refused(), clusterIPs=C4, loadBalancerIP="198.51.100.4", status=["198.51.100.1"])
mut("request IP from specific pool", got("198.51.100.0"), clusterIPs=C4, ann={POOL: "pool1"})
mut("switch to a different specific pool", got("203.0.113.6"), clusterIPs=C4, ann={POOL: "pool2"},
    status=["198.51.100.0"])
mut("unknown pool requested", refused("no_pool"), clusterIPs=C4, ann={POOL: "does-not-exist"})
mut("invalid IP assigned", V4_FIRST, clusterIPs=C4, status=["192.0.2.200"])
mut("invalid ingress state", V4_FIRST, clusterIPs=C4,
    raw_status={"loadBalancer": {"ingress": [{"hostname": "foo.bar.local"}, {"ip": "192.0.2.201"}]}})
mut("former LoadBalancer, now NodePort", ignored(), type="NodePort", clusterIPs=C4, status=["198.51.100.0"])
mut("request layer2 service", got("203.0.113.6"), clusterIPs=C4, loadBalancerIP="203.0.113.6")
mut("Layer2 service with local traffic policy", got("203.0.113.6"), clusterIPs=C4, loadBalancerIP="203.0.113.6",
    externalTrafficPolicy="Local")
mut("No ClusterIP", refused(),
    differs="l2lb does not need spec.clusterIPs (the API server always sets them; YAML written by hand has "
            "none): families come from ipFamilies/ipFamilyPolicy, IPv4 when neither says",
    l2lb=got("198.51.100.0"))
mut("request IP from wrong ip-family (ipv4)", refused("invalid_request"), clusterIPs=C6,
    loadBalancerIP="198.51.100.1")
mut("request IP from wrong ip-family (ipv4) via custom annotation", refused("invalid_request"), clusterIPs=C6,
    ann={LBIPS: "198.51.100.1"})
mut("request IP from wrong ip-family (ipv6)", refused("invalid_request"), clusterIPs=C4,
    loadBalancerIP="2001:db8:1000::")
mut("request IP from wrong ip-family (ipv6) via custom annotation", refused("invalid_request"), clusterIPs=C4,
    ann={LBIPS: "2001:db8:1000::"})
mut("IP from wrong ip-family (ipv6) assigned", V4_FIRST, clusterIPs=C4, status=["2001:db8:1000::"])
mut("IP from wrong ip-family (ipv4) assigned", V6_FIRST, clusterIPs=C6, status=["198.51.100.0"])
mut("simple dual-stack LoadBalancer", DUAL_POOL5, clusterIPs=C46, ipFamilyPolicy="RequireDualStack")
mut("request IPs from specific pool", DUAL_POOL5, clusterIPs=C46, ipFamilyPolicy="RequireDualStack",
    ann={POOL: "pool5"})
mut("simple dual-stack LoadBalancer with PreferDualStack policy", DUAL_POOL5, clusterIPs=C46,
    ipFamilyPolicy="PreferDualStack")
mut("single-stack LoadBalancer with PreferDualStack policy", got("192.0.2.0"), ns="test-ns1", clusterIPs=C4,
    ipFamilyPolicy="PreferDualStack")
mut("request IPs from dualstack pool with PreferDualStack policy", DUAL_POOL5, clusterIPs=C46,
    ipFamilyPolicy="PreferDualStack", ann={POOL: "pool5"})
mut("request IP from single-stack ipv4 pool with PreferDualStack policy", got("198.51.100.0"), clusterIPs=C46,
    ipFamilyPolicy="PreferDualStack", ann={POOL: "pool1"})
mut("request IP from single-stack ipv6 pool with PreferDualStack policy", got("2001:db8:1000::"), clusterIPs=C6,
    ipFamilyPolicy="PreferDualStack", ann={POOL: "pool3"})
mut("request IPs from dualstack pool with PreferDualStack policy but single stack clusterip", got("198.51.100.2"),
    clusterIPs=C4, ipFamilyPolicy="PreferDualStack", ann={POOL: "pool5"})
mut("request IPs from dualstack pool with PreferDualStack policy but single stack clusterip, with "
    "spec.ipFamilies [IPv4] instead of clusterIPs", got("198.51.100.2"), name="ctl-prefer-dual-ipfamilies-ipv4-only",
    ipFamilies=["IPv4"], ipFamilyPolicy="PreferDualStack", ann={POOL: "pool5"})
mut("request IPs from dualstack pool with RequireDualStack policy but single stack clusterip", refused(),
    clusterIPs=C4, ipFamilyPolicy="RequireDualStack", ann={POOL: "pool5"})
mut("request specific loadbalancer IP with dual-stack", refused("invalid_request"), clusterIPs=C46,
    loadBalancerIP="198.51.100.1")
mut("request specific loadbalancer IPv4 address via custom annotation for dual-stack config",
    refused("invalid_request"), clusterIPs=C46, ann={LBIPS: "198.51.100.1"})
mut("request dual-stack loadbalancer IPs via custom annotation", DUAL_POOL5, clusterIPs=C46,
    ipFamilyPolicy="RequireDualStack", ann={LBIPS: "198.51.100.2,2001:db8:1000::2"})
mut("request dual-stack loadbalancer IPs via custom annotation, the two IPs in two pools (Assign: all in one "
    "pool)", refused(), clusterIPs=C46, ipFamilyPolicy="RequireDualStack",
    ann={LBIPS: "198.51.100.0,2001:db8:1000::"})
mut("request dual-stack loadbalancer with invalid ingress", DUAL_POOL5, clusterIPs=["fd00::1", "10.96.0.4"],
    ipFamilyPolicy="RequireDualStack",
    raw_status={"loadBalancer": {"ingress": [{"hostname": "foo.bar.local"}, {"ip": "2001:db8:1000::"}]}})
mut("request dual-stack loadbalancer IPs via custom annotation in a single stack cluster", refused(),
    clusterIP="10.96.0.4", ann={LBIPS: "198.51.100.2,2001:db8:1000::2"})
mut("request IP for service from namespace specific ip pool", got("192.0.2.0"), ns="test-ns1", clusterIPs=C4)
mut("request IP for service from no priority namespace specific ip pool", got("192.0.2.30"), ns="test-ns2",
    clusterIPs=C4)
mut("request IP for service from service label specific ip pool", got("192.0.2.40"), labels={"team": "metallb"},
    clusterIPs=C4)
mut("request IP for service from ip pool having both namespace and service label", got("192.0.2.60"),
    ns="test-ns1", labels={"team": "metallb"}, clusterIPs=C4)
mut("simple LoadBalancer, ips already assigned but can't determine family", V4_FIRST, clusterIPs=C4,
    status=["198.51.100.0", "198.51.100.1", "198.51.100.5"])
mut("metallb.io/loadBalancerIPs wins over metallb.universe.tf/loadBalancerIPs (valueForAnnotation)",
    got("198.51.100.1"), clusterIPs=C4,
    ann={LBIPS: "198.51.100.1", "metallb.universe.tf/loadBalancerIPs": "198.51.100.0"})
mut("metallb.io/address-pool wins over metallb.universe.tf/address-pool (valueForAnnotation)",
    got("203.0.113.6"), clusterIPs=C4, ann={POOL: "pool2", "metallb.universe.tf/address-pool": "pool1"})
mut("metallb.io/allow-shared-ip wins over metallb.universe.tf/allow-shared-ip (SharingKey)",
    got("198.51.100.0"), clusterIPs=C4, ann={POOL: "pool1", SHARE: "k", "metallb.universe.tf/allow-shared-ip": "j"})

# ---------------------------------------------------------------------------------------------------
_src = f"{CT} TestControllerConfig: "
add("config-no-pools", _src + "with no pools the Service is not given an IP",
    (svc("test", clusterIPs=C4),), {T: refused()})
add("config-pool", _src + "a pool 1.2.3.0/24: the Service gets 1.2.3.0",
    (mpool("default", "198.51.100.0/24"), svc("test", clusterIPs=C4)), {T: got("198.51.100.0")})
add("config-pool-removed", _src + "the pool removed: the Service is cleared",
    (svc("test", clusterIPs=C4, status=["198.51.100.0"]),), {T: refused()})
_src = f"{CT} TestDeleteRecyclesIP: "
add("recycle-full", _src + "a /32: svc1 gets it, svc2 gets nothing",
    (mpool("default", "198.51.100.0/32"), svc("test", clusterIPs=C4), svc("test2", clusterIPs=C4)),
    {T: got("198.51.100.0"), D + "test2": refused()})
add("recycle-freed", _src + "svc1 deleted: svc2 gets the IP",
    (mpool("default", "198.51.100.0/32"), svc("test2", clusterIPs=C4)), {D + "test2": got("198.51.100.0")})
_src = f"{CT} TestControllerReassign: "
add("reassign-first", _src + "one pool (1.2.3.0/24 + 1000::1/127): 1.2.3.0",
    (mpool("default", "198.51.100.0/24", "2001:db8::1/127"), svc("test", clusterIPs=C4)), {T: got("198.51.100.0")})
add("reassign-pool-added", _src + "a second pool: the allocation does not change",
    (mpool("default", "198.51.100.0/24", "2001:db8::1/127"), mpool("second", "203.0.113.0/24"),
     svc("test", clusterIPs=C4, status=["198.51.100.0"])), {T: got("198.51.100.0")})
add("reassign-pool-deleted", _src + "the first pool deleted: an IP of the second pool",
    (mpool("second", "203.0.113.0/24"), svc("test", clusterIPs=C4, status=["198.51.100.0"])),
    {T: got("203.0.113.0")})
add("dual-stack-config", f"{CT} TestControllerDualStackConfig: RequireDualStack gets 1.2.3.0 and 1000::",
    (mpool("default", "198.51.100.0/24", "2001:db8::1/127"),
     svc("test", clusterIPs=C46, ipFamilyPolicy="RequireDualStack")), {T: got("198.51.100.0", "2001:db8::")})
