#!/usr/bin/env bash
# Build `kustomize build` of sigs.k8s.io/kustomize/api (version in go.mod) once per machine and print the
# binary's path (~/.cache/l2lb/kustomize-<version>-<hash>): ArgoCD's way of rendering helmCharts:, for
# tests/deploy/test_chart.py. Built by scripts/dev setup beside helm.
#   bash tests/support/kustomize/build.sh [--path]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../go-cached-build.sh" "$here" kustomize sigs.k8s.io/kustomize/api "$@"
