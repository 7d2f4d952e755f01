//! RTO and RPO, computed from the journal, and the verdicts against the
//! runbook's targets.
//!
//! RTO runs from the declared failure time (incident: when failover started
//! or `--failed-at`; drill: when the failure was injected) to the end of the
//! last step that *proves recovery*: the steps journaled as proofs when the
//! run started (each action kind declares whether its success shows the
//! service works; a step may override it with `proves_recovery:`). It is
//! claimed only when every proof step succeeded (each step's final attempt,
//! across resumes): a failed, skipped or unfinished proof means "not
//! recovered", whatever its `on_failure` says, and a run without a proof
//! claims nothing. Proof steps skipped by design (`when`, `skip_unless`) are
//! not required.
//!
//! RPO figures come from steps that measured data loss: they put an `rpo`
//! object in their outputs (the promote step's WAL bytes, heartbeat rows and
//! time lost, immudb transactions lost), each figure an integer or `null`
//! (unknown, with the reason under `unknown`). When a drill can see the
//! truth (the old primary restarted), it journals a note with
//! `data.kind = "rpo_truth"`, shown beside the estimate and compared.
//!
//! A target is "met" only by a measured figure of a run that succeeded:
//! unknown figures, bounds and failed runs give "unknown" or "not met".

use serde::Serialize;
use serde_json::Value;

use crate::duration::format_duration;
use crate::engine::view::{RunView, StepView};
use crate::journal::{RunStatus, StepStatus};

#[derive(Debug, Clone, Serialize)]
pub struct StepShare {
    pub step: String,
    pub action: String,
    pub duration_ms: u64,
    /// When the step ended, relative to the failure time; `None` when it
    /// ended before the declared failure time (never shown as +0).
    pub ended_at_ms: Option<u64>,
}

/// A proof step that did not succeed, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProofGap {
    pub step: String,
    /// `failed`, `skipped (reason)`, `interrupted`, `not started`.
    pub state: String,
}

/// Whether the journal shows the service working again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Recovery {
    /// Every required proof step succeeded; `step` ended last, at `at_ms`.
    Recovered { at_ms: u64, step: String },
    /// At least one proof step did not succeed.
    NotRecovered { gaps: Vec<ProofGap> },
    /// Nothing in the run can show the service works.
    NoProof { reason: String },
}

/// A measured quantity, or why it is not known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Figure {
    Known {
        value: u64,
        from: String,
    },
    /// Only an upper bound is known: never the figure, never "met".
    AtMost {
        value: u64,
        from: String,
        reason: String,
    },
    Unknown {
        reason: String,
    },
}

/// A measurement against its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// Not met although the figure may be within the target (the run
    /// failed, the service was not shown recovered).
    NotMet(String),
    /// The figure is not known, so neither met nor missed can be said.
    Unknown(String),
    NoTarget,
}

impl Verdict {
    /// For records (`rto_met`/`rpo_met`): `None` when nothing can be said.
    pub fn met(&self) -> Option<bool> {
        match self {
            Verdict::Met => Some(true),
            Verdict::Missed | Verdict::NotMet(_) => Some(false),
            Verdict::Unknown(_) | Verdict::NoTarget => None,
        }
    }

    pub fn text(&self) -> String {
        match self {
            Verdict::Met => "met".into(),
            Verdict::Missed => "MISSED".into(),
            Verdict::NotMet(r) => format!("not met: {r}"),
            Verdict::Unknown(r) => format!("unknown: {r}"),
            Verdict::NoTarget => "no target".into(),
        }
    }

    /// ` (target 2m: met)`, or nothing without a target. A reason the
    /// line has already said (`said`) is not repeated.
    fn against(&self, target: Option<u64>, said: &str) -> String {
        let text = match self {
            Verdict::NotMet(r) if said.contains(r.as_str()) => "not met".to_string(),
            Verdict::Unknown(r) if said.contains(r.as_str()) => "unknown".to_string(),
            v => v.text(),
        };
        match target {
            Some(t) if *self != Verdict::NoTarget => format!(" (target {}: {text})", ms(t)),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Measurements {
    pub failed_at_ms: u64,
    pub failure_time_source: String,
    /// The run's end state (`None`: running or crashed).
    pub run_status: Option<RunStatus>,
    pub recovery: Recovery,
    pub recovered_at_ms: Option<u64>,
    pub rto_ms: Option<u64>,
    pub recovery_step: Option<String>,
    /// The steps journaled as proofs of recovery.
    pub proof_steps: Vec<String>,
    /// Those of them skipped by design (`when`, `skip_unless`): not required.
    pub proofs_not_required: Vec<String>,
    pub rto_target_ms: Option<u64>,
    pub rpo_target_ms: Option<u64>,
    /// The headline time-based data loss (truth preferred), if any step
    /// or truth note speaks of data loss at all.
    pub rpo_time: Option<Figure>,
    pub rto_verdict: Verdict,
    pub rpo_verdict: Verdict,
    pub contributions: Vec<StepShare>,
    /// `rpo` objects from step outputs, keyed by step.
    pub rpo: Vec<(String, Value)>,
    pub rpo_truth: Vec<Value>,
    /// Why a drill that measured data loss has no truth beside its
    /// estimate: said, so a reader does not take the estimate for a
    /// checked figure.
    pub truth_missing: Option<String>,
    /// How long after the failure the journal's last timed record is: a
    /// run not yet recovered this long after it has missed a shorter target.
    #[serde(skip)]
    pub journaled_for_ms: u64,
}

/// Why a run that did not succeed cannot meet a target: `NotMet` when it
/// ended badly, `Unknown` while it has not ended.
fn run_not_succeeded(status: Option<RunStatus>) -> Option<Verdict> {
    match status {
        Some(RunStatus::Succeeded) => None,
        Some(s @ (RunStatus::Failed | RunStatus::Aborted)) => {
            Some(Verdict::NotMet(format!("the run {}", s.as_str())))
        }
        Some(s) => Some(Verdict::Unknown(format!(
            "the run has not finished ({})",
            s.as_str()
        ))),
        None => Some(Verdict::Unknown("the run has not finished".into())),
    }
}

impl Measurements {
    /// RTO against its target: met only when recovered within it *and*
    /// the run succeeded.
    pub fn rto_verdict(&self) -> Verdict {
        let Some(target) = self.rto_target_ms else {
            return Verdict::NoTarget;
        };
        match (&self.recovery, self.rto_ms) {
            (Recovery::Recovered { .. }, Some(rto)) => {
                if rto > target {
                    Verdict::Missed
                } else {
                    run_not_succeeded(self.run_status).unwrap_or(Verdict::Met)
                }
            }
            (Recovery::NotRecovered { .. }, _) if self.journaled_for_ms > target => {
                // Whenever it recovers, the RTO will be above the target.
                Verdict::Missed
            }
            (Recovery::NotRecovered { gaps }, _) => match run_not_succeeded(self.run_status) {
                // Still running, interrupted or awaiting an approval: it may
                // yet recover within the target.
                Some(Verdict::Unknown(why)) => {
                    Verdict::Unknown(format!("not recovered yet, and {why}"))
                }
                _ => Verdict::NotMet(format!("not recovered: {}", gaps_text(gaps))),
            },
            (Recovery::NoProof { reason }, _) => Verdict::Unknown(reason.clone()),
            (Recovery::Recovered { .. }, None) => Verdict::Unknown(BEFORE_FAILURE.into()),
        }
    }

    /// RPO (time lost) against its target: met only by a measured figure
    /// (not a bound) of a run that succeeded.
    pub fn rpo_verdict(&self) -> Verdict {
        let Some(target) = self.rpo_target_ms else {
            return Verdict::NoTarget;
        };
        match &self.rpo_time {
            Some(Figure::Known { value, .. }) => {
                if *value > target {
                    Verdict::Missed
                } else {
                    run_not_succeeded(self.run_status).unwrap_or(Verdict::Met)
                }
            }
            Some(Figure::AtMost { .. }) => Verdict::Unknown("only an upper bound is known".into()),
            Some(Figure::Unknown { reason }) => Verdict::Unknown(reason.clone()),
            None => Verdict::Unknown("no step measured data loss".into()),
        }
    }

    /// The headline time lost when it is measured (not a bound).
    pub fn rpo_time_ms(&self) -> Option<u64> {
        match &self.rpo_time {
            Some(Figure::Known { value, .. }) => Some(*value),
            _ => None,
        }
    }
}

/// Why a recovery has no RTO: the proofs ended before the declared failure.
const BEFORE_FAILURE: &str =
    "the last proof step ended before the declared failure time, so the outage cannot be measured";

fn gaps_text(gaps: &[ProofGap]) -> String {
    gaps.iter()
        .map(|g| format!("proof step `{}` {}", g.step, g.state))
        .collect::<Vec<_>>()
        .join(", ")
}

fn gap_state(s: &StepView) -> String {
    match s.status {
        StepStatus::Failed => "failed".into(),
        StepStatus::Skipped => format!(
            "was skipped ({})",
            s.skip_reason.as_deref().unwrap_or("no reason journaled")
        ),
        StepStatus::Running => "did not finish (interrupted)".into(),
        StepStatus::Pending => "did not start".into(),
        StepStatus::Succeeded => "succeeded".into(),
    }
}

/// Recovery from the journaled proof steps (see the module docs).
pub fn recovery(view: &RunView) -> Recovery {
    let proofs = view.proof_steps();
    let unreached = view.unreached_proofs();
    let required: Vec<&StepView> = proofs
        .iter()
        .copied()
        .filter(|s| !s.skipped_by_design())
        .collect();
    if required.is_empty() && unreached.is_empty() {
        let reason = if proofs.is_empty() {
            "the runbook has no step that proves recovery".to_string()
        } else {
            format!(
                "every step that proves recovery was skipped by design: {}",
                proofs
                    .iter()
                    .map(|s| format!("`{}` ({})", s.id, s.skip_reason.as_deref().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Recovery::NoProof { reason };
    }
    let mut gaps: Vec<ProofGap> = required
        .iter()
        .filter(|s| s.status != StepStatus::Succeeded)
        .map(|s| ProofGap {
            step: s.id.clone(),
            state: gap_state(s),
        })
        .collect();
    gaps.extend(unreached.iter().map(|id| ProofGap {
        step: id.to_string(),
        state: "did not start".into(),
    }));
    if !gaps.is_empty() {
        return Recovery::NotRecovered { gaps };
    }
    let last = required
        .iter()
        .filter_map(|s| s.finished_ms.map(|f| (f, s)))
        .max_by_key(|(f, _)| *f);
    match last {
        Some((at_ms, s)) => Recovery::Recovered {
            at_ms,
            step: s.id.clone(),
        },
        // Invariant-free fallback: a succeeded step always has an end time
        // in the journal; say so rather than invent one.
        None => Recovery::NoProof {
            reason: "no proof step has a journaled end time".into(),
        },
    }
}

/// The figure `key` of an `rpo` object: `None` when the object does not
/// speak of it, `Unknown` when it says null.
fn figure_of(v: &Value, key: &str, from: &str) -> Option<Figure> {
    match v.get(key)? {
        Value::Number(n) => match n.as_u64() {
            Some(value) => Some(Figure::Known {
                value,
                from: from.to_string(),
            }),
            None => Some(Figure::Unknown {
                reason: format!("{from} reported {n}, not a count"),
            }),
        },
        _ => {
            let reason = v
                .get("unknown")
                .and_then(|u| u.get(key))
                .and_then(Value::as_str)
                .map(|r| format!("{from}: {r}"))
                .unwrap_or_else(|| format!("{from} could not measure it"));
            match v
                .get(format!("{key}_at_most").as_str())
                .and_then(Value::as_u64)
            {
                Some(value) => Some(Figure::AtMost {
                    value,
                    from: from.to_string(),
                    reason,
                }),
                None => Some(Figure::Unknown { reason }),
            }
        }
    }
}

/// The headline time lost: the truth when it is known, else the largest
/// estimate, else what bounds it; unknown when any estimate is unknown
/// (the largest of the rest would understate the loss).
fn rpo_time(rpo: &[(String, Value)], truth: &[Value]) -> Option<Figure> {
    let mut truth_unknown = None;
    for t in truth {
        match figure_of(t, "time_lost_ms", "truth") {
            Some(f @ Figure::Known { .. }) => return Some(f),
            Some(other) => truth_unknown = Some(other),
            None => {
                truth_unknown = Some(Figure::Unknown {
                    reason: "the truth note has no time lost".into(),
                })
            }
        }
    }
    let figures: Vec<Figure> = rpo
        .iter()
        .filter_map(|(step, v)| figure_of(v, "time_lost_ms", &format!("`{step}`")))
        .collect();
    if let Some(f) = figures.iter().find(|f| !matches!(f, Figure::Known { .. })) {
        return Some(f.clone());
    }
    let best = figures.into_iter().max_by_key(|f| match f {
        Figure::Known { value, .. } => *value,
        _ => 0,
    });
    match best {
        Some(f) => Some(f),
        None if !rpo.is_empty() => Some(truth_unknown.unwrap_or(Figure::Unknown {
            reason: "no step measured the time of writes lost".into(),
        })),
        None => truth_unknown,
    }
}

pub fn from_view(view: &RunView) -> Option<Measurements> {
    // Without a declared failure time there is no outage to measure.
    let declared = view.failed_at_ms?;
    // An isolated drill fails nothing: its clone's cut (the end of the
    // copy, journaled by `postgres.clone_standby`) stands for the failure,
    // so RTO is what a real failover would take (promote + app + DNS) and
    // the copy time is reported apart.
    let cut = view
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Succeeded)
        .find_map(|s| s.outputs.get("failure_cut_ms").and_then(Value::as_u64));
    let failed_at_ms = cut.unwrap_or(declared);
    let source = if cut.is_some() {
        "the clone's cut (end of copy)"
    } else if view.mode == crate::runbook::Mode::Drill {
        "failure injected"
    } else {
        "declared failure time"
    };
    let recovery = recovery(view);
    let (recovered_at_ms, recovery_step) = match &recovery {
        Recovery::Recovered { at_ms, step } => (Some(*at_ms), Some(step.clone())),
        _ => (None, None),
    };
    let contributions = view
        .steps
        .iter()
        .filter(|s| s.status != StepStatus::Skipped)
        .filter_map(|s| {
            Some(StepShare {
                step: s.id.clone(),
                action: s.action.clone(),
                duration_ms: s.duration_ms?,
                ended_at_ms: s.finished_ms?.checked_sub(failed_at_ms),
            })
        })
        .collect();
    let rpo: Vec<(String, Value)> = view
        .steps
        .iter()
        .filter_map(|s| s.outputs.get("rpo").map(|v| (s.id.clone(), v.clone())))
        .collect();
    let rpo_truth: Vec<Value> = view
        .notes
        .iter()
        .filter(|n| n.data.get("kind").and_then(Value::as_str) == Some("rpo_truth"))
        .map(|n| n.data.clone())
        .collect();
    let truth_missing = (view.mode == crate::runbook::Mode::Drill
        && cut.is_none()
        && !rpo.is_empty()
        && rpo_truth.is_empty())
    .then(|| {
        if view.resumes.is_empty() {
            "not measured: a truth needs the lab, which restarts the old primary isolated after the promotion".to_string()
        } else {
            "not measured: the drill was interrupted and resumed, and the lab measures the truth only at the end of an uninterrupted drill".to_string()
        }
    });
    let mut m = Measurements {
        failed_at_ms,
        failure_time_source: source.to_string(),
        run_status: view.status,
        recovered_at_ms,
        // A recovery journaled before the declared failure time (a
        // `--failed-at` in the future) measures nothing: no RTO, never 0.
        rto_ms: recovered_at_ms.and_then(|r| r.checked_sub(failed_at_ms)),
        recovery_step,
        recovery,
        proof_steps: view.proof_steps().iter().map(|s| s.id.clone()).collect(),
        proofs_not_required: view
            .proof_steps()
            .iter()
            .filter(|s| s.skipped_by_design())
            .map(|s| s.id.clone())
            .collect(),
        rto_target_ms: view.rto_target_ms,
        rpo_target_ms: view.rpo_target_ms,
        rpo_time: rpo_time(&rpo, &rpo_truth),
        rto_verdict: Verdict::NoTarget,
        rpo_verdict: Verdict::NoTarget,
        contributions,
        rpo,
        rpo_truth,
        truth_missing,
        journaled_for_ms: view.last_ts_ms().saturating_sub(failed_at_ms),
    };
    m.rto_verdict = m.rto_verdict();
    m.rpo_verdict = m.rpo_verdict();
    Some(m)
}

fn ms(v: u64) -> String {
    format_duration(std::time::Duration::from_millis(v))
}

/// What the journal says about recovery, without the verdict.
fn recovery_text(m: &Measurements) -> String {
    match (&m.recovery, m.rto_ms) {
        (Recovery::Recovered { step, .. }, Some(rto)) => {
            format!("{} to the end of `{step}`", ms(rto))
        }
        (Recovery::NotRecovered { gaps }, _) => format!("not recovered: {}", gaps_text(gaps)),
        (Recovery::NoProof { reason }, _) => format!("not claimed: {reason}"),
        (Recovery::Recovered { .. }, None) => format!("not measured: {BEFORE_FAILURE}"),
    }
}

/// One line on recovery: the RTO with its verdict, or why none is claimed.
pub fn rto_line(m: &Measurements) -> String {
    let said = recovery_text(m);
    let v = m.rto_verdict.against(m.rto_target_ms, &said);
    format!("{said}{v}")
}

/// One line on the headline data loss and its verdict.
pub fn rpo_line(m: &Measurements) -> String {
    let said = match &m.rpo_time {
        Some(Figure::Known { value, from }) => format!("{} of writes lost ({from})", ms(*value)),
        Some(Figure::AtMost { value, reason, .. }) => {
            format!(
                "time of writes lost unknown ({reason}), at most {}",
                ms(*value)
            )
        }
        Some(Figure::Unknown { reason }) => format!("time of writes lost unknown: {reason}"),
        None => "no step measured data loss".into(),
    };
    let v = m.rpo_verdict.against(m.rpo_target_ms, &said);
    format!("{said}{v}")
}

pub fn markdown(m: &Measurements) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "## Recovery time (RTO)");
    let _ = writeln!(o);
    let when = format!(
        "{} at {}",
        m.failure_time_source,
        crate::journal::format_ms(m.failed_at_ms)
    );
    let v = m.rto_verdict.against(m.rto_target_ms, &recovery_text(m));
    match (&m.recovery, m.rto_ms) {
        (Recovery::Recovered { step, .. }, Some(rto)) => {
            let _ = writeln!(
                o,
                "**RTO {}**: from {when} to the end of `{step}`, the last step that proves recovery{v}.",
                ms(rto),
            );
        }
        (Recovery::NotRecovered { gaps }, _) => {
            let _ = writeln!(
                o,
                "**Not recovered**: {}; no RTO is claimed{v}.",
                gaps_text(gaps),
            );
        }
        (Recovery::NoProof { reason }, _) => {
            let _ = writeln!(o, "**No RTO claimed**: {reason}{v}.");
        }
        (Recovery::Recovered { .. }, None) => {
            let _ = writeln!(o, "**No RTO measured**: {BEFORE_FAILURE} ({when}){v}.");
        }
    }
    if !m.proof_steps.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "Steps that prove recovery: {}.",
            m.proof_steps
                .iter()
                .map(|s| if m.proofs_not_required.contains(s) {
                    format!("`{s}` (skipped by design: not required)")
                } else {
                    format!("`{s}`")
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(o);
    if !m.contributions.is_empty() {
        let _ = writeln!(o, "| Step | Action | Duration | Ended at (after failure) |");
        let _ = writeln!(o, "|---|---|---|---|");
        for c in &m.contributions {
            let _ = writeln!(
                o,
                "| `{}` | {} | {} | {} |",
                c.step,
                c.action,
                ms(c.duration_ms),
                c.ended_at_ms
                    .map_or_else(|| "before it".to_string(), |e| format!("+{}", ms(e)))
            );
        }
        let _ = writeln!(o);
    }
    if !m.rpo.is_empty() || !m.rpo_truth.is_empty() {
        let _ = writeln!(o, "## Data loss (RPO)");
        let _ = writeln!(o);
        for (step, v) in &m.rpo {
            let _ = writeln!(o, "- `{step}` estimate: {}", figures_text(v, false));
            for (key, what, _) in FIGURES {
                let method = v
                    .get("methods")
                    .and_then(|x| x.get(*key))
                    .and_then(Value::as_str);
                let bound = v
                    .get("bounds")
                    .and_then(|x| x.get(*key))
                    .and_then(Value::as_str);
                let detail: Vec<String> = method
                    .map(|m| format!("method: {m}"))
                    .into_iter()
                    .chain(bound.map(|b| format!("bound: {b}")))
                    .collect();
                if !detail.is_empty() {
                    let _ = writeln!(o, "  - {what}: {}", detail.join("; "));
                }
            }
            if v.get("methods").is_none() {
                let _ = writeln!(o, "  - {}", method_text(v));
            }
        }
        for t in &m.rpo_truth {
            let _ = writeln!(o, "- truth (old primary restarted): {}", describe_truth(t));
            for c in comparisons(&m.rpo, t) {
                let _ = writeln!(o, "  - {c}");
            }
        }
        if let Some(why) = &m.truth_missing {
            let _ = writeln!(o, "- truth: {why}; the figures above are estimates");
        }
        let _ = writeln!(o, "- headline: {}", rpo_line(m));
        let _ = writeln!(o);
    }
    o
}

/// How a figure's value reads (bytes and counts as numbers, time as a
/// duration).
type Render = fn(u64) -> String;

/// The figures an `rpo` object may carry: key, name, unit renderer.
const FIGURES: &[(&str, &str, Render)] = &[
    ("wal_bytes_lost", "WAL bytes lost", |v| format!("{v}")),
    ("time_lost_ms", "time of writes lost", ms),
    ("heartbeats_lost", "heartbeat rows lost", |v| format!("{v}")),
    ("txs_lost", "immudb transactions lost", |v| format!("{v}")),
];

/// A known figure as a phrase: `1656 WAL bytes lost`, `1.012s of writes lost`.
fn known_text(key: &str, what: &str, unit: Render, value: u64) -> String {
    if key == "time_lost_ms" {
        format!("{} of writes lost", unit(value))
    } else {
        format!("{} {what}", unit(value))
    }
}

/// The figures of one `rpo` object, each known, unknown (with why) or
/// bounded. `all`: name the three loss figures even when absent (a truth
/// note that lacks one does not know it).
fn figures_text(v: &Value, all: bool) -> String {
    let mut parts = Vec::new();
    for (key, what, unit) in FIGURES {
        let f = match figure_of(v, key, "") {
            None if all && *key != "txs_lost" => Some(Figure::Unknown {
                reason: String::new(),
            }),
            f => f,
        };
        match f {
            Some(Figure::Known { value, .. }) => parts.push(known_text(key, what, *unit, value)),
            Some(Figure::AtMost { value, .. }) => {
                parts.push(format!("{what}: unknown, at most {}", unit(value)))
            }
            Some(Figure::Unknown { .. }) => {
                let why = v
                    .get("unknown")
                    .and_then(|u| u.get(*key))
                    .and_then(Value::as_str);
                parts.push(match why {
                    Some(w) => format!("{what}: unknown ({w})"),
                    None => format!("{what}: unknown"),
                })
            }
            None => {}
        }
    }
    if parts.is_empty() {
        parts.push("no loss figures".into());
    }
    parts.join(", ")
}

fn method_text(v: &Value) -> String {
    let mut s = String::new();
    if let Some(m) = v.get("method").and_then(Value::as_str) {
        s.push_str(&format!("method: {m}"));
    }
    if let Some(b) = v.get("bound").and_then(Value::as_str) {
        s.push_str(&format!(
            "{}bound: {b}",
            if s.is_empty() { "" } else { "; " }
        ));
    }
    s
}

/// The figures of an `rpo` object alone, for summaries.
pub fn figures_line(v: &Value) -> String {
    figures_text(v, false)
}

/// One line from an `rpo` object: its figures, then method and bound.
pub fn describe_rpo(v: &Value) -> String {
    let m = method_text(v);
    if m.is_empty() {
        figures_text(v, false)
    } else {
        format!("{} ({m})", figures_text(v, false))
    }
}

/// One line from a truth note: every loss figure, known or unknown.
pub fn describe_truth(t: &Value) -> String {
    let m = method_text(t);
    if m.is_empty() {
        figures_text(t, true)
    } else {
        format!("{} ({m})", figures_text(t, true))
    }
}

/// Estimate against truth, for each figure both know.
pub fn comparisons(rpo: &[(String, Value)], truth: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (key, what, unit) in FIGURES {
        let Some(Figure::Known { value: t, .. }) = figure_of(truth, key, "truth") else {
            continue;
        };
        for (step, v) in rpo {
            if let Some(Figure::Known { value: e, .. }) = figure_of(v, key, step) {
                let diff = match e.cmp(&t) {
                    std::cmp::Ordering::Equal => "equal".to_string(),
                    std::cmp::Ordering::Greater => format!("estimate {} above", unit(e - t)),
                    std::cmp::Ordering::Less => format!("estimate {} below", unit(t - e)),
                };
                out.push(format!(
                    "{what}: estimate (`{step}`) {} vs truth {} ({diff})",
                    unit(e),
                    unit(t)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
