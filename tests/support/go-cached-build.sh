#!/usr/bin/env bash
# Build one Go program of the test infrastructure once per machine and print the binary's path.
#
#   bash tests/support/go-cached-build.sh DIR NAME MODULE [--path]
#
# DIR holds main module (go.mod + committed go.sum + *.go); the binary is cached as
# ${XDG_CACHE_HOME:-$HOME/.cache}/l2lb/NAME-<version of MODULE in go.mod>-<sha256(go.mod go.sum *.go)[:16]>
# (tests/e2e/cluster.py computes the same name). --path: only print where it is/would be.
# A failed build leaves its output in .../l2lb/NAME-build.log. Gentle on a shared 2-core machine:
# nice 15, GOMAXPROCS=1, go build -p 1 (L2LB_GO_NICE, L2LB_GO_JOBS change them); a flock per NAME serialises concurrent builds; the three
# newest builds of NAME are kept. Used by kube-cluster/build.sh and coredns/build.sh.
set -euo pipefail
dir=$(cd "$1" && pwd); name=$2; module=$3; mode=${4:-}
cd "$dir"
version=$(awk -v m="$module" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' go.mod)
[ -n "$version" ] || { echo "go-cached-build: $module not found in $dir/go.mod" >&2; exit 1; }
srchash() { cat go.mod go.sum *.go | sha256sum | cut -c1-16; }
hash=$(srchash)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/l2lb
bin=$cache/$name-$version-$hash
log=$cache/$name-build.log

if [ "$mode" = "--path" ]; then echo "$bin"; exit 0; fi
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$cache"
if ! command -v go >/dev/null 2>&1; then
  echo "go-cached-build: no 'go' on PATH; install Go >= $(awk '$1 == "go" {print $2; exit}' go.mod)" | tee "$log" >&2
  exit 1
fi
exec 9>"$cache/$name.lock"
flock 9
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi  # another build finished while we waited

ldflags="-s -w"
if [ "$module" = k8s.io/kubernetes ]; then
  minor=$(echo "$version" | cut -d. -f2)
  ldflags="$ldflags -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1"
  ldflags="$ldflags -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
fi
if [ "$module" = helm.sh/helm/v4 ]; then
  ldflags="$ldflags -X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
fi
echo "go-cached-build: building $name ($module $version from the Go module proxy) -> $bin" >&2
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
  echo "go-cached-build: go build of $name failed after $((end - start)) s (exit $rc); log: $log" >&2
  tail -n 40 "$log" >&2
  exit $rc
fi
if [ "$(srchash)" != "$hash" ]; then
  rm -f "$tmp"
  echo "go-cached-build: go changed go.mod/go.sum of $dir while building (they were incomplete): review and commit them" >&2
  exit 1
fi
mv -f "$tmp" "$bin"
ls -1t "$cache/$name"-v* 2>/dev/null | grep -v '\.tmp\.' | tail -n +4 | xargs -r rm -f --
size=$(stat -c %s "$bin")
echo "go-cached-build: built $name in $((end - start)) s, $((size / 1048576)) MiB: $bin" | tee -a "$log" >&2
echo "$bin"
