#!/usr/bin/env bash
# Build Helm v4 (helm.sh/helm/v4 from the Go module proxy, version in go.mod) once per machine and
# print the binary's path; cached as ~/.cache/l2lb/helm-<version>-<hash of go.mod go.sum main.go>.
#   bash tests/support/helm/build.sh [--path]
# Used by scripts/dev setup and tests/deploy/test_chart.py (which also puts it on PATH as `helm` for
# `kubectl kustomize --enable-helm`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../go-cached-build.sh" "$here" helm helm.sh/helm/v4 "$@"
