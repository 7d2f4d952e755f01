//! Fencing the old primary against real PostgreSQL 15 (a lab per test):
//! the soft fence is undone by any client and promote's write probe sees
//! it; `hba` shuts out superusers (new sessions rejected, the open one
//! terminated) while the standby keeps streaming; `stop` stops the server.

use std::time::Duration;

use drctl::pgconn::{PgError, PgServer, SslMode};
use drctl::secret::SecretRef;
use drctl_tests::{wait_until, Lab};
use serde_json::Value;

/// The lab's primary or standby as drctl's superuser sees it (TLS verified
/// against the lab CA), read from the lab's own state.
fn server(lab: &Lab, which: &str) -> PgServer {
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.w.state().join("lab/lab.json")).unwrap())
            .unwrap();
    PgServer {
        host: "127.0.0.1".into(),
        port: st["ports"][which].as_u64().unwrap() as u16,
        dbname: "postgres".into(),
        user: "drctl".into(),
        password: Some(SecretRef::File(lab.w.state().join("lab/pgpass"))),
        sslmode: SslMode::VerifyFull,
        sslrootcert: Some(SecretRef::File(lab.w.state().join("lab/tls/ca.crt"))),
        connect_timeout: Duration::from_secs(3),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn run(lab: &Lab, rb: &str, extra: &[&str]) -> drctl_tests::Out {
    let env = lab.env();
    let mut args = vec!["run", rb, "--env", &env, "--yes", "--mode", "drill"];
    args.extend_from_slice(extra);
    lab.w.run(&args)
}

fn fence_and_promote(method: &str) -> String {
    format!(
        "name: fp\nsteps:\n  - id: fence\n    action: postgres.fence\n    with: {{server: \"${{regions.primary.postgres}}\", method: {method}}}\n  - id: promote\n    action: postgres.promote\n    needs: [fence]\n    with: {{server: \"${{regions.dr.postgres}}\", old_primary: \"${{regions.primary.postgres}}\", old_primary_lsn: \"${{steps.fence.outputs.final_lsn}}\"}}\n"
    )
}

/// `(status, pid, received LSN >= lsn)` of the standby's WAL receiver.
fn receiver(rt: &tokio::runtime::Runtime, dr: &PgServer, lsn: &str) -> (String, i32, bool) {
    rt.block_on(async {
        let c = dr.connect(Duration::from_secs(3)).await.unwrap();
        let r = c
            .query_one(
                &format!("select status, pid, coalesce(flushed_lsn >= '{lsn}'::pg_lsn, false) from pg_stat_wal_receiver"),
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    })
}

#[test]
fn soft_fence_is_undone_by_set_and_promote_refuses() {
    let lab = Lab::up();
    let rt = rt();
    let rb = lab.runbook("soft.yaml", &fence_and_promote("soft"));
    let o = run(&lab, &rb, &[]);
    assert_eq!(o.code, 5, "promote must refuse after a soft fence: {o:?}");
    let run_id = lab.last_run();
    assert_eq!(lab.outputs(&run_id, "fence")["method"], "soft");
    let err = lab.error(&run_id, "promote");
    assert!(
        err.contains("split the brain") && err.contains("a soft fence"),
        "{err}"
    );
    // What the probe saw, done by hand: a fresh session undoes the fence
    // for itself and writes.
    let primary = server(&lab, "pg-primary");
    rt.block_on(async {
        let c = primary.connect(Duration::from_secs(3)).await.unwrap();
        let ro: String = c
            .query_one("show default_transaction_read_only", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(ro, "on", "the soft fence is in place");
        assert!(c
            .batch_execute("create table after_soft (x int)")
            .await
            .is_err());
        // Separate statements: a multi-statement string is one
        // transaction, read-only from its start.
        c.batch_execute("set default_transaction_read_only = off")
            .await
            .unwrap();
        c.batch_execute("create table after_soft (x int)")
            .await
            .expect("SET undoes a soft fence");
        c.batch_execute("insert into after_soft values (1)")
            .await
            .unwrap();
    });
    let dr = server(&lab, "pg-dr");
    let still: bool = rt.block_on(async {
        let c = dr.connect(Duration::from_secs(3)).await.unwrap();
        c.query_one("select pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert!(still, "the standby was not promoted");
    let port = server(&lab, "pg-primary").port.to_string();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&port), "[PORT]");
    settings.bind(|| insta::assert_snapshot!("split_brain_refusal", err));
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn hba_fence_shuts_out_superusers_while_replication_streams() {
    let lab = Lab::up();
    let rt = rt();
    let primary = server(&lab, "pg-primary");
    let dr = server(&lab, "pg-dr");
    // A superuser session open before the fence (as drctl's role).
    let open = rt
        .block_on(primary.connect(Duration::from_secs(3)))
        .unwrap();
    rt.block_on(open.batch_execute("create table before_fence (x int)"))
        .unwrap();
    let (status, receiver_pid, _) = receiver(&rt, &dr, "0/0");
    assert_eq!(status, "streaming");
    let rb = lab.runbook("hba.yaml", &fence_and_promote("hba"));
    let plan = lab.w.run(&["plan", &rb, "--env", &lab.env(), "--check"]);
    assert!(
        plan.stdout.contains("fenced (hba; needs superuser")
            && plan.stdout.contains("is superuser"),
        "preflight says what hba needs and what the role has: {plan:?}"
    );
    // Fence alone first.
    let only = lab.runbook(
        "fence.yaml",
        "name: f\nsteps:\n  - id: fence\n    action: postgres.fence\n    with: {server: \"${regions.primary.postgres}\", method: hba}\n",
    );
    let o = run(&lab, &only, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = lab.outputs(&lab.last_run(), "fence");
    assert_eq!(out["already_fenced"], false, "{out}");
    assert!(out["terminated_backends"].as_i64().unwrap() >= 1, "{out}");
    let lsn = out["final_lsn"].as_str().unwrap().to_string();
    // The open superuser session was terminated: it cannot write.
    let w = rt.block_on(open.batch_execute("insert into before_fence values (1)"));
    assert!(w.is_err(), "the superuser session must be cut");
    // A new superuser session is rejected by pg_hba.conf.
    match rt.block_on(primary.connect(Duration::from_secs(3))) {
        Err(e @ PgError::Rejected { .. }) => assert!(!e.is_unreachable()),
        Err(e) => panic!("expected a pg_hba.conf rejection, got {e:?}"),
        Ok(_) => panic!("a new superuser session was accepted after the hba fence"),
    }
    // The same WAL receiver keeps streaming, and has everything up to the
    // fence's final LSN.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let (s, pid, caught_up) = receiver(&rt, &dr, &lsn);
            s == "streaming" && pid == receiver_pid && caught_up
        }),
        "standby stopped streaming: {:?}",
        receiver(&rt, &dr, &lsn)
    );
    // Again: seen as fenced, nothing written twice.
    let o = run(&lab, &only, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let again = lab.outputs(&lab.last_run(), "fence");
    assert_eq!(again["already_fenced"], true, "{again}");
    // Promote's probe is rejected too: no split brain, it promotes.
    let o = run(&lab, &rb, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(lab.outputs(&lab.last_run(), "promote")["promoted"], true);
}

/// kill -9 with the block written but not reloaded, then resume: the
/// re-executed step finds its block (written once, original kept below it),
/// reloads and verifies.
#[test]
fn hba_fence_killed_mid_step_resumes_without_writing_twice() {
    let lab = Lab::up();
    let rb = lab.runbook(
        "fence.yaml",
        "name: f\nsteps:\n  - id: fence\n    action: postgres.fence\n    with: {server: \"${regions.primary.postgres}\", method: hba}\n",
    );
    let env = lab.env();
    let mut c = lab.w.cmd(&["run", &rb, "--env", &env, "--yes"]);
    c.env("DRCTL_TEST_CRASH_AT", "fence-hba");
    let o = drctl_tests::Out::from(c.output().unwrap());
    assert_eq!(o.code, -1, "expected a SIGKILL mid-fence: {o:?}");
    let run_id = lab.last_run();
    let journal = lab.w.journal(&run_id);
    let cp = journal
        .iter()
        .find(|r| r["type"] == "step_checkpoint")
        .expect("pre-effect checkpoint journaled before the write");
    let original = cp["data"]["original_hba"]
        .as_str()
        .unwrap_or_else(|| panic!("{cp}"))
        .to_string();
    let hba_file = cp["data"]["hba_file"].as_str().unwrap().to_string();
    let r = lab.w.run(&["resume", &run_id]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = lab.outputs(&run_id, "fence");
    assert_eq!(
        out["already_fenced"], true,
        "the block was already there: {out}"
    );
    assert!(out["final_lsn"].as_str().is_some(), "{out}");
    let now = std::fs::read_to_string(&hba_file).unwrap();
    assert_eq!(now.matches("# drctl fence BEGIN").count(), 1, "{now}");
    assert!(
        now.ends_with(&original),
        "original kept verbatim below the block"
    );
    let rt = rt();
    assert!(matches!(
        rt.block_on(server(&lab, "pg-primary").connect(Duration::from_secs(3))),
        Err(PgError::Rejected { .. })
    ));
}

#[test]
fn stop_fence_stops_the_server() {
    let lab = Lab::up();
    let rt = rt();
    let primary = server(&lab, "pg-primary");
    let dr = server(&lab, "pg-dr");
    let rb = lab.runbook("stop.yaml", &fence_and_promote("stop"));
    let o = run(&lab, &rb, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let run_id = lab.last_run();
    let out = lab.outputs(&run_id, "fence");
    assert_eq!(
        (out["reachable"].clone(), out["method"].clone()),
        (Value::Bool(true), "stop".into()),
        "{out}"
    );
    let lsn = out["final_lsn"].as_str().unwrap().to_string();
    match rt.block_on(primary.connect(Duration::from_secs(2))) {
        Err(e) => assert!(e.is_unreachable(), "gone, not refusing: {e:?}"),
        Ok(_) => panic!("the old primary still answers after the stop fence"),
    }
    let promoted = lab.outputs(&run_id, "promote");
    assert_eq!(promoted["promoted"], true, "{promoted}");
    // The promoted standby got WAL up to the fence's final LSN.
    let (_, _, caught_up) = rt.block_on(async {
        let c = dr.connect(Duration::from_secs(3)).await.unwrap();
        let r = c
            .query_one(
                &format!("select '', 0, pg_last_wal_receive_lsn() >= '{lsn}'::pg_lsn"),
                &[],
            )
            .await
            .unwrap();
        (
            r.get::<_, String>(0),
            r.get::<_, i32>(1),
            r.get::<_, bool>(2),
        )
    });
    assert!(caught_up, "standby has WAL up to {lsn}");
}
