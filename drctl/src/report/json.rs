//! The report's facts as JSON, for tooling: the same facts as the
//! Markdown and HTML (one [`Report`] feeds all three), with the evidence
//! block as an object that `drctl report verify` reads back. Serialized
//! straight from borrowed facts (no intermediate `Value` tree), so its
//! memory is the view plus the text.

use serde::Serialize;
use serde_json::Value;

use super::{evidence, facts, trend, Format, Inputs, Report};
use crate::engine::view::{ApprovalView, NoteView, ResumeView, RunView, StepView};
use crate::journal::{format_ms, FileRef, RunOptions};
use crate::measure::Measurements;
use crate::runbook::Mode;

#[derive(Serialize)]
struct Journal<'a> {
    records: usize,
    head: &'a str,
    torn_tail_bytes: usize,
    drctl_version: &'a str,
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
    steps: &'a [StepView],
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
        steps: &view.steps,
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

/// The JSON text (pretty, deterministic: verify compares it byte for byte).
pub fn render(r: &Report<'_>) -> String {
    serde_json::to_string_pretty(&of(r)).unwrap_or_default()
}
