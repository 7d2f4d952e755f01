//! Snapshots of the text an operator reads: the plan, `status`, the
//! Markdown report, and the drill summary. Run ids, times, durations,
//! hashes and paths are replaced by placeholders, so a snapshot changes
//! only when the wording or the structure does.

use drctl_tests::regex_escape;
use drctl_tests::{Lab, Work};

/// Placeholders for what differs between runs and machines.
fn settings(w: &Work) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    let root = w.path().display().to_string();
    s.add_filter(&regex_escape(&root), "[WORK]");
    s.add_filter(r"\d{8}T\d{9}Z-[0-9a-f]{6}", "[RUN_ID]");
    s.add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "[TIME]");
    s.add_filter(r"\b[0-9a-f]{16,64}\b", "[HASH]");
    // A duration in a padded column, then any other: the padding after a
    // duration varies with its width.
    s.add_filter(r"\b\d+(\.\d+)?(ms|µs|s|m)\b {2,}", "[DUR]  ");
    s.add_filter(r"\b\d+(\.\d+)?(ms|µs|s|m)\b", "[DUR]");
    s.add_filter(r"127\.0\.0\.\d+:\d+", "[ADDR]");
    s.add_filter(r"pid \d+", "pid [PID]");
    s.add_filter(r"drctl \d+\.\d+\.\d+", "drctl [VERSION]");
    s.add_filter(
        r#""(run_drctl_version|rendered_by)":"[^"]*""#,
        r#""$1":"[VERSION]""#,
    );
    s.add_filter(
        &format!(r"\b{}\b", regex_escape(&drctl::journal::hostname())),
        "[HOST]",
    );
    s
}

const RUNBOOK: &str = r#"name: checkout-failover
description: A small runbook whose texts are snapshot-tested.
targets: {rto: 1m, rpo: 5s}
params:
  pause: {default: 1ms, description: how long the pause waits}
steps:
  - id: prepare
    action: exec
    description: write a marker
    with: {argv: [sh, -c, "echo ready > marker"], unless: [test, -f, marker]}
  - id: pause
    action: wait
    needs: [prepare]
    with: {duration: "${params.pause}"}
  - id: probe
    action: exec
    needs: [pause]
    on_failure: continue
    with: {argv: ["false"], idempotent: true}
  - id: finish
    action: exec
    needs: [probe]
    with: {argv: ["true"], idempotent: true}
"#;

#[test]
fn plan_status_and_report_read_as_reviewed() {
    let w = Work::new();
    let rb = w.write("rb.yaml", RUNBOOK);
    let rb = rb.to_str().unwrap();
    let s = settings(&w);
    let _guard = s.bind_to_scope();
    let plan = w.run(&["plan", rb]);
    assert_eq!(plan.code, 0, "{plan:?}");
    insta::assert_snapshot!("plan", plan.stdout);
    // The preflight of every step, and none of them executed: `prepare`
    // would write the marker, and even its `unless` is not run.
    let check = w.run(&["plan", rb, "--check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        !w.path().join("marker").exists(),
        "plan --check ran a command"
    );
    insta::assert_snapshot!("plan_check", check.stdout);
    // A declared failure time: the report and status then say why no RTO
    // is claimed (no step of this runbook proves recovery).
    let failed_at = drctl::journal::now_rfc3339();
    let run = w.run(&["run", rb, "--yes", "--failed-at", &failed_at]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = w.runs()[0].clone();
    let status = w.run(&["status", &id]);
    assert_eq!(status.code, 0, "{status:?}");
    insta::assert_snapshot!("status", status.stdout);
    let report = w.run(&["report", &id]);
    assert_eq!(report.code, 0, "{report:?}");
    insta::assert_snapshot!("report", report.stdout);
}

#[test]
fn the_drill_summary_reads_as_reviewed() {
    let lab = Lab::up();
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    let o = lab.w.run(&[
        "drill",
        rb.to_str().unwrap(),
        "--env",
        &lab.env(),
        "--yes",
        "--inject-lag",
        "300ms",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    let mut s = settings(&lab.w);
    // Measured figures vary from run to run; the words around them do not.
    s.add_filter(r"\b\d+ (WAL bytes|heartbeat rows)", "[N] $1");
    s.add_filter(r"0/[0-9A-F]+", "[LSN]");
    s.add_filter(r"\b\d+(\.\d+)?s of writes", "[DUR] of writes");
    s.add_filter(
        r"\b\d+ vs truth \d+ \((equal|estimate \d+ (above|below))\)",
        "[N] vs truth [N] ([COMPARISON])",
    );
    s.add_filter(
        r"\((equal|estimate \[DUR\] (above|below))\)",
        "([COMPARISON])",
    );
    let _guard = s.bind_to_scope();
    let summary = &o.stdout[o.stdout.find("drill ").unwrap_or(0)..];
    insta::assert_snapshot!("drill_summary", summary);
}
