//! Secrets on the incident path (issue #11, part 3), against the real
//! binary: literal secrets (passwords inside DSNs, credential headers,
//! secret-shaped fields of any type, in lists and nested maps) are located
//! validation errors at `validate`, `plan` and `run`, and never echoed; every
//! secret reference is registered before step 1; `exec` children get a
//! minimal environment; a secret a command prints, in any encoding, appears
//! in no output, journal, status or report.

use std::collections::BTreeSet;

use drctl_tests::{fixture, Out, Work};

fn snapshot(name: &str, actual: &str) {
    insta::assert_snapshot!(name, actual);
}

/// Every literal secret written in the fixtures below.
const LITERALS: &[&str] = &["SENTINEL", "31415926", "27182818", "16180339", "12345678"];

fn assert_no_literal(what: &str, o: &Out) {
    for s in LITERALS {
        assert!(
            !o.stdout.contains(s) && !o.stderr.contains(s),
            "`{s}` echoed by {what}: {o:?}"
        );
    }
}

/// Runs drctl from the broken-fixtures dir so paths in messages are stable.
fn in_fixtures(w: &Work, args: &[&str]) -> Out {
    let mut c = w.cmd(args);
    c.current_dir(fixture("broken"));
    Out::from(c.output().expect("run drctl"))
}

/// `validate`, `plan` and `run` all refuse the file with exit 3, echo no
/// secret (human and JSON output), and start no run. Returns what
/// `validate` printed.
fn refused_everywhere(files: &[&str], env: Option<&str>) -> Out {
    let w = Work::new();
    let env_args: Vec<&str> = env.map(|e| vec!["--env", e]).unwrap_or_default();
    let mut validate = vec!["validate"];
    validate.extend(files);
    validate.extend(&env_args);
    let o = in_fixtures(&w, &validate);
    assert_eq!(o.code, 3, "{o:?}");
    assert_no_literal("validate", &o);
    let mut json = vec!["--output", "json"];
    json.extend(&validate);
    let j = in_fixtures(&w, &json);
    assert_eq!(j.code, 3, "{j:?}");
    assert_no_literal("validate --output json", &j);
    let rb = files[files.len() - 1];
    for cmd in [
        vec!["plan", rb],
        vec!["plan", rb, "--check"],
        vec![
            "--log-format",
            "json",
            "--output",
            "json",
            "run",
            rb,
            "--yes",
        ],
    ] {
        let mut args = cmd.clone();
        args.extend(&env_args);
        let r = in_fixtures(&w, &args);
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert_no_literal(&args.join(" "), &r);
    }
    assert!(w.runs().is_empty(), "a run started: {:?}", w.runs());
    o
}

#[test]
fn a_password_inside_a_dsn_is_a_located_error() {
    let o = refused_everywhere(&["secret-dsn.yaml"], None);
    for needle in [
        "secret-dsn.yaml:6:15",
        "`steps.url.with.server` holds a URL with a password in it",
        "secret-dsn.yaml:11:21",
        "`steps.keywords.with.server.dsn` holds a connection string with a password",
        "secret-dsn.yaml:16:12",
        "a URL with a secret in its query",
        "password: env:NAME",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}`:\n{}",
            o.stderr
        );
    }
    snapshot("dsn", &o.stderr);
}

#[test]
fn a_credential_header_literal_is_a_located_error() {
    let o = refused_everywhere(&["secret-header.yaml"], None);
    for needle in [
        "secret-header.yaml:8:24",
        "`steps.probe.with.headers.Authorization` holds a literal secret",
        "secret-header.yaml:9:30",
        "secret-header.yaml:10:20",
        "Bearer …",
        "3 errors found",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}`:\n{}",
            o.stderr
        );
    }
    snapshot("header", &o.stderr);
}

#[test]
fn secret_fields_of_any_type_in_lists_and_maps_are_located_errors() {
    let o = refused_everywhere(&["secret-fields.yaml"], None);
    for needle in [
        "secret-fields.yaml:3:26", // numeric param default
        "parameter `db_password` is secret",
        "secret-fields.yaml:4:14",  // short-form param default
        "secret-fields.yaml:10:25", // PGPASSWORD: number
        "`steps.run.with.env.PGPASSWORD` holds a literal secret",
        "inherit_env: `DEPLOY_KEY=…` gives a value",
        "`steps.nested.with.extra.tokens[0]` holds a literal secret",
        "`steps.nested.with.extra.auth.basic.password` holds a literal secret",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}`:\n{}",
            o.stderr
        );
    }
    assert!(
        !o.stderr.contains("tokens[1]"),
        "a reference in a list is not an error:\n{}",
        o.stderr
    );
    snapshot("fields", &o.stderr);
}

#[test]
fn literal_secrets_in_the_environment_are_located_errors() {
    let o = refused_everywhere(&["secret-uses-env.yaml"], Some("secret-env.yaml"));
    for needle in [
        "secret-env.yaml:5:15",
        "`regions.primary.postgres` holds a URL with a password in it",
        "secret-env.yaml:8:21",
        "`regions.dr.postgres.dsn` holds a connection string with a password",
        "`regions.dr.immudb.users[0].password` holds a literal secret",
    ] {
        assert!(
            o.stderr.contains(needle),
            "missing `{needle}`:\n{}",
            o.stderr
        );
    }
    // Three literals, each reported once (beside the strict decoding's
    // other findings in this file).
    assert_eq!(
        o.stderr.matches("error[E-SECRET-LITERAL]").count(),
        3,
        "{}",
        o.stderr
    );
    snapshot("env", &o.stderr);
}

/// A DSN password given at run time (`--param`) is refused before anything
/// runs, and the message names the parameter, not the value.
#[test]
fn a_dsn_password_in_a_parameter_is_refused_before_step_one() {
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        "name: p\nparams:\n  server: {required: true}\nsteps:\n  - id: status\n    action: postgres.status\n    with: {server: \"${params.server}\"}\n",
    );
    for cmd in [&["plan"][..], &["run", "--yes"][..]] {
        let mut args = vec!["--output", "json"];
        args.extend(cmd);
        args.extend([
            rb.to_str().unwrap(),
            "--param",
            "server=postgresql://drctl:SENTINEL-PARAM-PW@127.0.0.1:1/db",
        ]);
        let o = w.run(&args);
        let cmd = cmd[0];
        assert_eq!(o.code, 3, "{o:?}");
        let said = format!("{}{}", o.stdout, o.stderr);
        assert!(
            said.contains("parameter `server` holds a URL with a password"),
            "{o:?}"
        );
        assert_no_literal(cmd, &o);
    }
    assert!(w.runs().is_empty());
}

/// The names of the variables a child saw (`env` prints `NAME=value`).
fn env_names(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect()
}

#[test]
fn exec_children_get_a_minimal_environment() {
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        "name: envs\nsteps:\n  - id: bare\n    action: exec\n    with: {argv: [env], env: {STEP_VAR: from-the-step}, idempotent: true}\n  - id: inherit\n    action: exec\n    with: {argv: [env], inherit_env: [DRCTL_TEST_PASSED, DRCTL_TEST_UNSET], idempotent: true}\n",
    );
    let mut c = w.cmd(&["run", rb.to_str().unwrap(), "--yes"]);
    c.env("DRCTL_TEST_HIDDEN", "hidden-value-1")
        .env("DRCTL_TEST_PASSED", "passed-value-2")
        .env("LANG", "C.UTF-8")
        .env_remove("DRCTL_TEST_UNSET");
    let o = Out::from(c.output().unwrap());
    assert_eq!(o.code, 0, "{o:?}");
    let run = w.runs().pop().expect("a run");
    let bare = w.outputs(&run, "bare")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    let names = env_names(&bare);
    let allowed: BTreeSet<String> = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "STEP_VAR"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(names.is_subset(&allowed), "the child saw more: {names:?}");
    for must in ["PATH", "LANG", "STEP_VAR"] {
        assert!(names.contains(must), "{must} missing: {names:?}");
    }
    assert!(bare.contains("STEP_VAR=from-the-step"), "{bare}");
    // drctl's own variables (its state location, the operator, secrets
    // of other steps) stay in drctl.
    assert!(
        !bare.contains("hidden-value-1") && !bare.contains("DRCTL_"),
        "{bare}"
    );
    let inherit = w.outputs(&run, "inherit")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        inherit.contains("DRCTL_TEST_PASSED=passed-value-2"),
        "{inherit}"
    );
    assert!(
        !inherit.contains("DRCTL_TEST_UNSET") && !inherit.contains("hidden-value-1"),
        "{inherit}"
    );
}

/// A secret given to an `exec` step by `env:` reference, printed by the
/// child raw, JSON-escaped, base64 and URL-encoded, with JSON logs and JSON
/// output, is in none of: stdout, stderr, the journal bytes, `status
/// --output json`, the JSON and Markdown reports.
#[test]
fn a_printed_secret_leaks_nowhere_in_any_encoding() {
    use base64::Engine as _;
    let w = Work::new();
    let secret = r#"Pr1nt3d"S3cr3t/\ with+space&amp"#;
    let py = "import base64,json,os,urllib.parse as u,sys; s=os.environ['TOKEN']; \
              print(s); print(json.dumps({'t': s})); print(base64.b64encode(s.encode()).decode()); \
              print(base64.urlsafe_b64encode(('op:'+s).encode()).decode()); print(u.quote(s, safe='')); \
              print(u.quote_plus(s)); print('err', s, file=sys.stderr)";
    let rb = w.write(
        "rb.yaml",
        &format!(
            "name: printed\nsteps:\n  - id: print\n    action: exec\n    with:\n      argv: [python3, -c, {py:?}]\n      env: {{TOKEN: \"env:DRCTL_TEST_PRINTED\"}}\n      idempotent: true\n"
        ),
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE;
    let forms = [
        secret.to_string(),
        serde_json::to_string(secret)
            .unwrap()
            .trim_matches('"')
            .to_string(),
        b64.encode(secret),
        url.encode(format!("op:{secret}")),
        "Pr1nt3d%22S3cr3t%2F%5C%20with%2Bspace%26amp".to_string(),
        "Pr1nt3d%22S3cr3t%2F%5C+with%2Bspace%26amp".to_string(),
        // Distinctive fragments: no partial form survives either.
        "S3cr3t".to_string(),
    ];
    let leaks = |what: &str, text: &str| {
        for f in &forms {
            assert!(
                !text.contains(f.as_str()),
                "`{f}` leaked into {what}: {text}"
            );
        }
    };
    let mut c = w.cmd(&[
        "--log-level",
        "debug",
        "--log-format",
        "json",
        "--output",
        "json",
        "run",
        rb.to_str().unwrap(),
        "--yes",
    ]);
    c.env("DRCTL_TEST_PRINTED", secret);
    let o = Out::from(c.output().unwrap());
    assert_eq!(o.code, 0, "{o:?}");
    leaks("stdout", &o.stdout);
    leaks("stderr", &o.stderr);
    let run = w.runs().pop().expect("a run");
    let journal = String::from_utf8(w.journal_bytes(&run)).unwrap();
    leaks("the journal", &journal);
    let stdout = w.outputs(&run, "print")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    assert!(
        stdout.lines().all(|l| l.contains("***")),
        "every form masked: {stdout}"
    );
    let status = w.run(&["status", &run, "--output", "json"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("***"), "{status:?}");
    leaks("status --output json", &status.stdout);
    for f in ["json", "md"] {
        let r = w.run(&["report", &run, "--format", f]);
        assert_eq!(r.code, 0, "{r:?}");
        leaks(&format!("the {f} report"), &r.stdout);
    }
}

/// A secret that only a later step references is registered at run start:
/// an earlier step that prints it (here it reads drctl's variable through
/// `inherit_env`, not through the reference) has it masked.
#[test]
fn a_later_steps_secret_is_masked_from_step_one() {
    let w = Work::new();
    let secret = "LATER-secret-5e7b1d";
    let rb = w.write(
        "rb.yaml",
        "name: later\nsteps:\n  - id: early\n    action: exec\n    with: {argv: [sh, -c, \"echo early $DRCTL_TEST_LATER\"], inherit_env: [DRCTL_TEST_LATER], idempotent: true}\n  - id: late\n    action: exec\n    needs: [early]\n    with: {argv: [\"true\"], env: {PW: \"env:DRCTL_TEST_LATER\"}, idempotent: true}\n",
    );
    let mut c = w.cmd(&["--log-level", "debug", "run", rb.to_str().unwrap(), "--yes"]);
    c.env("DRCTL_TEST_LATER", secret);
    let o = Out::from(c.output().unwrap());
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        !o.stdout.contains(secret) && !o.stderr.contains(secret),
        "{o:?}"
    );
    let run = w.runs().pop().expect("a run");
    assert_eq!(w.outputs(&run, "early")["stdout"], "early ***\n");
    let journal = String::from_utf8(w.journal_bytes(&run)).unwrap();
    assert!(!journal.contains(secret), "{journal}");
}
