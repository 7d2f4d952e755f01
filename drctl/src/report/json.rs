//! The report's facts as JSON, for tooling: the same facts as the
//! Markdown and HTML (one [`Report`] feeds all three), with the evidence
//! block as an object that `drctl report verify` reads back. Serialized
//! straight from borrowed facts (no intermediate `Value` tree), so its
//! memory is the view plus the text.

use serde::ser::SerializeSeq as _;
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::{evidence, facts, trend, Format, Inputs, Report};
use crate::engine::view::{ApprovalView, NoteView, ResumeView, RunView, StepView};
use crate::journal::{format_ms, ErrorInfo, FileRef, RunOptions, StepStatus};
use crate::measure::Measurements;
use crate::runbook::Mode;

#[derive(Serialize)]
struct Journal<'a> {
    records: usize,
    head: &'a str,
    torn_tail_bytes: usize,
    drctl_version: &'a str,
}

/// The steps, each serialized as [`StepView`] serializes (the same keys
/// in the same order; a test holds them equal), but with inputs that a
/// compact fold kept as text parsed back one step at a time.
struct Steps<'a>(&'a [StepView]);

impl Serialize for Steps<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.0.len()))?;
        for s in self.0 {
            seq.serialize_element(&JsonStep::of(s))?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct JsonStep<'a> {
    id: &'a str,
    action: &'a str,
    status: StepStatus,
    inputs: StepInputs<'a>,
    outputs: &'a serde_json::Map<String, Value>,
    error: &'a Option<ErrorInfo>,
    attempts: u32,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
    duration_ms: Option<u64>,
    skip_reason: &'a Option<String>,
    attempt_failures: &'a [(u32, ErrorInfo)],
    starts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: &'a Option<Value>,
}

impl<'a> JsonStep<'a> {
    fn of(s: &'a StepView) -> JsonStep<'a> {
        JsonStep {
            id: &s.id,
            action: &s.action,
            status: s.status,
            inputs: StepInputs(s),
            outputs: &s.outputs,
            error: &s.error,
            attempts: s.attempts,
            started_ms: s.started_ms,
            finished_ms: s.finished_ms,
            duration_ms: s.duration_ms,
            skip_reason: &s.skip_reason,
            attempt_failures: &s.attempt_failures,
            starts: s.starts,
            checkpoint: &s.checkpoint,
        }
    }
}

struct StepInputs<'a>(&'a StepView);

impl Serialize for StepInputs<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match &self.0.inputs_json {
            // Text the fold wrote from a `Value`: parsing it gives that
            // `Value` back (`float_roundtrip`), so the bytes are the same.
            Some(text) => serde_json::from_str::<Value>(text)
                .map_err(serde::ser::Error::custom)?
                .serialize(ser),
            None => self.0.inputs.serialize(ser),
        }
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    run_id: &'a str,
    runbook: &'a FileRef,
    environment: &'a Option<FileRef>,
    mode: Mode,
    operator: &'a str,
    host: &'a str,
    status: &'static str,
    reason: &'a Option<String>,
    started: String,
    finished: Option<String>,
    total_duration_ms: u64,
    source_region: &'a Option<String>,
    target_region: &'a Option<String>,
    options: &'a RunOptions,
    measurements: &'a Option<Measurements>,
    steps: Steps<'a>,
    critical_path: Vec<String>,
    approvals: &'a [ApprovalView],
    decisions: Vec<facts::Decision>,
    failback_discarded: Vec<facts::Discarded>,
    dns_servers: Vec<facts::DnsServer>,
    capacity: Vec<facts::Capacity>,
    notes: &'a [NoteView],
    resumes: &'a [ResumeView],
    trend: &'a [trend::TrendPoint],
    journal: Journal<'a>,
    evidence: &'a evidence::Evidence,
}

fn of<'a>(r: &'a Report<'a>) -> JsonReport<'a> {
    let view = r.view;
    JsonReport {
        run_id: &view.run_id,
        runbook: &view.runbook,
        environment: &view.environment,
        mode: view.mode,
        operator: &view.operator,
        host: &view.host,
        status: view.status_text(),
        reason: &view.reason,
        started: format_ms(view.started_ms),
        finished: view.finished_ms.map(format_ms),
        total_duration_ms: view.last_ts_ms().saturating_sub(view.started_ms),
        source_region: &view.source_region,
        target_region: &view.target_region,
        options: &view.options,
        measurements: &r.m,
        steps: Steps(&view.steps),
        critical_path: facts::critical_path(
            view,
            r.m.as_ref().and_then(|m| m.recovery_step.as_deref()),
        ),
        approvals: &view.approvals,
        decisions: facts::decisions(view),
        failback_discarded: facts::discarded(view),
        dns_servers: facts::dns_servers(view),
        capacity: facts::capacity(view),
        notes: &view.notes,
        resumes: &view.resumes,
        trend: &r.inputs.trend,
        journal: Journal {
            records: view.records,
            head: &view.head,
            torn_tail_bytes: view.torn_tail,
            drctl_version: &view.drctl_version,
        },
        evidence: &r.evidence,
    }
}

/// The JSON value of a run's report (no trend, no signature).
pub fn json(view: &RunView) -> Value {
    let inputs = Inputs::plain(Format::Json);
    let r = Report::new(view, &inputs);
    serde_json::to_value(of(&r)).unwrap_or(Value::Null)
}

/// Writes the JSON text as it is serialized (pretty, deterministic:
/// verify compares it byte for byte); 26 MB for 100,000 records, never
/// held whole.
pub fn write(r: &Report<'_>, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, &of(r)).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::view::{fold_bytes, Folder, Inputs as Kept};
    use crate::journal::{self, Event};

    /// A journal with inputs of every JSON kind, a checkpoint, a retried
    /// attempt and a skip.
    fn journal() -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = journal::GENESIS.to_string();
        let events = vec![
            crate::bench::report::run_started("json-steps"),
            Event::StepStarted {
                step: "a".into(),
                action: "exec".into(),
                inputs: serde_json::json!({"n": 1.5e-7, "big": u64::MAX, "neg": -3, "s": "ü\"<", "l": [null, true, {"z": 1, "a": 2}]}),
            },
            Event::StepCheckpoint {
                step: "a".into(),
                data: serde_json::json!({"at": 1}),
            },
            Event::StepAttemptFailed {
                step: "a".into(),
                attempt: 1,
                error: journal::ErrorInfo {
                    message: "refused".into(),
                    hint: None,
                    kind: journal::FailureKind::Failed,
                },
                retry_in_ms: 5,
            },
            Event::StepFinished {
                step: "a".into(),
                status: StepStatus::Succeeded,
                outputs: serde_json::Map::new(),
                error: None,
                attempts: 2,
                duration_ms: 9,
            },
            Event::StepStarted {
                step: "b".into(),
                action: "http.check".into(),
                inputs: serde_json::json!({"expect_failure": true}),
            },
            Event::StepSkipped {
                step: "c".into(),
                reason: "when: production".into(),
            },
        ];
        for (seq, e) in events.into_iter().enumerate() {
            let (rec, line) = journal::encode(seq as u64, &prev, e).expect("encode");
            out.extend_from_slice(&line);
            out.push(b'\n');
            prev = rec.hash;
        }
        out
    }

    /// The report's steps are the view's steps as serde writes them, and
    /// a compact fold prints the same inputs as a full one: the JSON
    /// report's bytes did not change with the compact form.
    #[test]
    fn steps_serialize_as_the_view_does_from_compact_inputs() {
        let bytes = journal();
        let full = fold_bytes(&bytes).expect("folds");
        let mut f = Folder::keeping(Kept::Compact);
        let torn = f.feed(&bytes).expect("feeds");
        let compact = f.finish(torn).expect("folds");
        assert!(compact.steps[0].inputs.is_null() && compact.steps[0].inputs_json.is_some());
        // The legacy proof check keeps its `Value`.
        assert_eq!(compact.steps[1].inputs, full.steps[1].inputs);
        let want = serde_json::to_string_pretty(&full.steps).expect("view");
        assert_eq!(
            serde_json::to_string_pretty(&Steps(&full.steps)).expect("full"),
            want
        );
        assert_eq!(
            serde_json::to_string_pretty(&Steps(&compact.steps)).expect("compact"),
            want
        );
        let inputs = Inputs::plain(Format::Json);
        assert_eq!(
            super::super::render(&compact, &inputs),
            super::super::render(&full, &inputs)
        );
    }
}
