#!/usr/bin/env bash
# Kubernetes scaling benchmark on the fake API server (no cluster needed):
# 200 workloads one at a time vs concurrently, as a ratio. ROUNDS=N to change.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p drctl
cargo bench -p drctl-tests --bench kube_scale
