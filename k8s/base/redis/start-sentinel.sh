#!/bin/sh
# Sentinel beside each Redis of k8s/base: monitors the master as find_master knows it, quorum a
# majority of the pods, down after L2LB_SENTINEL_DOWN_MS (1000). Its config lives on the pod's
# volume, so that after a whole-cluster reboot it still knows which Redis was the master.
#
# Only IP addresses (peers.sh: each pod's Service ClusterIP): resolve-hostnames no, so Sentinel never
# calls the resolver from its loop (a name it is given is refused, not looked up). Its id (myid) is
# derived from the pod's name and address, the same at every start (this file is rewritten at each
# start): the other sentinels know a restarted one as the sentinel they already count. With a new id
# at a known address, Redis 7 drops the old entry (+sentinel-invalid-addr) but 6.2 keeps it (port 0)
# among the voters, and a failover then needs more votes than the live sentinels can give.
set -eu
tmpl=${L2LB_REDIS_TMPL:-/etc/redis-tmpl}
. "$tmpl/peers.sh"
mkdir -p "$(dirname "$SENTINEL_CONF")"
master=$(find_master)
myid=$(printf 'l2lb-sentinel %s %s' "${L2LB_SENTINEL_ID_SEED:-$(hostname)}" "$SELF" | sha1sum | cut -c1-40)
echo "l2lb sentinel: I am $SELF (id $myid); master: $master; quorum $QUORUM"
cat > "$SENTINEL_CONF.new" <<CONF
port $SENTINEL_PORT
protected-mode no
dir $(dirname "$SENTINEL_CONF")
sentinel myid $myid
sentinel resolve-hostnames no
sentinel announce-hostnames no
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
