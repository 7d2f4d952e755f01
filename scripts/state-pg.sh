#!/usr/bin/env bash
# A throwaway PostgreSQL 15 on loopback for the PostgreSQL state-store tests.
#   eval "$(bash scripts/state-pg.sh start)"   # exports DRCTL_TEST_PG_URL, DRCTL_TEST_PG_DIR
#   bash scripts/state-pg.sh stop "$DRCTL_TEST_PG_DIR"
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "${1:-start}" in
  start)
    dir=$(mktemp -d /tmp/drctl-state-pg.XXXXXX)
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$BIN/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c max_connections=300" \
      start >/dev/null
    echo "export DRCTL_TEST_PG_URL='postgresql://postgres@127.0.0.1:$port/postgres?sslmode=disable'"
    echo "export DRCTL_TEST_PG_DIR='$dir'"
    ;;
  stop)
    dir=${2:?state-pg.sh stop DIR}
    as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
esac
