//! Scaling benchmarks: how validation and the journal fold grow with the
//! size of the work.
//!
//! Every `run`, `failover` and `resume` validates the runbook inside the
//! RTO window, and every `status`, `report` and resume folds the journal,
//! so both must stay linear. Each figure is reported beside a baseline
//! measured in the same process on the same input:
//!
//! - validation against parsing the same YAML text (the floor any loader
//!   pays to read the document);
//! - the fold against parsing the same journal lines as plain JSON (the
//!   floor any reader pays to look at the records).
//!
//! The per-item cost at each size and its growth between sizes show
//! whether a path is linear; absolute times are the machine's, not a
//! promise.
//!
//! Peak memory is the process's resident high-water mark (`VmHWM`), reset
//! before each workload through `/proc/self/clear_refs`; it includes the
//! process's own baseline (a few MB) and is `null` where the kernel does
//! not offer it.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{json, Value};

use super::BenchError;
use crate::journal::{self, Event, RunOptions, StepStatus};
use crate::runbook::Mode;
use crate::yaml::SourceFile;

/// Resets the resident-set high-water mark; false where unsupported.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The resident-set high-water mark since the last reset, in MiB.
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A chain of `n` `wait` steps, each needing the previous one and reading
/// its output in a `${steps.…}` reference; declared last step first when
/// `reversed`, so ordering and reference checks cannot ride on file order.
pub fn chain_yaml(n: usize, reversed: bool) -> String {
    let mut y = String::with_capacity(n * 120);
    y.push_str("name: scale\nsteps:\n");
    let ids: Box<dyn Iterator<Item = usize>> = if reversed {
        Box::new((0..n).rev())
    } else {
        Box::new(0..n)
    };
    for i in ids {
        if i == 0 {
            let _ = writeln!(
                y,
                "  - id: s0\n    action: wait\n    with: {{duration: 0ms}}"
            );
        } else {
            let p = i - 1;
            let _ = writeln!(
                y,
                "  - id: s{i}\n    action: wait\n    needs: [s{p}]\n    with: {{until: \"${{steps.s{p}.outputs.waited_ms}} >= 0\"}}"
            );
        }
    }
    y
}

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    items: usize,
    baseline_ms: f64,
    work_ms: f64,
    ratio: f64,
    per_item_us: f64,
    peak_mib: Option<f64>,
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Row {
    fn new(
        items: usize,
        baseline: std::time::Duration,
        work: std::time::Duration,
        peak_mib: Option<f64>,
    ) -> Self {
        Row {
            items,
            baseline_ms: ms(baseline),
            work_ms: ms(work),
            ratio: ms(work) / ms(baseline).max(1e-6),
            per_item_us: work.as_secs_f64() * 1e6 / items.max(1) as f64,
            peak_mib,
        }
    }
}

/// Parses, decodes and validates one chain; the baseline parses it only.
fn validate_once(n: usize, reversed: bool) -> Result<Row, BenchError> {
    let text = chain_yaml(n, reversed);
    let registry = crate::registry::standard();
    let file = SourceFile::new("scale.yaml", text);
    let t = Instant::now();
    let mut diags = crate::diag::Diagnostics::default();
    let parsed = crate::yaml::parse(&file, &mut diags);
    let baseline = t.elapsed();
    drop(parsed);
    let peak_ok = reset_peak();
    let t = Instant::now();
    let (rb, _) =
        crate::runbook::parse::parse_runbook(&file, String::new()).map_err(BenchError::Runbook)?;
    let (diags, plan) = crate::runbook::validate::validate_runbook(&rb, None, &registry);
    let work = t.elapsed();
    let peak = if peak_ok { peak_mib() } else { None };
    if diags.has_errors() || plan.is_none() {
        return Err(BenchError::Runbook(diags));
    }
    Ok(Row::new(n, baseline, work, peak))
}

/// A journal of `records` records: a run start, then started/finished
/// pairs of distinct steps (the fold indexes every step), then the end.
fn journal_bytes(records: usize) -> Result<Vec<u8>, BenchError> {
    let mut out = Vec::with_capacity(records * 400);
    let mut chain = super::Chained::new();
    let mut push = |event: Event, out: &mut Vec<u8>| chain.push(event, out);
    push(
        Event::RunStarted {
            run_id: "bench-fold".into(),
            runbook: journal::FileRef {
                path: "scale.yaml".into(),
                sha256: String::new(),
                name: "scale".into(),
            },
            environment: None,
            mode: Mode::Drill,
            operator: "bench".into(),
            host: "bench".into(),
            pid: 0,
            params: Default::default(),
            target_region: None,
            source_region: None,
            options: RunOptions::default(),
            failed_at_ms: None,
            rto_target_ms: None,
            rpo_target_ms: None,
            drctl_version: env!("CARGO_PKG_VERSION").into(),
            lease_mode: None,
            proofs: Some(Vec::new()),
        },
        &mut out,
    )?;
    let pairs = records.saturating_sub(2) / 2;
    for i in 0..pairs {
        let step = format!("s{i}");
        push(
            Event::StepStarted {
                step: step.clone(),
                action: "wait".into(),
                inputs: json!({"duration": "0ms"}),
            },
            &mut out,
        )?;
        let mut outputs = serde_json::Map::new();
        outputs.insert("waited_ms".into(), json!(0));
        push(
            Event::StepFinished {
                step,
                status: StepStatus::Succeeded,
                outputs,
                error: None,
                attempts: 1,
                duration_ms: 0,
            },
            &mut out,
        )?;
    }
    push(
        Event::RunFinished {
            status: journal::RunStatus::Succeeded,
            reason: None,
        },
        &mut out,
    )?;
    Ok(out)
}

/// Verifies and folds one journal in one streaming pass (what `status`
/// and `report` do); the baseline parses its lines as JSON.
fn fold_once(records: usize) -> Result<Row, BenchError> {
    let bytes = journal_bytes(records)?;
    let n = bytes.iter().filter(|b| **b == b'\n').count();
    let t = Instant::now();
    let mut parsed = 0usize;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value =
            serde_json::from_slice(line).map_err(|e| journal::JournalError::BadRecord {
                line: parsed + 1,
                reason: e.to_string(),
            })?;
        parsed += usize::from(v.is_object());
    }
    let baseline = t.elapsed();
    let peak_ok = reset_peak();
    let t = Instant::now();
    let view = crate::engine::view::fold_bytes(&bytes)?;
    let work = t.elapsed();
    let peak = if peak_ok { peak_mib() } else { None };
    let steps = view.steps.len();
    if steps != records.saturating_sub(2) / 2 || parsed != n {
        return Err(BenchError::RunEnded("fold lost records"));
    }
    Ok(Row::new(n, baseline, work, peak))
}

fn table(t: &mut String, what: &str, unit: &str, rows: &[Row]) {
    let _ = writeln!(
        t,
        "  {what:<34} {:>9} {:>12} {:>12} {:>8} {:>13} {:>10}",
        unit, "baseline", "work", "ratio", "per item", "peak RSS"
    );
    let first = rows.first().map(|r| r.per_item_us);
    for r in rows {
        let growth = first
            .filter(|f| *f > 0.0)
            .map(|f| format!("  ({:.2}x the smallest's per-item cost)", r.per_item_us / f))
            .unwrap_or_default();
        let _ = writeln!(
            t,
            "  {:<34} {:>9} {:>10.1}ms {:>10.1}ms {:>7.2}x {:>10.2} µs {:>10}{growth}",
            "",
            r.items,
            r.baseline_ms,
            r.work_ms,
            r.ratio,
            r.per_item_us,
            r.peak_mib
                .map(|m| format!("{m:.0} MiB"))
                .unwrap_or_else(|| "unknown".into()),
        );
    }
}

/// Runs the scaling benchmark for runbooks of `steps` sizes and journals
/// of `records` sizes; returns a human table and the JSON figures.
pub fn scale_bench(steps: &[usize], records: &[usize]) -> Result<(String, Value), BenchError> {
    let mut fwd = Vec::new();
    let mut rev = Vec::new();
    for &n in steps {
        fwd.push(validate_once(n, false)?);
        rev.push(validate_once(n, true)?);
    }
    let mut fold = Vec::new();
    for &n in records {
        fold.push(fold_once(n)?);
    }
    let mut t = String::new();
    let _ = writeln!(
        t,
        "scaling benchmark (baselines measured in the same run: YAML parse of the same runbook; JSON parse of the same journal lines)"
    );
    table(&mut t, "validate, chain in file order", "steps", &fwd);
    table(&mut t, "validate, chain declared reversed", "steps", &rev);
    table(&mut t, "verify + fold a journal", "records", &fold);
    let _ = writeln!(
        t,
        "  targets: 1,000 steps ≤ 50 ms; 10,000 steps ≤ 1 s and ≤ 200 MiB; per-item cost flat as sizes grow"
    );
    for r in fwd.iter().chain(&rev) {
        let target = match r.items {
            1_000 => Some((50.0, None)),
            10_000 => Some((1000.0, Some(200.0))),
            _ => None,
        };
        if let Some((limit_ms, limit_mib)) = target {
            let mem_ok = match (limit_mib, r.peak_mib) {
                (None, _) => Some(true),
                (Some(l), Some(m)) => Some(m <= l),
                (Some(_), None) => None,
            };
            let _ = writeln!(
                t,
                "  {} steps: {:.1} ms -> {}{}",
                r.items,
                r.work_ms,
                if r.work_ms <= limit_ms {
                    "met"
                } else {
                    "NOT met"
                },
                match (limit_mib, mem_ok) {
                    (Some(_), Some(true)) => ", memory met".to_string(),
                    (Some(_), Some(false)) => ", memory NOT met".to_string(),
                    (Some(_), None) => ", memory unknown".to_string(),
                    (None, _) => String::new(),
                }
            );
        }
    }
    let v = json!({
        "validate_forward": fwd,
        "validate_reversed": rev,
        "fold": fold,
    });
    Ok((t, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workloads are what they claim: the chain validates with one
    /// wave per step, and the journal folds to one view per step.
    #[test]
    fn workloads_are_valid_and_complete() {
        let r = validate_once(50, true).expect("valid chain");
        assert_eq!(r.items, 50);
        let f = fold_once(102).expect("valid journal");
        assert_eq!(f.items, 102);
        let rb = crate::runbook::parse::parse_runbook(
            &SourceFile::new("s.yaml", chain_yaml(5, true)),
            String::new(),
        )
        .expect("parses")
        .0;
        let (_, plan) =
            crate::runbook::validate::validate_runbook(&rb, None, &crate::registry::standard());
        assert_eq!(plan.expect("plan").waves.len(), 5);
        // The streaming fold sees what verify-then-fold sees, torn tail
        // included.
        let mut bytes = journal_bytes(12).expect("journal");
        bytes.extend_from_slice(b"{\"torn");
        let streamed = crate::engine::view::fold_bytes(&bytes).expect("folds");
        let whole =
            crate::engine::view::fold(&journal::verify(&bytes).expect("verifies")).expect("view");
        assert_eq!(
            serde_json::to_value(&streamed).expect("json"),
            serde_json::to_value(&whole).expect("json")
        );
        assert_eq!(streamed.torn_tail, 6);
        assert_eq!(streamed.steps.len(), 5);
        assert!(matches!(
            crate::engine::view::fold_bytes(b""),
            Err(journal::JournalError::NeverStarted)
        ));
    }
}
