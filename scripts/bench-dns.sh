#!/usr/bin/env bash
# Benchmark: DNS switch convergence per provider on local servers: the time
# from the switch request until every authoritative server answers the new
# values (or, for Route 53 on moto, until GetChange is INSYNC and a read-back
# agrees), beside the raw provider API call latency measured in the same
# runs. Fixed workload: ROUNDS switches back and forth per provider.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
DRCTL_INSTALL_TEST_DEPS=1 bash scripts/install-deps.sh
cargo build --release -p drctl >/dev/null 2>&1
drctl=$PWD/target/release/drctl
work=$(mktemp -d); chmod 755 "$work"
export DRCTL_STATE_DIR=$work/state
cleanup() { $drctl lab down >/dev/null 2>&1 || true; [ -n "${named_pid:-}" ] && kill "$named_pid" 2>/dev/null; [ -n "${moto_pid:-}" ] && kill "$moto_pid" 2>/dev/null; true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for r in dr primary; do printf 'name: to-%s\nsteps:\n  - id: dns\n    action: dns.switch\n    with: {region: %s}\n' $r $r > "$work/to-$r.yaml"; done
records='  records:
    - {name: app.test.example., type: A, ttl: 30, values: {primary: [10.0.0.1], dr: [10.1.0.1]}}'

run_rounds() { # env-file label
  local env=$1 label=$2 out=()
  for i in $(seq 1 "$ROUNDS"); do
    for r in dr primary; do
      $drctl run "$work/to-$r.yaml" --env "$env" --yes >/dev/null 2>&1 || { echo "$label: switch failed"; $drctl run "$work/to-$r.yaml" --env "$env" --yes; exit 1; }
      out+=("$($drctl --output json report latest --format json | python3 -c 'import json,sys; o=json.load(sys.stdin)["steps"][0]["outputs"]; print(o["api_ms"], o["convergence_ms"])')")
    done
  done
  printf '%s\n' "${out[@]}" | python3 -c '
import statistics, sys
label = sys.argv[1]
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
api = statistics.median(r[0] for r in rows); conv = statistics.median(r[1] for r in rows)
print(f"  {label:<28} API call {api:7.2f} ms   switch -> all servers answer {conv:7.2f} ms   ({conv/api:.2f}x API; n={len(rows)})")' "$label"
}

echo "DNS switch benchmark, medians of $((ROUNDS * 2)) switches per provider"
# PowerDNS: the lab's server.
$drctl lab up >/dev/null
run_rounds "$DRCTL_STATE_DIR/lab/env.yaml" "PowerDNS (HTTP API)"

# BIND9 with RFC 2136 + TSIG.
port=$(free_port); secret=c2VjcmV0LWtleS1mb3ItZHJjdGwtdGVzdHMtMzItYnl0ZXMhIQ==
mkdir -p "$work/bind"; chmod 777 "$work/bind"
cat > "$work/bind/named.conf" <<CONF
options { directory "$work/bind"; listen-on port $port { 127.0.0.1; }; listen-on-v6 { none; }; pid-file "$work/bind/named.pid"; recursion no; dnssec-validation no; };
controls { };
key "drctl-key" { algorithm hmac-sha256; secret "$secret"; };
zone "test.example" { type master; file "$work/bind/test.example.zone"; allow-update { key "drctl-key"; }; };
CONF
printf '$TTL 60\n@ IN SOA ns1.test.example. h.test.example. 1 3600 600 86400 60\n@ IN NS ns1.test.example.\nns1 IN A 127.0.0.1\napp IN A 10.0.0.1\n' > "$work/bind/test.example.zone"
chmod 666 "$work/bind/"*
user_flag=(); [ "$(id -u)" -eq 0 ] && user_flag=(-u bind)
named -g -c "$work/bind/named.conf" "${user_flag[@]}" >/dev/null 2>&1 & named_pid=$!
for _ in $(seq 1 100); do dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 app.test.example A 2>/dev/null | grep -q 10.0.0.1 && break; sleep 0.1; done
cat > "$work/bind.yaml" <<ENV
name: bench-bind
active_region: primary
regions: {primary: {}, dr: {}}
dns:
  provider: rfc2136
  server: "127.0.0.1:$port"
  tsig_key_name: drctl-key
  tsig_secret: env:BENCH_TSIG
  zone: test.example.
  nameservers: ["127.0.0.1:$port"]
$records
ENV
BENCH_TSIG=$secret run_rounds "$work/bind.yaml" "BIND9 (RFC 2136 + TSIG)"

# Route 53 on moto.
mport=$(free_port)
moto_server -H 127.0.0.1 -p "$mport" >/dev/null 2>&1 & moto_pid=$!
for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$mport" >/dev/null 2>&1 && break; sleep 0.1; done
auth='Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0'
zid=$(curl -sf -X POST -H 'Content-Type: application/xml' -H "$auth" --data '<CreateHostedZoneRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Name>test.example.</Name><CallerReference>bench</CallerReference></CreateHostedZoneRequest>' "http://127.0.0.1:$mport/2013-04-01/hostedzone" | sed -n 's:.*<Id>/hostedzone/\([^<]*\)</Id>.*:\1:p')
cat > "$work/r53.yaml" <<ENV
name: bench-r53
active_region: primary
regions: {primary: {}, dr: {}}
dns:
  provider: route53
  hosted_zone_id: $zid
  endpoint: "http://127.0.0.1:$mport"
  zone: test.example.
$records
ENV
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing run_rounds "$work/r53.yaml" "Route 53 (moto, read-back)"
