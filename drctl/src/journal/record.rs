//! What a journal record says: the record envelope ([`Record`]) and its
//! events, with the types they carry (step and run status, failure kinds,
//! run options). This is the journal's schema: a change here changes the
//! bytes of every journal, so it is kept apart from how records are
//! written and verified.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileRef {
    pub name: String,
    pub path: String,
    pub sha256: String,
}

/// Run-wide switches an operator set explicitly; journaled at run start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunOptions {
    /// Promote even when the standby lags beyond the step's limit.
    #[serde(default)]
    pub accept_data_loss: bool,
    /// Override split-brain and similar guards.
    #[serde(default)]
    pub force: bool,
    /// A human is at a terminal and can answer prompts.
    #[serde(default, skip_serializing)]
    pub interactive: bool,
    /// An isolated drill (`mode: isolated`): every DNS-changing step
    /// refuses a record not declared `drill: true`, so the rehearsal cannot
    /// touch production names. Journaled in `run_started` (absent when
    /// false, so older journals keep their bytes), so a resume keeps it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub kind: FailureKind,
}

/// How a step or attempt failed. Journaled as a snake_case string
/// (`"failed"`, `"timeout"`, ...), the same bytes the journal held when
/// this was a free-form string, so older journals verify and fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The action ran and the system did not reach the desired state.
    Failed,
    /// The attempt ran out of its `timeout`.
    Timeout,
    /// A guard refused to act (split brain, too much lag): not retried.
    Refused,
    /// An approval step is waiting for `drctl approve`: the run parks.
    AwaitingApproval,
    /// The step was cut off by the run stopping.
    Interrupted,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Failed => "failed",
            FailureKind::Timeout => "timeout",
            FailureKind::Refused => "refused",
            FailureKind::AwaitingApproval => "awaiting_approval",
            FailureKind::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// One run_started per journal: boxing it would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    RunStarted {
        run_id: String,
        runbook: FileRef,
        #[serde(default)]
        environment: Option<FileRef>,
        mode: crate::runbook::model::Mode,
        operator: String,
        host: String,
        pid: u32,
        params: Map<String, Value>,
        #[serde(default)]
        target_region: Option<String>,
        #[serde(default)]
        source_region: Option<String>,
        options: RunOptions,
        /// Declared failure time (incident start or injected failure), ms.
        #[serde(default)]
        failed_at_ms: Option<u64>,
        /// The runbook's targets, so reports need nothing but the journal.
        #[serde(default)]
        rto_target_ms: Option<u64>,
        #[serde(default)]
        rpo_target_ms: Option<u64>,
        drctl_version: String,
        /// The lease the run took: exclusive when it may change something.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_mode: Option<crate::store::LeaseMode>,
        /// Ids of the steps whose success proves recovery (decided from the
        /// runbook at run start), so RTO never depends on the runbook file
        /// a report is computed with. Absent in older journals.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proofs: Option<Vec<String>>,
    },
    RunResumed {
        operator: String,
        host: String,
        pid: u32,
        #[serde(default)]
        runbook_changed: bool,
        #[serde(default)]
        decisions: BTreeMap<String, String>,
        /// Bytes of a torn final record (a write cut by a crash) that were
        /// truncated before this record was appended.
        #[serde(default, skip_serializing_if = "is_zero")]
        repaired_tail_bytes: u64,
        /// Content hash of a changed environment file the operator
        /// accepted (`--allow-env-change`): the run is bound to it from here.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment_sha256: Option<String>,
        /// `--param` values given to resume (typed), replacing the run's.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        params: Map<String, Value>,
        /// `--accept-data-loss` given to resume: in effect from here on.
        #[serde(default, skip_serializing_if = "is_false")]
        accept_data_loss: bool,
        /// `--force` given to resume: in effect from here on.
        #[serde(default, skip_serializing_if = "is_false")]
        force: bool,
        /// `--yes`: the operator resumed without being asked anything.
        #[serde(default, skip_serializing_if = "is_false")]
        yes: bool,
        /// The recovery proofs of a changed runbook (`--allow-runbook-change`):
        /// they replace the run's from here on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proofs: Option<Vec<String>>,
    },
    StepStarted {
        step: String,
        action: String,
        inputs: Value,
    },
    StepAttemptFailed {
        step: String,
        attempt: u32,
        error: ErrorInfo,
        retry_in_ms: u64,
    },
    StepFinished {
        step: String,
        status: StepStatus,
        #[serde(default)]
        outputs: Map<String, Value>,
        #[serde(default)]
        error: Option<ErrorInfo>,
        attempts: u32,
        duration_ms: u64,
    },
    StepSkipped {
        step: String,
        reason: String,
    },
    /// An action's pre-effect state (e.g. the DNS values before a switch),
    /// saved through the engine so that a resumed step finds it.
    StepCheckpoint {
        step: String,
        data: Value,
    },
    Approval {
        step: String,
        by: String,
        at: String,
        via: String,
    },
    Note {
        #[serde(default)]
        step: Option<String>,
        message: String,
        #[serde(default)]
        data: Value,
    },
    RunFinished {
        status: RunStatus,
        #[serde(default)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Interrupted,
    WaitingApproval,
    Aborted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::WaitingApproval => "waiting-approval",
            RunStatus::Aborted => "aborted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub seq: u64,
    pub ts: String,
    pub ts_ms: u64,
    pub prev: String,
    #[serde(flatten)]
    pub event: Event,
    /// SHA-256 of the record's canonical JSON without this field; the next
    /// record's `prev`. Protects the last record, which nothing follows.
    #[serde(default)]
    pub hash: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The enum writes the strings the journal always held, and a line
    /// written when `kind` was a plain string reads back as the enum.
    #[test]
    fn failure_kinds_keep_their_journal_spelling() {
        let all = [
            (FailureKind::Failed, "failed"),
            (FailureKind::Timeout, "timeout"),
            (FailureKind::Refused, "refused"),
            (FailureKind::AwaitingApproval, "awaiting_approval"),
            (FailureKind::Interrupted, "interrupted"),
        ];
        for (kind, text) in all {
            let info = ErrorInfo {
                message: "m".into(),
                hint: None,
                kind,
            };
            assert_eq!(
                serde_json::to_string(&info).unwrap(),
                format!(r#"{{"message":"m","kind":"{text}"}}"#)
            );
            let old: ErrorInfo =
                serde_json::from_str(&format!(r#"{{"kind":"{text}","message":"m"}}"#)).unwrap();
            assert_eq!(old.kind, kind);
            assert_eq!(kind.to_string(), text);
        }
    }
}
