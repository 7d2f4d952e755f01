//! Post-incident reports, rendered from the journal alone.
//!
//! A report must be reproducible months later from the evidence, so it reads
//! nothing but the verified journal (via [`RunView`]) and, for a drill's
//! trend, the drill history in the state store; it quotes the chain head
//! that proves which journal it came from ([`evidence`]), and rendering
//! is deterministic, so `drctl report verify` can re-render and compare.
//!
//! Formats: Markdown (here; with `--postmortem` a postmortem skeleton,
//! [`postmortem`]), JSON ([`json`]), self-contained HTML ([`html`], with
//! SVG pictures from [`svg`]); comparisons of two runs in [`compare`].
//! Every cost is linear in the journal's records.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::format_duration;
use crate::engine::view::RunView;
use crate::journal::{format_ms, StepStatus};
use crate::measure::Measurements;

pub mod anchor;
pub mod compare;
pub mod evidence;
pub mod facts;
pub mod html;
pub mod json;
pub mod postmortem;
pub mod stream;
pub mod svg;
pub mod trend;

pub use json::json;

/// A report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Md,
    Html,
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Md => "md",
            Format::Html => "html",
            Format::Json => "json",
        }
    }
}

/// What a report is rendered with besides the journal: everything here is
/// recorded in the evidence block, so verify can render it again.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub format: Format,
    pub postmortem: bool,
    /// Drills of the same definition to show in the trend (0: none).
    pub trend_window: usize,
    /// Those drills, oldest first, ending with this run.
    pub trend: Vec<trend::TrendPoint>,
    /// The drill of the same runbook before this run (for the
    /// postmortem's slow steps), chosen by time so it stays the same.
    pub previous: Option<Previous>,
    pub signature: Option<evidence::Signature>,
    /// Where the journal head was anchored (`--anchor`).
    pub anchor: Option<anchor::Anchor>,
}

/// A previous drill's step durations.
#[derive(Debug, Clone, Serialize)]
pub struct Previous {
    pub run_id: String,
    pub steps: Vec<(String, u64)>,
}

impl Previous {
    pub fn of(view: &RunView) -> Previous {
        Previous {
            run_id: view.run_id.clone(),
            steps: view
                .steps
                .iter()
                .filter_map(|s| s.duration_ms.map(|d| (s.id.clone(), d)))
                .collect(),
        }
    }
}

impl Inputs {
    pub fn plain(format: Format) -> Inputs {
        Inputs {
            format,
            postmortem: false,
            trend_window: 0,
            trend: Vec::new(),
            previous: None,
            signature: None,
            anchor: None,
        }
    }
}

/// One run's facts, gathered once for any format.
pub struct Report<'a> {
    pub view: &'a RunView,
    pub m: Option<Measurements>,
    pub inputs: &'a Inputs,
    pub evidence: evidence::Evidence,
}

impl<'a> Report<'a> {
    pub fn new(view: &'a RunView, inputs: &'a Inputs) -> Report<'a> {
        Report {
            view,
            m: crate::measure::from_view(view),
            inputs,
            evidence: evidence::Evidence {
                run_id: view.run_id.clone(),
                records: view.records,
                head: view.head.clone(),
                run_drctl_version: view.drctl_version.clone(),
                rendered_by: env!("CARGO_PKG_VERSION").to_string(),
                format: inputs.format,
                postmortem: inputs.postmortem,
                trend_window: inputs.trend_window,
                signature: inputs.signature.clone(),
                anchor: inputs.anchor.clone(),
            },
        }
    }
}

/// Renders a run's report in the inputs' format into memory (`report
/// verify`, drills, tests): the bytes [`render_to`] writes.
pub fn render(view: &RunView, inputs: &Inputs) -> String {
    stream::to_string(|w| render_to(view, inputs, w))
}

/// Writes a run's report in the inputs' format as it is rendered: the
/// HTML page and the JSON document go out in pieces and are never held
/// whole (see [`stream`]). Give a buffered writer.
pub fn render_to(
    view: &RunView,
    inputs: &Inputs,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let r = Report::new(view, inputs);
    match inputs.format {
        Format::Md if inputs.postmortem => w.write_all(postmortem::markdown(&r).as_bytes()),
        Format::Md => w.write_all(markdown_of(&r).as_bytes()),
        Format::Html => html::write(&r, w),
        Format::Json => json::write(&r, w),
    }
}

pub(crate) fn dur_ms(ms: u64) -> String {
    format_duration(std::time::Duration::from_millis(ms))
}

/// Escapes text for HTML and SVG (element content and quoted attributes).
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Escapes a Markdown table cell (a `|` would split it).
pub(crate) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn offset(view: &RunView, ts: Option<u64>) -> String {
    match ts {
        Some(t) => format!("+{}", dur_ms(t.saturating_sub(view.started_ms))),
        None => "-".into(),
    }
}

pub(crate) fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Running => "interrupted",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    }
}

/// Markdown for humans with no trend and no signature (what a drill
/// stores when it has no history yet, and what tests read).
pub fn markdown(view: &RunView) -> String {
    render(view, &Inputs::plain(Format::Md))
}

/// Markdown for humans (and for pasting into an incident doc).
fn markdown_of(r: &Report<'_>) -> String {
    let view = r.view;
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

    if let Some(m) = &r.m {
        o.push_str(&crate::measure::markdown(m));
    }
    md_discarded(&mut o, view);

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
        let servers = facts::dns_servers(view);
        if !servers.is_empty() {
            let _ = writeln!(o, "| Step | Authoritative server | Converged after |");
            let _ = writeln!(o, "|---|---|---|");
            for d in servers {
                let _ = writeln!(
                    o,
                    "| `{}` | {} | {} |",
                    d.step,
                    cell(&d.server),
                    d.ms.map_or_else(|| "unknown".to_string(), |v| format!("{v:.1} ms"))
                );
            }
            let _ = writeln!(o);
        }
    }
    md_capacity(&mut o, view);

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

    md_decisions(&mut o, view);

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

    let notes: Vec<_> = view.notes.iter().filter(|n| !is_known_note(n)).collect();
    if !notes.is_empty() {
        let _ = writeln!(o, "## Events");
        let _ = writeln!(o);
        for n in notes {
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

    trend::markdown(&mut o, r);

    md_evidence(&mut o, r);
    o
}

/// Notes other sections render (data loss truth, failback discards).
pub(crate) fn is_known_note(n: &crate::engine::view::NoteView) -> bool {
    matches!(
        n.data.get("kind").and_then(Value::as_str),
        Some("rpo_truth" | "failback_discarded")
    )
}

fn md_discarded(o: &mut String, view: &RunView) {
    let ds = facts::discarded(view);
    if ds.is_empty() {
        return;
    }
    let _ = writeln!(o, "## Discarded by failback");
    let _ = writeln!(o);
    for d in &ds {
        let _ = writeln!(o, "- {}: {}.", d.at, d.sentence());
        for t in &d.tables {
            let _ = writeln!(
                o,
                "  - `{}`: {} rows (in {})",
                t.table,
                facts::known(&t.rows),
                t.file
            );
        }
    }
    let _ = writeln!(o);
}

fn md_capacity(o: &mut String, view: &RunView) {
    let cap = facts::capacity(view);
    if cap.is_empty() {
        return;
    }
    let _ = writeln!(o, "## Kubernetes capacity");
    let _ = writeln!(o);
    let _ = writeln!(o, "| Step | Workload | Replicas before | Replicas after |");
    let _ = writeln!(o, "|---|---|---|---|");
    for c in cap {
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | {} |",
            c.step,
            cell(&c.workload),
            facts::known(&c.before),
            facts::known(&c.after)
        );
    }
    let _ = writeln!(o);
}

fn md_decisions(o: &mut String, view: &RunView) {
    let ds = facts::decisions(view);
    if ds.is_empty() {
        return;
    }
    let _ = writeln!(o, "## Decisions");
    let _ = writeln!(o);
    let _ = writeln!(o, "| When | Who | Decision | Detail |");
    let _ = writeln!(o, "|---|---|---|---|");
    for d in ds {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            d.at,
            cell(&d.who),
            cell(&d.what),
            cell(&d.detail)
        );
    }
    let _ = writeln!(o);
}

/// The evidence section every Markdown report ends with.
pub(crate) fn md_evidence(o: &mut String, r: &Report<'_>) {
    let view = r.view;
    let e = &r.evidence;
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
    let _ = writeln!(
        o,
        "Run started by drctl {}; report rendered by drctl {}. `drctl report verify FILE --run {}` renders it again from the journal and compares.",
        e.run_drctl_version, e.rendered_by, e.run_id
    );
    if let Some(s) = &e.signature {
        let _ = writeln!(
            o,
            "Journal head signed ({}), key `{}`: `{}`.",
            s.algorithm, s.key_fingerprint, s.value
        );
    }
    if let Some(a) = &e.anchor {
        let _ = writeln!(
            o,
            "Journal head anchored in the {} ledger of {} (region {}, database `{}`): tx {}, key `{}`, proven from trusted tx {}.",
            a.ledger, a.environment, a.region, a.database, a.tx, a.key, a.proven_from_tx
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{}", evidence::comment(e));
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn short_hash(h: &str) -> String {
    h.chars().take(12).collect()
}

#[cfg(test)]
mod tests;
