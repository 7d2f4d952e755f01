//! Fencing in the PostgreSQL store: the key that every conditional write
//! compares with the writer's lease row, the lease transaction (acquisitions
//! of a name serialise on its `lease_epochs` row), and the explanation of a
//! conditional write that wrote nothing (fenced, no such run, or another
//! sequence number). Separate because these are the store's safety rules,
//! worth reading on their own.

use std::time::Duration;

use tokio_postgres::types::ToSql;

use super::conn::{i64_of, ttl_ms, u64_of, Conn};
use super::schema::*;
use super::{HolderId, Lease, LeaseGrant, LeaseMode, Params, PgStore, StoreError};

/// The columns that identify a lease row, compared by every conditional
/// write (`$1..$4` of `is_mine!()`).
pub(super) struct Key<'a> {
    name: &'a str,
    instance: &'a str,
    epoch: i64,
    mode: &'static str,
}

impl<'a> Key<'a> {
    pub(super) fn of(l: &'a Lease) -> Self {
        Key {
            name: &l.name,
            instance: &l.holder.instance,
            epoch: i64_of(l.epoch),
            mode: l.mode.as_str(),
        }
    }

    /// The key's parameters, then `rest` (`$5`, …).
    pub(super) fn with(&'a self, rest: Params<'a>) -> Vec<&'a (dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> =
            vec![&self.name, &self.instance, &self.epoch, &self.mode];
        p.extend_from_slice(rest);
        p
    }
}

impl PgStore {
    /// The error for a lease that is no longer ours, naming who has it.
    pub(super) async fn fenced(&self, lease: &Lease) -> StoreError {
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
    pub(super) async fn journal_refused(
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

    pub(super) async fn check_mine(
        &self,
        op: &'static str,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        let row = self.query_opt(op, MINE, &Key::of(lease).with(&[])).await?;
        match row.map(|r| self.get::<bool>(op, &r, 0)).transpose()? {
            Some(true) => Ok(()),
            _ => Err(self.fenced(lease).await),
        }
    }

    /// The lease transaction: runs with the connection to itself.
    pub(super) async fn acquire_in(
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
