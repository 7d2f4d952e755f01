//! DNS switching against a real PowerDNS Authoritative server (the lab's:
//! sqlite backend, API and DNS on loopback), verified by querying the
//! authoritative server directly.

use drctl_tests::{Out, Work};
use serde_json::Value;

struct Lab {
    w: Work,
}

impl Lab {
    fn up() -> Lab {
        let w = Work::new();
        let o = w.run(&["lab", "up"]);
        assert_eq!(o.code, 0, "lab up: {o:?}");
        Lab { w }
    }
    fn env(&self) -> String {
        self.w.state().join("lab/env.yaml").display().to_string()
    }
    fn outputs(&self, run: &str, step: &str) -> Value {
        self.w
            .journal(run)
            .into_iter()
            .rev()
            .find(|r| r["type"] == "step_finished" && r["step"] == step)
            .map(|r| r["outputs"].clone())
            .unwrap_or(Value::Null)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.w.run(&["lab", "down"]);
    }
}

const SWITCH: &str = "name: s\nsteps:\n  - id: dns\n    action: dns.switch\n    with: {region: dr}\n  - id: verify\n    action: dns.check\n    needs: [dns]\n    with: {region: dr}\n";

#[test]
fn switch_is_verified_at_the_server_and_idempotent() {
    let lab = Lab::up();
    let rb = lab.w.write("s.yaml", SWITCH);
    let env = lab.env();
    let plan = lab
        .w
        .run(&["plan", rb.to_str().unwrap(), "--env", &env, "--check"]);
    assert!(
        plan.stdout
            .contains("dns app.lab.example. A 127.0.0.1 -> 127.0.0.2"),
        "{plan:?}"
    );
    let o = lab
        .w
        .run(&["run", rb.to_str().unwrap(), "--env", &env, "--yes"]);
    assert_eq!(o.code, 0, "{o:?}");
    let run = lab.w.runs().pop().unwrap();
    let out = lab.outputs(&run, "dns");
    assert_eq!(out["changed"], true, "{out}");
    assert_eq!(
        out["previous"]["app.lab.example. A"][0], "127.0.0.1",
        "{out}"
    );
    assert!(out["convergence_ms"].as_f64().unwrap() > 0.0);
    let again = lab
        .w
        .run(&["run", rb.to_str().unwrap(), "--env", &env, "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
    let out2 = lab.outputs(&lab.w.runs().pop().unwrap(), "dns");
    assert_eq!(
        out2["changed"], false,
        "second switch must change nothing: {out2}"
    );
    let report = lab.w.run(&["report", &run]).stdout;
    assert!(
        report.contains("## DNS") && report.contains("convergence"),
        "{report}"
    );
    // The primary direction still works (failback).
    let back = lab.w.write(
        "b.yaml",
        "name: b\nsteps:\n  - id: dns\n    action: dns.switch\n    with: {region: primary}\n",
    );
    assert_eq!(
        lab.w
            .run(&["run", back.to_str().unwrap(), "--env", &env, "--yes"])
            .code,
        0
    );
}

#[test]
fn kill_mid_switch_then_resume_keeps_previous_values() {
    let lab = Lab::up();
    let rb = lab.w.write("s.yaml", SWITCH);
    let env = lab.env();
    let mut c = lab
        .w
        .cmd(&["run", rb.to_str().unwrap(), "--env", &env, "--yes"]);
    c.env("DRCTL_TEST_CRASH_AT", "dns-switch");
    let o = Out::from(c.output().unwrap());
    assert_eq!(o.code, -1, "expected SIGKILL after the PATCH: {o:?}");
    let run = lab.w.runs().pop().unwrap();
    let r = lab.w.run(&["resume", &run]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = lab.outputs(&run, "dns");
    assert_eq!(
        out["changed"], false,
        "already applied before the kill: {out}"
    );
    assert_eq!(
        out["previous"]["app.lab.example. A"][0], "127.0.0.1",
        "previous survives the crash: {out}"
    );
}

#[test]
fn a_rejected_record_applies_nothing_and_says_so() {
    let lab = Lab::up();
    // A CNAME where an A record exists is illegal; PowerDNS rejects the whole
    // PATCH, so the valid A change in the same request must not apply.
    let env_text = std::fs::read_to_string(lab.env()).unwrap().replace(
        "    - {name: app.lab.example., type: A, ttl: 5, values: {primary: [127.0.0.1], dr: [127.0.0.2]}}",
        "    - {name: app.lab.example., type: A, ttl: 5, values: {primary: [127.0.0.1], dr: [127.0.0.2]}}\n    - {name: ns1.lab.example., type: CNAME, ttl: 5, values: {primary: [app.lab.example.], dr: [app.lab.example.]}}",
    );
    let env = lab.w.write("bad-env.yaml", &env_text);
    let rb = lab.w.write("s.yaml", SWITCH);
    let o = lab.w.run(&[
        "run",
        rb.to_str().unwrap(),
        "--env",
        env.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.contains("rejected the change (422)"), "{o:?}");
    let check = lab.w.write(
        "c.yaml",
        "name: c\nsteps:\n  - id: verify\n    action: dns.check\n    with: {region: primary}\n",
    );
    let c = lab
        .w
        .run(&["run", check.to_str().unwrap(), "--env", &lab.env(), "--yes"]);
    assert_eq!(c.code, 0, "nothing was applied: {c:?}");
}
