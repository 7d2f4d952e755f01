//! Failback when the old primary recycled the WAL pg_rewind needs: the
//! real lab (PostgreSQL 15 pair; the primary archives WAL). After a kill -9
//! failover the old primary runs once more with `wal_keep_size = 0` and a
//! small `max_wal_size`, writes, switches WAL and checkpoints until the
//! segment holding the fork point is gone from its `pg_wal` (and kept in
//! the archive). Plain pg_rewind then fails ("could not open file"); the
//! failback rewinds with `-c` and a restore_command reading the archive,
//! and journals that path.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use drctl::lab::supervisor::LabState;
use drctl::postgres::PgServer;
use drctl_tests::{block_on, Lab};

fn state(lab: &Lab) -> LabState {
    drctl::lab::read_state(&lab.w.state().join("lab")).expect("lab.json")
}

fn server(st: &LabState, name: &str) -> PgServer {
    drctl::lab::pg::lab_server(st.ports[name], &st.spec.superuser, &st.spec)
}

async fn one_text(s: &PgServer, sql: &str) -> String {
    let c = s.connect(Duration::from_secs(5)).await.expect("connect");
    let r = c.query_one(sql, &[]).await.expect(sql);
    r.get(0)
}

/// `pg_rewind --dry-run` of the old primary from pg-dr, as the server user.
fn plain_rewind_dry_run(st: &LabState) -> std::process::Output {
    let who = drctl::lab::pg::run_as().expect("server user");
    let pw = std::fs::read_to_string(&st.spec.password_file).expect("password");
    let mut c =
        std::process::Command::new(drctl::lab::pg::bindir().expect("bindir").join("pg_rewind"));
    c.args(["--dry-run", "--target-pgdata"])
        .arg(st.data_root.join("primary"))
        .arg(format!(
            "--source-server=host=127.0.0.1 port={} user={} dbname=postgres sslmode=require sslcert=/nonexistent/cert",
            st.ports["pg-dr"], st.spec.superuser
        ))
        .env("PGPASSWORD", pw.trim())
        .current_dir("/");
    if who.drop {
        c.uid(who.uid).gid(who.gid);
    }
    c.output().expect("run pg_rewind")
}

#[test]
fn failback_rewinds_with_the_archive_when_the_old_primary_recycled_its_wal() {
    let lab = Lab::up();
    let st = state(&lab);
    let rb = drctl_tests::repo_root()
        .join("runbooks/failover.yaml")
        .display()
        .to_string();
    let env = lab.env();
    let d = lab
        .w
        .run(&["drill", &rb, "--env", &env, "--yes", "--inject-lag", "1s"]);
    assert_eq!(d.code, 0, "drill: {d:?}");

    let data = st.data_root.join("primary");
    let archive = drctl::lab::pg::wal_archive(&st.spec);
    let fork = block_on(async {
        let h = one_text(
            &server(&st, "pg-dr"),
            "select pg_read_file('pg_wal/00000002.history')",
        )
        .await;
        drctl::postgres::rewind::fork_of(&h, 1).expect("fork in the history")
    });
    let seg = drctl::postgres::rewind::segment_name(1, fork, 16 * 1024 * 1024).expect("segment");
    assert!(
        data.join("pg_wal").join(&seg).exists(),
        "{seg} still on the old primary"
    );

    // The old primary runs once more as a primary (someone restarted it:
    // a split brain, no longer the read-only standby the drill left) and
    // recycles its WAL past the fork.
    std::fs::remove_file(data.join("standby.signal")).expect("standby.signal");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.auto.conf"))
        .expect("auto.conf");
    writeln!(
        f,
        "wal_keep_size = 0\nmax_wal_size = 32MB\nmin_wal_size = 32MB"
    )
    .expect("append");
    drop(f);
    block_on(async {
        drctl::lab::control(&st.control, "POST", "/node/start?name=pg-primary")
            .await
            .expect("start the old primary");
        let s = server(&st, "pg-primary");
        let c = s.connect(Duration::from_secs(10)).await.expect("connect");
        c.batch_execute("create table wal_fill (x text)")
            .await
            .expect("create");
        for _ in 0..10 {
            c.batch_execute(
                "insert into wal_fill select repeat('x', 1000) from generate_series(1, 4000); select pg_switch_wal(); checkpoint;",
            )
            .await
            .expect("fill");
            if !data.join("pg_wal").join(&seg).exists() {
                break;
            }
        }
        drctl::lab::control(&st.control, "POST", "/node/stop?name=pg-primary")
            .await
            .expect("stop the old primary");
    });
    assert!(
        !data.join("pg_wal").join(&seg).exists(),
        "{seg} recycled on the old primary"
    );
    assert!(archive.join(&seg).exists(), "{seg} kept in the archive");

    // CHECKPOINT on the new primary first, as the failback does: without
    // it pg_rewind may read a pre-fork checkpoint and say "no rewind required".
    block_on(async {
        let c = server(&st, "pg-dr")
            .connect(Duration::from_secs(5))
            .await
            .expect("dr");
        c.batch_execute("checkpoint").await.expect("checkpoint");
    });
    let plain = plain_rewind_dry_run(&st);
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success() && err.contains("could not open file"),
        "plain pg_rewind fails on the missing WAL: {plain:?}"
    );

    let param = format!("extract_dir={}", lab.w.path().join("extracts").display());
    let fb = lab
        .w
        .run(&["failback", "latest", "--yes", "--param", &param]);
    assert_eq!(fb.code, 0, "failback: {fb:?}");
    let run = lab.last_run();
    drctl::journal::verify(&lab.w.journal_bytes(&run)).expect("journal verifies");
    let how = lab.outputs(&run, "rewind")["how"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        how.starts_with("rewound with pg_rewind -c")
            && how.contains("recycled")
            && how.contains(&archive.display().to_string()),
        "{how}"
    );
    block_on(async {
        let p = server(&st, "pg-primary");
        assert_eq!(
            one_text(&p, "select pg_is_in_recovery()::text").await,
            "false"
        );
        let c = server(&st, "pg-dr")
            .connect(Duration::from_secs(5))
            .await
            .expect("dr");
        let mut streaming = false;
        for _ in 0..100 {
            let r = c
                .query_opt("select status from pg_stat_wal_receiver", &[])
                .await
                .expect("receiver");
            if r.is_some_and(|r| r.get::<_, String>(0) == "streaming") {
                streaming = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(streaming, "pg-dr streams from the restored primary");
    });
}
