//! RTO honesty through the real binary: recovery is claimed only by steps
//! that prove it (journaled at run start), measured to the end of the last
//! one across resumes, and a failed proof is "not recovered" whatever its
//! `on_failure` says. The lab-based RPO tests are in `tests/postgres.rs`.

use drctl_tests::{TinyHttp, Work};
use serde_json::Value;

/// The outage check (a closed port, expected to fail) and one proof.
fn runbook(smoke_url: &str, smoke_policy: &str) -> String {
    format!(
        r#"name: proof
targets: {{rto: 1m, rpo: 5s}}
steps:
  - id: confirm-outage
    action: http.check
    with: {{url: "http://127.0.0.1:1/health", expect_failure: true, attempt_timeout: 2s}}
  - id: gate
    action: exec
    needs: [confirm-outage]
    with: {{argv: [test, -f, flag], idempotent: true}}
  - id: pause
    action: wait
    needs: [gate]
    with: {{duration: 300ms}}
  - id: smoke
    action: http.check
    needs: [pause]
    on_failure: {smoke_policy}
    with: {{url: "{smoke_url}", attempt_timeout: 2s}}
  - id: finish
    action: wait
    needs: [smoke]
    with: {{duration: 1ms}}
"#
    )
}

fn report_json(w: &Work, run: &str) -> Value {
    let o = w.run(&["--output", "json", "report", run, "--format", "json"]);
    assert_eq!(o.code, 0, "{o:?}");
    serde_json::from_str(o.stdout.trim()).expect("report json")
}

#[test]
fn a_drill_whose_only_proof_fails_with_continue_is_not_recovered() {
    let w = Work::new();
    w.write("flag", "");
    let bad = TinyHttp::start(500, "{}");
    let rb = w.write("rb.yaml", &runbook(&bad.url("/health"), "continue"));
    let o = w.run(&["drill", rb.to_str().unwrap(), "--yes"]);
    // The run itself succeeds (on_failure: continue), the target is not met.
    assert_eq!(o.code, 12, "{o:?}");
    assert!(
        o.stdout
            .contains("RTO  not recovered: proof step `smoke` failed (target 1m: not met"),
        "{o:?}"
    );
    let run = w.runs()[0].clone();
    // Through the store, so the test runs on both backends.
    let hist = drctl_tests::block_on(w.store().read_history("drills")).unwrap();
    let rec = hist.last().cloned().unwrap();
    assert_eq!(rec["run_id"], run.as_str(), "{rec}");
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_eq!(rec["rto_met"], false, "{rec}");
    assert_eq!(rec["rto_ms"], Value::Null, "{rec}");
    // No RPO step: unknown, not met, never 0.
    assert_eq!(rec["rpo_met"], Value::Null, "{rec}");
    assert_eq!(rec["rpo_time_ms"], Value::Null, "{rec}");
    let report = w.run(&["report", &run]);
    assert!(
        report
            .stdout
            .contains("**Not recovered**: proof step `smoke` failed; no RTO is claimed"),
        "{report:?}"
    );
    assert!(
        report
            .stdout
            .contains("Steps that prove recovery: `smoke`."),
        "{report:?}"
    );
    // The decision is in the journal, not re-read from the runbook.
    let start = &w.journal(&run)[0];
    assert_eq!(start["proofs"], serde_json::json!(["smoke"]), "{start}");
}

#[test]
fn a_runbook_without_a_proof_claims_no_rto() {
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        "name: noproof\ntargets: {rto: 1m}\nsteps:\n  - id: confirm-outage\n    action: http.check\n    with: {url: \"http://127.0.0.1:1/\", expect_failure: true}\n  - id: smoke\n    action: http.check\n    proves_recovery: false\n    needs: [confirm-outage]\n    with: {url: \"http://127.0.0.1:1/\", expect_failure: true}\n",
    );
    let o = w.run(&["drill", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(o.code, 12, "{o:?}");
    assert!(
        o.stdout
            .contains("RTO  not claimed: the runbook has no step that proves recovery"),
        "{o:?}"
    );
    let status = w.run(&["status", &w.runs()[0]]);
    assert!(
        status
            .stdout
            .contains("RTO: not claimed: the runbook has no step that proves recovery"),
        "{status:?}"
    );
}

/// kill -9 after `confirm-outage`, a resume that fails at `gate` (the rest
/// journaled "not started"), a resume that finishes: RTO runs to the end
/// of `smoke` (the last proof, in the third process), and the report lists
/// no succeeded step under "Skipped".
#[test]
fn rto_after_kill_and_resumes_ends_at_the_last_proof() {
    let w = Work::new();
    let ok = TinyHttp::start(200, "{}");
    let rb = w.write("rb.yaml", &runbook(&ok.url("/health"), "abort"));
    let failed_at = drctl::journal::now_rfc3339();
    let mut c = w.cmd(&[
        "run",
        rb.to_str().unwrap(),
        "--yes",
        "--failed-at",
        &failed_at,
    ]);
    // seq 0 run_started, 1 step_started(confirm-outage), 2 its finish
    // (group-committed with gate's start).
    c.env("DRCTL_TEST_CRASH_AFTER_SEQ", "2");
    let o = drctl_tests::Out::from(c.output().unwrap());
    assert_eq!(o.code, -1, "expected SIGKILL: {o:?}");
    let run = w.runs()[0].clone();
    let j = w.journal(&run);
    assert!(
        j.iter()
            .any(|r| r["type"] == "step_finished" && r["step"] == "confirm-outage"),
        "{j:?}"
    );
    let o = w.run(&["resume", &run, "--yes"]);
    assert_eq!(o.code, 5, "gate fails without the flag: {o:?}");
    let mid = report_json(&w, &run);
    assert_eq!(mid["measurements"]["rto_ms"], Value::Null, "{mid}");
    w.write("flag", "");
    let o = w.run(&["resume", &run, "--yes"]);
    assert_eq!(o.code, 0, "{o:?}");
    let v = report_json(&w, &run);
    let m = &v["measurements"];
    assert_eq!(m["recovery_step"], "smoke", "{m}");
    let smoke = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "smoke")
        .unwrap();
    assert_eq!(smoke["action"], "http.check", "{smoke}");
    let failed_ms = m["failed_at_ms"].as_u64().unwrap();
    assert_eq!(
        m["rto_ms"].as_u64().unwrap(),
        smoke["finished_ms"].as_u64().unwrap() - failed_ms,
        "{m}"
    );
    assert!(
        m["rto_ms"].as_u64().unwrap() >= 300,
        "the 300ms pause is inside the RTO: {m}"
    );
    assert_eq!(m["rto_verdict"]["verdict"], "met", "{m}");
    let md = w.run(&["report", &run]).stdout;
    assert!(
        md.contains("to the end of `smoke`, the last step that proves recovery"),
        "{md}"
    );
    assert!(!md.contains("## Skipped steps"), "{md}");
}

/// `--failed-at` in the future (or before 1970) is refused before anything
/// runs: an RTO from a failure that has not happened would be made up.
#[test]
fn a_failure_time_in_the_future_is_refused_before_anything_runs() {
    let w = Work::new();
    let ok = TinyHttp::start(200, "{}");
    let rb = w.write("rb.yaml", &runbook(&ok.url("/health"), "abort"));
    let rb = rb.to_str().unwrap();
    for t in ["2999-01-01T00:00:00Z", "1969-12-31T23:00:00Z"] {
        let o = w.run(&["run", rb, "--yes", "--failed-at", t]);
        assert_eq!(o.code, 2, "{t}: {o:?}");
        assert!(o.stderr.contains("--failed-at"), "{t}: {o:?}");
    }
    assert!(w.runs().is_empty(), "a run was started: {:?}", w.runs());
}
