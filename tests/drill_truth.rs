//! The drill's truth against real PostgreSQL 15 servers (`drctl lab up`):
//! an independent writer checks what the truth says was lost, the old
//! primary is never writable after a drill (even with the drill killed in
//! the middle of the truth), the WAL truth is compared with the estimate,
//! and drills refuse a lab that is not in its initial state.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use drctl::lab::supervisor::LabState;
use drctl::postgres::ops::Lsn;
use drctl_tests::{block_on, wait_until, Lab};
use serde_json::Value;

fn state(lab: &Lab) -> LabState {
    drctl::lab::read_state(&lab.w.state().join("lab")).expect("lab.json")
}

fn failover() -> String {
    drctl_tests::repo_root()
        .join("runbooks/failover.yaml")
        .display()
        .to_string()
}

fn drill_args<'a>(env: &'a str, rb: &'a str, lag: &'a str) -> Vec<&'a str> {
    vec![
        "--output",
        "json",
        "drill",
        rb,
        "--env",
        env,
        "--yes",
        "--inject-lag",
        lag,
    ]
}

/// One acknowledged write of the test's own writer: its id and the WAL
/// positions around it (`before` <= its first record; `after` >= the end
/// of its commit record, which is flushed when the insert returns).
#[derive(Debug, Clone, Copy)]
struct Ack {
    id: i64,
    before: Lsn,
    after: Lsn,
}

/// A writer independent of drctl's heartbeat: its own connection and
/// table on the primary, one insert every 100 ms (the heartbeat's
/// interval), each acknowledged id kept in test memory. It stops at the
/// first error (the primary was killed) and never reconnects.
fn start_writer(st: &LabState) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<Ack>>) {
    let server = drctl::lab::pg::lab_server(st.ports["pg-primary"], &st.spec.superuser, &st.spec);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let h = std::thread::spawn(move || {
        block_on(async move {
            let c = server
                .connect(Duration::from_secs(5))
                .await
                .expect("writer connects");
            c.batch_execute("create table test_writes (id bigint primary key)")
                .await
                .expect("test table");
            let lsn = |rows: Vec<tokio_postgres::Row>| -> Lsn {
                Lsn::parse(&rows[0].get::<_, String>(0)).expect("an lsn")
            };
            let mut acks = Vec::new();
            let mut id = 0;
            // The heartbeat's pacing: an interval, not a sleep after each
            // write, so both write exactly ten rows a second.
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop2.load(Ordering::SeqCst) {
                tick.tick().await;
                id += 1;
                let step = async {
                    let before = lsn(c
                        .query("select pg_current_wal_insert_lsn()::text", &[])
                        .await?);
                    c.batch_execute(&format!("insert into test_writes values ({id})"))
                        .await?;
                    let after = lsn(c
                        .query("select pg_current_wal_flush_lsn()::text", &[])
                        .await?);
                    Ok::<_, tokio_postgres::Error>(Ack { id, before, after })
                };
                match tokio::time::timeout(Duration::from_secs(2), step).await {
                    Ok(Ok(a)) => acks.push(a),
                    _ => break,
                }
            }
            acks
        })
    });
    (stop, h)
}

/// The ids of the test's table that survived on the promoted server.
fn survived(st: &LabState) -> Vec<i64> {
    let dr = drctl::lab::pg::lab_server(st.ports["pg-dr"], &st.spec.superuser, &st.spec);
    block_on(async {
        let c = dr.connect(Duration::from_secs(5)).await.expect("dr");
        let rows = c
            .query("select id from test_writes order by id", &[])
            .await
            .expect("test rows on the promoted server");
        rows.iter().map(|r| r.get::<_, i64>(0)).collect()
    })
}

/// The truth equals what an independent writer saw lost: rows it
/// acknowledged that are absent on the promoted server. Each heartbeat and
/// test row is a point in time; both write every 100 ms, so their lost
/// counts differ by at most the one row at either end of the lost window,
/// and the WAL positions bracket the truth's switch point and end of WAL
/// exactly: a row whose commit ended at or before the switch point
/// survived, a row that began after it is lost, and every acknowledged
/// row is inside the old primary's end of WAL.
#[test]
fn isolated_truth_agrees_with_an_independent_writer() {
    let rb = failover();
    for lag in ["300ms", "1s", "2s"] {
        let lab = Lab::up();
        let st = state(&lab);
        let (stop, writer) = start_writer(&st);
        std::thread::sleep(Duration::from_millis(500));
        let env = lab.env();
        let o = lab.w.run(&drill_args(&env, &rb, lag));
        stop.store(true, Ordering::SeqCst);
        let acks = writer.join().expect("writer");
        assert_eq!(o.code, 0, "lag {lag}: {o:?}");
        let v: Value = serde_json::from_str(o.stdout.trim()).expect("json");
        let truth = &v["rpo_truth"];
        let survivors = survived(&st);
        let lost: Vec<&Ack> = acks.iter().filter(|a| !survivors.contains(&a.id)).collect();
        assert!(
            survivors
                .iter()
                .all(|s| acks.iter().any(|a| a.id == *s) || *s == acks.len() as i64 + 1),
            "lag {lag}: only acknowledged rows (or the one in flight) survive: {survivors:?}"
        );
        let h = truth["heartbeats_lost"].as_i64().expect("rows truth");
        let w = lost.len() as i64;
        assert!(
            w >= 1,
            "lag {lag}: the lag lost rows of the writer: {acks:?} {survivors:?}"
        );
        assert!(
            (h - w).abs() <= 1,
            "lag {lag}: truth {h} heartbeats vs {w} independent rows lost: {truth}"
        );
        // The truth's rows are the heartbeat writer's own: it was stopped
        // before the kill, so its last acknowledgement is the last lost row.
        assert_eq!(
            truth["last_lost_heartbeat_id"], truth["writer_last_acked_id"],
            "lag {lag}: {truth}"
        );
        assert_eq!(
            h,
            truth["writer_last_acked_id"].as_i64().unwrap()
                - truth["newest_surviving_heartbeat_id"].as_i64().unwrap(),
            "lag {lag}: every acknowledged heartbeat beyond the survivor, no more: {truth}"
        );
        let switch = Lsn::parse(truth["switch_lsn"].as_str().expect("switch lsn")).unwrap();
        let end = Lsn::parse(truth["old_primary_end_lsn"].as_str().expect("end lsn")).unwrap();
        for a in &acks {
            if a.after <= switch {
                assert!(
                    survivors.contains(&a.id),
                    "lag {lag}: row {a:?} ended before the switch point {switch} but was lost"
                );
            }
            if a.before >= switch {
                assert!(
                    !survivors.contains(&a.id),
                    "lag {lag}: row {a:?} began after the switch point {switch} but survived"
                );
            }
            assert!(
                a.after <= end,
                "lag {lag}: acknowledged row {a:?} beyond the old primary's end of WAL {end}"
            );
        }
        assert_eq!(
            truth["wal_bytes_lost"].as_u64(),
            Some(end.bytes_after(switch)),
            "{truth}"
        );
        // The WAL estimate starts from the last heartbeat's LSN, sampled
        // before that heartbeat's own records, and the standby's receive
        // LSN, which is at or past the switch point (the end of the last
        // whole record it replayed). So it can only fall short of the
        // truth, by the WAL written after that sample: the last heartbeat
        // and the test's rows since (a few hundred bytes; one WAL page at
        // most here, where nothing else writes).
        let est = v["measurements"]["rpo"][0][1]["wal_bytes_lost"]
            .as_u64()
            .expect("wal estimate");
        let t = truth["wal_bytes_lost"].as_u64().unwrap();
        assert!(
            est <= t,
            "lag {lag}: WAL estimate {est} above the truth {t}"
        );
        assert!(
            t - est <= 8192,
            "lag {lag}: WAL estimate {est} short of the truth {t} by more than a page"
        );
        eprintln!("lag {lag}: heartbeats lost {h}, independent rows lost {w}; WAL estimate {est} B, truth {t} B; time truth {} ms, estimate {} ms",
            truth["time_lost_ms"], v["measurements"]["rpo"][0][1]["time_lost_ms"]);
        if lag == "2s" {
            second_drill_is_refused(&lab, &st);
        }
    }
}

/// A second drill on the failed-over lab: refused before anything is
/// injected or journaled, naming the current primary.
fn second_drill_is_refused(lab: &Lab, st: &LabState) {
    let runs = lab.w.runs().len();
    let env = lab.env();
    let rb = failover();
    let o = lab.w.run(&["drill", &rb, "--env", &env, "--yes"]);
    assert_eq!(o.code, 22, "{o:?}");
    let dr = format!("pg-dr (127.0.0.1:{})", st.ports["pg-dr"]);
    assert!(
        o.stderr.contains(&format!("the primary now is {dr}")),
        "{o:?}"
    );
    assert!(o.stderr.contains("drctl lab down && drctl lab up"), "{o:?}");
    assert_eq!(lab.w.runs().len(), runs, "no run was started");
}

/// A lab failed over by a plain run (promote only, old primary still up):
/// the drill refuses and names both primaries.
#[test]
fn a_drill_on_a_promoted_lab_is_refused() {
    let lab = Lab::up();
    let st = state(&lab);
    let rb = lab.runbook(
        "p.yaml",
        "name: promote-only\nsteps:\n  - id: promote\n    action: postgres.promote\n    with: {server: \"${regions.dr.postgres}\"}\n",
    );
    let env = lab.env();
    // The same servers as an environment that is not a lab (no `lab:`
    // section): the runbook injects nothing, drctl checks the roles itself.
    let text = std::fs::read_to_string(&env).unwrap();
    let plain = lab.runbook(
        "plain-env.yaml",
        &text[..text.find("\nlab:").expect("a lab section") + 1],
    );
    let look = lab.runbook(
        "look.yaml",
        "name: look\nsteps:\n  - id: dr\n    action: postgres.status\n    with: {server: \"${target.postgres}\"}\n",
    );
    let before = lab.w.run(&["drill", &look, "--env", &plain, "--yes"]);
    assert_ne!(before.code, 22, "the initial state passes: {before:?}");
    assert!(!before.stderr.contains("initial state"), "{before:?}");
    let o = lab
        .w
        .run(&["run", &rb, "--env", &env, "--yes", "--mode", "drill"]);
    assert_eq!(o.code, 0, "{o:?}");
    let runs = lab.w.runs().len();
    let e = lab.w.run(&["drill", &look, "--env", &plain, "--yes"]);
    assert_eq!(e.code, 22, "{e:?}");
    assert!(
        e.stderr.contains(&format!(
            "the environment is not in its initial state: the target region `dr`'s postgres (127.0.0.1:{}) is a primary, not a standby",
            st.ports["pg-dr"]
        )),
        "{e:?}"
    );
    assert!(e.stderr.contains("fail back first"), "{e:?}");
    assert_eq!(lab.w.runs().len(), runs, "a refused drill journals nothing");
    let d = lab.w.run(&["drill", &failover(), "--env", &env, "--yes"]);
    assert_eq!(d.code, 22, "{d:?}");
    assert!(
        d.stderr.contains("pg-dr is a primary, not a standby"),
        "{d:?}"
    );
    assert!(
        d.stderr
            .contains(&format!("pg-dr (127.0.0.1:{})", st.ports["pg-dr"])),
        "{d:?}"
    );
    let primary_alive = primary_pids(&st).iter().any(|p| alive(*p));
    assert!(
        primary_alive,
        "the drill injected nothing: the primary still runs"
    );
}

/// The lease is taken before the injection: a drill that cannot have it
/// exits 6 and leaves the primary alone.
#[test]
fn a_drill_without_the_lease_injects_nothing() {
    let lab = Lab::up();
    let st = state(&lab);
    let store = lab.w.store();
    let holder = drctl::store::HolderId::this_process("someone-else");
    let _grant = block_on(store.acquire_lease(
        "env-lab",
        drctl::store::LeaseMode::Exclusive,
        &holder,
        Duration::from_secs(60),
    ))
    .expect("lease");
    let o = lab
        .w
        .run(&["drill", &failover(), "--env", &lab.env(), "--yes"]);
    assert_eq!(o.code, 6, "{o:?}");
    assert!(
        primary_pids(&st).iter().any(|p| alive(*p)),
        "primary untouched"
    );
    let roles = drctl_tests::block_on(drctl::lab::control(&st.control, "GET", "/roles")).unwrap();
    assert_eq!(roles["primary_broken"], false, "{roles}");
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Processes whose command line names `needle`.
fn pids_with(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && alive(pid) {
            out.push((pid, cmd));
        }
    }
    out
}

fn primary_data(st: &LabState) -> PathBuf {
    st.data_root.join("primary")
}

/// Postmasters on the old primary's data directory.
fn primary_pids(st: &LabState) -> Vec<u32> {
    let d = format!("-D {} ", primary_data(st).display());
    pids_with(&d)
        .into_iter()
        .filter(|(_, c)| c.contains("postgres"))
        .map(|(p, _)| p)
        .collect()
}

/// Tries a write on every postmaster of the old primary's data directory,
/// as the superuser and as the app: none may succeed.
fn assert_no_writable_old_primary(st: &LabState, when: &str) {
    let d = format!("-D {} ", primary_data(st).display());
    for (pid, cmd) in pids_with(&d)
        .into_iter()
        .filter(|(_, c)| c.contains("postgres"))
    {
        let port: u16 = cmd
            .split("port=")
            .nth(1)
            .and_then(|p| p.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(st.ports["pg-primary"]);
        for user in [&st.spec.superuser, &st.spec.app_user] {
            let s = drctl::lab::pg::lab_server(port, user, &st.spec);
            let wrote = block_on(async {
                match s.connect(Duration::from_secs(3)).await {
                    Ok(c) => c
                        .batch_execute("create table truth_probe (x int)")
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            });
            assert!(
                !wrote,
                "{when}: {user} wrote to the old primary (pid {pid}, port {port})"
            );
        }
    }
}

/// The drill killed (SIGKILL) at several points of the truth measurement:
/// the supervisor finishes it and stops the isolated server, the old
/// primary never takes a write, its data directory stays marked as a
/// standby, and `lab down` leaves no process. The last case kills the
/// supervisor itself mid-truth: `lab down` finds the isolated server by its
/// pid file.
#[test]
fn the_old_primary_is_never_writable_even_when_the_drill_is_killed() {
    let rb = failover();
    // (ms after the run's last record, or None: once the isolated server
    // runs; whether the supervisor is killed too)
    for (delay_ms, kill_supervisor) in [
        (Some(0u64), false),
        (None, false),
        (Some(400), false),
        (None, true),
    ] {
        let when = format!(
            "drill killed {} (supervisor killed too: {kill_supervisor})",
            delay_ms.map_or("while the isolated server runs".into(), |d| format!(
                "{d} ms after the run finished"
            ))
        );
        let lab = Lab::up();
        let st = state(&lab);
        let env = lab.env();
        let mut child = lab
            .w
            .cmd(&drill_args(&env, &rb, "300ms"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The truth starts once the run's last record is durable.
        let finished = wait_until(Duration::from_secs(60), || {
            lab.w.runs().last().is_some_and(|r| {
                String::from_utf8_lossy(&lab.w.journal_bytes(r)).contains("\"run_finished\"")
            })
        });
        assert!(finished, "{when}: the run finished");
        match delay_ms {
            Some(d) => std::thread::sleep(Duration::from_millis(d)),
            None => assert!(
                wait_until(Duration::from_secs(20), || !primary_pids(&st).is_empty()),
                "{when}: the isolated server started"
            ),
        }
        let _ = child.kill();
        let _ = child.wait();
        if kill_supervisor {
            // SAFETY: the supervisor this test's lab started.
            unsafe { libc::kill(st.supervisor_pid as i32, libc::SIGKILL) };
            assert!(
                !primary_pids(&st).is_empty(),
                "{when}: the isolated server outlives its supervisor until `lab down`"
            );
        }
        assert_no_writable_old_primary(&st, &when);
        if !kill_supervisor {
            let stopped = wait_until(Duration::from_secs(30), || primary_pids(&st).is_empty());
            assert!(
                stopped,
                "{when}: the supervisor stopped the isolated server: {:?}",
                pids_with(&st.data_root.display().to_string())
            );
        }
        assert!(
            primary_data(&st).join("standby.signal").exists(),
            "{when}: a later start is read-only too"
        );
        assert_no_writable_old_primary(&st, &when);
        // After a supervisor crash, `lab up` starts afresh and stops what
        // the dead one left; otherwise `lab down` stops everything.
        let (cmd, what) = if kill_supervisor {
            ("up", "lab up after the crash")
        } else {
            ("down", "lab down")
        };
        let o = lab.w.run(&["lab", cmd]);
        assert_eq!(o.code, 0, "{when}: {o:?}");
        let left = pids_with(&st.data_root.display().to_string());
        assert!(left.is_empty(), "{when}: {what} left {left:?}");
        assert!(!alive(st.supervisor_pid), "{when}: supervisor gone");
        if kill_supervisor {
            let fresh = state(&lab);
            assert_ne!(fresh.data_root, st.data_root, "{when}: a new lab");
            let o = lab.w.run(&["lab", "down"]);
            assert_eq!(o.code, 0, "{when}: {o:?}");
            let left = pids_with(&fresh.data_root.display().to_string());
            assert!(left.is_empty(), "{when}: lab down left {left:?}");
        }
    }
}

/// `lab status` right after `lab break primary` shows the killed primary
/// down: the supervisor answers from a fresh look, not its last tick's.
#[test]
fn lab_status_right_after_a_break_shows_the_primary_down() {
    let lab = Lab::up();
    let broke = lab.w.run(&["lab", "break", "primary"]);
    assert_eq!(broke.code, 0, "{broke:?}");
    let o = lab.w.run(&["--output", "json", "lab", "status"]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: Value = serde_json::from_str(&o.stdout).expect("json");
    let svc = |n: &str| {
        v["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == n))
            .cloned()
            .unwrap_or(Value::Null)
    };
    for name in ["pg-primary", "app-primary", "heartbeat"] {
        assert_eq!(
            svc(name)["alive"],
            false,
            "{name} shown up after the break: {v}"
        );
    }
    assert_eq!(svc("pg-dr")["alive"], true, "{v}");
}

/// `plan --check` runs a check's query for real, so a query that promotes
/// must never reach the server: not hidden behind a comment (refused by
/// validation), not built from a parameter (refused at run time, on the SQL
/// as resolved). The lab's standby is still a standby afterwards.
#[test]
fn a_check_query_cannot_promote_the_standby_through_a_comment_or_a_parameter() {
    let lab = Lab::up();
    let st = state(&lab);
    let commented = lab.runbook(
        "commented.yaml",
        "name: q\nsteps:\n  - id: q\n    action: postgres.query\n    with: {server: \"${target.postgres}\", sql: \"select pg_promote/**/()\"}\n",
    );
    let o = lab.w.run(&[
        "plan",
        &commented,
        "--env",
        &lab.env(),
        "--region",
        "dr",
        "--check",
    ]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("refuses `pg_promote()`"), "{o:?}");
    let param = lab.runbook(
        "param.yaml",
        "name: q\nparams:\n  f: {default: pg_promote}\nsteps:\n  - id: q\n    action: postgres.query\n    with: {server: \"${target.postgres}\", sql: \"select ${params.f}()\"}\n",
    );
    let o = lab.w.run(&[
        "plan",
        &param,
        "--env",
        &lab.env(),
        "--region",
        "dr",
        "--check",
    ]);
    assert!(o.stdout.contains("refuses `pg_promote()`"), "{o:?}");
    let o = lab.w.run(&[
        "run",
        &param,
        "--env",
        &lab.env(),
        "--region",
        "dr",
        "--yes",
    ]);
    assert_ne!(o.code, 0, "{o:?}");
    std::thread::sleep(Duration::from_millis(500));
    let roles = block_on(drctl::lab::control(&st.control, "GET", "/roles")).unwrap();
    let dr = roles["servers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "pg-dr"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(dr["in_recovery"], true, "the standby was promoted: {roles}");
}

/// A drill whose promote is refused (more lag than `max_lag`) fails, and
/// measures no truth: the DR server was never promoted, so what the old
/// primary holds beyond it was not lost to a failover. The old primary
/// stays down and is not restarted.
#[test]
fn a_drill_whose_promote_was_refused_measures_no_truth() {
    let lab = Lab::up();
    let st = state(&lab);
    let env = lab.env();
    let rb = failover();
    let o = lab.w.run(&[
        "drill",
        &rb,
        "--env",
        &env,
        "--yes",
        "--inject-lag",
        "2s",
        "--param",
        "max_lag=500ms",
    ]);
    assert_eq!(o.code, 5, "the refused promote fails the drill: {o:?}");
    assert!(
        o.stderr.contains("could not measure the RPO truth")
            && o.stderr.contains("pg-dr was not promoted"),
        "{o:?}"
    );
    let run = lab.last_run();
    let journal = std::fs::read_to_string(lab.w.journal_path(&run)).unwrap();
    assert!(!journal.contains("rpo_truth"), "a truth was journaled");
    assert!(o.stdout.contains("RTO  not recovered"), "{o:?}");
    assert!(!o.stdout.contains("RPO  truth"), "{o:?}");
    assert!(
        primary_pids(&st).iter().all(|p| !alive(*p)),
        "the old primary was restarted"
    );
}

/// The heartbeat writer stopped (here: its process frozen) while the
/// primary kept committing other writes: its last acknowledgement equals
/// the newest surviving heartbeat, which would read as "0 behind". The
/// standby replayed transactions long after that heartbeat, so the lag is
/// not measured by it, and promote with `max_lag` refuses instead of
/// promoting unguarded.
#[test]
fn a_stopped_heartbeat_does_not_let_promote_past_max_lag() {
    let lab = Lab::up();
    let st = state(&lab);
    let sup = st.supervisor_pid.to_string();
    let signal = |sig: &str, pid: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, pid])
            .status()
            .unwrap()
            .success());
    };
    // The heartbeat runs inside the supervisor; the servers are their own
    // processes and keep running.
    signal("-STOP", &sup);
    let (stop, writer) = start_writer(&st);
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::SeqCst);
    let acks = writer.join().unwrap();
    // Let the standby replay them, then the disaster.
    std::thread::sleep(Duration::from_millis(500));
    for pid in primary_pids(&st) {
        signal("-KILL", &pid.to_string());
    }
    signal("-CONT", &sup);
    assert!(
        acks.len() >= 20,
        "the test's writer committed: {}",
        acks.len()
    );
    let rb = lab.runbook(
        "p.yaml",
        "name: guarded\nsteps:\n  - id: promote\n    action: postgres.promote\n    with: {server: \"${regions.dr.postgres}\", old_primary: \"${regions.primary.postgres}\", max_lag: 30s}\n",
    );
    let o = lab.w.run(&["run", &rb, "--env", &lab.env(), "--yes"]);
    assert_eq!(o.code, 5, "{o:?}");
    let e = lab.error(&lab.last_run(), "promote");
    assert!(
        e.contains("standby time lag cannot be measured: the heartbeat stopped before the old primary's last writes"),
        "{e}"
    );
    let status = lab.runbook(
        "s.yaml",
        "name: s\nsteps:\n  - id: dr\n    action: postgres.status\n    with: {server: \"${regions.dr.postgres}\"}\n",
    );
    assert_eq!(
        lab.w
            .run(&["run", &status, "--env", &lab.env(), "--yes"])
            .code,
        0
    );
    assert_eq!(
        lab.outputs(&lab.last_run(), "dr")["role"],
        "standby",
        "not promoted"
    );
}

/// A drill killed during the promotion and resumed finishes (the RTO is
/// measured to the end of `smoke` in the resumed process), but it has no
/// truth: the report says the RPO figures are estimates and why.
#[test]
fn a_resumed_drill_says_its_rpo_is_an_unchecked_estimate() {
    let lab = Lab::up();
    let env = lab.env();
    let rb = failover();
    let mut c = lab.w.cmd(&["drill", &rb, "--env", &env, "--yes"]);
    c.env("DRCTL_TEST_CRASH_AT", "promote");
    let o = drctl_tests::Out::from(c.output().unwrap());
    assert_eq!(o.code, -1, "expected a SIGKILL mid-promotion: {o:?}");
    let run = lab.last_run();
    let r = lab.w.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{r:?}");
    let report = lab.w.run(&["report", &run]);
    assert_eq!(report.code, 0, "{report:?}");
    assert!(
        report.stdout.contains(
            "- truth: not measured: the drill was interrupted and resumed, and the lab measures the truth only at the end of an uninterrupted drill; the figures above are estimates"
        ),
        "{report:?}"
    );
    assert!(
        report.stdout.contains("to the end of `smoke`"),
        "{report:?}"
    );
}
