#!/usr/bin/env sh
# Print the l2lb-system Namespace and Secret l2lb-redis with fresh random passwords, for the
# in-cluster Redis of k8s/base:   sh deploy/k8s/redis-secret.sh | kubectl apply -f -
#
# Keys: <user>-password for each Redis ACL user (allocator, leases, announcer; replication and
# sentinel for Redis itself), peer-key (the announcers' shared key for their LAN peer heartbeats) and the DSN
# each service connects with: <service>-dsn through the
# sentinels (k8s/base: 3 Redis + Sentinel), <service>-dsn-single straight to the one Redis of
# k8s/overlays/single-node. Run it ONCE: a second run would change the passwords (then restart
# Redis and l2lb so both sides pick up the new Secret).
# External Redis instead (k8s/overlays/external-redis): pass the DSNs yourself, e.g.
#   L2LB_REDIS_URL_BASE=rediss://redis.example:6380/0 sh deploy/k8s/redis-secret.sh
# builds rediss://allocator:<pw>@redis.example:6380/0 etc. for both keys (create those users on your Redis).
set -eu
ns=${L2LB_NAMESPACE:-l2lb-system}
pw() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
a=$(pw); l=$(pw); n=$(pw); r=$(pw); s=$(pw); k=$(pw)
single=${L2LB_REDIS_URL_BASE:-redis://l2lb-redis.${ns}.svc:6379/0}
base=${L2LB_REDIS_URL_BASE:-redis+sentinel://l2lb-redis-sentinel.${ns}.svc:26379/l2lb/0?sentinel_password=${s}&socket_timeout=2&connect_timeout=1}
scheme=${base%%://*}
rest=${base#*://}
sscheme=${single%%://*}
srest=${single#*://}
cat <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: ${ns}
---
apiVersion: v1
kind: Secret
metadata:
  name: l2lb-redis
  namespace: ${ns}
  labels:
    app.kubernetes.io/name: l2lb
type: Opaque
stringData:
  allocator-password: "${a}"
  leases-password: "${l}"
  announcer-password: "${n}"
  replication-password: "${r}"
  sentinel-password: "${s}"
  peer-key: "${k}"
  allocator-dsn: "${scheme}://allocator:${a}@${rest}"
  leases-dsn: "${scheme}://leases:${l}@${rest}"
  announcer-dsn: "${scheme}://announcer:${n}@${rest}"
  allocator-dsn-single: "${sscheme}://allocator:${a}@${srest}"
  leases-dsn-single: "${sscheme}://leases:${l}@${srest}"
  announcer-dsn-single: "${sscheme}://announcer:${n}@${srest}"
YAML
