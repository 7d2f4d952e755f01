//! Facts every report format shows, gathered once from the journal's view:
//! the decisions people made, data discarded by a failback, DNS
//! convergence per server, Kubernetes capacity before and after, and the
//! critical path through the timeline. Each format only lays them out,
//! so Markdown, HTML and JSON cannot disagree.

use serde::Serialize;
use serde_json::Value;

use crate::engine::view::{RunView, StepView};
use crate::journal::{format_ms, StepStatus};

/// A decision a person (or a drill's rule) made, with who and when.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Decision {
    /// Journal time in ms, for ordering; approvals carry their own time text.
    pub ts_ms: u64,
    pub at: String,
    pub who: String,
    pub what: String,
    pub detail: String,
}

/// Every decision the journal records, in time order: overrides given at
/// start or on resume, approvals (and approval gates a drill skipped),
/// `--mark-done`/`--rerun` choices on resume.
pub fn decisions(view: &RunView) -> Vec<Decision> {
    let mut out = Vec::new();
    let start = |what: &str, detail: &str| Decision {
        ts_ms: view.started_ms,
        at: format_ms(view.started_ms),
        who: view.operator.clone(),
        what: what.to_string(),
        detail: detail.to_string(),
    };
    // The start record holds the run's options before any resume; a resume
    // that added one journals its own flag (below), so the start's are
    // what is left after removing those.
    let resumed_adl = view.resumes.iter().any(|r| r.accept_data_loss);
    let resumed_force = view.resumes.iter().any(|r| r.force);
    if view.options.accept_data_loss && !resumed_adl {
        out.push(start(
            "--accept-data-loss",
            "given at run start: promote even when the standby lags beyond the step's limit",
        ));
    }
    if view.options.force && !resumed_force {
        out.push(start(
            "--force",
            "given at run start: override split-brain and similar guards",
        ));
    }
    for a in &view.approvals {
        // When the approval was given (its own time), else when the gate
        // ended.
        let ts = humantime::parse_rfc3339_weak(&a.at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .or_else(|| {
                view.step(&a.step)
                    .and_then(|s| s.finished_ms.or(s.started_ms))
            })
            .unwrap_or(view.started_ms);
        out.push(Decision {
            ts_ms: ts,
            at: a.at.clone(),
            who: a.by.clone(),
            what: format!("approved `{}`", a.step),
            detail: format!("via {}", a.via),
        });
    }
    for g in view
        .steps
        .iter()
        .filter(|s| s.action == "approval" && s.outputs.get("skipped") == Some(&Value::Bool(true)))
    {
        let ts = g.finished_ms.unwrap_or(view.started_ms);
        out.push(Decision {
            ts_ms: ts,
            at: format_ms(ts),
            who: "drctl (drill mode)".into(),
            what: format!("skipped approval `{}`", g.id),
            detail: "drills do not wait for approvals".into(),
        });
    }
    for r in &view.resumes {
        let mut flags = Vec::new();
        if r.accept_data_loss {
            flags.push("--accept-data-loss");
        }
        if r.force {
            flags.push("--force");
        }
        if r.yes {
            flags.push("--yes");
        }
        if r.runbook_changed {
            flags.push("--allow-runbook-change (the runbook had changed)");
        }
        if r.environment_changed {
            flags.push("--allow-env-change (the environment file had changed)");
        }
        out.push(Decision {
            ts_ms: r.ts_ms,
            at: format_ms(r.ts_ms),
            who: r.operator.clone(),
            what: "resumed the run".into(),
            detail: if flags.is_empty() {
                "no overrides".into()
            } else {
                flags.join(" ")
            },
        });
        for (step, d) in &r.decisions {
            let what = if d.starts_with("marked done") {
                format!("--mark-done `{step}`")
            } else if d.contains("operator decision") {
                format!("--rerun `{step}`")
            } else {
                format!("re-ran `{step}`")
            };
            out.push(Decision {
                ts_ms: r.ts_ms,
                at: format_ms(r.ts_ms),
                who: r.operator.clone(),
                what,
                detail: d.clone(),
            });
        }
    }
    out.sort_by_key(|d| d.ts_ms);
    out
}

/// One table of the old primary's discarded transactions.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiscardedTable {
    pub table: String,
    pub rows: Option<u64>,
    pub file: String,
}

/// A failback's `failback_discarded` note: what the old primary had
/// written after the fork that the rewind threw away (and where it was
/// saved). A missing or null figure is unknown, never 0.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Discarded {
    pub at: String,
    pub fork_lsn: Option<String>,
    pub old_primary_end_lsn: Option<String>,
    pub timeline: Option<u64>,
    pub heartbeat_rows: Option<u64>,
    pub first_heartbeat_id: Option<u64>,
    pub last_heartbeat_id: Option<u64>,
    pub extract_file: Option<String>,
    pub tables: Vec<DiscardedTable>,
}

pub fn discarded(view: &RunView) -> Vec<Discarded> {
    view.notes
        .iter()
        .filter(|n| n.data.get("kind").and_then(Value::as_str) == Some("failback_discarded"))
        .map(|n| {
            let d = &n.data;
            let s = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
            let u = |k: &str| d.get(k).and_then(Value::as_u64);
            Discarded {
                at: format_ms(n.ts_ms),
                fork_lsn: s("fork_lsn"),
                old_primary_end_lsn: s("old_primary_end_lsn"),
                timeline: u("timeline"),
                heartbeat_rows: u("heartbeat_rows"),
                first_heartbeat_id: u("first_heartbeat_id"),
                last_heartbeat_id: u("last_heartbeat_id"),
                extract_file: s("extract_file"),
                tables: d
                    .get("tables")
                    .and_then(Value::as_array)
                    .map(|ts| {
                        ts.iter()
                            .map(|t| DiscardedTable {
                                table: t
                                    .get("table")
                                    .and_then(Value::as_str)
                                    .unwrap_or("(unnamed)")
                                    .to_string(),
                                rows: t.get("rows").and_then(Value::as_u64),
                                file: t
                                    .get("file")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .to_string(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// `n` or `unknown`: a figure the journal lacks is never shown as 0.
pub fn known<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "unknown".to_string(), |x| x.to_string())
}

impl Discarded {
    /// One sentence, the same in every format.
    pub fn sentence(&self) -> String {
        let ids = match (self.first_heartbeat_id, self.last_heartbeat_id) {
            (Some(a), Some(b)) => format!(" (heartbeat ids {a}–{b})"),
            _ => String::new(),
        };
        format!(
            "the old primary's writes after fork LSN {} (its WAL ended at {}; new primary on timeline {}) were discarded by the rewind: {} heartbeat rows{ids}; saved to {}",
            known(&self.fork_lsn),
            known(&self.old_primary_end_lsn),
            known(&self.timeline),
            known(&self.heartbeat_rows),
            known(&self.extract_file),
        )
    }
}

/// One authoritative server's convergence time for a DNS switch.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DnsServer {
    pub step: String,
    pub server: String,
    pub ms: Option<f64>,
}

pub fn dns_servers(view: &RunView) -> Vec<DnsServer> {
    let mut out = Vec::new();
    for s in view.steps.iter().filter(|s| s.action == "dns.switch") {
        if let Some(per) = s.outputs.get("per_server_ms").and_then(Value::as_object) {
            for (server, ms) in per {
                out.push(DnsServer {
                    step: s.id.clone(),
                    server: server.clone(),
                    ms: ms.as_f64(),
                });
            }
        }
    }
    out
}

/// Replicas of one workload before and after a `kube.scale` step.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Capacity {
    pub step: String,
    pub workload: String,
    pub before: Option<i64>,
    pub after: Option<i64>,
}

pub fn capacity(view: &RunView) -> Vec<Capacity> {
    let mut out = Vec::new();
    for s in view.steps.iter().filter(|s| s.action == "kube.scale") {
        let Some(targets) = s.outputs.get("targets").and_then(Value::as_object) else {
            continue;
        };
        let prev = s.outputs.get("previous").and_then(Value::as_object);
        for (w, t) in targets {
            out.push(Capacity {
                step: s.id.clone(),
                workload: w.clone(),
                before: prev
                    .and_then(|p| p.get(w))
                    .and_then(|e| e.get("replicas"))
                    .and_then(Value::as_i64),
                after: t.as_i64(),
            });
        }
    }
    out
}

/// Slack when chaining steps on the critical path: the engine journals a
/// step's start a little after its predecessor's end.
const CHAIN_SLACK_MS: u64 = 50;

/// The chain of steps that decided when the run ended (or recovered),
/// derived from the journal's times because the journal does not record
/// `needs`: from the last step (the recovery step when there is one), go
/// back to the step that ended last no later than it started, and so on.
/// Linear in steps per link, and each link moves strictly back in time.
pub fn critical_path(view: &RunView, end_step: Option<&str>) -> Vec<String> {
    let timed = |s: &StepView| match (s.started_ms, s.finished_ms) {
        (Some(a), Some(b)) if s.status != StepStatus::Skipped => Some((a, b)),
        _ => None,
    };
    let last = match end_step.and_then(|id| view.step(id)) {
        Some(s) => Some(s),
        None => view
            .steps
            .iter()
            .filter(|s| timed(s).is_some())
            .max_by_key(|s| timed(s).map(|t| t.1)),
    };
    let Some(mut cur) = last else {
        return Vec::new();
    };
    // Steps sorted by end time, so each link is a binary search.
    let mut by_end: Vec<(u64, u64, usize)> = view
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| timed(s).map(|(a, b)| (b, a, i)))
        .collect();
    by_end.sort_unstable();
    let mut path = vec![cur.id.clone()];
    while let Some((start, _)) = timed(cur) {
        let limit = start.saturating_add(CHAIN_SLACK_MS);
        let n = by_end.partition_point(|(end, _, _)| *end <= limit);
        // The latest-ending earlier step that started before this one.
        let prev = by_end[..n]
            .iter()
            .rev()
            .find(|(_, s, i)| *s < start && view.steps[*i].id != cur.id);
        match prev {
            Some((_, _, i)) => {
                cur = &view.steps[*i];
                path.push(cur.id.clone());
            }
            None => break,
        }
    }
    path.reverse();
    path
}
