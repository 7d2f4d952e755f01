//! Aborting a run: the one way a run ends for good on an operator's word.
//!
//! A run with a live process is asked to stop (the store's abort flag,
//! which its event loop polls; an approval it waits on is cut short at
//! once). A run without one (parked `waiting-approval`, `interrupted`,
//! `failed`, or crashed) is ended here: under the environment's lease, like
//! a resume, the journal is verified and its terminal record appended, so
//! the engine stays the only writer of journals and `status` says
//! `aborted` at once. A run that already ended is refused, writing nothing.

use super::*;
use crate::store::LeaseRecord;

/// How long `abort` waits for a live run to stop before it reports that
/// the stop was requested (in-flight steps other than approvals finish
/// first, and may take longer).
pub const ABORT_WAIT: Duration = Duration::from_secs(10);

/// What `abort` did.
#[derive(Debug, Clone)]
pub enum AbortOutcome {
    /// The run had no live process: its journal now ends `aborted`.
    Ended { previous: String, reason: String },
    /// The live process saw the request and ended the run `aborted`.
    Stopped { reason: String },
    /// The live process was asked to stop and has not ended yet (it
    /// finishes its in-flight steps first).
    Requested { holder: Box<LeaseRecord> },
}

/// The run's own live lease holder, if its process is alive.
async fn live_holder(
    store: &Arc<dyn Store>,
    name: &str,
    run_id: &str,
) -> Result<Option<LeaseRecord>, EngineError> {
    let holders = bounded(store.leases(name)).await?;
    Ok(holders
        .into_iter()
        .find(|h| h.holder.run_id == run_id && !h.holder.is_provably_dead()))
}

fn ended(view: &RunView) -> Option<EngineError> {
    match view.status {
        Some(st @ (RunStatus::Succeeded | RunStatus::Aborted)) => Some(EngineError::RunEnded {
            run_id: view.run_id.clone(),
            status: st,
            reason: view.reason.clone(),
        }),
        _ => None,
    }
}

/// Ends `run_id` as aborted by `by`, or asks its live process to.
pub async fn abort(
    store: Arc<dyn Store>,
    run_id: &str,
    by: &str,
    ui: Ui,
) -> Result<AbortOutcome, EngineError> {
    let deadline = Instant::now() + ABORT_WAIT;
    let mut requested = false;
    loop {
        let view = super::load_view_only(store.as_ref(), run_id).await?;
        if requested && view.status == Some(RunStatus::Aborted) {
            return Ok(AbortOutcome::Stopped {
                reason: view.reason.unwrap_or_default(),
            });
        }
        if let Some(e) = ended(&view) {
            return Err(e);
        }
        let name = view_lock_name(&view);
        let mode = view.lease_mode.unwrap_or(LeaseMode::Exclusive);
        let holder = match live_holder(&store, &name, run_id).await? {
            Some(h) => h,
            None => {
                match bounded(store.acquire_lease(
                    &name,
                    mode,
                    &HolderId::this_process(run_id),
                    lease_ttl(),
                ))
                .await
                {
                    Ok(grant) => {
                        let lease = grant.lease;
                        let r = end_locked(&store, run_id, by, &lease).await;
                        release(&store, &lease).await;
                        return r;
                    }
                    // Resumed or started meanwhile: it is live after all.
                    Err(EngineError::LockHeld { holder, .. }) if holder.holder.run_id == run_id => {
                        *holder
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if !requested {
            bounded(store.request_abort(run_id, by)).await?;
            requested = true;
            ui(UiEvent::Message(format!(
                "run {run_id} is live ({holder}): asked it to stop"
            )));
        }
        if Instant::now() >= deadline {
            return Ok(AbortOutcome::Requested {
                holder: Box::new(holder),
            });
        }
        // The live run either ends `aborted` or (had it just parked) lets
        // go of the lease, and the next pass ends it here.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends the terminal record of a run nobody is driving, under `lease`.
async fn end_locked(
    store: &Arc<dyn Store>,
    run_id: &str,
    by: &str,
    lease: &Lease,
) -> Result<AbortOutcome, EngineError> {
    // Read again under the lease: nobody appends while we hold it.
    let (view, verified) = load_view_pub(store.as_ref(), run_id).await?;
    if let Some(e) = ended(&view) {
        return Err(e);
    }
    let previous = view.status_text().to_string();
    let reason = format!("aborted by {} while {previous}", by.trim());
    append_abort(store, run_id, lease, &verified, reason.clone()).await?;
    info!(run_id, by, previous = %previous, "run aborted without a live process");
    Ok(AbortOutcome::Ended { previous, reason })
}

/// Journals `run_finished: aborted` after the verified records (cutting
/// off a torn final line first, as resume does, and saying so).
pub(super) async fn append_abort(
    store: &Arc<dyn Store>,
    run_id: &str,
    lease: &Lease,
    verified: &journal::Verified,
    reason: String,
) -> Result<(), EngineError> {
    let (mut journal, repaired) =
        super::resume::continue_journal(store, run_id, lease, verified).await?;
    if repaired > 0 {
        journal.stage(Event::Note {
            step: None,
            message: format!("cut a torn final record ({repaired} bytes) before aborting"),
            data: json!({ "repaired_tail_bytes": repaired }),
        })?;
    }
    journal
        .append(Event::RunFinished {
            status: RunStatus::Aborted,
            reason: Some(reason),
        })
        .await?;
    Ok(())
}
