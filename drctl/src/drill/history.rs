//! The drill history (a store collection every daemon, CronJob and operator
//! shares) read back as trends: each drill's RTO and RPO against the
//! previous drill of the same definition and the median of the ones before.
//!
//! A figure the drill did not measure stays unknown here: it is skipped by
//! the median and gives no delta, never a 0.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

fn fmt_dur(ms: u64) -> String {
    crate::duration::format_duration(std::time::Duration::from_millis(ms))
}

/// One history record, as `drill::run` appends it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub run_id: String,
    /// The definition's name (older records: the runbook's).
    pub drill: String,
    pub mode: String,
    pub status: String,
    /// When the failure was injected (the drill's start).
    pub failed_at: Option<String>,
    pub rto_ms: Option<u64>,
    pub rto_target_ms: Option<u64>,
    /// The RPO the verdict used (time of writes lost), estimate.
    pub rpo_ms: Option<u64>,
    /// The truth, when the drill measured one.
    pub rpo_truth_ms: Option<u64>,
    pub rpo_target_ms: Option<u64>,
    /// `met`, `missed`, `not_met`, `unknown`, `no_target`.
    pub rto_verdict: String,
    pub rpo_verdict: String,
    /// The drill passed: it succeeded and showed every target met.
    pub success: bool,
}

impl Entry {
    pub fn from_record(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        let verdict = |k: &str| {
            v.get(k)
                .and_then(|o| o.get("verdict"))
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string()
        };
        let status = s("status")?;
        let (rto_verdict, rpo_verdict) = (verdict("rto_verdict"), verdict("rpo_verdict"));
        let ok = |v: &str| v == "met" || v == "no_target";
        Some(Entry {
            run_id: s("run_id")?,
            drill: s("drill").or_else(|| s("runbook"))?,
            mode: s("mode").unwrap_or_else(|| "full".into()),
            success: status == "succeeded" && ok(&rto_verdict) && ok(&rpo_verdict),
            status,
            failed_at: s("failed_at"),
            rto_ms: u("rto_ms"),
            rto_target_ms: u("rto_target_ms"),
            rpo_ms: u("rpo_time_ms"),
            rpo_truth_ms: v
                .get("rpo_truth")
                .and_then(|t| t.get("time_lost_ms"))
                .and_then(Value::as_u64),
            rpo_target_ms: u("rpo_target_ms"),
            rto_verdict,
            rpo_verdict,
        })
    }

    /// When the drill ran (its failure time; records without one sort first).
    pub fn at(&self) -> Option<DateTime<Utc>> {
        self.failed_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    }
}

/// An entry with its trend against the earlier drills of its definition.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    #[serde(flatten)]
    pub entry: Entry,
    /// RTO minus the previous drill's (both measured), in ms.
    pub rto_delta_ms: Option<i64>,
    /// Median RTO of up to `window` earlier drills with a measured RTO.
    pub rto_median_before_ms: Option<u64>,
    pub rpo_delta_ms: Option<i64>,
    pub rpo_median_before_ms: Option<u64>,
}

fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

/// Trends of `records` (store order = append order), optionally for one
/// drill. Linear in the records times `window`.
pub fn trends(records: &[Value], drill: Option<&str>, window: usize) -> Vec<Trend> {
    let mut by_drill: std::collections::HashMap<String, Vec<&Entry>> = Default::default();
    let entries: Vec<Entry> = records
        .iter()
        .filter_map(Entry::from_record)
        .filter(|e| drill.is_none_or(|d| e.drill == d))
        .collect();
    let mut out = Vec::with_capacity(entries.len());
    for e in &entries {
        let before = by_drill.entry(e.drill.clone()).or_default();
        let prev = before.last();
        let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a as i64 - b as i64),
            _ => None,
        };
        let recent = |f: fn(&Entry) -> Option<u64>| {
            let mut v: Vec<u64> = before
                .iter()
                .rev()
                .filter_map(|x| f(x))
                .take(window)
                .collect();
            median(&mut v)
        };
        out.push(Trend {
            entry: e.clone(),
            rto_delta_ms: delta(e.rto_ms, prev.and_then(|p| p.rto_ms)),
            rto_median_before_ms: recent(|x| x.rto_ms),
            rpo_delta_ms: delta(e.rpo_ms, prev.and_then(|p| p.rpo_ms)),
            rpo_median_before_ms: recent(|x| x.rpo_ms),
        });
        before.push(e);
    }
    out
}

fn fig(v: Option<u64>) -> String {
    v.map(fmt_dur).unwrap_or_else(|| "unknown".into())
}

fn signed(v: Option<i64>) -> String {
    match v {
        Some(d) if d >= 0 => format!("+{}", fmt_dur(d as u64)),
        Some(d) => format!("-{}", fmt_dur(d.unsigned_abs())),
        None => "—".into(),
    }
}

/// The table `drctl drills history` prints.
pub fn render(trends: &[Trend], window: usize) -> String {
    if trends.is_empty() {
        return "no drills recorded yet (each `drctl drill` appends one)\n".into();
    }
    let mut rows = vec![[
        "date".to_string(),
        "drill".into(),
        "mode".into(),
        "status".into(),
        "RTO".into(),
        "ΔRTO".into(),
        format!("RTO median(≤{window})"),
        "RPO est.".into(),
        "RPO truth".into(),
        "ΔRPO".into(),
        "RTO vs target".into(),
        "RPO vs target".into(),
    ]];
    for t in trends {
        let e = &t.entry;
        rows.push([
            e.failed_at.clone().unwrap_or_else(|| "unknown".into()),
            e.drill.clone(),
            e.mode.clone(),
            e.status.clone(),
            fig(e.rto_ms),
            signed(t.rto_delta_ms),
            t.rto_median_before_ms
                .map(fmt_dur)
                .unwrap_or_else(|| "—".into()),
            fig(e.rpo_ms),
            e.rpo_truth_ms.map(fmt_dur).unwrap_or_else(|| "—".into()),
            signed(t.rpo_delta_ms),
            e.rto_verdict.replace('_', " "),
            e.rpo_verdict.replace('_', " "),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str("\"unknown\": not measured by that drill (see its report); \"—\": nothing to compare with\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(run: &str, drill: &str, rto: Option<u64>, rpo: Option<u64>, ok: bool) -> Value {
        json!({
            "run_id": run, "drill": drill, "mode": "full",
            "status": if ok { "succeeded" } else { "failed" },
            "failed_at": "2026-12-01T03:00:00.000Z",
            "rto_ms": rto, "rpo_time_ms": rpo, "rto_target_ms": 120000,
            "rto_verdict": {"verdict": if ok { "met" } else { "not_met" }, "reason": "x"},
            "rpo_verdict": {"verdict": "met"},
        })
    }

    #[test]
    fn deltas_and_medians_per_drill_skip_unknowns() {
        let recs = vec![
            rec("1", "a", Some(100), Some(1000), true),
            rec("2", "b", Some(999), None, true),
            rec("3", "a", None, Some(500), false),
            rec("4", "a", Some(300), Some(700), true),
            rec("5", "a", Some(200), None, true),
        ];
        let t = trends(&recs, Some("a"), 5);
        assert_eq!(t.len(), 4);
        // The unknown RTO of run 3 gives no delta, and run 4 has nothing
        // measured right before it to compare with.
        assert_eq!(t[1].rto_delta_ms, None);
        assert_eq!(t[2].rto_delta_ms, None);
        assert_eq!(t[2].rto_median_before_ms, Some(100));
        assert_eq!(t[3].rto_delta_ms, Some(-100));
        assert_eq!(t[3].rto_median_before_ms, Some(200));
        assert_eq!(t[3].rpo_delta_ms, None);
        assert!(!t[1].entry.success && t[3].entry.success);
        let text = render(&t, 5);
        assert!(text.contains("unknown"), "{text}");
        assert!(!text.contains(" 0ms"), "{text}");
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3, 1, 2]), Some(2));
        assert_eq!(median(&mut [4, 1, 2, 3]), Some(2));
        assert_eq!(median(&mut []), None);
    }
}
