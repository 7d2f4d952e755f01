#!/usr/bin/env bash
# README command 2: install what the tests need, check formatting and lints,
# build, and run every test (unit tests and integration tests that drive the
# real binary against real PostgreSQL 15 servers on loopback). The engine,
# lease, crash and state-command tests run twice: on the directory store and on a
# PostgreSQL state store (a throwaway PostgreSQL 15 started here).
set -euo pipefail
cd "$(dirname "$0")/.."
DRCTL_INSTALL_TEST_DEPS=1 bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
eval "$(bash scripts/state-pg.sh start)"
trap 'bash scripts/state-pg.sh stop "$DRCTL_TEST_PG_DIR"' EXIT
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  DRCTL_TEST_STORE=postgres cargo nextest run -p drctl-tests --test engine --test lease --test crash --test state_cmd --test measure --test drills --test report --test isolated_drill --test report_anchor --no-fail-fast
else
  cargo test --workspace --no-fail-fast
  DRCTL_TEST_STORE=postgres cargo test -p drctl-tests --test engine --test lease --test crash --test state_cmd --test measure --test drills --test report --test isolated_drill --test report_anchor --no-fail-fast
fi
