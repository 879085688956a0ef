#!/usr/bin/env bash
# Build the real kube-apiserver (+ embedded etcd) used by the test suite, once per machine.
#
#   bash tests/support/kube-apiserver/build.sh            # build when missing, print the binary path
#   bash tests/support/kube-apiserver/build.sh --path     # only print where the binary is/would be
#
# The binary is cached as ${XDG_CACHE_HOME:-$HOME/.cache}/l2lb/kube-apiserver-<k8s version>-<hash>,
# the hash covering go.mod, go.sum and main.go (tests/support/kube_real.py computes the same name).
# A failed build leaves its output in .../l2lb/kube-apiserver-build.log (the fixture shows it).
# Gentle on a shared 2-core machine: nice, GOMAXPROCS=1, go build -p 1; L2LB_GO_JOBS (default 1) and
# L2LB_GO_NICE (default 15) change that (.ci/run: 2 jobs, not niced).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)
hash=$(cat go.mod go.sum main.go | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/l2lb
bin=$cache/kube-apiserver-$version-$hash
log=$cache/kube-apiserver-build.log

if [ "${1:-}" = "--path" ]; then echo "$bin"; exit 0; fi
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

mkdir -p "$cache"
if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: no 'go' on PATH; install Go >= $(awk '$1 == "go" {print $2; exit}' go.mod)" | tee "$log" >&2
  exit 1
fi

exec 9>"$cache/kube-apiserver.lock"
flock 9
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi  # another build finished while we waited

minor=$(echo "$version" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1"
ldflags="$ldflags -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"

echo "build.sh: building kube-apiserver $version (k8s.io/kubernetes from the Go module proxy) -> $bin" >&2
start=$(date +%s)
tmp="$bin.tmp.$$"
set +e
GOTOOLCHAIN=local GOFLAGS=-mod=mod GOMAXPROCS="${L2LB_GO_JOBS:-1}" CGO_ENABLED=0 \
  nice -n "${L2LB_GO_NICE:-15}" go build -p "${L2LB_GO_JOBS:-1}" -trimpath -ldflags="$ldflags" -o "$tmp" . >"$log" 2>&1
rc=$?
set -e
end=$(date +%s)
if [ $rc -ne 0 ]; then
  rm -f "$tmp"
  echo "build.sh: go build failed after $((end - start)) s (exit $rc); log: $log" >&2
  tail -n 40 "$log" >&2
  exit $rc
fi
if [ "$(cat go.mod go.sum main.go | sha256sum | cut -c1-16)" != "$hash" ]; then
  rm -f "$tmp"
  echo "build.sh: go changed go.mod/go.sum while building (they were incomplete): review and commit them" >&2
  exit 1
fi
mv -f "$tmp" "$bin"
# Keep the three newest builds (other checkouts may pin other versions); drop older ones (~105 MiB each).
ls -1t "$cache"/kube-apiserver-v* 2>/dev/null | grep -v '\.tmp\.' | tail -n +4 | xargs -r rm -f --
size=$(stat -c %s "$bin")
echo "build.sh: built in $((end - start)) s, $((size / 1048576)) MiB: $bin" | tee -a "$log" >&2
echo "$bin"
