#!/usr/bin/env bash
# Build Docker Compose v2+ (the `docker compose` CLI plugin, module github.com/docker/compose/v5,
# command .../cmd) once per machine: Debian bookworm packages only Compose v1 (docker-compose
# 1.29, Python), and no download site is reachable, so it comes from the Go module proxy.
#
#   bash tests/e2e/compose/build.sh            # build when missing, print the binary path
#   bash tests/e2e/compose/build.sh --path     # only print where the binary is/would be
#
# Cached as ${XDG_CACHE_HOME:-$HOME/.cache}/l2lb/docker-compose-<version>-<hash> (hash of go.mod,
# go.sum, tools.go and this script); a failed build leaves its log in .../docker-compose-build.log.
# Gentle on a shared 2-core machine: nice, GOMAXPROCS=1, go build -p 1; L2LB_GO_JOBS (default 1) and
# L2LB_GO_NICE (default 15) change that (.ci/run: 2 jobs, not niced).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

version=$(awk '{ if ($1 == "require") { $1 = ""; $0 = $0 } } $1 == "github.com/docker/compose/v5" && $2 ~ /^v/ {print $2; exit}' go.mod)
inputs() { cat go.mod go.sum tools.go build.sh; }
hash=$(inputs | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/l2lb
bin=$cache/docker-compose-$version-$hash
log=$cache/docker-compose-build.log

if [ "${1:-}" = "--path" ]; then echo "$bin"; exit 0; fi
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

mkdir -p "$cache"
if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: no 'go' on PATH; install Go >= $(awk '$1 == "go" {print $2; exit}' go.mod)" | tee "$log" >&2
  exit 1
fi

exec 9>"$cache/docker-compose.lock"
flock 9
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi  # another build finished while we waited

echo "build.sh: building docker compose $version (Go module proxy) -> $bin" >&2
start=$(date +%s)
tmp="$bin.tmp.$$"
set +e
GOTOOLCHAIN=local GOFLAGS=-mod=mod GOMAXPROCS="${L2LB_GO_JOBS:-1}" CGO_ENABLED=0 \
  nice -n "${L2LB_GO_NICE:-15}" go build -p "${L2LB_GO_JOBS:-1}" -trimpath \
  -ldflags="-s -w -X github.com/docker/compose/v5/internal.Version=$version" \
  -o "$tmp" github.com/docker/compose/v5/cmd >"$log" 2>&1
rc=$?
set -e
end=$(date +%s)
if [ $rc -ne 0 ]; then
  rm -f "$tmp"
  echo "build.sh: go build failed after $((end - start)) s (exit $rc); log: $log" >&2
  tail -n 40 "$log" >&2
  exit $rc
fi
if [ "$(inputs | sha256sum | cut -c1-16)" != "$hash" ]; then
  rm -f "$tmp"
  echo "build.sh: go changed go.mod/go.sum while building (they were incomplete): review and commit them" >&2
  exit 1
fi
mv -f "$tmp" "$bin"
ls -1t "$cache"/docker-compose-v* 2>/dev/null | grep -v '\.tmp\.' | tail -n +3 | xargs -r rm -f --
size=$(stat -c %s "$bin")
echo "build.sh: built in $((end - start)) s, $((size / 1048576)) MiB: $bin" | tee -a "$log" >&2
echo "$bin"
