# Sourced by scripts/dev: the part of `bash scripts/dev e2e` that the real-Kubernetes scenario
# (tests/e2e/test_k8s.py, issue 20 items 2-5) needs. Kept in its own file so the image/compose
# part of scripts/dev and this one can change independently.
#
# Debian packages: containerd + runc + CNI plugins (each lab node's runtime), nftables (kube-proxy's
# nftables mode runs `nft`), bind9-dnsutils (dig: the client's queries), curl (the page through the
# VIP), iputils-arping (which node answers ARP for the VIP), conntrack (debugging node NAT).
e2e_k8s_apt_pkgs=(containerd runc containernetworking-plugins nftables bind9-dnsutils curl iputils-arping conntrack)

# Go programs of the cluster, each built once per machine into ~/.cache/l2lb (nice 15, -p 1):
# the kube-apiserver harness (already built for the unit suite), l2lb-kube (kubelet, kube-proxy,
# kube-controller-manager, kube-scheduler, kubectl) and CoreDNS.
setup_e2e_k8s() {
  command -v go >/dev/null 2>&1 || die "no 'go' on PATH: the e2e cluster's Kubernetes programs cannot be built"
  local s t0
  for s in kube-apiserver kube-cluster coredns; do
    t0=$(date +%s)
    bash "tests/support/$s/build.sh" >/dev/null || die "building tests/support/$s failed (see ~/.cache/l2lb/*-build.log)"
    say "e2e: tests/support/$s ready ($(( $(date +%s) - t0 )) s)"
  done
}
