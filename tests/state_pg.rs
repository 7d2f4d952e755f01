//! The production topology on the lab: drctl's state in a third PostgreSQL
//! instance (`drctl lab up --state-backend postgres`), shared by processes
//! that share no disk. The heartbeat runs in the lab supervisor ("host A");
//! failovers run from other working directories ("host B") that find the
//! store through the environment file's `state:` section alone.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use drctl_tests::{drctl_bin, Out, Work};
use serde_json::Value;

/// A lab whose state store is its own PostgreSQL server.
struct PgLab {
    a: Work,
    st: Value,
}

impl PgLab {
    fn up() -> PgLab {
        let a = Work::dir_store();
        let o = a.run(&["lab", "up", "--state-backend", "postgres"]);
        assert_eq!(o.code, 0, "lab up: {o:?}");
        let st: Value =
            serde_json::from_str(&std::fs::read_to_string(a.state().join("lab/lab.json")).unwrap())
                .unwrap();
        assert!(st["state_url"].as_str().is_some(), "{st}");
        // The heartbeat writes every 100 ms; give it a few beats.
        std::thread::sleep(Duration::from_millis(400));
        PgLab { a, st }
    }

    fn env(&self) -> String {
        self.a.state().join("lab/env.yaml").display().to_string()
    }

    fn url(&self) -> String {
        self.st["state_url"].as_str().unwrap().to_string()
    }

    /// drctl on another "host": its own working directory, no state
    /// directory or variable; the store comes from `--env`, or `--state`
    /// with the password in `DRCTL_STATE_PASSWORD`.
    fn host(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(drctl_bin());
        let pw = std::fs::read_to_string(self.a.state().join("lab/pgpass")).unwrap();
        c.args(args)
            .current_dir(dir)
            .env_remove("DRCTL_STATE")
            .env_remove("DRCTL_STATE_DIR")
            .env("DRCTL_STATE_PASSWORD", pw.trim())
            .env("DRCTL_OPERATOR", "test-operator")
            .env_remove("DRCTL_TEST_CRASH_AFTER_SEQ")
            .stdin(std::process::Stdio::null());
        c
    }

    fn run_on(&self, dir: &Path, args: &[&str]) -> Out {
        Out::from(self.host(dir, args).output().unwrap())
    }

    fn journal(&self, dir: &Path, run: &str) -> Vec<Value> {
        let o = self.run_on(
            dir,
            &["--state", &self.url(), "--output", "json", "status", run],
        );
        assert_eq!(o.code, 0, "status {run}: {o:?}");
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        v["run"]["steps"].as_array().cloned().unwrap_or_default()
    }

    fn pg_state_data(&self) -> std::path::PathBuf {
        Path::new(self.st["data_root"].as_str().unwrap()).join("state")
    }

    /// Stops or starts the state database with its own tools.
    fn pg_ctl(&self, action: &str) {
        let data = self.pg_state_data();
        let log = data.with_file_name("state-restart.log");
        let mut c = Command::new("/usr/lib/postgresql/15/bin/pg_ctl");
        c.arg("-D")
            .arg(&data)
            .args(["-w", "-t", "30", "-m", "fast", action]);
        if action == "start" {
            c.arg("-l").arg(&log);
        }
        // SAFETY: geteuid has no preconditions.
        let c = if unsafe { libc::geteuid() } == 0 {
            let mut r = Command::new("runuser");
            r.args(["-u", "postgres", "--"])
                .arg(c.get_program())
                .args(c.get_args());
            r
        } else {
            c
        };
        let mut c = c;
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "pg_ctl {action}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for PgLab {
    fn drop(&mut self) {
        let _ = self.a.run(&["lab", "down"]);
    }
}

#[test]
fn two_hosts_share_one_postgres_store_and_promote_uses_the_heartbeat() {
    let lab = PgLab::up();
    let b = tempfile::tempdir().unwrap();
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    let o = lab.run_on(
        b.path(),
        &[
            "--output",
            "json",
            "drill",
            rb.to_str().unwrap(),
            "--env",
            &lab.env(),
            "--yes",
            "--inject-lag",
            "500ms",
        ],
    );
    assert_eq!(o.code, 0, "{o:?}");
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let run = v["run_id"].as_str().unwrap().to_string();
    assert!(
        !b.path().join("state").exists(),
        "host B keeps no local state"
    );
    // The heartbeat's acknowledgements (written by host A's supervisor)
    // reached the promote step on host B through the shared store.
    let est = &v["measurements"]["rpo"][0][1];
    assert!(
        est["heartbeats_lost"].as_i64().is_some(),
        "rows lost measured from acknowledgements: {v}"
    );
    let truth = v["rpo_truth"]["heartbeats_lost"].as_i64().unwrap();
    let e = est["heartbeats_lost"].as_i64().unwrap();
    assert!(
        truth == e || truth == e + 1,
        "estimate {e} vs truth {truth}"
    );
    // Host A (another directory) reads the same run, its report and history.
    let steps = lab.journal(lab.a.path(), &run);
    let promote = steps.iter().find(|s| s["id"] == "promote").unwrap();
    assert_eq!(promote["outputs"]["timeline"], 2, "{promote}");
    let report = lab.run_on(lab.a.path(), &["--state", &lab.url(), "report", &run]);
    assert_eq!(report.code, 0, "{report:?}");
    assert!(report.stdout.contains("## Data loss (RPO)"), "{report:?}");
}

#[test]
fn the_state_database_stopped_mid_run_stops_the_run_and_resume_completes_it() {
    let lab = PgLab::up();
    let b = tempfile::tempdir().unwrap();
    let rb = b.path().join("rb.yaml");
    std::fs::write(
        &rb,
        "name: store-outage\nsteps:\n  - id: a\n    action: exec\n    with: {argv: [sh, -c, 'echo a >> witness'], unless: [grep, -qx, a, witness]}\n  - id: slow\n    action: exec\n    needs: [a]\n    with: {argv: [sleep, '3'], idempotent: true}\n  - id: c\n    action: exec\n    needs: [slow]\n    with: {argv: [sh, -c, 'echo c >> witness'], unless: [grep, -qx, c, witness]}\n",
    )
    .unwrap();
    let child = lab
        .host(
            b.path(),
            &["run", rb.to_str().unwrap(), "--env", &lab.env(), "--yes"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(drctl_tests::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(b.path().join("witness")).unwrap_or_default() == "a\n"
    }));
    lab.pg_ctl("stop");
    let o = Out::from(child.wait_with_output().unwrap());
    assert_eq!(o.code, 10, "journal-write exit code: {o:?}");
    assert_eq!(
        std::fs::read_to_string(b.path().join("witness")).unwrap(),
        "a\n",
        "nothing after the store went away"
    );
    lab.pg_ctl("start");
    let runs = lab.run_on(
        b.path(),
        &["--state", &lab.url(), "--output", "json", "runs"],
    );
    let list: Value = serde_json::from_str(&runs.stdout).unwrap();
    let run = list[0]["run_id"].as_str().unwrap().to_string();
    let r = lab.run_on(b.path(), &["--state", &lab.url(), "resume", &run]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(b.path().join("witness")).unwrap(),
        "a\nc\n",
        "each effect exactly once"
    );
    let st = lab.run_on(b.path(), &["--state", &lab.url(), "status", &run]);
    assert_eq!(st.code, 0, "{st:?}");
    assert!(st.stdout.contains("succeeded"), "{st:?}");
}

/// kill -9 of a lab failover drill at random journal records, then resume:
/// one promotion (timeline 2), DNS switched, the journal verifies. Each
/// point gets a fresh lab; the points are drawn anew on every run (the
/// seed is printed so a failure can be replayed with DRCTL_TEST_SEED).
#[test]
fn kill_9_at_random_points_of_a_failover_with_the_postgres_store_then_resume() {
    let seed: u64 = std::env::var("DRCTL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("DRCTL_TEST_SEED={seed}");
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    // A failover journal has about 25 records; kill after one of 2..20.
    let mut x = seed | 1;
    for round in 0..3 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let point = 2 + x % 19;
        let lab = PgLab::up();
        let b = tempfile::tempdir().unwrap();
        let mut c = lab.host(
            b.path(),
            &["drill", rb.to_str().unwrap(), "--env", &lab.env(), "--yes"],
        );
        c.env("DRCTL_TEST_CRASH_AFTER_SEQ", point.to_string());
        let o = Out::from(c.output().unwrap());
        assert_eq!(
            o.code, -1,
            "round {round}: SIGKILL after record {point}: {o:?}"
        );
        let runs = lab.run_on(
            b.path(),
            &["--state", &lab.url(), "--output", "json", "runs"],
        );
        let list: Value = serde_json::from_str(&runs.stdout).unwrap();
        let run = list[0]["run_id"].as_str().unwrap().to_string();
        let r = lab.run_on(b.path(), &["--state", &lab.url(), "resume", &run]);
        // 20: the kill came after the last group commit, which already held
        // `run_finished`; there was nothing left to resume.
        let ended = r.code == 20 && r.stderr.contains("already ended: succeeded");
        assert!(
            r.code == 0 || ended,
            "round {round}, killed after {point}: {r:?}"
        );
        let steps = lab.journal(b.path(), &run);
        let get = |id: &str| steps.iter().find(|s| s["id"] == id).cloned().unwrap();
        let promote = get("promote");
        assert_eq!(
            promote["status"], "succeeded",
            "killed after {point}: {promote}"
        );
        assert_eq!(
            promote["outputs"]["timeline"], 2,
            "exactly one promotion (killed after {point}): {promote}"
        );
        let dns = get("dns");
        assert_eq!(dns["status"], "succeeded", "killed after {point}: {dns}");
        // The authoritative server answers the DR address.
        let port = lab.st["ports"]["dns"].as_u64().unwrap();
        let dig = Command::new("dig")
            .args([
                "+short",
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "app.lab.example",
                "A",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&dig.stdout).trim(),
            "127.0.0.2",
            "DNS switched (killed after {point})"
        );
    }
}
