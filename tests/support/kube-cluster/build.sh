#!/usr/bin/env bash
# Build l2lb-kube (kubelet, kube-proxy, kube-controller-manager, kube-scheduler and kubectl of
# k8s.io/kubernetes, one binary) for the end-to-end cluster of tests/e2e, once per machine.
#   bash tests/support/kube-cluster/build.sh [--path]    # prints the binary's path
# Same module versions as ../kube-apiserver, so the Go build cache compiles shared packages once.
exec bash "$(dirname "$0")/../go-cached-build.sh" "$(dirname "$0")" l2lb-kube k8s.io/kubernetes "$@"
