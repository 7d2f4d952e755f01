//! immudb verification end to end. No immudb server can run on these
//! machines, so a small HTTP server here answers immudb's real gateway
//! routes (session open/close, /api/db/state, /api/db/verifiable/tx/{M})
//! with RECORDED bodies from `drctl/testdata/immudb/gateway_json_examples.json`
//! (produced with immudb's JSON mapping from vectors made by immudb's code).

use std::net::TcpListener;
use std::sync::Arc;

use base64::Engine;
use drctl_tests::{read_http_request, Out, Work};
use serde_json::{json, Value};

fn examples() -> Value {
    let p = drctl_tests::repo_root().join("drctl/testdata/immudb/gateway_json_examples.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn example(name_part: &str) -> Value {
    examples()["examples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str().unwrap().contains(name_part))
        .cloned()
        .unwrap()
}

fn b64(hex_str: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_str).unwrap())
}

/// The Alh of a verifiable body's target header (what a replica's state says).
fn target_alh_b64(verifiable: &Value) -> String {
    let v = drctl::immudb::gateway::parse_verifiable_tx(verifiable.to_string().as_bytes()).unwrap();
    let h = v
        .dual_proof
        .unwrap()
        .target_tx_header
        .unwrap()
        .to_header("target")
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(h.alh().unwrap())
}

fn source_alh_b64(verifiable: &Value) -> String {
    let v = drctl::immudb::gateway::parse_verifiable_tx(verifiable.to_string().as_bytes()).unwrap();
    let h = v
        .dual_proof
        .unwrap()
        .source_tx_header
        .unwrap()
        .to_header("source")
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(h.alh().unwrap())
}

/// Serves immudb gateway routes with fixed bodies.
fn gateway(state: Value, verifiable: Option<Value>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (state, verifiable) = (Arc::new(state), Arc::new(verifiable));
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let req = read_http_request(&mut s);
            let line = req.lines().next().unwrap_or("").to_string();
            let (code, body) = if line.contains("/authorization/session/open") {
                (
                    200,
                    json!({"sessionID": "test-session", "serverUUID": "uuid"}),
                )
            } else if line.contains("/authorization/session/close") {
                (200, json!({}))
            } else if line.starts_with("GET /api/db/state") {
                (200, (*state).clone())
            } else if line.starts_with("GET /api/db/verifiable/tx/") {
                match &*verifiable {
                    Some(v) => (200, v.clone()),
                    None => (
                        500,
                        json!({"error": "no proof recorded", "code": 2, "message": "no proof recorded"}),
                    ),
                }
            } else {
                (
                    404,
                    json!({"error": "not found", "code": 5, "message": "not found"}),
                )
            };
            let b = body.to_string();
            use std::io::Write;
            let _ = s.write_all(format!("HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}", b.len()).as_bytes());
        }
    });
    port
}

fn env(w: &Work, primary_port: u16, dr_port: u16, pinned: bool) -> String {
    let pem = w.write("immudb.pem", examples()["public_key_pem"].as_str().unwrap());
    let pin = if pinned {
        format!(", pubkey_file: \"{}\"", pem.display())
    } else {
        String::new()
    };
    let text = format!(
        "name: ledger\nactive_region: primary\nregions:\n  primary:\n    immudb: {{url: \"http://127.0.0.1:{primary_port}\", password: \"env:IMMU_PW\"}}\n  dr:\n    immudb: {{url: \"http://127.0.0.1:{dr_port}\", password: \"env:IMMU_PW\"{pin}}}\n"
    );
    w.write("env.yaml", &text).display().to_string()
}

fn run(w: &Work, args: &[&str]) -> Out {
    let mut c = w.cmd(args);
    c.env("IMMU_PW", "immudb-sentinel-pw");
    Out::from(c.output().unwrap())
}

const VERIFY: &str = "name: v\nsteps:\n  - id: ledger\n    action: immudb.verify\n    with: {server: \"${target.immudb}\", max_lost_txs: 0}\n";

fn state_body(tx: u64, hash_b64: &str) -> Value {
    json!({"db": "defaultdb", "txId": tx.to_string(), "txHash": hash_b64})
}

#[test]
fn dr_ahead_of_the_trusted_state_verifies_and_advances_it() {
    let w = Work::new();
    let ahead = example("tx=20 proveSinceTx=7 (trusted state = tx 7)");
    let trusted_hex = ahead["trusted_state"]["txHash_hex"]
        .as_str()
        .unwrap()
        .to_string();
    let primary = gateway(state_body(7, &b64(&trusted_hex)), None);
    let dr = gateway(
        example("CurrentState")["response_json"].clone(),
        Some(ahead["response_json"].clone()),
    );
    let env = env(&w, primary, dr, true);
    let t = run(
        &w,
        &["immudb", "trust", "--env", &env, "--region", "primary"],
    );
    assert_eq!(t.code, 0, "{t:?}");
    assert!(t.stdout.contains("tx 7"), "{t:?}");
    let rb = w.write("v.yaml", VERIFY);
    let o = run(
        &w,
        &[
            "run",
            rb.to_str().unwrap(),
            "--env",
            &env,
            "--region",
            "dr",
            "--yes",
        ],
    );
    assert_eq!(o.code, 0, "{o:?}");
    let j = w.journal(&w.runs()[0]);
    let out = &j.iter().find(|r| r["type"] == "step_finished").unwrap()["outputs"];
    assert_eq!(out["verdict"], "ahead", "{out}");
    assert_eq!(out["replica_tx"], 20);
    let doc = std::fs::read_to_string(w.state().join("docs/immudb-trusted/ledger-defaultdb.json"))
        .unwrap();
    assert!(
        doc.contains("\"tx_id\": 20"),
        "trusted state advanced through the verified proof: {doc}"
    );
    let all = std::fs::read_to_string(w.journal_path(&w.runs()[0])).unwrap();
    assert!(!all.contains("immudb-sentinel-pw"));
}

#[test]
fn a_diverged_replica_fails_and_names_the_check() {
    let w = Work::new();
    let div = example("diverged");
    let trusted_hex = div["trusted_state"]["txHash_hex"]
        .as_str()
        .unwrap()
        .to_string();
    let primary = gateway(state_body(15, &b64(&trusted_hex)), None);
    let dr_state = state_body(20, &target_alh_b64(&div["response_json"]));
    let dr = gateway(dr_state, Some(div["response_json"].clone()));
    let env = env(&w, primary, dr, false);
    assert_eq!(
        run(
            &w,
            &["immudb", "trust", "--env", &env, "--region", "primary"]
        )
        .code,
        0
    );
    let rb = w.write("v.yaml", VERIFY);
    let o = run(
        &w,
        &[
            "run",
            rb.to_str().unwrap(),
            "--env",
            &env,
            "--region",
            "dr",
            "--yes",
        ],
    );
    assert_eq!(o.code, 5, "{o:?}");
    assert!(
        o.stderr
            .contains("immudb verification failed: Alh mismatch at tx 15"),
        "the failed check is named: {o:?}"
    );
    let doc = std::fs::read_to_string(w.state().join("docs/immudb-trusted/ledger-defaultdb.json"))
        .unwrap();
    assert!(
        doc.contains("\"tx_id\": 15"),
        "trusted state must not move: {doc}"
    );
}

#[test]
fn a_replica_behind_reports_the_loss() {
    let w = Work::new();
    let ahead = example("tx=20 proveSinceTx=7 (trusted state = tx 7)");
    // Trusted: the primary at tx 20. DR: only up to tx 7.
    let primary = gateway(example("CurrentState")["response_json"].clone(), None);
    let dr = gateway(
        state_body(7, &source_alh_b64(&ahead["response_json"])),
        None,
    );
    let env = env(&w, primary, dr, false);
    assert_eq!(
        run(
            &w,
            &["immudb", "trust", "--env", &env, "--region", "primary"]
        )
        .code,
        0
    );
    let strict = w.write("v.yaml", VERIFY);
    let o = run(
        &w,
        &[
            "run",
            strict.to_str().unwrap(),
            "--env",
            &env,
            "--region",
            "dr",
            "--yes",
        ],
    );
    assert_eq!(o.code, 5, "{o:?}");
    assert!(
        o.stderr
            .contains("behind the trusted state by 13 transaction"),
        "{o:?}"
    );
    let tolerant = w.write(
        "t.yaml",
        &VERIFY.replace("max_lost_txs: 0", "max_lost_txs: 20"),
    );
    let o = run(
        &w,
        &[
            "run",
            tolerant.to_str().unwrap(),
            "--env",
            &env,
            "--region",
            "dr",
            "--yes",
        ],
    );
    assert_eq!(o.code, 0, "{o:?}");
    let run_id = w.runs().pop().unwrap();
    let report = run(&w, &["report", &run_id, "--format", "json"]).stdout;
    assert!(report.contains("\"txs_lost\": 13"), "{report}");
}

#[test]
fn verify_proof_offline_exit_codes() {
    let w = Work::new();
    let ahead = example("tx=20 proveSinceTx=7 (trusted state = tx 7)");
    let bundle = w.write("b.json", &json!({"state": example("CurrentState")["response_json"], "verifiableTx": ahead["response_json"]}).to_string());
    let pem = w.write("k.pem", examples()["public_key_pem"].as_str().unwrap());
    let alh7 = b64(ahead["trusted_state"]["txHash_hex"].as_str().unwrap());
    let ok = run(
        &w,
        &[
            "immudb",
            "verify-proof",
            bundle.to_str().unwrap(),
            "--trusted-tx",
            "7",
            "--trusted-alh",
            &alh7,
            "--pubkey",
            pem.to_str().unwrap(),
        ],
    );
    assert_eq!(ok.code, 0, "{ok:?}");
    // One flipped character in the trusted hash: rejected (13).
    let mut bad = alh7.clone().into_bytes();
    bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
    let r = run(
        &w,
        &[
            "immudb",
            "verify-proof",
            bundle.to_str().unwrap(),
            "--trusted-tx",
            "7",
            "--trusted-alh",
            std::str::from_utf8(&bad).unwrap(),
        ],
    );
    assert_eq!(r.code, 13, "{r:?}");
    // Trusted tx beyond the bundle's state: behind (14).
    let st = example("CurrentState")["response_json"]["txHash"]
        .as_str()
        .unwrap()
        .to_string();
    let behind = w.write("behind.json", &json!({"state": state_body(7, &source_alh_b64(&ahead["response_json"])), "verifiableTx": null}).to_string());
    let b = run(
        &w,
        &[
            "immudb",
            "verify-proof",
            behind.to_str().unwrap(),
            "--trusted-tx",
            "20",
            "--trusted-alh",
            &st,
        ],
    );
    assert_eq!(b.code, 14, "{b:?}");
    // Malformed JSON never panics.
    let junk = w.write("junk.json", "{\"state\": {\"txId\": \"x\"");
    let j = run(
        &w,
        &[
            "immudb",
            "verify-proof",
            junk.to_str().unwrap(),
            "--trusted-tx",
            "1",
            "--trusted-alh",
            &alh7,
        ],
    );
    assert_eq!(j.code, 13, "{j:?}");
}
