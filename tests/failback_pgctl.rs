//! Nodes outside the lab: a PostgreSQL 15 pair started by this test with
//! initdb, pg_basebackup and pg_ctl (no lab, no supervisor), declared in
//! the environment as `node: {kind: pg_ctl, data_dir, bin_dir}`. A
//! failover (kill -9 of the primary, promote), then `drctl failback latest`
//! rewinds and rejoins the old primary and switches back through pg_ctl,
//! then `drctl switchover --to dr` moves the primary again with no row
//! lost. Each ends with the other server streaming on the new timeline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use drctl::postgres::PgServer;
use drctl_tests::{block_on, Work};

const PW: &str = "s3cret-pw";

fn bin() -> PathBuf {
    drctl::lab::pg::bindir().expect("PostgreSQL bindir")
}

/// A command run as the server user (`postgres` when the test is root).
fn as_pg(prog: &Path) -> Command {
    let who = drctl::lab::pg::run_as().expect("server user");
    let mut c = Command::new(prog);
    if who.drop {
        use std::os::unix::process::CommandExt;
        c.uid(who.uid).gid(who.gid);
    }
    c.current_dir("/");
    c
}

fn ok(c: &mut Command) {
    let o = c.output().expect("spawn");
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The pair: stopped immediately and removed on drop.
struct Pair {
    dir: PathBuf,
    ports: [u16; 2],
}

impl Drop for Pair {
    fn drop(&mut self) {
        for d in ["primary", "dr"] {
            let _ = as_pg(&bin().join("pg_ctl"))
                .args(["-D"])
                .arg(self.dir.join(d))
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pair {
    fn start() -> Pair {
        let dir = PathBuf::from(format!(
            "/tmp/drctl-pgctl-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let who = drctl::lab::pg::run_as().expect("server user");
        drctl::lab::pg::chown(&dir, who).expect("chown");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PW).expect("pw");
        drctl::lab::pg::chown(&pwfile, who).expect("chown pw");
        let ports = [
            drctl::lab::pg::free_port().expect("port"),
            drctl::lab::pg::free_port().expect("port"),
        ];
        let p = Pair { dir, ports };
        let primary = p.dir.join("primary");
        ok(as_pg(&bin().join("initdb"))
            .arg("-D")
            .arg(&primary)
            .args(["-U", "postgres", "--auth=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display())));
        let conf = |port: u16| {
            format!("port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\nwal_log_hints = on\nhot_standby = on\nmax_wal_senders = 10\nwal_keep_size = 64MB\nshared_buffers = 16MB\n", p.dir.display())
        };
        append(&primary.join("postgresql.conf"), &conf(ports[0]));
        p.pg_ctl("primary", &["start", "-w", "-l"], Some("primary.log"));
        let dr = p.dir.join("dr");
        ok(as_pg(&bin().join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &ports[0].to_string(),
                "-U",
                "postgres",
                "-D",
            ])
            .arg(&dr)
            .args(["-R", "-X", "stream", "-c", "fast"])
            .env("PGPASSWORD", PW));
        append(
            &dr.join("postgresql.auto.conf"),
            &format!(
                "port = {}\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres password={PW} application_name=dr'\n",
                ports[1], ports[0]
            ),
        );
        p.pg_ctl("dr", &["start", "-w", "-l"], Some("dr.log"));
        p
    }

    fn pg_ctl(&self, node: &str, args: &[&str], log: Option<&str>) {
        let mut c = as_pg(&bin().join("pg_ctl"));
        c.arg("-D").arg(self.dir.join(node)).args(args);
        if let Some(l) = log {
            c.arg(self.dir.join(l));
        }
        ok(&mut c);
    }

    fn server(&self, i: usize) -> PgServer {
        PgServer {
            host: "127.0.0.1".into(),
            port: self.ports[i],
            dbname: "postgres".into(),
            user: "postgres".into(),
            password: Some(drctl::secret::SecretRef::File(self.dir.join("pw"))),
            sslmode: drctl::postgres::conn::SslMode::Disable,
            sslrootcert: None,
            connect_timeout: Duration::from_secs(2),
        }
    }

    fn env(&self, w: &Work) -> String {
        let region = |name: &str, i: usize| {
            format!(
                "  {name}:\n    postgres: {{host: 127.0.0.1, port: {}, dbname: postgres, user: postgres, password: \"file:{}\", sslmode: disable}}\n    node: {{kind: pg_ctl, data_dir: \"{}\", bin_dir: \"{}\", log_file: \"{}\"}}\n",
                self.ports[i],
                self.dir.join("pw").display(),
                self.dir.join(name).display(),
                bin().display(),
                self.dir.join(format!("{name}.log")).display()
            )
        };
        w.write(
            "env.yaml",
            &format!(
                "name: ext\nactive_region: primary\nregions:\n{}{}",
                region("primary", 0),
                region("dr", 1)
            ),
        )
        .display()
        .to_string()
    }
}

fn append(p: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p)
        .expect("open");
    f.write_all(text.as_bytes()).expect("append");
}

/// `(in_recovery, receiver status, received_tli, rows in t)`.
async fn role(s: &PgServer) -> (bool, Option<String>, Option<i32>, i64) {
    let c = s.connect(Duration::from_secs(5)).await.expect("connect");
    // A standby that has not replayed `create table` yet: -1 rows.
    match c
        .query_one(
            "select pg_is_in_recovery(), (select status from pg_stat_wal_receiver), (select received_tli from pg_stat_wal_receiver), (select count(*) from t)",
            &[],
        )
        .await
    {
        Ok(r) => (r.get(0), r.get(1), r.get(2), r.get(3)),
        Err(_) => (true, None, None, -1),
    }
}

/// `primary` takes writes, `standby` streams from it on its timeline
/// with every row.
async fn settled(primary: &PgServer, standby: &PgServer) -> i64 {
    let p = role(primary).await;
    assert!(!p.0, "{} is the primary", primary.addr());
    let c = primary
        .connect(Duration::from_secs(5))
        .await
        .expect("primary");
    let tli: i64 = c
        .query_one(
            "select timeline_id::bigint from pg_control_checkpoint()",
            &[],
        )
        .await
        .expect("tli")
        .get(0);
    for _ in 0..100 {
        let s = role(standby).await;
        if s.0 && s.1.as_deref() == Some("streaming") && s.2 == Some(tli as i32) && s.3 == p.3 {
            return p.3;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} does not stream timeline {tli}: {:?}",
        standby.addr(),
        role(standby).await
    );
}

/// A shipped runbook without its smoke check and notification (this
/// environment has no app to ask).
fn trimmed(w: &Work, name: &str) -> String {
    let text = std::fs::read_to_string(drctl_tests::repo_root().join("runbooks").join(name))
        .expect("runbook");
    let cut = text.find("\n  - id: smoke").expect("smoke step");
    let mut t = text[..cut].to_string();
    t.push('\n');
    w.write(name, &t).display().to_string()
}

#[test]
fn failback_and_switchover_drive_servers_outside_the_lab_with_pg_ctl() {
    let pair = Pair::start();
    let w = Work::new();
    let env = pair.env(&w);
    let (p, d) = (pair.server(0), pair.server(1));
    block_on(async {
        let c = p.connect(Duration::from_secs(5)).await.expect("primary");
        c.batch_execute(
            "create table t (id bigint primary key); insert into t select generate_series(1, 100)",
        )
        .await
        .expect("rows");
        assert_eq!(settled(&p, &d).await, 100);
    });
    let v = w.run(&["validate", &env]);
    assert_eq!(v.code, 0, "the node: section validates: {v:?}");

    // Failover: the primary dies (kill -9), dr is promoted.
    pair.pg_ctl("primary", &["-m", "immediate", "-w", "stop"], None);
    let fo = w.write(
        "failover.yaml",
        "name: failover\nsteps:\n  - id: promote\n    action: postgres.promote\n    timeout: 60s\n    with:\n      server: \"${target.postgres}\"\n      old_primary: \"${source.postgres}\"\n      max_lag: 30s\n",
    );
    // No heartbeat writer here, so the lag cannot be measured: the
    // failover accepts that (journaled).
    let o = w.run(&[
        "run",
        &fo.display().to_string(),
        "--env",
        &env,
        "--region",
        "dr",
        "--yes",
        "--accept-data-loss",
    ]);
    assert_eq!(o.code, 0, "failover: {o:?}");
    block_on(async {
        let c = d.connect(Duration::from_secs(5)).await.expect("dr");
        c.batch_execute("insert into t select generate_series(101, 150)")
            .await
            .expect("write on dr");
    });

    // Failback, beside the failover runbook: rewind, rejoin, switch back.
    trimmed(&w, "failback.yaml");
    let extract = format!("extract_dir={}", w.path().join("extracts").display());
    let fb = w.run(&["failback", "latest", "--yes", "--param", &extract]);
    assert_eq!(fb.code, 0, "failback: {fb:?}");
    let run = w.runs().pop().expect("run");
    let journal = serde_json::to_string(&w.journal(&run)).expect("journal");
    assert!(
        journal.contains("region:primary") && journal.contains("region:dr"),
        "the run drives the environment's pg_ctl nodes"
    );
    let how = w.outputs(&run, "rewind")["how"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(how.starts_with("rewound with pg_rewind"), "{how}");
    block_on(async {
        assert_eq!(settled(&p, &d).await, 150, "back on primary, every row");
    });

    // A planned switchover to dr through pg_ctl, no row lost.
    let so = trimmed(&w, "switchover.yaml");
    let s = w.run(&[
        "switchover",
        "--to",
        "dr",
        "--env",
        &env,
        "--runbook",
        &so,
        "--yes",
    ]);
    assert_eq!(s.code, 0, "switchover: {s:?}");
    block_on(async {
        assert_eq!(settled(&d, &p).await, 150, "dr primary, primary streaming");
        let c = d.connect(Duration::from_secs(5)).await.expect("dr");
        c.batch_execute("insert into t values (151)")
            .await
            .expect("dr takes writes");
    });
}
