#!/usr/bin/env bash
# Build the real MetalLB controller and speaker (go.universe.tf/metallb from the Go module proxy),
# once per machine, for bench/compare and tests/metallb.
#
#   bash tests/support/metallb/build.sh            # build when missing, print the directory
#   bash tests/support/metallb/build.sh --path     # only print where it is/would be
#
# Result: ${XDG_CACHE_HOME:-$HOME/.cache}/l2lb/metallb-<version>-<hash>/ with
#   controller, speaker   the two binaries, built from the module's own main packages
#   crds/*.yaml           MetalLB's CRDs, copied from the module's config/crd/bases at build time
#                         (applied at run time; never committed here)
#   build.json            version, build seconds, sizes
# <hash> covers go.mod and go.sum (tests/support/metallb/harness.py computes the same name).
# Gentle on a shared 2-core machine: nice 15, GOMAXPROCS=1, go build -p 1, one build at a time (flock);
# L2LB_GO_JOBS (default 1) and L2LB_GO_NICE (default 15) change that (.ci/run: 2 jobs, not niced).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

version=$(awk '$1 == "go.universe.tf/metallb" && $2 ~ /^v/ {print $2; exit}' go.mod)
hash=$(cat go.mod go.sum | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/l2lb
out=$cache/metallb-$version-$hash
log=$cache/metallb-build.log

if [ "${1:-}" = "--path" ]; then echo "$out"; exit 0; fi
if [ -x "$out/speaker" ] && [ -x "$out/controller" ]; then echo "$out"; exit 0; fi

mkdir -p "$cache"
if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: no 'go' on PATH; install Go >= $(awk '$1 == "go" {print $2; exit}' go.mod)" | tee "$log" >&2
  exit 1
fi

exec 9>"$cache/metallb.lock"
flock 9
if [ -x "$out/speaker" ] && [ -x "$out/controller" ]; then echo "$out"; exit 0; fi

echo "build.sh: building MetalLB $version (go.universe.tf/metallb from the Go module proxy) -> $out" >&2
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/crds"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOMAXPROCS="${L2LB_GO_JOBS:-1}" CGO_ENABLED=0
start=$(date +%s)
: >"$log"
rc=0
for prog in speaker controller; do
  ldflags="-s -w"
  if ! nice -n "${L2LB_GO_NICE:-15}" go build -p "${L2LB_GO_JOBS:-1}" -trimpath -ldflags="$ldflags" -o "$tmp/$prog" "go.universe.tf/metallb/$prog" >>"$log" 2>&1; then
    rc=1
    break
  fi
done
end=$(date +%s)
if [ $rc -ne 0 ]; then
  rm -rf "$tmp"
  echo "build.sh: go build failed after $((end - start)) s; log: $log" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
if [ "$(cat go.mod go.sum | sha256sum | cut -c1-16)" != "$hash" ]; then
  rm -rf "$tmp"
  echo "build.sh: go changed go.mod/go.sum while building (they were incomplete): review and commit them" >&2
  exit 1
fi
moddir=$(go list -m -f '{{.Dir}}' go.universe.tf/metallb)
cp "$moddir"/config/crd/bases/*.yaml "$tmp/crds/"
chmod -R u+w "$tmp/crds"
printf '{"version": "%s", "build_seconds": %d, "speaker_bytes": %d, "controller_bytes": %d}\n' \
  "$version" "$((end - start))" "$(stat -c %s "$tmp/speaker")" "$(stat -c %s "$tmp/controller")" >"$tmp/build.json"
rm -rf "$out"
mv "$tmp" "$out"
# keep the two newest builds
ls -1dt "$cache"/metallb-v* 2>/dev/null | grep -v '\.tmp\.' | tail -n +3 | xargs -r rm -rf --
echo "build.sh: built in $((end - start)) s: $out" | tee -a "$log" >&2
echo "$out"
