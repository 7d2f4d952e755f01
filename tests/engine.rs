//! The engine end to end through the real binary: concurrency, retries,
//! failure policies, approvals, signals, locks, journal integrity, secrets.

use std::process::Stdio;
use std::time::Duration;

use drctl_tests::{wait_until, TinyHttp, Work};
use serde_json::Value;

fn steps_of(j: &[Value], kind: &str) -> Vec<Value> {
    j.iter().filter(|r| r["type"] == kind).cloned().collect()
}

fn ts(j: &[Value], kind: &str, step: &str) -> u64 {
    j.iter()
        .find(|r| r["type"] == kind && r["step"] == step)
        .and_then(|r| r["ts_ms"].as_u64())
        .unwrap_or_else(|| panic!("no {kind} for {step}"))
}

#[test]
fn exec_http_wait_run_end_to_end_with_parallel_steps() {
    let w = Work::new();
    let http = TinyHttp::start(200, r#"{"status":"ok","n":3}"#);
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"
name: e2e
steps:
  - id: prepare
    action: exec
    with: {{argv: [sh, -c, "echo prepared > marker"], idempotent: true}}
  - id: left
    action: wait
    needs: [prepare]
    with: {{duration: 400ms}}
  - id: right
    action: wait
    needs: [prepare]
    with: {{duration: 400ms}}
  - id: health
    action: http.check
    needs: [prepare]
    with: {{url: "{}", json_pointer: /status, equals: ok}}
  - id: use-output
    action: wait
    needs: [health]
    with: {{until: "${{steps.health.outputs.status}} == 200"}}
  - id: done
    action: exec
    needs: [left, right, use-output]
    with: {{argv: [cat, marker], idempotent: true}}
"#,
            http.url("/health")
        ),
    );
    let o = w.run(&["run", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(o.code, 0, "{o:?}");
    let run = &w.runs()[0];
    let j = w.journal(run);
    // Independent steps overlap in time: each started before the other ended.
    let (ls, le) = (
        ts(&j, "step_started", "left"),
        ts(&j, "step_finished", "left"),
    );
    let (rs, re) = (
        ts(&j, "step_started", "right"),
        ts(&j, "step_finished", "right"),
    );
    assert!(
        ls < re && rs < le,
        "left {ls}..{le} right {rs}..{re} did not overlap"
    );
    assert!(ts(&j, "step_started", "done") >= le.max(re));
    let done = j
        .iter()
        .find(|r| r["type"] == "step_finished" && r["step"] == "done")
        .unwrap();
    assert_eq!(done["outputs"]["stdout"], "prepared\n");
    let st = w.run(&["status", run]);
    assert_eq!(st.code, 0, "{st:?}");
    assert!(st.stdout.contains("succeeded"), "{st:?}");
}

#[test]
fn retries_with_backoff_are_journaled() {
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        r#"
name: retry
steps:
  - id: flaky
    action: exec
    retry: {attempts: 4, initial: 50ms, max: 100ms}
    with:
      argv: [sh, -c, "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; [ $n -ge 3 ]"]
      idempotent: true
"#,
    );
    let o = w.run(&["run", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(o.code, 0, "{o:?}");
    let j = w.journal(&w.runs()[0]);
    assert_eq!(steps_of(&j, "step_attempt_failed").len(), 2);
    let fin = &steps_of(&j, "step_finished")[0];
    assert_eq!(fin["attempts"], 3);
}

#[test]
fn failure_policies_and_exit_codes() {
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        r#"
name: policies
steps:
  - id: soft
    action: exec
    on_failure: continue
    with: {argv: ["false"], idempotent: true}
  - id: after-soft
    action: exec
    needs: [soft]
    with: {argv: ["true"], idempotent: true}
  - id: hard
    action: exec
    needs: [after-soft]
    with: {argv: [sh, -c, "echo boom >&2; exit 3"], idempotent: true}
  - id: never
    action: exec
    needs: [hard]
    with: {argv: ["true"], idempotent: true}
  - id: drill-only
    action: exec
    when: drill
    with: {argv: ["true"], idempotent: true}
"#,
    );
    let o = w.run(&["run", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.contains("exited with 3"), "{o:?}");
    let run = &w.runs()[0];
    let j = w.journal(run);
    let skipped: Vec<String> = steps_of(&j, "step_skipped")
        .iter()
        .map(|r| r["step"].as_str().unwrap().to_string())
        .collect();
    assert!(
        skipped.contains(&"never".to_string()) && skipped.contains(&"drill-only".to_string()),
        "{skipped:?}"
    );
    let report = w.run(&["report", run]);
    assert!(report.stdout.contains("boom"), "{report:?}");
    assert!(report.stdout.contains("**failed**"), "{report:?}");
}

#[test]
fn secrets_never_leak() {
    let w = Work::new();
    let sentinel = "SENTINEL-7f3a9c-do-not-print";
    let http = TinyHttp::start(200, "{}");
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"
name: secrets
params:
  token: {{default: "env:DRCTL_TEST_SECRET", secret: true}}
steps:
  - id: print
    action: exec
    with:
      argv: [sh, -c, "echo token=$TOKEN; echo also $TOKEN >&2"]
      env: {{TOKEN: "${{params.token}}"}}
      idempotent: true
  - id: header
    action: http.check
    with:
      url: "{}"
      headers: {{Authorization: "${{params.token}}"}}
  - id: fail-loudly
    action: exec
    needs: [print, header]
    with:
      argv: [sh, -c, "echo failing with $TOKEN >&2; exit 1"]
      env: {{TOKEN: "${{params.token}}"}}
      idempotent: true
"#,
            http.url("/")
        ),
    );
    for fmt in ["text", "json"] {
        let mut c = w.cmd(&[
            "--log-level",
            "debug",
            "--log-format",
            fmt,
            "run",
            rb.to_str().unwrap(),
            "--yes",
        ]);
        c.env("DRCTL_TEST_SECRET", sentinel);
        let o = drctl_tests::Out::from(c.output().unwrap());
        assert_eq!(o.code, 5, "{o:?}");
        assert!(
            !o.stdout.contains(sentinel) && !o.stderr.contains(sentinel),
            "leaked on the terminal: {o:?}"
        );
        assert!(o.stderr.contains("***"), "expected a masked value: {o:?}");
    }
    for run in w.runs() {
        let journal = String::from_utf8(w.journal_bytes(&run)).unwrap();
        assert!(!journal.contains(sentinel), "leaked into the journal");
        assert!(
            journal.contains("token=***"),
            "stdout should be kept, masked"
        );
        for f in ["md", "json"] {
            let r = w.run(&["report", &run, "--format", f]);
            assert!(!r.stdout.contains(sentinel), "leaked into the report");
        }
    }
}

#[test]
fn one_active_run_per_environment() {
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        "name: slow\nsteps:\n  - id: s\n    action: exec\n    with: {argv: [sleep, '1.5'], idempotent: true}\n",
    );
    let mut first = w
        .cmd(&["run", rb.to_str().unwrap(), "--yes"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !w.runs().is_empty()));
    let second = w.run(&["run", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(second.code, 6, "{second:?}");
    assert!(
        second.stderr.contains(&w.runs()[0]),
        "must name the holder: {second:?}"
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(w.runs().len(), 1, "the refused run must leave no journal");
}

#[test]
fn a_changed_byte_is_detected_everywhere() {
    // Edited behind drctl's back: the file of a directory store, the rows
    // of a PostgreSQL one.
    let w = Work::new();
    let rb = w.write("rb.yaml", "name: t\nsteps:\n  - id: a\n    action: wait\n    with: {duration: 1ms}\n  - id: b\n    action: wait\n    needs: [a]\n    with: {duration: 1ms}\n");
    assert_eq!(w.run(&["run", rb.to_str().unwrap(), "--yes"]).code, 0);
    let run = w.runs()[0].clone();
    let good = w.journal_bytes(&run);
    // A sample of positions across every record, including the last one.
    let positions: Vec<usize> = (0..good.len())
        .step_by(37)
        .chain([good.len() - 2])
        .collect();
    for pos in positions {
        let mut bad = good.clone();
        if bad[pos] == b'\n' {
            continue;
        }
        bad[pos] = if bad[pos] == b'1' { b'2' } else { b'1' };
        w.rewrite_journal(&run, &bad);
        for args in [
            vec!["status", run.as_str()],
            vec!["report", run.as_str()],
            vec!["resume", run.as_str()],
        ] {
            let o = w.run(&args);
            assert_eq!(
                o.code, 9,
                "byte {pos} changed, `{}` returned {o:?}",
                args[0]
            );
            assert!(o.stderr.contains("DRCTL-J0"), "{o:?}");
        }
    }
    w.rewrite_journal(&run, &good);
    assert_eq!(w.run(&["status", &run]).code, 0);
}

#[test]
fn approval_parks_the_run_until_approved() {
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        "name: gate\nsteps:\n  - id: ok-to-promote\n    action: approval\n    timeout: 1s\n    with: {message: promote?}\n  - id: after\n    action: exec\n    needs: [ok-to-promote]\n    with: {argv: [touch, promoted], idempotent: true}\n",
    );
    let o = w.run(&["run", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(o.code, 8, "{o:?}");
    let run = w.runs()[0].clone();
    assert!(!w.path().join("promoted").exists());
    let bad = w.run(&["approve", &run, "after"]);
    assert_eq!(bad.code, 3, "{bad:?}");
    let ap = w.run(&["approve", &run, "ok-to-promote", "--as", "alice"]);
    assert_eq!(ap.code, 0, "{ap:?}");
    let r = w.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(w.path().join("promoted").exists());
    let report = w.run(&["report", &run]).stdout;
    assert!(
        report.contains("| alice | approved `ok-to-promote` | via drctl approve |"),
        "{report}"
    );
    // In drill mode the gate is skipped by default.
    let d = w.run(&["run", rb.to_str().unwrap(), "--yes", "--mode", "drill"]);
    assert_eq!(d.code, 0, "{d:?}");
}

#[test]
fn ctrl_c_finishes_in_flight_steps_then_resume_completes() {
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        "name: sig\nsteps:\n  - id: slow\n    action: exec\n    with: {argv: [sh, -c, 'sleep 0.6; echo slow >> w'], unless: [grep, -qx, slow, w]}\n  - id: next\n    action: exec\n    needs: [slow]\n    with: {argv: [sh, -c, 'echo next >> w'], unless: [grep, -qx, next, w]}\n",
    );
    let child = w
        .cmd(&["run", rb.to_str().unwrap(), "--yes"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || w
        .runs()
        .first()
        .is_some_and(|r| w.journal(r).len() >= 2)));
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = drctl_tests::Out::from(child.wait_with_output().unwrap());
    assert_eq!(o.code, 7, "{o:?}");
    assert_eq!(
        w.read("w"),
        "slow\n",
        "in-flight step finished, next did not start"
    );
    let run = w.runs()[0].clone();
    let r = w.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(w.read("w"), "slow\nnext\n");
}

#[test]
fn abort_stops_a_run() {
    let w = Work::new();
    let rb = w.write("rb.yaml", "name: ab\nsteps:\n  - id: a\n    action: wait\n    with: {duration: 500ms}\n  - id: b\n    action: wait\n    needs: [a]\n    with: {duration: 1ms}\n");
    let child = w
        .cmd(&["run", rb.to_str().unwrap(), "--yes"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !w.runs().is_empty()));
    let run = w.runs()[0].clone();
    assert_eq!(w.run(&["abort", &run]).code, 0);
    let o = drctl_tests::Out::from(child.wait_with_output().unwrap());
    assert_eq!(o.code, 7, "{o:?}");
    let st = w.run(&["status", &run]);
    assert!(st.stdout.contains("aborted by test-operator"), "{st:?}");
    let again = w.run(&["resume", &run]);
    assert_eq!(again.code, 20, "an aborted run stays ended: {again:?}");
    assert!(again.stderr.contains("aborted"), "{again:?}");
}

#[test]
fn resume_refuses_a_changed_runbook_unless_allowed() {
    let w = Work::new();
    let rb = w.write("rb.yaml", "name: c\nsteps:\n  - id: a\n    action: exec\n    with: {argv: ['false'], idempotent: true}\n");
    assert_eq!(w.run(&["run", rb.to_str().unwrap(), "--yes"]).code, 5);
    let run = w.runs()[0].clone();
    w.write("rb.yaml", "name: c\nsteps:\n  - id: a\n    action: exec\n    with: {argv: ['true'], idempotent: true}\n");
    let o = w.run(&["resume", &run]);
    assert_eq!(o.code, 11, "{o:?}");
    assert!(o.stderr.contains("DRCTL-R001"), "{o:?}");
    let ok = w.run(&["resume", &run, "--allow-runbook-change"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(w
        .run(&["report", &run])
        .stdout
        .contains("runbook had changed"));
}

#[test]
fn interrupted_unguarded_exec_needs_an_operator_decision() {
    let w = Work::new();
    let rb = w.write("rb.yaml", "name: d\nsteps:\n  - id: risky\n    action: exec\n    with: {argv: [sh, -c, 'echo x >> w; sleep 5']}\n");
    let mut child = w
        .cmd(&["run", rb.to_str().unwrap(), "--yes"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || w.read("w") == "x\n"));
    child.kill().unwrap();
    child.wait().unwrap();
    let run = w.runs()[0].clone();
    let o = w.run(&["resume", &run]);
    assert_eq!(o.code, 15, "{o:?}");
    assert!(o.stderr.contains("--mark-done risky"), "{o:?}");
    assert!(
        o.stderr.contains("took over the lock"),
        "stale lease must be announced: {o:?}"
    );
    let m = w.run(&["resume", &run, "--mark-done", "risky"]);
    assert_eq!(m.code, 0, "{m:?}");
    assert_eq!(w.read("w"), "x\n", "marked done: not executed again");
}

#[test]
fn notify_reaches_slack_and_pagerduty_without_leaking_their_secrets() {
    let w = Work::new();
    let slack = TinyHttp::start(200, "ok");
    let pd = TinyHttp::start(202, r#"{"status":"success"}"#);
    let env = w.write(
        "env.yaml",
        &format!(
            "name: n\nactive_region: a\nregions:\n  a: {{}}\n  b: {{}}\nnotify:\n  - {{type: slack, name: chat, webhook_url: \"env:T_SLACK\", channel: \"#dr\"}}\n  - {{type: pagerduty, name: pager, routing_key: \"env:T_PD\", url: \"{}\"}}\n",
            pd.url("/v2/enqueue")
        ),
    );
    let rb = w.write("rb.yaml", "name: n\nsteps:\n  - id: tell\n    action: notify\n    with: {message: \"failover done\", severity: critical, required: true}\n");
    let mut c = w.cmd(&[
        "run",
        rb.to_str().unwrap(),
        "--env",
        env.to_str().unwrap(),
        "--yes",
    ]);
    c.env("T_SLACK", slack.url("/hooks/SECRETPATH123"))
        .env("T_PD", "ROUTINGKEY-SENTINEL-42");
    let o = drctl_tests::Out::from(c.output().unwrap());
    assert_eq!(o.code, 0, "{o:?}");
    let s = slack.requests.lock().unwrap().join("\n");
    assert!(
        s.contains("POST /hooks/SECRETPATH123") && s.contains("failover done") && s.contains("#dr"),
        "{s}"
    );
    let p = pd.requests.lock().unwrap().join("\n");
    assert!(
        p.contains("\"routing_key\":\"ROUTINGKEY-SENTINEL-42\"")
            && p.contains("\"event_action\":\"trigger\"")
            && p.contains("\"severity\":\"critical\""),
        "{p}"
    );
    let run = &w.runs()[0];
    let journal = String::from_utf8(w.journal_bytes(run)).unwrap();
    assert!(
        !journal.contains("SECRETPATH123") && !journal.contains("ROUTINGKEY-SENTINEL-42"),
        "{journal}"
    );
    let fin = steps_of(&w.journal(run), "step_finished");
    assert_eq!(
        fin[0]["outputs"]["sent"],
        serde_json::json!(["chat", "pager"])
    );
}

#[test]
fn a_journal_that_cannot_be_written_stops_the_run_before_the_next_side_effect() {
    // The directory backend's files are edited directly here.
    let w = Work::dir_store();
    let rb = w.write(
        "rb.yaml",
        "name: j\nsteps:\n  - id: a\n    action: exec\n    with: {argv: [sh, -c, 'sleep 0.5; touch a-done'], unless: [test, -e, a-done]}\n  - id: b\n    action: exec\n    needs: [a]\n    with: {argv: [touch, b-done], unless: [test, -e, b-done]}\n",
    );
    let child = w
        .cmd(&["run", rb.to_str().unwrap(), "--yes"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || w
        .runs()
        .first()
        .is_some_and(|r| w.journal(r).len() >= 2)));
    let run = w.runs()[0].clone();
    let path = w.journal_path(&run);
    // Make the journal unwritable (as a full or failed disk would) while
    // step `a` is running; even root cannot append to an immutable file.
    let st = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&path)
        .status()
        .expect("chattr (e2fsprogs)");
    assert!(st.success(), "chattr +i must work on the test filesystem");
    let o = drctl_tests::Out::from(child.wait_with_output().unwrap());
    let _ = std::process::Command::new("chattr")
        .arg("-i")
        .arg(&path)
        .status();
    assert_eq!(o.code, 10, "{o:?}");
    assert!(o.stderr.contains("DRCTL-J006"), "{o:?}");
    assert!(
        !w.path().join("b-done").exists(),
        "no side effect after the journal failed"
    );
    let st = w.run(&["status", &run]);
    assert_eq!(st.code, 0, "what was written still verifies: {st:?}");
    let r = w.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(w.path().join("a-done").exists() && w.path().join("b-done").exists());
}

/// A secret printed by a child in encoded forms (JSON-escaped, base64,
/// percent-encoded) is masked in every one of them, on the terminal (text
/// and JSON logs), in the journal and in reports.
#[test]
fn encoded_forms_of_a_secret_never_leak() {
    let w = Work::new();
    let secret = r#"S3NT"in\el/7f3a 9c+do-not-print"#;
    let py = "import base64,json,os,urllib.parse as u; s=os.environ['TOKEN']; \
              print(json.dumps({'t': s})); print(base64.b64encode(s.encode()).decode()); \
              print(base64.b64encode(('user:'+s).encode()).decode()); print(u.quote(s, safe='')); \
              print(u.quote_plus(s))";
    let rb = w.write(
        "rb.yaml",
        &format!(
            "name: encoded\nparams:\n  token: {{default: \"env:DRCTL_TEST_SECRET\", secret: true}}\nsteps:\n  - id: print\n    action: exec\n    with:\n      argv: [python3, -c, {py:?}]\n      env: {{TOKEN: \"${{params.token}}\"}}\n      idempotent: true\n"
        ),
    );
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let forms = [
        serde_json::to_string(secret)
            .unwrap()
            .trim_matches('"')
            .to_string(),
        b64.encode(secret),
        b64.encode(format!("user:{secret}")),
        "S3NT%22in%5Cel%2F7f3a%209c%2Bdo-not-print".to_string(),
        "S3NT%22in%5Cel%2F7f3a+9c%2Bdo-not-print".to_string(),
        secret.to_string(),
    ];
    for fmt in ["text", "json"] {
        let mut c = w.cmd(&[
            "--log-level",
            "debug",
            "--log-format",
            fmt,
            "run",
            rb.to_str().unwrap(),
            "--yes",
        ]);
        c.env("DRCTL_TEST_SECRET", secret);
        let o = drctl_tests::Out::from(c.output().unwrap());
        assert_eq!(o.code, 0, "{o:?}");
        for f in &forms {
            assert!(
                !o.stdout.contains(f.as_str()) && !o.stderr.contains(f.as_str()),
                "`{f}` leaked ({fmt} logs): {o:?}"
            );
        }
    }
    for run in w.runs() {
        let journal = String::from_utf8(w.journal_bytes(&run)).unwrap();
        assert!(journal.contains("***"), "the output is kept, masked");
        for f in &forms {
            assert!(
                !journal.contains(f.as_str()),
                "`{f}` leaked into the journal: {journal}"
            );
            for fmt in ["md", "json"] {
                let r = w.run(&["report", &run, "--format", fmt]);
                assert!(
                    !r.stdout.contains(f.as_str()),
                    "`{f}` leaked into the {fmt} report"
                );
            }
        }
    }
}

/// Parameters are typed by their declaration: a bad `--param` is refused
/// with its location before the lease and before step 1, nothing journaled.
#[test]
fn a_bad_param_is_refused_before_anything_runs() {
    let w = Work::new();
    let marker = w.path().join("marker");
    let rb = w.write(
        "rb.yaml",
        &format!(
            "name: typed\nparams:\n  max_lag: {{default: 30s}}\n  attempts: {{type: integer, min: 1, max: 5, default: 1}}\nsteps:\n  - id: first\n    action: exec\n    with: {{argv: [sh, -c, 'echo ran >> {}'], idempotent: true}}\n  - id: wait\n    action: wait\n    needs: [first]\n    with: {{duration: \"${{params.max_lag}}\"}}\n",
            marker.display()
        ),
    );
    let rb = rb.to_str().unwrap();
    let o = w.run(&[
        "run",
        rb,
        "--yes",
        "--param",
        "max_lag=banana",
        "--param",
        "attempts=9",
        "--param",
        "max_lga=1s",
    ]);
    assert_eq!(o.code, 3, "{o:?}");
    for needle in [
        "--param max_lag: `banana` is not a duration",
        "rb.yaml:3:3",
        "--param attempts: 9 is out of range: expected an integer from 1 to 5",
        "rb.yaml:4:3",
        "unknown parameter `max_lga`",
        "did you mean `max_lag`?",
        "3 errors found; nothing was run",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}` in:\n{}",
            o.stderr
        );
    }
    assert!(
        w.runs().is_empty(),
        "nothing may be journaled: {:?}",
        w.runs()
    );
    assert!(!marker.exists(), "step 1 must not have run");
    // The same run with good values goes through.
    let o = w.run(&[
        "run",
        rb,
        "--yes",
        "--param",
        "max_lag=10ms",
        "--param",
        "attempts=2",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(w.journal(&w.runs()[0])[0]["params"]["attempts"], 2);
}

/// A run that failed on a parameter only a later step used is repaired by
/// `resume --param`, from another directory (the journal holds absolute
/// paths); the step that succeeded is not run again, and the resume's
/// flags are journaled.
#[test]
fn resume_from_another_directory_repairs_a_run_with_param() {
    let w = Work::new();
    let log = w.path().join("log");
    std::fs::create_dir_all(w.path().join("book")).unwrap();
    w.write(
        "book/rb.yaml",
        &format!(
            "name: repair\nparams:\n  word: {{type: string, default: wrong}}\nsteps:\n  - id: once\n    action: exec\n    with: {{argv: [sh, -c, 'echo once >> {}'], idempotent: true}}\n  - id: check\n    action: exec\n    needs: [once]\n    with: {{argv: [test, \"${{params.word}}\", =, right], idempotent: true}}\n",
            log.display()
        ),
    );
    let o = w.run(&["run", "book/rb.yaml", "--yes"]);
    assert_eq!(o.code, 5, "{o:?}");
    let run = w.runs()[0].clone();
    let before = w.journal(&run).len();

    let elsewhere = tempfile::tempdir().unwrap();
    // A parameter the runbook does not declare is refused, nothing appended.
    let mut c = w.cmd(&["resume", &run, "--param", "wrod=right", "--yes"]);
    c.current_dir(elsewhere.path());
    let o = drctl_tests::Out::from(c.output().unwrap());
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("did you mean `word`?"), "{o:?}");
    assert_eq!(w.journal(&run).len(), before);

    let mut c = w.cmd(&[
        "resume",
        &run,
        "--param",
        "word=right",
        "--accept-data-loss",
        "--force",
        "--yes",
    ]);
    c.current_dir(elsewhere.path());
    let o = drctl_tests::Out::from(c.output().unwrap());
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "once\n");
    let j = w.journal(&run);
    let resumed = &steps_of(&j, "run_resumed")[0];
    assert_eq!(resumed["params"]["word"], "right", "{resumed}");
    assert_eq!(resumed["accept_data_loss"], true);
    assert_eq!(resumed["force"], true);
    assert_eq!(resumed["yes"], true);
    assert!(
        j[0]["runbook"]["path"].as_str().unwrap().starts_with('/'),
        "{}",
        j[0]
    );
    for cmd in [["status", run.as_str()], ["report", run.as_str()]] {
        let mut c = w.cmd(&cmd);
        c.current_dir(elsewhere.path());
        let o = drctl_tests::Out::from(c.output().unwrap());
        assert_eq!(o.code, 0, "{cmd:?}: {o:?}");
    }
}
