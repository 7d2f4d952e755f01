//! The engine: one event loop per run.
//!
//! Step lifecycle (the journal records every transition before the next side
//! effect):
//!
//! | from     | event                         | to        | journal record        |
//! |----------|-------------------------------|-----------|-----------------------|
//! | pending  | `when` excludes the mode      | skipped   | `step_skipped`        |
//! | pending  | a needed step failed          | skipped   | `step_skipped`        |
//! | pending  | needs met, a slot is free     | running   | `step_started`        |
//! | running  | attempt failed, retries left  | running   | `step_attempt_failed` |
//! | running  | attempt succeeded             | succeeded | `step_finished`       |
//! | running  | attempts exhausted / refused  | failed    | `step_finished`       |
//! | running  | drctl killed                  | running   | (nothing: resume re-executes) |
//!
//! The loop `select!`s over step completions, signals and a tick (abort
//! requests, lease renewal). First Ctrl-C or SIGTERM: start nothing new,
//! let in-flight steps finish and be journaled, cut pending approvals short
//! (nothing to finish in a wait for a human), end `interrupted`. Second
//! signal of either kind: cancel in-flight steps (they re-run on resume)
//! and end at once. An abort stops the same way and ends `aborted`; a run
//! with no live process is aborted by [`run::abort`], under its lease.

pub mod hooks;
pub mod lock;
pub mod run;
#[cfg(test)]
mod tests;
pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use thiserror::Error;

use crate::action::Registry;
use crate::environment::Environment;
use crate::journal::RunOptions;
use crate::journal::{JournalError, RunStatus};
use crate::runbook::{Mode, Runbook};
use crate::store::{Store, StoreError};

pub use hooks::{Note, RunHooks};
pub use lock::{drill_lock_name_of, lock_name, lock_name_of, run_lock_name, view_lock_name};
pub use run::{abort, resume, start, AbortOutcome, ResumeHooks, ResumeOptions};

/// Default bound for one attempt of a step without `timeout`.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// Approval steps wait this long by default before the run parks as
/// `waiting-approval`.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Lease lifetime; renewed every third of it while the run lives.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// A journal append or lease call that takes longer than this is treated as
/// failed: the run stops before its next side effect.
pub const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The lease lifetime: [`LEASE_TTL`], or `DRCTL_LEASE_TTL` (a duration such
/// as `3s`; for tests of lease takeover, never needed in production).
pub fn lease_ttl() -> Duration {
    std::env::var("DRCTL_LEASE_TTL")
        .ok()
        .and_then(|v| crate::duration::parse_duration(&v).ok())
        .filter(|d| *d >= Duration::from_millis(300))
        .unwrap_or(LEASE_TTL)
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("another run holds the lock for environment `{env}`: {holder}")]
    LockHeld {
        env: String,
        holder: Box<crate::store::LeaseRecord>,
    },
    /// An isolated drill gives way to an incident: it does not start (or
    /// resume) while a mutating run holds the environment's lock.
    #[error(
        "an isolated drill does not start while another run holds `{env}` exclusively: {holder}"
    )]
    IncidentInProgress {
        env: String,
        holder: Box<crate::store::LeaseRecord>,
    },
    #[error(transparent)]
    Store(StoreError),
    #[error("[DRCTL-R001] runbook {path} changed since run {run_id} started (journal {journal}, now {now})")]
    RunbookChanged {
        run_id: String,
        path: String,
        journal: String,
        now: String,
    },
    #[error("[DRCTL-R003] run {run_id} cannot resume against this environment: {reason}")]
    EnvironmentMismatch { run_id: String, reason: String },
    #[error("[DRCTL-R004] environment {path} changed since run {run_id} started (journal {journal}, now {now})")]
    EnvironmentChanged {
        run_id: String,
        path: String,
        journal: String,
        now: String,
    },
    #[error("[DRCTL-R002] steps {steps:?} were interrupted mid-execution and are not known to be safe to repeat")]
    NeedsDecision { steps: Vec<String> },
    #[error(
        "the state store did not answer within {0:?}; the run stopped before its next side effect"
    )]
    StoreTimeout(Duration),
    /// The run ended for good (succeeded or aborted): nothing may append
    /// to its journal any more.
    #[error("run {run_id} already ended: {}{}; nothing done", status.as_str(), reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    RunEnded {
        run_id: String,
        status: RunStatus,
        reason: Option<String>,
    },
    #[error("runbook needs parameter `{0}`")]
    MissingParam(String),
    #[error("{0}")]
    Invalid(String),
    /// `--param` values that do not fit their declarations.
    #[error("{} parameter problem(s)", .0.error_count())]
    Params(crate::diag::Diagnostics),
    /// A [`RunHooks::before_start`] refused the run; the caller's own
    /// error, for it to downcast.
    #[error("the run did not start")]
    Hook(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A run hook did not finish within [`hooks::HOOK_TIMEOUT`].
    #[error("a run hook did not finish within {0:?}")]
    HookTimeout(Duration),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseHeld { name, holder } => EngineError::LockHeld { env: name, holder },
            other => EngineError::Store(other),
        }
    }
}

/// Everything needed to start a run.
pub struct RunSpec {
    pub runbook: Arc<Runbook>,
    /// The kinds the runbook was validated against; steps run these.
    pub registry: Arc<Registry>,
    pub env: Option<Arc<Environment>>,
    pub mode: Mode,
    /// Final parameter values (defaults applied); secret params hold refs.
    pub params: Map<String, Value>,
    pub target_region: Option<String>,
    pub operator: String,
    pub options: RunOptions,
    pub failed_at_ms: Option<u64>,
    pub parallelism: usize,
    /// Use this run id instead of a fresh one (tests, drills).
    pub run_id: Option<String>,
    /// Work done under the run's lease before its first record and after
    /// its last (drills: inject the failure, journal the truth).
    pub hooks: Option<Arc<dyn RunHooks>>,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: RunStatus,
    pub reason: Option<String>,
    /// Approval steps that were still waiting when the run stopped (a
    /// signal or an abort cut the wait short): approve them, then resume.
    pub pending_approvals: Vec<String>,
}

/// Progress for humans; the journal is written regardless.
#[derive(Debug, Clone)]
pub enum UiEvent {
    RunStarted {
        run_id: String,
        journal: String,
    },
    StepStarted {
        step: String,
        action: String,
        describe: String,
    },
    StepRetry {
        step: String,
        attempt: u32,
        error: String,
        delay: Duration,
    },
    StepFinished {
        step: String,
        ok: bool,
        duration: Duration,
        detail: String,
    },
    StepSkipped {
        step: String,
        reason: String,
    },
    /// A running step's progress line (not journaled: the outcome is).
    StepProgress {
        step: String,
        message: String,
    },
    Message(String),
}

pub type Ui = Arc<dyn Fn(UiEvent) + Send + Sync>;

pub fn silent_ui() -> Ui {
    Arc::new(|_| {})
}

/// A fresh, sortable, readable run id: `20261122T113000123Z-3fa9c2`
/// (UTC to the millisecond, so runs started in the same second still sort
/// in start order; the suffix avoids collisions across machines).
pub fn new_run_id() -> String {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let compact: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{compact}-{:06x}", fastrand::u32(..0x0100_0000))
}

/// Checks `--param` values against their declarations: unknown names and
/// values of the wrong type are all reported at once, located at the
/// declaration in the runbook. Returns the values typed.
pub fn typed_overrides(
    rb: &Runbook,
    overrides: &BTreeMap<String, String>,
) -> Result<Map<String, Value>, EngineError> {
    use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
    let mut diags = Diagnostics::default();
    let mut out = Map::new();
    let names: Vec<&str> = rb.params.iter().map(|p| p.name.as_str()).collect();
    for (k, raw) in overrides {
        let Some(p) = rb.param(k) else {
            let hint = match did_you_mean(k, names.iter().copied()) {
                Some(c) => format!("did you mean `{c}`?"),
                None if names.is_empty() => "this runbook declares no parameters".into(),
                None => format!("runbook parameters: {}", names.join(", ")),
            };
            diags.push(
                Diagnostic::error(
                    "E-UNKNOWN-PARAM",
                    &rb.file,
                    // At the declarations when there are any, else the top.
                    rb.params.first().map_or(top_of_file(), |p| p.span),
                    format!("--param {k}: unknown parameter `{k}` (its value is not shown)"),
                )
                .with_hint(hint),
            );
            continue;
        };
        let given = Value::String(raw.clone());
        let checked = if p.secret && crate::secret::SecretRef::parse(raw).is_none() {
            Err("is secret: pass a reference (env:NAME or file:PATH), not the value".to_string())
        } else {
            p.ty.check(&given)
        };
        match checked {
            Ok(v) => {
                out.insert(k.clone(), v);
            }
            Err(e) => diags.push(
                Diagnostic::error("E-PARAM", &rb.file, p.span, format!("--param {k}: {e}"))
                    .with_hint(format!(
                        "parameter `{k}` is declared here: pass {}",
                        p.ty.describe()
                    )),
            ),
        }
    }
    if diags.has_errors() {
        return Err(EngineError::Params(diags));
    }
    Ok(out)
}

fn top_of_file() -> crate::yaml::Span {
    let p = crate::yaml::Pos { line: 1, col: 1 };
    crate::yaml::Span { start: p, end: p }
}

/// Applies defaults and `--param` overrides; reports unknown, missing or
/// mistyped ones (all of them) before anything runs.
pub fn resolve_params(
    rb: &Runbook,
    overrides: &BTreeMap<String, String>,
) -> Result<Map<String, Value>, EngineError> {
    let typed = typed_overrides(rb, overrides)?;
    let mut out = Map::new();
    for p in &rb.params {
        let v = match typed.get(&p.name) {
            Some(v) => v.clone(),
            None => match &p.default {
                Some(d) => d.clone(),
                None if p.required => return Err(EngineError::MissingParam(p.name.clone())),
                None => Value::Null,
            },
        };
        // The same rules as for documents (`secretscan`), for values given
        // with --param; messages name the parameter, never the value.
        if p.secret || crate::secret::is_secret_field(&p.name) {
            let literal = match &v {
                Value::String(s) => crate::secret::SecretRef::parse(s).is_none(),
                Value::Number(_) => true,
                _ => false,
            };
            if literal {
                return Err(EngineError::Invalid(format!(
                    "parameter `{}` is secret: pass a reference (env:NAME or file:PATH), not the value",
                    p.name
                )));
            }
        }
        if let Some(what) = v.as_str().and_then(crate::secretscan::credentials_in) {
            return Err(EngineError::Invalid(format!(
                "parameter `{}` holds {what}: give the password by reference (env:NAME or file:PATH) in its own field",
                p.name
            )));
        }
        out.insert(p.name.clone(), v);
    }
    Ok(out)
}

/// The scope `${...}` resolves against for a step.
pub fn scope_for(
    params: &Map<String, Value>,
    env: Option<&Environment>,
    target_region: Option<&str>,
    run: Value,
    step_outputs: &BTreeMap<String, Map<String, Value>>,
) -> crate::expr::Scope {
    let mut root = Map::new();
    root.insert("params".into(), Value::Object(params.clone()));
    root.insert("run".into(), run);
    if let Some(env) = env {
        root.insert(
            "env".into(),
            json!({"name": env.name, "active_region": env.active_region}),
        );
        root.insert(
            "regions".into(),
            Value::Object(
                env.regions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        );
        if let Some(d) = env.doc.get("dns") {
            root.insert("dns".into(), d.clone());
        }
        if let Some(src) = env.region(&env.active_region) {
            root.insert("source".into(), src.clone());
        }
        if let Some(t) = target_region.and_then(|t| env.region(t)) {
            root.insert("target".into(), t.clone());
        }
    }
    let steps: Map<String, Value> = step_outputs
        .iter()
        .map(|(k, v)| (k.clone(), json!({ "outputs": v })))
        .collect();
    root.insert("steps".into(), Value::Object(steps));
    crate::expr::Scope { root }
}
