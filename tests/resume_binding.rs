//! A run resumes only against the environment it started with: another
//! environment is refused, a changed file is shown as a diff and needs
//! `--allow-env-change` (journaled), and nothing runs before that.

use drctl_tests::Work;

const ENV: &str = "name: shop\nactive_region: primary\nregions:\n  primary:\n    app: {url: \"http://127.0.0.1:1\"}\n  dr:\n    app: {url: \"http://127.0.0.2:1\"}\n";

/// Fails at `gate` until the file `open` exists; `after` proves whether
/// anything ran past it.
const RUNBOOK: &str = r#"
name: bound
steps:
  - id: first
    action: exec
    with: {argv: [sh, -c, "echo ${env.name} >> first"]}
  - id: gate
    action: exec
    needs: [first]
    with: {argv: [test, -f, open]}
  - id: after
    action: exec
    needs: [gate]
    with: {argv: [sh, -c, "echo after >> after"]}
"#;

fn failed_run(w: &Work) -> (String, std::path::PathBuf) {
    let env = w.write("env.yaml", ENV);
    let rb = w.write("rb.yaml", RUNBOOK);
    let o = w.run(&[
        "run",
        rb.to_str().unwrap(),
        "--env",
        env.to_str().unwrap(),
        "--region",
        "dr",
        "--yes",
    ]);
    assert_eq!(o.code, 5, "the gate fails first: {o:?}");
    (w.runs()[0].clone(), env)
}

/// The resume was refused before anything: no record, no step.
fn refused(w: &Work, run: &str, records: usize) {
    assert_eq!(w.journal(run).len(), records, "a refused resume wrote");
    assert!(!w.path().join("after").exists(), "a step ran");
    assert_eq!(w.read("first").lines().count(), 1, "`first` ran again");
}

#[test]
fn another_environment_is_refused() {
    let w = Work::new();
    let (run, _) = failed_run(&w);
    let records = w.journal(&run).len();
    std::fs::write(w.path().join("open"), "").unwrap();
    let other = w.write("other.yaml", &ENV.replace("name: shop", "name: billing"));
    let o = w.run(&["resume", &run, "--env", other.to_str().unwrap()]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(
        o.stderr.contains("the run started with environment `shop`"),
        "{o:?}"
    );
    assert!(o.stderr.contains("not `billing`"), "{o:?}");
    refused(&w, &run, records);
    // Same name, but without the run's target region.
    let shrunk = w.write(
        "shrunk.yaml",
        "name: shop\nactive_region: primary\nregions:\n  primary:\n    app: {url: \"http://127.0.0.1:1\"}\n  west:\n    app: {url: \"http://127.0.0.3:1\"}\n",
    );
    let o = w.run(&["resume", &run, "--env", shrunk.to_str().unwrap()]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(
        o.stderr
            .contains("region `dr` is not in environment `shop`"),
        "{o:?}"
    );
    refused(&w, &run, records);
}

#[test]
fn a_changed_environment_is_shown_and_needs_consent() {
    let w = Work::new();
    let (run, env) = failed_run(&w);
    let records = w.journal(&run).len();
    std::fs::write(w.path().join("open"), "").unwrap();
    std::fs::write(&env, ENV.replace("127.0.0.2:1", "127.0.0.2:8443")).unwrap();
    // No terminal: the diff is printed and the documented code returned.
    let o = w.run(&["resume", &run]);
    assert_eq!(o.code, 11, "{o:?}");
    assert!(o.stderr.contains("--- at run start"), "{o:?}");
    assert!(
        o.stderr.contains("-    app: {url: \"http://127.0.0.2:1\"}"),
        "{o:?}"
    );
    assert!(
        o.stderr
            .contains("+    app: {url: \"http://127.0.0.2:8443\"}"),
        "{o:?}"
    );
    assert!(o.stderr.contains("--allow-env-change"), "{o:?}");
    refused(&w, &run, records);
    // Accepted: journaled with the new hash, and the run completes.
    let o = w.run(&["resume", &run, "--allow-env-change"]);
    assert_eq!(o.code, 0, "{o:?}");
    let resumed = w
        .journal(&run)
        .into_iter()
        .find(|r| r["type"] == "run_resumed")
        .expect("run_resumed");
    let text = std::fs::read(&env).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&text))
    };
    assert_eq!(resumed["environment_sha256"], sha.as_str(), "{resumed}");
    assert!(w.path().join("after").exists());
}
