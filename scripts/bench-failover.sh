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

  # The same steps as a shell script, on a fresh lab. Addresses come from
  # the lab's own status (never from positions in the environment file).
  $drctl lab down >/dev/null 2>&1 || true
  $drctl lab up >/dev/null
  sleep 0.5
  lab=$($drctl --output json lab status)
  field() { echo "$lab" | python3 -c "import json,sys; v=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
  pport=$(field 'v["ports"]["pg-primary"]'); dport=$(field 'v["ports"]["pg-dr"]')
  app_port=$(field 'v["ports"]["app"]'); dns_port=$(field 'v["ports"]["dns"]'); api_port=$(field 'v["ports"]["dns-api"]')
  ctl=$(field 'v["control"]'); labdir=$(field 'v["dir"]')
  papp="http://127.0.0.1:$app_port"; dapp="http://127.0.0.2:$app_port"
  export PGPASSWORD=$(cat "$(field 'v["spec"]["password_file"]')") PGUSER=$(field 'v["spec"]["superuser"]') PGDATABASE=postgres PGCONNECT_TIMEOUT=2
  export PGSSLMODE=verify-full PGSSLROOTCERT=$(field 'v["spec"]["ca_cert"]')
  api_key=$(cat "$labdir/pdns-api-key")
  t0=$(curl -sf -X POST "$ctl/break/primary" | python3 -c 'import json,sys; print(json.load(sys.stdin)["failed_at_ms"])')
  ! curl -sf -m 2 "$papp/health" >/dev/null                                     # confirm outage
  psql -h 127.0.0.1 -p "$pport" -Atc "alter system set default_transaction_read_only=on" >/dev/null 2>&1 || true   # fence (unreachable)
  psql -h 127.0.0.1 -p "$dport" -Atc "select pg_promote(wait => false)" >/dev/null
  until [ "$(psql -h 127.0.0.1 -p "$dport" -Atc 'select pg_is_in_recovery()')" = f ]; do sleep 0.005; done
  # DNS: point the record at the DR region, then wait until the
  # authoritative server answers with it.
  curl -sf -X PATCH -H "X-API-Key: $api_key" -H 'Content-Type: application/json' \
    "http://127.0.0.1:$api_port/api/v1/servers/localhost/zones/lab.example." \
    -d '{"rrsets":[{"name":"app.lab.example.","type":"A","ttl":5,"changetype":"REPLACE","records":[{"content":"127.0.0.2","disabled":false}]}]}' >/dev/null
  until [ "$(dig +short +time=1 +tries=1 @127.0.0.1 -p "$dns_port" app.lab.example A)" = 127.0.0.2 ]; do sleep 0.005; done
  # Smoke: the DR app says primary, the database is out of recovery and has
  # the heartbeat rows, and the public name reaches the DR region.
  until curl -sf -m 2 "$dapp/health" | grep -q '"role":"primary"'; do sleep 0.1; done
  [ "$(psql -h 127.0.0.1 -p "$dport" -Atc 'select count(*) > 0 from drctl_heartbeat')" = t ]
  curl -sf -m 2 --resolve "app.lab.example:$app_port:127.0.0.2" "http://app.lab.example:$app_port/health" | grep -q '"region":"dr"'
  shell_rto+=("$(( $(now_ms) - t0 ))")
  unset PGPASSWORD PGUSER PGDATABASE PGCONNECT_TIMEOUT PGSSLMODE PGSSLROOTCERT
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
