#!/usr/bin/env bash
# README command 2: install what the tests need, check formatting and lints,
# build, and run every test (unit tests and integration tests that drive the
# real binary against real PostgreSQL 15 servers on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
DRCTL_INSTALL_TEST_DEPS=1 bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
