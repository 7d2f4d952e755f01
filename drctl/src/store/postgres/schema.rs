//! The `drctl` schema: versioned migrations, applied only by
//! `drctl state init` ([`super::PgStore::init`]), inside one transaction
//! under an advisory lock so that concurrent inits serialise.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row, SimpleQueryMessage};

use super::super::{HolderId, LeaseMode, LeaseRecord};
use super::u64_of;

use super::super::{StoreError, SCHEMA_VERSION};

/// Key of the transaction-scoped advisory lock that serialises migrations
/// (`drctl` in ASCII, then the lock's purpose).
const MIGRATION_LOCK: i64 = 0x6472_6374_6c00_0001;

pub(super) struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

/// Migration `i` brings the schema to version `i + 1`. Append only: never
/// edit a migration that has shipped.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    name: "runs, journals, approvals, aborts, artifacts, leases, documents, histories",
    sql: r#"
create function drctl.unix_ms(t timestamptz) returns bigint
    language sql stable parallel safe
    as $$ select floor(extract(epoch from t) * 1000)::bigint $$;

-- next_seq is the number of records: appends advance it conditionally, so
-- the journal can have neither gaps nor duplicates.
create table drctl.runs (
    run_id     text primary key,
    next_seq   bigint not null check (next_seq >= 1),
    created_at timestamptz not null default now(),
    last_write timestamptz not null default now()
);

create table drctl.journal (
    run_id     text not null references drctl.runs (run_id) on delete cascade,
    seq        bigint not null check (seq >= 0),
    line       text not null,
    written_at timestamptz not null default now(),
    primary key (run_id, seq)
);

create table drctl.approvals (
    run_id   text not null references drctl.runs (run_id) on delete cascade,
    step     text not null,
    approval jsonb not null,
    primary key (run_id, step)
);

create table drctl.aborts (
    run_id       text primary key references drctl.runs (run_id) on delete cascade,
    requested_by text not null,
    at           timestamptz not null default now()
);

create table drctl.artifacts (
    run_id     text not null,
    name       text not null,
    bytes      bytea not null,
    written_at timestamptz not null default now(),
    primary key (run_id, name)
);

-- One row per lease name ever used: its epoch only grows. Acquisitions lock
-- this row, so they serialise per name.
create table drctl.lease_epochs (
    name  text primary key,
    epoch bigint not null default 0
);

create table drctl.leases (
    name          text not null references drctl.lease_epochs (name),
    instance      text not null,
    mode          text not null check (mode in ('shared', 'exclusive')),
    epoch         bigint not null,
    run_id        text not null,
    host          text not null,
    pid           bigint not null,
    process_start bigint not null,
    boot_id       text not null,
    since         timestamptz not null default now(),
    expires_at    timestamptz not null,
    primary key (name, instance)
);
-- Belt and braces: at most one exclusive holder row per name.
create unique index leases_one_exclusive on drctl.leases (name) where mode = 'exclusive';

create table drctl.documents (
    collection text not null,
    key        text not null,
    version    bigint not null check (version >= 1),
    doc        jsonb not null,
    updated_at timestamptz not null default now(),
    primary key (collection, key)
);

create table drctl.history (
    id         bigserial primary key,
    collection text not null,
    record     jsonb not null,
    at         timestamptz not null default now()
);
create index history_by_collection on drctl.history (collection, id);
"#,
}];

const _: () = assert!(MIGRATIONS.len() == SCHEMA_VERSION as usize);

/// Bounds the session's statements on the server side too, makes commits
/// durable, and reads the schema version (`None`: not initialised), in one
/// round trip.
pub(super) async fn start_session(
    client: &Client,
    limit: Duration,
) -> Result<Option<u32>, tokio_postgres::Error> {
    let ms = limit.as_millis().max(1);
    let setup = format!(
        "set statement_timeout = {ms}; set idle_in_transaction_session_timeout = {};
         select set_config('synchronous_commit', 'on', false)
             where current_setting('synchronous_commit') = 'off';
         select max(version)::text from drctl.schema_version",
        ms * 2
    );
    let msgs = match client.simple_query(&setup).await {
        Err(e)
            if e.code() == Some(&SqlState::UNDEFINED_TABLE)
                || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) =>
        {
            return Ok(None)
        }
        r => r?,
    };
    Ok(msgs
        .iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).and_then(|v| v.parse::<u32>().ok())),
            _ => None,
        })
        .flatten())
}

fn mode_of(s: &str) -> Option<LeaseMode> {
    match s {
        "shared" => Some(LeaseMode::Shared),
        "exclusive" => Some(LeaseMode::Exclusive),
        _ => None,
    }
}

/// A row of `lease_cols!()`.
pub(super) fn lease_record(r: &Row) -> Result<LeaseRecord, tokio_postgres::Error> {
    let mode: String = r.try_get(0)?;
    Ok(LeaseRecord {
        mode: mode_of(&mode).unwrap_or(LeaseMode::Exclusive),
        epoch: u64_of(r.try_get(1)?),
        holder: HolderId {
            run_id: r.try_get(2)?,
            host: r.try_get(3)?,
            pid: u32::try_from(r.try_get::<_, i64>(4)?).unwrap_or(0),
            process_start: u64_of(r.try_get(5)?),
            boot_id: r.try_get(6)?,
            instance: r.try_get(7)?,
        },
        since_ms: u64_of(r.try_get(8)?),
        expires_at_ms: u64_of(r.try_get(9)?),
    })
}

fn db(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}

/// Applies the missing migrations in one transaction; returns what it
/// applied (`"1 runs, journals, …"`), empty when the schema was current.
pub(super) async fn migrate(
    client: &mut Client,
    limit: Duration,
) -> Result<Vec<String>, StoreError> {
    // Server-side bounds too: a backend waiting for a lock does not notice
    // that we gave up and closed the connection.
    client
        .batch_execute(&format!(
            "set statement_timeout = {0}; set idle_in_transaction_session_timeout = {0}",
            limit.as_millis()
        ))
        .await
        .map_err(db("configure session"))?;
    let tx = client.transaction().await.map_err(db("begin migration"))?;
    tx.execute(
        "select pg_advisory_xact_lock($1::bigint)",
        &[&MIGRATION_LOCK],
    )
    .await
    .map_err(db("take the migration lock"))?;
    tx.batch_execute(
        "create schema if not exists drctl;
         create table if not exists drctl.schema_version (
             version    integer primary key,
             name       text not null,
             applied_at timestamptz not null default now()
         )",
    )
    .await
    .map_err(db("create schema"))?;
    let row = tx
        .query_one("select max(version) from drctl.schema_version", &[])
        .await
        .map_err(db("read schema version"))?;
    let found: Option<i32> = row.try_get(0).map_err(db("read schema version"))?;
    let found = usize::try_from(found.unwrap_or(0)).unwrap_or(0);
    if found > MIGRATIONS.len() {
        return Err(StoreError::Schema {
            found: u32::try_from(found).unwrap_or(u32::MAX),
            wanted: SCHEMA_VERSION,
        });
    }
    let mut applied = Vec::new();
    for (i, m) in MIGRATIONS.iter().enumerate().skip(found) {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.batch_execute(m.sql)
            .await
            .map_err(db("apply migration"))?;
        tx.execute(
            "insert into drctl.schema_version (version, name) values ($1::integer, $2::text)",
            &[&version, &m.name],
        )
        .await
        .map_err(db("record migration"))?;
        applied.push(format!("{version} {}", m.name));
    }
    tx.commit().await.map_err(db("commit migration"))?;
    Ok(applied)
}

// The statements every operation runs (all parameters typed in the SQL,
// so they prepare once per connection).

macro_rules! lease_cols {
    () => {
        "mode, epoch, run_id, host, pid, process_start, boot_id, instance, \
         drctl.unix_ms(since), drctl.unix_ms(expires_at)"
    };
}
macro_rules! is_mine {
    // $1 name, $2 instance, $3 epoch, $4 mode
    () => {
        "select 1 from drctl.leases where name = $1::text and instance = $2::text \
         and epoch = $3::bigint and mode = $4::text"
    };
}

// Journal: $1..$4 identify the lease (see is_mine!), $5 run, $6 seq, $7 line.
pub(super) const APPEND: &str = concat!(
    "with l as (",
    is_mine!(),
    " for key share), \
     r as (update drctl.runs set next_seq = next_seq + cardinality($7::text[]), \
           last_write = now() \
           where run_id = $5::text and next_seq = $6::bigint and exists (select 1 from l) \
           returning run_id) \
     insert into drctl.journal (run_id, seq, line) \
     select $5::text, $6::bigint + t.o - 1, t.line \
     from r, unnest($7::text[]) with ordinality as t(line, o)"
);
pub(super) const CREATE: &str = concat!(
    "with l as (",
    is_mine!(),
    " for key share), \
     r as (insert into drctl.runs (run_id, next_seq) select $5::text, 1 from l \
           on conflict (run_id) do nothing returning run_id) \
     insert into drctl.journal (run_id, seq, line) select $5::text, 0, $6::text from r"
);
/// Why a conditional journal write wrote nothing.
pub(super) const DIAGNOSE: &str = concat!(
    "select exists (",
    is_mine!(),
    "), exists (select 1 from drctl.runs where run_id = $5::text), \
     (select count(*) from drctl.journal where run_id = $5::text)"
);
pub(super) const MINE: &str = concat!("select exists (", is_mine!(), ")");
pub(super) const READ_ALL: &str =
    "select line from drctl.journal where run_id = $1::text order by seq";
pub(super) const READ_FROM: &str = "select j.seq, j.line from drctl.runs r \
     left join drctl.journal j on j.run_id = r.run_id and j.seq >= $2::bigint \
     where r.run_id = $1::text order by j.seq";
/// [`READ_FROM`] a batch at a time (`$3` rows), for bounded chunks.
pub(super) const READ_FROM_LIMIT: &str = "select j.seq, j.line from drctl.runs r \
     left join drctl.journal j on j.run_id = r.run_id and j.seq >= $2::bigint \
     where r.run_id = $1::text order by j.seq limit $3::bigint";
pub(super) const SUMMARIES: &str =
    "select run_id, drctl.unix_ms(last_write) from drctl.runs order by run_id";
pub(super) const DELETE_RUN: &str =
    "with d as (delete from drctl.runs where run_id = $1::text returning 1), \
     a as (delete from drctl.artifacts where run_id = $1::text and exists (select 1 from d)) \
     select count(*) from d";

pub(super) const PUT_APPROVAL: &str = "insert into drctl.approvals (run_id, step, approval) \
     values ($1::text, $2::text, $3::text::jsonb) \
     on conflict (run_id, step) do update set approval = excluded.approval";
pub(super) const GET_APPROVAL: &str =
    "select approval::text from drctl.approvals where run_id = $1::text and step = $2::text";
pub(super) const PUT_ABORT: &str =
    "insert into drctl.aborts (run_id, requested_by) values ($1::text, $2::text) \
     on conflict (run_id) do update set requested_by = excluded.requested_by, at = now()";
pub(super) const GET_ABORT: &str = "select requested_by from drctl.aborts where run_id = $1::text";
pub(super) const PUT_ARTIFACT: &str = "insert into drctl.artifacts (run_id, name, bytes) \
     values ($1::text, $2::text, $3::bytea) \
     on conflict (run_id, name) do update set bytes = excluded.bytes, written_at = now()";
pub(super) const GET_ARTIFACT: &str =
    "select bytes from drctl.artifacts where run_id = $1::text and name = $2::text";

pub(super) const LOCK_NAME: &str = "insert into drctl.lease_epochs (name) values ($1::text) \
     on conflict (name) do update set name = excluded.name returning epoch";
pub(super) const HOLDERS: &str = concat!(
    "select ",
    lease_cols!(),
    ", expires_at <= now() from drctl.leases where name = $1::text order by since, instance"
);
pub(super) const DROP_HOLDERS: &str =
    "delete from drctl.leases where name = $1::text and instance = any($2::text[])";
// $3 the epoch increment (1 exclusive, 0 shared), $10 the ttl in ms.
pub(super) const GRANT: &str =
    "with e as (update drctl.lease_epochs set epoch = epoch + $3::bigint \
                    where name = $1::text returning epoch) \
     insert into drctl.leases (name, instance, mode, epoch, run_id, host, pid, process_start, \
                               boot_id, since, expires_at) \
     select $1::text, $2::text, $4::text, e.epoch, $5::text, $6::text, $7::bigint, $8::bigint, \
            $9::text, now(), now() + $10::float8 * interval '1 millisecond' from e \
     returning epoch, drctl.unix_ms(since), drctl.unix_ms(expires_at)";
pub(super) const RENEW: &str =
    "update drctl.leases set expires_at = now() + $5::float8 * interval '1 millisecond' \
     where name = $1::text and instance = $2::text and epoch = $3::bigint and mode = $4::text \
     returning drctl.unix_ms(expires_at)";
pub(super) const RELEASE: &str = "delete from drctl.leases \
     where name = $1::text and instance = $2::text and epoch = $3::bigint and mode = $4::text";
pub(super) const LIVE: &str = concat!(
    "select ",
    lease_cols!(),
    " from drctl.leases where name = $1::text and expires_at > now() order by since, instance"
);
pub(super) const LIVE_EXCLUSIVE: &str = concat!(
    "select ",
    lease_cols!(),
    " from drctl.leases where name = $1::text and mode = 'exclusive' and expires_at > now()"
);

pub(super) const GET_DOC: &str = "select version, doc::text from drctl.documents \
     where collection = $1::text and key = $2::text";
pub(super) const DOC_VERSION: &str =
    "select version from drctl.documents where collection = $1::text and key = $2::text";
pub(super) const PUT_ABSENT: &str = "insert into drctl.documents (collection, key, version, doc) \
     values ($1::text, $2::text, 1, $3::text::jsonb) on conflict (collection, key) do nothing \
     returning version";
pub(super) const PUT_VERSION: &str = "update drctl.documents \
     set version = version + 1, doc = $3::text::jsonb, updated_at = now() \
     where collection = $1::text and key = $2::text and version = $4::bigint returning version";
pub(super) const PUT_ANY: &str = "insert into drctl.documents (collection, key, version, doc) \
     values ($1::text, $2::text, 1, $3::text::jsonb) on conflict (collection, key) do update \
     set version = drctl.documents.version + 1, doc = excluded.doc, updated_at = now() \
     returning version";
pub(super) const APPEND_HISTORY: &str =
    "insert into drctl.history (collection, record) values ($1::text, $2::text::jsonb)";
pub(super) const READ_HISTORY: &str =
    "select record::text from drctl.history where collection = $1::text order by id";
pub(super) const HEALTH: &str =
    "select floor(extract(epoch from clock_timestamp()) * 1000)::bigint, \
     (select max(version) from drctl.schema_version), (select count(*) from drctl.runs)";
