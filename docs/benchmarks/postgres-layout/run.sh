#!/bin/sh
# Claims and finishes 96 000 of 100 000 queued runs in batches of BATCH with two pgbench
# clients, alternating the two layouts ROUNDS times; prints transactions per second (one
# transaction = a claim and a finish of BATCH runs: runs per second = tps x BATCH).
# Usage: run.sh 'host=127.0.0.1 user=postgres dbname=test' [BATCH] [ROUNDS]
# Creates (and leaves) the schema `exp` in that database.
set -e
DB=$1; BATCH=${2:-64}; ROUNDS=${3:-3}
HERE=$(dirname "$0")
PGBENCH=${PGBENCH:-pgbench}
psql -q "$DB" -f "$HERE/setup.sql" >/dev/null 2>&1
TXNS=$((96000 / BATCH / 2))
for round in $(seq "$ROUNDS"); do
  for v in a b; do
    psql -q "$DB" -f "$HERE/fill_$v.sql" >/dev/null 2>&1
    psql -q "$DB" -c "ALTER SEQUENCE exp.batch RESTART"
    printf '%s batch %s: ' "$v" "$BATCH"
    "$PGBENCH" -n -c 2 -j 2 -t "$TXNS" -D batch="$BATCH" -f "$HERE/cycle_$v.sql" "$DB" 2>&1 | grep '^tps'
  done
done
