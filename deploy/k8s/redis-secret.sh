#!/usr/bin/env sh
# Print the l2lb-system Namespace and Secret l2lb-redis with fresh random passwords, for the
# in-cluster Redis of k8s/base:   sh deploy/k8s/redis-secret.sh | kubectl apply -f -
#
# Keys: <user>-password for each Redis ACL user (allocator, leases, announcer) and
# <service>-dsn, the DSN each service connects with. Run it ONCE: a second run would change the
# passwords (then restart Redis and l2lb so both sides pick up the new Secret).
# External Redis instead (k8s/overlays/external-redis): pass the DSNs yourself, e.g.
#   L2LB_REDIS_URL_BASE=rediss://redis.example:6380/0 sh deploy/k8s/redis-secret.sh
# builds rediss://allocator:<pw>@redis.example:6380/0 etc. (create those users on your Redis).
set -eu
ns=${L2LB_NAMESPACE:-l2lb-system}
base=${L2LB_REDIS_URL_BASE:-redis://l2lb-redis.${ns}.svc:6379/0}
scheme=${base%%://*}
rest=${base#*://}
pw() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
a=$(pw); l=$(pw); n=$(pw)
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
  allocator-dsn: "${scheme}://allocator:${a}@${rest}"
  leases-dsn: "${scheme}://leases:${l}@${rest}"
  announcer-dsn: "${scheme}://announcer:${n}@${rest}"
YAML
