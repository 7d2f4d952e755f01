//! Direction and identity checks on the real lab: a failover onto the
//! active region, or onto a region whose database is the source's own
//! server under another name, is refused before step 1, and no server is
//! touched.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use drctl_tests::Lab;

/// `select …` on a lab server through psql (TLS, the lab's password).
fn psql(lab: &Lab, port: u64, sql: &str) -> String {
    let pass = std::fs::read_to_string(lab.w.state().join("lab/pgpass")).unwrap();
    let o = Command::new("psql")
        .args([
            &format!("host=127.0.0.1 port={port} user=drctl dbname=postgres sslmode=require"),
            "-Atc",
            sql,
        ])
        .env("PGPASSWORD", pass.trim())
        .output()
        .expect("psql");
    assert!(o.status.success(), "psql: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn ports(lab: &Lab) -> (u64, u64) {
    let env = std::fs::read_to_string(lab.env()).unwrap();
    let port = |region: &str| -> u64 {
        let line = env
            .lines()
            .skip_while(|l| l.trim() != format!("{region}:"))
            .find(|l| l.contains("postgres:"))
            .unwrap();
        let p = line.split("port: ").nth(1).unwrap();
        p.split(',').next().unwrap().trim().parse().unwrap()
    };
    (port("primary"), port("dr"))
}

/// Nothing changed: the primary still takes writes, the standby still
/// replays, and no run was journaled.
fn untouched(lab: &Lab) {
    let (p, d) = ports(lab);
    assert_eq!(psql(lab, p, "select pg_is_in_recovery()"), "f");
    assert_eq!(psql(lab, p, "show default_transaction_read_only"), "off");
    assert_eq!(psql(lab, d, "select pg_is_in_recovery()"), "t");
    assert!(lab.w.runs().is_empty(), "a run was started");
}

#[test]
fn failover_onto_the_active_region_is_refused() {
    let lab = Lab::up();
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    for cmd in [
        vec!["failover", "--region", "primary", "--yes"],
        vec!["plan", rb.to_str().unwrap(), "--region", "primary"],
    ] {
        let mut args = cmd.clone();
        let env = lab.env();
        args.extend(["--env", &env]);
        if cmd[0] == "failover" {
            args.extend(["--runbook", rb.to_str().unwrap()]);
        }
        let o = lab.w.run(&args);
        assert_eq!(o.code, 3, "{cmd:?}: {o:?}");
        assert!(
            o.stderr
                .contains("`primary` is already the active region of environment `lab`"),
            "{o:?}"
        );
        assert!(o.stderr.contains("did you mean `--region dr`?"), "{o:?}");
        assert!(!o.stdout.contains("Fail over from"), "{o:?}");
    }
    untouched(&lab);
}

/// Forwards every connection on a loopback port to `to`: the primary
/// under another address, as a load balancer or a stale DNS name would.
fn alias(to: u64) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let Ok(up) = TcpStream::connect(("127.0.0.1", to as u16)) else {
                continue;
            };
            let pipe = |mut a: TcpStream, mut b: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = a.read(&mut buf) {
                        if n == 0 || b.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = b.shutdown(std::net::Shutdown::Both);
                });
            };
            pipe(c.try_clone().unwrap(), up.try_clone().unwrap());
            pipe(up, c);
        }
    });
    port
}

#[test]
fn a_target_that_is_the_source_server_under_another_name_is_refused() {
    let lab = Lab::up();
    let (p, d) = ports(&lab);
    let env = std::fs::read_to_string(lab.env()).unwrap();
    let rb = drctl_tests::repo_root().join("runbooks/failover.yaml");
    let try_env = |text: String, why: &str| {
        let f = lab.w.write("aliased.yaml", &text);
        let o = lab.w.run(&[
            "failover",
            "--region",
            "dr",
            "--yes",
            "--env",
            f.to_str().unwrap(),
            "--runbook",
            rb.to_str().unwrap(),
        ]);
        assert_eq!(o.code, 3, "{why}: {o:?}");
        assert!(
            o.stderr
                .contains("`postgres` of region `primary` and of region `dr` are the same server"),
            "{why}: {o:?}"
        );
        assert!(o.stderr.contains(why), "{why}: {o:?}");
        untouched(&lab);
    };
    // The same address written in both regions.
    try_env(
        env.replace(&format!("port: {d},"), &format!("port: {p},")),
        &format!("both are 127.0.0.1:{p}"),
    );
    // Another host name for the same address.
    let dr_line = |host: &str, port: u64| {
        env.replacen(
            &format!("host: 127.0.0.1, port: {d},"),
            &format!("host: {host}, port: {port},"),
            1,
        )
    };
    try_env(dr_line("localhost", p), "both resolve to 127.0.0.1");
    // Another address entirely, forwarded to the primary: only the server
    // itself can tell (same system identifier and start time).
    let via = alias(p);
    try_env(
        dr_line("127.0.0.1", u64::from(via)),
        "answer as one server: system identifier",
    );
}
