#!/bin/sh
# Sentinel beside each Redis of k8s/base: monitors the master as find_master knows it, quorum a
# majority of the pods, down after L2LB_SENTINEL_DOWN_MS (1000). Its config lives on the pod's
# volume, so that after a whole-cluster reboot it still knows which Redis was the master.
set -eu
tmpl=${L2LB_REDIS_TMPL:-/etc/redis-tmpl}
. "$tmpl/peers.sh"
mkdir -p "$(dirname "$SENTINEL_CONF")"
master=$(find_master)
echo "l2lb sentinel: I am $SELF; master: $master; quorum $QUORUM"
cat > "$SENTINEL_CONF.new" <<CONF
port $SENTINEL_PORT
protected-mode no
dir $(dirname "$SENTINEL_CONF")
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SELF
requirepass "$SENTINEL_PASSWORD"
sentinel sentinel-pass "$SENTINEL_PASSWORD"
sentinel monitor $MASTER_NAME $master 6379 $QUORUM
sentinel auth-user $MASTER_NAME sentinel
sentinel auth-pass $MASTER_NAME $SENTINEL_PASSWORD
sentinel down-after-milliseconds $MASTER_NAME ${L2LB_SENTINEL_DOWN_MS:-1000}
sentinel failover-timeout $MASTER_NAME ${L2LB_SENTINEL_FAILOVER_TIMEOUT_MS:-10000}
sentinel parallel-syncs $MASTER_NAME 1
CONF
mv "$SENTINEL_CONF.new" "$SENTINEL_CONF"
exec redis-server "$SENTINEL_CONF" --sentinel "$@"
