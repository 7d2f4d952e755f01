//! Work a caller does inside a run's lease, before its first record and
//! after its last: a drill injects the failure under the lease (so two
//! drills never break the same lab at once) and hands the measured truth to
//! the engine, which journals it with the run's own writer before the lease
//! is released. The engine stays the only writer of run state.
//!
//! Hooks run outside the event loop, so the lease is renewed around them
//! ([`with_renewal`]); a renewal refused as `Fenced` stops the hook at once.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tracing::warn;

use super::{lease_ttl, EngineError, RunOutcome, STORE_CALL_TIMEOUT};
use crate::journal::JournalError;
use crate::store::{Lease, Store, StoreError};

/// A note for the run's journal (`Event::Note`, no step).
#[derive(Debug, Clone)]
pub struct Note {
    pub message: String,
    pub data: Value,
}

/// What a caller does under the run's lease. Errors are the caller's own
/// (boxed in [`EngineError::Hook`]); the caller downcasts them back.
#[async_trait]
pub trait RunHooks: Send + Sync {
    /// After the lease is taken, before `run_started`: returns the failure
    /// time to journal in it (`None`: keep the spec's). An error ends the
    /// run before it starts (no journal), and the lease is released.
    async fn before_start(&self) -> Result<Option<u64>, Box<dyn std::error::Error + Send + Sync>>;

    /// After `run_finished` is durable and before the lease is released:
    /// notes to append to the run's journal.
    async fn after_finish(&self, outcome: &RunOutcome) -> Vec<Note>;
}

/// Runs `fut` while renewing `lease` every third of its lifetime. Returns
/// the future's output and the lease as last renewed.
pub async fn with_renewal<T>(
    store: &dyn Store,
    mut lease: Lease,
    fut: impl Future<Output = T>,
) -> Result<(T, Lease), EngineError> {
    let ttl = lease_ttl();
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut fut => return Ok((out, lease)),
            _ = tick.tick() => {
                match tokio::time::timeout(STORE_CALL_TIMEOUT, store.renew_lease(&lease, ttl)).await {
                    Ok(Ok(l)) => lease = l,
                    Ok(Err(e @ StoreError::Fenced { .. })) => return Err(JournalError::Fenced(e).into()),
                    // The next journal write decides; a hook is short.
                    Ok(Err(e)) => warn!(error = %e, "lease renewal failed during a run hook"),
                    Err(_) => warn!(after = ?STORE_CALL_TIMEOUT, "lease renewal timed out during a run hook"),
                }
            }
        }
    }
}

/// The bound on one hook: a drill's injection or truth measurement takes
/// seconds; this only keeps a hung lab from holding the lease forever.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(180);
