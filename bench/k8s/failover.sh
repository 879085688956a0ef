#!/usr/bin/env bash
# Failover of the seed's DNS VIP in a real 3-node Kubernetes, measured on a LAN client's DNS traffic
# (issue 20 item 5): tests/e2e/test_k8s.py with every fault (or those named), the whole run (cluster
# start, install, faults) under the machine's shared benchmark lock, then the figures as a table.
#
#   sudo bash bench/k8s/failover.sh [FAULTS]      FAULTS: all (default) or e.g. a,c,d (a b c d d2 d1 dm)
#
# Env: L2LB_BENCH_LOCK (default /work/.bench.lock when /work exists; "" = no lock),
#      L2LB_E2E_DEATH_S (how long a dead node stays dead, default 75), L2LB_E2E_RESULTS (JSON out).
# Installs/builds what `bash scripts/dev e2e` does (cached per machine) before taking the lock.
set -euo pipefail
cd "$(dirname "$0")/../.."
faults=${1:-all}
lock=${L2LB_BENCH_LOCK-$( [ -d /work ] && echo /work/.bench.lock || echo "")}
stamp=$(date -u +%Y%m%dT%H%MZ)
out=${L2LB_E2E_RESULTS:-${XDG_CACHE_HOME:-$HOME/.cache}/l2lb/e2e-k8s-failover-$stamp.json}
log=${out%.json}.log
# builds and images first (not timed, no lock): only the measured run holds the lock
bash scripts/dev e2e-images >/dev/null
export L2LB_E2E_FAULTS=$faults L2LB_E2E_RESULTS=$out
# only the failover test (scripts/dev e2e runs pytest on all of tests/e2e: -k keeps the locked run short)
run=(bash scripts/dev e2e -k test_l2lb_in_a_real_cluster -s -p no:cacheprovider)
echo "bench/k8s: faults $faults, results $out, log $log${lock:+, lock $lock}" >&2
rc=0
if [ -n "$lock" ]; then
  L2LB_BENCH_LOCK_HELD=$lock flock "$lock" "${run[@]}" >"$log" 2>&1 || rc=$?
else
  "${run[@]}" >"$log" 2>&1 || rc=$?
fi
tail -n 3 "$log" >&2
[ -f "$out" ] && .venv/bin/python bench/k8s/table.py "$out"
exit $rc
