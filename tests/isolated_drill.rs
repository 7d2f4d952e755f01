//! Isolated drills on the real lab (`drctl lab up`: PostgreSQL 15 primary
//! and streaming standby, PowerDNS): the clone of the DR standby is
//! promoted and smoke-checked through the drill DNS name and torn down,
//! while an independent poller watches production the whole time
//! (`pg_stat_replication` on the primary, the standby's WAL receiver and
//! timeline, the production DNS answer). Then kill -9 at points of an
//! isolated drill, followed by `drctl resume` or `drctl drills cleanup`:
//! no clone left running, production untouched, the journal verifies.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drctl_tests::{block_on, Lab};
use serde_json::Value;

/// The lab's work dir made enterable by the server user (the clone's
/// scratch area lives in it) and a drill definition using it.
fn setup(lab: &Lab) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(lab.w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let scratch = lab.w.path().join("scratch");
    let def = lab.w.write(
        "iso-def.yaml",
        &format!(
            "name: lab-iso\nrunbook: {}\nenvironment: {}\nmode: isolated\nparams:\n  scratch: {}\ntargets: {{rto: 1m, rpo: 5s}}\n",
            drctl_tests::repo_root().join("runbooks/isolated-drill.yaml").display(),
            lab.env(),
            scratch.display()
        ),
    );
    (def, scratch)
}

fn env(lab: &Lab) -> drctl::environment::Environment {
    drctl::environment::load_environment(Path::new(&lab.env()))
        .expect("lab env")
        .0
}

fn nameserver(lab: &Lab) -> String {
    let text = std::fs::read_to_string(lab.env()).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("nameservers:"))
        .unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

fn answer(ns: &str, name: &str) -> Vec<String> {
    block_on(drctl::dnsquery::answers(
        ns,
        name,
        "A",
        Duration::from_secs(2),
    ))
    .unwrap_or_default()
}

/// What the independent poller saw that was not production as it should
/// be, and how many samples it took.
struct Poller {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Poller {
    fn start(lab: &Lab) -> Poller {
        let e = env(lab);
        let primary = drctl::topology::server_of(&e, "primary").unwrap();
        let standby = drctl::topology::server_of(&e, "dr").unwrap();
        let ns = nameserver(lab);
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let bad = Mutex::new(Vec::new());
                let mut n = 0;
                let p = primary.connect(Duration::from_secs(5)).await.unwrap();
                let s = standby.connect(Duration::from_secs(5)).await.unwrap();
                while !s2.load(Ordering::SeqCst) {
                    n += 1;
                    let senders: i64 = p
                        .query_one(
                            "select count(*) from pg_stat_replication where state = 'streaming'",
                            &[],
                        )
                        .await
                        .map(|r| r.get(0))
                        .unwrap_or(-1);
                    if senders != 1 {
                        bad.lock()
                            .unwrap()
                            .push(format!("sample {n}: {senders} streaming senders"));
                    }
                    let (status, tli): (Option<String>, Option<i32>) = s
                        .query_opt("select status, received_tli from pg_stat_wal_receiver", &[])
                        .await
                        .ok()
                        .flatten()
                        .map(|r| (r.get(0), r.get(1)))
                        .unwrap_or((None, None));
                    if status.as_deref() != Some("streaming") || tli != Some(1) {
                        bad.lock()
                            .unwrap()
                            .push(format!("sample {n}: receiver {status:?} timeline {tli:?}"));
                    }
                    let in_rec: bool = s
                        .query_one("select pg_is_in_recovery()", &[])
                        .await
                        .map(|r| r.get(0))
                        .unwrap_or(false);
                    if !in_rec {
                        bad.lock()
                            .unwrap()
                            .push(format!("sample {n}: the standby is not in recovery"));
                    }
                    let a = drctl::dnsquery::answers(
                        &ns,
                        "app.lab.example.",
                        "A",
                        Duration::from_secs(2),
                    )
                    .await
                    .unwrap_or_default();
                    if a != vec!["127.0.0.1".to_string()] {
                        bad.lock()
                            .unwrap()
                            .push(format!("sample {n}: production DNS answers {a:?}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (n, bad.into_inner().unwrap())
            })
        });
        Poller { stop, handle }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// Live processes whose command line names `dir` (a clone's postmaster
/// and its children carry their data directory).
fn processes_naming(dir: &Path) -> Vec<u32> {
    let want = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|t| t.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !zombie && String::from_utf8_lossy(&cmd).contains(&want) {
            out.push(pid);
        }
    }
    out
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Nothing of the drill is left: no process from the scratch area, no
/// clone directory, the drill name unset, the clone's port closed.
fn assert_clean(lab: &Lab, scratch: &Path, port: Option<u16>, when: &str) {
    assert!(
        processes_naming(scratch).is_empty(),
        "{when}: clone processes {:?}",
        processes_naming(scratch)
    );
    let left: Vec<_> = std::fs::read_dir(scratch)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{when}: scratch leftovers {left:?}");
    assert!(
        answer(&nameserver(lab), "drill.lab.example.").is_empty(),
        "{when}: drill record still set"
    );
    if let Some(p) = port {
        assert!(!port_open(p), "{when}: the clone's port {p} still open");
    }
}

fn history(lab: &Lab) -> Vec<Value> {
    block_on(lab.w.store().read_history("drills")).expect("history")
}

#[test]
fn an_isolated_drill_promotes_its_clone_and_tears_down_while_production_streams() {
    let lab = Lab::up();
    let (def, scratch) = setup(&lab);
    let ns = nameserver(&lab);
    assert_eq!(answer(&ns, "app.lab.example."), vec!["127.0.0.1"]);
    let poller = Poller::start(&lab);
    let d = lab.w.run(&["drill", def.to_str().unwrap(), "--yes"]);
    let (samples, bad) = poller.finish();
    assert_eq!(d.code, 0, "{d:?}");
    assert!(samples >= 10, "the poller took only {samples} samples");
    assert!(bad.is_empty(), "production was disturbed: {bad:?}");
    assert_eq!(answer(&ns, "app.lab.example."), vec!["127.0.0.1"]);

    let run = lab.last_run();
    let clone = lab.outputs(&run, "clone");
    // The clone took the next timeline, as a real promotion would; it was
    // checked isolated before it was promoted.
    assert_eq!(clone["timeline"], 2, "{clone}");
    assert_eq!(clone["production_timeline"], 1, "{clone}");
    let safety = &clone["safety"];
    assert_eq!(safety["archive_mode"], "off", "{safety}");
    assert_eq!(safety["primary_conninfo"], "", "{safety}");
    assert_eq!(safety["primary_slot_name"], "", "{safety}");
    assert_eq!(safety["restore_command"], "", "{safety}");
    assert_eq!(safety["listen_addresses"], "127.0.0.1", "{safety}");
    assert_eq!(safety["wal_receivers"], 0, "{safety}");
    for k in ["copy_ms", "consistent_ms", "promote_ms"] {
        assert!(clone[k].as_u64().is_some(), "{k}: {clone}");
    }
    assert!(clone["rpo"]["wal_bytes_lost"].as_u64().is_some(), "{clone}");
    let port = clone["port"].as_u64().unwrap() as u16;
    // Smoke went through the drill DNS name to the clone.
    let smoke = lab.outputs(&run, "smoke");
    assert_eq!(smoke["address"], format!("127.0.0.1:{port}"), "{smoke}");
    assert_eq!(
        lab.outputs(&run, "drill-dns")["desired"],
        serde_json::json!(["127.0.0.1"])
    );
    let prod = lab.outputs(&run, "production");
    assert_eq!(prod["timeline"], 1, "{prod}");
    assert_eq!(prod["timeline_before"], 1, "{prod}");
    assert_clean(&lab, &scratch, Some(port), "after the drill");

    // The history holds it as an isolated drill, RTO from the cut.
    let h = history(&lab);
    let rec = h
        .iter()
        .find(|r| r["run_id"] == run.as_str())
        .expect("history record");
    assert_eq!(rec["mode"], "isolated", "{rec}");
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert!(rec["rto_ms"].as_u64().is_some(), "{rec}");
    assert_eq!(rec["isolated"]["copy_ms"], clone["copy_ms"], "{rec}");
    let cut = clone["failure_cut_ms"].as_u64().unwrap();
    let smoke_end = lab.w.finished(&run, "smoke")["ts_ms"].as_u64().unwrap_or(0);
    if smoke_end > 0 {
        assert!(rec["rto_ms"].as_u64().unwrap() <= smoke_end - cut, "{rec}");
    }

    // The lab's primary was never touched: a full drill's precondition
    // still holds, and a second isolated drill runs the same.
    let again = lab.w.run(&["drill", def.to_str().unwrap(), "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
}

#[test]
fn an_isolated_run_refuses_every_production_dns_change_before_it_changes_anything() {
    let lab = Lab::up();
    let (_, scratch) = setup(&lab);
    let ns = nameserver(&lab);
    let rb = lab.runbook(
        "iso-dns.yaml",
        "name: iso-dns\nsteps:\n  - id: flip\n    action: dns.switch\n    with: {region: dr}\n",
    );
    let def = lab.w.write(
        "iso-dns-def.yaml",
        &format!(
            "name: iso-dns\nrunbook: {rb}\nenvironment: {}\nmode: isolated\n",
            lab.env()
        ),
    );
    let o = lab.w.run(&["drill", def.to_str().unwrap(), "--yes"]);
    assert_eq!(o.code, 5, "{o:?}");
    let run = lab.last_run();
    assert_eq!(lab.w.finished(&run, "flip")["error"]["kind"], "refused");
    let err = lab.error(&run, "flip");
    assert!(err.contains("not declared `drill: true`"), "{err}");
    assert!(err.contains("app.lab.example. A"), "{err}");
    assert_eq!(answer(&ns, "app.lab.example."), vec!["127.0.0.1"]);
    // The same refusal for a drill-point step naming a production record.
    let rb = lab.runbook(
        "iso-dns2.yaml",
        "name: iso-dns2\nsteps:\n  - id: point\n    action: dns.drill_point\n    with: {name: app.lab.example., values: [127.0.0.9]}\n",
    );
    let def = lab.w.write(
        "iso-dns2-def.yaml",
        &format!(
            "name: iso-dns2\nrunbook: {rb}\nenvironment: {}\nmode: isolated\n",
            lab.env()
        ),
    );
    let o = lab.w.run(&["drill", def.to_str().unwrap(), "--yes"]);
    assert_ne!(o.code, 0, "{o:?}");
    let err = lab.error(&lab.last_run(), "point");
    assert!(err.contains("production record"), "{err}");
    assert_eq!(answer(&ns, "app.lab.example."), vec!["127.0.0.1"]);
    assert_clean(&lab, &scratch, None, "after the refusals");

    // The isolated runbook told to point the production name: the DNS
    // step is refused, the smoke check cannot pass, the clone is still
    // torn down, production re-asserted, and the drill fails saying why.
    let def = lab.w.write(
        "iso-wrong-name.yaml",
        &format!(
            "name: iso-wrong\nrunbook: {}\nenvironment: {}\nmode: isolated\nparams:\n  scratch: {}\n  drill_name: app.lab.example.\n",
            drctl_tests::repo_root().join("runbooks/isolated-drill.yaml").display(),
            lab.env(),
            scratch.display()
        ),
    );
    let poller = Poller::start(&lab);
    let o = lab.w.run(&["drill", def.to_str().unwrap(), "--yes"]);
    let (_, bad) = poller.finish();
    assert_eq!(o.code, 5, "{o:?}");
    assert!(bad.is_empty(), "production disturbed: {bad:?}");
    let run = lab.last_run();
    assert_eq!(
        lab.w.finished(&run, "drill-dns")["error"]["kind"],
        "refused"
    );
    assert_eq!(lab.w.finished(&run, "teardown")["status"], "succeeded");
    let err = lab.error(&run, "production");
    assert!(
        err.contains("production invariants hold, but the drill failed"),
        "{err}"
    );
    assert!(err.contains("`drill-dns` failed"), "{err}");
    assert_eq!(answer(&ns, "app.lab.example."), vec!["127.0.0.1"]);
    let port = lab.outputs(&run, "clone")["port"]
        .as_u64()
        .map(|p| p as u16);
    assert_clean(&lab, &scratch, port, "after the failed drill");
}

/// kill -9 of drctl at points of an isolated drill (after the copy, with
/// the clone started, promoted, with the drill record pointed), then
/// alternately `drctl resume` and `drctl drills cleanup`: no clone left
/// running (processes and port), the drill name unset, production
/// streaming throughout, the journal verifies.
#[test]
fn an_isolated_drill_killed_at_each_point_is_cleaned_up_by_resume_or_cleanup() {
    let lab = Lab::up();
    let (def, scratch) = setup(&lab);
    for (i, point) in [
        "clone-copied",
        "clone-started",
        "clone-promoted",
        "drill-dns-pointed",
    ]
    .iter()
    .enumerate()
    {
        let poller = Poller::start(&lab);
        let killed = lab.drill_killed_at(&def, point);
        assert_eq!(killed.code, -1, "killed at {point}: {killed:?}");
        let run = lab.last_run();
        let placed = lab
            .w
            .journal(&run)
            .iter()
            .find(|r| r["type"] == "step_checkpoint" && r["step"] == "clone")
            .cloned();
        let port = placed
            .as_ref()
            .and_then(|r| r["data"]["port"].as_u64())
            .map(|p| p as u16);
        if *point != "clone-copied" {
            // The kill left a running clone behind: what the cleanup is for.
            assert!(
                !processes_naming(&scratch).is_empty(),
                "{point}: no clone left to clean up"
            );
        }
        if *point == "clone-promoted" {
            // The promoted clone is no upstream: loopback only, and a
            // replication session (what a standby would open) is refused.
            let port = port.expect("the clone's port is journaled");
            assert!(port_open(port), "the clone listens");
            assert!(
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 2], port)),
                    Duration::from_millis(200)
                )
                .is_err(),
                "the clone listens beyond 127.0.0.1"
            );
            let psql = drctl::lab::pg::bindir().unwrap().join("psql");
            let pw = std::fs::read_to_string(lab.w.state().join("lab/pgpass")).unwrap();
            let conn = |extra: &str| {
                std::process::Command::new(&psql)
                    .arg(format!(
                        "host=127.0.0.1 port={port} user=drctl dbname=postgres sslmode=disable{extra}"
                    ))
                    .args(["-Atc", "select pg_is_in_recovery()"])
                    .env("PGPASSWORD", pw.trim())
                    .env("HOME", "/nonexistent")
                    .output()
                    .unwrap()
            };
            let normal = conn("");
            assert!(normal.status.success(), "{normal:?}");
            assert_eq!(String::from_utf8_lossy(&normal.stdout).trim(), "f");
            let repl = conn(" replication=true");
            assert!(
                !repl.status.success(),
                "a replication session was accepted: {repl:?}"
            );
            let err = String::from_utf8_lossy(&repl.stderr);
            assert!(err.contains("pg_hba.conf rejects replication"), "{err}");
        }
        let by_resume = i % 2 == 0;
        let o = if by_resume {
            lab.w.run(&["resume", &run, "--yes"])
        } else {
            lab.w.run(&["drills", "cleanup", &run])
        };
        let (samples, bad) = poller.finish();
        assert_eq!(
            o.code,
            0,
            "{} after a kill at {point}: {o:?}",
            if by_resume { "resume" } else { "cleanup" }
        );
        assert!(samples > 0);
        assert!(bad.is_empty(), "{point}: production disturbed: {bad:?}");
        assert_clean(&lab, &scratch, port, point);
        drctl::journal::verify(&lab.w.journal_bytes(&run)).expect("the journal verifies");
        if by_resume {
            let prod = lab.outputs(&run, "production");
            assert_eq!(prod["timeline"], 1, "{point}: {prod}");
        }
    }
}

/// An isolated drill gives way to an incident in both directions: it does
/// not start while a mutating run holds the environment's lock, and while
/// it runs it holds only the environment's drill lock, so a mutating run
/// (standing in for a failover) is not held off. `drills cleanup` of a
/// live drill is refused by that lock.
#[test]
fn an_isolated_drill_never_holds_off_a_mutating_run_and_gives_way_to_one() {
    let lab = Lab::up();
    let (def, scratch) = setup(&lab);
    let env_name = env(&lab).name;
    let env_lock = format!("env-{env_name}");
    let drill_lock = format!("drill-env-{env_name}");

    // 1. A mutating run holds the environment: the drill does not start.
    let hold = lab.runbook(
        "hold.yaml",
        "name: hold\nsteps:\n  - id: hold\n    action: exec\n    timeout: 1m\n    with: {argv: [sh, -c, 'touch holding; while [ ! -e release ]; do sleep 0.05; done']}\n",
    );
    let mut holder = lab
        .w
        .cmd(&["run", &hold, "--env", &lab.env(), "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the holding run");
    assert!(
        drctl_tests::wait_until(Duration::from_secs(30), || lab
            .w
            .path()
            .join("holding")
            .exists()),
        "the holding run did not start"
    );
    assert_eq!(lab.w.leases(&env_lock).len(), 1, "the run holds {env_lock}");
    let runs_before = lab.w.runs().len();
    let o = lab.w.run(&["drill", def.to_str().unwrap(), "--yes"]);
    assert_eq!(o.code, 6, "{o:?}");
    assert!(
        o.stderr.contains(&format!(
            "not starting an isolated drill while another run holds `{env_lock}`"
        )),
        "{o:?}"
    );
    assert!(o.stderr.contains("drills give way"), "{o:?}");
    assert_eq!(lab.w.runs().len(), runs_before, "no drill run was started");
    assert_clean(&lab, &scratch, None, "after the refused drill");
    lab.w.write("release", "");
    assert!(holder.wait().expect("wait").success());

    // 2. A running drill holds only the drill lock: a mutating run on the
    // same environment starts and finishes meanwhile.
    let mut drill = lab
        .w
        .cmd(&["drill", def.to_str().unwrap(), "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the drill");
    let runs_before = lab.w.runs().len();
    assert!(
        drctl_tests::wait_until(Duration::from_secs(60), || {
            lab.w.leases(&drill_lock).len() == 1 && lab.w.runs().len() > runs_before
        }),
        "the drill did not take its lock and journal"
    );
    let run = lab.last_run();
    assert!(
        lab.w.leases(&env_lock).is_empty(),
        "the drill holds {env_lock}"
    );
    // Its cleanup is refused while it is live (the lock says so, whatever
    // host the drill runs on).
    let c = lab.w.run(&["drills", "cleanup", &run]);
    assert_eq!(c.code, 6, "{c:?}");
    let quick = lab.runbook(
        "quick.yaml",
        "name: quick\nsteps:\n  - id: touch\n    action: exec\n    with: {argv: [sh, -c, 'touch quick-ran']}\n",
    );
    let q = lab.w.run(&["run", &quick, "--env", &lab.env(), "--yes"]);
    assert_eq!(q.code, 0, "a mutating run was held off by the drill: {q:?}");
    assert!(
        q.stderr.contains(&format!(
            "isolated drill {run} is running on this environment"
        )),
        "the mutating run names the drill: {q:?}"
    );
    assert!(lab.w.path().join("quick-ran").exists());
    let d = drill.wait().expect("wait for the drill");
    assert!(d.success(), "the drill: {d:?}");
    assert!(
        lab.w
            .journal(&run)
            .iter()
            .any(|r| r["type"] == "run_finished"),
        "the drill's journal ends"
    );
    assert!(
        lab.w.leases(&drill_lock).is_empty(),
        "the drill released its lock"
    );
    assert_clean(&lab, &scratch, None, "after the drill");
}
