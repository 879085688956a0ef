"""Cilium >= 1.16 LB-IPAM scenarios, from the facts asserted in Cilium's own tests.

Sources (read, not copied): ``operator/pkg/lbipam/lbipam_test.go`` (the 1.16+ version with
``mkTestFixture(t, ...)``/``UpsertSvc``), its fixture ``lbipam_fixture_test.go`` (pools are created
2022-10-16T12:00:00Z; the classes served are ``io.cilium/bgp-control-plane`` and
``io.cilium/l2-announcer``), ``sharing_reserved_ip_test.go`` and ``service_store_test.go`` (when two
Services may share an IP; each pair becomes a Service asking for the IP another one holds). Where a
test only says "an IPv4" or "a different IP", the case names the IP Cilium picks: ``AllocAny`` takes
the first address of the smallest free block of a range, which on these states is also the lowest free
address.

Addresses moved to TEST-NET: 10.0.10.0/24 -> 198.51.100.0/24, 10.0.20.0/24 -> 203.0.113.0/24,
FF::0/48 -> 2001:db8:ff::/48, 192.168.1.12 -> 192.0.2.12, 10.0.0.0/24 -> 198.51.100.0/24,
::/112 -> 2001:db8::/112.
"""

from __future__ import annotations

from tests.conformance.harness import Case, PoolWant, cpool, got, ignored, partial, refused, svc

__all__ = ["CASES"]

A = "198.51.100.0/24"  # 10.0.10.0/24
B = "203.0.113.0/24"  # 10.0.20.0/24
V6 = "2001:db8:ff::/48"  # FF::0/48
A0, A1 = "198.51.100.0", "198.51.100.1"
V60 = "2001:db8:ff::"
F = "lbipam_test.go"
V4 = {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}
SINGLE = {"ipFamilyPolicy": "SingleStack"}
KEY = "io.cilium/lb-ipam-sharing-key"  # annotation.LBIPAMSharingKeyAlias
KEY_NEW = "lbipam.cilium.io/sharing-key"  # annotation.LBIPAMSharingKey
IPS_OLD = "io.cilium/lb-ipam-ips"  # annotation.LBIPAMIPKeyAlias
IPS_NEW = "lbipam.cilium.io/ips"  # annotation.LBIPAMIPsKey
XNS = "io.cilium/lb-ipam-sharing-cross-namespace"
XNS_NEW = "lbipam.cilium.io/sharing-cross-namespace"
PERMIT = "lbipam.cilium.io/sharing-permit-different-pods"
POOL_A = cpool("pool-a", A)
D = "default/"


def sel(**labels: str) -> dict[str, dict[str, str]]:
    return {"matchLabels": labels}


CASES: list[Case] = [
    # --- pools in conflict --------------------------------------------------------------------------
    Case("conflict-newer-pool-disabled", f"{F} TestConflictResolution: pool-b (newer, overlapping) is marked "
         "conflicting and all its ranges are disabled",
         (POOL_A, cpool("pool-b", A, V6, created="2022-10-16T13:30:00Z"),
          svc("six", ipFamilies=["IPv6"])),
         {D + "six": refused("no_pool")},
         pools={"pool-b": PoolWant(state="conflict"), "pool-a": PoolWant(state="ok")}),
    Case("conflict-resolved", f"{F} TestConflictResolution: removing the overlapping range resolves the conflict",
         (POOL_A, cpool("pool-b", V6, created="2022-10-16T13:30:00Z"), svc("six", ipFamilies=["IPv6"])),
         {D + "six": got(V60)},
         pools={"pool-b": PoolWant(state="ok")}),
    Case("internal-conflict", f"{F} TestPoolInternalConflict: two overlapping blocks of one pool",
         (cpool("pool-a", A, "198.51.100.64/28"), svc("a")),
         {D + "a": refused("no_pool")}, pools={"pool-a": PoolWant(state="conflict")}),
    Case("internal-conflict-resolved", f"{F} TestPoolInternalConflict: one block left, no conflict",
         (POOL_A, svc("a")), {D + "a": got(A0)}, pools={"pool-a": PoolWant(state="ok")}),
    # --- TestAllocHappyPath --------------------------------------------------------------------------
    Case("happy-path-ipv4", f"{F} TestAllocHappyPath: SingleStack [IPv4] gets exactly one IPv4, satisfied",
         (cpool("pool-a", A, V6), svc("service-a", **V4)), {D + "service-a": got(A0)}),
    Case("happy-path-switch-to-ipv6", f"{F} TestAllocHappyPath: switched to [IPv6]: the IPv4 is freed, one IPv6",
         (cpool("pool-a", A, V6), svc("service-a", status=[A0], ipFamilyPolicy="SingleStack", ipFamilies=["IPv6"])),
         {D + "service-a": got(V60)}, pools={"pool-a": PoolWant(used=1)}),
    Case("happy-path-switch-back", f"{F} TestAllocHappyPath: switched back to [IPv4]: one IPv4",
         (cpool("pool-a", A, V6), svc("service-a", status=[V60], **V4)), {D + "service-a": got(A0)}),
    # --- sharing keys ------------------------------------------------------------------------------
    Case("shared-key-same-ip", f"{F} TestSharedServiceUpdatedSharingKey: same key, ports 80 and 81: one IP",
         (POOL_A, svc("service-a", ann={KEY: "key-1"}, ports=[80], ipFamilies=["IPv4"]),
          svc("service-b", ann={KEY: "key-1"}, ports=[81], ipFamilies=["IPv4"])),
         {D + "service-a": got(A0), D + "service-b": got(A0)}, pools={"pool-a": PoolWant(used=1)}),
    Case("shared-key-changed", f"{F} TestSharedServiceUpdatedSharingKey: service-b's key changes: another IP",
         (POOL_A, svc("service-a", ann={KEY: "key-1"}, ports=[80], status=[A0], ipFamilies=["IPv4"]),
          svc("service-b", ann={KEY: "key-2"}, ports=[81], status=[A0], ipFamilies=["IPv4"])),
         {D + "service-a": got(A0), D + "service-b": got(A1)}),
    Case("shared-ports-now-overlap", f"{F} TestSharedServiceUpdatedPorts: service-b moves to port 80: another IP",
         (POOL_A, svc("service-a", ann={KEY: "key-1"}, ports=[80], status=[A0], ipFamilies=["IPv4"]),
          svc("service-b", ann={KEY: "key-1"}, ports=[80], status=[A0], ipFamilies=["IPv4"])),
         {D + "service-a": got(A0), D + "service-b": got(A1)}),
    Case("same-port-other-protocol", f"{F} TestSharedServiceSamePortWithDifferentProtocols: TCP/80 and UDP/80 "
         "with one key share (protocol differentiation on)",
         (POOL_A, svc("service-a", ann={KEY: "key-1"}, ports=["TCP/80"], ipFamilies=["IPv4"]),
          svc("service-b", ann={KEY: "key-1"}, ports=["UDP/80"], ipFamilies=["IPv4"])),
         {D + "service-a": got(A0), D + "service-b": got(A0)}),
    Case("sharing-key", f"{F} TestSharingKey: service-b gets service-a's IP (same key, no ports)",
         (POOL_A, svc("service-a", ann={KEY: "key-a"}, ipFamilies=["IPv4"]),
          svc("service-b", ann={KEY: "key-a"}, ipFamilies=["IPv4"])),
         {D + "service-a": got(A0), D + "service-b": got(A0)}, pools={"pool-a": PoolWant(used=1)}),
    Case("sharing-key-other-key", f"{F} TestSharingKey: service-c (key-b) gets a different IP",
         (POOL_A, svc("service-a", ann={KEY: "key-a"}, status=[A0], ipFamilies=["IPv4"]),
          svc("service-b", ann={KEY: "key-a"}, status=[A0], ipFamilies=["IPv4"]),
          svc("service-c", ann={KEY: "key-b"}, ports=[80], ipFamilies=["IPv4"])),
         {D + "service-c": got(A1)}),
    Case("sharing-key-released-with-last-user", f"{F} TestSharingKey: service-a and -b deleted, their IP is free",
         (POOL_A, svc("service-c", ann={KEY: "key-b"}, ports=[80], status=[A1], ipFamilies=["IPv4"]),
          svc("probe", ipFamilies=["IPv4"])),
         {D + "service-c": got(A1), D + "probe": got(A0)}, pools={"pool-a": PoolWant(used=2)}),
    Case("sharing-key-port-clash-new-ip", f"{F} TestSharingKey: new service-a (key-b, port 80) clashes with "
         "service-c: a different IP",
         (POOL_A, svc("service-c", ann={KEY: "key-b"}, ports=[80], status=[A1], ipFamilies=["IPv4"]),
          svc("service-a", ann={KEY: "key-b"}, ports=[80], ipFamilies=["IPv4"])),
         {D + "service-c": got(A1), D + "service-a": got(A0)}),
    Case("sharing-key-joins-first-ip-of-key", f"{F} TestSharingKey: new service-b (key-b, port 81) gets the same "
         "IP as service-c, the first IP of the key",
         (POOL_A, svc("service-c", ann={KEY: "key-b"}, ports=[80], status=[A1], ipFamilies=["IPv4"]),
          svc("service-a", ann={KEY: "key-b"}, ports=[80], status=[A0], ipFamilies=["IPv4"]),
          svc("service-b", ann={KEY: "key-b"}, ports=[81], ipFamilies=["IPv4"])),
         {D + "service-b": got(A1)}),
    Case("sharing-key-kept-while-shared", f"{F} TestSharingKey: service-c deleted, the IP stays with service-b",
         (POOL_A, svc("service-a", ann={KEY: "key-b"}, ports=[80], status=[A0], ipFamilies=["IPv4"]),
          svc("service-b", ann={KEY: "key-b"}, ports=[81], status=[A1], ipFamilies=["IPv4"])),
         {D + "service-a": got(A0), D + "service-b": got(A1)}, pools={"pool-a": PoolWant(used=2)}),
    Case("shared-key-readd", f"{F} TestRegressionSharedKeyReaddBug: service-b deleted and added again gets the "
         "shared IP again",
         (POOL_A, svc("service-a", ann={KEY: "key-a"}, status=[A0], ipFamilies=["IPv4"]),
          svc("service-b", ann={KEY: "key-a"}, ipFamilies=["IPv4"])),
         {D + "service-a": got(A0), D + "service-b": got(A0)}),
    Case("cross-namespace-allowed", f"{F} TestSharingCrossNamespace: ns-a allows ns-b, ns-b allows *: one IP",
         (POOL_A, svc("service-a", "ns-a", ann={KEY: "key-a", XNS: "ns-b"}, ipFamilies=["IPv4"]),
          svc("service-b", "ns-b", ann={KEY: "key-a", XNS: "*"}, ipFamilies=["IPv4"])),
         {"ns-a/service-a": got(A0), "ns-b/service-b": got(A0)}),
    Case("cross-namespace-not-allowed", f"{F} TestSharingCrossNamespace: ns-c is not allowed: a different IP",
         (POOL_A, svc("service-a", "ns-a", ann={KEY: "key-a", XNS: "ns-b"}, status=[A0], ipFamilies=["IPv4"]),
          svc("service-b", "ns-b", ann={KEY: "key-a", XNS: "*"}, status=[A0], ipFamilies=["IPv4"]),
          svc("service-c", "ns-c", ann={KEY: "key-a"}, ports=[80], ipFamilies=["IPv4"])),
         {"ns-c/service-c": got(A1), "ns-a/service-a": got(A0), "ns-b/service-b": got(A0)}),
    Case("service-ipv4", f"{F} TestServiceDelete: a Service gets one IPv4 (released on delete)",
         (POOL_A, svc("service-a", ipFamilies=["IPv4"])), {D + "service-a": got(A0)},
         pools={"pool-a": PoolWant(used=1)}),
    # --- restart: existing ingress -----------------------------------------------------------------
    Case("realloc-on-init", f"{F} TestReallocOnInit: an ingress IP of no pool is replaced by a valid IPv4",
         (POOL_A, svc("service-a", status=["192.0.2.12"], **V4)), {D + "service-a": got(A0)}),
    Case("alloc-on-init", f"{F} TestAllocOnInit: ingress IPs of a pool are imported, not changed",
         (POOL_A, svc("service-a", status=["198.51.100.123"], **V4),
          svc("service-b", status=["198.51.100.124"], loadBalancerIP="198.51.100.124")),
         {D + "service-a": got("198.51.100.123"), D + "service-b": got("198.51.100.124")},
         pools={"pool-a": PoolWant(used=2)}),
    Case("alloc-shared-on-init", f"{F} TestAllocSharedOnInit: two Services sharing one ingress IP keep it",
         (POOL_A, svc("service-a", ann={KEY_NEW: "key-1"}, status=["198.51.100.123"], **V4),
          svc("service-b", ann={KEY_NEW: "key-1"}, status=["198.51.100.123"], **V4)),
         {D + "service-a": got("198.51.100.123"), D + "service-b": got("198.51.100.123")},
         pools={"pool-a": PoolWant(used=1)}),
    # --- serviceSelector -----------------------------------------------------------------------------
    Case("pool-selector-match", f"{F} TestPoolSelectorBasic: red-service matches color=red: one IPv4",
         (cpool("pool-a", A, serviceSelector=sel(color="red")), svc("red-service", labels={"color": "red"}, **SINGLE)),
         {D + "red-service": got(A0)}),
    Case("pool-selector-mismatch", f"{F} TestPoolSelectorBasic: blue-service gets no IP, satisfied false",
         (cpool("pool-a", A, serviceSelector=sel(color="red")), svc("blue-service", labels={"color": "blue"},
                                                                   **SINGLE)),
         {D + "blue-service": refused("no_pool")}),
    Case("pool-selector-namespace", f"{F} TestPoolSelectorNamespace: io.kubernetes.service.namespace=tenant-one",
         (cpool("pool-a", A, serviceSelector=sel(**{"io.kubernetes.service.namespace": "tenant-one"})),
          svc("red-service", "tenant-one", **SINGLE)),
         {"tenant-one/red-service": got(A0)}),
    Case("pool-selector-namespace-label-spoofed", f"{F} TestPoolSelectorNamespace: a Service label "
         "io.kubernetes.service.namespace=tenant-one in tenant-two does not match",
         (cpool("pool-a", A, serviceSelector=sel(**{"io.kubernetes.service.namespace": "tenant-one"})),
          svc("blue-service", "tenant-two", labels={"io.kubernetes.service.namespace": "tenant-one"}, **SINGLE)),
         {"tenant-two/blue-service": refused("no_pool")}),
    Case("remove-service-label-before", f"{F} TestRemoveServiceLabel: color=blue matches: one IP",
         (cpool("pool-a", A, serviceSelector=sel(color="blue")), svc("service-a", labels={"color": "blue"})),
         {D + "service-a": got(A0)}),
    Case("remove-service-label-after", f"{F} TestRemoveServiceLabel: label changed to green: the IP is removed",
         (cpool("pool-a", A, serviceSelector=sel(color="blue")),
          svc("service-a", labels={"color": "green"}, status=[A0])),
         {D + "service-a": refused("no_pool")}, pools={"pool-a": PoolWant(used=0)}),
    Case("request-ip-mismatched-label", f"{F} TestRequestIPWithMismatchedLabel: requested IP of a pool that does "
         "not select the Service",
         (cpool("pool-a", A, serviceSelector=sel(color="blue")),
          svc("service-a", labels={"color": "red"}, loadBalancerIP="198.51.100.123")),
         {D + "service-a": refused("pool_selector_mismatch")}),
    Case("change-pool-selector-before", f"{F} TestChangePoolSelector: color=red matches: one IP",
         (cpool("pool-a", A, serviceSelector=sel(color="red")), svc("service-a", labels={"color": "red"})),
         {D + "service-a": got(A0)}),
    Case("change-pool-selector-after", f"{F} TestChangePoolSelector: selector now color=green: the IP is removed",
         (cpool("pool-a", A, serviceSelector=sel(color="green")), svc("service-a", labels={"color": "red"},
                                                                     status=[A0])),
         {D + "service-a": refused("no_pool")}),
    # --- Service type and class --------------------------------------------------------------------
    Case("type-clusterip-ignored", f"{F} TestChangeServiceType: a ClusterIP Service is ignored",
         (POOL_A, svc("service-a", type="ClusterIP")), {D + "service-a": ignored()}),
    Case("type-loadbalancer-served", f"{F} TestChangeServiceType: switched to LoadBalancer: one IPv4, satisfied",
         (POOL_A, svc("service-a")), {D + "service-a": got(A0)}),
    Case("type-nodeport-released", f"{F} TestChangeServiceType: switched to NodePort: no ingress, IP released",
         (POOL_A, svc("service-a", type="NodePort", status=[A0])), {D + "service-a": ignored()},
         pools={"pool-a": PoolWant(used=0)}),
    Case("other-lb-class-ignored", f"{F} TestNonMatchingLBClass: loadBalancerClass net.example/some-other-class",
         (POOL_A, svc("service-a", loadBalancerClass="net.example/some-other-class")),
         {D + "service-a": ignored()}),
    Case("bgp-class-served", f"{F} TestRequiredLBClass: loadBalancerClass io.cilium/bgp-control-plane gets IPs",
         (POOL_A, svc("service-a", loadBalancerClass="io.cilium/bgp-control-plane")),
         {D + "service-a": got(A0)}, cilium_compat=True),
    Case("l2-class-served", "lbipam_fixture_test.go mkTestFixture: io.cilium/l2-announcer is a served class",
         (POOL_A, svc("service-a", loadBalancerClass="io.cilium/l2-announcer")),
         {D + "service-a": got(A0)}, cilium_compat=True),
    Case("classless-with-default-ipam-off", f"{F} TestRequiredLBClass: with defaultLBServiceIPAM off, a Service "
         "without a class is left alone",
         (POOL_A, svc("service-a")), {D + "service-a": ignored()},
         l2lb={D + "service-a": got(A0)},
         differs="Cilium's operator setting defaultLBServiceIPAM=none has no l2lb equivalent: l2lb always serves "
                 "Services without a loadBalancerClass (run it only where it should)"),
    # --- allowFirstLastIPs -------------------------------------------------------------------------------
    Case("first-last-yes", f"{F} TestAllowFirstLastIPs: allowFirstLastIPs Yes, the /30's first IP is granted",
         (cpool("pool-a", "198.51.100.16/30", allowFirstLastIPs="Yes"),
          svc("service-a", loadBalancerIP="198.51.100.16", **V4)),
         {D + "service-a": got("198.51.100.16")}),
    Case("first-last-no", f"{F} TestUpdateAllowFirstAndLastIPs: allowFirstLastIPs No reserves the /30's first IP",
         (cpool("pool-a", "198.51.100.16/30", allowFirstLastIPs="No"),
          svc("service-a", loadBalancerIP="198.51.100.16", **V4)),
         {D + "service-a": refused("already_allocated")}, pools={"pool-a": PoolWant(total=2)}),
    Case("first-last-updated-to-yes", f"{F} TestUpdateAllowFirstAndLastIPs: updated to Yes, the Service gets it",
         (cpool("pool-a", "198.51.100.16/30", allowFirstLastIPs="Yes"),
          svc("service-a", loadBalancerIP="198.51.100.16", **V4)),
         {D + "service-a": got("198.51.100.16")}, pools={"pool-a": PoolWant(total=4)}),
    Case("first-last-unset-is-yes", f"{F} TestUpdateAllowFirstAndLastIPs: only an explicit No reserves (unset "
         "means Yes since 1.16): a new Service gets the /30's first IP",
         (cpool("pool-a", "198.51.100.16/30"), svc("service-a", **V4)),
         {D + "service-a": got("198.51.100.16")}, pools={"pool-a": PoolWant(total=4)}),
    Case("first-last-unset-requested", f"{F} TestAllowFirstLastIPs: the first IP of a CIDR can be requested when "
         "allowFirstLastIPs is unset",
         (cpool("pool-a", "198.51.100.16/30"), svc("service-a", loadBalancerIP="198.51.100.19", **V4)),
         {D + "service-a": got("198.51.100.19")}),
    Case("reserved-ip-with-sharing-key", "sharing_reserved_ip_test.go TestRequestReservedFirstLastIPWithSharingKey: "
         "a reserved IP requested with a sharing key is denied",
         (cpool("pool-a", "198.51.100.16/30", allowFirstLastIPs="No"),
          svc("service-a", ann={KEY: "key-1"}, loadBalancerIP="198.51.100.16", **V4)),
         {D + "service-a": refused()}),
    # --- requested IPs -------------------------------------------------------------------------------------
    Case("request-spec-ip", f"{F} TestRequestIPs: spec.loadBalancerIP",
         (POOL_A, svc("service-a", loadBalancerIP="198.51.100.20")), {D + "service-a": got("198.51.100.20")}),
    Case("request-union-spec-and-annotation", f"{F} TestRequestIPs: spec.loadBalancerIP .21 plus "
         "io.cilium/lb-ipam-ips .22,.23: all three",
         (POOL_A, svc("service-a", loadBalancerIP="198.51.100.20", status=["198.51.100.20"]),
          svc("service-b", ann={IPS_OLD: "198.51.100.22,198.51.100.23"}, loadBalancerIP="198.51.100.21")),
         {D + "service-b": got("198.51.100.21", "198.51.100.22", "198.51.100.23")}),
    Case("request-already-allocated", f"{F} TestRequestIPs: service-c asks for service-b's .21: already_allocated",
         (POOL_A, svc("service-b", ann={IPS_OLD: "198.51.100.22,198.51.100.23"}, loadBalancerIP="198.51.100.21",
                      status=["198.51.100.21", "198.51.100.22", "198.51.100.23"]),
          svc("service-c", loadBalancerIP="198.51.100.21")),
         {D + "service-b": got("198.51.100.21", "198.51.100.22", "198.51.100.23"),
          D + "service-c": refused("already_allocated")}),
    Case("request-with-keys-shared", f"{F} TestSharedServicesUpdateSharingKeyAndRequestedIP: b and c ask for .33 "
         "with key-2: one IP",
         (POOL_A, svc("service-a", ann={IPS_NEW: "198.51.100.22", KEY_NEW: "key-1"}, ports=[80], ipFamilies=["IPv4"]),
          svc("service-b", ann={IPS_NEW: "198.51.100.33", KEY_NEW: "key-2"}, ports=[81], ipFamilies=["IPv4"]),
          svc("service-c", ann={IPS_NEW: "198.51.100.33", KEY_NEW: "key-2"}, ports=[82], ipFamilies=["IPv4"])),
         {D + "service-a": got("198.51.100.22"), D + "service-b": got("198.51.100.33"),
          D + "service-c": got("198.51.100.33")}),
    Case("request-with-keys-moved", f"{F} TestSharedServicesUpdateSharingKeyAndRequestedIP: c moves to .22 and "
         "key-1: same IP as a, not b",
         (POOL_A, svc("service-a", ann={IPS_NEW: "198.51.100.22", KEY_NEW: "key-1"}, ports=[80],
                      status=["198.51.100.22"], ipFamilies=["IPv4"]),
          svc("service-b", ann={IPS_NEW: "198.51.100.33", KEY_NEW: "key-2"}, ports=[81], status=["198.51.100.33"],
              ipFamilies=["IPv4"]),
          svc("service-c", ann={IPS_NEW: "198.51.100.22", KEY_NEW: "key-1"}, ports=[82], status=["198.51.100.33"],
              ipFamilies=["IPv4"])),
         {D + "service-a": got("198.51.100.22"), D + "service-b": got("198.51.100.33"),
          D + "service-c": got("198.51.100.22")}),
    Case("remove-requested-ip-before", f"{F} TestRemoveRequestedIP: spec.loadBalancerIP .123 plus annotation "
         ".124,.125: three IPs",
         (POOL_A, svc("service-a", ann={IPS_OLD: "198.51.100.124,198.51.100.125"}, loadBalancerIP="198.51.100.123")),
         {D + "service-a": got("198.51.100.123", "198.51.100.124", "198.51.100.125")},
         pools={"pool-a": PoolWant(used=3)}),
    Case("remove-requested-ip-after", f"{F} TestRemoveRequestedIP: annotation now .124 only: .123 and .124 stay, "
         ".125 is released",
         (POOL_A, svc("service-a", ann={IPS_OLD: "198.51.100.124"}, loadBalancerIP="198.51.100.123",
                      status=["198.51.100.123", "198.51.100.124", "198.51.100.125"])),
         {D + "service-a": got("198.51.100.123", "198.51.100.124")}, pools={"pool-a": PoolWant(used=2)}),
    # --- pools and ranges added, disabled, removed ----------------------------------------------------
    Case("add-pool-before", f"{F} TestAddPool: an IP of no pool is requested: no IP",
         (POOL_A, svc("service-a", loadBalancerIP="203.0.113.10")), {D + "service-a": refused("no_pool")}),
    Case("add-pool-after", f"{F} TestAddPool: pool-b with that IP is added: the Service gets it",
         (POOL_A, cpool("pool-b", B), svc("service-a", loadBalancerIP="203.0.113.10")),
         {D + "service-a": got("203.0.113.10")}),
    Case("add-range", f"{F} TestAddRange: a block with the IP is added to pool-a: the Service gets it",
         (cpool("pool-a", A, B), svc("service-a", loadBalancerIP="203.0.113.10")),
         {D + "service-a": got("203.0.113.10")}),
    Case("disable-pool-keeps-existing", f"{F} TestDisablePool: a disabled pool keeps existing allocations",
         (cpool("pool-a", A, disabled=True), svc("service-a", status=[A0])), {D + "service-a": got(A0)},
         pools={"pool-a": PoolWant(state="disabled", used=1)}),
    Case("disable-pool-no-new", f"{F} TestDisablePool: a disabled pool gives no new IP",
         (cpool("pool-a", A, disabled=True), svc("service-a", status=[A0]), svc("service-b")),
         {D + "service-a": got(A0), D + "service-b": refused("no_pool")}),
    Case("disable-pool-reenabled", f"{F} TestDisablePool: enabled again, service-b gets an IP",
         (POOL_A, svc("service-a", status=[A0]), svc("service-b")),
         {D + "service-a": got(A0), D + "service-b": got(A1)}),
    Case("pool-delete-before", f"{F} TestPoolDelete: a Service gets an IP of pool-a or pool-b",
         (POOL_A, cpool("pool-b", B), svc("service-a")), {D + "service-a": got(A0, alt=[("203.0.113.0",)])}),
    Case("pool-delete-after", f"{F} TestPoolDelete: its pool is deleted: an IP of the other pool",
         (cpool("pool-b", B), svc("service-a", status=[A0])), {D + "service-a": got("203.0.113.0")}),
    Case("range-added-keeps-ip", f"{F} TestRangeDelete: a block added to the pool: the Service keeps its IP",
         (cpool("pool-a", A, B), svc("service-a", status=[A0])), {D + "service-a": got(A0)}),
    Case("range-deleted-moves", f"{F} TestRangeDelete: its block removed: a new IP from the remaining block",
         (cpool("pool-a", B), svc("service-a", status=[A0])), {D + "service-a": got("203.0.113.0")}),
    # --- which families a Service asks for (TestLBIPAM_serviceIPFamilyRequest), pool with both --------
    Case("family-no-policy-no-families", f"{F} TestLBIPAM_serviceIPFamilyRequest: no policy, no families: IPv4",
         (cpool("pool-a", A, V6), svc("s")), {D + "s": got(A0)}),
    Case("family-no-policy-ipv6", f"{F} TestLBIPAM_serviceIPFamilyRequest: no policy, [IPv6]: IPv6 only",
         (cpool("pool-a", A, V6), svc("s", ipFamilies=["IPv6"])), {D + "s": got(V60)}),
    Case("family-no-policy-ipv4", f"{F} TestLBIPAM_serviceIPFamilyRequest: no policy, [IPv4]: IPv4 only",
         (cpool("pool-a", A, V6), svc("s", ipFamilies=["IPv4"])), {D + "s": got(A0)}),
    Case("family-no-policy-first-of-two", f"{F} TestLBIPAM_serviceIPFamilyRequest: no policy, [IPv4, IPv6]: the "
         "first family only",
         (cpool("pool-a", A, V6), svc("s", ipFamilies=["IPv4", "IPv6"])), {D + "s": got(A0)}),
    Case("family-no-policy-first-of-two-v6", f"{F} TestLBIPAM_serviceIPFamilyRequest: no policy, [IPv6, IPv4]: "
         "IPv6 only",
         (cpool("pool-a", A, V6), svc("s", ipFamilies=["IPv6", "IPv4"])), {D + "s": got(V60)}),
    Case("family-single-stack", f"{F} TestLBIPAM_serviceIPFamilyRequest: SingleStack, no families: IPv4",
         (cpool("pool-a", A, V6), svc("s", **SINGLE)), {D + "s": got(A0)}),
    Case("family-prefer-dual", f"{F} TestLBIPAM_serviceIPFamilyRequest: PreferDualStack, both enabled: both",
         (cpool("pool-a", A, V6), svc("s", ipFamilyPolicy="PreferDualStack")), {D + "s": got(A0, V60)}),
    Case("family-prefer-dual-listed", f"{F} TestLBIPAM_serviceIPFamilyRequest: PreferDualStack requests the "
         "listed families: [IPv4] gets IPv4 only",
         (cpool("pool-a", A, V6), svc("s", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4"])),
         {D + "s": got(A0)}),
    Case("family-require-dual", f"{F} TestLBIPAM_serviceIPFamilyRequest: RequireDualStack requests both",
         (cpool("pool-a", A, V6), svc("s", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])),
         {D + "s": got(A0, V60)}),
    Case("family-require-dual-one-missing", f"{F} TestLBIPAM_serviceIPFamilyRequest + satisfyGenericRequest: "
         "RequireDualStack with no IPv6 pool keeps its IPv4, satisfied false",
         (POOL_A, svc("s", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])),
         {D + "s": partial("no_pool", A0)}),
    Case("family-prefer-dual-one-missing", f"{F} TestLBIPAM_serviceIPFamilyRequest + satisfyGenericRequest: "
         "PreferDualStack [IPv4, IPv6] with no IPv6 pool keeps its IPv4, satisfied false",
         (POOL_A, svc("s", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4", "IPv6"])),
         {D + "s": partial("no_pool", A0)}),
    # --- pool sizes (TestRangeFromPrefix: a CIDR covers its whole prefix) ---------------------------------
    Case("range-from-prefix-24", f"{F} TestRangeFromPrefix: /24 is .0 to .255",
         (cpool("pool-a", "198.51.100.0/24"),), {}, pools={"pool-a": PoolWant(total=256)}),
    Case("range-from-prefix-25", f"{F} TestRangeFromPrefix: /25 is .0 to .127",
         (cpool("pool-a", "198.51.100.0/25"), svc("s", loadBalancerIP="198.51.100.127")),
         {D + "s": got("198.51.100.127")}, pools={"pool-a": PoolWant(total=128)}),
    Case("range-from-prefix-offset", f"{F} TestRangeFromPrefix: 10.0.0.12/24 is the whole /24 from .0",
         (cpool("pool-a", "198.51.100.12/24"), svc("s")), {D + "s": got(A0)}, pools={"pool-a": PoolWant(total=256)}),
    Case("range-from-prefix-ipv6", f"{F} TestRangeFromPrefix: ::/112 is :: to ::ffff",
         (cpool("pool-a", "2001:db8::/112"), svc("s", ipFamilies=["IPv6"], loadBalancerIP="2001:db8::ffff")),
         {D + "s": got("2001:db8::ffff")}, pools={"pool-a": PoolWant(total=65536)}),
    # --- service_store_test.go TestIsCompatibleReasons: may a Service join an IP held by another? ---------
    *(Case(f"compatible-{name}", f"service_store_test.go TestIsCompatibleReasons: \"{desc}\"",
           (POOL_A, svc("holder", hns, ann={IPS_NEW: "198.51.100.50", KEY_NEW: hkey, **hann}, status=["198.51.100.50"],
                        ports=hports, **hspec),
            svc("joiner", jns, ann={IPS_NEW: "198.51.100.50", KEY_NEW: jkey, **jann}, ports=jports, **jspec)),
           {f"{hns}/holder": got("198.51.100.50"),
            f"{jns}/joiner": got("198.51.100.50") if ok else refused("already_allocated_incompatible_service")},
           **extra)
      for name, desc, hns, hkey, hann, hports, hspec, jns, jkey, jann, jports, jspec, ok, extra in [
          ("different-keys", "different sharing keys", "default", "key-a", {}, (), {},
           "default", "key-b", {}, (), {}, False, {}),
          ("namespaces-not-mutual", "namespaces differ without mutual permission", "ns-a", "k", {}, (), {},
           "ns-b", "k", {XNS_NEW: "ns-a"}, (), {}, False, {}),
          ("same-port-and-protocol", "same port and protocol", "default", "k", {}, ("TCP/80",), {},
           "default", "k", {}, ("TCP/80",), {}, False, {}),
          ("different-traffic-policy", "different external traffic policies", "default", "k", {}, (),
           {"externalTrafficPolicy": "Local", "selector": {"app": "a"}}, "default", "k", {}, (),
           {"externalTrafficPolicy": "Cluster"}, False, {}),
          ("local-one-without-selector", "local policy and one service has no selector", "default", "k",
           {PERMIT: "true"}, (), {"externalTrafficPolicy": "Local", "selector": {"app": "a"}},
           "default", "k", {PERMIT: "true"}, (), {"externalTrafficPolicy": "Local"}, False, {}),
          ("local-selectors-differ", "local policy and selectors differ without the opt-in", "default", "k", {}, (),
           {"externalTrafficPolicy": "Local", "selector": {"app": "a"}}, "default", "k", {}, (),
           {"externalTrafficPolicy": "Local", "selector": {"app": "b"}}, False, {}),
          ("local-opt-in-one-side", "local policy and selectors differ with the opt-in on one side only", "default",
           "k", {PERMIT: "true"}, (), {"externalTrafficPolicy": "Local", "selector": {"app": "a"}}, "default",
           "k", {}, (), {"externalTrafficPolicy": "Local", "selector": {"app": "b"}}, False, {}),
          ("local-opt-in-both", "local policy and selectors differ with the opt-in on both", "default", "k",
           {PERMIT: "true"}, (), {"externalTrafficPolicy": "Local", "selector": {"app": "a"}}, "default", "k",
           {PERMIT: "true"}, (), {"externalTrafficPolicy": "Local", "selector": {"app": "b"}}, True,
           {"l2lb": {"default/joiner": refused("already_allocated_incompatible_service")},
            "differs": "lbipam.cilium.io/sharing-permit-different-pods (Cilium 1.21, pre-release) is not read: "
                       "Local Services with different pod selectors never share an IP"}),
          ("identical", "identical services", "default", "k", {}, (),
           {"externalTrafficPolicy": "Local", "selector": {"app": "a"}}, "default", "k", {}, (),
           {"externalTrafficPolicy": "Local", "selector": {"app": "a"}}, True, {}),
      ]),
    # --- lifecycle ---------------------------------------------------------------------------------------
    Case("startup-pool-wakes", f"{F} TestLBIPAMStartupRestartShutdown: once a pool exists the Service gets one IP",
         (cpool("pool-a", "198.51.100.0/24"), svc("service-a")), {D + "service-a": got(A0)}),
    Case("startup-no-pool", f"{F} TestLBIPAMStartupRestartShutdown: the last pool deleted: the ingress is removed",
         (svc("service-a", status=[A0]),), {D + "service-a": refused()}),
]
