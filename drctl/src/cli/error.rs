//! Errors as the operator sees them: a short message, the chain of causes,
//! a hint, and a documented exit code.

use std::fmt::Write as _;

use crate::bench::BenchError;
use crate::diag::{error_chain, Diagnostics};
use crate::drill::DrillError;
use crate::engine::EngineError;
use crate::exit;
use crate::journal::JournalError;
use crate::lab::LabError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    pub causes: Vec<String>,
    pub hint: Option<String>,
    pub diags: Option<Diagnostics>,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            causes: Vec::new(),
            hint: None,
            diags: None,
        }
    }

    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }

    pub fn from_error(code: i32, e: &dyn std::error::Error) -> Self {
        let mut c = CliError::new(code, e.to_string());
        let mut cur = e.source();
        while let Some(s) = cur {
            let t = s.to_string();
            if !c.message.contains(&t) {
                c.causes.push(t);
            }
            cur = s.source();
        }
        c
    }

    pub fn invalid(diags: Diagnostics) -> Self {
        let n = diags.error_count();
        // Only missing files: not-found, like a missing run.
        let missing_only = n > 0
            && diags
                .iter()
                .filter(|d| d.severity == crate::diag::Severity::Error)
                .all(|d| d.code == crate::diag::NOT_FOUND);
        CliError {
            code: if missing_only {
                exit::NOT_FOUND
            } else {
                exit::INVALID_INPUT
            },
            message: format!(
                "{n} error{} found; nothing was run",
                if n == 1 { "" } else { "s" }
            ),
            causes: Vec::new(),
            hint: None,
            diags: Some(diags),
        }
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        if let Some(d) = &self.diags {
            o.push_str(&d.render());
            o.push('\n');
        }
        let _ = writeln!(o, "error: {}", self.message);
        for c in &self.causes {
            let _ = writeln!(o, "  caused by: {c}");
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(o, "  hint: {h}");
        }
        let _ = writeln!(o, "  (exit code {})", self.code);
        crate::secret::redact(&o).into_owned()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "error": {
                "message": self.message,
                "causes": self.causes,
                "hint": self.hint,
                "exit_code": self.code,
                "diagnostics": self.diags.as_ref().map(Diagnostics::to_json),
            }
        });
        crate::secret::redact_json(&mut v);
        v
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::RunNotFound(id) => {
                CliError::new(exit::NOT_FOUND, format!("run `{id}` not found"))
                    .hint("`drctl runs` lists runs; check --state (or DRCTL_STATE, or the environment's `state:`)")
            }
            StoreError::LeaseHeld { name, holder } => CliError::new(
                exit::LOCK_HELD,
                format!("lock `{name}` is held by {holder}"),
            )
            .hint("one run per environment: wait for it, or `drctl abort` it"),
            StoreError::Fenced { .. } => CliError::from_error(exit::LEASE_LOST, &e)
                .hint("another drctl process owns this environment now; `drctl status latest` shows it"),
            StoreError::NotInitialised { .. } | StoreError::Schema { .. } | StoreError::BadLocation(_) => {
                let h = e.hint().unwrap_or("check --state").to_string();
                CliError::from_error(exit::STATE_UNAVAILABLE, &e).hint(h)
            }
            _ if e.is_unavailable() => {
                let h = e.hint().unwrap_or("check --state").to_string();
                CliError::from_error(exit::STATE_UNAVAILABLE, &e).hint(h)
            }
            _ => CliError::from_error(exit::INTERNAL, &e),
        }
    }
}

impl From<JournalError> for CliError {
    fn from(e: JournalError) -> Self {
        match &e {
            JournalError::Store(s) if matches!(s, StoreError::RunNotFound(_)) => {
                let StoreError::RunNotFound(id) = s else { return CliError::new(exit::NOT_FOUND, "run not found") };
                CliError::new(exit::NOT_FOUND, format!("run `{id}` not found")).hint("`drctl runs` lists runs")
            }
            JournalError::NeverStarted => CliError::from_error(exit::NOT_FOUND, &e)
                .hint("nothing of this run happened; start a new run"),
            JournalError::Write(_) => CliError::from_error(exit::JOURNAL_WRITE, &e)
                .hint("make the state store writable again (disk space, permissions, or the state database), then `drctl resume RUN_ID`"),
            JournalError::Fenced(_) => CliError::from_error(exit::LEASE_LOST, &e)
                .hint("another drctl process took over this environment's lease; `drctl status latest` shows it"),
            _ if e.is_integrity() => CliError::from_error(exit::JOURNAL_CORRUPT, &e)
                .hint("the journal was modified or damaged; it is evidence: keep a copy and do not trust its contents"),
            _ => CliError::from_error(exit::INTERNAL, &e),
        }
    }
}

impl From<EngineError> for CliError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Journal(j) => j.into(),
            EngineError::Store(s) => s.into(),
            EngineError::LockHeld { env, holder } => CliError::new(
                exit::LOCK_HELD,
                format!("another run is active on `{env}`: {holder}"),
            )
            .hint(format!("only one mutating run per environment; watch it with `drctl status {} --follow`", holder.holder.run_id)),
            EngineError::IncidentInProgress { env, holder } => CliError::new(
                exit::LOCK_HELD,
                format!("not starting an isolated drill while another run holds `{env}`: {holder}"),
            )
            .hint(format!(
                "a failover or another mutating run is in progress, and drills give way to it; run the drill after it ends (`drctl status {} --follow`), or undo a drill left half-way with `drctl drills cleanup RUN`",
                holder.holder.run_id
            )),
            e @ EngineError::StoreTimeout(_) => CliError::from_error(exit::JOURNAL_WRITE, &e)
                .hint("check the state store (`drctl state check`), then `drctl resume RUN_ID`"),
            e @ EngineError::RunbookChanged { .. } => CliError::from_error(exit::RUNBOOK_CHANGED, &e)
                .hint("review the change; resume with --allow-runbook-change to accept it (journaled)"),
            e @ EngineError::EnvironmentMismatch { .. } => CliError::from_error(exit::INVALID_INPUT, &e)
                .hint("a run resumes only against the environment it started with: pass that file with --env"),
            e @ EngineError::EnvironmentChanged { .. } => CliError::from_error(exit::RUNBOOK_CHANGED, &e)
                .hint("review the change (`drctl resume` shows it on a terminal); resume with --allow-env-change to accept it (journaled)"),
            EngineError::NeedsDecision { steps } => CliError::new(
                exit::NEEDS_DECISION,
                format!("[DRCTL-R002] step(s) {} were interrupted mid-execution and may not be safe to repeat", steps.join(", ")),
            )
            .hint(format!(
                "check the system by hand, then `--mark-done {0}` if it took effect or `--rerun {0}` to execute it again",
                steps[0]
            )),
            EngineError::RunEnded { ref run_id, .. } => {
                let hint = format!("what happened: {} report {run_id}", super::ui::drctl());
                CliError::from_error(exit::RUN_ENDED, &e).hint(hint)
            }
            e @ EngineError::MissingParam(_) => CliError::from_error(exit::INVALID_INPUT, &e).hint("pass --param NAME=VALUE"),
            e @ EngineError::Invalid(_) => CliError::from_error(exit::INVALID_INPUT, &e),
            EngineError::Params(d) => CliError::invalid(d),
            e @ (EngineError::Hook(_) | EngineError::HookTimeout(_)) => CliError::from_error(exit::INTERNAL, &e),
        }
    }
}

/// The lab is a local tool: anything that goes wrong with it is
/// unexpected for the caller (exit 1), with the causes spelled out.
impl From<LabError> for CliError {
    fn from(e: LabError) -> Self {
        CliError::from_error(exit::INTERNAL, &e)
    }
}

/// A drill that could not run or be recorded (its run failing is an
/// outcome, not this error). Errors of the engine, journal and store keep
/// their own exit codes (a held lock is 6, a journal write 10); the lab's
/// are exit 1 with the whole chain on the one line scripts already match.
impl From<DrillError> for CliError {
    fn from(e: DrillError) -> Self {
        match e {
            DrillError::Engine(e) => e.into(),
            DrillError::Journal(e) => e.into(),
            DrillError::Store(e) => e.into(),
            e @ DrillError::NotInitial { scope: "lab", .. } => {
                CliError::new(exit::NOT_INITIAL, e.to_string())
                    .hint("reset the lab to its initial state: drctl lab down && drctl lab up")
            }
            e @ DrillError::NotInitial { .. } => CliError::new(exit::NOT_INITIAL, e.to_string())
                .hint("rehearse from the state a real failover starts in: fail back first, or set the environment's `active_region` to the region that is primary now"),
            e => CliError::new(exit::INTERNAL, format!("drill failed: {}", error_chain(&e))),
        }
    }
}

impl From<BenchError> for CliError {
    fn from(e: BenchError) -> Self {
        CliError::new(
            exit::INTERNAL,
            format!("benchmark failed: {}", error_chain(&e)),
        )
    }
}
