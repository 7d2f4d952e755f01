//! RTO and RPO, computed from the journal.
//!
//! RTO runs from the declared failure time (incident: when failover started
//! or `--failed-at`; drill: when the failure was injected) to the end of the
//! last successful check step (the moment the service was shown to work),
//! with each step's contribution. RPO figures come from steps that measured
//! data loss: they put an `rpo` object in their outputs (e.g. the promote
//! step's WAL bytes and heartbeat rows lost, immudb transactions lost). When
//! a drill can see the truth (the old primary restarted), it journals a note
//! with `data.kind = "rpo_truth"`, shown beside the estimate.

use serde::Serialize;
use serde_json::Value;

use crate::duration::format_duration;
use crate::engine::view::RunView;
use crate::journal::StepStatus;

/// Actions whose success demonstrates a working service.
pub const CHECK_ACTIONS: &[&str] = &[
    "http.check",
    "checks.run",
    "dns.check",
    "postgres.query",
    "kube.check",
    "immudb.verify",
];

#[derive(Debug, Clone, Serialize)]
pub struct StepShare {
    pub step: String,
    pub action: String,
    pub duration_ms: u64,
    /// When the step ended, relative to the failure time.
    pub ended_at_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Measurements {
    pub failed_at_ms: u64,
    pub failure_time_source: String,
    pub recovered_at_ms: Option<u64>,
    pub rto_ms: Option<u64>,
    pub recovery_step: Option<String>,
    pub rto_target_ms: Option<u64>,
    pub rpo_target_ms: Option<u64>,
    pub contributions: Vec<StepShare>,
    /// `rpo` objects from step outputs, keyed by step.
    pub rpo: Vec<(String, Value)>,
    pub rpo_truth: Vec<Value>,
}

impl Measurements {
    /// The headline time-based data loss: the largest `time_lost_ms` any
    /// step reported (truth preferred when present).
    pub fn rpo_time_ms(&self) -> Option<u64> {
        let truth = self
            .rpo_truth
            .iter()
            .filter_map(|t| t.get("time_lost_ms").and_then(Value::as_u64))
            .max();
        truth.or_else(|| {
            self.rpo
                .iter()
                .filter_map(|(_, v)| v.get("time_lost_ms").and_then(Value::as_u64))
                .max()
        })
    }
}

pub fn from_view(view: &RunView) -> Option<Measurements> {
    // Without a declared failure time there is no outage to measure.
    let failed_at_ms = view.failed_at_ms?;
    let source = if view.mode == crate::runbook::Mode::Drill {
        "failure injected"
    } else {
        "declared failure time"
    };
    let checks: Vec<_> = view
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Succeeded && CHECK_ACTIONS.contains(&s.action.as_str()))
        .collect();
    let recovery = checks
        .iter()
        .max_by_key(|s| s.finished_ms)
        .copied()
        .or_else(|| {
            view.steps
                .iter()
                .filter(|s| s.status == StepStatus::Succeeded)
                .max_by_key(|s| s.finished_ms)
        });
    // Recovery only counts when the run as a whole succeeded.
    let recovered = view.status == Some(crate::journal::RunStatus::Succeeded);
    let recovered_at_ms = recovery.and_then(|s| s.finished_ms).filter(|_| recovered);
    let contributions = view
        .steps
        .iter()
        .filter(|s| s.duration_ms.is_some() && s.status != StepStatus::Skipped)
        .map(|s| StepShare {
            step: s.id.clone(),
            action: s.action.clone(),
            duration_ms: s.duration_ms.unwrap_or(0),
            ended_at_ms: s.finished_ms.unwrap_or(0).saturating_sub(failed_at_ms),
        })
        .collect();
    let rpo = view
        .steps
        .iter()
        .filter_map(|s| s.outputs.get("rpo").map(|v| (s.id.clone(), v.clone())))
        .collect();
    let rpo_truth = view
        .notes
        .iter()
        .filter(|n| n.data.get("kind").and_then(Value::as_str) == Some("rpo_truth"))
        .map(|n| n.data.clone())
        .collect();
    Some(Measurements {
        failed_at_ms,
        failure_time_source: source.to_string(),
        recovered_at_ms,
        rto_ms: recovered_at_ms.map(|r| r.saturating_sub(failed_at_ms)),
        recovery_step: recovery.map(|s| s.id.clone()),
        rto_target_ms: view.rto_target_ms,
        rpo_target_ms: view.rpo_target_ms,
        contributions,
        rpo,
        rpo_truth,
    })
}

fn ms(v: u64) -> String {
    format_duration(std::time::Duration::from_millis(v))
}

pub fn markdown(m: &Measurements) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "## Recovery time (RTO)");
    let _ = writeln!(o);
    match m.rto_ms {
        Some(rto) => {
            let _ = writeln!(
                o,
                "**RTO {}**: from {} at {} to the end of `{}`{}.",
                ms(rto),
                m.failure_time_source,
                crate::journal::format_ms(m.failed_at_ms),
                m.recovery_step.as_deref().unwrap_or("?"),
                m.rto_target_ms
                    .map(|t| format!(
                        " (target {}: {})",
                        ms(t),
                        if rto <= t { "met" } else { "MISSED" }
                    ))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(
                o,
                "Not recovered: the run did not succeed, so no RTO is claimed."
            );
        }
    }
    let _ = writeln!(o);
    if !m.contributions.is_empty() {
        let _ = writeln!(o, "| Step | Action | Duration | Ended at (after failure) |");
        let _ = writeln!(o, "|---|---|---|---|");
        for c in &m.contributions {
            let _ = writeln!(
                o,
                "| `{}` | {} | {} | +{} |",
                c.step,
                c.action,
                ms(c.duration_ms),
                ms(c.ended_at_ms)
            );
        }
        let _ = writeln!(o);
    }
    if !m.rpo.is_empty() || !m.rpo_truth.is_empty() {
        let _ = writeln!(o, "## Data loss (RPO)");
        let _ = writeln!(o);
        for (step, v) in &m.rpo {
            let _ = writeln!(o, "- `{step}`: {}", describe_rpo(v));
        }
        for t in &m.rpo_truth {
            let _ = writeln!(o, "- truth (old primary restarted): {}", describe_rpo(t));
        }
        if let (Some(t), Some(target)) = (m.rpo_time_ms(), m.rpo_target_ms) {
            let _ = writeln!(
                o,
                "- target {}: {}",
                ms(target),
                if t <= target { "met" } else { "MISSED" }
            );
        }
        let _ = writeln!(o);
    }
    o
}

/// One line from an `rpo` object: known fields first, then the method.
pub fn describe_rpo(v: &Value) -> String {
    let mut parts = Vec::new();
    let num = |k: &str| v.get(k).and_then(Value::as_u64);
    if let Some(b) = num("wal_bytes_lost") {
        parts.push(format!("{b} WAL bytes lost"));
    }
    if let Some(t) = num("time_lost_ms") {
        parts.push(format!("{} of writes lost", ms(t)));
    }
    if let Some(h) = num("heartbeats_lost") {
        parts.push(format!("{h} heartbeat rows lost"));
    }
    if let Some(x) = num("txs_lost") {
        parts.push(format!("{x} immudb transactions lost"));
    }
    if parts.is_empty() {
        parts.push("no loss figures".into());
    }
    let mut s = parts.join(", ");
    if let Some(m) = v.get("method").and_then(Value::as_str) {
        s.push_str(&format!(" (method: {m})"));
    }
    if let Some(b) = v.get("bound").and_then(Value::as_str) {
        s.push_str(&format!(" (bound: {b})"));
    }
    s
}
