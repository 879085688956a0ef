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
set -- "$run/redis.conf" --replica-announce-ip "$SELF" --masteruser replication \
  --masterauth "$REPLICATION_PASSWORD" --repl-diskless-sync yes --repl-diskless-sync-delay 0 "$@"
if [ "$master" = "$SELF" ]; then
  exec redis-server "$@" --replicaof no one
fi
exec redis-server "$@" --replicaof "$master" 6379
