//! A drill's trend: RTO and RPO over the last drills of the same
//! definition (its `drill` name in the history; for records without one,
//! the same runbook and environment), read from the drill
//! history in the state store. The window ends with the reported run, so
//! a report rendered later shows the same drills (the history is
//! append-only), and `report verify` can render it again.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::{dur_ms, svg, Report};
use crate::engine::view::RunView;

/// Drills a trend shows unless asked otherwise (`--trend N`).
pub const WINDOW: usize = 10;

/// One past drill, as the history recorded it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrendPoint {
    pub run_id: String,
    pub failed_at: Option<String>,
    pub status: String,
    pub rto_ms: Option<u64>,
    pub rto_target_ms: Option<u64>,
    pub rpo_ms: Option<u64>,
    pub rpo_target_ms: Option<u64>,
}

/// The last `window` drills of the run's definition up to and including
/// the run itself, oldest first; empty when the run is not in the history
/// (then no window that stays the same can be chosen).
pub fn select(view: &RunView, history: &[Value], window: usize) -> Vec<TrendPoint> {
    if window == 0 {
        return Vec::new();
    }
    let env = view.environment.as_ref().map(|e| e.name.as_str());
    let this = history
        .iter()
        .find(|h| h.get("run_id").and_then(Value::as_str) == Some(view.run_id.as_str()));
    let drill = this.and_then(|h| h.get("drill")).and_then(Value::as_str);
    let same: Vec<&Value> = history
        .iter()
        .filter(|h| match (drill, h.get("drill").and_then(Value::as_str)) {
            (Some(d), Some(other)) => d == other,
            _ => {
                h.get("runbook").and_then(Value::as_str) == Some(view.runbook.name.as_str())
                    && h.get("environment").and_then(Value::as_str) == env
            }
        })
        .collect();
    let Some(end) = same
        .iter()
        .position(|h| h.get("run_id").and_then(Value::as_str) == Some(view.run_id.as_str()))
    else {
        return Vec::new();
    };
    let start = (end + 1).saturating_sub(window);
    same[start..=end]
        .iter()
        .map(|h| {
            let s = |k: &str| h.get(k).and_then(Value::as_str).map(str::to_string);
            let u = |k: &str| h.get(k).and_then(Value::as_u64);
            TrendPoint {
                run_id: s("run_id").unwrap_or_default(),
                failed_at: s("failed_at"),
                status: s("status").unwrap_or_default(),
                rto_ms: u("rto_ms"),
                rto_target_ms: u("rto_target_ms"),
                rpo_ms: u("rpo_time_ms"),
                rpo_target_ms: u("rpo_target_ms"),
            }
        })
        .collect()
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".into(), dur_ms)
}

/// The trend as a Markdown table (Markdown cannot hold the picture).
pub fn markdown(o: &mut String, r: &Report<'_>) {
    let t = &r.inputs.trend;
    if t.is_empty() {
        return;
    }
    let _ = writeln!(o, "## Trend (last {} drills)", t.len());
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| # | Run | Status | RTO | RTO target | RPO | RPO target |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for (i, p) in t.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            p.run_id,
            p.status,
            opt(p.rto_ms),
            p.rto_target_ms.map_or_else(|| "none".into(), dur_ms),
            opt(p.rpo_ms),
            p.rpo_target_ms.map_or_else(|| "none".into(), dur_ms),
        );
    }
    let _ = writeln!(o);
}

/// The RTO and RPO trend charts; the targets are the reported run's.
pub fn charts(r: &Report<'_>) -> Option<(String, String)> {
    let t = &r.inputs.trend;
    if t.is_empty() {
        return None;
    }
    let pts = |f: fn(&TrendPoint) -> Option<u64>| -> Vec<svg::Point> {
        t.iter()
            .map(|p| svg::Point {
                label: p.run_id.clone(),
                value: f(p),
            })
            .collect()
    };
    Some((
        svg::trend("RTO", &pts(|p| p.rto_ms), r.view.rto_target_ms),
        svg::trend(
            "RPO (time of writes lost)",
            &pts(|p| p.rpo_ms),
            r.view.rpo_target_ms,
        ),
    ))
}
