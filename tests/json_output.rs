//! `--output json` is honoured by every command that accepts it: what a
//! script reads from stdout parses as JSON and says what happened.

use drctl_tests::{Out, Work};
use serde_json::Value;

const GATED: &str = "name: gated\nsteps:\n  - id: before\n    action: exec\n    with: {argv: [sh, -c, 'echo before >> w']}\n  - id: gate\n    action: approval\n    needs: [before]\n    timeout: 1s\n    with: {message: 'go?'}\n";

fn json(o: &Out) -> Value {
    serde_json::from_str(o.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {o:?}"))
}

fn parked(w: &Work) -> String {
    let rb = w.write("rb.yaml", GATED);
    let o = w.run(&["run", rb.to_str().unwrap(), "--yes"]);
    assert_eq!(o.code, 8, "the run parks at its gate: {o:?}");
    w.runs().last().cloned().unwrap()
}

#[test]
fn exit_codes_as_json_match_the_table() {
    let w = Work::new();
    let o = w.run(&["exit-codes", "--output", "json"]);
    assert_eq!(o.code, 0, "{o:?}");
    let codes = json(&o);
    let codes = codes.as_array().expect("an array");
    assert_eq!(codes.len(), drctl::exit::TABLE.len());
    for ((code, name, _), v) in drctl::exit::TABLE.iter().zip(codes) {
        assert_eq!(v["code"], *code);
        assert_eq!(v["name"], *name);
        assert!(v["meaning"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[test]
fn approve_abort_and_report_answer_in_json() {
    let w = Work::new();
    let run = parked(&w);
    let a = w.run(&["approve", &run, "gate", "--output", "json"]);
    assert_eq!(a.code, 0, "{a:?}");
    let v = json(&a);
    assert_eq!(v["approved"], true);
    assert_eq!(v["already"], false);
    assert_eq!(v["parked"], true);
    assert!(v["resume"]
        .as_str()
        .unwrap()
        .ends_with(&format!("resume {run}")));
    let again = json(&w.run(&["approve", &run, "gate", "--output", "json"]));
    assert_eq!(again["already"], true);

    let r = w.run(&["report", &run, "--output", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        json(&r)["run"]["id"]
            .as_str()
            .or(json(&r)["run_id"].as_str()),
        Some(run.as_str()),
        "{r:?}"
    );
    // An explicit format still wins.
    let md = w.run(&["report", &run, "--output", "json", "--format", "md"]);
    assert!(md.stdout.starts_with('#'), "{md:?}");

    let other = parked(&w);
    let ab = w.run(&["abort", &other, "--output", "json"]);
    assert_eq!(ab.code, 0, "{ab:?}");
    let v = json(&ab);
    assert_eq!(v["outcome"], "ended");
    assert_eq!(v["run_id"], other.as_str());
}
