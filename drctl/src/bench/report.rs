//! `drctl bench report`: the cost of rendering a report from a large
//! journal, beside the floor every reader of that journal pays in the same
//! run: verifying its hash chain and folding it into a view
//! (`engine::view::fold_bytes`; `drctl runs` does only that). Each figure
//! is a real `drctl` process on a directory store holding the journal,
//! timed from start to exit (read, verify, fold, measure, render, print),
//! so the ratio to the baseline is the cost the report adds. Targets: a
//! 100,000-record journal in ≤ 1 s and ≤ 100 MiB peak resident memory
//! (each process's own `ru_maxrss`, measured apart from this one's: see
//! [`run_once`]).

use std::fmt::Write as _;
use std::io::Write;
use std::time::Instant;

use serde_json::{json, Value};

use super::BenchError;
use crate::journal::{self, ErrorInfo, Event, FailureKind, RunOptions, StepStatus};
#[cfg(test)]
use crate::report::{self, Format, Inputs};
use crate::runbook::Mode;

/// The `run_started` of the benchmark's drill: a declared failure time,
/// targets, and the last step as the proof of recovery.
pub(crate) fn run_started(run_id: &str) -> Event {
    Event::RunStarted {
        run_id: run_id.into(),
        runbook: journal::FileRef {
            path: "bench.yaml".into(),
            sha256: "0".repeat(64),
            name: "bench".into(),
        },
        environment: None,
        mode: Mode::Drill,
        operator: "bench".into(),
        host: "bench".into(),
        pid: 0,
        params: Default::default(),
        target_region: Some("dr".into()),
        source_region: Some("primary".into()),
        options: RunOptions::default(),
        failed_at_ms: Some(journal::now_ms()),
        rto_target_ms: Some(120_000),
        rpo_target_ms: Some(5_000),
        drctl_version: env!("CARGO_PKG_VERSION").into(),
        lease_mode: None,
        proofs: None,
    }
}

/// Writes a drill journal of about `records` records to `out`, one
/// record at a time (the benchmarking process never holds the journal,
/// so its own resident set stays small: see [`run_once`]): a start with a
/// declared failure time and targets, steps started and finished (every
/// tenth one with a failed attempt first, every hundredth an approval
/// with its approval record), a proof step last, the end. Returns the
/// records and steps written.
pub fn write_journal(records: usize, out: &mut dyn Write) -> Result<(usize, usize), BenchError> {
    let mut chain = super::Chained::new();
    let mut push = |event: Event, out: &mut dyn Write| chain.push(event, out);
    // Per 10 steps: 10 starts, 10 finishes, 1 failed attempt.
    let steps = records.saturating_sub(2) * 10 / 21;
    let last = format!("s{}", steps.saturating_sub(1));
    let mut start = run_started("bench-report");
    if let Event::RunStarted { proofs, .. } = &mut start {
        *proofs = Some(vec![last]);
    }
    push(start, out)?;
    for i in 0..steps {
        let step = format!("s{i}");
        let action = if i % 100 == 99 { "approval" } else { "wait" };
        push(
            Event::StepStarted {
                step: step.clone(),
                action: action.into(),
                inputs: json!({"duration": "0ms"}),
            },
            out,
        )?;
        if i % 10 == 5 {
            push(
                Event::StepAttemptFailed {
                    step: step.clone(),
                    attempt: 1,
                    error: ErrorInfo {
                        message: "connection refused".into(),
                        hint: Some("is the server up?".into()),
                        kind: FailureKind::Failed,
                    },
                    retry_in_ms: 0,
                },
                out,
            )?;
        }
        if action == "approval" {
            push(
                Event::Approval {
                    step: step.clone(),
                    by: "alice".into(),
                    at: journal::now_rfc3339(),
                    via: "drctl approve".into(),
                },
                out,
            )?;
        }
        let mut outputs = serde_json::Map::new();
        outputs.insert("waited_ms".into(), json!(0));
        push(
            Event::StepFinished {
                step,
                status: StepStatus::Succeeded,
                outputs,
                error: None,
                attempts: if i % 10 == 5 { 2 } else { 1 },
                duration_ms: 0,
            },
            out,
        )?;
    }
    push(
        Event::RunFinished {
            status: journal::RunStatus::Succeeded,
            reason: None,
        },
        out,
    )?;
    out.flush()?;
    Ok((chain.records(), steps))
}

/// [`write_journal`] into memory (tests).
#[cfg(test)]
pub fn journal_bytes(records: usize) -> Result<Vec<u8>, BenchError> {
    let mut out = Vec::with_capacity(records * 300);
    write_journal(records, &mut out)?;
    Ok(out)
}

/// This process's peak resident set so far (`VmHWM`), in MiB.
fn own_peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    what: &'static str,
    /// Median wall time of the rounds, process start to exit.
    ms: f64,
    ratio: f64,
    /// The largest peak resident set of the rounds (`ru_maxrss`).
    peak_mib: Option<f64>,
    /// The peak is at most the benchmarking process's own (see
    /// [`run_once`]): only a bound, printed as `≤`.
    peak_is_bound: bool,
    bytes: u64,
}

/// Runs this drctl on the bench store once: wall time in ms, peak RSS in
/// MiB (from `wait4`, `None` where the kernel gives none), output bytes.
/// On Linux a child's `ru_maxrss` is at least its parent's peak resident
/// set when it was spawned (`exec` keeps the larger of the old and the new
/// image's high-water marks), so the benchmarking process holds no
/// journal and no view: its own peak, printed beside the figures, is a
/// few MiB, and a figure not above it is printed as a bound.
fn run_once(
    state: &std::path::Path,
    args: &[&str],
    out: &std::path::Path,
) -> Result<(f64, Option<f64>), BenchError> {
    let exe = std::env::current_exe()?;
    let file = std::fs::File::create(out)?;
    let t = Instant::now();
    let child = std::process::Command::new(exe)
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("DRCTL_STATE")
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut status = 0i32;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting on our own child, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(BenchError::RunEnded("a benchmarked drctl command failed"));
    }
    // ru_maxrss is in KiB on Linux.
    let peak = (usage.ru_maxrss > 0).then(|| usage.ru_maxrss as f64 / 1024.0);
    Ok((ms, peak))
}

const ROUNDS: usize = 3;

/// Each workload is a real `drctl` process on a directory store holding
/// the journal, so the time and the peak memory are what an operator's
/// `drctl report` costs (the process's own few MB included).
pub fn report_bench(records: usize, dir: &std::path::Path) -> Result<(String, Value), BenchError> {
    let _ = std::fs::remove_dir_all(dir);
    crate::store::DirStore::open(dir)?;
    let run_dir = dir.join("runs").join("bench-report");
    std::fs::create_dir_all(&run_dir)?;
    let path = run_dir.join("journal.jsonl");
    let (n, steps) = write_journal(
        records,
        &mut std::io::BufWriter::new(std::fs::File::create(&path)?),
    )?;
    let journal_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
    let out = dir.join("bench-output");
    let mut rows: Vec<Row> = Vec::new();
    let workloads: [(&'static str, &[&str]); 6] = [
        ("baseline: runs (verify + fold)", &["runs"]),
        ("report verify (md)", &[]),
        ("report md", &["report", "bench-report", "--format", "md"]),
        (
            "report md --postmortem",
            &["report", "bench-report", "--postmortem"],
        ),
        (
            "report json",
            &["report", "bench-report", "--format", "json"],
        ),
        (
            "report html",
            &["report", "bench-report", "--format", "html"],
        ),
    ];
    let md_file = dir.join("report.md");
    for (what, args) in workloads {
        let verify_args;
        let args: &[&str] = if args.is_empty() {
            // Verify the Markdown report rendered by the first md round.
            verify_args = [
                "report",
                "verify",
                md_file.to_str().unwrap_or_default(),
                "--run",
                "bench-report",
            ];
            if !md_file.exists() {
                run_once(dir, &["report", "bench-report", "--format", "md"], &md_file)?;
            }
            &verify_args
        } else {
            args
        };
        let mut times = Vec::with_capacity(ROUNDS);
        let mut peak: Option<f64> = None;
        for _ in 0..ROUNDS {
            let (ms, p) = run_once(dir, args, &out)?;
            times.push(ms);
            peak = match (peak, p) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        times.sort_by(f64::total_cmp);
        let ms = times[ROUNDS / 2];
        let base = rows.first().map_or(ms, |b| b.ms);
        let own = own_peak_mib();
        rows.push(Row {
            what,
            ms,
            ratio: ms / base.max(1e-6),
            peak_mib: peak,
            peak_is_bound: matches!((peak, own), (Some(p), Some(o)) if p <= o),
            bytes: std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
        });
    }
    let _ = std::fs::remove_dir_all(dir);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "report benchmark: a {n}-record drill journal ({steps} steps, {journal_mb:.1} MB) on a directory store; each figure a real drctl process, median of {ROUNDS} (baseline in the same run: `drctl runs` on the same store, which verifies and folds the journal in one streaming pass and prints one line)"
    );
    let _ = writeln!(
        t,
        "  {:<34} {:>10} {:>8} {:>10} {:>10}",
        "", "time", "ratio", "peak RSS", "output"
    );
    for r in &rows {
        let _ = writeln!(
            t,
            "  {:<34} {:>8.1}ms {:>7.2}x {:>10} {:>10}",
            r.what,
            r.ms,
            r.ratio,
            match r.peak_mib {
                Some(m) if r.peak_is_bound => format!("≤ {m:.0} MiB"),
                Some(m) => format!("{m:.0} MiB"),
                None => "unknown".into(),
            },
            format!("{:.1} MB", r.bytes as f64 / 1e6)
        );
    }
    if n >= 100_000 {
        for r in rows.iter().skip(1) {
            let _ = writeln!(
                t,
                "  {}: time {} (≤ 1 s), memory {} (≤ 100 MiB)",
                r.what,
                if r.ms <= 1000.0 { "met" } else { "NOT met" },
                match r.peak_mib {
                    // A bound (`≤ m`) under the target meets it too.
                    Some(m) if m <= 100.0 => "met",
                    Some(_) => "NOT met",
                    None => "unknown",
                }
            );
        }
    }
    let own = own_peak_mib();
    let _ = writeln!(
        t,
        "  (peak RSS: each process's ru_maxrss; this benchmarking process's own peak, which a child's cannot read below: {})",
        own.map_or_else(|| "unknown".to_string(), |m| format!("{m:.0} MiB"))
    );
    let _ = writeln!(t, "  load average at the end: {}", load_average());
    Ok((
        t,
        json!({"records": n, "steps": steps, "journal_mb": journal_mb, "rows": rows, "bench_process_peak_mib": own, "load_average": load_average()}),
    ))
}

/// `/proc/loadavg`'s three averages: the machine may be shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workload is what it claims: it verifies, has the steps, the
    /// retries and the approvals, and a recovery that reports measure.
    #[test]
    fn the_workload_is_a_valid_drill_journal() {
        let bytes = journal_bytes(2_000).expect("journal");
        let view = crate::engine::view::fold_bytes(&bytes).expect("verifies");
        assert!(
            view.records >= 1_900 && view.records <= 2_100,
            "{}",
            view.records
        );
        assert_eq!(view.steps.len(), 951);
        assert_eq!(view.approvals.len(), 9);
        let m = crate::measure::from_view(&view).expect("measured");
        assert!(m.rto_ms.is_some());
        let html = report::render(&view, &Inputs::plain(Format::Html));
        assert_eq!(html.matches("data-step=").count(), 951);
    }
}
