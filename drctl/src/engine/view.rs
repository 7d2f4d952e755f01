//! A run as the journal tells it. `status`, `report` and `resume` all read
//! this fold of verified records and nothing else, so they cannot disagree.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::journal::RunOptions;
use crate::journal::{
    ErrorInfo, Event, FileRef, JournalError, Record, RunStatus, StepStatus, Verified, Verifier,
};
use crate::runbook::Mode;

#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub id: String,
    pub action: String,
    pub status: StepStatus,
    pub inputs: Value,
    pub outputs: Map<String, Value>,
    pub error: Option<ErrorInfo>,
    pub attempts: u32,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub skip_reason: Option<String>,
    pub attempt_failures: Vec<(u32, ErrorInfo)>,
    /// How many times the step was started (more than one after a resume).
    pub starts: u32,
    /// The latest `step_checkpoint` the step's action saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
    /// What the step did over time (attempts, retry waits, a start cut
    /// off by a crash), in journal order: what the report's timeline draws.
    #[serde(skip)]
    pub spans: Vec<Span>,
    /// The inputs as compact JSON text, kept instead of `inputs` by a
    /// [`Inputs::Compact`] fold (the JSON report prints them): a one-key
    /// object is ~30 bytes as text and ~700 as a `Value` tree.
    #[serde(skip)]
    pub inputs_json: Option<Box<str>>,
}

/// One stretch of a step's life on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start_ms: u64,
    /// `None` while the stretch is open (the step is running).
    pub end_ms: Option<u64>,
    pub kind: SpanKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// An attempt, open or ended with the step's final status.
    Attempt,
    /// An attempt that failed and was retried.
    FailedAttempt,
    /// The pause before the next attempt (`retry_in_ms`, as journaled).
    RetryWait,
    /// A start whose process stopped (crash, kill) before the step ended:
    /// drawn up to the resume, because when it stopped is not journaled.
    Interrupted,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApprovalView {
    pub step: String,
    pub by: String,
    pub at: String,
    pub via: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NoteView {
    pub ts_ms: u64,
    pub step: Option<String>,
    pub message: String,
    pub data: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResumeView {
    pub ts_ms: u64,
    pub operator: String,
    pub runbook_changed: bool,
    pub decisions: BTreeMap<String, String>,
    /// `--accept-data-loss`, `--force`, `--yes` given to this resume.
    #[serde(default)]
    pub accept_data_loss: bool,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub yes: bool,
    /// A changed environment file accepted (`--allow-env-change`).
    #[serde(default)]
    pub environment_changed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub runbook: FileRef,
    pub environment: Option<FileRef>,
    /// The drctl that started the run (from `run_started`).
    pub drctl_version: String,
    pub mode: Mode,
    pub operator: String,
    pub host: String,
    pub pid: u32,
    pub params: Map<String, Value>,
    pub target_region: Option<String>,
    pub source_region: Option<String>,
    pub options: RunOptions,
    pub failed_at_ms: Option<u64>,
    pub rto_target_ms: Option<u64>,
    pub rpo_target_ms: Option<u64>,
    /// Exclusive when the run may change something (journals from before
    /// lease modes say nothing: treat them as exclusive).
    pub lease_mode: Option<crate::store::LeaseMode>,
    /// Steps whose success proves recovery, as journaled at run start (or
    /// by a resume with a changed runbook); `None` in older journals.
    pub proofs: Option<Vec<String>>,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// `None` while the journal has no closing record after the last
    /// start or resume: running, or crashed.
    pub status: Option<RunStatus>,
    pub reason: Option<String>,
    /// In first-start order.
    pub steps: Vec<StepView>,
    pub approvals: Vec<ApprovalView>,
    pub notes: Vec<NoteView>,
    pub resumes: Vec<ResumeView>,
    pub head: String,
    pub records: usize,
    pub torn_tail: usize,
    /// Step id -> index in `steps`, so lookups stay O(1) on long runs.
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl RunView {
    pub fn step(&self, id: &str) -> Option<&StepView> {
        self.index.get(id).map(|i| &self.steps[*i])
    }

    pub fn status_text(&self) -> &'static str {
        self.status.map_or("incomplete", RunStatus::as_str)
    }

    /// The journaled steps whose success proves recovery, in runbook order.
    /// Journals from before the decision was journaled fall back to the old
    /// list of check actions, minus checks that expect a failure (they
    /// prove the outage), among the steps the journal mentions.
    pub fn proof_steps(&self) -> Vec<&StepView> {
        match &self.proofs {
            Some(ids) => ids.iter().filter_map(|id| self.step(id)).collect(),
            None => self
                .steps
                .iter()
                .filter(|s| {
                    LEGACY_CHECK_ACTIONS.contains(&s.action.as_str())
                        && s.inputs.get("expect_failure") != Some(&Value::Bool(true))
                })
                .collect(),
        }
    }

    /// Proof step ids the journal never mentions (never started, never
    /// skipped: the run stopped before reaching them).
    pub fn unreached_proofs(&self) -> Vec<&str> {
        self.proofs
            .iter()
            .flatten()
            .filter(|id| self.step(id).is_none())
            .map(String::as_str)
            .collect()
    }

    pub fn last_ts_ms(&self) -> u64 {
        self.steps
            .iter()
            .filter_map(|s| s.finished_ms)
            .chain(self.finished_ms)
            .max()
            .unwrap_or(self.started_ms)
    }
}

/// Actions whose success counted as recovery before the decision was
/// journaled per run (see [`RunView::proof_steps`]).
const LEGACY_CHECK_ACTIONS: &[&str] = &[
    "http.check",
    "checks.run",
    "dns.check",
    "postgres.query",
    "kube.check",
    "immudb.verify",
];

impl StepView {
    /// Skipped by design (`when` excludes the mode, `skip_unless` names a
    /// component the environment lacks), not because something failed.
    /// The reason prefixes are the engine's own (resume reads them too).
    pub fn skipped_by_design(&self) -> bool {
        self.status == StepStatus::Skipped
            && self
                .skip_reason
                .as_deref()
                .is_some_and(|r| r.starts_with("when:") || r.starts_with("skip_unless:"))
    }
}

fn step_mut<'a>(view: &'a mut RunView, id: &str, action: &str) -> &'a mut StepView {
    if let Some(i) = view.index.get(id) {
        return &mut view.steps[*i];
    }
    view.index.insert(id.to_string(), view.steps.len());
    let steps = &mut view.steps;
    steps.push(StepView {
        id: id.to_string(),
        action: action.to_string(),
        status: StepStatus::Pending,
        inputs: Value::Null,
        outputs: Map::new(),
        error: None,
        attempts: 0,
        started_ms: None,
        finished_ms: None,
        duration_ms: None,
        skip_reason: None,
        attempt_failures: Vec::new(),
        starts: 0,
        checkpoint: None,
        spans: Vec::new(),
        inputs_json: None,
    });
    let last = steps.len() - 1;
    &mut steps[last]
}

/// Folds verified records into a view. `verify` guarantees a start record.
pub fn fold(v: &Verified) -> Option<RunView> {
    let mut view = RunView::start(v.records.first()?)?;
    for rec in &v.records[1..] {
        view.apply(rec);
    }
    view.head = v.head.clone();
    view.torn_tail = v.torn_tail;
    Some(view)
}

/// Verifies journal bytes and folds them in one pass, holding one record
/// at a time: what readers that need only the view (status, reports,
/// listings) use, so their memory does not grow with the journal.
pub fn fold_bytes(bytes: &[u8]) -> Result<RunView, JournalError> {
    let mut f = Folder::default();
    let torn = f.feed(bytes)?;
    f.finish(torn)
}

/// Verifies and folds a journal fed in pieces that each end at a record
/// boundary (the store's bounded chunks): the same view as [`fold_bytes`]
/// of the whole, holding one chunk and one record at a time.
#[derive(Default)]
pub struct Folder {
    verifier: Verifier,
    view: Option<RunView>,
    inputs: Inputs,
}

/// What a fold keeps of each step's inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Inputs {
    /// As `Value`s (status, resume, drills).
    #[default]
    Full,
    /// None: for readers that never show them (Markdown and HTML
    /// reports), which then hold per step only what they print.
    Dropped,
    /// As compact JSON text in [`StepView::inputs_json`] (the JSON
    /// report), except for the legacy check actions, whose `Value` stays
    /// because [`RunView::proof_steps`] reads it in old journals.
    Compact,
}

impl Folder {
    /// With `lean`, [`Inputs::Dropped`]; else [`Inputs::Full`].
    pub fn new(lean: bool) -> Folder {
        Folder::keeping(if lean { Inputs::Dropped } else { Inputs::Full })
    }

    pub fn keeping(inputs: Inputs) -> Folder {
        Folder {
            inputs,
            ..Default::default()
        }
    }

    /// Folds the complete records of `bytes`; returns the length of an
    /// incomplete final line (not consumed).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, JournalError> {
        let (view, kept) = (&mut self.view, self.inputs);
        self.verifier.feed_each(bytes, |rec| {
            match view.as_mut() {
                Some(v) => v.apply(&rec),
                // The verifier refuses a first record that is not `run_started`.
                None => *view = RunView::start(&rec),
            }
            if kept == Inputs::Full {
                return;
            }
            if let (Some(v), Event::StepStarted { step, inputs, .. }) = (view.as_mut(), &rec.event)
            {
                if let Some(&i) = v.index.get(step) {
                    let s = &mut v.steps[i];
                    if kept == Inputs::Compact {
                        // Serializing a `Value` cannot fail (string keys).
                        s.inputs_json = serde_json::to_string(inputs)
                            .ok()
                            .map(String::into_boxed_str);
                        if LEGACY_CHECK_ACTIONS.contains(&s.action.as_str()) {
                            return;
                        }
                    }
                    s.inputs = Value::Null;
                }
            }
        })
    }

    /// The view, given the length of a torn final line that was ignored.
    pub fn finish(self, torn: usize) -> Result<RunView, JournalError> {
        let mut view = self.view.ok_or(JournalError::NeverStarted)?;
        view.head = self.verifier.head().to_string();
        view.torn_tail = torn;
        Ok(view)
    }
}

impl RunView {
    /// The view after the `run_started` record alone.
    pub fn start(first: &Record) -> Option<RunView> {
        let Event::RunStarted {
            run_id,
            runbook,
            environment,
            mode,
            operator,
            host,
            pid,
            params,
            target_region,
            source_region,
            options,
            failed_at_ms,
            rto_target_ms,
            rpo_target_ms,
            lease_mode,
            proofs,
            drctl_version,
        } = &first.event
        else {
            return None;
        };
        let view = RunView {
            run_id: run_id.clone(),
            runbook: runbook.clone(),
            environment: environment.clone(),
            drctl_version: drctl_version.clone(),
            mode: *mode,
            operator: operator.clone(),
            host: host.clone(),
            pid: *pid,
            params: params.clone(),
            target_region: target_region.clone(),
            source_region: source_region.clone(),
            options: options.clone(),
            failed_at_ms: *failed_at_ms,
            rto_target_ms: *rto_target_ms,
            rpo_target_ms: *rpo_target_ms,
            lease_mode: *lease_mode,
            proofs: proofs.clone(),
            started_ms: first.ts_ms,
            finished_ms: None,
            status: None,
            reason: None,
            steps: Vec::new(),
            approvals: Vec::new(),
            notes: Vec::new(),
            resumes: Vec::new(),
            head: first.hash.clone(),
            records: 1,
            torn_tail: 0,
            index: HashMap::new(),
        };
        Some(view)
    }

    /// Applies one more verified record (in order): O(1) per record, so a
    /// follower can keep a view current from the new records alone.
    pub fn apply(&mut self, rec: &Record) {
        let view = self;
        view.records += 1;
        view.head = rec.hash.clone();
        match &rec.event {
            Event::RunStarted { .. } => {}
            Event::RunResumed {
                operator,
                runbook_changed,
                decisions,
                pid,
                host,
                environment_sha256,
                params,
                accept_data_loss,
                force,
                proofs,
                yes,
                ..
            } => {
                // A start still open when the run was resumed was cut off.
                for s in view.steps.iter_mut() {
                    if let Some(last) = s.spans.last_mut() {
                        if last.end_ms.is_none() {
                            last.end_ms = Some(rec.ts_ms);
                            last.kind = SpanKind::Interrupted;
                        }
                    }
                }
                if let Some(p) = proofs {
                    view.proofs = Some(p.clone());
                }
                if let (Some(env), Some(h)) = (view.environment.as_mut(), environment_sha256) {
                    // The operator accepted a changed environment file.
                    env.sha256 = h.clone();
                }
                // Resume's --param/--accept-data-loss/--force hold from here on.
                for (k, v) in params {
                    view.params.insert(k.clone(), v.clone());
                }
                view.options.accept_data_loss |= *accept_data_loss;
                view.options.force |= *force;
                view.status = None;
                view.reason = None;
                view.finished_ms = None;
                view.pid = *pid;
                view.host = host.clone();
                view.resumes.push(ResumeView {
                    ts_ms: rec.ts_ms,
                    operator: operator.clone(),
                    runbook_changed: *runbook_changed,
                    decisions: decisions.clone(),
                    accept_data_loss: *accept_data_loss,
                    force: *force,
                    yes: *yes,
                    environment_changed: environment_sha256.is_some(),
                });
            }
            Event::StepStarted {
                step,
                action,
                inputs,
            } => {
                let s = step_mut(view, step, action);
                // A step first journaled by a skip ("not started: the run
                // failed") got no action; a resume that starts it sets it,
                // and the earlier skip no longer describes it.
                s.action = action.clone();
                s.skip_reason = None;
                s.status = StepStatus::Running;
                s.inputs = inputs.clone();
                s.started_ms = Some(rec.ts_ms);
                s.finished_ms = None;
                s.error = None;
                s.starts += 1;
                s.spans.push(Span {
                    start_ms: rec.ts_ms,
                    end_ms: None,
                    kind: SpanKind::Attempt,
                });
            }
            Event::StepAttemptFailed {
                step,
                attempt,
                error,
                retry_in_ms,
            } => {
                let s = step_mut(view, step, "");
                s.attempt_failures.push((*attempt, error.clone()));
                if let Some(last) = s.spans.last_mut() {
                    if last.end_ms.is_none() {
                        last.end_ms = Some(rec.ts_ms);
                        last.kind = SpanKind::FailedAttempt;
                    }
                }
                let next = rec.ts_ms.saturating_add(*retry_in_ms);
                s.spans.push(Span {
                    start_ms: rec.ts_ms,
                    end_ms: Some(next),
                    kind: SpanKind::RetryWait,
                });
                s.spans.push(Span {
                    start_ms: next,
                    end_ms: None,
                    kind: SpanKind::Attempt,
                });
            }
            Event::StepFinished {
                step,
                status,
                outputs,
                error,
                attempts,
                duration_ms,
            } => {
                let s = step_mut(view, step, "");
                s.status = *status;
                s.outputs = outputs.clone();
                s.error = error.clone();
                s.attempts = *attempts;
                s.finished_ms = Some(rec.ts_ms);
                s.duration_ms = Some(*duration_ms);
                if let Some(last) = s.spans.last_mut() {
                    if last.end_ms.is_none() {
                        last.end_ms = Some(rec.ts_ms.max(last.start_ms));
                    }
                }
            }
            Event::StepCheckpoint { step, data } => {
                step_mut(view, step, "").checkpoint = Some(data.clone());
            }
            Event::StepSkipped { step, reason } => {
                let s = step_mut(view, step, "");
                s.status = StepStatus::Skipped;
                s.skip_reason = Some(reason.clone());
                s.finished_ms = Some(rec.ts_ms);
            }
            Event::Approval { step, by, at, via } => view.approvals.push(ApprovalView {
                step: step.clone(),
                by: by.clone(),
                at: at.clone(),
                via: via.clone(),
            }),
            Event::Note {
                step,
                message,
                data,
            } => view.notes.push(NoteView {
                ts_ms: rec.ts_ms,
                step: step.clone(),
                message: message.clone(),
                data: data.clone(),
            }),
            Event::RunFinished { status, reason } => {
                view.status = Some(*status);
                view.reason = reason.clone();
                view.finished_ms = Some(rec.ts_ms);
            }
        }
    }
}
