#!/usr/bin/env bash
# Benchmark: switchover write unavailability and failback time on the lab,
# beside the raw steps measured in the same run. Fixed workload per round:
# a fresh lab, `pgbench -i -s 10` (~160 MB) on the primary, then
#   1. `drctl switchover --to dr` while a writer (psql, one insert per try,
#      to whichever server takes it) records first failed -> first
#      successful write; the switchover step's raw parts (fast stop, wait
#      for replay past the shutdown checkpoint, promote) come from its
#      journaled outputs;
#   2. `drctl switchover --to primary` (back);
#   3. a drill with 1 s of lag, then `drctl failback latest`: its run time
#      beside the raw pg_rewind (timed by the rewind step around the tool
#      alone), the rejoin catch-up and the switchover back.
# Prints medians over ROUNDS rounds and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
cargo build --release -p drctl >/dev/null 2>&1
drctl=$PWD/target/release/drctl
export DRCTL_STATE_DIR=${DRCTL_STATE_DIR:-$(mktemp -d)/state}
env_file=$DRCTL_STATE_DIR/lab/env.yaml
for v in $(env | grep -o '^PG[A-Z]*'); do unset "$v"; done
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
now_ms() { date +%s%3N; }
json() { python3 -c "import json,sys; v=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
step_out() { $drctl --output json report "$1" --format json | python3 -c "
import json,sys
r=json.load(sys.stdin)
print([s for s in r['steps'] if s['id']=='$2'][0]['outputs']['$3'])"; }
run_ms() { $drctl --output json report "$1" --format json | python3 -c "
import json,sys
r=json.load(sys.stdin)
s=[x for x in r['steps'] if x.get('started_ms')]
print(max(x['finished_ms'] for x in s)-min(x['started_ms'] for x in s))"; }
unavail=(); blocked=(); stop=(); wait=(); promote=(); fb=(); rewind=(); catchup=(); swback=()
for i in $(seq 1 "$ROUNDS"); do
  $drctl lab down >/dev/null 2>&1 || true
  $drctl lab up >/dev/null
  lab=$($drctl --output json lab status)
  p1=$(echo "$lab" | json 'v["ports"]["pg-primary"]'); p2=$(echo "$lab" | json 'v["ports"]["pg-dr"]')
  export PGPASSWORD=$(cat "$(echo "$lab" | json 'v["spec"]["password_file"]')") PGUSER=$(echo "$lab" | json 'v["spec"]["superuser"]')
  export PGDATABASE=postgres PGHOST=127.0.0.1 PGSSLMODE=verify-full PGSSLROOTCERT=$(echo "$lab" | json 'v["spec"]["ca_cert"]') PGCONNECT_TIMEOUT=1
  "$bindir/pgbench" -q -i -s 10 -p "$p1" >/dev/null 2>&1
  psql -p "$p1" -Atqc "create table bench_writes (id bigint primary key, at timestamptz default now())"
  sleep 1
  log=$(mktemp)
  ( n=0; while [ ! -e "$log.stop" ]; do n=$((n+1))
      if psql -p "$p1" -Atqc "insert into bench_writes(id) values ($n)" >/dev/null 2>&1 \
         || psql -p "$p2" -Atqc "insert into bench_writes(id) values ($n)" >/dev/null 2>&1; then
        echo "$(now_ms) ok $n" >>"$log"; else echo "$(now_ms) fail $n" >>"$log"; fi
    done ) &
  writer=$!
  sleep 1
  $drctl switchover --to dr --env "$env_file" --yes >/dev/null 2>&1
  run=$($drctl --output json runs | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["run_id"])')
  sleep 1; touch "$log.stop"; wait "$writer" || true
  unavail+=("$(python3 - "$log" <<'PY'
import sys
rows=[l.split() for l in open(sys.argv[1])]
first=None; gap=0
for t,s,_ in rows:
    t=int(t)
    if s=="fail" and first is None: first=t
    if s=="ok" and first is not None: gap=max(gap,t-first); first=None
print(gap)
PY
)")
  lost=$(python3 - "$log" "$p2" <<'PY'
import sys,subprocess
acked={int(n) for t,s,n in (l.split() for l in open(sys.argv[1])) if s=="ok"}
out=subprocess.run(["psql","-p",sys.argv[2],"-Atqc","select id from bench_writes"],capture_output=True,text=True).stdout
have={int(x) for x in out.split()}
print(len(acked-have))
PY
)
  [ "$lost" = 0 ] || { echo "round $i: $lost acknowledged rows lost" >&2; exit 1; }
  blocked+=("$(step_out "$run" switchover writes_blocked_ms)")
  stop+=("$(step_out "$run" switchover stop_ms)"); wait+=("$(step_out "$run" switchover replay_wait_ms)")
  promote+=("$(step_out "$run" switchover promote_ms)")
  $drctl switchover --to primary --env "$env_file" --yes >/dev/null 2>&1
  $drctl drill runbooks/failover.yaml --env "$env_file" --yes --inject-lag 1s >/dev/null 2>&1
  $drctl failback latest --yes >/dev/null 2>&1
  frun=$($drctl --output json runs | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["run_id"])')
  fb+=("$(run_ms "$frun")"); rewind+=("$(step_out "$frun" rewind ms)")
  catchup+=("$(step_out "$frun" rejoin-old catch_up_ms)"); swback+=("$(step_out "$frun" switchover writes_blocked_ms)")
  rm -f "$log" "$log.stop"
done
$drctl lab down >/dev/null 2>&1 || true
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m}'; }
U=$(med "${unavail[@]}"); B=$(med "${blocked[@]}"); S=$(med "${stop[@]}"); W=$(med "${wait[@]}"); P=$(med "${promote[@]}")
F=$(med "${fb[@]}"); R=$(med "${rewind[@]}"); C=$(med "${catchup[@]}"); SB=$(med "${swback[@]}")
RAW=$(python3 -c "print(round($S+$W+$P, 1))")
echo "switchover and failback benchmark, median of $ROUNDS rounds (fresh lab each, pgbench -i -s 10)"
echo "  raw steps (in drctl's switchover step): fast stop $S ms, replay past shutdown checkpoint $W ms, promote $P ms (sum $RAW ms, 1.00x)"
printf "  no server takes writes (drctl's window)      %8.1f ms   (%.2fx raw)\n" "$B" "$(python3 -c "print($B/$RAW)")"
printf "  writer: first failed -> first ok write       %8.1f ms   (%.2fx raw; psql per try, so +- one psql start)\n" "$U" "$(python3 -c "print($U/$RAW)")"
echo "  acknowledged rows lost: 0 in every round"
printf "  failback run (drill -> lab back on primary)  %8.1f ms   raw pg_rewind %.1f ms (%.1fx), rejoin catch-up %.1f ms, switchover back window %.1f ms\n" "$F" "$R" "$(python3 -c "print($F/$R)")" "$C" "$SB"
r1() { for v in "$@"; do printf "%.0f " "$v"; done; }
echo "  rounds (ms): unavailability [$(r1 "${unavail[@]}")]  failback [$(r1 "${fb[@]}")]  rewind [$(r1 "${rewind[@]}")]"
