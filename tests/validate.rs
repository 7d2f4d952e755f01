//! `drctl validate` on broken files: every problem reported at once with
//! file:line:column and a hint, exit code 3, never a panic. The messages are
//! snapshot-tested with insta (tests/snapshots/validate__*.snap); accept an
//! intended change with `INSTA_UPDATE=always`, then review the diff.

use drctl_tests::{fixture, Work};

/// Snapshot of user-facing text (insta; `cargo insta review` or
/// `INSTA_UPDATE=always` to accept an intended change). With `CI=true` a
/// missing or different snapshot fails instead of being written.
fn snapshot(name: &str, actual: &str) {
    // Relative paths in environment files are shown resolved (absolute).
    let mut s = insta::Settings::clone_current();
    s.add_filter(&fixture("broken").display().to_string(), "[FIXTURES]");
    s.bind(|| insta::assert_snapshot!(name, actual));
}

/// Runs validate from the fixtures dir so paths in messages are stable.
fn validate(files: &[&str], env: Option<&str>) -> drctl_tests::Out {
    let w = Work::new();
    let mut args = vec!["validate".to_string()];
    args.extend(files.iter().map(|f| f.to_string()));
    if let Some(e) = env {
        args.push("--env".into());
        args.push(e.into());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = w.cmd(&refs);
    c.current_dir(fixture("broken"));
    drctl_tests::Out::from(c.output().expect("run drctl"))
}

#[test]
fn syntax_error_is_located() {
    let o = validate(&["syntax.yaml"], None);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("syntax.yaml:"), "{o:?}");
    snapshot("syntax", &o.stderr);
}

#[test]
fn every_field_problem_is_reported_at_once() {
    let o = validate(&["fields.yaml"], None);
    assert_eq!(o.code, 3, "{o:?}");
    for needle in [
        "fields.yaml:2:1", // descripton
        "did you mean `description`",
        "fields.yaml:3:16", // rto without unit
        "fields.yaml:3:25", // 1x
        "fields.yaml:8:5",  // timout
        "did you mean `timeout`",
        "fields.yaml:10:13", // wiat
        "did you mean `wait`",
        "missing required field `id`",
        "fields.yaml:17:23", // attempts: three
        "fields.yaml:17:51", // factor
        "fields.yaml:18:17", // on_failure
        "fields.yaml:19:11", // when
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}` in:\n{}",
            o.stderr
        );
    }
    assert!(o.stderr.contains("10 errors found"), "{o:?}");
    snapshot("fields", &o.stderr);
}

#[test]
fn graph_problems_include_cycle_path() {
    let o = validate(&["graph.yaml"], None);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(
        o.stderr.contains("dependency cycle: a -> c -> b -> a"),
        "{o:?}"
    );
    assert!(o.stderr.contains("duplicate step id `a`"), "{o:?}");
    assert!(o.stderr.contains("needs unknown step `bb`"), "{o:?}");
    assert!(o.stderr.contains("step `d` needs itself"), "{o:?}");
    snapshot("graph", &o.stderr);
}

#[test]
fn action_params_and_references_are_checked() {
    let o = validate(&["params.yaml"], None);
    assert_eq!(o.code, 3, "{o:?}");
    for needle in [
        "no parameter `ulr`",
        "did you mean `params.url`",
        "unknown value `FETCH`",
        "HTTP status 700",
        "json_pointer `status` must start with `/`",
        "unknown field `timeout`",
        "argv must be a list",
        "does not depend on it",
        "no step `nope`",
        "unknown reference `${stesp.x}`",
        "unterminated",
        "is secret but its default is a literal",
        "has no output `stauts`",
        "unknown value `loud`",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}` in:\n{}",
            o.stderr
        );
    }
    snapshot("params", &o.stderr);
}

#[test]
fn environment_problems_and_env_references() {
    let o = validate(&["uses-env.yaml"], Some("env-bad.yaml"));
    assert_eq!(o.code, 3, "{o:?}");
    for needle in [
        "env-bad.yaml:2:16",
        "holds a literal secret",
        "unknown value `sms`",
        "unknown field `extra`",
        "uses-env.yaml:6:",
        "no region `mars`",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}` in:\n{}",
            o.stderr
        );
    }
    assert!(
        !o.stderr.contains("s3cret\""),
        "a literal secret must not be echoed in hints: {o:?}"
    );
    snapshot("env", &o.stderr);
}

#[test]
fn a_strict_environment_reports_every_mistake_at_once() {
    let o = validate(
        &["directional.yaml", "env-ports.yaml"],
        Some("env-strict.yaml"),
    );
    assert_eq!(o.code, 3, "{o:?}");
    for needle in [
        "env-strict.yaml:5:5", // postgress
        "did you mean `postgres`?",
        "env-strict.yaml:6:47", // helth
        "environment variable DRCTL_TEST_UNSET_VAR is not set",
        "env-strict.yaml:7:100", // timeout: 10
        "env-strict.yaml:9:38",  // port: "abc"
        "secrets/missing-pg-password`: the file does not exist",
        "env-strict.yaml:10:16", // url without a scheme
        "did you mean `workloads`?",
        "env-strict.yaml:15:12", // PowerDNS key file
        "env-ports.yaml:5:38",   // 99999
        "env-ports.yaml:8:38",   // 0
        // `${target.immudb}`: only the source has one.
        "directional.yaml:5:21",
        "not present in region `dr` (the target of this run)",
        "12 errors found",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}` in:\n{}",
            o.stderr
        );
    }
    snapshot("strict_env", &o.stderr);
}

#[test]
fn parameter_declarations_are_typed() {
    let o = validate(&["typed-params.yaml"], None);
    assert_eq!(o.code, 3, "{o:?}");
    for needle in [
        "typed-params.yaml:3:22",
        "is not a duration",
        "out of range: expected an integer from 1 to 10",
        "is not one of: fast, safe",
        "is not true or false",
        "unknown value `number`",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}` in:\n{}",
            o.stderr
        );
    }
    snapshot("typed_params", &o.stderr);
}

#[test]
fn json_output_lists_diagnostics() {
    let o = validate(&["graph.yaml", "syntax.yaml"], None);
    let w = Work::new();
    let mut c = w.cmd(&["--output", "json", "validate", "graph.yaml", "syntax.yaml"]);
    c.current_dir(fixture("broken"));
    let j = drctl_tests::Out::from(c.output().expect("run"));
    assert_eq!(o.code, 3);
    assert_eq!(j.code, 3, "{j:?}");
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("json");
    let diags = v["diagnostics"].as_array().expect("array");
    assert!(diags.len() >= 5, "{v}");
    assert!(
        diags
            .iter()
            .all(|d| d["line"].as_u64().unwrap_or(0) > 0 && d["column"].as_u64().unwrap_or(0) > 0),
        "{v}"
    );
}

#[test]
fn shipped_files_validate() {
    let root = drctl_tests::repo_root();
    let mut files: Vec<String> = Vec::new();
    for dir in ["runbooks", "checks", "drills"] {
        for e in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p.display().to_string());
            }
        }
    }
    if files.is_empty() {
        return;
    }
    let w = Work::new();
    let refs: Vec<&str> = std::iter::once("validate")
        .chain(files.iter().map(String::as_str))
        .collect();
    let mut c = w.cmd(&refs);
    c.current_dir(&root);
    let o = drctl_tests::Out::from(c.output().expect("run"));
    assert_eq!(o.code, 0, "{o:?}");

    // The example environments, strictly: every reference resolvable (the
    // variables set here, as on an operator's machine), and the runbooks
    // against them, from a directory that is not the repository, so every
    // relative path must resolve against the file that holds it.
    let envs = root.join("runbooks/environments");
    for e in std::fs::read_dir(&envs)
        .expect("example environments")
        .flatten()
    {
        let env = w.mounted_example_env(&e.path()).display().to_string();
        let mut args = vec!["validate".to_string(), env.clone()];
        args.extend(files.iter().filter(|f| f.contains("/runbooks/")).cloned());
        args.extend(["--env".to_string(), env.clone()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = w.cmd(&refs);
        for var in drctl_tests::EXAMPLE_SECRET_VARS {
            c.env(var, "not-a-real-secret-value");
        }
        let o = drctl_tests::Out::from(c.output().expect("run"));
        assert_eq!(o.code, 0, "{env}: {o:?}");
        // Without the variables, every unset one is named, and nothing else.
        let mut c = w.cmd(&["validate", &env]);
        c.env_remove("PGPASSWORD");
        let o = drctl_tests::Out::from(c.output().expect("run"));
        assert_eq!(o.code, 3, "{o:?}");
        assert!(
            o.stderr
                .contains("environment variable PGPASSWORD is not set"),
            "{o:?}"
        );
    }
}

#[test]
fn garbage_never_panics() {
    let w = Work::new();
    let inputs = [
        "",
        "---\n---\n",
        "[1,2",
        "steps: 5",
        "name: [x]\nsteps: [{}]",
        "\u{0}\u{1}",
        "a: &x *x",
        "steps:\n  - id: a\n    action: exec\n    with: {argv: []}\n",
        "name: x\nsteps:\n- {id: a, action: wait, with: {until: '>'}}",
        "name: x\nsteps:\n- {id: a, action: wait, with: {duration: '99999999999999999h'}}",
    ];
    for (i, text) in inputs.iter().enumerate() {
        let f = w.write(&format!("g{i}.yaml"), text);
        let o = w.run(&["validate", f.to_str().unwrap()]);
        assert!(o.code == 3 || o.code == 0, "input {i} {text:?}: {o:?}");
        assert!(!o.stderr.contains("panicked"), "input {i}: {o:?}");
    }
}

#[test]
fn broken_drill_definition_is_located() {
    let w = Work::new();
    let f = w.write(
        "d.yaml",
        "name: d\nrunbook: nope.yaml\nschedule: every monday\ninject_lag: soon\nextra: 1\n",
    );
    let o = w.run(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.code, 3, "{o:?}");
    for needle in [
        "d.yaml:3:11",
        "has 2 fields; a drill schedule has five",
        "d.yaml:4:13",
        "unknown field `extra`",
    ] {
        assert!(o.stderr.contains(needle), "missing `{needle}`: {o:?}");
    }
}

#[test]
fn kube_parameters_and_sections_are_checked() {
    let o = validate(&["kube.yaml"], Some("kube-env.yaml"));
    assert_eq!(o.code, 3, "{o:?}");
    for needle in [
        "kube.yaml:5:32", // skip_unless: steps.x.outputs is not an environment reference
        "kube.yaml:7:17", // replicas: lots
        "kube.yaml:8:7",  // concurency
        "did you mean `concurrency`",
        "selecting by name needs exactly one `kind`",
        "unknown workload kind `Deploymnet`",
        "missing `namespace`",
        "`names` and `selector` exclude each other",
        "kube.yaml:17:15",    // within: soon
        "kube-env.yaml:7:19", // in_cluster with kubeconfig
        "kube-env.yaml:8:16", // timeout: soon
        "no workloads selected",
        "did you mean `kubeconfig`",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            o.stderr
        );
    }
    snapshot("kube", &o.stderr);
}

/// A few hundred bytes of nested aliases ("billion laughs") are refused
/// with a located error, quickly and without eating memory.
#[test]
fn an_alias_bomb_is_refused_within_100_mb() {
    let w = Work::new();
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (p, n) = (pair[0], pair[1]);
        text.push_str(&format!(
            "{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        ));
    }
    assert!(text.len() < 400, "a small file: {} bytes", text.len());
    let f = w.write("bomb.yaml", &text);
    let o = w.run(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("aliases expand to more than"), "{o:?}");
    assert!(o.stderr.contains("bomb.yaml:"), "located: {o:?}");
    // Peak resident memory of the children this test process waited for.
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let peak_mb = ru.ru_maxrss as f64 / 1024.0;
    assert!(peak_mb < 100.0, "peak RSS {peak_mb:.1} MB");
}

/// A file that cannot be read is reported at the file, not at `:0:0`.
#[test]
fn a_missing_file_is_reported_at_the_file() {
    let w = Work::new();
    // Missing files only: exit 17 (not found), from every command that
    // reads a runbook; a missing file beside a broken one is exit 3.
    for args in [
        vec!["validate", "no-such-runbook.yaml"],
        vec!["plan", "no-such-runbook.yaml"],
        vec!["run", "no-such-runbook.yaml", "--yes"],
    ] {
        let o = w.run(&args);
        assert_eq!(o.code, 17, "{args:?}: {o:?}");
        assert!(o.stderr.contains("error[E-NOT-FOUND]"), "{o:?}");
        assert!(o.stderr.contains("--> no-such-runbook.yaml\n"), "{o:?}");
        assert!(!o.stderr.contains(":0:0"), "{o:?}");
    }
    // And a run stopped so early created no state.
    if !drctl_tests::pg_mode() {
        assert!(
            !w.state().exists(),
            "a run of a missing runbook created state"
        );
    }
    let broken = w.write("broken.yaml", "name: [x]\n");
    let o = w.run(&["validate", "no-such-runbook.yaml", broken.to_str().unwrap()]);
    assert_eq!(o.code, 3, "{o:?}");
}

#[test]
fn plaintext_by_default_is_refused_with_the_modes_explained() {
    let o = validate(&["tls.yaml"], None);
    assert_eq!(o.code, 3, "{o:?}");
    for needle in [
        "tls.yaml:7:",
        "sslmode `prefer` is refused",
        "tls.yaml:11:",
        "sslmode `allow` is refused",
        "tls.yaml:15:",
        "the DSN has no `sslmode`",
        "tls.yaml:19:",
        "sslrootcert is used only with `sslmode: verify-full`",
        "authenticates nothing",
        "tls.yaml:24:",
        "method: unknown value `hard`",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}` in:\n{}",
            o.stderr
        );
    }
    snapshot("tls", &o.stderr);
}

/// A check set may only observe: `plan --check` runs every check's
/// preflight against live systems, so a mutating check (an `exec` that
/// touches a file) is a located error at `validate`, `plan` and `run`,
/// before anything runs, and the file is never created.
#[test]
fn a_check_set_that_changes_something_is_refused_before_anything_runs() {
    let w = Work::new();
    let marker = w.path().join("touched");
    std::fs::create_dir_all(w.path().join("checks")).unwrap();
    w.write(
        "checks/touch.yaml",
        &format!(
            "name: touch\nchecks:\n  - id: up\n    action: wait\n    with: {{duration: 1ms}}\n  - id: touch\n    action: exec\n    with: {{argv: [touch, \"{}\"], idempotent: true}}\n",
            marker.display()
        ),
    );
    let rb = w.write(
        "rb.yaml",
        "name: smoke\nsteps:\n  - id: smoke\n    action: checks.run\n    with: {file: checks/touch.yaml}\n",
    );
    let rb = rb.to_str().unwrap();
    let set = w.path().join("checks/touch.yaml");
    let set = set.to_str().unwrap();
    for args in [
        vec!["validate", rb],
        vec!["validate", set],
        vec!["plan", rb, "--check"],
        vec!["run", rb, "--yes"],
    ] {
        let o = w.run(&args);
        assert_eq!(o.code, 3, "{args:?}: {o:?}");
        assert!(
            o.stderr.contains("touch.yaml:7:13")
                && o.stderr
                    .contains("check `touch` uses `exec`, which is not read-only"),
            "{args:?}: located at the check's action: {o:?}"
        );
        assert!(o.stderr.contains("put `exec` in a runbook step"), "{o:?}");
        assert!(!marker.exists(), "{args:?} ran the check's command");
    }
    assert!(w.runs().is_empty(), "a run started: {:?}", w.runs());
}

/// An empty `checks:` list would pass without checking anything, and a
/// malformed one would silently check nothing: both are located errors.
#[test]
fn empty_and_malformed_check_lists_are_located() {
    let w = Work::new();
    for (name, text, at, says) in [
        (
            "empty.yaml",
            "name: e\nchecks: []\n",
            "empty.yaml:2:9",
            "check set has no checks",
        ),
        (
            "map.yaml",
            "name: m\nchecks:\n  id: a\n  action: wait\n",
            "map.yaml:3:3",
            "checks: expected a list of checks, found a mapping",
        ),
        (
            "scalar.yaml",
            "name: s\nchecks:\n  - app-health\n",
            "scalar.yaml:3:5",
            "expected",
        ),
    ] {
        let set = w.write(name, text);
        let o = w.run(&["validate", set.to_str().unwrap()]);
        assert_eq!(o.code, 3, "{name}: {o:?}");
        assert!(
            o.stderr.contains(at) && o.stderr.contains(says),
            "{name}: expected `{says}` at {at}: {o:?}"
        );
    }
}

/// `mode: isolated` is accepted, and an injection beside it (which an
/// isolated drill never does) is a located error.
#[test]
fn an_isolated_drill_definition_validates_and_refuses_an_injection() {
    let w = Work::new();
    let rb = drctl_tests::repo_root().join("runbooks/isolated-drill.yaml");
    let ok = w.write(
        "iso.yaml",
        &format!("name: iso\nrunbook: {}\nmode: isolated\n", rb.display()),
    );
    let o = w.run(&["validate", ok.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{o:?}");
    let bad = w.write(
        "iso-lag.yaml",
        &format!(
            "name: iso\nrunbook: {}\nmode: isolated\ninject_lag: 1s\n",
            rb.display()
        ),
    );
    let o = w.run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("iso-lag.yaml:4:13"), "{o:?}");
    assert!(
        o.stderr.contains("an isolated drill injects nothing"),
        "{o:?}"
    );
}
