#!/usr/bin/env bash
# Benchmark (not a timed test): an isolated drill on the lab beside the raw
# steps it wraps, measured in the same run. Fixed workload: a fresh lab,
# `pgbench -i -s $SCALE` (default 20, ~320 MB) on the primary and a
# pgbench writer (-R 200 tps) running throughout, then
#   1. `drctl drill` of an isolated definition: the clone step's copy,
#      consistent and promote times, the drill's RTO (from the cut to the
#      end of the smoke check) and the whole run;
#   2. raw: `pg_basebackup -X stream -c fast` from the standby, the same
#      safe settings, `postgres` started until it accepts connections,
#      `pg_promote()`: each timed by this script alone.
# Prints both and the ratios. DRCTL_BIN picks the binary (default: a debug
# build in $CARGO_TARGET_DIR or target/).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-20}
tgt=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${DRCTL_BIN:-}" ]; then cargo build -p drctl >/dev/null 2>&1; DRCTL_BIN=$tgt/debug/drctl; fi
drctl=$DRCTL_BIN
work=$(mktemp -d); chmod 755 "$work"
export DRCTL_STATE_DIR=$work/state
trap '$drctl lab down >/dev/null 2>&1 || true; kill ${writer:-0} 2>/dev/null || true; rm -rf "$work"' EXIT
for v in $(env | grep -o '^PG[A-Z]*'); do unset "$v"; done
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
now_ms() { date +%s%3N; }
json() { python3 -c "import json,sys; v=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
$drctl lab up >/dev/null
chmod 755 "$DRCTL_STATE_DIR"
lab=$($drctl --output json lab status)
p1=$(echo "$lab" | json 'v["ports"]["pg-primary"]'); p2=$(echo "$lab" | json 'v["ports"]["pg-dr"]')
export PGPASSWORD=$(cat "$DRCTL_STATE_DIR/lab/pgpass") PGSSLMODE=require
"$bindir/pgbench" -h 127.0.0.1 -p "$p1" -U drctl -i -s "$SCALE" -q postgres >/dev/null 2>&1
"$bindir/pgbench" -h 127.0.0.1 -p "$p1" -U drctl -R 200 -T 600 -c 2 postgres >/dev/null 2>&1 &
writer=$!
sleep 3
cat > "$work/bench.yaml" <<DEF
name: bench-isolated
runbook: $PWD/runbooks/isolated-drill.yaml
environment: $DRCTL_STATE_DIR/lab/env.yaml
mode: isolated
params:
  scratch: $work/scratch
DEF
out=$($drctl --output json drill "$work/bench.yaml" --yes)
run=$(echo "$out" | json 'v["run_id"]')
rto=$(echo "$out" | json 'v["measurements"]["rto_ms"]')
rep=$($drctl --output json report "$run" --format json)
step() { echo "$rep" | python3 -c "
import json,sys
r=json.load(sys.stdin)
print([s for s in r['steps'] if s['id']=='$1'][0]['outputs']['$2'])"; }
copy=$(step clone copy_ms); cons=$(step clone consistent_ms); prom=$(step clone promote_ms)
bytes=$(step clone copied_bytes); lag=$(echo "$rep" | python3 -c "
import json,sys
r=json.load(sys.stdin)
print([s for s in r['steps'] if s['id']=='clone'][0]['outputs']['rpo']['time_lost_ms'])")
total=$(echo "$rep" | python3 -c "
import json,sys
r=json.load(sys.stdin)
s=[x for x in r['steps'] if x.get('started_ms')]
print(max(x['finished_ms'] for x in s)-min(x['started_ms'] for x in s))")

# raw, as the server user, same settings
raw=$work/raw; mkdir -p "$raw"; chown postgres "$raw"; chmod 700 "$raw"
printf '*:*:*:drctl:%s\n' "$PGPASSWORD" > "$raw/pgpass"; chown postgres "$raw/pgpass"; chmod 600 "$raw/pgpass"
as_pg() { runuser -u postgres -- env HOME="$raw" PGPASSFILE="$raw/pgpass" PGSSLMODE=require "$@"; }
t0=$(now_ms)
as_pg "$bindir/pg_basebackup" -h 127.0.0.1 -p "$p2" -U drctl -D "$raw/data" -X stream -c fast --no-sync
t1=$(now_ms)
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
rm -f "$raw/data/standby.signal" "$raw/data/recovery.signal"
cat >> "$raw/data/postgresql.auto.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$raw'
archive_mode = off
archive_command = ''
restore_command = ''
primary_conninfo = ''
primary_slot_name = ''
ssl = off
logging_collector = off
CONF
touch "$raw/data/standby.signal"; chown postgres "$raw/data/standby.signal" "$raw/data/postgresql.auto.conf"
t2=$(now_ms)
as_pg "$bindir/postgres" -D "$raw/data" >"$raw/log" 2>&1 &
until as_pg "$bindir/psql" -h "$raw" -p "$port" -U drctl -d postgres -Atc 'select 1' >/dev/null 2>&1; do sleep 0.01; done
t3=$(now_ms)
as_pg "$bindir/psql" -h "$raw" -p "$port" -U drctl -d postgres -Atc 'select pg_promote(true, 60)' >/dev/null
t4=$(now_ms)
as_pg "$bindir/pg_ctl" -D "$raw/data" -m immediate stop >/dev/null 2>&1 || true
rcopy=$((t1-t0)); rstart=$((t3-t2)); rprom=$((t4-t3))
python3 - "$copy" "$cons" "$prom" "$rto" "$total" "$rcopy" "$rstart" "$rprom" "$bytes" "$lag" <<'PY'
import sys
copy, cons, prom, rto, total, rcopy, rstart, rprom, nbytes = map(float, sys.argv[1:10])
lag = sys.argv[10]
print(f"workload: {nbytes/2**20:.0f} MiB cloned from the standby, pgbench writer at 200 tps throughout")
print(f"isolated drill: copy {copy:.0f} ms, consistent {cons:.0f} ms, promote {prom:.0f} ms; RTO (cut -> smoke) {rto:.0f} ms; whole run {total:.0f} ms; RPO at the cut {lag} ms")
print(f"raw:            pg_basebackup {rcopy:.0f} ms, start {rstart:.0f} ms, promote {rprom:.0f} ms; total {rcopy+rstart+rprom:.0f} ms")
print(f"ratios: copy {copy/rcopy:.2f}x raw; copy+consistent+promote {(copy+cons+prom)/(rcopy+rstart+rprom):.2f}x raw; whole drill {total/(rcopy+rstart+rprom):.2f}x raw")
PY
