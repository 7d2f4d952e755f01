//! Which lock a run takes, by name.
//!
//! One mutating run per environment: a failover, a failback or a full
//! drill takes the environment's lock (`env-NAME`) exclusively, and every
//! journal append is fenced by it. An isolated drill (`mode: isolated`)
//! touches no production object, so it must never hold off an incident:
//! it takes the environment's *drill* lock (`drill-env-NAME`) instead,
//! which isolated drills share among themselves only (they share the
//! scratch area and the drill records). It gives way to an incident in
//! both directions:
//!
//! - it does not start or resume while a mutating run holds the
//!   environment's lock ([`refuse_during_incident`]);
//! - a failover that starts while a drill runs is not held off; the
//!   drill's last step (`drill.assert_production`) then finds production
//!   changed and the drill fails, which is the truth.
//!
//! `drctl drills cleanup RUN` takes the drill lock too, so it never races
//! a live resume of the same drill.

use crate::engine::view::RunView;
use crate::environment::Environment;
use crate::store::{LeaseMode, Store};

use super::EngineError;

/// The environment's lock: one mutating run per environment.
pub fn lock_name(env: Option<&Environment>) -> String {
    lock_name_of(env.map(|e| e.name.as_str()))
}

/// The lock name of an environment by its name (as a journal records it).
pub fn lock_name_of(env_name: Option<&str>) -> String {
    env_name.map_or_else(|| "default".to_string(), |n| format!("env-{n}"))
}

/// The environment's drill lock, taken by isolated drills instead of
/// [`lock_name_of`]. Never equal to an environment lock (those start
/// with `env-` or are `default`).
pub fn drill_lock_name_of(env_name: Option<&str>) -> String {
    format!("drill-{}", lock_name_of(env_name))
}

/// The lock a run of this environment takes.
pub fn run_lock_name(env_name: Option<&str>, isolated: bool) -> String {
    if isolated {
        drill_lock_name_of(env_name)
    } else {
        lock_name_of(env_name)
    }
}

/// The lock the run a journal describes took (and a resume, abort or
/// cleanup of it must take).
pub fn view_lock_name(v: &RunView) -> String {
    run_lock_name(
        v.environment.as_ref().map(|e| e.name.as_str()),
        v.options.isolated,
    )
}

/// Refuses an isolated drill while a live holder has the environment's
/// lock exclusively (an incident or another mutating run is in progress).
/// The store lists only unexpired leases (by its own clock); one whose
/// holder on this host is provably dead does not count either.
///
/// # Caveats
/// Checked once, before the drill takes its own lock: a failover that
/// starts a moment later is not held off (by design, see the module doc).
pub async fn refuse_during_incident(
    store: &dyn Store,
    env_name: Option<&str>,
) -> Result<(), EngineError> {
    let name = lock_name_of(env_name);
    let holders = tokio::time::timeout(super::STORE_CALL_TIMEOUT, store.leases(&name))
        .await
        .map_err(|_| EngineError::StoreTimeout(super::STORE_CALL_TIMEOUT))??;
    match holders
        .into_iter()
        .find(|h| h.mode == LeaseMode::Exclusive && !h.holder.is_provably_dead())
    {
        Some(h) => Err(EngineError::IncidentInProgress {
            env: name,
            holder: Box::new(h),
        }),
        None => Ok(()),
    }
}

/// Live isolated drills of the environment, for a mutating run to name
/// before it starts (it does not wait for them). Best effort: a store
/// that cannot answer here yields none, and the run's own lease decides.
pub async fn live_drills(store: &dyn Store, env_name: Option<&str>) -> Vec<String> {
    let name = drill_lock_name_of(env_name);
    match tokio::time::timeout(super::STORE_CALL_TIMEOUT, store.leases(&name)).await {
        Ok(Ok(holders)) => holders
            .into_iter()
            .filter(|h| !h.holder.is_provably_dead())
            .map(|h| h.holder.run_id)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_lock_never_names_an_environment_lock() {
        assert_eq!(run_lock_name(Some("prod"), false), "env-prod");
        assert_eq!(run_lock_name(Some("prod"), true), "drill-env-prod");
        assert_eq!(run_lock_name(None, true), "drill-default");
        // An environment called `drill-env-x` still gets an `env-` lock.
        assert_ne!(
            lock_name_of(Some("drill-env-x")),
            drill_lock_name_of(Some("x"))
        );
    }
}
