//! The contract between the engine and every action kind: the [`Action`]
//! trait, the [`StepContext`] an attempt runs in, [`ActionError`] and the
//! helpers kinds share.
//!
//! This module is a leaf: it imports only foundation modules (decoding,
//! diagnostics, the environment, the store, the journal's and the runbook
//! model's types, secrets), never an action kind, the engine or the CLI,
//! and nothing it imports leads back here. The kinds (`actions/`, `dns/`,
//! `kube/`, `postgres/`, `immudb/`) depend on it and not on each other;
//! which kinds exist is decided once, at the composition root
//! ([`crate::registry`]).
//!
//! Each kind has three faces:
//!
//! - `validate`: pure parameter checks for `drctl validate` (no network, no
//!   secrets resolved), by the kind's one decoder, which also decodes the
//!   resolved parameters once per step start;
//! - `preflight`: read-only inspection of live systems for `drctl plan
//!   --check`, saying what `execute` would change;
//! - `execute`: idempotent: check the current state, act only if needed,
//!   verify. A step interrupted mid-execution is re-executed on resume, so
//!   an action that cannot guarantee this must say so via
//!   [`ActionKind::idempotent`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::decode::Ctx;
use crate::diag::Diagnostics;
use crate::environment::Environment;
use crate::journal::RunOptions;
use crate::runbook::model::Mode;
use crate::secret::{SecretError, SecretRef};
use crate::store::Store;
use crate::yaml::{Node, SourceFile, Span};

pub type Outputs = Map<String, Value>;

/// Everything an action may use while executing one attempt.
#[derive(Clone)]
pub struct StepContext {
    pub run_id: String,
    pub step_id: String,
    pub mode: Mode,
    pub env: Option<Arc<Environment>>,
    pub target_region: Option<String>,
    pub store: Arc<dyn Store>,
    pub options: RunOptions,
    /// Who is driving this process (the resumer, on a resume).
    pub operator: String,
    /// Who started the run (`run_started.operator`).
    pub started_by: String,
    pub attempt: u32,
    /// When this attempt's timeout expires; actions bound internal waits by it.
    pub deadline: Instant,
    pub failed_at: Option<SystemTime>,
    /// Directory of the runbook file: relative paths in steps (check sets)
    /// resolve against it, not against wherever drctl was started.
    pub runbook_dir: std::path::PathBuf,
    /// Where long-running actions report progress (e.g. "7/12 ready");
    /// the CLI prints it, drills and tests may ignore it.
    pub progress: Progress,
    /// The step's pre-effect checkpoint, journaled through the engine.
    pub checkpoints: Checkpoints,
    /// The kinds this run was validated against: `checks.run` looks its
    /// checks' kinds up here.
    pub registry: Arc<Registry>,
}

/// Journals a checkpoint and resolves once it is durable.
pub type CheckpointSaver = Arc<
    dyn Fn(Value) -> futures::future::BoxFuture<'static, Result<(), CheckpointError>> + Send + Sync,
>;

/// Why a checkpoint was not journaled. Either way the step must not go
/// on to the effect the checkpoint protects; the engine reports the
/// journal's own error for the run.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The run's event loop is gone (it is stopping).
    #[error("the run is stopping")]
    RunStopping,
    /// The loop received the checkpoint but did not confirm it durable
    /// (the journal write failed, or the run stopped first).
    #[error("the run stopped before the checkpoint was journaled")]
    NotJournaled,
}

/// A step's checkpoint: the latest value saved by this step, in this or an
/// earlier process (the engine replays them from the journal on resume).
#[derive(Clone)]
pub struct Checkpoints {
    saver: Option<CheckpointSaver>,
    saved: Arc<std::sync::Mutex<Option<Value>>>,
}

impl Checkpoints {
    pub fn new(saver: CheckpointSaver, saved: Option<Value>) -> Self {
        Checkpoints {
            saver: Some(saver),
            saved: Arc::new(std::sync::Mutex::new(saved)),
        }
    }

    /// For contexts that must not save anything (preflight, tests).
    pub fn none() -> Self {
        Checkpoints {
            saver: None,
            saved: Arc::new(std::sync::Mutex::new(None)),
        }
    }
}

/// A sink for one-line progress messages of a running step.
pub type Progress = Arc<dyn Fn(String) + Send + Sync>;

pub fn no_progress() -> Progress {
    Arc::new(|_| {})
}

impl StepContext {
    /// Reports progress to the operator (and the log).
    pub fn progress(&self, message: impl Into<String>) {
        let m = message.into();
        tracing::info!(step = %self.step_id, "{m}");
        (self.progress)(m);
    }

    /// Saves the step's pre-effect state as a hash-chained `step_checkpoint`
    /// journal record and returns once it is durable: call it before the
    /// effect it protects. The latest value is what [`Self::saved`] returns,
    /// in this attempt and after any resume.
    pub async fn checkpoint<T: serde::Serialize>(&self, value: &T) -> Result<(), ActionError> {
        let v = serde_json::to_value(value).map_err(|e| {
            ActionError::failed(format!("cannot encode the step's checkpoint: {e}"))
        })?;
        let Some(saver) = &self.checkpoints.saver else {
            return Err(ActionError::failed(
                "this context cannot save checkpoints (preflight)",
            ));
        };
        saver(v.clone()).await.map_err(|e| {
            ActionError::failed(format!("cannot journal the step's checkpoint: {e}"))
        })?;
        *self
            .checkpoints
            .saved
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(v);
        Ok(())
    }

    /// The step's latest checkpoint, if it saved one (perhaps in a process
    /// that died).
    pub fn saved<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, ActionError> {
        let g = self
            .checkpoints
            .saved
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                ActionError::failed(format!(
                    "the step's journaled checkpoint cannot be read: {e}"
                ))
            }),
        }
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub fn env(&self) -> Result<&Environment, ActionError> {
        self.env.as_deref().ok_or_else(|| ActionError::Config {
            message: "this action needs an environment".into(),
            hint: "pass --env FILE".into(),
        })
    }
}

/// What a preflight says about a step if it ran now.
///
/// `FailsNow` and `Problem` are both "would fail now"; they differ in
/// whether earlier steps of the run could change the answer. `plan --check`
/// (`cli/plan.rs`) decides what that means for the step:
/// a step that fails now but follows a mutating step is expected to pass
/// after it; one with no mutating step before it must pass now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The step would pass (or do what the lines say) now.
    #[default]
    Passes,
    /// The step would fail now because of a state earlier steps may change
    /// (a smoke check before the switch, a split-brain guard before the
    /// fence).
    FailsNow,
    /// The step would fail whatever earlier steps do (an unreachable or
    /// frozen target, missing rights, no trusted state).
    Problem,
}

/// What a preflight found: human lines such as
/// `dns app.example.com A 10.0.0.1 -> 10.1.0.1`, and the [`Verdict`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Preflight {
    pub lines: Vec<String>,
    pub verdict: Verdict,
}

impl Preflight {
    pub fn new(lines: Vec<String>, verdict: Verdict) -> Self {
        Preflight { lines, verdict }
    }

    pub fn ok(line: impl Into<String>) -> Self {
        Preflight::new(vec![line.into()], Verdict::Passes)
    }

    pub fn fails_now(line: impl Into<String>) -> Self {
        Preflight::new(vec![line.into()], Verdict::FailsNow)
    }

    pub fn problem(line: impl Into<String>) -> Self {
        Preflight::new(vec![line.into()], Verdict::Problem)
    }

    /// The step would pass now.
    pub fn passes(&self) -> bool {
        self.verdict == Verdict::Passes
    }
}

#[derive(Debug, Error)]
pub enum ActionError {
    #[error("invalid parameters after resolving expressions:\n{0}")]
    InvalidParams(String),
    #[error("{message}")]
    Config { message: String, hint: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A guard refused to act (split brain, too much lag). Not retried:
    /// retrying cannot change the operator's decision.
    #[error("refused: {message}")]
    Refused { message: String, hint: String },
    /// The action ran and the system did not reach the desired state.
    #[error("{message}")]
    Failed {
        message: String,
        hint: Option<String>,
    },
    /// An approval step is still waiting for `drctl approve`.
    #[error("waiting for approval of step `{step}`")]
    AwaitingApproval { step: String },
}

impl ActionError {
    pub fn failed(message: impl Into<String>) -> Self {
        ActionError::Failed {
            message: message.into(),
            hint: None,
        }
    }

    pub fn failed_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        ActionError::Failed {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// Whether another attempt could succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, ActionError::Failed { .. })
    }

    pub fn hint(&self) -> Option<&str> {
        match self {
            ActionError::Config { hint, .. } | ActionError::Refused { hint, .. } => Some(hint),
            ActionError::Failed { hint, .. } => hint.as_deref(),
            ActionError::Secret(_) => {
                Some("set the variable or create the file the reference names")
            }
            ActionError::AwaitingApproval { .. } => {
                Some("run `drctl approve RUN_ID STEP`, then `drctl resume RUN_ID`")
            }
            ActionError::InvalidParams(_) => None,
        }
    }
}

/// A kind of step, written with typed parameters. Kind modules implement
/// this; the blanket impl below turns each into an [`Action`] the registry
/// can hold. The split keeps one decoder per kind ([`ActionKind::decode`],
/// run by `drctl validate` on the runbook's YAML and by the engine on the
/// resolved parameters) and decodes once per step start: retries reuse the
/// typed value.
#[async_trait]
pub trait ActionKind: Clone + Send + Sync + 'static {
    /// The step's `with:`, decoded.
    type Params: Send + Sync + 'static;

    /// The name used in runbooks, e.g. `http.check`.
    fn kind(&self) -> &'static str;

    /// One line for `drctl schema` and error hints.
    fn summary(&self) -> &'static str;

    /// Output keys later steps may reference as `steps.ID.outputs.KEY`.
    fn outputs(&self) -> &'static [&'static str];

    /// True when a successful step of this kind shows the service works
    /// (a health check, a query, a verified ledger): RTO ends at the last
    /// such step, and is claimed only when every one of them succeeded. A
    /// step overrides it with `proves_recovery:`. Takes the runbook's
    /// parameters as written (the decision is journaled at run start,
    /// before anything is resolved), e.g. an `http.check` that expects a
    /// failure proves an outage, not a recovery.
    fn proves_recovery(&self, _params: &Value) -> bool {
        false
    }

    /// The kind's one decoder: pure (no network, no secrets resolved), and
    /// reporting every problem it finds into `ctx`.
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params>;

    /// `drctl validate`'s check of a step: the decoder, plus whatever a
    /// kind checks beyond its own parameters (`checks.run` validates its
    /// check file against `kinds`).
    fn validate(&self, ctx: &mut Ctx<'_>, with: &Node, _kinds: &Registry) {
        Self::decode(ctx, with);
    }

    /// The JSON Schema of the step's `with:` for `drctl schema`, when the
    /// kind publishes one (editors then complete and check its fields).
    fn with_schema(&self) -> Option<Value> {
        None
    }

    /// False when re-running after an interruption could repeat a side
    /// effect; resume then asks the operator instead of guessing. Takes the
    /// journaled (resolved) parameters: resume decides before decoding.
    fn idempotent(&self, _params: &Value) -> bool {
        true
    }

    /// True when the step changes nothing in the environment's systems
    /// (it may still write drctl's own state, e.g. a capacity snapshot).
    /// A run of read-only steps takes a shared lease, so it never locks
    /// out a failover; check sets (`checks.run`) may hold only read-only
    /// kinds; and `plan --check` treats a step that follows a non-read-only
    /// one as "expected to pass after it". Takes the parameters as written:
    /// the lease is chosen before anything is resolved. The default is the
    /// conservative `false`: a kind that changes nothing says so.
    fn read_only(&self, _params: &Value) -> bool {
        false
    }

    /// One line describing what the step will do, for plans. Takes JSON
    /// because plans show steps whose `${steps...}` references are not
    /// resolved yet (and so would not decode).
    fn describe(&self, params: &Value) -> String;

    /// Read-only inspection of live systems: it must never change
    /// anything (no writes, no commands run, no checkpoints), since
    /// `plan --check` runs it against production at any time. `raw` is the
    /// resolved JSON `p` was decoded from; the default only describes the
    /// step.
    async fn preflight(
        &self,
        _p: &Self::Params,
        raw: &Value,
        _ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        Ok(Preflight::ok(self.describe(raw)))
    }

    /// Check, act if needed, verify. Called once per attempt with the same
    /// decoded parameters.
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError>;
}

/// A kind as the registry, validation and the engine see it: object-safe,
/// with JSON in and a [`PreparedStep`] out.
pub trait Action: Send + Sync {
    /// The name used in runbooks, e.g. `http.check`.
    fn kind(&self) -> &'static str;

    /// One line for `drctl schema` and error hints.
    fn summary(&self) -> &'static str;

    /// Output keys later steps may reference as `steps.ID.outputs.KEY`.
    fn outputs(&self) -> &'static [&'static str];

    /// See [`ActionKind::proves_recovery`].
    fn proves_recovery(&self, params: &Value) -> bool;

    /// Pure parameter validation (no network, no secrets resolved).
    /// `kinds` is the registry the runbook is validated against, for kinds
    /// that hold other steps (`checks.run`).
    fn validate(&self, ctx: &mut Ctx<'_>, with: &Node, kinds: &Registry);

    /// See [`ActionKind::idempotent`].
    fn idempotent(&self, params: &Value) -> bool;

    /// See [`ActionKind::with_schema`].
    fn with_schema(&self) -> Option<Value>;

    /// See [`ActionKind::read_only`].
    fn read_only(&self, params: &Value) -> bool;

    /// One line describing what the step will do, for plans.
    fn describe(&self, params: &Value) -> String;

    /// Decodes resolved parameters with the kind's decoder, once per step
    /// start. A value that only became wrong after `${...}` resolution is
    /// reported as precisely as `drctl validate` would, and fails the step
    /// without an attempt being retried.
    fn prepare(&self, params: &Value) -> Result<Box<dyn PreparedStep>, ActionError>;
}

/// A step whose parameters are decoded: the engine runs
/// [`PreparedStep::execute`] once per attempt, plans run the preflight.
#[async_trait]
pub trait PreparedStep: Send + Sync {
    /// Read-only inspection of live systems.
    async fn preflight(&self, ctx: &StepContext) -> Result<Preflight, ActionError>;

    /// One attempt: check, act if needed, verify.
    async fn execute(&self, ctx: &StepContext) -> Result<Outputs, ActionError>;
}

/// A kind with its decoded parameters (and the JSON they came from).
struct Prepared<K: ActionKind> {
    kind: K,
    params: K::Params,
    raw: Value,
}

#[async_trait]
impl<K: ActionKind> PreparedStep for Prepared<K> {
    async fn preflight(&self, ctx: &StepContext) -> Result<Preflight, ActionError> {
        self.kind.preflight(&self.params, &self.raw, ctx).await
    }

    async fn execute(&self, ctx: &StepContext) -> Result<Outputs, ActionError> {
        self.kind.execute(&self.params, ctx).await
    }
}

impl<K: ActionKind> Action for K {
    fn kind(&self) -> &'static str {
        ActionKind::kind(self)
    }

    fn summary(&self) -> &'static str {
        ActionKind::summary(self)
    }

    fn outputs(&self) -> &'static [&'static str] {
        ActionKind::outputs(self)
    }

    fn proves_recovery(&self, params: &Value) -> bool {
        ActionKind::proves_recovery(self, params)
    }

    fn validate(&self, ctx: &mut Ctx<'_>, with: &Node, kinds: &Registry) {
        ActionKind::validate(self, ctx, with, kinds)
    }

    fn idempotent(&self, params: &Value) -> bool {
        ActionKind::idempotent(self, params)
    }

    fn with_schema(&self) -> Option<Value> {
        ActionKind::with_schema(self)
    }

    fn read_only(&self, params: &Value) -> bool {
        ActionKind::read_only(self, params)
    }

    fn describe(&self, params: &Value) -> String {
        ActionKind::describe(self, params)
    }

    fn prepare(&self, params: &Value) -> Result<Box<dyn PreparedStep>, ActionError> {
        let decoded = decode_resolved(ActionKind::kind(self), params, K::decode)?;
        Ok(Box::new(Prepared {
            kind: self.clone(),
            params: decoded,
            raw: params.clone(),
        }))
    }
}

/// The action kinds a process knows. It is built once, at the composition
/// root ([`crate::registry::standard`]), and handed to everything that
/// resolves a kind by name: validation, plans, the engine and `checks.run`.
/// Nothing else names every kind, so a kind module depends on this leaf
/// and never on its siblings.
pub struct Registry {
    /// In registration order: `drctl schema` and error hints list kinds in
    /// it, so the order is part of the output and must not depend on a hash.
    kinds: Vec<Box<dyn Action>>,
    /// Kind name to its position in `kinds`.
    index: HashMap<&'static str, usize>,
}

/// Two kinds registered under one name: the second would silently shadow
/// the first.
#[derive(Debug, Error)]
#[error("action kind `{0}` is registered twice")]
pub struct DuplicateKind(pub &'static str);

impl Registry {
    /// A registry of `kinds`, kept in the given order.
    pub fn new(kinds: Vec<Box<dyn Action>>) -> Result<Registry, DuplicateKind> {
        let mut index = HashMap::with_capacity(kinds.len());
        for (i, k) in kinds.iter().enumerate() {
            if index.insert(k.kind(), i).is_some() {
                return Err(DuplicateKind(k.kind()));
            }
        }
        Ok(Registry { kinds, index })
    }

    /// The kind named `kind`, in constant time.
    pub fn get(&self, kind: &str) -> Option<&dyn Action> {
        self.index.get(kind).map(|&i| self.kinds[i].as_ref())
    }

    /// Every kind, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Action> {
        self.kinds.iter().map(|k| k.as_ref())
    }

    /// Every kind's name, in registration order (for hints and schemas).
    pub fn kinds(&self) -> Vec<&'static str> {
        self.iter().map(|k| k.kind()).collect()
    }
}

/// Decodes resolved parameters (or an environment section) with the same
/// decoder `validate` uses, so a value that only became wrong after
/// `${...}` resolution is reported just as precisely.
pub fn decode_resolved<P>(
    kind: &str,
    params: &Value,
    decode: impl FnOnce(&mut Ctx<'_>, &Node) -> Option<P>,
) -> Result<P, ActionError> {
    let file = SourceFile::new(format!("<resolved parameters of {kind}>"), "");
    let node = Node::from_json(params, Span::default());
    let mut diags = Diagnostics::default();
    let out = {
        let mut ctx = Ctx::new(&file, &mut diags);
        decode(&mut ctx, &node)
    };
    match out {
        Some(p) if !diags.has_errors() => Ok(p),
        _ => Err(ActionError::InvalidParams(
            diags
                .iter()
                .map(|d| format!("  - {}", d.message))
                .collect::<Vec<_>>()
                .join("\n"),
        )),
    }
}

/// Resolves a secret reference written as a parameter.
pub fn resolve_secret(r: &SecretRef) -> Result<crate::secret::Secret, ActionError> {
    Ok(r.resolve()?)
}

/// A parameter rendered for a plan line, or `default` when it is absent.
pub fn param_text(params: &Value, key: &str, default: &str) -> String {
    params
        .get(key)
        .map(short)
        .unwrap_or_else(|| default.to_string())
}

/// Renders a value compactly for plans, masking nothing: callers pass
/// parameters that hold references, never resolved secrets.
pub fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
