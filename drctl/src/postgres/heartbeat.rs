//! The heartbeat: drctl's RPO probe.
//!
//! A long-running writer inserts `(id, at, lsn)` into `drctl_heartbeat` on
//! the primary every interval, with consecutive writer-assigned ids, and
//! after each acknowledged commit records its progress in drctl's state
//! store (outside the region that may fail). After a failover, comparing the
//! last acknowledged id with the newest id that survived on the promoted
//! standby counts the rows lost; when the old primary comes back, the rows
//! it has beyond that are the exact truth.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::conn::{execute, query, PgServer};
use crate::store::{Expect, Store, StoreError};

pub const TABLE_DDL: &str = "create table if not exists drctl_heartbeat (id bigint primary key, at timestamptz not null, lsn pg_lsn not null)";

/// Progress persisted after every acknowledged write.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeartbeatStatus {
    pub server: String,
    pub interval_ms: u64,
    pub last_acked_id: Option<i64>,
    pub last_acked_at_ms: Option<i64>,
    pub last_acked_lsn: Option<String>,
    pub updated_ms: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

pub const COLLECTION: &str = "heartbeat";

/// Reads the persisted status for an environment: `Ok(None)` when the
/// store has none (no heartbeat ever ran against this store).
pub async fn load_status(
    store: &dyn Store,
    key: &str,
) -> Result<Option<HeartbeatStatus>, StoreError> {
    Ok(store
        .get_doc(COLLECTION, key)
        .await?
        .and_then(|v| serde_json::from_value(v.doc).ok()))
}

/// The writer's copy of its status document and the version it last
/// wrote: writes are compare-and-set, so a second writer for the same
/// environment is noticed (and logged) instead of silently overwritten.
struct StatusDoc {
    store: Arc<dyn Store>,
    key: String,
    version: Option<u64>,
    status: HeartbeatStatus,
}

impl StatusDoc {
    async fn load(store: Arc<dyn Store>, key: String) -> Self {
        let cur = store.get_doc(COLLECTION, &key).await.ok().flatten();
        let version = cur.as_ref().map(|c| c.version);
        let status = cur
            .and_then(|c| serde_json::from_value(c.doc).ok())
            .unwrap_or_default();
        StatusDoc {
            store,
            key,
            version,
            status,
        }
    }

    async fn save(&mut self) {
        let doc = serde_json::to_value(&self.status).unwrap_or_default();
        let expect = self.version.map_or(Expect::Absent, Expect::Version);
        match self
            .store
            .put_doc(COLLECTION, &self.key, &doc, expect)
            .await
        {
            Ok(v) => self.version = Some(v),
            Err(StoreError::Conflict { .. }) => {
                // Another writer updated the document: keep the newer
                // acknowledgement of the two and say so.
                if let Ok(Some(cur)) = self.store.get_doc(COLLECTION, &self.key).await {
                    tracing::warn!(key = %self.key, "another heartbeat writer updates this environment's status");
                    let theirs: HeartbeatStatus =
                        serde_json::from_value(cur.doc).unwrap_or_default();
                    if theirs.last_acked_id > self.status.last_acked_id {
                        self.status.last_acked_id = theirs.last_acked_id;
                        self.status.last_acked_at_ms = theirs.last_acked_at_ms;
                        self.status.last_acked_lsn = theirs.last_acked_lsn;
                    }
                    self.version = Some(cur.version);
                    // Write the merged acknowledgement now: RPO reads the
                    // newest acknowledged write from here, so it must not
                    // wait for the next commit (there may be none).
                    let doc = serde_json::to_value(&self.status).unwrap_or_default();
                    if let Ok(v) = self
                        .store
                        .put_doc(COLLECTION, &self.key, &doc, Expect::Version(cur.version))
                        .await
                    {
                        self.version = Some(v);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot save heartbeat status"),
        }
    }
}

/// Writes heartbeats until `stop` resolves. Transient failures (the primary
/// restarting, a network blip, the primary being fenced) are counted and
/// retried with backoff; the loop never exits on its own. `stop` is only
/// looked at between writes, so a write in flight finishes (acknowledged
/// or failed) first; the status returned is the writer's last word (the
/// lab stops it at a drill's injection and records it as the truth's
/// reference).
pub async fn run_writer(
    server: PgServer,
    interval: Duration,
    store: Arc<dyn Store>,
    key: String,
    stop: impl Future<Output = ()>,
) -> HeartbeatStatus {
    tokio::pin!(stop);
    let addr = server.addr();
    let mut doc = StatusDoc::load(store, key).await;
    doc.status.server = addr.clone();
    doc.status.interval_ms = interval.as_millis() as u64;
    let mut backoff = Duration::from_millis(100);
    'outer: loop {
        let client = tokio::select! {
            _ = &mut stop => break,
            c = server.connect(Duration::from_secs(3)) => c,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                record_error(&mut doc, &e.to_string()).await;
                tokio::select! { _ = &mut stop => break, _ = tokio::time::sleep(backoff) => {} }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let limit = Duration::from_secs(3);
        if let Err(e) = execute(&client, &addr, "create heartbeat table", TABLE_DDL, limit).await {
            record_error(&mut doc, &e.to_string()).await;
            tokio::select! { _ = &mut stop => break, _ = tokio::time::sleep(backoff) => {} }
            continue;
        }
        // Continue after the highest id anywhere we know of, so ids stay
        // unique across writer restarts and failovers.
        let max_db = match query(
            &client,
            &addr,
            "max heartbeat id",
            "select coalesce(max(id), 0) from drctl_heartbeat",
            limit,
        )
        .await
        {
            Ok(rows) => rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or(0),
            Err(e) => {
                record_error(&mut doc, &e.to_string()).await;
                continue;
            }
        };
        let mut next = max_db.max(doc.status.last_acked_id.unwrap_or(0)) + 1;
        backoff = Duration::from_millis(100);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break 'outer,
                _ = tick.tick() => {}
            }
            let sql = format!(
                "insert into drctl_heartbeat(id, at, lsn) values ({next}, now(), pg_current_wal_lsn()) \
                 returning (extract(epoch from at) * 1000)::bigint, lsn::text"
            );
            match query(
                &client,
                &addr,
                "insert heartbeat",
                &sql,
                interval.max(Duration::from_millis(500)),
            )
            .await
            {
                Ok(rows) => {
                    if let Some(r) = rows.first() {
                        doc.status.last_acked_id = Some(next);
                        doc.status.last_acked_at_ms = Some(r.get(0));
                        doc.status.last_acked_lsn = Some(r.get(1));
                        doc.status.updated_ms = crate::journal::now_ms();
                        doc.save().await;
                    }
                    next += 1;
                }
                Err(e) => {
                    record_error(&mut doc, &e.to_string()).await;
                    // Reconnect: the session may be gone (fenced, killed).
                    continue 'outer;
                }
            }
        }
    }
    doc.status
}

async fn record_error(doc: &mut StatusDoc, err: &str) {
    doc.status.errors += 1;
    doc.status.last_error = Some(err.to_string());
    doc.status.updated_ms = crate::journal::now_ms();
    doc.save().await;
    tracing::debug!(error = err, "heartbeat write failed");
}
