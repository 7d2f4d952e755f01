//! Isolated drills (`mode: isolated`): rehearse the failover on a clone of
//! the DR standby while production replication is never touched.
//!
//! The runbook (`runbooks/isolated-drill.yaml`) is built from action kinds
//! with the usual three faces, so the engine journals every step and a
//! resume continues like any run:
//!
//! | kind | step |
//! |---|---|
//! | `postgres.clone_standby` ([`clone`]) | `pg_basebackup -X stream -c fast` from the standby into `<scratch>/drill-<run>`, made safe, started, promoted; copy / consistent / promote measured, RPO = lag at the cut |
//! | `dns.drill_point` ([`dns`]) | point a record declared `drill: true` at the clone (never another) |
//! | `kube.drill_copies` ([`kube`]) | when the target region has `kube:`: namespace `drill-<run>` with a default-deny NetworkPolicy (egress only to cluster DNS and the clone's address/port), then copies of the region's `workloads` at the counts a failover's `kube.scale` would choose, env pointing at the drill endpoint; waits until ready (tested against the fake API server only) |
//! | `drill.smoke` ([`smoke`]) | resolve the drill name at the authoritative servers, write and read the clone through it |
//! | `drill.teardown` ([`teardown`]) | stop the clone, remove its scratch directory, the drill record back |
//! | `drill.assert_production` ([`production`]) | standby streaming, same timeline, slot active, lag back to normal, production DNS unchanged |
//!
//! A clone keeps production's system identifier and takes the next
//! timeline a real promotion would, so it must never archive or be an
//! upstream: archiving off, no `restore_command`, `primary_conninfo` or
//! slot, loopback only on its own port, replication connections rejected,
//! and the running clone is checked for each before it is promoted.
//!
//! A drill killed half-way leaves at most its drill namespace, its clone
//! and the drill record; [`cleanup`] (`drill.teardown`, `drctl drills cleanup RUN`, and a resume
//! reaching the teardown step) removes them from what the run journaled.

pub mod clone;
pub mod dns;
pub mod kube;
pub mod production;
pub mod reach;
pub mod smoke;
pub mod teardown;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::action::ActionError;
use crate::dns::RecordSet;
use crate::engine::view::RunView;

/// A clone's scratch directory is `<scratch>/drill-<run id>`.
pub const PREFIX: &str = "drill-";

pub const CLONE_KIND: &str = "postgres.clone_standby";
pub const DNS_KIND: &str = "dns.drill_point";

/// What a cleanup found and undid.
#[derive(Debug, Default, Serialize)]
pub struct Cleaned {
    /// Scratch directories removed.
    pub removed: Vec<String>,
    /// Clone postmasters killed.
    pub killed: Vec<u32>,
    /// Drill records set back (`name type`).
    pub dns_restored: Vec<String>,
    /// Drill namespaces deleted (`region/namespace`), gone when listed.
    pub namespaces_deleted: Vec<String>,
}

/// The scratch roots a run's clone steps used (their journaled, resolved
/// `scratch` parameter).
pub fn scratch_roots(view: &RunView) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = view
        .steps
        .iter()
        .filter(|s| s.action == CLONE_KIND)
        .filter_map(|s| s.inputs.get("scratch").and_then(Value::as_str))
        .map(PathBuf::from)
        .collect();
    roots.dedup();
    roots
}

/// The drill records a run's `dns.drill_point` steps changed, with their
/// values before the first change (the step's checkpoint).
pub fn dns_previous(view: &RunView) -> Vec<(RecordSet, Option<RecordSet>)> {
    view.steps
        .iter()
        .filter(|s| s.action == DNS_KIND)
        .filter_map(|s| s.checkpoint.clone())
        .filter_map(|c| serde_json::from_value::<dns::Saved>(c).ok())
        .map(|s| (s.wanted, s.previous))
        .collect()
}

/// Deletes the run's drill namespaces (and with them the workload copies,
/// first, so they stop using the clone), stops and removes the run's clone
/// and sets its drill records back. Idempotent: what is already gone is
/// skipped.
pub async fn cleanup(
    view: &RunView,
    run_id: &str,
    env: Option<&crate::environment::Environment>,
    dns_cfg: Option<&crate::dns::config::DnsConfig>,
    limit: Duration,
) -> Result<Cleaned, ActionError> {
    let mut out = Cleaned::default();
    let namespaces = kube::namespaces(view);
    if !namespaces.is_empty() {
        let env = env.ok_or_else(|| ActionError::Config {
            message: "the run made a drill namespace but its environment is not available".into(),
            hint: "run the cleanup with the run's environment file".into(),
        })?;
        for (region, ns) in namespaces {
            if kube::remove_namespace(env, &region, &ns, run_id, limit).await? {
                out.namespaces_deleted.push(format!("{region}/{ns}"));
            }
        }
    }
    for root in scratch_roots(view) {
        let dir = crate::environment::paths::absolute(&root).join(format!("{PREFIX}{run_id}"));
        let existed = dir.exists();
        let killed = crate::backup::scratch::remove_run(&root, PREFIX, run_id)
            .map_err(|e| ActionError::failed(crate::diag::error_chain(&e)))?;
        out.killed.extend(killed);
        if existed {
            out.removed.push(dir.display().to_string());
        }
    }
    let previous = dns_previous(view);
    if !previous.is_empty() {
        let cfg = dns_cfg.ok_or_else(|| ActionError::Config {
            message: "the run changed a drill record but its environment has no dns section now"
                .into(),
            hint: "run the cleanup with the run's environment file".into(),
        })?;
        for (wanted, prev) in previous {
            dns::set_back(cfg, &wanted, prev.as_ref(), limit).await?;
            out.dns_restored.push(wanted.key());
        }
    }
    Ok(out)
}

/// Whether a path holds a running clone (for tests and status).
pub fn clone_running(scratch: &Path, run_id: &str) -> Option<u32> {
    crate::backup::scratch::running_postmaster(
        &crate::environment::paths::absolute(scratch)
            .join(format!("{PREFIX}{run_id}"))
            .join("data"),
    )
}
