# Sourced by start-redis.sh and start-sentinel.sh (k8s/base/redis). POSIX sh (busybox in the image).
#
# Addresses, not names: every Redis pod has its own ClusterIP Service (l2lb-redis-N, selecting the pod
# by statefulset.kubernetes.io/pod-name), a virtual IP that kube-proxy forwards to the pod wherever it
# runs and that stays the same across pod restarts and whole-cluster reboots. Redis and Sentinel
# announce and use only these IPs (start-sentinel.sh: resolve-hostnames no), so no name lookup ever
# runs inside Sentinel's single-threaded loop -- where a lookup sent to a dead node's CoreDNS blocked
# it into TILT mode for 70-120 s (docs/install.md, "Redis and cluster DNS"). The names are resolved
# once, here, before exec: blocking at start harms nobody.
#
# SELF   this pod's address (its Service's ClusterIP; or L2LB_REDIS_SELF)
# PEERS  every pod's address, pod 0 first (L2LB_REDIS_REPLICAS of them; or L2LB_REDIS_PEERS)
# PEER_NAMES  their pod names, same order (to read the names older versions announced)
# find_master  prints the current master: what most live sentinels say (any peer's, ours included),
#        else (none answers after L2LB_REDIS_DISCOVERY_ROUNDS tries, 1 s apart) the master the last
#        sentinel config on our volume knew (a whole-cluster reboot), else pod 0 (a fresh install).
is_ip() {  # an IPv4 or IPv6 literal (what getaddrinfo answers without a query)
  case $1 in
    '' | *[!0-9A-Fa-f.:]*) return 1 ;;
    *:* | *.*.*.*) return 0 ;;
  esac
  return 1
}

resolve_ip() {  # $1 a name or an address -> prints its address; tries for L2LB_REDIS_RESOLVE_S (120) s
  if is_ip "$1"; then echo "$1"; return 0; fi
  _t=0
  while [ "$_t" -lt "${L2LB_REDIS_RESOLVE_S:-120}" ]; do
    _ip=$(getent hosts "$1" 2>/dev/null | awk 'NR == 1 {print $1}')
    if is_ip "$_ip"; then echo "$_ip"; return 0; fi
    _t=$((_t + 1))
    sleep 1
  done
  echo "l2lb redis: cannot resolve $1 for ${L2LB_REDIS_RESOLVE_S:-120} s: is Service ${1%%.*} there (kubectl get svc ${1%%.*}), and the cluster DNS up?" >&2
  return 1
}

_pod=$(hostname)
_sts=${_pod%-*}
PEER_NAMES=${L2LB_REDIS_PEER_NAMES:-}
if [ -z "$PEER_NAMES" ]; then
  _i=0
  while [ "$_i" -lt "${L2LB_REDIS_REPLICAS:-3}" ]; do PEER_NAMES="$PEER_NAMES $_sts-$_i"; _i=$((_i + 1)); done
fi
if [ -z "${L2LB_REDIS_PEERS:-}" ] || [ -z "${L2LB_REDIS_SELF:-}" ]; then
  # <pod>.<headless Service>.<namespace>.svc.<cluster domain> (kubelet's /etc/hosts) -> <namespace>.svc.<domain>
  _fqdn=$(hostname -f)
  _zone=${_fqdn#"$_pod".}
  _zone=${_zone#*.}
  [ "$_zone" != "$_fqdn" ] || { echo "l2lb redis: cannot tell the namespace from 'hostname -f' ($_fqdn)" >&2; exit 1; }
fi
if [ -n "${L2LB_REDIS_PEERS:-}" ]; then
  PEERS=$L2LB_REDIS_PEERS
else
  PEERS=""
  for _p in $PEER_NAMES; do _a=$(resolve_ip "$_p.$_zone.") || exit 1; PEERS="$PEERS $_a"; done
fi
SELF=${L2LB_REDIS_SELF:-}
if [ -z "$SELF" ]; then SELF=$(resolve_ip "$_pod.$_zone.") || exit 1; fi
_n=0; FIRST=""
for _p in $PEERS; do _n=$((_n + 1)); [ -n "$FIRST" ] || FIRST=$_p; done
QUORUM=$(( _n / 2 + 1 ))
SENTINEL_PORT=${L2LB_SENTINEL_PORT:-26379}
SENTINEL_CONF=${L2LB_SENTINEL_DIR:-/data/sentinel}/sentinel.conf
MASTER_NAME=${L2LB_SENTINEL_MASTER:-l2lb}

peer_address() {  # $1 what a sentinel or an old config names -> the peer's address, or nothing
  # an address of ours as is; a pod name (older versions announced l2lb-redis-N.l2lb-redis-headless...)
  # as that pod's address; anything else (another cluster's, a stale IP) is not trusted
  for _a in $PEERS; do [ "$_a" = "$1" ] && { echo "$_a"; return 0; }; done
  _j=0
  for _name in $PEER_NAMES; do
    _j=$((_j + 1))
    case $1 in
      "$_name" | "$_name".*) echo "$PEERS" | awk -v j="$_j" '{print $j}'; return 0 ;;
    esac
  done
  return 0
}

ask_sentinel() {  # $1 address -> prints the master it knows, or nothing
  _m=$(REDISCLI_AUTH=${SENTINEL_PASSWORD:-} timeout 2 redis-cli --no-auth-warning --raw -h "$1" -p "$SENTINEL_PORT" \
    sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 | grep -v -e '^$' -e ERR -e NOAUTH \
    -e WRONGPASS -e 'Could not connect' || true)
  [ -z "$_m" ] || peer_address "$_m"
}

find_master() {
  # the sentinels that answer vote (a restarted one may still hold an old view: the majority wins);
  # none answering: retry a few times (they may be busy), then the volume's last view, then pod 0
  _round=0
  while [ "$_round" -lt "${L2LB_REDIS_DISCOVERY_ROUNDS:-5}" ]; do
    _answers=""
    for _p in $PEERS; do
      _m=$(ask_sentinel "$_p")
      if [ -n "$_m" ]; then _answers="$_answers$_m
"; fi
    done
    if [ -n "$_answers" ]; then
      printf '%s' "$_answers" | sort | uniq -c | sort -rn | head -n 1 | awk '{print $2}'
      return 0
    fi
    _round=$((_round + 1))
    sleep 1
  done
  if [ -f "$SENTINEL_CONF" ]; then
    _m=$(sed -n "s/^sentinel monitor $MASTER_NAME \([^ ]*\) .*/\1/p" "$SENTINEL_CONF" | head -n 1)
    _m=$(peer_address "$_m")
    if [ -n "$_m" ]; then echo "$_m"; return 0; fi
  fi
  echo "$FIRST"
}
