#!/usr/bin/env bash
# README command 1: set everything up and run a failover drill on the local
# lab (real PostgreSQL 15 primary + streaming standby on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -p drctl
drctl=./target/release/drctl
# Start from a fresh lab each time.
$drctl lab down >/dev/null 2>&1 || true
$drctl lab up
# Pause WAL shipping for 1s before killing the primary, so there is real
# data loss for drctl to measure (and the truth to compare it with).
$drctl drill runbooks/failover.yaml --env state/lab/env.yaml --yes --inject-lag 1s
drill_run=$($drctl --output json runs | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["run_id"])')
# The way back: keep what the old primary committed after the fork, rewind
# it, switch back with zero loss, DNS back. The lab is then on its primary
# region again, ready for the next drill.
echo
$drctl failback latest --yes
echo
echo "drill report:    $drctl report $drill_run"
echo "failback report: $drctl report latest"
echo "lab:             $drctl lab status     (back on its primary region; drill again at will)"
echo "stop it:         $drctl lab down"
