#!/usr/bin/env bash
# Benchmark: lab failover RTO (break -> smoke checks green) with drctl, per
# step, beside the raw promotion latency measured in the same run and beside
# the same steps as a plain shell script (psql + curl). Fixed workload:
# ROUNDS rounds each, a fresh lab per round. Prints medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
bash scripts/install-deps.sh
cargo build --release -p drctl >/dev/null 2>&1
drctl=./target/release/drctl
export DRCTL_STATE_DIR=${DRCTL_STATE_DIR:-$(mktemp -d)/state}
env_file=$DRCTL_STATE_DIR/lab/env.yaml
now_ms() { date +%s%3N; }
drctl_rto=(); promo=(); shell_rto=()
for i in $(seq 1 "$ROUNDS"); do
  $drctl lab down >/dev/null 2>&1 || true
  $drctl lab up >/dev/null
  sleep 0.5
  out=$($drctl --output json drill runbooks/failover.yaml --env "$env_file" --yes)
  drctl_rto+=("$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["measurements"]["rto_ms"])')")
  run=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
  promo+=("$($drctl --output json report "$run" --format json | python3 -c '
import json,sys
r=json.load(sys.stdin)
print([s for s in r["steps"] if s["id"]=="promote"][0]["outputs"]["promotion_ms"])')")
  if [ "$i" = "$ROUNDS" ]; then
    echo "drctl per-step contribution (last round):"
    $drctl report "$run" --format json | python3 -c '
import json,sys
r=json.load(sys.stdin)
for c in r["measurements"]["contributions"]:
    print("  %-16s %6d ms   ended at +%d ms" % (c["step"], c["duration_ms"], c["ended_at_ms"]))'
  fi

  # The same steps as a shell script, on a fresh lab.
  $drctl lab down >/dev/null 2>&1 || true
  $drctl lab up >/dev/null
  sleep 0.5
  pport=$(grep -o 'port: [0-9]*' "$env_file" | sed -n 1p | cut -d' ' -f2)
  dport=$(grep -o 'port: [0-9]*' "$env_file" | sed -n 2p | cut -d' ' -f2)
  papp=$(grep -o 'http://127.0.0.1:[0-9]*' "$env_file" | sed -n 1p)
  dapp=$(grep -o 'http://127.0.0.1:[0-9]*' "$env_file" | sed -n 2p)
  export PGPASSWORD=$(cat "$DRCTL_STATE_DIR/lab/pgpass") PGUSER=drctl PGDATABASE=postgres PGCONNECT_TIMEOUT=2
  ctl=$(grep -o 'control: "[^"]*"' "$env_file" | cut -d'"' -f2)
  t0=$(curl -sf -X POST "$ctl/break/primary" | python3 -c 'import json,sys; print(json.load(sys.stdin)["failed_at_ms"])')
  ! curl -sf -m 2 "$papp/health" >/dev/null                                     # confirm outage
  psql -h 127.0.0.1 -p "$pport" -Atc "alter system set default_transaction_read_only=on" >/dev/null 2>&1 || true   # fence (unreachable)
  psql -h 127.0.0.1 -p "$dport" -Atc "select pg_promote(wait => false)" >/dev/null
  until [ "$(psql -h 127.0.0.1 -p "$dport" -Atc 'select pg_is_in_recovery()')" = f ]; do sleep 0.005; done
  until curl -sf -m 2 "$dapp/health" | grep -q '"role":"primary"'; do sleep 0.1; done
  [ "$(psql -h 127.0.0.1 -p "$dport" -Atc 'select count(*) > 0 from drctl_heartbeat')" = t ]
  shell_rto+=("$(( $(now_ms) - t0 ))")
done
$drctl lab down >/dev/null 2>&1 || true
python3 - "${drctl_rto[*]}" "${promo[*]}" "${shell_rto[*]}" <<'PY'
import statistics, sys
d, p, s = ([float(x) for x in a.split()] for a in sys.argv[1:4])
md, mp, ms = statistics.median(d), statistics.median(p), statistics.median(s)
print(f"failover benchmark, median of {len(d)} rounds (fresh lab each)")
print(f"  raw promotion (pg_promote -> out of recovery)  {mp:8.1f} ms")
print(f"  shell script (psql + curl), break -> green     {ms:8.1f} ms   (baseline, 1.00x)")
print(f"  drctl drill,                break -> green     {md:8.1f} ms   ({md/ms:.2f}x shell; {md/mp:.1f}x raw promotion)")
print(f"  rounds: drctl {d}  shell {s}  promotion {p}")
PY
