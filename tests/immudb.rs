//! immudb verification end to end, driving the real binary. No immudb server
//! can run on these machines: `immudb_fake.rs` answers immudb's gateway
//! routes, as strictly as the real gateway (session, password, database,
//! route parameters), with bodies *synthesized* from histories whose headers
//! were produced by immudb's own code (see that file).

#[path = "immudb_fake.rs"]
mod immudb_fake;

use std::net::TcpListener;
use std::time::Duration;

use base64::Engine;
use drctl::immudb::custody;
use drctl_tests::{block_on, Out, Work};
use immudb_fake::{http, ledger, vectors, FakeImmudb, DB, PASSWORD, USER};
use serde_json::{json, Value};

fn env_file(w: &Work, primary: u16, dr: u16, pinned: bool) -> String {
    let pem = w.write(
        "immudb.pem",
        vectors()["state_signatures"]["public_key_pem"]
            .as_str()
            .unwrap(),
    );
    let pin = if pinned {
        format!(", pubkey_file: \"{}\"", pem.display())
    } else {
        String::new()
    };
    let text = format!(
        "name: ledger\nactive_region: primary\nregions:\n  primary:\n    immudb: {{url: \"http://127.0.0.1:{primary}\", username: {USER}, password: \"env:IMMU_PW\"{pin}, timeout: 2s}}\n  dr:\n    immudb: {{url: \"http://127.0.0.1:{dr}\", username: {USER}, password: \"env:IMMU_PW\"{pin}, timeout: 2s}}\n"
    );
    w.write("env.yaml", &text).display().to_string()
}

fn run(w: &Work, args: &[&str]) -> Out {
    let mut c = w.cmd(args);
    c.env("IMMU_PW", PASSWORD);
    Out::from(c.output().unwrap())
}

fn trust(w: &Work, env: &str) -> Out {
    run(w, &["immudb", "trust", "--env", env, "--region", "primary"])
}

fn verify_runbook(w: &Work, with: &str) -> String {
    let text = format!(
        "name: v\nsteps:\n  - id: ledger\n    action: immudb.verify\n    with: {{server: \"${{target.immudb}}\", {with}}}\n"
    );
    w.write("v.yaml", &text).display().to_string()
}

fn verify(w: &Work, env: &str, with: &str, extra: &[&str]) -> Out {
    let rb = verify_runbook(w, with);
    let mut args = vec!["run", rb.as_str(), "--env", env, "--region", "dr", "--yes"];
    args.extend_from_slice(extra);
    run(w, &args)
}

/// The newest trusted tx of a region's custody, and its checkpoints.
fn custody_of(w: &Work, region: &str) -> (Option<u64>, Vec<u64>) {
    let store = w.store();
    let t = block_on(custody::load_trusted(store.as_ref(), "ledger", region, DB)).unwrap();
    let cps = block_on(custody::load_checkpoints(
        store.as_ref(),
        "ledger",
        region,
        DB,
    ))
    .unwrap();
    (
        t.map(|t| t.state.tx_id),
        cps.iter().map(|c| c.tx_id).collect(),
    )
}

/// The primary's custody holds checkpoints `txs` of `sync_v1`, taken by
/// `drctl immudb trust` as the primary's ledger grew.
fn primary_with_checkpoints(w: &Work, dr: &FakeImmudb, txs: &[u64]) -> (FakeImmudb, String) {
    let primary = FakeImmudb::start(ledger("sync_v1", txs[0]));
    let env = env_file(w, primary.port, dr.port, false);
    for &tx in txs {
        primary.set_ledger(ledger("sync_v1", tx));
        let t = trust(w, &env);
        assert_eq!(t.code, 0, "{t:?}");
        assert!(t.stdout.contains(&format!("trusted {DB} tx {tx}")), "{t:?}");
    }
    (primary, env)
}

#[test]
fn dr_ahead_verifies_and_never_moves_the_primarys_trusted_state() {
    let w = Work::new();
    let primary = FakeImmudb::start(ledger("sync_v1", 7)).signing();
    let dr = FakeImmudb::start(ledger("sync_v1", 20)).signing();
    let env = env_file(&w, primary.port, dr.port, true);
    let t = trust(&w, &env);
    assert_eq!(t.code, 0, "{t:?}");
    // A drill rehearses: it verifies and keeps nothing.
    let o = verify(&w, &env, "max_lost_txs: 0", &["--mode", "drill"]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = w.outputs(&w.runs()[0], "ledger");
    assert_eq!(out["verdict"], "ahead", "{out}");
    assert!(out["custody"].as_str().unwrap().contains("drill"), "{out}");
    assert_eq!(custody_of(&w, "dr"), (None, vec![]));
    // An incident run keeps the DR state as the *DR region's* checkpoint.
    let o = verify(&w, &env, "max_lost_txs: 0", &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let run_id = w.runs().into_iter().last().unwrap();
    let out = w.outputs(&run_id, "ledger");
    assert_eq!(
        (out["verdict"].as_str(), out["replica_tx"].as_u64()),
        (Some("ahead"), Some(20)),
        "{out}"
    );
    assert_eq!(out["checkpoint_tx"], 7, "{out}");
    // The primary's trusted state stays where `immudb trust` put it.
    assert_eq!(custody_of(&w, "primary"), (Some(7), vec![7]));
    assert_eq!(custody_of(&w, "dr"), (Some(20), vec![20]));
    // The client used a session on every call after login.
    let reqs = dr.requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("GET /api/db/verifiable/tx/20?proveSinceTx=7&")),
        "{reqs:?}"
    );
    let all = String::from_utf8_lossy(&w.journal_bytes(&run_id)).into_owned();
    assert!(all.contains("immudb.verify") && !all.contains(PASSWORD));
}

#[test]
fn a_diverged_replica_ahead_fails_and_names_the_check() {
    let w = Work::new();
    let primary = FakeImmudb::start(ledger("sync_v1", 15));
    let dr = FakeImmudb::start(ledger("fork_v1", 20));
    let env = env_file(&w, primary.port, dr.port, false);
    assert_eq!(trust(&w, &env).code, 0);
    let o = verify(&w, &env, "max_lost_txs: 0", &[]);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(
        o.stderr
            .contains("immudb verification failed: Alh mismatch at tx 15"),
        "the failed check is named: {o:?}"
    );
    assert_eq!(custody_of(&w, "primary"), (Some(15), vec![15]));
    assert_eq!(custody_of(&w, "dr"), (None, vec![]));
}

/// Issue #12, point 6: a replica behind the trusted state used to be
/// accepted on its tx id alone. fork_v1 shares txs 1..=10 with the primary's
/// sync_v1 and differs after: at tx 17, 3 txs behind the trusted tx 20 and
/// within `max_lost_txs: 5`, it is another history, and is rejected by the
/// proof from checkpoint 12.
#[test]
fn a_forked_replica_behind_the_trusted_state_is_rejected() {
    let w = Work::new();
    let dr = FakeImmudb::start(ledger("fork_v1", 17));
    let (_p, env) = primary_with_checkpoints(&w, &dr, &[7, 12, 20]);
    let o = verify(&w, &env, "max_lost_txs: 5", &[]);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.contains("immudb verification failed"), "{o:?}");
    assert_eq!(custody_of(&w, "primary").1, vec![7, 12, 20]);
    let reqs = dr.requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("GET /api/db/verifiable/tx/17?proveSinceTx=12&")),
        "{reqs:?}"
    );
    // Exactly at a checkpoint, a fork is caught by the Alh alone.
    dr.set_ledger(ledger("fork_v1", 12));
    let o = verify(&w, &env, "max_lost_txs: 10", &[]);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.contains("Alh mismatch at tx 12"), "{o:?}");
    assert_eq!(custody_of(&w, "dr"), (None, vec![]));
}

#[test]
fn a_replica_behind_and_consistent_is_accepted_naming_the_checkpoint() {
    let w = Work::new();
    let dr = FakeImmudb::start(ledger("sync_v1", 15));
    let (_p, env) = primary_with_checkpoints(&w, &dr, &[7, 12, 20]);
    // Strict: the loss is refused, and the message says how it was proven.
    let o = verify(&w, &env, "max_lost_txs: 0", &[]);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(
        o.stderr.contains("behind the trusted state by 5 transaction(s) (trusted tx 20, DR tx 15; dual proof from trusted checkpoint tx 12 verified)"),
        "{o:?}"
    );
    let o = verify(&w, &env, "max_lost_txs: 5", &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let run_id = w.runs().into_iter().last().unwrap();
    let out = w.outputs(&run_id, "ledger");
    assert_eq!(out["verdict"], "behind", "{out}");
    assert_eq!(out["txs_lost"], 5, "{out}");
    assert_eq!(out["checkpoint_tx"], 12, "{out}");
    assert_eq!(
        out["behind_proof"],
        json!({"method": "consistent", "checkpoint_tx": 12}),
        "{out}"
    );
    assert!(
        out["summary"]
            .as_str()
            .unwrap()
            .contains("checkpoint tx 12"),
        "{out}"
    );
    let report = run(&w, &["report", &run_id, "--format", "json"]).stdout;
    assert!(report.contains("\"txs_lost\": 5"), "{report}");
    // The primary's custody is untouched; the proven DR state seeds DR's.
    assert_eq!(custody_of(&w, "primary").0, Some(20));
    assert_eq!(custody_of(&w, "dr"), (Some(15), vec![15]));
}

#[test]
fn behind_without_a_checkpoint_at_or_below_is_unproven_and_fails_unless_allowed() {
    let w = Work::new();
    let dr = FakeImmudb::start(ledger("sync_v1", 9));
    let (_p, env) = primary_with_checkpoints(&w, &dr, &[12, 20]);
    let o = verify(&w, &env, "max_lost_txs: 20", &[]);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(
        o.stderr
            .contains("unproven: no trusted checkpoint of primary at or below tx 9"),
        "{o:?}"
    );
    assert!(o.stderr.contains("allow_unproven_behind: true"), "{o:?}");
    let o = verify(
        &w,
        &env,
        "max_lost_txs: 20, allow_unproven_behind: true",
        &[],
    );
    assert_eq!(o.code, 0, "{o:?}");
    let run_id = w.runs().into_iter().last().unwrap();
    let out = w.outputs(&run_id, "ledger");
    assert_eq!(out["behind_proof"], json!({"method": "unproven"}), "{out}");
    assert_eq!(out["checkpoint_tx"], Value::Null, "{out}");
    // The decision is in the journal (the step's parameters as run).
    let j = String::from_utf8_lossy(&w.journal_bytes(&run_id)).into_owned();
    assert!(j.contains("allow_unproven_behind"), "journaled: {j}");
    // An unproven state is never kept as a checkpoint.
    assert_eq!(custody_of(&w, "dr"), (None, vec![]));
}

#[test]
fn unavailable_immudb_exits_21_not_13() {
    let w = Work::new();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = env_file(&w, port, port, false);
    let t = trust(&w, &env);
    assert_eq!(t.code, 21, "connection refused: {t:?}");
    assert!(t.stderr.contains("not evidence of tampering"), "{t:?}");
    // A 5xx from a proxy in front of immudb, and a refused login, likewise.
    let primary = FakeImmudb::start(ledger("sync_v1", 12));
    let env = env_file(&w, primary.port, primary.port, false);
    primary.set_outage(Some(503));
    assert_eq!(trust(&w, &env).code, 21);
    primary.set_outage(None);
    let mut c = w.cmd(&["immudb", "trust", "--env", &env, "--region", "primary"]);
    c.env("IMMU_PW", "a-wrong-password");
    let o = Out::from(c.output().unwrap());
    assert_eq!(o.code, 21, "{o:?}");
    assert!(o.stderr.contains("invalid user name or password"), "{o:?}");
    // The real thing still works, and a rejected proof is still 13.
    assert_eq!(trust(&w, &env).code, 0);
    primary.set_ledger(ledger("fork_v1", 20));
    let r = trust(&w, &env);
    assert_eq!(r.code, 13, "{r:?}");
    assert_eq!(custody_of(&w, "primary").0, Some(12));
}

#[test]
fn trust_takes_only_the_active_region_and_not_during_a_failover() {
    let w = Work::new();
    let primary = FakeImmudb::start(ledger("sync_v1", 7));
    let env = env_file(&w, primary.port, primary.port, false);
    let o = run(&w, &["immudb", "trust", "--env", &env, "--region", "dr"]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("not the active region"), "{o:?}");
    // A mutating run holds the environment: custody does not advance.
    let store = w.store();
    let holder = drctl::store::HolderId::this_process("20261201T000000Z-failover");
    block_on(store.acquire_lease(
        "env-ledger",
        drctl::store::LeaseMode::Exclusive,
        &holder,
        Duration::from_secs(30),
    ))
    .unwrap();
    let o = trust(&w, &env);
    assert_eq!(o.code, 6, "{o:?}");
    assert!(o.stderr.contains("20261201T000000Z-failover"), "{o:?}");
    assert_eq!(custody_of(&w, "primary"), (None, vec![]));
}

/// The fake refuses what the real gateway refuses.
#[test]
fn the_fake_gateway_checks_password_database_session_and_route() {
    let f = FakeImmudb::start(ledger("sync_v1", 20));
    let open = |u: &str, p: &str, d: &str| {
        http(
            f.port,
            "POST",
            "/api/v2/authorization/session/open",
            None,
            &json!({"username": u, "password": p, "database": d}).to_string(),
        )
    };
    let (s, b) = open(USER, "wrong", DB);
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("invalid user name or password"))
    );
    let (s, b) = open("someone", PASSWORD, DB);
    assert_eq!(s, 500, "{b}");
    let (s, b) = open(USER, PASSWORD, "otherdb");
    assert_eq!(
        (s, b["message"].as_str()),
        (404, Some("'otherdb' does not exist"))
    );
    let (s, b) = open(USER, PASSWORD, DB);
    assert_eq!(s, 200, "{b}");
    let sid = b["sessionID"].as_str().unwrap().to_string();
    let (s2, b2) = open(USER, PASSWORD, DB);
    assert_eq!(s2, 200);
    assert_ne!(b2["sessionID"], b["sessionID"], "a fresh session each time");

    let get = |path: &str, sid: Option<&str>| http(f.port, "GET", path, sid, "");
    assert_eq!(get("/api/db/state", None).0, 401);
    let (s, b) = get("/api/db/state", Some("not-a-session"));
    assert_eq!((s, b["message"].as_str()), (500, Some("session not found")));
    let (s, b) = get("/api/db/state", Some(&sid));
    assert_eq!((s, b["txId"].as_str()), (200, Some("20")), "{b}");
    let (s, b) = get("/api/db/verifiable/tx/20?proveSinceTx=7", Some(&sid));
    assert_eq!(s, 200, "{b}");
    // The proof is for the route's tx ids: 7 -> 20, and it verifies.
    let vtx = drctl::immudb::gateway::parse_verifiable_tx(b.to_string().as_bytes()).unwrap();
    let p = vtx.dual_proof.unwrap().to_proof().unwrap();
    assert_eq!((p.source_tx_header.id, p.target_tx_header.id), (7, 20));
    let l = ledger("sync_v1", 20);
    drctl::immudb::proofs::verify_dual_proof(&p, 7, 20, &l.alh(7).unwrap(), &l.alh(20).unwrap())
        .unwrap();
    assert_eq!(
        get("/api/db/verifiable/tx/x?proveSinceTx=7", Some(&sid)).0,
        400
    );
    assert_eq!(
        get("/api/db/verifiable/tx/20?proveSinceTx=y", Some(&sid)).0,
        400
    );
    assert_eq!(
        get("/api/db/verifiable/tx/21?proveSinceTx=7", Some(&sid)).0,
        500
    );
    assert_eq!(
        get("/api/db/verifiable/tx/0?proveSinceTx=7", Some(&sid)).0,
        400
    );
    assert_eq!(get("/api/db/nonsense", Some(&sid)).0, 404);
    // A closed session is gone.
    assert_eq!(
        http(
            f.port,
            "POST",
            "/api/v2/authorization/session/close",
            Some(&sid),
            "{}"
        )
        .0,
        200
    );
    assert_eq!(get("/api/db/state", Some(&sid)).0, 500);

    // drctl's client, configured wrong, fails against it.
    let c = |pw: &str, db: &str| {
        let mut c =
            drctl::immudb::ImmudbClient::new(&f.url(), USER, pw, db, Duration::from_secs(2))
                .unwrap();
        block_on(async move { c.login().await.and(c.state().await.map(|_| ())) })
    };
    assert!(c(PASSWORD, DB).is_ok());
    let e = c("wrong", DB).unwrap_err().to_string();
    assert!(e.contains("invalid user name or password"), "{e}");
    let e = c(PASSWORD, "otherdb").unwrap_err().to_string();
    assert!(e.contains("'otherdb' does not exist"), "{e}");
}

#[test]
fn verify_proof_offline_exit_codes() {
    let w = Work::new();
    let ex: Value = serde_json::from_str(
        &std::fs::read_to_string(
            drctl_tests::repo_root().join("drctl/testdata/immudb/gateway_json_examples.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let find = |part: &str| {
        ex["examples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"].as_str().unwrap().contains(part))
            .cloned()
            .unwrap()
    };
    let b64 = |h: &str| base64::engine::general_purpose::STANDARD.encode(hex::decode(h).unwrap());
    let ahead = find("tx=20 proveSinceTx=7 (trusted state = tx 7)");
    let state = find("CurrentState")["response_json"].clone();
    let bundle = w.write(
        "b.json",
        &json!({"state": state, "verifiableTx": ahead["response_json"]}).to_string(),
    );
    let pem = w.write("k.pem", ex["public_key_pem"].as_str().unwrap());
    let alh7 = b64(ahead["trusted_state"]["txHash_hex"].as_str().unwrap());
    let vp = |bundle: &std::path::Path, tx: &str, alh: &str, pin: bool| {
        let mut a = vec![
            "immudb",
            "verify-proof",
            bundle.to_str().unwrap(),
            "--trusted-tx",
            tx,
            "--trusted-alh",
            alh,
        ];
        if pin {
            a.extend(["--pubkey", pem.to_str().unwrap()]);
        }
        run(&w, &a)
    };
    assert_eq!(vp(&bundle, "7", &alh7, true).code, 0);
    // One flipped character in the trusted hash: rejected (13).
    let mut bad = alh7.clone().into_bytes();
    bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        vp(&bundle, "7", std::str::from_utf8(&bad).unwrap(), false).code,
        13
    );
    // Trusted tx beyond the bundle's state: behind (14).
    let l = ledger("sync_v1", 20);
    let behind = w.write(
        "behind.json",
        &json!({"state": {"db": DB, "txId": "7", "txHash": base64::engine::general_purpose::STANDARD.encode(l.alh(7).unwrap())}, "verifiableTx": null}).to_string(),
    );
    let st = state["txHash"].as_str().unwrap().to_string();
    assert_eq!(vp(&behind, "20", &st, false).code, 14);
    // Malformed JSON never panics.
    let junk = w.write("junk.json", "{\"state\": {\"txId\": \"x\"");
    assert_eq!(vp(&junk, "1", &alh7, false).code, 13);
}

/// The shipped failover runbook verifies immudb after promotion when the
/// target region has one: the example production environment does, so
/// `validate` passes and the plan runs the step.
#[test]
fn the_example_production_failover_includes_the_immudb_step() {
    let w = Work::new();
    let env = w.mounted_example_env(
        &drctl_tests::repo_root().join("runbooks/environments/production.example.yaml"),
    );
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    let cmd = |args: &[&str]| {
        let mut c = w.cmd(args);
        for var in drctl_tests::EXAMPLE_SECRET_VARS {
            c.env(var, "not-a-real-secret-value");
        }
        Out::from(c.output().unwrap())
    };
    let rb = rb.to_str().unwrap();
    let env = env.to_str().unwrap();
    let v = cmd(&["validate", rb, "--env", env]);
    assert_eq!(v.code, 0, "{v:?}");
    let p = cmd(&["plan", rb, "--env", env]);
    assert_eq!(p.code, 0, "{p:?}");
    let line = p
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("ledger "))
        .unwrap_or_else(|| panic!("no ledger step in the plan: {p:?}"));
    assert!(
        line.contains("immudb.verify") && line.contains("immudb.dr.example.internal"),
        "{line}"
    );
    assert!(!line.contains("skip"), "{line}");
    let text =
        std::fs::read_to_string(drctl_tests::repo_root().join("runbooks/failover.yaml")).unwrap();
    assert!(text.contains("skip_unless: [target.immudb]"));
}
