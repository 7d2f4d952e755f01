//! The report's facts as JSON, for tooling: the same facts as the
//! Markdown and HTML (one [`Report`] feeds all three), with the evidence
//! block as an object that `drctl report verify` reads back.

use serde_json::{json, Value};

use super::{facts, Format, Inputs, Report};
use crate::engine::view::RunView;
use crate::journal::format_ms;

/// The JSON value of a run's report (no trend, no signature).
pub fn json(view: &RunView) -> Value {
    let inputs = Inputs::plain(Format::Json);
    value(&Report::new(view, &inputs))
}

pub fn value(r: &Report<'_>) -> Value {
    let view = r.view;
    let measurements =
        r.m.as_ref()
            .map(|m| serde_json::to_value(m).unwrap_or(Value::Null));
    let m = r.m.as_ref();
    let critical = facts::critical_path(view, m.and_then(|m| m.recovery_step.as_deref()));
    json!({
        "run_id": view.run_id,
        "runbook": view.runbook,
        "environment": view.environment,
        "mode": view.mode,
        "operator": view.operator,
        "host": view.host,
        "status": view.status_text(),
        "reason": view.reason,
        "started": format_ms(view.started_ms),
        "finished": view.finished_ms.map(format_ms),
        "total_duration_ms": view.last_ts_ms().saturating_sub(view.started_ms),
        "source_region": view.source_region,
        "target_region": view.target_region,
        "options": view.options,
        "measurements": measurements,
        "steps": view.steps,
        "critical_path": critical,
        "approvals": view.approvals,
        "decisions": facts::decisions(view),
        "failback_discarded": facts::discarded(view),
        "dns_servers": facts::dns_servers(view),
        "capacity": facts::capacity(view),
        "notes": view.notes,
        "resumes": view.resumes,
        "trend": r.inputs.trend,
        "journal": {"records": view.records, "head": view.head, "torn_tail_bytes": view.torn_tail, "drctl_version": view.drctl_version},
        "evidence": r.evidence,
    })
}

/// The JSON text (pretty, deterministic: verify compares it byte for byte).
pub fn render(r: &Report<'_>) -> String {
    serde_json::to_string_pretty(&value(r)).unwrap_or_default()
}
