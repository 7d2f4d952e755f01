#!/usr/bin/env bash
# README command 1: set everything up and run a failover drill on the local
# lab (real PostgreSQL 15 primary + streaming standby on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release -p drctl
drctl=./target/release/drctl
# A drill leaves the lab failed over; start from a fresh one each time.
$drctl lab down >/dev/null 2>&1 || true
$drctl lab up
# Pause WAL shipping for 1s before killing the primary, so there is real
# data loss for drctl to measure (and the truth to compare it with).
$drctl drill runbooks/failover.yaml --env state/lab/env.yaml --yes --inject-lag 1s
echo
echo "report:    $drctl report latest        (markdown; --format json for tooling)"
echo "lab:       $drctl lab status           (the lab is now failed over to region dr)"
echo "stop it:   $drctl lab down"
