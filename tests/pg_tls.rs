//! PostgreSQL TLS against the lab's real servers, whose certificates come
//! from the lab's private CA and name 127.0.0.1: `verify-full` with that
//! CA as `sslrootcert` succeeds; with another CA, or another host name,
//! it fails and says which.

use drctl_tests::Lab;

fn port(lab: &Lab) -> String {
    let env = std::fs::read_to_string(lab.env()).unwrap();
    env.split("port: ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string()
}

fn query_rb(lab: &Lab, name: &str, host: &str, tls: &str) -> String {
    let pw = lab.w.state().join("lab/pgpass").display().to_string();
    lab.runbook(
        name,
        &format!(
            "name: tls\nsteps:\n  - id: q\n    action: postgres.query\n    with: {{server: {{host: {host}, port: {}, user: drctl, password: \"file:{pw}\", {tls}}}, sql: \"select ssl from pg_stat_ssl where pid = pg_backend_pid()\", equals: true}}\n",
            port(lab)
        ),
    )
}

#[test]
fn verify_full_trusts_exactly_the_given_ca_and_checks_the_host() {
    let lab = Lab::up();
    let ca = lab.w.state().join("lab/tls/ca.crt").display().to_string();
    let ok = query_rb(
        &lab,
        "ok.yaml",
        "127.0.0.1",
        &format!("sslmode: verify-full, sslrootcert: \"file:{ca}\""),
    );
    let o = lab.w.run(&["run", &ok, "--yes"]);
    assert_eq!(o.code, 0, "the lab CA verifies the lab server: {o:?}");
    // The same as a DSN with sslrootcert=.
    let pw = lab.w.state().join("lab/pgpass").display().to_string();
    let dsn = lab.runbook(
        "dsn.yaml",
        &format!(
            "name: dsn\nsteps:\n  - id: q\n    action: postgres.query\n    with: {{server: {{dsn: \"postgresql://drctl@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={ca}\", password: \"file:{pw}\"}}, sql: select 1}}\n",
            port(&lab)
        ),
    );
    let o = lab.w.run(&["run", &dsn, "--yes"]);
    assert_eq!(o.code, 0, "{o:?}");

    // Another CA (a real one, just not the server's): refused, named.
    // A CA made the same way as the lab's, so only trust differs.
    let other = lab.w.path().join("other-ca");
    let other_crt = drctl_tests::block_on(drctl::lab::pg::create_ca(&other)).expect("another CA");
    let bad_ca = query_rb(
        &lab,
        "other.yaml",
        "127.0.0.1",
        &format!(
            "sslmode: verify-full, sslrootcert: \"file:{}\"",
            other_crt.display()
        ),
    );
    let o = lab.w.run(&["run", &bad_ca, "--yes"]);
    assert_eq!(o.code, 5, "{o:?}");
    let err = lab.error(&lab.last_run(), "q");
    assert!(
        err.contains("TLS certificate refused")
            && err.contains("not signed by a CA this server entry trusts"),
        "{err}"
    );

    // The right CA, the wrong name: the certificate names 127.0.0.1 only.
    let wrong_host = query_rb(
        &lab,
        "host.yaml",
        "localhost",
        &format!("sslmode: verify-full, sslrootcert: \"file:{ca}\""),
    );
    let o = lab.w.run(&["run", &wrong_host, "--yes"]);
    assert_eq!(o.code, 5, "{o:?}");
    let err = lab.error(&lab.last_run(), "q");
    assert!(
        err.contains("not valid for the host name `localhost`"),
        "{err}"
    );

    // A mapping without sslmode is verify-full: without the CA, refused.
    let default = query_rb(&lab, "default.yaml", "127.0.0.1", "connect_timeout: 3s");
    let o = lab.w.run(&["run", &default, "--yes"]);
    assert_eq!(o.code, 5, "{o:?}");
    let err = lab.error(&lab.last_run(), "q");
    assert!(err.contains("web PKI roots"), "{err}");
}

/// A server without TLS (the throwaway test server has `ssl = off`): asking
/// for `require` must fail, never fall back to plaintext as libpq's and
/// tokio-postgres's default `prefer` would.
#[test]
fn require_never_falls_back_to_plaintext() {
    let pg = drctl_tests::TestPg::start();
    let w = drctl_tests::Work::new();
    let plain = pg.url.clone();
    let tls = plain.replace("sslmode=disable", "sslmode=require");
    let rb = |name: &str, url: &str| {
        w.write(
            name,
            &format!("name: t\nsteps:\n  - id: q\n    action: postgres.query\n    with: {{server: \"{url}\", sql: select 1}}\n"),
        )
        .display()
        .to_string()
    };
    let ok = rb("plain.yaml", &plain);
    let o = w.run(&["run", &ok, "--yes"]);
    assert_eq!(
        o.code, 0,
        "the server answers in plaintext when asked to: {o:?}"
    );
    let strict = rb("tls.yaml", &tls);
    let o = w.run(&["run", &strict, "--yes"]);
    assert_eq!(
        o.code, 5,
        "require against a server without TLS must fail: {o:?}"
    );
    let err = w.step_error(&w.runs().pop().unwrap(), "q");
    assert!(
        err.contains("cannot connect") && err.to_lowercase().contains("tls"),
        "{err}"
    );
}
