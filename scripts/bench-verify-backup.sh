#!/usr/bin/env bash
# Benchmark (not a timed test): `drctl verify-backup` of a pg_basebackup
# (tar, WAL streamed) plus its WAL archive, beside the raw steps measured in
# the same run on the same backup: extract the tars, pg_verifybackup, start
# the server with the same restore_command, replay and promote to the same
# point (poll pg_is_in_recovery), stop it and remove the copy. Workload:
# `pgbench -i -s SCALE` then `pgbench -t 2000` after the backup, so there
# is archived WAL to replay. The cluster has no data checksums and drctl
# runs with --no-amcheck, so both sides do the same work; drctl's full
# default verification (pg_amcheck) is printed beside it for information.
#
#   bash scripts/bench-verify-backup.sh            # scales 20 and 200 (about 0.3 GB and 3 GB)
#   bash scripts/bench-verify-backup.sh 20 70      # other sizes
#   DRCTL=target/debug/drctl bash scripts/bench-verify-backup.sh
#
# Needs root or the postgres user's rights (servers run as `postgres`), and
# about 3.5x the database size free under $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
scales=("$@")
[ ${#scales[@]} -eq 0 ] && scales=(20 200)
drctl=${DRCTL:-}
if [ -z "$drctl" ]; then
  cargo build --release -p drctl >&2
  drctl="${CARGO_TARGET_DIR:-target}/release/drctl"
fi
drctl=$(readlink -f "$drctl")
bin=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
now() { date +%s.%N; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_recovered() { # port
  until [ "$(as_pg "$bin/psql" -h "$1" -p "$2" -U postgres -Atqc 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.05; done
}

printf '%-6s %9s %10s %10s %12s %10s %9s %14s\n' scale db_MB extract_s verify_s start_replay_s raw_total_s drctl_s "drctl/raw"
for scale in "${scales[@]}"; do
  root=$(mktemp -d "${TMPDIR:-/tmp}/drctl-bench-verify.XXXXXX")
  chmod 755 "$root"
  chown postgres: "$root" 2>/dev/null || true
  as_pg mkdir "$root/archive" "$root/backups" "$root/raw" "$root/sock"
  pport=$(port)
  as_pg "$bin/initdb" -D "$root/primary" -U postgres -A trust --no-instructions >/dev/null
  cat >>"$root/primary/postgresql.conf" <<CONF
port = $pport
listen_addresses = '127.0.0.1'
unix_socket_directories = '$root/sock'
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $root/archive/%f && cp %p $root/archive/%f'
max_wal_size = 4GB
CONF
  as_pg "$bin/pg_ctl" -D "$root/primary" -w -l "$root/primary.log" start >/dev/null
  as_pg "$bin/pgbench" -h 127.0.0.1 -p "$pport" -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
  as_pg "$bin/psql" -h 127.0.0.1 -p "$pport" -U postgres -Atqc "create table drctl_heartbeat (id bigint primary key, at timestamptz not null, lsn pg_lsn not null); insert into drctl_heartbeat values (1, now(), pg_current_wal_lsn())"
  db_mb=$(as_pg "$bin/psql" -h 127.0.0.1 -p "$pport" -U postgres -Atqc "select pg_database_size('postgres')/1048576")
  as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres -D "$root/backups/b1" -F t -X stream -c fast
  as_pg "$bin/pgbench" -h 127.0.0.1 -p "$pport" -U postgres -t 2000 -n postgres >/dev/null 2>&1
  as_pg "$bin/psql" -h 127.0.0.1 -p "$pport" -U postgres -Atqc "insert into drctl_heartbeat values (2, now(), pg_current_wal_lsn())" >/dev/null
  seg=$(as_pg "$bin/psql" -h 127.0.0.1 -p "$pport" -U postgres -Atqc "select pg_walfile_name(pg_switch_wal())")
  until [ -f "$root/archive/$seg" ]; do sleep 0.1; done
  sync

  # The raw steps.
  t0=$(now)
  as_pg mkdir -m 700 "$root/raw/data"
  as_pg tar -xf "$root/backups/b1/base.tar" -C "$root/raw/data"
  as_pg tar -xf "$root/backups/b1/pg_wal.tar" -C "$root/raw/data/pg_wal"
  t1=$(now)
  as_pg "$bin/pg_verifybackup" -q -m "$root/backups/b1/backup_manifest" "$root/raw/data"
  t2=$(now)
  rport=$(port)
  cat >>"$root/raw/data/postgresql.auto.conf" <<CONF
port = $rport
unix_socket_directories = '$root/sock'
archive_mode = off
archive_command = ''
restore_command = 'cp "$root/archive/%f" "%p"'
recovery_target_timeline = 'latest'
CONF
  as_pg touch "$root/raw/data/recovery.signal"
  as_pg "$bin/pg_ctl" -D "$root/raw/data" -w -l "$root/raw.log" start >/dev/null
  wait_recovered "$root/sock" "$rport"
  t3=$(now)
  as_pg "$bin/pg_ctl" -D "$root/raw/data" -m fast -w stop >/dev/null
  rm -rf "$root/raw/data"
  t4=$(now)

  # drctl, on the same backup and archive.
  cat >"$root/env.yaml" <<ENV
name: bench
active_region: primary
regions:
  primary:
    postgres: {host: 127.0.0.1, port: $pport, dbname: postgres, user: postgres, sslmode: disable}
    backups:
      bench: {kind: basebackup, backup_dir: "$root/backups", wal_archive: "$root/archive", superuser: postgres}
  dr: {}
ENV
  d0=$(now)
  (cd "$root" && "$drctl" --state "$root/state" verify-backup --env "$root/env.yaml" --runbook "$repo/runbooks/verify-backups.yaml" --no-amcheck --output json >"$root/drctl.json" 2>"$root/drctl.err") \
    || { echo "drctl verify-backup failed:" >&2; cat "$root/drctl.err" >&2; exit 1; }
  d1=$(now)
  (cd "$root" && "$drctl" --state "$root/state" verify-backup --env "$root/env.yaml" --runbook "$repo/runbooks/verify-backups.yaml" --output json >/dev/null 2>&1)
  d2=$(now)
  raw=$(echo "$t4 - $t0" | bc -l)
  dr=$(echo "$d1 - $d0" | bc -l)
  printf '%-6s %9s %10.2f %10.2f %12.2f %10.2f %9.2f %9.3f (%+.1f%%)   full default (pg_amcheck too): %.2fs\n' \
    "$scale" "$db_mb" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$t2 - $t1" | bc -l)" "$(echo "$t3 - $t2" | bc -l)" "$raw" "$dr" \
    "$(echo "$dr / $raw" | bc -l)" "$(echo "($dr / $raw - 1) * 100" | bc -l)" "$(echo "$d2 - $d1" | bc -l)"
  as_pg "$bin/pg_ctl" -D "$root/primary" -m immediate stop >/dev/null
  rm -rf "$root"
done
