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
# The two sides alternate (raw, drctl, raw, drctl), since a run after
# another reads a warmer page cache; drctl's parts (fetch, verify, start,
# replay) come from its journal, the ratio is of the means.
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

echo "columns: scale, db_MB | raw steps (extract, pg_verifybackup, start+replay+promote = total incl. stop and remove), then drctl (its own parts: fetch, verify, start+replay; = its wall time), alternated twice | ratio of the means"
# The raw steps on the backup in $root: extract, pg_verifybackup, start
# with the same restore_command, replay and promote (poll), stop, remove.
# Prints "extract_s verify_s start_replay_s total_s".
raw_steps() {
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

  echo "$(echo "$t1 - $t0" | bc -l) $(echo "$t2 - $t1" | bc -l) $(echo "$t3 - $t2" | bc -l) $(echo "$t4 - $t0" | bc -l)"
}

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

  # The raw steps before drctl, and again after it: the first run reads
  # a colder page cache; drctl is held to the mean of the two.
  read -r ex1 ve1 sr1 raw1 < <(raw_steps)
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
  verify() { # extra flags
    (cd "$root" && "$drctl" --state "$root/state" verify-backup --env "$root/env.yaml" --runbook "$repo/runbooks/verify-backups.yaml" "$@" --output json >"$root/drctl.json" 2>"$root/drctl.err") \
      || { echo "drctl verify-backup failed:" >&2; cat "$root/drctl.err" >&2; exit 1; }
  }
  # Alternated: raw, drctl, raw, drctl (a run after another reads a warmer
  # page cache), then drctl's full default once.
  d0=$(now); verify --no-amcheck; d1=$(now)
  read -r ex2 ve2 sr2 raw2 < <(raw_steps)
  e0=$(now); verify --no-amcheck; e1=$(now)
  f0=$(now); verify; f1=$(now)
  raw=$(echo "($raw1 + $raw2) / 2" | bc -l)
  dr1=$(echo "$d1 - $d0" | bc -l)
  dr2=$(echo "$e1 - $e0" | bc -l)
  dr=$(echo "($dr1 + $dr2) / 2" | bc -l)
  # drctl's own parts, as it measured them (the step outputs in each
  # run's journal).
  parts() {
  python3 - "$1" <<'PY'
import json, sys
def find(v):
    if isinstance(v, dict):
        if "fetch_ms" in v:
            return v
        v = list(v.values())
    if isinstance(v, list):
        for x in v:
            r = find(x)
            if r is not None:
                return r
    return None
s = None
for line in open(sys.argv[1]):
    s = find(json.loads(line)) or s
f = lambda k: "%.2f" % (s[k] / 1000) if s and s.get(k) is not None else "n/a"
print(f("fetch_ms"), f("verifybackup_ms"), "%s+%s" % (f("start_to_consistent_ms"), f("replay_promote_ms")))
PY
  }
  runs=($(ls -d "$root"/state/runs/*/ | sort))
  read -r dex1 dve1 dsr1 <<<"$(parts "${runs[0]}journal.jsonl")"
  read -r dex2 dve2 dsr2 <<<"$(parts "${runs[1]}journal.jsonl")"
  printf '%-5s %6s | raw#1 %6.2f %5.2f %6.2f = %6.2f | drctl#1 %6s %5s %11s = %6.2f | raw#2 %6.2f %5.2f %6.2f = %6.2f | drctl#2 %6s %5s %11s = %6.2f | drctl/raw (means) %.3f (%+.1f%%) | full default (pg_amcheck too) %.2fs\n' \
    "$scale" "$db_mb" "$ex1" "$ve1" "$sr1" "$raw1" "$dex1" "$dve1" "$dsr1" "$dr1" "$ex2" "$ve2" "$sr2" "$raw2" "$dex2" "$dve2" "$dsr2" "$dr2" \
    "$(echo "$dr / $raw" | bc -l)" "$(echo "($dr / $raw - 1) * 100" | bc -l)" "$(echo "$f1 - $f0" | bc -l)"
  as_pg "$bin/pg_ctl" -D "$root/primary" -m immediate stop >/dev/null
  rm -rf "$root"
done
