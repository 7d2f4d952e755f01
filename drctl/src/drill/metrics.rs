//! Drill results as Prometheus gauges, computed from the drill history in
//! the state store (the one record every daemon, CronJob and operator
//! shares), so a push after any drill, a textfile, and the daemon's
//! `/metrics` all say the same.
//!
//! An unmeasured figure is an absent series, never 0: a drill whose RTO is
//! unknown has no `drctl_drill_rto_seconds` sample, and its
//! `drctl_drill_target_met` is 0 (a target it could not show met).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::definition::DrillDef;
use super::history::{self, Trend};
use crate::metrics::{Gauge, Labels};

/// How many earlier drills the RTO median covers (the regression alert's
/// baseline), like `drctl drills history`'s default window.
pub const MEDIAN_WINDOW: usize = 5;

fn labels(drill: &str, mode: &str) -> Labels {
    Labels::from([
        ("drill".to_string(), drill.to_string()),
        ("mode".to_string(), mode.to_string()),
    ])
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The gauges for every drill in `records` and every definition in `defs`
/// (a defined drill that never ran still gets its overdue allowance, so
/// "never ran" can alert).
pub fn gauges(defs: &[DrillDef], records: &[Value], now: DateTime<Utc>) -> Vec<Gauge> {
    let trends = history::trends(records, None, MEDIAN_WINDOW);
    let mut latest: std::collections::BTreeMap<&str, &Trend> = Default::default();
    let mut last_success: std::collections::BTreeMap<&str, DateTime<Utc>> = Default::default();
    for t in &trends {
        latest.insert(t.entry.drill.as_str(), t);
        if t.entry.success {
            if let Some(at) = t.entry.at() {
                last_success.insert(t.entry.drill.as_str(), at);
            }
        }
    }
    let mut rto = Gauge::new(
        "drctl_drill_rto_seconds",
        "RTO measured by the latest drill (absent when that drill could not measure it)",
    );
    let mut rpo = Gauge::new(
        "drctl_drill_rpo_seconds",
        "RPO (time of writes lost) of the latest drill, the figure its verdict used (absent when unknown)",
    );
    let mut met = Gauge::new(
        "drctl_drill_target_met",
        "1 when the latest drill succeeded and showed every RTO/RPO target met, else 0",
    );
    let mut last_run = Gauge::new(
        "drctl_drill_last_run_timestamp_seconds",
        "When the latest drill's failure was injected (Unix time)",
    );
    let mut success = Gauge::new(
        "drctl_drill_last_success_timestamp_seconds",
        "When the latest passing drill ran (Unix time; absent if none passed)",
    );
    let mut median = Gauge::new(
        "drctl_drill_rto_median_seconds",
        "Median RTO of up to 5 drills before the latest (the regression alert's baseline)",
    );
    let mut allowed = Gauge::new(
        "drctl_drill_overdue_after_seconds",
        "A drill is overdue when its last success is older than this (longest gap between two slots plus the grace)",
    );
    for (name, t) in &latest {
        let e = &t.entry;
        let l = labels(name, &e.mode);
        if let Some(ms) = e.rto_ms {
            rto = rto.sample(&l, secs(ms));
        }
        if let Some(ms) = e.rpo_ms {
            rpo = rpo.sample(&l, secs(ms));
        }
        met = met.sample(&l, if e.success { 1.0 } else { 0.0 });
        if let Some(at) = e.at() {
            last_run = last_run.sample(&l, at.timestamp_millis() as f64 / 1000.0);
        }
        if let Some(at) = last_success.get(name) {
            success = success.sample(&l, at.timestamp_millis() as f64 / 1000.0);
        }
        if let Some(ms) = t.rto_median_before_ms {
            median = median.sample(&l, secs(ms));
        }
    }
    for d in defs {
        let Some(s) = d.schedule.as_ref().filter(|s| !s.suspend) else {
            continue;
        };
        let Some(period) = s.cron.period_after(now, 24) else {
            continue;
        };
        let total = period.num_seconds() as f64 + s.grace.as_secs_f64();
        allowed = allowed.sample(&labels(&d.name, d.mode.as_str()), total);
    }
    vec![rto, rpo, met, last_run, success, median, allowed]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_figures_are_absent_and_a_failed_drill_is_not_met() {
        let recs = vec![
            json!({"run_id": "1", "drill": "a", "mode": "full", "status": "succeeded",
                   "failed_at": "2026-11-01T03:00:00.000Z", "rto_ms": 4000, "rpo_time_ms": 1000,
                   "rto_verdict": {"verdict": "met"}, "rpo_verdict": {"verdict": "met"}}),
            json!({"run_id": "2", "drill": "a", "mode": "full", "status": "failed",
                   "failed_at": "2026-12-01T03:00:00.000Z", "rto_ms": null, "rpo_time_ms": null,
                   "rto_verdict": {"verdict": "not_met"}, "rpo_verdict": {"verdict": "unknown"}}),
        ];
        let g = gauges(&[], &recs, Utc::now());
        let text = crate::metrics::render(&g);
        assert!(!text.contains("drctl_drill_rto_seconds{"), "{text}");
        assert!(
            text.contains("drctl_drill_target_met{drill=\"a\",mode=\"full\"} 0"),
            "{text}"
        );
        let first = DateTime::parse_from_rfc3339("2026-11-01T03:00:00Z")
            .unwrap()
            .timestamp();
        assert!(
            text.contains(&format!(
                "drctl_drill_last_success_timestamp_seconds{{drill=\"a\",mode=\"full\"}} {first}\n"
            )),
            "the last success is the first drill's: {text}"
        );
        assert!(
            text.contains("drctl_drill_rto_median_seconds{drill=\"a\",mode=\"full\"} 4\n"),
            "{text}"
        );
    }
}
