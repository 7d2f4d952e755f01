//! Two runs side by side (`drctl report --compare RUN_A RUN_B`): step
//! durations, RTO and RPO with their targets, and what changed between
//! the runs (runbook, environment, drctl version). Both sides come from
//! their verified journals; a figure one side lacks is "unknown", and no
//! difference is computed against it.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};

use super::{cell, dur_ms, esc, status_word, Format};
use crate::engine::view::RunView;
use crate::measure::Measurements;

#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub step: String,
    pub a_ms: Option<u64>,
    pub b_ms: Option<u64>,
    /// B minus A, when both are known.
    pub delta_ms: Option<i64>,
    pub a_status: Option<&'static str>,
    pub b_status: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub what: &'static str,
    pub a: String,
    pub b: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub steps: Vec<StepRow>,
    pub rto_ms: (Option<u64>, Option<u64>),
    pub rto_target_ms: (Option<u64>, Option<u64>),
    pub rpo_ms: (Option<u64>, Option<u64>),
    pub rpo_target_ms: (Option<u64>, Option<u64>),
    pub rto_verdict: (String, String),
    pub rpo_verdict: (String, String),
    pub changes: Vec<Change>,
    pub heads: (String, String),
}

fn verdicts(m: &Option<Measurements>) -> (Option<u64>, Option<u64>, String, String) {
    match m {
        Some(m) => (
            m.rto_ms,
            m.rpo_time_ms(),
            m.rto_verdict.text(),
            m.rpo_verdict.text(),
        ),
        None => (
            None,
            None,
            "unknown: no declared failure time".into(),
            "unknown: no declared failure time".into(),
        ),
    }
}

pub fn compare(a: &RunView, b: &RunView) -> Comparison {
    let mut steps: Vec<StepRow> = Vec::with_capacity(a.steps.len().max(b.steps.len()));
    for s in &a.steps {
        let other = b.step(&s.id);
        let b_ms = other.and_then(|o| o.duration_ms);
        steps.push(StepRow {
            step: s.id.clone(),
            a_ms: s.duration_ms,
            b_ms,
            delta_ms: s.duration_ms.zip(b_ms).map(|(x, y)| y as i64 - x as i64),
            a_status: Some(status_word(s.status)),
            b_status: other.map(|o| status_word(o.status)),
        });
    }
    for s in b.steps.iter().filter(|s| a.step(&s.id).is_none()) {
        steps.push(StepRow {
            step: s.id.clone(),
            a_ms: None,
            b_ms: s.duration_ms,
            delta_ms: None,
            a_status: None,
            b_status: Some(status_word(s.status)),
        });
    }
    let (ma, mb) = (crate::measure::from_view(a), crate::measure::from_view(b));
    let (ra, pa, rva, pva) = verdicts(&ma);
    let (rb, pb, rvb, pvb) = verdicts(&mb);
    let mut changes = Vec::new();
    let mut diff = |what: &'static str, x: String, y: String| {
        if x != y {
            changes.push(Change { what, a: x, b: y });
        }
    };
    diff("runbook", a.runbook.name.clone(), b.runbook.name.clone());
    diff(
        "runbook sha256",
        a.runbook.sha256.clone(),
        b.runbook.sha256.clone(),
    );
    let env = |v: &RunView| {
        v.environment
            .as_ref()
            .map(|e| e.name.clone())
            .unwrap_or_default()
    };
    let env_hash = |v: &RunView| {
        v.environment
            .as_ref()
            .map(|e| e.sha256.clone())
            .unwrap_or_default()
    };
    diff("environment", env(a), env(b));
    diff("environment sha256", env_hash(a), env_hash(b));
    diff(
        "drctl version",
        a.drctl_version.clone(),
        b.drctl_version.clone(),
    );
    diff("mode", a.mode.as_str().into(), b.mode.as_str().into());
    diff("status", a.status_text().into(), b.status_text().into());
    Comparison {
        a: a.run_id.clone(),
        b: b.run_id.clone(),
        steps,
        rto_ms: (ra, rb),
        rto_target_ms: (a.rto_target_ms, b.rto_target_ms),
        rpo_ms: (pa, pb),
        rpo_target_ms: (a.rpo_target_ms, b.rpo_target_ms),
        rto_verdict: (rva, rvb),
        rpo_verdict: (pva, pvb),
        changes,
        heads: (a.head.clone(), b.head.clone()),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".into(), dur_ms)
}

fn target(v: Option<u64>) -> String {
    v.map_or_else(|| "none".into(), dur_ms)
}

fn delta(d: Option<i64>) -> String {
    match d {
        Some(d) if d >= 0 => format!("+{}", dur_ms(d as u64)),
        Some(d) => format!("-{}", dur_ms(d.unsigned_abs())),
        None => "-".into(),
    }
}

fn delta_of(a: Option<u64>, b: Option<u64>) -> String {
    delta(a.zip(b).map(|(x, y)| y as i64 - x as i64))
}

/// The comparison in a format.
pub fn render(c: &Comparison, format: Format) -> String {
    match format {
        Format::Md => markdown(c),
        Format::Json => serde_json::to_string_pretty(&value(c)).unwrap_or_default(),
        Format::Html => html(c),
    }
}

pub fn value(c: &Comparison) -> Value {
    json!({ "comparison": c })
}

fn figure_rows(c: &Comparison) -> Vec<(&'static str, String, String, String)> {
    vec![
        (
            "RTO",
            opt(c.rto_ms.0),
            opt(c.rto_ms.1),
            delta_of(c.rto_ms.0, c.rto_ms.1),
        ),
        (
            "RTO target",
            target(c.rto_target_ms.0),
            target(c.rto_target_ms.1),
            String::new(),
        ),
        (
            "RTO verdict",
            c.rto_verdict.0.clone(),
            c.rto_verdict.1.clone(),
            String::new(),
        ),
        (
            "RPO (time of writes lost)",
            opt(c.rpo_ms.0),
            opt(c.rpo_ms.1),
            delta_of(c.rpo_ms.0, c.rpo_ms.1),
        ),
        (
            "RPO target",
            target(c.rpo_target_ms.0),
            target(c.rpo_target_ms.1),
            String::new(),
        ),
        (
            "RPO verdict",
            c.rpo_verdict.0.clone(),
            c.rpo_verdict.1.clone(),
            String::new(),
        ),
    ]
}

fn markdown(c: &Comparison) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# drctl run comparison: {} vs {}", c.a, c.b);
    let _ = writeln!(o);
    let _ = writeln!(o, "| | A `{}` | B `{}` | B - A |", c.a, c.b);
    let _ = writeln!(o, "|---|---|---|---|");
    for (what, a, b, d) in figure_rows(c) {
        let _ = writeln!(o, "| {what} | {} | {} | {d} |", cell(&a), cell(&b));
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "## Steps");
    let _ = writeln!(o);
    let _ = writeln!(o, "| Step | A | B | B - A |");
    let _ = writeln!(o, "|---|---|---|---|");
    for s in &c.steps {
        let side = |ms: Option<u64>, st: Option<&str>| match st {
            None => "not in run".to_string(),
            Some(st) => format!("{} ({st})", ms.map_or_else(|| "-".into(), dur_ms)),
        };
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | {} |",
            s.step,
            side(s.a_ms, s.a_status),
            side(s.b_ms, s.b_status),
            delta(s.delta_ms)
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "## What changed");
    let _ = writeln!(o);
    if c.changes.is_empty() {
        let _ = writeln!(
            o,
            "Same runbook, environment and drctl version (by content hash)."
        );
    }
    for ch in &c.changes {
        let _ = writeln!(o, "- {}: `{}` -> `{}`", ch.what, ch.a, ch.b);
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Journals: A head `{}`, B head `{}` (each hash chain verified).",
        c.heads.0, c.heads.1
    );
    o
}

fn html(c: &Comparison) -> String {
    let mut o = String::new();
    let title = format!("drctl run comparison: {} vs {}", c.a, c.b);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src {}; base-uri 'none'; form-action 'none'\"><meta name=\"color-scheme\" content=\"light dark\"><title>{t}</title><style>{}</style></head><body><main><h1>{t}</h1>",
        super::html::style_src(),
        super::html::css(),
        t = esc(&title)
    );
    o.push_str("<table><thead><tr><th scope=\"col\"></th>");
    let _ = write!(
        o,
        "<th scope=\"col\">A <code>{}</code></th><th scope=\"col\">B <code>{}</code></th><th scope=\"col\">B - A</th></tr></thead><tbody>",
        esc(&c.a),
        esc(&c.b)
    );
    for (what, a, b, d) in figure_rows(c) {
        let _ = write!(
            o,
            "<tr><th scope=\"row\">{what}</th><td>{}</td><td>{}</td><td>{d}</td></tr>",
            esc(&a),
            esc(&b)
        );
    }
    o.push_str("</tbody></table><h2>Steps</h2><table><thead><tr><th scope=\"col\">Step</th><th scope=\"col\">A</th><th scope=\"col\">B</th><th scope=\"col\">B - A</th></tr></thead><tbody>");
    for s in &c.steps {
        let side = |ms: Option<u64>, st: Option<&str>| match st {
            None => "not in run".to_string(),
            Some(st) => format!("{} ({st})", ms.map_or_else(|| "-".into(), dur_ms)),
        };
        let _ = write!(
            o,
            "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.step),
            side(s.a_ms, s.a_status),
            side(s.b_ms, s.b_status),
            delta(s.delta_ms)
        );
    }
    o.push_str("</tbody></table><h2>What changed</h2><ul>");
    if c.changes.is_empty() {
        o.push_str("<li>Same runbook, environment and drctl version (by content hash).</li>");
    }
    for ch in &c.changes {
        let _ = write!(
            o,
            "<li>{}: <code>{}</code> → <code>{}</code></li>",
            ch.what,
            esc(&ch.a),
            esc(&ch.b)
        );
    }
    let _ = writeln!(
        o,
        "</ul><p>Journals: A head <code>{}</code>, B head <code>{}</code> (each hash chain verified).</p></main></body></html>",
        esc(&c.heads.0),
        esc(&c.heads.1)
    );
    o
}
