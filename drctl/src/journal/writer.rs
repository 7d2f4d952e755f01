//! Writing a journal: [`JournalWriter`] appends records through the
//! store under the run's lease, and the crash point that crash tests use to
//! kill the process right after a record is durable. Separate from the
//! chain because this is where durability and ownership are decided.

use std::sync::Arc;

use super::chain::encode;
use super::record::{Event, Record};
use super::{JournalError, GENESIS};
use crate::store::{Lease, Store, StoreError};

/// Fault injection for crash tests: with `DRCTL_TEST_CRASH_AFTER_SEQ=N` the
/// process kills itself with SIGKILL right after record N is durable, so a
/// test can stop drctl at every step boundary exactly. Never set it in
/// production; it is read once per process.
fn crash_point(seq: u64) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("DRCTL_TEST_CRASH_AFTER_SEQ")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *at == Some(seq) {
        // SAFETY: raising SIGKILL on ourselves; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Appends records durably through the store. Holding one means owning
/// the run: every append carries the run's lease (the fencing token) and
/// the sequence number it expects, so a writer whose lease was taken over
/// cannot add a record.
///
/// # Guarantees
/// [`JournalWriter::append`] returns only once its record, and every
/// record staged before it, is durable: callers act on that. Records are
/// written in sequence order, one chain.
///
/// # Caveats
/// A [`JournalWriter::stage`]d record (a conclusion, such as a finished
/// step, that guards no side effect) is held in memory until the next
/// append or [`JournalWriter::flush`]; a crash before then loses it, and
/// resume re-runs that step (steps are idempotent). The engine flushes
/// before it waits for anything, so this window spans no work.
pub struct JournalWriter {
    store: Arc<dyn Store>,
    run_id: String,
    lease: Lease,
    next_seq: u64,
    last_hash: String,
    /// Staged records: encoded and chained, not yet written.
    pending: Vec<(u64, Vec<u8>)>,
    /// Sequence number of the first staged record (= durable count).
    durable_seq: u64,
    /// Hash of the last durable record: where the chain restarts if a
    /// flush fails.
    durable_hash: String,
}

impl JournalWriter {
    /// Creates the run's journal with its `run_started` record.
    pub async fn create(
        store: Arc<dyn Store>,
        run_id: &str,
        lease: Lease,
        first: Event,
    ) -> Result<(Self, Record), JournalError> {
        let mut w = JournalWriter::resume(store, run_id, lease, 0, GENESIS.to_string());
        let rec = w.append(first).await?;
        Ok((w, rec))
    }

    /// Continues an existing, verified journal.
    pub fn resume(
        store: Arc<dyn Store>,
        run_id: &str,
        lease: Lease,
        next_seq: u64,
        last_hash: String,
    ) -> Self {
        JournalWriter {
            store,
            run_id: run_id.to_string(),
            lease,
            next_seq,
            pending: Vec::new(),
            durable_seq: next_seq,
            durable_hash: last_hash.clone(),
            last_hash,
        }
    }

    /// Writes one record, with any staged before it, and returns only once
    /// they are durable. Secret values are masked before hashing and
    /// serialisation, so they never reach disk.
    pub async fn append(&mut self, event: Event) -> Result<Record, JournalError> {
        let rec = self.stage(event)?;
        self.flush().await?;
        Ok(rec)
    }

    /// Adds a record to the chain without writing it yet: the next
    /// [`JournalWriter::append`] or [`JournalWriter::flush`] writes it in
    /// the same durable write (a group commit). Only for records that no
    /// side effect waits on.
    pub fn stage(&mut self, event: Event) -> Result<Record, JournalError> {
        let (rec, line) = encode(self.next_seq, &self.last_hash, event)?;
        self.last_hash = rec.hash.clone();
        self.next_seq += 1;
        self.pending.push((rec.seq, line));
        Ok(rec)
    }

    /// Makes every staged record durable (one write). A no-op when none is
    /// staged. On failure the staged records are dropped and the chain
    /// goes back to the last durable record, so nothing unwritten is
    /// chained on.
    pub async fn flush(&mut self) -> Result<(), JournalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let first = self.durable_seq;
        let res = if first == 0 {
            // Record 0 creates the journal; `create` stages nothing before it.
            let (seq0, line0) = &pending[0];
            debug_assert_eq!(*seq0, 0);
            let created = self
                .store
                .create_journal(&self.run_id, &self.lease, line0)
                .await;
            match created {
                Ok(()) if pending.len() > 1 => {
                    let rest: Vec<&[u8]> = pending[1..].iter().map(|(_, l)| l.as_slice()).collect();
                    self.store
                        .append_records(&self.run_id, &self.lease, 1, &rest)
                        .await
                }
                other => other,
            }
        } else {
            let lines: Vec<&[u8]> = pending.iter().map(|(_, l)| l.as_slice()).collect();
            self.store
                .append_records(&self.run_id, &self.lease, first, &lines)
                .await
        };
        if let Err(e) = res {
            self.next_seq = self.durable_seq;
            self.last_hash = self.durable_hash.clone();
            return Err(match e {
                e @ (StoreError::Fenced { .. } | StoreError::SeqConflict { .. }) => {
                    JournalError::Fenced(e)
                }
                e => JournalError::Write(e),
            });
        }
        self.durable_seq += pending.len() as u64;
        self.durable_hash = self.last_hash.clone();
        for (seq, _) in &pending {
            crash_point(*seq);
        }
        Ok(())
    }

    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn set_lease(&mut self, lease: Lease) {
        self.lease = lease;
    }
}
