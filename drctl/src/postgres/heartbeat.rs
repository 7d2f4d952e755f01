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
use crate::store::Store;

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

/// Reads the persisted status for an environment.
pub fn load_status(store: &dyn Store, key: &str) -> Option<HeartbeatStatus> {
    store
        .get_doc(COLLECTION, key)
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_value(v).ok())
}

/// Writes heartbeats until `stop` resolves. Transient failures (the primary
/// restarting, a network blip, the primary being fenced) are counted and
/// retried with backoff; the loop never exits on its own.
pub async fn run_writer(
    server: PgServer,
    interval: Duration,
    store: Arc<dyn Store>,
    key: String,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let addr = server.addr();
    let mut status = load_status(store.as_ref(), &key).unwrap_or_default();
    status.server = addr.clone();
    status.interval_ms = interval.as_millis() as u64;
    let mut backoff = Duration::from_millis(100);
    'outer: loop {
        let client = tokio::select! {
            _ = &mut stop => break,
            c = server.connect(Duration::from_secs(3)) => c,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                record_error(&store, &key, &mut status, &e.to_string());
                tokio::select! { _ = &mut stop => break, _ = tokio::time::sleep(backoff) => {} }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let limit = Duration::from_secs(3);
        if let Err(e) = execute(&client, &addr, "create heartbeat table", TABLE_DDL, limit).await {
            record_error(&store, &key, &mut status, &e.to_string());
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
                record_error(&store, &key, &mut status, &e.to_string());
                continue;
            }
        };
        let mut next = max_db.max(status.last_acked_id.unwrap_or(0)) + 1;
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
                        status.last_acked_id = Some(next);
                        status.last_acked_at_ms = Some(r.get(0));
                        status.last_acked_lsn = Some(r.get(1));
                        status.updated_ms = crate::journal::now_ms();
                        let _ = store.put_doc(
                            COLLECTION,
                            &key,
                            &serde_json::to_value(&status).unwrap_or_default(),
                        );
                    }
                    next += 1;
                }
                Err(e) => {
                    record_error(&store, &key, &mut status, &e.to_string());
                    // Reconnect: the session may be gone (fenced, killed).
                    continue 'outer;
                }
            }
        }
    }
}

fn record_error(store: &Arc<dyn Store>, key: &str, status: &mut HeartbeatStatus, err: &str) {
    status.errors += 1;
    status.last_error = Some(err.to_string());
    status.updated_ms = crate::journal::now_ms();
    let _ = store.put_doc(
        COLLECTION,
        key,
        &serde_json::to_value(&*status).unwrap_or_default(),
    );
    tracing::debug!(error = err, "heartbeat write failed");
}
