#!/bin/sh
# A failover runbook as an operator writes one: promote the standby, wait
# until it takes writes, then point the address the clients use at it.
# pgchaos runs it from an exec step, with every node's address in the
# environment (PGCHAOS_NODE_<NAME>_DSN, _HOST, _PORT, _DATA), the control
# API of the experiment's proxies (PGCHAOS_API) and PostgreSQL's binaries
# (PGCHAOS_PG_BINDIR). Against your own cluster, this is where your
# commands (patronictl failover, pg_ctl promote, a DNS or VIP change) go.
set -eu

new_primary=${NEW_PRIMARY:-standby1}
proxy=${VIP_PROXY:-vip}
upper=$(echo "$new_primary" | tr '[:lower:]' '[:upper:]')
eval dsn=\$PGCHAOS_NODE_${upper}_DSN
eval host=\$PGCHAOS_NODE_${upper}_HOST
eval port=\$PGCHAOS_NODE_${upper}_PORT
psql=${PGCHAOS_PG_BINDIR:+$PGCHAOS_PG_BINDIR/}psql

echo "runbook: promoting $new_primary"
"$psql" "$dsn" -qAtX -c "SELECT pg_promote(wait => true, wait_seconds => 30)"

echo "runbook: waiting for $new_primary to accept writes"
i=0
until [ "$("$psql" "$dsn" -qAtX -c 'SELECT NOT pg_is_in_recovery()')" = t ]; do
  i=$((i + 1))
  [ "$i" -lt 100 ] || { echo "runbook: $new_primary is still in recovery" >&2; exit 1; }
  sleep 0.1
done

echo "runbook: pointing $proxy at $host:$port"
curl -fsS -X POST "$PGCHAOS_API/proxies/$proxy" -H 'Content-Type: application/json' \
  -d "{\"upstream\": \"$host:$port\"}" >/dev/null
echo "runbook: done"
