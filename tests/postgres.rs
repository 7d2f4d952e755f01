//! Postgres failover against real PostgreSQL 15 servers: each test starts
//! its own lab (primary + streaming standby on free loopback ports, data in
//! a temp dir) through `drctl lab up`, and always stops it.

use std::time::Duration;

use drctl_tests::{Lab, Out};
use serde_json::Value;

/// Runs a runbook against the lab in drill mode.
fn run(lab: &Lab, rb: &str, extra: &[&str]) -> Out {
    let env = lab.env();
    let mut args = vec!["run", rb, "--env", &env, "--yes", "--mode", "drill"];
    args.extend_from_slice(extra);
    lab.w.run(&args)
}

fn control(lab: &Lab, route: &str) {
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.w.state().join("lab/lab.json")).unwrap())
            .unwrap();
    let url = format!("{}{route}", st["control"].as_str().unwrap());
    let o = std::process::Command::new("curl")
        .args(["-sf", "-X", "POST", &url])
        .output()
        .unwrap();
    assert!(o.status.success(), "control {route} failed");
}

const PROMOTE: &str = r#"
name: promote-only
steps:
  - id: promote
    action: postgres.promote
    with: {server: "${regions.dr.postgres}"}
"#;

#[test]
fn promote_a_streaming_standby_and_again_is_a_noop() {
    let lab = Lab::up();
    let rb = lab.runbook("p.yaml", PROMOTE);
    let o = run(&lab, &rb, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = lab.outputs(&lab.last_run(), "promote");
    assert_eq!(out["promoted"], true, "{out}");
    assert_eq!(out["timeline"], 2, "{out}");
    assert!(out["promotion_ms"].as_f64().unwrap() > 0.0);
    assert!(out["receive_lsn"].as_str().is_some(), "{out}");
    let again = run(&lab, &rb, &[]);
    assert_eq!(again.code, 0, "{again:?}");
    let out2 = lab.outputs(&lab.last_run(), "promote");
    assert_eq!(out2["promoted"], false, "{out2}");
    assert_eq!(out2["already_primary"], true, "{out2}");
    assert_eq!(
        out2["timeline"], 2,
        "second promotion must not change the timeline: {out2}"
    );
}

#[test]
fn refuses_split_brain_until_fenced() {
    let lab = Lab::up();
    let unfenced = lab.runbook(
        "u.yaml",
        "name: u\nsteps:\n  - id: promote\n    action: postgres.promote\n    with: {server: \"${regions.dr.postgres}\", old_primary: \"${regions.primary.postgres}\"}\n",
    );
    let o = run(&lab, &unfenced, &[]);
    assert_eq!(o.code, 5, "{o:?}");
    let err = lab.error(&lab.last_run(), "promote");
    assert!(err.contains("split the brain"), "{err}");
    let st = lab
        .w
        .run(&["plan", &unfenced, "--env", &lab.env(), "--check"]);
    assert!(st.stdout.contains("standby"), "still a standby: {st:?}");
    let fenced = lab.runbook(
        "f.yaml",
        "name: f\nsteps:\n  - id: fence\n    action: postgres.fence\n    with: {server: \"${regions.primary.postgres}\"}\n  - id: promote\n    action: postgres.promote\n    needs: [fence]\n    with: {server: \"${regions.dr.postgres}\", old_primary: \"${regions.primary.postgres}\", old_primary_lsn: \"${steps.fence.outputs.final_lsn}\"}\n",
    );
    let o = run(&lab, &fenced, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let run = lab.last_run();
    assert_eq!(lab.outputs(&run, "fence")["reachable"], true);
    assert!(lab.outputs(&run, "fence")["final_lsn"].as_str().is_some());
    assert_eq!(lab.outputs(&run, "promote")["promoted"], true);
}

#[test]
fn refuses_excess_lag_unless_data_loss_is_accepted() {
    let lab = Lab::up();
    // SIGSTOP the walsender: the primary keeps committing heartbeats that
    // never reach the standby (pausing the receiver would not create lag).
    control(&lab, "/lag/primary");
    std::thread::sleep(Duration::from_millis(1500));
    let rb = lab.runbook(
        "lag.yaml",
        "name: lag\nsteps:\n  - id: fence\n    action: postgres.fence\n    with: {server: \"${regions.primary.postgres}\"}\n  - id: promote\n    action: postgres.promote\n    needs: [fence]\n    with: {server: \"${regions.dr.postgres}\", old_primary: \"${regions.primary.postgres}\", old_primary_lsn: \"${steps.fence.outputs.final_lsn}\", max_lag: 300ms, max_lag_bytes: 100}\n",
    );
    let o = run(&lab, &rb, &[]);
    assert_eq!(o.code, 5, "{o:?}");
    let err = lab.error(&lab.last_run(), "promote");
    assert!(err.contains("behind") && err.contains("refused"), "{err}");
    let ok = run(&lab, &rb, &["--accept-data-loss"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let run = lab.last_run();
    let out = lab.outputs(&run, "promote");
    assert_eq!(out["promoted"], true, "{out}");
    assert_eq!(out["accepted_data_loss"]["by"], "test-operator", "{out}");
    assert!(out["lag_bytes"].as_u64().unwrap() > 100, "{out}");
    let start = &lab.w.journal(&run)[0];
    assert_eq!(
        start["options"]["accept_data_loss"], true,
        "journaled at run start"
    );
}

#[test]
fn kill_mid_promotion_then_resume_does_not_promote_twice() {
    let lab = Lab::up();
    let rb = lab.runbook("p.yaml", PROMOTE);
    let env = lab.env();
    let mut c = lab
        .w
        .cmd(&["run", &rb, "--env", &env, "--yes", "--mode", "drill"]);
    c.env("DRCTL_TEST_CRASH_AT", "promote");
    let o = Out::from(c.output().unwrap());
    assert_eq!(o.code, -1, "expected a SIGKILL mid-promotion: {o:?}");
    let run = lab.last_run();
    let r = lab.w.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = lab.outputs(&run, "promote");
    assert_eq!(out["promoted"], true, "this run promoted it: {out}");
    assert_eq!(out["timeline"], 2, "exactly one promotion: {out}");
    assert!(
        out["receive_lsn"].as_str().is_some(),
        "pre-promotion LSN kept across the crash: {out}"
    );
    let starts = lab
        .w
        .journal(&run)
        .iter()
        .filter(|r| r["type"] == "step_started")
        .count();
    assert_eq!(starts, 2, "started, killed, re-executed once");
}

#[test]
fn fence_of_an_unreachable_primary_moves_on() {
    let lab = Lab::up();
    let rb = lab.runbook(
        "f.yaml",
        "name: f\nsteps:\n  - id: fence\n    action: postgres.fence\n    timeout: 5s\n    with: {server: {host: 127.0.0.1, port: 1, user: drctl, password: \"env:NOPE_UNUSED\"}}\n",
    );
    let mut c = lab.w.cmd(&["run", &rb, "--yes"]);
    c.env("NOPE_UNUSED", "unused-password");
    let o = Out::from(c.output().unwrap());
    assert_eq!(o.code, 0, "{o:?}");
    let out = lab.outputs(&lab.last_run(), "fence");
    assert_eq!(out["reachable"], false, "{out}");
}

#[test]
fn drill_measures_rpo_equal_to_the_truth() {
    let lab = Lab::up();
    let env = lab.env();
    let root = drctl_tests::repo_root();
    let rb = root.join("runbooks/failover.yaml");
    let o = lab.w.run(&[
        "--output",
        "json",
        "drill",
        rb.to_str().unwrap(),
        "--env",
        &env,
        "--yes",
        "--inject-lag",
        "1s",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    // The lab has no immudb: the shipped runbook's ledger check is skipped,
    // journaled with its reason, and the failover is green without it.
    let skip = lab
        .w
        .journal(&lab.last_run())
        .into_iter()
        .find(|r| r["type"] == "step_skipped" && r["step"] == "ledger")
        .expect("the ledger step is skipped in the lab");
    assert!(
        skip["reason"]
            .as_str()
            .unwrap_or("")
            .contains("the environment has no `target.immudb`"),
        "{skip}"
    );
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("json");
    let est = &v["measurements"]["rpo"][0][1];
    let truth = &v["rpo_truth"];
    let (e, t) = (
        est["heartbeats_lost"].as_i64().unwrap(),
        truth["heartbeats_lost"].as_i64().unwrap(),
    );
    // The estimate counts acknowledged writes; a write in flight at the
    // kill may have committed unacknowledged, so the truth may hold one
    // more row (not acknowledged data loss).
    assert!(t == e || t == e + 1, "estimate {e} vs truth {t}: {v}");
    assert!(e >= 5, "1s of lag at 100ms per beat loses rows: {v}");
    let (te, tt) = (
        est["time_lost_ms"].as_i64().unwrap(),
        truth["time_lost_ms"].as_i64().unwrap(),
    );
    assert!(
        (te - tt).abs() <= 120,
        "time estimate {te} ms vs truth {tt} ms: beyond one 100 ms interval (+20 ms slack)"
    );
    assert!(v["measurements"]["rto_ms"].as_u64().unwrap() > 0);
    let report = std::fs::read_to_string(v["report"].as_str().unwrap()).unwrap();
    assert!(
        report.contains("## Recovery time (RTO)") && report.contains("## Data loss (RPO)"),
        "{report}"
    );
    assert!(report.contains("truth (old primary restarted)"), "{report}");
    let hist = std::fs::read_to_string(lab.w.state().join("history/drills.jsonl")).unwrap();
    assert!(hist.contains(v["run_id"].as_str().unwrap()));
}

#[test]
fn tls_when_the_server_entry_asks_for_it() {
    let lab = Lab::up();
    let env: String = std::fs::read_to_string(lab.env()).unwrap();
    let port = env
        .split("port: ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let pw = lab.w.state().join("lab/pgpass").display().to_string();
    let server = |mode: &str| {
        format!("{{host: 127.0.0.1, port: {port}, user: drctl, password: \"file:{pw}\", sslmode: {mode}}}")
    };
    let rb = lab.runbook(
        "tls.yaml",
        &format!(
            "name: tls\nsteps:\n  - id: encrypted\n    action: postgres.query\n    with: {{server: {}, sql: \"select ssl from pg_stat_ssl where pid = pg_backend_pid()\", equals: true}}\n  - id: plain\n    action: postgres.query\n    with: {{server: {}, sql: \"select ssl from pg_stat_ssl where pid = pg_backend_pid()\", equals: false}}\n",
            server("require"),
            server("disable")
        ),
    );
    let o = lab.w.run(&["run", &rb, "--yes"]);
    assert_eq!(o.code, 0, "{o:?}");
    // verify-full without sslrootcert trusts only the web PKI roots: the
    // lab CA is not one of them, so the lab certificate must fail.
    let strict = lab.runbook(
        "strict.yaml",
        &format!("name: strict\nsteps:\n  - id: q\n    action: postgres.query\n    with: {{server: {}, sql: select 1}}\n", server("verify-full")),
    );
    let o = lab.w.run(&["run", &strict, "--yes"]);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.to_lowercase().contains("certificate"), "{o:?}");
}

#[test]
fn servers_can_be_written_as_dsns_without_passwords() {
    let lab = Lab::up();
    let env: String = std::fs::read_to_string(lab.env()).unwrap();
    let port = env
        .split("port: ")
        .nth(2)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let pw = lab.w.state().join("lab/pgpass").display().to_string();
    let rb = lab.runbook(
        "dsn.yaml",
        &format!(
            "name: dsn\nsteps:\n  - id: status\n    action: postgres.status\n    with:\n      server: {{dsn: \"postgresql://drctl@127.0.0.1:{port}/postgres?sslmode=require\", password: \"file:{pw}\"}}\n"
        ),
    );
    let o = lab.w.run(&["run", &rb, "--yes"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        lab.outputs(&lab.w.runs().pop().unwrap(), "status")["role"],
        "standby"
    );
    let bad = lab.runbook("bad.yaml", "name: bad\nsteps:\n  - id: s\n    action: postgres.status\n    with: {server: \"postgresql://drctl:hunter2@127.0.0.1:1/postgres\"}\n");
    let v = lab.w.run(&["validate", &bad]);
    assert_eq!(v.code, 3, "{v:?}");
    assert!(
        v.stderr.contains("holds a URL with a password in it") && !v.stderr.contains("hunter2"),
        "{v:?}"
    );
}

/// The heartbeat writes to one store, the failover reads another (the
/// operator passed another --state): promote says where it looked and
/// still bounds the lag conservatively (declared failure time minus the
/// newest heartbeat on the standby) instead of refusing blind.
#[test]
fn missing_heartbeat_data_names_the_store_and_bounds_the_lag() {
    let lab = Lab::up();
    let env = lab.env();
    let other = lab.w.path().join("other-state");
    let other_s = other.display().to_string();
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    let rb = rb.to_str().unwrap();
    // A tolerance the bound cannot meet: refused, with the place named.
    let o = lab.w.run(&[
        "--state",
        &other_s,
        "drill",
        rb,
        "--env",
        &env,
        "--yes",
        "--param",
        "max_lag=100ms",
        "--inject-lag",
        "400ms",
    ]);
    assert_eq!(o.code, 5, "{o:?}");
    let store = drctl::store::DirStore::open(&other).unwrap();
    let run = drctl_tests::block_on(drctl::store::Store::list_runs(&store)).unwrap()[0].clone();
    let bytes = drctl_tests::block_on(drctl::store::Store::read_journal(&store, &run)).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains("no heartbeat acknowledgements in document heartbeat/lab in local directory")
            && text.contains("other-state"),
        "the refusal names the store and key it read: {text}"
    );
    assert!(
        text.contains("bounded by the declared failure time"),
        "{text}"
    );
}

/// The incident of issue #11: a missing PowerDNS key file. The failover
/// drill is refused before step 1 (exit 3, nothing journaled), so the
/// standby is still a standby and the primary still the primary.
#[test]
fn a_missing_secret_file_refuses_a_failover_drill_before_step_1() {
    let lab = Lab::up();
    let good = std::fs::read_to_string(lab.env()).unwrap();
    let key_line = good
        .lines()
        .find(|l| l.trim_start().starts_with("api_key:"))
        .expect("the lab env has a PowerDNS key");
    let broken = good.replace(key_line, "  api_key: \"file:/nonexistent/pdns-api-key\"");
    let env = lab.runbook("broken-env.yaml", &broken);
    let failover = drctl_tests::repo_root().join("runbooks/failover.yaml");
    let runs_before = lab.w.runs();
    let o = lab
        .w
        .run(&["drill", failover.to_str().unwrap(), "--env", &env, "--yes"]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("dns.api_key"), "{o:?}");
    assert!(
        o.stderr
            .contains("/nonexistent/pdns-api-key`: the file does not exist"),
        "{o:?}"
    );
    assert!(o.stderr.contains("nothing was run"), "{o:?}");
    assert_eq!(lab.w.runs(), runs_before, "nothing may be journaled");
    // Nothing changed on any server.
    let status = lab.runbook(
        "status.yaml",
        "name: status\nsteps:\n  - id: dr\n    action: postgres.status\n    with: {server: \"${regions.dr.postgres}\"}\n  - id: primary\n    action: postgres.status\n    with: {server: \"${regions.primary.postgres}\"}\n",
    );
    let o = run(&lab, &status, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let r = lab.last_run();
    assert_eq!(lab.outputs(&r, "dr")["role"], "standby");
    assert_eq!(lab.outputs(&r, "primary")["role"], "primary");
}

/// The pid of a lab service, from `drctl lab status --output json`.
fn service_pid(lab: &Lab, name: &str) -> i32 {
    let o = lab.w.run(&["--output", "json", "lab", "status"]);
    assert_eq!(o.code, 0, "{o:?}");
    let st: Value = serde_json::from_str(&o.stdout).unwrap();
    let pid = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["pid"].as_i64())
        .unwrap_or_else(|| panic!("no pid for {name}: {st}"));
    pid as i32
}

/// SIGSTOPs a process and SIGCONTs it when dropped, so a failing
/// assertion never leaves a frozen server behind.
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        // SAFETY: signalling the lab's own postmaster, which this test's lab started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above; the process is ours.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

fn plan_check(lab: &Lab) -> Out {
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    lab.w.run(&[
        "plan",
        rb.to_str().unwrap(),
        "--env",
        &lab.env(),
        "--region",
        "dr",
        "--check",
    ])
}

/// A frozen standby (SIGSTOP: it accepts TCP connections and never
/// answers) is what a real hung server looks like. `plan --check` of the
/// failover must probe it, although promote's `old_primary_lsn` comes from
/// the fence step, and name it as the problem within bounded time.
#[test]
fn plan_check_names_a_frozen_standby_in_bounded_time() {
    let lab = Lab::up();
    let broke = lab.w.run(&["lab", "break", "primary"]);
    assert_eq!(broke.code, 0, "{broke:?}");
    let healthy = plan_check(&lab);
    assert_eq!(
        healthy.code, 0,
        "with the primary down and the standby up: {healthy:?}"
    );
    let env = std::fs::read_to_string(lab.env()).unwrap();
    let dr_port = env
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("dr:"))
        .find_map(|l| l.split("port: ").nth(1))
        .and_then(|r| r.split(',').next())
        .unwrap()
        .to_string();
    let frozen = Frozen::new(service_pid(&lab, "pg-dr"));
    let t = std::time::Instant::now();
    let o = plan_check(&lab);
    let took = t.elapsed();
    drop(frozen);
    assert_eq!(o.code, 4, "{o:?}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let problem =
        format!("PROBLEM: the standby to promote, postgres 127.0.0.1:{dr_port}, is unreachable");
    assert!(o.stdout.contains(&problem), "expected `{problem}`: {o:?}");
    assert!(o.stdout.contains("did not answer within"), "{o:?}");
    assert!(
        o.stderr.contains("preflight found problems in `promote`"),
        "only promote is the problem (smoke is expected after it): {o:?}"
    );
}

/// `confirm-outage` (`expect_failure: true`) against a healthy primary
/// would fail the run, and no step before it changes that: a problem, exit
/// 4. Once the primary is down it passes, and the checks after the
/// mutating steps are expected to pass after them.
#[test]
fn plan_check_requires_the_outage_it_confirms() {
    let lab = Lab::up();
    let o = plan_check(&lab);
    assert_eq!(o.code, 4, "{o:?}");
    assert!(
        o.stdout
            .contains("the service is up, so there is no outage to confirm (fails now)")
            && o.stdout
                .contains("PROBLEM: it must pass now: no step before it changes anything"),
        "{o:?}"
    );
    assert!(o.stderr.contains("problems in `confirm-outage`"), "{o:?}");
    assert!(
        o.stdout
            .contains("expected: fails now; expected to pass after `fence` (it depends on it)"),
        "promote's split-brain guard waits for the fence: {o:?}"
    );
    // A drill on the lab kills the primary itself before step 1: there the
    // outage check is expected to pass after the injection, not a problem.
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    let d = lab.w.run(&[
        "plan",
        rb.to_str().unwrap(),
        "--env",
        &lab.env(),
        "--region",
        "dr",
        "--mode",
        "drill",
        "--check",
    ]);
    assert!(
        d.stdout.contains(
            "expected: fails now; expected to pass after the drill's injected failure (kill -9 of the primary region)"
        ),
        "{d:?}"
    );
    assert!(!d.stdout.contains("PROBLEM"), "{d:?}");
    assert_eq!(d.code, 0, "{d:?}");
    let broke = lab.w.run(&["lab", "break", "primary"]);
    assert_eq!(broke.code, 0, "{broke:?}");
    let o = plan_check(&lab);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("check: outage confirmed:"), "{o:?}");
    assert!(
        o.stdout.contains(
            "expected: fails now; expected to pass after `fence`, `promote`, `dns` (it depends on them)"
        ),
        "the smoke checks: {o:?}"
    );
    assert!(!o.stdout.contains("PROBLEM"), "{o:?}");
}

/// A READ ONLY transaction does not stop `COPY … TO PROGRAM` (it runs a
/// command on the database host) or functions like `pg_reload_conf()`.
/// `postgres.query` is read-only and may sit in a check set, so it takes
/// only queries that act on nothing: `plan --check` refuses the set at
/// validation and the program never runs on the real server.
#[test]
fn a_query_check_cannot_run_a_program_on_the_server() {
    let pg = drctl_tests::TestPg::start();
    let w = drctl_tests::Work::new();
    let marker = std::env::temp_dir().join(format!("drctl-copy-probe-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    std::fs::create_dir_all(w.path().join("checks")).unwrap();
    w.write(
        "checks/db.yaml",
        &format!(
            "name: db\nchecks:\n  - id: up\n    action: postgres.query\n    with: {{server: \"{url}\", sql: select 1}}\n  - id: sneaky\n    action: postgres.query\n    with:\n      server: \"{url}\"\n      sql: \"copy (select 1) to program 'touch {m}'\"\n  - id: reload\n    action: postgres.query\n    with: {{server: \"{url}\", sql: \"select pg_reload_conf()\"}}\n",
            url = pg.url,
            m = marker.display()
        ),
    );
    let rb = w.write(
        "rb.yaml",
        "name: db\nsteps:\n  - id: smoke\n    action: checks.run\n    with: {file: checks/db.yaml}\n",
    );
    let o = w.run(&["plan", rb.to_str().unwrap(), "--check"]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(
        o.stderr.contains("db.yaml:10:12") && o.stderr.contains("runs only queries"),
        "{o:?}"
    );
    assert!(
        o.stderr.contains("db.yaml:13:") && o.stderr.contains("refuses `pg_reload_conf()`"),
        "{o:?}"
    );
    assert!(!marker.exists(), "the server ran the program");
    // The harmless check alone passes against the same server.
    w.write(
        "checks/db.yaml",
        &format!(
            "name: db\nchecks:\n  - id: up\n    action: postgres.query\n    with: {{server: \"{}\", sql: select 1}}\n",
            pg.url
        ),
    );
    let o = w.run(&["plan", rb.to_str().unwrap(), "--check"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("up: query passes now (1 rows)"), "{o:?}");
}

/// Issue #12: the operator types the failover ~10 s after the primary died.
/// The time lost comes from the heartbeat's acknowledged writes (close to
/// one 100 ms interval), not from the declared failure time (~10 s), and it
/// agrees with the rows lost times the interval within the stated bound.
#[test]
fn an_incident_failover_typed_late_measures_acknowledged_writes_not_the_delay() {
    let lab = Lab::up();
    let env = lab.env();
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    // Let the heartbeat acknowledge a few writes, then hold WAL shipping
    // for 500 ms so that some acknowledged rows are really lost.
    std::thread::sleep(Duration::from_millis(1500));
    control(&lab, "/lag/primary");
    std::thread::sleep(Duration::from_millis(500));
    let b = lab.w.run(&["lab", "break", "primary"]);
    assert_eq!(b.code, 0, "{b:?}");
    std::thread::sleep(Duration::from_secs(10));
    let child = lab
        .w
        .cmd(&[
            "failover",
            "--region",
            "dr",
            "--env",
            &env,
            "--runbook",
            rb.to_str().unwrap(),
            "--yes",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn failover");
    assert!(
        drctl_tests::wait_until(Duration::from_secs(30), || lab
            .w
            .runs()
            .first()
            .is_some_and(|r| lab
                .w
                .journal(r)
                .iter()
                .any(|x| x["type"] == "step_started" && x["step"] == "approve"))),
        "the approval never became pending"
    );
    let run = lab.w.runs()[0].clone();
    let ap = lab.w.run(&["approve", &run, "approve", "--as", "oncall"]);
    assert_eq!(ap.code, 0, "{ap:?}");
    let o = Out::from(child.wait_with_output().unwrap());
    assert_eq!(o.code, 0, "{o:?}");
    let rpo = &lab.outputs(&run, "promote")["rpo"];
    let time = rpo["time_lost_ms"].as_u64().expect("time lost measured");
    let rows = rpo["heartbeats_lost"].as_u64().expect("rows lost measured");
    let interval = rpo["heartbeat_interval_ms"].as_u64().expect("interval");
    assert_eq!(interval, 100, "{rpo}");
    assert!(
        rows >= 2,
        "500 ms of held WAL at 100 ms per beat loses rows: {rpo}"
    );
    assert!(
        time < 1000,
        "time lost {time} ms: the ~10 s until the failover was typed is not data loss: {rpo}"
    );
    let bound = rpo["bounds"]["time_lost_ms"].as_str().unwrap();
    assert!(
        bound.contains("at least rows lost times the interval"),
        "{rpo}"
    );
    // The writer never beats faster than its interval (a delayed tick is
    // not made up), so each lost row spans at least one interval; a loaded
    // machine can stretch them, so there is no upper figure from the rows.
    assert!(
        time + interval / 10 >= rows * interval,
        "time lost {time} ms vs {rows} rows x {interval} ms: below the stated bound: {rpo}"
    );
    let stamps = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(rpo[k].as_str().expect(k))
            .expect(k)
            .timestamp_millis() as u64
    };
    assert_eq!(
        time,
        stamps("last_acked_heartbeat_at") - stamps("newest_surviving_heartbeat_at"),
        "time lost is the span between the two heartbeats' own stamps: {rpo}"
    );
    // The declared failure time is ~10 s after the newest surviving beat;
    // it bounds nothing here and is no figure.
    assert!(rpo.get("time_lost_ms_at_most").is_none(), "{rpo}");
    let report = lab.w.run(&["report", &run]);
    assert!(
        report.stdout.contains("time of writes lost: method: newest acknowledged heartbeat time minus newest surviving heartbeat time")
            && report.stdout.contains("(target 5.000s: met)"),
        "{report:?}"
    );
}

/// No heartbeat acknowledgements in the store the failover reads (and no
/// truth note: a run, not a lab drill): the time lost is unknown (null,
/// printed "unknown"), never 0; the declared failure time only bounds it,
/// and the RPO target is not "met".
#[test]
fn missing_acknowledgements_give_unknown_not_zero_and_no_met_target() {
    let lab = Lab::up();
    let env = lab.env();
    let other = lab.w.path().join("other-state");
    let other_s = other.display().to_string();
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    std::thread::sleep(Duration::from_millis(500));
    let b = lab.w.run(&["lab", "break", "primary"]);
    assert_eq!(b.code, 0, "{b:?}");
    let failed_at = drctl::journal::now_rfc3339();
    let o = lab.w.run(&[
        "--state",
        &other_s,
        "run",
        rb.to_str().unwrap(),
        "--env",
        &env,
        "--yes",
        "--mode",
        "drill",
        "--failed-at",
        &failed_at,
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    let run = |args: &[&str]| {
        let mut a = vec!["--state", &other_s];
        a.extend_from_slice(args);
        lab.w.run(&a)
    };
    let report = run(&["report", "latest"]);
    assert!(
        report
            .stdout
            .contains("heartbeat rows lost: unknown (no heartbeat acknowledgements")
            && report
                .stdout
                .contains("time of writes lost: unknown, at most")
            && report.stdout.contains(
                "bound: at most the declared failure time minus the newest surviving heartbeat"
            )
            && !report.stdout.contains(" 0 heartbeat rows lost")
            && !report.stdout.contains("0s of writes lost"),
        "{report:?}"
    );
    assert!(
        report
            .stdout
            .contains("(target 5.000s: unknown: only an upper bound is known)")
            && !report.stdout.contains("(target 5.000s: met)"),
        "{report:?}"
    );
    let j = run(&["report", "latest", "--format", "json"]);
    let v: Value = serde_json::from_str(j.stdout.trim()).unwrap();
    let m = &v["measurements"];
    assert_eq!(m["rpo_verdict"]["verdict"], "unknown", "{m}");
    let est = &m["rpo"][0][1];
    assert_eq!(est["heartbeats_lost"], Value::Null, "{m}");
    assert_eq!(est["time_lost_ms"], Value::Null, "{m}");
    assert!(est["time_lost_ms_at_most"].as_u64().is_some(), "{m}");
    let status = run(&["status", "latest"]);
    assert!(
        status.stdout.contains("RPO: time of writes lost unknown"),
        "{status:?}"
    );
}
