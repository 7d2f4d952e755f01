//! Crash tests: kill -9 drctl after every journal record (every step
//! boundary) and in the middle of steps, resume, and check that every side
//! effect happened exactly once and every journal verifies.

use std::process::Stdio;
use std::time::Duration;

use drctl_tests::{wait_until, Work};

/// A diamond of `exec` steps, each appending its name to `witness` once,
/// guarded by `unless` (the documented way to make exec idempotent).
const RUNBOOK: &str = r#"
name: crash-witness
steps:
  - id: a
    action: exec
    with: {argv: [sh, -c, "echo a >> witness; sleep 0.05"], unless: [grep, -qx, a, witness]}
  - id: b
    action: exec
    needs: [a]
    with: {argv: [sh, -c, "echo b >> witness; sleep 0.1"], unless: [grep, -qx, b, witness]}
  - id: c
    action: exec
    needs: [a]
    with: {argv: [sh, -c, "echo c >> witness; sleep 0.05"], unless: [grep, -qx, c, witness]}
  - id: pause
    action: wait
    needs: [a]
    with: {duration: 50ms}
  - id: d
    action: exec
    needs: [b, c, pause]
    with: {argv: [sh, -c, "echo d >> witness"], unless: [grep, -qx, d, witness]}
"#;

fn check_witness(w: &Work, context: &str) {
    let text = w.read("witness");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec!["a", "b", "c", "d"],
        "{context}: witness {text:?}"
    );
}

/// Resumes until the run ends, as an operator would; returns attempts used.
fn resume_to_end(w: &Work, run: &str) {
    for _ in 0..3 {
        let o = w.run(&["resume", run]);
        // 20: it had already succeeded (the kill came after the end).
        if o.code == 0 || (o.code == 20 && o.stderr.contains("already ended: succeeded")) {
            return;
        }
        assert!(o.code == 7, "resume of {run} failed: {o:?}");
    }
    panic!("run {run} did not finish after 3 resumes");
}

#[test]
fn kill_after_every_record_then_resume() {
    // A clean run tells us how many records a full run writes.
    let clean = Work::new();
    let rb = clean.write("rb.yaml", RUNBOOK);
    assert_eq!(clean.run(&["run", rb.to_str().unwrap(), "--yes"]).code, 0);
    let total = clean.journal(&clean.runs()[0]).len() as u64;
    assert!(
        total >= 12,
        "expected start, 5x2 step records and end, got {total}"
    );
    for crash_at in 0..total - 1 {
        let w = Work::new();
        let rb = w.write("rb.yaml", RUNBOOK);
        let mut c = w.cmd(&["run", rb.to_str().unwrap(), "--yes"]);
        c.env("DRCTL_TEST_CRASH_AFTER_SEQ", crash_at.to_string());
        let o = drctl_tests::Out::from(c.output().unwrap());
        assert_eq!(
            o.code, -1,
            "crash point {crash_at}: expected SIGKILL, got {o:?}"
        );
        let run = w.runs()[0].clone();
        let st = w.run(&["status", &run]);
        assert_eq!(
            st.code, 0,
            "crash point {crash_at}: journal must verify: {st:?}"
        );
        // Records written in one group commit become durable together:
        // a kill after the last step's record can find `run_finished`
        // already on disk with it. Anything earlier must be resumable.
        if st.stdout.contains("status: succeeded") {
            assert!(
                crash_at + 2 >= total,
                "crash point {crash_at} of {total}: finished early: {st:?}"
            );
        } else {
            assert!(
                st.stdout.contains("incomplete"),
                "crash point {crash_at}: {st:?}"
            );
            resume_to_end(&w, &run);
        }
        check_witness(&w, &format!("crash after record {crash_at}"));
        let st = w.run(&["status", &run]);
        assert!(
            st.stdout.contains("status: succeeded"),
            "crash point {crash_at}: {st:?}"
        );
        assert_eq!(w.run(&["report", &run]).code, 0);
    }
}

#[test]
fn kill_in_the_middle_of_steps_then_resume() {
    // Kill at a spread of moments while steps are executing.
    for delay_ms in [15u64, 40, 70, 110, 160, 220] {
        let w = Work::new();
        let rb = w.write("rb.yaml", RUNBOOK);
        let mut child = w
            .cmd(&["run", rb.to_str().unwrap(), "--yes"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        // The killed process's command children die with it (PDEATHSIG):
        // none may outlive it and append to the witness behind the resume.
        assert!(
            wait_until(Duration::from_secs(5), || drctl_tests::processes_in(
                w.path()
            )
            .is_empty()),
            "killed after {delay_ms}ms: a step's command outlived drctl: {:?}",
            drctl_tests::processes_in(w.path())
        );
        let Some(run) = w.runs().first().cloned() else {
            continue;
        };
        // Killed while the first record was written: nothing ran, and
        // drctl says so rather than calling the journal damaged.
        let st = w.run(&["status", &run]);
        if st.code == 17 && st.stderr.contains("DRCTL-J009") {
            assert!(!w.path().join("witness").exists(), "a step ran: {st:?}");
            continue;
        }
        resume_to_end(&w, &run);
        check_witness(&w, &format!("killed after {delay_ms}ms"));
    }
}
