#!/bin/sh
# Redis of k8s/base. L2LB_REDIS_MODE=sentinel (default): the master when the sentinels (or, on a
# fresh install, pod 0) say so, else that master's replica. single: one Redis, nothing else.
set -eu
tmpl=${L2LB_REDIS_TMPL:-/etc/redis-tmpl}
run=${L2LB_REDIS_RUN:-/etc/redis-run}
# a writable copy: Sentinel makes Redis rewrite its config on failover (CONFIG REWRITE)
cp "$tmpl/redis.conf" "$run/redis.conf"
if [ "${L2LB_REDIS_MODE:-sentinel}" = single ]; then
  exec redis-server "$run/redis.conf" "$@"
fi
. "$tmpl/peers.sh"
master=$(find_master)
echo "l2lb redis: I am $SELF; master: $master"
# replica-announce-ip: the master lists this replica (INFO) under this pod's Service ClusterIP, and the
# sentinels reach it there (peers.sh)
# min-replicas-to-write: a master cut off from its replicas (its node partitioned: the sentinels
# promote another) refuses writes after min-replicas-max-lag seconds, so l2lb's services on its side
# cannot go on with a second, diverging Redis until Sentinel demotes it
set -- "$run/redis.conf" --replica-announce-ip "$SELF" --masteruser replication \
  --masterauth "$REPLICATION_PASSWORD" --repl-diskless-sync yes --repl-diskless-sync-delay 0 \
  --min-replicas-to-write 1 --min-replicas-max-lag "${L2LB_REDIS_MAX_LAG_S:-3}" "$@"
if [ "$master" = "$SELF" ]; then
  exec redis-server "$@" --replicaof no one
fi
exec redis-server "$@" --replicaof "$master" 6379
