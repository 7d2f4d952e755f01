//! Runbook types. They double as the JSON Schema that editors use
//! (`drctl schema`), so their doc comments are user documentation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::yaml::{Node, SourceFile, Span};

/// A disaster-recovery runbook: named steps forming a dependency graph.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunbookDoc {
    /// Short unique name, e.g. `failover`.
    pub name: String,
    /// What the runbook is for; shown in plans and reports.
    #[serde(default)]
    pub description: Option<String>,
    /// Recovery objectives the runbook is measured against in drills.
    #[serde(default)]
    pub targets: Option<TargetsDoc>,
    /// Parameters: a default value, or a mapping with `default`,
    /// `description`, `required` and `secret`.
    #[serde(default)]
    pub params: BTreeMap<String, ParamDoc>,
    /// The steps; `needs` orders them, everything else may run in parallel.
    pub steps: Vec<StepDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetsDoc {
    /// Recovery time objective, e.g. `15m`.
    #[serde(default)]
    #[schemars(with = "Option<DurationText>")]
    pub rto: Option<String>,
    /// Recovery point objective (data loss window), e.g. `1m`.
    #[serde(default)]
    #[schemars(with = "Option<DurationText>")]
    pub rpo: Option<String>,
}

/// A duration with a unit: `500ms`, `30s`, `15m`, `1h30m`.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct DurationText(#[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"))] String);

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ParamDoc {
    Full {
        #[serde(default)]
        default: Option<serde_json::Value>,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        required: Option<bool>,
        /// The value must be a secret reference (`env:NAME` or `file:PATH`).
        #[serde(default)]
        secret: Option<bool>,
        /// `string`, `duration`, `integer`, `boolean` or `enum`; default:
        /// inferred from `default` (`30s` is a duration, `3` an integer).
        #[serde(default, rename = "type")]
        type_: Option<String>,
        /// Bounds of an `integer`.
        #[serde(default)]
        min: Option<i64>,
        #[serde(default)]
        max: Option<i64>,
        /// The allowed values of an `enum`.
        #[serde(default)]
        values: Option<Vec<String>>,
    },
    Default(serde_json::Value),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDoc {
    /// Unique step id (letters, digits, `_` and `-`).
    pub id: String,
    /// The action kind, e.g. `postgres.promote`, `exec`, `http.check`.
    pub action: String,
    /// The action's parameters; `${...}` expressions are allowed in values.
    #[serde(default, rename = "with")]
    pub with_: Option<serde_json::Map<String, serde_json::Value>>,
    /// Ids of steps that must succeed first.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Upper bound for one attempt of the step.
    #[serde(default)]
    #[schemars(with = "Option<DurationText>")]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retry: Option<RetryDoc>,
    /// What a failure of this step does to the run.
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    /// In which run mode the step runs.
    #[serde(default)]
    pub when: Option<When>,
    /// Environment references (e.g. `target.kube`) the step needs: when any
    /// is absent the step is skipped (journaled with the reason), so one
    /// runbook serves environments with and without that component.
    #[serde(default)]
    pub skip_unless: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Whether this step's success shows the service works: RTO ends at
    /// the last such step and is claimed only when all of them succeeded.
    /// Default: the action's own declaration (`http.check` without
    /// `expect_failure`, `checks.run`, `postgres.query`, `kube.check`,
    /// `dns.check`, `immudb.verify`).
    #[serde(default)]
    pub proves_recovery: Option<bool>,
}

/// The `with:` of an `exec` step (the schema applies it when
/// `action: exec`; the decoder is `actions::exec`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecWithDoc {
    /// The program and its arguments; no shell is involved.
    pub argv: Vec<String>,
    /// Variables set for the command; values may be `env:NAME` or
    /// `file:PATH` references, resolved when the step runs. Secret-shaped
    /// names (`PGPASSWORD`, `API_TOKEN`) must hold references.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of drctl's own variables passed on to the command (names only,
    /// no values). Apart from these and `env`, the command gets only
    /// `PATH`, `HOME`, `LANG`, `LC_ALL` and `TZ` (when set): drctl's
    /// environment holds the secrets of other steps.
    #[serde(default)]
    #[schemars(with = "Vec<EnvName>")]
    pub inherit_env: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub dir: Option<String>,
    /// A command whose success means "already done": the step is skipped
    /// and safe to re-run on resume.
    #[serde(default)]
    pub unless: Option<Vec<String>>,
    /// A command run after success; its failure fails the step.
    #[serde(default)]
    pub verify: Option<Vec<String>>,
    /// The command is safe to repeat (resume re-runs it without asking).
    #[serde(default)]
    pub idempotent: bool,
    /// Exit codes that count as success (default `[0]`).
    #[serde(default)]
    pub expect_exit: Option<Vec<u8>>,
}

/// An environment variable name.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct EnvName(#[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))] String);

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryDoc {
    /// Total attempts including the first (1 = no retry).
    pub attempts: u32,
    /// First backoff delay (default 1s).
    #[serde(default)]
    #[schemars(with = "Option<DurationText>")]
    pub initial: Option<String>,
    /// Largest backoff delay (default 30s).
    #[serde(default)]
    #[schemars(with = "Option<DurationText>")]
    pub max: Option<String>,
    /// Backoff multiplier (default 2.0).
    #[serde(default)]
    pub factor: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop starting new steps; the run fails.
    Abort,
    /// Record the failure and carry on; dependants still run.
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum When {
    Incident,
    Drill,
    Always,
}

/// Run mode: a real incident or a rehearsal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Incident,
    Drill,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Incident => "incident",
            Mode::Drill => "drill",
        }
    }
}

impl When {
    pub fn applies(self, mode: Mode) -> bool {
        matches!(
            (self, mode),
            (When::Always, _) | (When::Incident, Mode::Incident) | (When::Drill, Mode::Drill)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            When::Incident => "incident",
            When::Drill => "drill",
            When::Always => "always",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 1,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            factor: 2.0,
        }
    }
}

impl Retry {
    /// Backoff before attempt `n` (1-based, n >= 2), with full jitter in
    /// [d/2, d] so retries from parallel steps don't synchronise.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(2) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let jittered = base * (0.5 + fastrand::f64() * 0.5);
        Duration::from_secs_f64(jittered)
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub default: Option<serde_json::Value>,
    pub description: Option<String>,
    pub required: bool,
    pub secret: bool,
    /// What values it takes: declared with `type:`, else inferred from
    /// the default; `--param` values are checked against it before a run.
    pub ty: super::params::ParamType,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub action: String,
    /// The `with` mapping as written (located, expressions unresolved).
    pub with: Node,
    pub needs: Vec<(String, Span)>,
    pub timeout: Option<Duration>,
    pub retry: Retry,
    pub on_failure: OnFailure,
    pub when: When,
    /// Dotted environment references; a missing one skips the step.
    pub skip_unless: Vec<(String, Span)>,
    pub description: Option<String>,
    /// `proves_recovery:` as written; `None` defers to the action kind.
    pub proves_recovery: Option<bool>,
    pub span: Span,
    pub id_span: Span,
    pub action_span: Span,
}

#[derive(Debug, Clone)]
pub struct Runbook {
    pub name: String,
    pub description: Option<String>,
    pub rto: Option<Duration>,
    pub rpo: Option<Duration>,
    pub params: Vec<Param>,
    pub steps: Vec<Step>,
    pub file: Arc<SourceFile>,
    /// SHA-256 of the file's bytes: resume refuses a changed runbook.
    pub content_hash: String,
    /// Step id -> index in `steps` (the first step with that id), so that
    /// lookups during a run are O(1), not a scan per step.
    pub index: std::collections::HashMap<String, usize>,
}

impl Runbook {
    /// Builds the step index; call after `steps` is final.
    pub fn index_steps(steps: &[Step]) -> std::collections::HashMap<String, usize> {
        let mut m = std::collections::HashMap::with_capacity(steps.len());
        for (i, s) in steps.iter().enumerate() {
            m.entry(s.id.clone()).or_insert(i);
        }
        m
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.index.get(id).map(|i| &self.steps[*i])
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
}
