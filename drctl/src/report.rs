//! Post-incident reports, rendered from the journal alone.
//!
//! A report must be reproducible months later from the evidence, so it reads
//! nothing but the verified journal (via [`RunView`]) and quotes the chain
//! head that proves which journal it came from.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::duration::format_duration;
use crate::engine::view::RunView;
use crate::journal::{format_ms, StepStatus};

fn dur_ms(ms: u64) -> String {
    format_duration(std::time::Duration::from_millis(ms))
}

fn offset(view: &RunView, ts: Option<u64>) -> String {
    match ts {
        Some(t) => format!("+{}", dur_ms(t.saturating_sub(view.started_ms))),
        None => "-".into(),
    }
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Running => "interrupted",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    }
}

/// Markdown for humans (and for pasting into an incident doc).
pub fn markdown(view: &RunView) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# drctl run report: {}", view.run_id);
    let _ = writeln!(o);
    let _ = writeln!(o, "| | |");
    let _ = writeln!(o, "|---|---|");
    let _ = writeln!(
        o,
        "| Runbook | `{}` ({}, sha256 {}) |",
        view.runbook.name,
        view.runbook.path,
        short_hash(&view.runbook.sha256)
    );
    if let Some(e) = &view.environment {
        let _ = writeln!(o, "| Environment | `{}` ({}) |", e.name, e.path);
    }
    let _ = writeln!(o, "| Mode | {} |", view.mode.as_str());
    if let (Some(s), Some(t)) = (&view.source_region, &view.target_region) {
        let _ = writeln!(o, "| Regions | {s} -> {t} |");
    }
    let _ = writeln!(o, "| Operator | {} on {} |", view.operator, view.host);
    let _ = writeln!(
        o,
        "| Status | **{}**{} |",
        view.status_text(),
        view.reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "| Started | {} |", format_ms(view.started_ms));
    if let Some(f) = view.finished_ms {
        let _ = writeln!(o, "| Finished | {} |", format_ms(f));
    }
    let _ = writeln!(
        o,
        "| Total duration | {} |",
        dur_ms(view.last_ts_ms().saturating_sub(view.started_ms))
    );
    if let Some(fa) = view.failed_at_ms {
        let _ = writeln!(o, "| Declared failure time | {} |", format_ms(fa));
    }
    if view.options.accept_data_loss || view.options.force {
        let _ = writeln!(
            o,
            "| Overrides | {}{} |",
            if view.options.accept_data_loss {
                "--accept-data-loss "
            } else {
                ""
            },
            if view.options.force { "--force" } else { "" }
        );
    }
    let _ = writeln!(o);

    if let Some(m) = crate::measure::from_view(view) {
        o.push_str(&crate::measure::markdown(&m));
    }

    let dns: Vec<_> = view
        .steps
        .iter()
        .filter(|s| s.action == "dns.switch" && s.outputs.contains_key("convergence_ms"))
        .collect();
    if !dns.is_empty() {
        let _ = writeln!(o, "## DNS");
        let _ = writeln!(o);
        for s in dns {
            // A time the step did not report is "unknown", never 0.
            let num = |k: &str| {
                s.outputs
                    .get(k)
                    .and_then(|v| v.as_f64())
                    .map_or_else(|| "unknown".to_string(), |v| format!("{v:.1} ms"))
            };
            let _ = writeln!(
                o,
                "- `{}`: {} convergence {} (provider API {}); previous {} -> now {}",
                s.id,
                if s.outputs.get("changed") == Some(&serde_json::Value::Bool(true)) {
                    "switched;"
                } else {
                    "already in place;"
                },
                num("convergence_ms"),
                num("api_ms"),
                s.outputs
                    .get("previous")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                s.outputs
                    .get("desired")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Timeline");
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| Step | Action | Status | Start | End | Duration | Attempts |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for s in &view.steps {
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            s.id,
            s.action,
            status_word(s.status),
            offset(view, s.started_ms),
            offset(view, s.finished_ms),
            s.duration_ms.map(dur_ms).unwrap_or_else(|| "-".into()),
            if s.attempts == 0 {
                "-".to_string()
            } else {
                s.attempts.to_string()
            },
        );
    }
    let _ = writeln!(o);

    for g in view.steps.iter().filter(|s| {
        s.action == "approval" && s.outputs.get("skipped") == Some(&serde_json::Value::Bool(true))
    }) {
        let _ = writeln!(o, "Approval gate `{}` was skipped (drill mode).\n", g.id);
    }
    let skipped: Vec<_> = view
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Skipped)
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(o, "## Skipped steps");
        let _ = writeln!(o);
        for s in skipped {
            let _ = writeln!(
                o,
                "- `{}`: {}",
                s.id,
                s.skip_reason.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(o);
    }

    if !view.approvals.is_empty() {
        let _ = writeln!(o, "## Approvals");
        let _ = writeln!(o);
        for a in &view.approvals {
            let _ = writeln!(
                o,
                "- `{}` approved by **{}** at {} (via {})",
                a.step, a.by, a.at, a.via
            );
        }
        let _ = writeln!(o);
    }

    let errors: Vec<_> = view
        .steps
        .iter()
        .filter(|s| s.error.is_some() || !s.attempt_failures.is_empty())
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(o, "## Errors");
        let _ = writeln!(o);
        for s in errors {
            for (n, e) in &s.attempt_failures {
                let _ = writeln!(
                    o,
                    "- `{}` attempt {n} (retried): {}",
                    s.id,
                    one_line(&e.message)
                );
            }
            if let Some(e) = &s.error {
                let _ = writeln!(o, "- `{}` ({}): {}", s.id, e.kind, one_line(&e.message));
                if let Some(h) = &e.hint {
                    let _ = writeln!(o, "  - hint: {h}");
                }
            }
        }
        let _ = writeln!(o);
    }

    if !view.resumes.is_empty() || !view.notes.is_empty() {
        let _ = writeln!(o, "## Events");
        let _ = writeln!(o);
        for r in &view.resumes {
            let _ = writeln!(
                o,
                "- {} resumed by {}{}",
                format_ms(r.ts_ms),
                r.operator,
                if r.runbook_changed {
                    " (runbook had changed: --allow-runbook-change)"
                } else {
                    ""
                }
            );
            for (step, d) in &r.decisions {
                let _ = writeln!(o, "  - `{step}`: {d}");
            }
        }
        for n in &view.notes {
            let _ = writeln!(
                o,
                "- {} {}{}",
                format_ms(n.ts_ms),
                n.step
                    .as_ref()
                    .map(|s| format!("`{s}`: "))
                    .unwrap_or_default(),
                n.message
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Evidence");
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Journal: {} records, hash chain verified; head `{}`.",
        view.records, view.head
    );
    if view.torn_tail > 0 {
        let _ = writeln!(
            o,
            "A torn final write of {} bytes was ignored (never acknowledged).",
            view.torn_tail
        );
    }
    o
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn short_hash(h: &str) -> String {
    h.chars().take(12).collect()
}

/// The same facts as JSON, for tooling.
pub fn json(view: &RunView) -> Value {
    let measurements =
        crate::measure::from_view(view).map(|m| serde_json::to_value(m).unwrap_or(Value::Null));
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
        "approvals": view.approvals,
        "notes": view.notes,
        "resumes": view.resumes,
        "journal": {"records": view.records, "head": view.head, "torn_tail_bytes": view.torn_tail},
    })
}
