# Sourced by start-redis.sh and start-sentinel.sh (k8s/base/redis). POSIX sh (busybox in the image).
#
# SELF   the name this pod announces (its FQDN behind the headless Service: stable across restarts)
# PEERS  every pod of the StatefulSet, pod 0 first (L2LB_REDIS_REPLICAS of them; or L2LB_REDIS_PEERS)
# find_master  prints the current master: what most live sentinels say (any peer's, ours included),
#        else (none answers after L2LB_REDIS_DISCOVERY_ROUNDS tries, 1 s apart) the master the last
#        sentinel config on our volume knew (a whole-cluster reboot), else pod 0 (a fresh install).
SELF=${L2LB_REDIS_SELF:-$(hostname -f)}
if [ -n "${L2LB_REDIS_PEERS:-}" ]; then
  PEERS=$L2LB_REDIS_PEERS
else
  _suffix=${SELF#"$(hostname)"}   # .l2lb-redis-headless.<namespace>.svc.<cluster domain>
  _sts=$(hostname); _sts=${_sts%-*}
  PEERS=""; _i=0
  while [ "$_i" -lt "${L2LB_REDIS_REPLICAS:-3}" ]; do PEERS="$PEERS $_sts-$_i$_suffix"; _i=$((_i + 1)); done
fi
_n=0; FIRST=""
for _p in $PEERS; do _n=$((_n + 1)); [ -n "$FIRST" ] || FIRST=$_p; done
QUORUM=$(( _n / 2 + 1 ))
SENTINEL_PORT=${L2LB_SENTINEL_PORT:-26379}
SENTINEL_CONF=${L2LB_SENTINEL_DIR:-/data/sentinel}/sentinel.conf
MASTER_NAME=${L2LB_SENTINEL_MASTER:-l2lb}

ask_sentinel() {  # $1 host -> prints the master it knows, or nothing
  REDISCLI_AUTH=${SENTINEL_PASSWORD:-} timeout 2 redis-cli --no-auth-warning --raw -h "$1" -p "$SENTINEL_PORT" \
    sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 | grep -v -e '^$' -e ERR -e NOAUTH \
    -e WRONGPASS -e 'Could not connect' || true
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
    if [ -n "$_m" ]; then echo "$_m"; return 0; fi
  fi
  echo "$FIRST"
}
