#!/usr/bin/env bash
# State-store benchmarks (fixed workloads, ratios against baselines measured
# in the same run): per-step engine overhead on the directory store (beside
# a bare append+fdatasync) and on a PostgreSQL store (beside a bare
# INSERT+COMMIT round trip to the same server), and the per-poll cost of
# `status --follow` on a 100-record and a 100,000-record journal.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -p drctl
D=target/release/drctl
tmp=$(mktemp -d)
eval "$(bash scripts/state-pg.sh start)"
trap 'bash scripts/state-pg.sh stop "$DRCTL_TEST_PG_DIR"; rm -rf "$tmp"' EXIT
db() { psql "$DRCTL_TEST_PG_URL" -qc "create database $1" >/dev/null; echo "${DRCTL_TEST_PG_URL/\/postgres\?//$1?}"; }
$D bench engine --steps "${STEPS:-1000}" --rounds "${ROUNDS:-3}" --dir "$tmp/engine"
$D bench engine --steps "${STEPS:-1000}" --rounds "${ROUNDS:-3}" --pg "$(db bench_engine)"
$D bench follow --records "${RECORDS:-100000}" --dir "$tmp/follow"
$D bench follow --records "${RECORDS:-100000}" --pg "$(db bench_follow)"
