//! `drctl report --anchor` and `drctl report verify` of an anchored report,
//! driving the real binary against the *fake* immudb gateway
//! (`immudb_fake.rs`; no immudb server can run on these machines). The
//! fake's history starts from headers produced by immudb's own code; the
//! anchor's tx, its entries tree and every proof over it are synthesized by
//! `drctl::immudb::ledger::Ledger`, the same code that reproduces immudb's
//! genuine proofs byte for byte.

#[path = "immudb_fake.rs"]
mod immudb_fake;

use std::net::TcpListener;

use drctl_tests::{Out, Work};
use immudb_fake::{ledger, vectors, FakeImmudb, PASSWORD, USER};
use serde_json::Value;

/// One region whose immudb is the fake (signing, key pinned).
fn env_file(w: &Work, port: u16) -> String {
    env_file_named(w, port, "env.yaml")
}

fn env_file_named(w: &Work, port: u16, name: &str) -> String {
    let pem = w.write(
        "immudb.pem",
        vectors()["state_signatures"]["public_key_pem"]
            .as_str()
            .unwrap(),
    );
    let text = format!(
        "name: ledger\nactive_region: primary\nregions:\n  primary:\n    immudb: {{url: \"http://127.0.0.1:{port}\", username: {USER}, password: \"env:IMMU_PW\", pubkey_file: \"{}\", timeout: 2s}}\n",
        pem.display()
    );
    w.write(name, &text).display().to_string()
}

fn run(w: &Work, args: &[&str]) -> Out {
    let mut c = w.cmd(args);
    c.env("IMMU_PW", PASSWORD);
    Out::from(c.output().unwrap())
}

/// A finished one-step run that used `env`.
fn a_run(w: &Work, env: &str) -> String {
    let rb = w.write(
        "rb.yaml",
        "name: anchored\nsteps:\n  - id: one\n    action: exec\n    with: {argv: [\"true\"], idempotent: true}\n",
    );
    let r = run(w, &["run", rb.to_str().unwrap(), "--env", env, "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    w.runs()[0].clone()
}

fn trust(w: &Work, env: &str) {
    let t = run(w, &["immudb", "trust", "--env", env, "--region", "primary"]);
    assert_eq!(t.code, 0, "{t:?}");
}

/// Edits one field of the journal's first record and re-chains every
/// record after it, as someone with write access to the state store
/// could: the journal stays self-consistent, with another head.
fn edit_journal(w: &Work, run: &str) -> String {
    let text = String::from_utf8(w.journal_bytes(run)).unwrap();
    let mut prev: Option<String> = None;
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let Value::Object(mut obj) = serde_json::from_str::<Value>(line).unwrap() else {
            panic!("record is not an object")
        };
        if i == 0 {
            let ts = obj["ts_ms"].as_u64().unwrap();
            obj.insert("ts_ms".into(), Value::from(ts - 60_000));
            obj.insert(
                "ts".into(),
                Value::from(drctl::journal::format_ms(ts - 60_000)),
            );
        }
        if let Some(p) = &prev {
            obj.insert("prev".into(), Value::from(p.clone()));
        }
        obj.remove("hash");
        let hash = drctl::journal::sha256_hex(&serde_json::to_vec(&obj).unwrap());
        obj.insert("hash".into(), Value::from(hash.clone()));
        out.push_str(&serde_json::to_string(&obj).unwrap());
        out.push('\n');
        prev = Some(hash);
    }
    w.rewrite_journal(run, out.as_bytes());
    prev.unwrap()
}

/// The anchor is written as a new, proven tx; the report names it and
/// verifies against the ledger (before and after the trusted state moves
/// past it); a journal edited and re-chained afterwards is refused with
/// exit 52, naming the anchor, even in a report rendered again from it.
#[test]
fn an_anchored_report_verifies_and_a_later_journal_edit_is_proven() {
    let w = Work::new();
    let fake = FakeImmudb::start(ledger("sync_v1", 5)).signing();
    let env = env_file(&w, fake.port);
    trust(&w, &env);
    let run_id = a_run(&w, &env);
    let head_of = |w: &Work| -> (usize, String) {
        let j = w.journal(&run_id);
        (
            j.len(),
            j.last().unwrap()["hash"].as_str().unwrap().to_string(),
        )
    };
    let (records, head) = head_of(&w);

    let r = run(&w, &["report", &run_id, "--anchor"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(fake.tx(), 6, "one new tx");
    let key = format!("drctl/journal/{run_id}/head");
    let held: Value = serde_json::from_slice(&fake.value(&key).expect("key set")).unwrap();
    assert_eq!(held["head"], head.as_str());
    assert_eq!(held["records"], records);
    assert!(
        r.stdout.contains(&format!(
            "Journal head anchored in the immudb ledger of ledger (region primary, database `defaultdb`): tx 6, key `{key}`, proven from trusted tx 5."
        )),
        "{}",
        r.stdout
    );
    let md = w.write("anchored.md", &r.stdout);
    let md = md.to_str().unwrap();
    let ok = run(&w, &["report", "verify", md, "--run", &run_id]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(
        ok.stdout.contains(
            "journal head anchored in immudb tx 6 of ledger/primary/defaultdb, proven against trusted tx 5"
        ),
        "{ok:?}"
    );

    // HTML and JSON carry it too; each anchor is its own tx.
    for (format, tx) in [("html", 7), ("json", 8)] {
        let r = run(&w, &["report", &run_id, "--anchor", "--format", format]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(fake.tx(), tx);
        let f = w.write(&format!("anchored.{format}"), &r.stdout);
        let ok = run(
            &w,
            &[
                "--output",
                "json",
                "report",
                "verify",
                f.to_str().unwrap(),
                "--run",
                &run_id,
            ],
        );
        assert_eq!(ok.code, 0, "{format}: {ok:?}");
        let v: Value = serde_json::from_str(&ok.stdout).unwrap();
        assert_eq!(v["anchor"]["tx"], tx, "{v}");
    }
    let json: Value = serde_json::from_str(&w.read("anchored.json")).unwrap();
    assert_eq!(json["evidence"]["anchor"]["tx"], 8, "{json}");
    assert!(w.read("anchored.html").contains("proven from trusted tx 5"));

    // The trusted state moves past the anchor: proven from the newer one.
    trust(&w, &env);
    let ok = run(&w, &["report", "verify", md, "--run", &run_id]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.contains("proven against trusted tx 8"), "{ok:?}");

    // The journal edited and re-chained after anchoring.
    let new_head = edit_journal(&w, &run_id);
    assert_ne!(new_head, head);
    let plain = run(&w, &["report", &run_id]);
    assert_eq!(
        plain.code, 0,
        "the edited journal is self-consistent: {plain:?}"
    );
    let bad = run(&w, &["report", "verify", md, "--run", &run_id]);
    assert_eq!(bad.code, 52, "{bad:?}");
    assert!(
        bad.stderr
            .contains("the journal changed after it was anchored: immudb tx 6")
            && bad.stderr.contains(&head)
            && bad.stderr.contains(&new_head),
        "{bad:?}"
    );
    // A report rendered again from the edited journal, with the old
    // anchor block pasted in, matches the journal but not the ledger.
    let old = drctl::report::evidence::extract(&w.read("anchored.md")).unwrap();
    let forged = plain.stdout.replace(
        &drctl::report::evidence::comment(
            &drctl::report::evidence::extract(&plain.stdout).unwrap(),
        ),
        &drctl::report::evidence::comment(&drctl::report::evidence::Evidence {
            records: old.records,
            head: new_head.clone(),
            ..old.clone()
        }),
    );
    let f = w.write("forged.md", &forged);
    let bad = run(
        &w,
        &["report", "verify", f.to_str().unwrap(), "--run", &run_id],
    );
    assert_eq!(bad.code, 52, "{bad:?}");
    assert!(bad.stderr.contains("immudb tx 6"), "{bad:?}");
}

/// No trusted state, an unreachable or failing ledger, or a server that
/// does not store what it was asked to: a clear error and no report.
#[test]
fn anchoring_fails_closed_and_writes_no_report() {
    let w = Work::new();
    let fake = FakeImmudb::start(ledger("sync_v1", 5)).signing();
    let env = env_file(&w, fake.port);
    let run_id = a_run(&w, &env);

    let r = run(&w, &["report", &run_id, "--anchor"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("no trusted immudb state"), "{r:?}");
    assert!(r.stderr.contains("drctl immudb trust"), "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert_eq!(fake.tx(), 5, "nothing written without a trusted state");
    trust(&w, &env);

    fake.set_outage(Some(503));
    let r = run(&w, &["report", &run_id, "--anchor"]);
    assert_eq!(r.code, 21, "{r:?}");
    assert!(r.stderr.contains("immudb ledger unavailable"), "{r:?}");
    assert!(r.stdout.is_empty(), "no half-written report: {r:?}");
    fake.set_outage(None);

    // Nothing listens on the ledger's port.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env2 = env_file_named(&w, port, "closed.yaml");
    let r = run(&w, &["report", &run_id, "--anchor", "--env", &env2]);
    assert_eq!(r.code, 21, "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");

    // A server that commits another value than the one asked for.
    fake.lie_on_set(true);
    let r = run(&w, &["report", &run_id, "--anchor"]);
    assert_eq!(r.code, 13, "{r:?}");
    assert!(r.stderr.contains("does not hold the anchor"), "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    fake.lie_on_set(false);

    // Anchored; then verify against a ledger that answers another value,
    // and one that does not answer.
    let r = run(&w, &["report", &run_id, "--anchor"]);
    assert_eq!(r.code, 0, "{r:?}");
    let f = w.write("anchored.md", &r.stdout);
    let f = f.to_str().unwrap();
    fake.lie_on_get(true);
    let bad = run(&w, &["report", "verify", f, "--run", &run_id]);
    assert_eq!(bad.code, 13, "{bad:?}");
    assert!(bad.stderr.contains("does not prove the anchor"), "{bad:?}");
    fake.lie_on_get(false);
    fake.set_outage(Some(503));
    let bad = run(&w, &["report", "verify", f, "--run", &run_id]);
    assert_eq!(bad.code, 21, "{bad:?}");
    fake.set_outage(None);
    let ok = run(&w, &["report", "verify", f, "--run", &run_id]);
    assert_eq!(ok.code, 0, "{ok:?}");
}
