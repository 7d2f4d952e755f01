//! Drills as a product: definitions, the scheduler (`drctl daemon`), the
//! history and the generated CronJobs, driven through the real binary on
//! the directory store and (under `DRCTL_TEST_STORE=postgres`) on a real
//! PostgreSQL state store. The clock is the hidden `--now`: no test sleeps
//! until a cron slot.

use std::process::Stdio;
use std::time::Duration;

use drctl_tests::{wait_until, Work};
use serde_json::Value;

/// A drill whose runbook appends the drill's name to `witness` (so every
/// execution is counted independently of drctl's own records) and proves
/// recovery with a second command.
fn runbook(w: &Work, sleep: &str) -> String {
    let rb = format!(
        r#"
name: tiny-drill
targets: {{rto: 1m}}
steps:
  - id: act
    action: exec
    with: {{argv: [sh, -c, "echo $DRILL >> witness; sleep {sleep}"], env: {{DRILL: "${{params.drill}}"}}, idempotent: true}}
  - id: smoke
    action: exec
    needs: [act]
    proves_recovery: true
    with: {{argv: ["true"]}}
params:
  drill: {{description: which drill runs}}
"#
    );
    w.write("rb.yaml", &rb).display().to_string()
}

fn definition(w: &Work, name: &str, schedule: &str) {
    let text = format!(
        "name: {name}\nrunbook: ../rb.yaml\nparams:\n  drill: {name}\nschedule:\n{schedule}\n"
    );
    std::fs::create_dir_all(w.path().join("drills")).unwrap();
    w.write(&format!("drills/{name}.yaml"), &text);
}

fn daemon(w: &Work, now: &str) -> std::process::Command {
    let mut c = w.cmd(&[
        "daemon",
        "--drills",
        w.path().join("drills").to_str().unwrap(),
        "--once",
        "--now",
        now,
    ]);
    c.current_dir(w.path());
    c
}

fn witness(w: &Work) -> Vec<String> {
    std::fs::read_to_string(w.path().join("witness"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn history(w: &Work, coll: &str) -> Vec<Value> {
    let store = w.store();
    drctl_tests::block_on(store.read_history(coll)).expect("history")
}

#[test]
fn two_daemons_run_each_due_drill_once_and_missed_runs_follow_their_policy() {
    let w = Work::new();
    runbook(&w, "0.2");
    definition(&w, "nightly", "  cron: \"0 3 * * *\"\n  missed: run-once");
    definition(
        &w,
        "skipper",
        "  cron: \"30 3 * * *\"\n  timezone: UTC\n  missed: skip",
    );
    // First sight: both schedules start now, nothing runs.
    let o = daemon(&w, "2026-12-01T00:00:00Z").output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.matches("registered").count(), 2, "{text}");
    assert!(witness(&w).is_empty());

    // 03:31: `nightly` is 31 minutes late (run once), `skipper` on time.
    // Two daemons at once: each drill runs exactly once.
    let kids: Vec<_> = (0..2)
        .map(|_| {
            daemon(&w, "2026-12-01T03:31:00Z")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{o:?}");
    }
    let mut got = witness(&w);
    got.sort();
    assert_eq!(got, vec!["nightly", "skipper"], "{outs:?}");
    let drills = history(&w, "drills");
    assert_eq!(drills.len(), 2, "{drills:?}");
    assert!(
        drills.iter().all(|r| r["status"] == "succeeded"),
        "{drills:?}"
    );

    // Down until the 4th at noon: `nightly` missed three slots and runs
    // once (the newest); `skipper` records three missed slots and runs none.
    let o = daemon(&w, "2026-12-04T12:00:00Z").output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let mut got = witness(&w);
    got.sort();
    assert_eq!(got, vec!["nightly", "nightly", "skipper"]);
    let events = history(&w, "drill-schedule-events");
    let missed: Vec<&Value> = events.iter().filter(|e| e["event"] == "missed").collect();
    let slots = |d: &str| {
        missed
            .iter()
            .filter(|e| e["drill"] == d)
            .map(|e| e["slots"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
    };
    assert_eq!(slots("nightly"), 2, "{events:?}");
    assert_eq!(slots("skipper"), 3, "{events:?}");
    let started = events.iter().filter(|e| e["event"] == "started").count();
    assert_eq!(started, 3, "{events:?}");

    // The history and trends see every drill, and nothing not measured.
    let h = w.run(&["drills", "history", "nightly", "--output", "json"]);
    assert_eq!(h.code, 0, "{h:?}");
    let t: Vec<Value> = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(t.len(), 2);
    assert!(t[1]["rto_ms"].is_u64(), "{t:?}");
    assert!(t[1]["rto_delta_ms"].is_i64(), "{t:?}");
    assert_eq!(t[1]["rto_median_before_ms"], t[0]["rto_ms"]);
}

#[test]
fn a_daemon_killed_mid_drill_leaves_a_run_the_next_leader_resumes() {
    let w = Work::new();
    runbook(&w, "3");
    definition(&w, "long", "  cron: \"0 3 * * *\"");
    assert!(daemon(&w, "2026-12-01T00:00:00Z")
        .status()
        .unwrap()
        .success());
    let mut child = daemon(&w, "2026-12-01T03:00:10Z")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill -9 once the drill's command runs.
    assert!(wait_until(Duration::from_secs(20), || witness(&w).len() == 1));
    child.kill().unwrap();
    child.wait().unwrap();
    let runs = w.runs();
    assert_eq!(runs.len(), 1);
    // The command is declared idempotent, so the resume runs it again.
    let o = daemon(&w, "2026-12-01T03:05:00Z").output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(text.contains(&format!("resumed run {}", runs[0])), "{text}");
    let st = w.run(&["status", &runs[0]]);
    assert!(st.stdout.contains("status: succeeded"), "{st:?}");
    assert_eq!(w.runs().len(), 1, "no second run for the same slot");
    assert_eq!(witness(&w), vec!["long", "long"]);
    // The next pass has nothing to do.
    let o = daemon(&w, "2026-12-01T03:06:00Z").output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("not due"),
        "{o:?}"
    );
}

/// kill -9 of the daemon after its drill ended but before the slot
/// recorded it: the next pass closes the slot with the run's result (it
/// neither resumes nor reruns the drill, and the slot does not stay
/// `running` for ever).
#[test]
fn a_daemon_killed_after_its_drill_ended_leaves_a_slot_the_next_pass_closes() {
    let w = Work::new();
    runbook(&w, "0");
    definition(&w, "brief", "  cron: \"0 3 * * *\"");
    assert!(daemon(&w, "2026-12-01T00:00:00Z")
        .status()
        .unwrap()
        .success());
    let killed = daemon(&w, "2026-12-01T03:00:10Z")
        .env("DRCTL_TEST_CRASH_AT", "daemon-ran")
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None, "killed: {killed:?}");
    let runs = w.runs();
    assert_eq!(runs.len(), 1);
    let st = w.run(&["status", &runs[0]]);
    assert!(st.stdout.contains("status: succeeded"), "{st:?}");
    let slot = |w: &Work| {
        drctl_tests::block_on(w.store().get_doc("drill-schedule", "brief"))
            .expect("slot")
            .expect("slot doc")
            .doc
    };
    assert_eq!(
        slot(&w)["state"],
        "running",
        "the kill left the slot claimed"
    );

    let o = daemon(&w, "2026-12-01T03:05:00Z").output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let doc = slot(&w);
    assert_eq!(doc["state"], "idle", "{doc}");
    assert_eq!(doc["last_exit"], 0, "{doc}");
    assert_eq!(doc["run_id"], runs[0].as_str(), "{doc}");
    let closed: Vec<Value> = history(&w, "drill-schedule-events")
        .into_iter()
        .filter(|e| e["event"] == "closed")
        .collect();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0]["run_id"], runs[0].as_str());
    assert_eq!(closed[0]["exit"], 0);
    assert_eq!(w.runs().len(), 1, "no second run for the same slot");
    assert_eq!(witness(&w), vec!["brief"], "the drill ran once");
}

#[test]
fn invalid_schedules_are_located_errors() {
    let w = Work::new();
    runbook(&w, "0");
    for (sched, needle) in [
        ("\"0 25 * * *\"", "not a valid cron expression"),
        ("\"every monday\"", "has 2 fields"),
        (
            "\n  cron: \"0 3 * * *\"\n  timezone: Mars/Olympus",
            "not an IANA time zone",
        ),
        (
            "\n  cron: \"0 3 * * *\"\n  missed: later",
            "unknown value `later`",
        ),
    ] {
        let f = w.write(
            "d.yaml",
            &format!("name: d\nrunbook: rb.yaml\nschedule: {sched}\n"),
        );
        let o = w.run(&["validate", f.to_str().unwrap()]);
        assert_eq!(o.code, 3, "{sched}: {o:?}");
        assert!(o.stderr.contains(needle), "{sched}: {}", o.stderr);
        assert!(o.stderr.contains("d.yaml:"), "located: {}", o.stderr);
    }
}

/// `drills list` and `drills history` as an operator reads them, from a
/// synthesized history (five drills, one with nothing measured, one that
/// missed its target): unknowns stay unknown, deltas and medians skip them.
#[test]
fn list_and_history_text() {
    let w = Work::new();
    runbook(&w, "0");
    definition(
        &w,
        "monthly",
        "  cron: \"0 10 2 * *\"\n  timezone: Europe/Berlin\n  grace: 2d",
    );
    let store = w.store();
    let recs = [
        (
            "2026-07-02T08:00:01.000Z",
            Some(4200u64),
            Some(900u64),
            "succeeded",
            "met",
            "met",
        ),
        (
            "2026-08-02T08:00:01.000Z",
            Some(3900),
            Some(1100),
            "succeeded",
            "met",
            "met",
        ),
        (
            "2026-09-02T08:00:01.000Z",
            None,
            None,
            "failed",
            "not_met",
            "unknown",
        ),
        (
            "2026-10-02T08:00:01.000Z",
            Some(5100),
            Some(800),
            "succeeded",
            "met",
            "met",
        ),
        (
            "2026-11-02T09:00:01.000Z",
            Some(130000),
            Some(700),
            "succeeded",
            "missed",
            "met",
        ),
    ];
    for (i, (at, rto, rpo, status, rv, pv)) in recs.iter().enumerate() {
        let r = serde_json::json!({
            "run_id": format!("2026110{i}T080001000Z-00000{i}"), "drill": "monthly", "mode": "full",
            "status": status, "failed_at": at, "rto_ms": rto, "rto_target_ms": 120000,
            "rpo_time_ms": rpo, "rpo_target_ms": 5000,
            "rpo_truth": if i == 3 { serde_json::json!({"time_lost_ms": 800}) } else { Value::Null },
            "rto_verdict": {"verdict": rv}, "rpo_verdict": {"verdict": pv},
        });
        drctl_tests::block_on(store.append_history("drills", &r)).unwrap();
    }
    let list = w.run(&[
        "drills",
        "list",
        "--drills",
        w.path().join("drills").to_str().unwrap(),
        "--now",
        "2026-11-20T12:00:00Z",
    ]);
    assert_eq!(list.code, 0, "{list:?}");
    let hist = w.run(&["drills", "history", "monthly", "--window", "3"]);
    assert_eq!(hist.code, 0, "{hist:?}");
    let mut s = insta::Settings::clone_current();
    s.add_filter(
        &drctl_tests::regex_escape(&w.path().display().to_string()),
        "[WORK]",
    );
    s.bind(|| {
        insta::assert_snapshot!("drills_list", list.stdout);
        insta::assert_snapshot!("drills_history", hist.stdout);
    });
}

/// A definition's notifications reach the environment's notify targets:
/// started, finished, and target missed (here the RTO target is 1 ms, so
/// the drill exits 12), and the webhook URL (a secret) stays out of the
/// journal and the output.
#[test]
fn drill_notifications_started_finished_and_target_missed() {
    let w = Work::new();
    runbook(&w, "0.05");
    let hook = drctl_tests::TinyHttp::start(200, "ok");
    let env = w.write(
        "env.yaml",
        "name: n\nactive_region: a\nregions:\n  a: {}\n  b: {}\nnotify:\n  - {type: slack, name: chat, webhook_url: \"env:T_SLACK\"}\n",
    );
    let def = w.write(
        "d.yaml",
        &format!(
            "name: told\nrunbook: rb.yaml\nenvironment: {}\nparams:\n  drill: told\ntargets:\n  rto: 1ms\nnotify:\n  on: [started, finished, target_missed]\n  targets: [chat]\n",
            env.display()
        ),
    );
    let secret_url = hook.url("/hooks/T0KEN-s3cr3t-path");
    let o = drctl_tests::Out::from(
        w.cmd(&["drill", def.to_str().unwrap(), "--yes"])
            .env("T_SLACK", &secret_url)
            .output()
            .unwrap(),
    );
    assert_eq!(o.code, 12, "{o:?}");
    assert!(wait_until(Duration::from_secs(5), || hook
        .requests
        .lock()
        .unwrap()
        .len()
        == 3));
    let reqs = hook.requests.lock().unwrap().clone();
    assert!(
        reqs[0].contains("drill `told` (full, runbook `tiny-drill`) started"),
        "{reqs:?}"
    );
    assert!(
        reqs[1].contains("finished (exit 12, target-missed)"),
        "{reqs:?}"
    );
    assert!(reqs[1].contains("RTO"), "{reqs:?}");
    assert!(
        reqs[2].contains("did not show its RTO/RPO targets met"),
        "{reqs:?}"
    );
    let run = w.runs().pop().unwrap();
    assert!(reqs.iter().all(|r| r.contains(&run)), "each names the run");
    let journal = String::from_utf8_lossy(&w.journal_bytes(&run)).into_owned();
    for hay in [&journal, &o.stdout, &o.stderr] {
        assert!(!hay.contains("T0KEN-s3cr3t-path"), "secret leaked: {hay}");
    }
}

/// Five drills of one definition on one real lab (each returned to its
/// primary region by `drctl failback latest`): the history holds all five
/// with measured figures, the trend compares each with the one before and
/// the median, and the lab ends on its primary.
#[test]
fn five_lab_drills_make_a_history_with_trends() {
    let lab = drctl_tests::Lab::up();
    let w = &lab.w;
    let def = w.write(
        "lab-repeat.yaml",
        &format!(
            "name: lab-repeat\nrunbook: {}\nenvironment: {}\ninject_lag: 300ms\nparams:\n  max_lag: 30s\n",
            drctl_tests::repo_root().join("runbooks/failover.yaml").display(),
            lab.env()
        ),
    );
    let extract = format!("extract_dir={}", w.path().join("failback").display());
    for i in 0..5 {
        let d = w.run(&["drill", def.to_str().unwrap(), "--yes"]);
        assert_eq!(d.code, 0, "drill {i}: {d:?}");
        let f = w.run(&["failback", "latest", "--yes", "--param", &extract]);
        assert_eq!(f.code, 0, "failback after drill {i}: {f:?}");
    }
    let h = w.run(&["drills", "history", "lab-repeat", "--output", "json"]);
    assert_eq!(h.code, 0, "{h:?}");
    let t: Vec<Value> = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(t.len(), 5, "{t:?}");
    for (i, e) in t.iter().enumerate() {
        assert_eq!(e["status"], "succeeded", "{e}");
        assert!(e["rto_ms"].is_u64() && e["rpo_ms"].is_u64(), "{e}");
        assert!(
            e["rpo_truth_ms"].is_u64(),
            "each drill measured its truth: {e}"
        );
        if i > 0 {
            let delta = e["rto_ms"].as_i64().unwrap() - t[i - 1]["rto_ms"].as_i64().unwrap();
            assert_eq!(e["rto_delta_ms"].as_i64(), Some(delta), "{e}");
            assert!(e["rto_median_before_ms"].is_u64(), "{e}");
        }
    }
    let text = w.run(&["drills", "history", "lab-repeat"]);
    assert_eq!(
        text.stdout
            .lines()
            .filter(|l| l.contains("lab-repeat"))
            .count(),
        5,
        "{text:?}"
    );
    let st = w.run(&["lab", "status"]);
    assert!(st.code == 0, "{st:?}");
}
