//! The PostgreSQL state store: the shared control plane for teams,
//! CronJobs and the heartbeat.
//!
//! Everything lives in the `drctl` schema (see [`schema`]), created and
//! migrated only by [`PgStore::init`]; [`PgStore::connect`] checks the
//! version and never migrates. One client connection, opened again lazily
//! when it was lost; every statement is bounded by a timeout, on the client
//! and on the server.
//!
//! Each guarantee of [`Store`] is enforced by the database in one
//! statement, or one short transaction for lease acquisition:
//! - a journal append advances `runs.next_seq` from exactly `seq` and
//!   inserts record `seq` only if the writer's lease row still exists (with
//!   its epoch, instance and mode) — one prepared statement, one round trip;
//! - lease expiry compares with the database's `now()`; acquisitions of a
//!   name serialise on its `lease_epochs` row, whose epoch only grows;
//! - documents are compared-and-set on their `version` column.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{RwLock, RwLockReadGuard};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::{
    Approval, Expect, Health, HolderId, JournalChunk, Lease, LeaseGrant, LeaseMode, LeaseRecord,
    RunSummary, Store, StoreError, Versioned, SCHEMA_VERSION,
};
use crate::pgconn::{PgError, PgServer};

mod schema;
use schema::*;

/// Bound on connecting and on every statement unless [`PgStore::with_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on `init` (it may wait for a concurrent init).
const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The server cancels a statement at the limit; the client gives up a
/// little later (the server unreachable), and then drops the connection.
const GRACE: Duration = Duration::from_millis(500);

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// [`PgStore::init`]: creates or migrates the schema (`drctl state init`).
pub async fn init(url: &str, server: PgServer) -> Result<(PgStore, Vec<String>), StoreError> {
    PgStore::init(url, server).await
}

/// [`PgStore::connect`], as the [`Store`] that [`super::locate::open`] returns.
pub async fn open(url: &str, server: PgServer) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(PgStore::connect(url, server).await?))
}

/// The connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
    /// Set when a statement timed out: its answer may still arrive, so the
    /// connection is replaced before the next operation.
    broken: AtomicBool,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.client.is_closed()
    }

    async fn prepared(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        let cached = {
            let g = self.statements.lock().unwrap_or_else(|p| p.into_inner());
            g.get(sql).cloned()
        };
        if let Some(s) = cached {
            return Ok(s);
        }
        let s = self.client.prepare(sql).await?;
        self.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql, s.clone());
        Ok(s)
    }
}

pub struct PgStore {
    url: String,
    server: PgServer,
    timeout: Duration,
    conn: RwLock<Option<Conn>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.base_url())
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn ttl_ms(ttl: Duration) -> f64 {
    ttl.as_secs_f64() * 1000.0
}

/// The columns that identify a lease row, compared by every conditional
/// write (`$1..$4` of `is_mine!()`).
struct Key<'a> {
    name: &'a str,
    instance: &'a str,
    epoch: i64,
    mode: &'static str,
}

impl<'a> Key<'a> {
    fn of(l: &'a Lease) -> Self {
        Key {
            name: &l.name,
            instance: &l.holder.instance,
            epoch: i64_of(l.epoch),
            mode: l.mode.as_str(),
        }
    }

    /// The key's parameters, then `rest` (`$5`, …).
    fn with(&'a self, rest: Params<'a>) -> Vec<&'a (dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> =
            vec![&self.name, &self.instance, &self.epoch, &self.mode];
        p.extend_from_slice(rest);
        p
    }
}

fn has_code(e: &StoreError, code: &SqlState) -> bool {
    matches!(e, StoreError::Database { source, .. } if source.code() == Some(code))
}

impl PgStore {
    /// Connects and checks the schema version; never migrates.
    pub async fn connect(url: &str, server: PgServer) -> Result<PgStore, StoreError> {
        let store = PgStore {
            url: url.to_string(),
            server,
            timeout: DEFAULT_TIMEOUT,
            conn: RwLock::new(None),
        };
        let c = store.open().await?;
        *store.conn.write().await = Some(c);
        Ok(store)
    }

    /// Creates or migrates the schema (safe to run concurrently); returns
    /// the store and the migrations it applied.
    pub async fn init(url: &str, server: PgServer) -> Result<(PgStore, Vec<String>), StoreError> {
        let probe = PgStore {
            url: url.to_string(),
            server: server.clone(),
            timeout: DEFAULT_TIMEOUT,
            conn: RwLock::new(None),
        };
        let mut client = probe
            .server
            .connect(DEFAULT_TIMEOUT)
            .await
            .map_err(|e| probe.connect_error(e))?;
        let applied = tokio::time::timeout(
            INIT_TIMEOUT + GRACE,
            schema::migrate(&mut client, INIT_TIMEOUT),
        )
        .await
        .map_err(|_| StoreError::Timeout {
            op: "migrate the schema",
            limit: INIT_TIMEOUT,
        })??;
        drop(client);
        Ok((PgStore::connect(url, server).await?, applied))
    }

    /// Bounds connecting and every statement by `limit` instead of
    /// [`DEFAULT_TIMEOUT`] (from the next connection on).
    pub fn with_timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    fn base_url(&self) -> String {
        let s = &self.server;
        if s.host.contains(':') {
            format!("postgres://[{}]:{}/{}", s.host, s.port, s.dbname)
        } else {
            format!("postgres://{}:{}/{}", s.host, s.port, s.dbname)
        }
    }

    fn connect_error(&self, e: PgError) -> StoreError {
        match e {
            PgError::Timeout { .. } => StoreError::Timeout {
                op: "connect",
                limit: self.timeout.min(self.server.connect_timeout),
            },
            e => StoreError::Connect {
                url: self.url.clone(),
                reason: chain(&e),
            },
        }
    }

    fn db_error(&self, op: &'static str, source: tokio_postgres::Error) -> StoreError {
        if source.code() == Some(&SqlState::QUERY_CANCELED) {
            StoreError::Timeout {
                op,
                limit: self.timeout,
            }
        } else {
            StoreError::Database { op, source }
        }
    }

    fn corrupt(&self, what: String, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: format!("{} {what}", self.base_url()),
            reason: reason.to_string(),
        }
    }

    fn to_json(&self, what: String, v: &impl serde::Serialize) -> Result<String, StoreError> {
        serde_json::to_string(v).map_err(|e| self.corrupt(what, e))
    }

    /// Opens a connection, bounds its statements on the server side, and
    /// checks the schema version, in one round trip after the handshake.
    async fn open(&self) -> Result<Conn, StoreError> {
        let client = self
            .server
            .connect(self.timeout)
            .await
            .map_err(|e| self.connect_error(e))?;
        let found = match tokio::time::timeout(
            self.timeout + GRACE,
            schema::start_session(&client, self.timeout),
        )
        .await
        {
            Err(_) => {
                return Err(StoreError::Timeout {
                    op: "check the schema version",
                    limit: self.timeout,
                })
            }
            Ok(r) => r.map_err(|e| self.db_error("check the schema version", e))?,
        };
        match found {
            None => Err(StoreError::NotInitialised {
                url: self.url.clone(),
            }),
            Some(v) if v != SCHEMA_VERSION => Err(StoreError::Schema {
                found: v,
                wanted: SCHEMA_VERSION,
            }),
            Some(_) => Ok(Conn {
                client,
                statements: Mutex::new(HashMap::new()),
                broken: AtomicBool::new(false),
            }),
        }
    }

    async fn ensure(&self, slot: &mut Option<Conn>) -> Result<(), StoreError> {
        if !slot.as_ref().is_some_and(Conn::usable) {
            *slot = None;
            *slot = Some(self.open().await?);
        }
        Ok(())
    }

    /// The connection for one statement (statements of concurrent callers
    /// are pipelined on it); reconnects when it was lost.
    async fn shared(&self) -> Result<RwLockReadGuard<'_, Conn>, StoreError> {
        let g = self.conn.read().await;
        if let Ok(c) = RwLockReadGuard::try_map(g, |o| o.as_ref().filter(|c| c.usable())) {
            return Ok(c);
        }
        let mut w = self.conn.write().await;
        self.ensure(&mut w).await?;
        RwLockReadGuard::try_map(w.downgrade(), |o| o.as_ref()).map_err(|_| StoreError::Connect {
            url: self.url.clone(),
            reason: "connection lost".into(),
        })
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        c: &Conn,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout + GRACE, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.db_error(op, e)),
            Err(_) => {
                c.broken.store(true, Ordering::Relaxed);
                Err(StoreError::Timeout {
                    op,
                    limit: self.timeout,
                })
            }
        }
    }

    async fn query(
        &self,
        op: &'static str,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        let c = self.shared().await?;
        let fut = async {
            let st = c.prepared(sql).await?;
            c.client.query(&st, params).await
        };
        self.bounded(op, &c, fut).await
    }

    async fn execute(
        &self,
        op: &'static str,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, StoreError> {
        let c = self.shared().await?;
        let fut = async {
            let st = c.prepared(sql).await?;
            c.client.execute(&st, params).await
        };
        self.bounded(op, &c, fut).await
    }

    async fn query_opt(
        &self,
        op: &'static str,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(op, sql, params).await?.into_iter().next())
    }

    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        &self,
        op: &'static str,
        row: &'a Row,
        i: usize,
    ) -> Result<T, StoreError> {
        row.try_get(i).map_err(|e| self.db_error(op, e))
    }

    fn record<'a>(&self, run_id: &str, line: &'a [u8]) -> Result<&'a str, StoreError> {
        let s = std::str::from_utf8(line).map_err(|e| {
            self.corrupt(format!("run {run_id}"), format!("record is not UTF-8: {e}"))
        })?;
        if s.contains(['\n', '\0']) {
            return Err(self.corrupt(
                format!("run {run_id}"),
                "a record is one line of text (no newline or NUL byte)",
            ));
        }
        Ok(s)
    }

    /// The error for a lease that is no longer ours, naming who has it.
    async fn fenced(&self, lease: &Lease) -> StoreError {
        let holder = match self
            .query("read lease holders", LIVE_EXCLUSIVE, &[&lease.name])
            .await
        {
            Ok(rows) => rows.first().and_then(|r| lease_record(r).ok()),
            Err(_) => None,
        };
        let reason = match holder {
            Some(h) if h.holder.instance != lease.holder.instance || h.epoch != lease.epoch => {
                format!("now held by {h}")
            }
            _ => "the lease record is gone (expired and reassigned, or released)".to_string(),
        };
        StoreError::Fenced {
            name: lease.name.clone(),
            epoch: lease.epoch,
            reason,
        }
    }

    /// Explains a conditional journal write that wrote nothing.
    async fn journal_refused(
        &self,
        op: &'static str,
        run_id: &str,
        lease: &Lease,
        seq: Option<u64>,
    ) -> StoreError {
        let key = Key::of(lease);
        let row = match self.query_opt(op, DIAGNOSE, &key.with(&[&run_id])).await {
            Ok(Some(r)) => r,
            Ok(None) => return self.corrupt(format!("run {run_id}"), "no answer"),
            Err(e) => return e,
        };
        let facts = (|| -> Result<(bool, bool, i64), tokio_postgres::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        })();
        match (facts, seq) {
            (Err(e), _) => self.db_error(op, e),
            (Ok((false, _, _)), _) => self.fenced(lease).await,
            (Ok((true, true, _)), None) => StoreError::RunExists(run_id.to_string()),
            (Ok((true, false, _)), _) => StoreError::RunNotFound(run_id.to_string()),
            (Ok((true, true, n)), Some(seq)) => StoreError::SeqConflict {
                run_id: run_id.to_string(),
                expected: seq,
                found: u64_of(n),
            },
        }
    }

    async fn check_mine(&self, op: &'static str, lease: &Lease) -> Result<(), StoreError> {
        let row = self.query_opt(op, MINE, &Key::of(lease).with(&[])).await?;
        match row.map(|r| self.get::<bool>(op, &r, 0)).transpose()? {
            Some(true) => Ok(()),
            _ => Err(self.fenced(lease).await),
        }
    }

    /// The lease transaction: runs with the connection to itself.
    async fn acquire_in(
        &self,
        conn: &mut Conn,
        name: &str,
        mode: LeaseMode,
        holder: &HolderId,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        const OP: &str = "acquire lease";
        let db = |e| self.db_error(OP, e);
        let lock = conn.prepared(LOCK_NAME).await.map_err(db)?;
        let holders = conn.prepared(HOLDERS).await.map_err(db)?;
        let drop_holders = conn.prepared(DROP_HOLDERS).await.map_err(db)?;
        let grant = conn.prepared(GRANT).await.map_err(db)?;
        let tx = conn.client.transaction().await.map_err(db)?;
        tx.query(&lock, &[&name]).await.map_err(db)?;
        let rows = tx.query(&holders, &[&name]).await.map_err(db)?;
        let mut gone = Vec::new();
        let mut took_over = None;
        let mut live_exclusive = None;
        for r in &rows {
            let rec = lease_record(r).map_err(db)?;
            let expired: bool = r.try_get(10).map_err(db)?;
            // A row of this very holder is a re-acquisition: replace it.
            let mine = rec.holder.instance == holder.instance;
            if mine || expired || rec.holder.is_provably_dead() {
                gone.push(rec.holder.instance.clone());
                if !mine && rec.mode == LeaseMode::Exclusive {
                    took_over = Some(rec);
                }
            } else if rec.mode == LeaseMode::Exclusive && live_exclusive.is_none() {
                live_exclusive = Some(rec);
            }
        }
        if mode == LeaseMode::Exclusive {
            if let Some(h) = live_exclusive {
                tx.rollback().await.map_err(db)?;
                return Err(StoreError::LeaseHeld {
                    name: name.to_string(),
                    holder: Box::new(h),
                });
            }
        }
        if !gone.is_empty() {
            tx.execute(&drop_holders, &[&name, &gone])
                .await
                .map_err(db)?;
        }
        let step: i64 = if mode == LeaseMode::Exclusive { 1 } else { 0 };
        let row = tx
            .query_one(
                &grant,
                &[
                    &name,
                    &holder.instance,
                    &step,
                    &mode.as_str(),
                    &holder.run_id,
                    &holder.host,
                    &i64::from(holder.pid),
                    &i64_of(holder.process_start),
                    &holder.boot_id,
                    &ttl_ms(ttl),
                ],
            )
            .await
            .map_err(db)?;
        let epoch: i64 = row.try_get(0).map_err(db)?;
        let expires: i64 = row.try_get(2).map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(LeaseGrant {
            lease: Lease {
                name: name.to_string(),
                mode,
                epoch: u64_of(epoch),
                holder: holder.clone(),
                expires_at_ms: u64_of(expires),
            },
            took_over,
        })
    }
}

#[async_trait]
impl Store for PgStore {
    fn describe(&self) -> String {
        format!("PostgreSQL state store {}", self.base_url())
    }

    fn location(&self) -> String {
        self.url.clone()
    }

    async fn health(&self) -> Result<Health, StoreError> {
        const OP: &str = "health check";
        let c = self.shared().await?;
        let fut = async {
            // Prepared before the clock starts: the skew is measured over one round trip.
            let st = c.prepared(HEALTH).await?;
            let before = SystemTime::now();
            let row = c.client.query_one(&st, &[]).await?;
            Ok((before, row, SystemTime::now()))
        };
        let (before, row, after) = self.bounded(OP, &c, fut).await?;
        drop(c);
        let db_ms: i64 = self.get(OP, &row, 0)?;
        let version: Option<i32> = self.get(OP, &row, 1)?;
        let runs: i64 = self.get(OP, &row, 2)?;
        let ms = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        let local = ms(before) + (ms(after) - ms(before)) / 2;
        Ok(Health {
            location: self.url.clone(),
            schema_version: version.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            clock_skew_ms: db_ms - local,
            runs: usize::try_from(runs).unwrap_or(0),
        })
    }

    async fn create_journal(
        &self,
        run_id: &str,
        lease: &Lease,
        first: &[u8],
    ) -> Result<(), StoreError> {
        const OP: &str = "create journal";
        let line = self.record(run_id, first)?;
        let key = Key::of(lease);
        let n = self
            .execute(OP, CREATE, &key.with(&[&run_id, &line]))
            .await?;
        if n == 1 {
            return Ok(());
        }
        Err(self.journal_refused(OP, run_id, lease, None).await)
    }

    async fn append_records(
        &self,
        run_id: &str,
        lease: &Lease,
        seq: u64,
        lines: &[&[u8]],
    ) -> Result<(), StoreError> {
        const OP: &str = "append to journal";
        let text = lines
            .iter()
            .map(|l| self.record(run_id, l))
            .collect::<Result<Vec<&str>, _>>()?;
        let (key, seq64) = (Key::of(lease), i64_of(seq));
        let r = self
            .execute(OP, APPEND, &key.with(&[&run_id, &seq64, &text]))
            .await;
        match r {
            Ok(n) if n == text.len() as u64 => Ok(()),
            Ok(_) => Err(self.journal_refused(OP, run_id, lease, Some(seq)).await),
            // Impossible while next_seq counts the records; reported the same.
            Err(e) if has_code(&e, &SqlState::UNIQUE_VIOLATION) => {
                Err(self.journal_refused(OP, run_id, lease, Some(seq)).await)
            }
            Err(e) => Err(e),
        }
    }

    async fn repair_torn_tail(
        &self,
        _run_id: &str,
        lease: &Lease,
        _complete_len: u64,
    ) -> Result<u64, StoreError> {
        // Records are rows, committed whole: nothing is ever torn.
        self.check_mine("repair journal", lease).await?;
        Ok(0)
    }

    async fn read_journal(&self, run_id: &str) -> Result<Vec<u8>, StoreError> {
        const OP: &str = "read journal";
        let rows = self.query(OP, READ_ALL, &[&run_id]).await?;
        if rows.is_empty() {
            // Record 0 is created with the run: no rows, no run.
            return Err(StoreError::RunNotFound(run_id.to_string()));
        }
        let mut out = Vec::new();
        for r in &rows {
            let line: &str = self.get(OP, r, 0)?;
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    }

    async fn read_journal_from(
        &self,
        run_id: &str,
        cursor: u64,
    ) -> Result<JournalChunk, StoreError> {
        const OP: &str = "read journal";
        let rows = self
            .query(OP, READ_FROM, &[&run_id, &i64_of(cursor)])
            .await?;
        if rows.is_empty() {
            return Err(StoreError::RunNotFound(run_id.to_string()));
        }
        let mut chunk = JournalChunk {
            bytes: Vec::new(),
            next: cursor,
            torn: 0,
        };
        for r in &rows {
            let seq: Option<i64> = self.get(OP, r, 0)?;
            let line: Option<&str> = self.get(OP, r, 1)?;
            if let (Some(seq), Some(line)) = (seq, line) {
                chunk.bytes.extend_from_slice(line.as_bytes());
                chunk.bytes.push(b'\n');
                chunk.next = u64_of(seq) + 1;
            }
        }
        Ok(chunk)
    }

    async fn read_journal_chunk(
        &self,
        run_id: &str,
        cursor: u64,
        max_bytes: usize,
    ) -> Result<JournalChunk, StoreError> {
        const OP: &str = "read journal";
        /// Rows fetched per query: records are small (a few hundred
        /// bytes), so one query usually fills a chunk.
        const BATCH: i64 = 512;
        let mut chunk = JournalChunk {
            bytes: Vec::new(),
            next: cursor,
            torn: 0,
        };
        loop {
            let rows = self
                .query(OP, READ_FROM_LIMIT, &[&run_id, &i64_of(chunk.next), &BATCH])
                .await?;
            if rows.is_empty() {
                return Err(StoreError::RunNotFound(run_id.to_string()));
            }
            let mut got = 0;
            for r in &rows {
                let seq: Option<i64> = self.get(OP, r, 0)?;
                let line: Option<&str> = self.get(OP, r, 1)?;
                let (Some(seq), Some(line)) = (seq, line) else {
                    continue;
                };
                if !chunk.bytes.is_empty() && chunk.bytes.len() + line.len() + 1 > max_bytes {
                    return Ok(chunk);
                }
                chunk.bytes.extend_from_slice(line.as_bytes());
                chunk.bytes.push(b'\n');
                chunk.next = u64_of(seq) + 1;
                got += 1;
            }
            if got < BATCH as usize || chunk.bytes.len() >= max_bytes {
                return Ok(chunk);
            }
        }
    }

    async fn list_runs(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .run_summaries()
            .await?
            .into_iter()
            .map(|s| s.run_id)
            .collect())
    }

    async fn run_summaries(&self) -> Result<Vec<RunSummary>, StoreError> {
        const OP: &str = "list runs";
        let rows = self.query(OP, SUMMARIES, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(RunSummary {
                    run_id: self.get(OP, r, 0)?,
                    last_write_ms: u64_of(self.get(OP, r, 1)?),
                })
            })
            .collect()
    }

    async fn delete_run(&self, run_id: &str) -> Result<(), StoreError> {
        const OP: &str = "delete run";
        let row = self.query_opt(OP, DELETE_RUN, &[&run_id]).await?;
        match row.map(|r| self.get::<i64>(OP, &r, 0)).transpose()? {
            Some(n) if n > 0 => Ok(()),
            _ => Err(StoreError::RunNotFound(run_id.to_string())),
        }
    }

    fn journal_location(&self, run_id: &str) -> String {
        format!("{} run {run_id}", self.base_url())
    }

    async fn put_approval(&self, run_id: &str, step: &str, a: &Approval) -> Result<(), StoreError> {
        let doc = self.to_json(format!("run {run_id} approval {step}"), a)?;
        match self
            .execute("record approval", PUT_APPROVAL, &[&run_id, &step, &doc])
            .await
        {
            Err(e) if has_code(&e, &SqlState::FOREIGN_KEY_VIOLATION) => {
                Err(StoreError::RunNotFound(run_id.to_string()))
            }
            r => r.map(|_| ()),
        }
    }

    async fn get_approval(&self, run_id: &str, step: &str) -> Result<Option<Approval>, StoreError> {
        const OP: &str = "read approval";
        let Some(row) = self.query_opt(OP, GET_APPROVAL, &[&run_id, &step]).await? else {
            return Ok(None);
        };
        let text: &str = self.get(OP, &row, 0)?;
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| self.corrupt(format!("run {run_id} approval {step}"), e))
    }

    async fn request_abort(&self, run_id: &str, by: &str) -> Result<(), StoreError> {
        match self
            .execute("request abort", PUT_ABORT, &[&run_id, &by])
            .await
        {
            Err(e) if has_code(&e, &SqlState::FOREIGN_KEY_VIOLATION) => {
                Err(StoreError::RunNotFound(run_id.to_string()))
            }
            r => r.map(|_| ()),
        }
    }

    async fn abort_requested(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        const OP: &str = "read abort request";
        let row = self.query_opt(OP, GET_ABORT, &[&run_id]).await?;
        row.map(|r| self.get(OP, &r, 0)).transpose()
    }

    async fn acquire_lease(
        &self,
        name: &str,
        mode: LeaseMode,
        holder: &HolderId,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        // The transaction needs the connection to itself.
        let mut w = self.conn.write().await;
        self.ensure(&mut w).await?;
        let Some(conn) = w.as_mut() else {
            return Err(StoreError::Connect {
                url: self.url.clone(),
                reason: "connection lost".into(),
            });
        };
        let limit = self.timeout + GRACE;
        match tokio::time::timeout(limit, self.acquire_in(conn, name, mode, holder, ttl)).await {
            Ok(r) => r,
            Err(_) => {
                // Dropping the connection aborts the transaction.
                *w = None;
                Err(StoreError::Timeout {
                    op: "acquire lease",
                    limit: self.timeout,
                })
            }
        }
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        const OP: &str = "renew lease";
        let (key, ms) = (Key::of(lease), ttl_ms(ttl));
        let row = self.query_opt(OP, RENEW, &key.with(&[&ms])).await?;
        match row {
            Some(r) => Ok(Lease {
                expires_at_ms: u64_of(self.get(OP, &r, 0)?),
                ..lease.clone()
            }),
            None => Err(self.fenced(lease).await),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let key = Key::of(lease);
        self.execute("release lease", RELEASE, &key.with(&[]))
            .await
            .map(|_| ())
    }

    async fn leases(&self, name: &str) -> Result<Vec<LeaseRecord>, StoreError> {
        const OP: &str = "read lease holders";
        let rows = self.query(OP, LIVE, &[&name]).await?;
        rows.iter()
            .map(|r| lease_record(r).map_err(|e| self.db_error(OP, e)))
            .collect()
    }

    async fn put_artifact(
        &self,
        run_id: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, StoreError> {
        self.execute("store artifact", PUT_ARTIFACT, &[&run_id, &name, &bytes])
            .await?;
        Ok(format!("{} run {run_id} artifact {name}", self.base_url()))
    }

    async fn get_artifact(&self, run_id: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        const OP: &str = "read artifact";
        let row = self.query_opt(OP, GET_ARTIFACT, &[&run_id, &name]).await?;
        row.map(|r| self.get(OP, &r, 0)).transpose()
    }

    async fn get_doc(&self, collection: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        const OP: &str = "read document";
        let Some(row) = self.query_opt(OP, GET_DOC, &[&collection, &key]).await? else {
            return Ok(None);
        };
        let version: i64 = self.get(OP, &row, 0)?;
        let text: &str = self.get(OP, &row, 1)?;
        let doc = serde_json::from_str(text)
            .map_err(|e| self.corrupt(format!("document {collection}/{key}"), e))?;
        Ok(Some(Versioned {
            version: u64_of(version),
            doc,
        }))
    }

    async fn put_doc(
        &self,
        collection: &str,
        key: &str,
        doc: &Value,
        expect: Expect,
    ) -> Result<u64, StoreError> {
        const OP: &str = "write document";
        let text = self.to_json(format!("document {collection}/{key}"), doc)?;
        let row = match expect {
            Expect::Absent => {
                self.query_opt(OP, PUT_ABSENT, &[&collection, &key, &text])
                    .await?
            }
            Expect::Version(v) => {
                self.query_opt(OP, PUT_VERSION, &[&collection, &key, &text, &i64_of(v)])
                    .await?
            }
            Expect::Any => {
                self.query_opt(OP, PUT_ANY, &[&collection, &key, &text])
                    .await?
            }
        };
        if let Some(r) = row {
            return Ok(u64_of(self.get(OP, &r, 0)?));
        }
        let found = match self
            .query_opt(OP, DOC_VERSION, &[&collection, &key])
            .await?
        {
            Some(r) => format!("version {}", self.get::<i64>(OP, &r, 0)?),
            None => "absent".to_string(),
        };
        Err(StoreError::Conflict {
            collection: collection.to_string(),
            key: key.to_string(),
            expected: match expect {
                Expect::Version(v) => format!("version {v}"),
                _ => "absent".to_string(),
            },
            found,
        })
    }

    async fn append_history(&self, collection: &str, record: &Value) -> Result<(), StoreError> {
        let text = self.to_json(format!("history {collection}"), record)?;
        self.execute("append history", APPEND_HISTORY, &[&collection, &text])
            .await
            .map(|_| ())
    }

    async fn read_history(&self, collection: &str) -> Result<Vec<Value>, StoreError> {
        const OP: &str = "read history";
        let rows = self.query(OP, READ_HISTORY, &[&collection]).await?;
        rows.iter()
            .map(|r| {
                let text: &str = self.get(OP, r, 0)?;
                serde_json::from_str(text)
                    .map_err(|e| self.corrupt(format!("history {collection}"), e))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretRef;
    use crate::store::contract::{self, with_postgres, PgTarget, TestPostgres};

    async fn raw(t: &PgTarget) -> Client {
        t.server
            .connect(Duration::from_secs(5))
            .await
            .expect("raw connection")
    }

    #[tokio::test]
    async fn contract_holds_on_postgres() {
        with_postgres(|t| async move {
            assert!(matches!(
                PgStore::connect(&t.url, t.server.clone()).await,
                Err(StoreError::NotInitialised { .. })
            ));
            let (store, applied) = PgStore::init(&t.url, t.server.clone()).await.expect("init");
            assert_eq!(applied.len(), SCHEMA_VERSION as usize, "{applied:?}");
            let (_, again) = PgStore::init(&t.url, t.server.clone())
                .await
                .expect("init again");
            assert!(again.is_empty(), "{again:?}");
            contract::run_all(&store).await;
            // A second client (another drctl process) sees the same state.
            let other = PgStore::connect(&t.url, t.server.clone())
                .await
                .expect("connect");
            contract::run_all(&other).await;
            contract::takeover_is_a_cut(&store, &other).await;

            assert_eq!(
                store.describe(),
                format!(
                    "PostgreSQL state store postgres://127.0.0.1:{}/postgres",
                    t.server.port
                )
            );
            assert_eq!(store.location(), t.url);
            assert_eq!(
                store.journal_location("R1"),
                format!("postgres://127.0.0.1:{}/postgres run R1", t.server.port)
            );
            let Some(SecretRef::File(pw)) = &t.server.password else {
                panic!("the fixture uses a password file")
            };
            let pw = std::fs::read_to_string(pw).expect("password");
            assert!(!store.describe().contains(&pw) && !store.location().contains(&pw));

            // A record must be one line of UTF-8 text.
            let run = "bytes-run";
            let lease = store
                .acquire_lease(
                    "bytes",
                    LeaseMode::Exclusive,
                    &HolderId::this_process(run),
                    Duration::from_secs(60),
                )
                .await
                .expect("lease")
                .lease;
            for bad in [&b"a\nb"[..], b"\xff", b"a\0"] {
                assert!(matches!(
                    store.create_journal(run, &lease, bad).await,
                    Err(StoreError::Corrupt { .. })
                ));
            }

            // The hot path: one prepared statement per append.
            store
                .create_journal(run, &lease, b"{}")
                .await
                .expect("create");
            let started = std::time::Instant::now();
            for seq in 1..=200u64 {
                store
                    .append_journal(run, &lease, seq, format!("{{\"seq\":{seq}}}").as_bytes())
                    .await
                    .expect("append");
            }
            eprintln!("200 appends in {:?}", started.elapsed());
            let rows = raw(&t)
                .await
                .query_one(
                    "select count(*), max(seq) from drctl.journal where run_id = $1",
                    &[&run],
                )
                .await
                .expect("count");
            assert_eq!((rows.get::<_, i64>(0), rows.get::<_, i64>(1)), (201, 200));
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_inits_and_version_checks() {
        with_postgres(|t| async move {
            let (a, b) = tokio::join!(
                PgStore::init(&t.url, t.server.clone()),
                PgStore::init(&t.url, t.server.clone())
            );
            let (a, b) = (a.expect("init a").1, b.expect("init b").1);
            assert_eq!(a.len() + b.len(), SCHEMA_VERSION as usize, "{a:?} {b:?}");
            PgStore::connect(&t.url, t.server.clone())
                .await
                .expect("connect");
            // A newer drctl migrated the schema: this one refuses it.
            raw(&t)
                .await
                .batch_execute(
                    "insert into drctl.schema_version (version, name) values (99, 'future')",
                )
                .await
                .expect("bump version");
            for r in [
                PgStore::connect(&t.url, t.server.clone()).await.map(|_| ()),
                PgStore::init(&t.url, t.server.clone()).await.map(|_| ()),
            ] {
                assert!(
                    matches!(
                        r,
                        Err(StoreError::Schema {
                            found: 99,
                            wanted: SCHEMA_VERSION
                        })
                    ),
                    "{r:?}"
                );
            }
            // Unreachable and unauthenticated servers are reported as such.
            let mut wrong = t.server.clone();
            wrong.port = crate::lab::pg::free_port().expect("port");
            let e = PgStore::connect("postgres://x", wrong)
                .await
                .expect_err("no server");
            assert!(e.is_unavailable(), "{e:?}");
            let mut wrong = t.server.clone();
            wrong.password = None;
            let e = PgStore::connect("postgres://x", wrong)
                .await
                .expect_err("no password");
            assert!(matches!(e, StoreError::Connect { .. }), "{e:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn reconnects_after_the_database_restarts() {
        let mut pg = TestPostgres::start().await;
        let t = pg.target.clone();
        let (store, _) = PgStore::init(&t.url, t.server.clone()).await.expect("init");
        let lease = store
            .acquire_lease(
                "env",
                LeaseMode::Exclusive,
                &HolderId::this_process("r"),
                Duration::from_secs(60),
            )
            .await
            .expect("lease")
            .lease;
        store
            .create_journal("r", &lease, b"{}")
            .await
            .expect("create");

        pg.stop().await;
        let e = store
            .append_journal("r", &lease, 1, b"{}")
            .await
            .expect_err("down");
        assert!(e.is_unavailable(), "{e:?}");
        pg.restart().await;
        store
            .append_journal("r", &lease, 1, b"{\"n\":1}")
            .await
            .expect("reconnected");

        pg.kill().await;
        let e = store.read_journal("r").await.expect_err("crashed");
        assert!(e.is_unavailable(), "{e:?}");
        let e = store
            .acquire_lease(
                "env",
                LeaseMode::Exclusive,
                &HolderId::this_process("r2"),
                Duration::from_secs(60),
            )
            .await
            .expect_err("still down");
        assert!(e.is_unavailable(), "{e:?}");
        pg.restart().await;
        assert_eq!(
            store.read_journal("r").await.expect("reconnected"),
            b"{}\n{\"n\":1}\n"
        );
        // The lease survived the restart: the database keeps it, not the session.
        store
            .append_journal("r", &lease, 2, b"{}")
            .await
            .expect("append");
        pg.stop().await;
    }

    /// An append racing an uncommitted takeover waits for it, then is
    /// fenced: once a grant commits, no append of the old holder lands.
    #[tokio::test]
    async fn an_append_racing_a_takeover_waits_and_is_fenced() {
        with_postgres(|t| async move {
            let (store, _) = PgStore::init(&t.url, t.server.clone()).await.expect("init");
            let holder = HolderId::this_process("r");
            let ttl = Duration::from_secs(60);
            let a = store
                .acquire_lease("env", LeaseMode::Exclusive, &holder, ttl)
                .await
                .expect("lease")
                .lease;
            store.create_journal("r", &a, b"{}").await.expect("create");
            let mut taker = raw(&t).await;
            let tx = taker.transaction().await.expect("begin");
            tx.execute("delete from drctl.leases where name = 'env'", &[])
                .await
                .expect("take over");
            let append = store.append_journal("r", &a, 1, b"{}");
            tokio::pin!(append);
            assert!(
                tokio::time::timeout(Duration::from_millis(300), &mut append)
                    .await
                    .is_err(),
                "the append waits for the takeover to commit or roll back"
            );
            tx.commit().await.expect("commit");
            assert!(matches!(append.await, Err(StoreError::Fenced { .. })));
            assert_eq!(store.read_journal("r").await.expect("read"), b"{}\n");
        })
        .await;
    }

    /// Two suites at once on one store: statements of concurrent callers
    /// share the connection, lease transactions take it to themselves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_store_serves_concurrent_callers() {
        contract::with_pg_store(|store| async move {
            tokio::join!(contract::run_all(&*store), contract::run_all(&*store));
        })
        .await;
    }

    #[tokio::test]
    async fn statements_are_bounded() {
        with_postgres(|t| async move {
            let (store, _) = PgStore::init(&t.url, t.server.clone()).await.expect("init");
            let store = store.with_timeout(Duration::from_millis(400));
            // Another session holds the lease name's row.
            let mut blocker = raw(&t).await;
            let tx = blocker.transaction().await.expect("begin");
            tx.batch_execute(
                "insert into drctl.lease_epochs (name) values ('env'); \
                 select * from drctl.lease_epochs where name = 'env' for update",
            )
            .await
            .expect("lock");
            let holder = HolderId::this_process("r");
            let ttl = Duration::from_secs(60);
            // First on the old connection (server bound 5 s): the client
            // gives up and drops it; then on a new one, bounded by the server.
            for _ in 0..2 {
                let started = std::time::Instant::now();
                let e = store
                    .acquire_lease("env", LeaseMode::Exclusive, &holder, ttl)
                    .await
                    .expect_err("blocked");
                assert!(matches!(e, StoreError::Timeout { .. }), "{e:?}");
                assert!(e.is_unavailable());
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "{:?}",
                    started.elapsed()
                );
            }
            assert!(store
                .list_runs()
                .await
                .expect("other statements work")
                .is_empty());
            tx.rollback().await.expect("rollback");
            store
                .acquire_lease("env", LeaseMode::Exclusive, &holder, ttl)
                .await
                .expect("free again");
        })
        .await;
    }
}
