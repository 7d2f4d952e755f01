//! `drctl state init | check | migrate | prune` against real stores: a
//! state directory and a PostgreSQL 15 server on loopback.

use std::time::Duration;

use drctl_tests::{block_on, Out, TestPg, Work};

const WAITS: &str = "name: ro\nsteps:\n  - id: a\n    action: wait\n    with: {duration: 1ms}\n";
const EXECS: &str =
    "name: rw\nsteps:\n  - id: a\n    action: exec\n    with: {argv: ['true'], idempotent: true}\n";

fn with_state(w: &Work, state: &str, args: &[&str]) -> Out {
    let mut all = vec!["--state", state];
    all.extend_from_slice(args);
    w.run(&all)
}

#[test]
fn commands_refuse_an_uninitialised_database_until_state_init() {
    let pg = TestPg::start();
    let url = pg.database("drctl_fresh");
    let w = Work::dir_store();
    let o = with_state(&w, &url, &["runs"]);
    assert_eq!(o.code, 19, "{o:?}");
    assert!(
        o.stderr.contains("drctl state init"),
        "the hint says what to do: {o:?}"
    );
    let rb = w.write("rw.yaml", EXECS);
    let r = with_state(&w, &url, &["run", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(
        r.code, 19,
        "a run never starts on an uninitialised store: {r:?}"
    );
    assert_eq!(with_state(&w, &url, &["state", "init"]).code, 0);
    assert_eq!(
        with_state(&w, &url, &["state", "init"]).code,
        0,
        "init is idempotent"
    );
    let c = with_state(&w, &url, &["state", "check"]);
    assert_eq!(c.code, 0, "{c:?}");
    assert!(
        c.stdout.contains("schema version: 1 (this drctl: 1)"),
        "{c:?}"
    );
    assert!(c.stdout.contains("clock skew:"), "{c:?}");
    let r = with_state(&w, &url, &["run", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !w.state().exists(),
        "nothing was written to a local directory"
    );
    // A mistyped directory is an error for read-only commands, not empty state.
    let typo = w.path().join("no-such-state");
    let s = with_state(&w, typo.to_str().unwrap(), &["runs"]);
    assert_eq!(s.code, 19, "{s:?}");
    assert!(!typo.exists(), "read-only commands create nothing");
}

#[test]
fn migrate_copies_verified_journals_documents_and_histories_and_can_run_again() {
    let src = Work::dir_store();
    let rb = src.write("rw.yaml", EXECS);
    for _ in 0..3 {
        assert_eq!(src.run(&["run", rb.to_str().unwrap(), "--yes"]).code, 0);
    }
    let store = drctl::store::DirStore::open(src.state()).unwrap();
    block_on(async {
        use drctl::store::{Expect, Store};
        store
            .put_doc(
                "kube-capacity",
                "shop-primary",
                &serde_json::json!({"web": 5}),
                Expect::Absent,
            )
            .await
            .unwrap();
        store
            .append_history(
                "drills",
                &serde_json::json!({"run_id": "x", "rto_ms": 1200}),
            )
            .await
            .unwrap();
    });
    // One journal is damaged: it is reported, not copied; the others are.
    let runs = src.runs();
    let bad = src.journal_path(&runs[2]);
    let mut bytes = std::fs::read(&bad).unwrap();
    let i = bytes.iter().position(|b| *b == b'"').unwrap();
    bytes[i + 1] ^= 1;
    std::fs::write(&bad, bytes).unwrap();

    let pg = TestPg::start();
    let url = pg.database("drctl_migrated");
    let w = Work::dir_store();
    assert_eq!(with_state(&w, &url, &["state", "init"]).code, 0);
    let from = src.state().display().to_string();
    let m = w.run(&["state", "migrate", "--from", &from, "--to", &url]);
    assert_eq!(m.code, 9, "a damaged journal is a finding: {m:?}");
    assert!(m.stdout.contains("2 journals copied"), "{m:?}");
    assert!(
        m.stdout.contains(&runs[2]) && m.stdout.contains("does not verify"),
        "{m:?}"
    );
    for run in &runs[..2] {
        let a = src.run(&["--output", "json", "status", run]);
        let b = with_state(&w, &url, &["--output", "json", "status", run]);
        assert_eq!(b.code, 0, "{b:?}");
        let head = |o: &Out| {
            serde_json::from_str::<serde_json::Value>(&o.stdout).unwrap()["run"]["head"].clone()
        };
        assert_eq!(head(&a), head(&b), "same chain head after the copy");
    }
    let dst = drctl_tests::block_on(drctl::store::locate::open(
        &drctl::store::StateLocation::parse(&url, None).unwrap(),
        drctl::store::locate::OpenMode::Existing,
    ))
    .unwrap();
    block_on(async {
        let d = dst
            .get_doc("kube-capacity", "shop-primary")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.doc["web"], 5);
        assert_eq!(dst.read_history("drills").await.unwrap().len(), 1);
    });
    let again = w.run(&["state", "migrate", "--from", &from, "--to", &url]);
    assert!(
        again.stdout.contains("0 journals copied") && again.stdout.contains("2 already there"),
        "{again:?}"
    );
    block_on(async {
        assert_eq!(
            dst.read_history("drills").await.unwrap().len(),
            1,
            "histories are not copied twice"
        );
    });
}

/// Runs on the store of the mode under test (directory, or PostgreSQL
/// when `DRCTL_TEST_STORE=postgres`).
#[test]
fn prune_deletes_old_housekeeping_runs_and_keeps_failovers_and_drills() {
    let w = Work::new();
    let ro = w.write("ro.yaml", WAITS);
    let rw = w.write("rw.yaml", EXECS);
    assert_eq!(w.run(&["run", ro.to_str().unwrap(), "--yes"]).code, 0);
    assert_eq!(w.run(&["run", rw.to_str().unwrap(), "--yes"]).code, 0);
    assert_eq!(
        w.run(&["run", ro.to_str().unwrap(), "--yes", "--mode", "drill"])
            .code,
        0
    );
    let runs = w.runs();
    std::thread::sleep(Duration::from_millis(1100));
    let keep_recent = w.run(&["state", "prune", "--older-than", "1h"]);
    assert_eq!(keep_recent.code, 0, "{keep_recent:?}");
    assert_eq!(w.runs().len(), 3, "nothing is older than an hour");
    let dry = w.run(&["state", "prune", "--older-than", "1s", "--dry-run"]);
    assert!(dry.stdout.contains("would delete 1 runs"), "{dry:?}");
    assert_eq!(w.runs().len(), 3);
    let p = w.run(&["state", "prune", "--older-than", "1s"]);
    assert_eq!(p.code, 0, "{p:?}");
    assert_eq!(
        w.runs(),
        vec![runs[1].clone(), runs[2].clone()],
        "the read-only incident run went: {p:?}"
    );
    let all = w.run(&[
        "state",
        "prune",
        "--older-than",
        "1s",
        "--include-mutating",
        "--include-drills",
    ]);
    assert_eq!(all.code, 0, "{all:?}");
    assert!(w.runs().is_empty(), "{all:?}");
}
