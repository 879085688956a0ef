#!/usr/bin/env bash
# Build CoreDNS (only the cluster-DNS plugins, see main.go) for the end-to-end cluster, once per machine.
#   bash tests/support/coredns/build.sh [--path]    # prints the binary's path
exec bash "$(dirname "$0")/../go-cached-build.sh" "$(dirname "$0")" coredns github.com/coredns/coredns "$@"
