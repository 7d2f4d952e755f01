//! The pictures: a Gantt chart of a run's steps and trend charts of RTO
//! and RPO over past drills. Plain SVG with classes (the page's styles
//! colour them for light, dark and print), a `<title>` and an
//! `aria-label` so a screen reader announces what the picture shows, and a
//! `<title>` on every bar with the figures behind it.

use std::fmt::Write as _;

use super::stream::{Esc, Sink};
use super::{dur_ms, esc};
use crate::engine::view::{RunView, SpanKind};
use crate::journal::StepStatus;

/// Geometry of the Gantt chart, in SVG user units.
const LABEL_W: f64 = 220.0;
const PLOT_W: f64 = 700.0;
const ROW_H: f64 = 22.0;
const TOP: f64 = 34.0;

/// What the timeline marks besides the steps.
pub struct Marks<'a> {
    pub failed_at_ms: Option<u64>,
    /// When recovery was shown (the RTO end) and the RTO text.
    pub recovered: Option<(u64, String)>,
    pub critical: &'a [String],
}

fn x_of(t: u64, t0: u64, span: u64) -> f64 {
    LABEL_W + (t.saturating_sub(t0) as f64) * PLOT_W / (span.max(1) as f64)
}

/// The Gantt chart of every step: one row per step, one bar per attempt,
/// retry waits and interrupted starts drawn apart, the critical path's
/// rows highlighted, the declared failure time and the RTO end as lines.
pub fn gantt_to(o: &mut Sink<'_>, view: &RunView, marks: &Marks<'_>) {
    let t0 = marks
        .failed_at_ms
        .map_or(view.started_ms, |f| f.min(view.started_ms));
    let t1 = view
        .last_ts_ms()
        .max(marks.recovered.as_ref().map_or(0, |r| r.0));
    let span = t1.saturating_sub(t0).max(1);
    let rows = view.steps.len();
    let h = TOP + ROW_H * rows as f64 + 30.0;
    let w = LABEL_W + PLOT_W + 40.0;
    let label = format!(
        "Timeline of run {}: {} steps over {}{}{}",
        view.run_id,
        rows,
        dur_ms(span),
        marks
            .failed_at_ms
            .map(|_| ", from the declared failure time")
            .unwrap_or_default(),
        marks
            .recovered
            .as_ref()
            .map(|(_, r)| format!(", recovery shown at {r}"))
            .unwrap_or_default()
    );
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="gantt" role="img" aria-labelledby="gantt-title" aria-label="{l}" viewBox="0 0 {w} {h}" width="{w}" height="{h}"><title id="gantt-title">{l}</title>"#,
        l = esc(&label)
    );
    // Time axis: five ticks.
    for i in 0..=4u64 {
        let t = t0 + span * i / 4;
        let x = x_of(t, t0, span);
        let _ = write!(
            o,
            r#"<line class="grid" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{:.1}"/><text class="tick" x="{x:.1}" y="{}" text-anchor="middle">+{}</text>"#,
            TOP - 6.0,
            h - 24.0,
            TOP - 10.0,
            esc(&dur_ms(t - t0))
        );
    }
    for (i, s) in view.steps.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let critical = marks.critical.iter().any(|c| c == &s.id);
        let row_class = if critical { "row critical" } else { "row" };
        let _ = write!(
            o,
            r#"<g class="{row_class}" data-step="{id}"><text class="label" x="4" y="{ty:.1}">{id}{star}</text>"#,
            id = Esc(&s.id),
            ty = y + 15.0,
            star = if critical { " ★" } else { "" },
        );
        let status = match s.status {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Running => "interrupted",
            StepStatus::Skipped => "skipped",
            StepStatus::Pending => "pending",
        };
        if s.spans.is_empty() {
            // Skipped (or never started): a marker where the journal says so.
            if let Some(t) = s.finished_ms {
                let x = x_of(t, t0, span);
                let _ = write!(
                    o,
                    r#"<rect class="bar skipped" x="{x:.1}" y="{:.1}" width="4" height="{:.1}"><title>{}: {status}{}</title></rect>"#,
                    y + 4.0,
                    ROW_H - 8.0,
                    esc(&s.id),
                    s.skip_reason
                        .as_deref()
                        .map(|r| format!(" ({})", esc(r)))
                        .unwrap_or_default()
                );
            }
        }
        let action_class = match s.action.as_str() {
            "approval" => " approval",
            "wait" => " wait",
            _ => "",
        };
        for sp in &s.spans {
            let end = sp.end_ms.unwrap_or(t1);
            let x = x_of(sp.start_ms, t0, span);
            let bw = (x_of(end, t0, span) - x).max(2.0);
            let (class, what) = match sp.kind {
                SpanKind::Attempt => (status, status.to_string()),
                SpanKind::FailedAttempt => ("failed-attempt", "attempt failed, retried".into()),
                SpanKind::RetryWait => ("retry-wait", "waiting to retry".into()),
                SpanKind::Interrupted => (
                    "interrupted",
                    "interrupted (drctl stopped; drawn up to the resume)".into(),
                ),
            };
            let _ = write!(
                o,
                r#"<rect class="bar {class}{action_class}" x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}"><title>{} ({}): {what}, +{} to {}</title></rect>"#,
                y + 4.0,
                ROW_H - 8.0,
                Esc(&s.id),
                Esc(&s.action),
                Esc(&dur_ms(sp.start_ms.saturating_sub(t0))),
                match sp.end_ms {
                    Some(e) => format!("+{}", Esc(&dur_ms(e.saturating_sub(t0)))),
                    None => "still running".into(),
                }
            );
        }
        o.push_str("</g>");
        o.piece();
    }
    let bottom = h - 24.0;
    if let Some(f) = marks.failed_at_ms {
        let x = x_of(f, t0, span);
        let _ = write!(
            o,
            r#"<line class="mark failure" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{bottom:.1}"><title>declared failure time</title></line><text class="mark-label" x="{x:.1}" y="{:.1}">failure</text>"#,
            TOP - 4.0,
            bottom + 14.0
        );
    }
    if let Some((t, rto)) = &marks.recovered {
        let x = x_of(*t, t0, span);
        let _ = write!(
            o,
            r#"<line class="mark rto" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{bottom:.1}"><title>RTO end: recovery shown after {r}</title></line><text class="mark-label" x="{x:.1}" y="{:.1}" text-anchor="end">RTO {r}</text>"#,
            TOP - 4.0,
            bottom + 14.0,
            r = esc(rto)
        );
    }
    o.push_str("</svg>");
}

/// One drill in a trend: its figure (or `None`: unknown, drawn as a gap
/// with a marker, never as 0).
pub struct Point {
    pub label: String,
    pub value: Option<u64>,
}

/// A line chart of one figure over past drills, with its target as a line.
pub fn trend(title: &str, points: &[Point], target: Option<u64>) -> String {
    const W: f64 = 640.0;
    const H: f64 = 200.0;
    const L: f64 = 60.0;
    const B: f64 = 30.0;
    let max = points
        .iter()
        .filter_map(|p| p.value)
        .chain(target)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.15;
    let n = points.len().max(2) - 1;
    let x = |i: usize| L + (W - L - 20.0) * i as f64 / n as f64;
    let y = |v: u64| (H - B) - (H - B - 10.0) * v as f64 / max;
    let known: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p.label,
                p.value.map_or_else(|| "unknown".into(), dur_ms)
            )
        })
        .collect();
    let label = format!(
        "{title} over the last {} drills{}: {}",
        points.len(),
        target
            .map(|t| format!(", target {}", dur_ms(t)))
            .unwrap_or_default(),
        known.join("; ")
    );
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="trend" role="img" aria-label="{l}" viewBox="0 0 {W} {H}" width="{W}" height="{H}"><title>{l}</title>"#,
        l = esc(&label)
    );
    let _ = write!(
        o,
        r#"<line class="axis" x1="{L}" y1="{b}" x2="{}" y2="{b}"/><line class="axis" x1="{L}" y1="10" x2="{L}" y2="{b}"/><text class="tick" x="{}" y="{}" text-anchor="end">{}</text><text class="tick" x="{}" y="{b}" text-anchor="end">0</text>"#,
        W - 10.0,
        L - 4.0,
        y(max as u64) + 4.0,
        esc(&dur_ms(max as u64)),
        L - 4.0,
        b = H - B
    );
    if let Some(t) = target {
        let ty = y(t);
        let _ = write!(
            o,
            r#"<line class="target" x1="{L}" y1="{ty:.1}" x2="{}" y2="{ty:.1}"><title>target {}</title></line><text class="mark-label" x="{}" y="{:.1}" text-anchor="end">target {}</text>"#,
            W - 10.0,
            esc(&dur_ms(t)),
            W - 10.0,
            ty - 4.0,
            esc(&dur_ms(t))
        );
    }
    // The line joins consecutive known figures only.
    let mut segment = Vec::new();
    let flush = |seg: &mut Vec<String>, o: &mut String| {
        if seg.len() > 1 {
            let _ = write!(
                o,
                r#"<polyline class="series" points="{}"/>"#,
                seg.join(" ")
            );
        }
        seg.clear();
    };
    for (i, p) in points.iter().enumerate() {
        match p.value {
            Some(v) => segment.push(format!("{:.1},{:.1}", x(i), y(v))),
            None => flush(&mut segment, &mut o),
        }
    }
    flush(&mut segment, &mut o);
    for (i, p) in points.iter().enumerate() {
        match p.value {
            Some(v) => {
                let _ = write!(
                    o,
                    r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="4"><title>{}: {}</title></circle>"#,
                    x(i),
                    y(v),
                    esc(&p.label),
                    esc(&dur_ms(v))
                );
            }
            None => {
                let _ = write!(
                    o,
                    r#"<text class="unknown" x="{:.1}" y="{:.1}" text-anchor="middle">?<title>{}: unknown</title></text>"#,
                    x(i),
                    H - B - 6.0,
                    esc(&p.label)
                );
            }
        }
        let _ = write!(
            o,
            r#"<text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(i),
            H - B + 16.0,
            i + 1
        );
    }
    o.push_str("</svg>");
    o
}
