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
//!
//! Split by concern: [`schema`] holds the DDL, migrations and every SQL
//! statement; [`conn`] the one shared connection (reconnect, timeouts,
//! error mapping, statement helpers); [`lease`] the fencing machinery
//! (lease keys, the lease transaction, why a conditional write wrote
//! nothing). This module holds the store and its [`Store`] impl.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::RwLock;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{
    Approval, Expect, Health, HolderId, JournalChunk, Lease, LeaseGrant, LeaseMode, LeaseRecord,
    RunSummary, Store, StoreError, Versioned, SCHEMA_VERSION,
};
use crate::pgconn::PgServer;

mod conn;
mod lease;
mod schema;
use conn::{has_code, i64_of, ttl_ms, u64_of, Conn};
use lease::Key;
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
mod tests;
