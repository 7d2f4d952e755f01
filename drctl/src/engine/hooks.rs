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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engine::{silent_ui, start, RunSpec};
    use crate::runbook::{load_runbook, Mode};
    use crate::store::DirStore;

    /// Records who held the run's lease while each hook ran.
    struct Probe {
        store: Arc<dyn Store>,
        refuse: bool,
        seen: Mutex<Vec<(String, usize)>>,
    }

    impl Probe {
        async fn look(&self, at: &str) {
            let n = self.store.leases("default").await.map_or(0, |l| l.len());
            self.seen.lock().unwrap().push((at.to_string(), n));
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("refused by the probe")]
    struct Refused;

    #[async_trait]
    impl RunHooks for Probe {
        async fn before_start(
            &self,
        ) -> Result<Option<u64>, Box<dyn std::error::Error + Send + Sync>> {
            self.look("before").await;
            if self.refuse {
                return Err(Box::new(Refused));
            }
            Ok(Some(1_234))
        }
        async fn after_finish(&self, outcome: &RunOutcome) -> Vec<Note> {
            self.look("after").await;
            vec![Note {
                message: "probe".into(),
                data: serde_json::json!({"kind": "probe", "status": outcome.status.as_str()}),
            }]
        }
    }

    /// The run's directory (kept alive), store, probe and result.
    type Ran = (
        tempfile::TempDir,
        Arc<dyn Store>,
        Arc<Probe>,
        Result<RunOutcome, EngineError>,
    );

    async fn run_with(refuse: bool) -> Ran {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.yaml");
        std::fs::write(
            &path,
            "name: w\nsteps:\n  - id: w\n    action: wait\n    with: {duration: 1ms}\n",
        )
        .expect("runbook");
        let (rb, _) = load_runbook(&path).expect("parses");
        let store: Arc<dyn Store> =
            Arc::new(DirStore::open(dir.path().join("state")).expect("store"));
        let probe = Arc::new(Probe {
            store: store.clone(),
            refuse,
            seen: Mutex::new(Vec::new()),
        });
        let spec = RunSpec {
            runbook: Arc::new(rb),
            registry: Arc::new(crate::registry::standard()),
            env: None,
            mode: Mode::Drill,
            params: Default::default(),
            target_region: None,
            operator: "test".into(),
            options: Default::default(),
            failed_at_ms: None,
            parallelism: 1,
            run_id: Some("hooked".into()),
            hooks: Some(probe.clone()),
        };
        let r = start(store.clone(), spec, silent_ui()).await;
        (dir, store, probe, r)
    }

    #[tokio::test]
    async fn hooks_run_under_the_lease_and_the_note_is_journaled_before_release() {
        let (_dir, store, probe, r) = run_with(false).await;
        let outcome = r.expect("run");
        let seen = probe.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![("before".to_string(), 1), ("after".to_string(), 1)],
            "lease held in both hooks"
        );
        assert!(
            store.leases("default").await.expect("leases").is_empty(),
            "released after"
        );
        let bytes = store.read_journal(&outcome.run_id).await.expect("journal");
        let v = crate::journal::verify(&bytes).expect("verifies");
        let view = crate::engine::view::fold(&v).expect("view");
        assert_eq!(
            view.failed_at_ms,
            Some(1_234),
            "the hook's failure time is journaled"
        );
        let text = String::from_utf8_lossy(&bytes);
        let (fin, note) = (
            text.find("\"run_finished\"").expect("finished"),
            text.find("\"probe\"").expect("note"),
        );
        assert!(fin < note, "the note follows run_finished");
    }

    #[tokio::test]
    async fn a_refusing_hook_starts_nothing_and_releases_the_lease() {
        let (_dir, store, probe, r) = run_with(true).await;
        match r {
            Err(EngineError::Hook(e)) => assert!(e.downcast_ref::<Refused>().is_some(), "{e}"),
            other => panic!("expected the hook's error, got {other:?}"),
        }
        assert_eq!(
            probe.seen.lock().unwrap().len(),
            1,
            "after_finish never ran"
        );
        assert!(
            store.leases("default").await.expect("leases").is_empty(),
            "released"
        );
        assert!(store.read_journal("hooked").await.is_err(), "no journal");
    }
}
