//! `drctl verify-backup` against real PostgreSQL 15: each test starts its
//! own primary with WAL archiving on a free loopback port (data in a temp
//! dir the server user owns), takes real backups with `pg_basebackup` and
//! `pg_dump`, and damages them the way backups break: a flipped byte, a
//! missing WAL segment in the middle of the archive, a target time beyond
//! it. Metrics go to a real `prometheus-pushgateway` on loopback.

#[path = "backup_common.rs"]
#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use drctl_tests::prom::Pushgateway;
use drctl_tests::{processes_in, repo_root, wait_until};

#[test]
fn a_good_backup_verifies_its_metrics_arrive_and_the_archive_is_untouched() {
    let p = Primary::start();
    let (backup, _) = workload(&p, "t");
    let w = work();
    let env = p.env(&w, "env.yaml", &base_source("nightly", &backup, &p.archive));
    let gw = Pushgateway::start();
    let before = (tree_hash(&p.archive), tree_hash(&backup));
    let textfile = w.path().join("metrics/backup.prom");
    let o = verify(
        &w,
        &env,
        &[
            "--pushgateway",
            &gw.url,
            "--metrics-textfile",
            &textfile.display().to_string(),
            "--full-read",
        ],
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        (tree_hash(&p.archive), tree_hash(&backup)),
        before,
        "archive and backup byte-identical"
    );
    let run = w.runs().pop().unwrap();
    let out = w.outputs(&run, "verify");
    let s = &out["sources"][0];
    assert_eq!(s["recovered_heartbeat_id"], 40, "{s}");
    assert_eq!(s["rpo_gap_rows"], 0, "{s}");
    assert_eq!(s["rpo_gap_bytes"], 0, "{s}");
    for k in [
        "fetch_ms",
        "verifybackup_ms",
        "start_to_consistent_ms",
        "replay_promote_ms",
        "restore_ms",
        "backup_age_s",
        "recovery_point_age_s",
    ] {
        assert!(s[k].as_f64().is_some(), "{k} measured: {s}");
    }
    let checks: Vec<&str> = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        ["pg_verifybackup", "pg_amcheck", "pg_dump", "pg_checksums"],
        "{s}"
    );
    assert!(
        s["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{s}"
    );
    assert!(
        o.stderr.contains("backup `nightly` (basebackup): verified"),
        "{o:?}"
    );
    // The metrics, read back from the Pushgateway and the textfile.
    let l = ["environment=\"t\"", "source=\"nightly\""];
    assert_eq!(gw.value("drctl_backup_verify_success", &l), Some(1.0));
    let ts = gw
        .value("drctl_backup_verify_last_success_timestamp_seconds", &l)
        .expect("success timestamp");
    assert!(ts > 1.7e9, "{ts}");
    assert!(gw
        .value("drctl_backup_restore_duration_seconds", &l)
        .is_some_and(|v| v > 0.0));
    assert!(gw.value("drctl_backup_age_seconds", &l).is_some());
    assert!(gw.value("drctl_backup_rpo_gap_seconds", &l).is_some());
    assert_eq!(
        gw.value("drctl_backup_check_failed", &["check=\"pg_amcheck\"", l[1]]),
        Some(0.0)
    );
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        text.contains("drctl_backup_verify_success{environment=\"t\",source=\"nightly\"} 1"),
        "{text}"
    );
    assert_scratch_clean(&w);

    // The same source with a segment missing from the middle of its
    // archive (a copy of it): PostgreSQL recovers up to the gap and
    // promotes; drctl says it restored an old point and keeps the last
    // success timestamp in the Pushgateway (push-add).
    let holed = p.root.join("archive-holed");
    p.as_server(
        Path::new("cp"),
        &[
            "-a",
            &p.archive.display().to_string(),
            &holed.display().to_string(),
        ],
    );
    let mut segs: Vec<String> = std::fs::read_dir(&holed)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.len() == 24)
        .collect();
    segs.sort();
    let missing = &segs[segs.len() - 3];
    std::fs::remove_file(holed.join(missing)).unwrap();
    let env2 = p.env(
        &w,
        "env-holed.yaml",
        &base_source("nightly", &backup, &holed),
    );
    let o = verify(&w, &env2, &["--pushgateway", &gw.url]);
    assert_eq!(o.code, 31, "restored to an old point: {o:?}");
    let err = w.step_error(&w.runs().pop().unwrap(), "verify");
    assert!(
        err.contains("[DRCTL-B31] restored to an old point"),
        "{err}"
    );
    assert!(
        err.contains(&format!("the archive has no segment {missing}")),
        "{err}"
    );
    assert!(
        err.contains("newest recovered heartbeat row 25, 15 rows behind the primary"),
        "{err}"
    );
    assert_eq!(gw.value("drctl_backup_verify_success", &l), Some(0.0));
    assert_eq!(
        gw.value("drctl_backup_verify_last_success_timestamp_seconds", &l),
        Some(ts),
        "a failure keeps the last success timestamp"
    );
    assert_eq!(
        gw.value(
            "drctl_backup_check_failed",
            &["check=\"recovery_point\"", l[1]]
        ),
        Some(1.0)
    );
    assert!(gw
        .value("drctl_backup_rpo_gap_seconds", &l)
        .is_some_and(|v| v > 0.0));
    assert_scratch_clean(&w);
}

#[test]
fn a_flipped_byte_in_a_data_file_fails_naming_the_file() {
    let p = Primary::start();
    let (backup, _) = workload(&p, "p");
    let rel = p.sql("select pg_relation_filepath('drctl_heartbeat')");
    let file = backup.join(&rel);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[200] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let w = work();
    let env = p.env(&w, "env.yaml", &base_source("plain", &backup, &p.archive));
    let o = verify(&w, &env, &[]);
    assert_eq!(o.code, 32, "{o:?}");
    let err = w.step_error(&w.runs().pop().unwrap(), "verify");
    assert!(err.contains("check pg_verifybackup failed"), "{err}");
    assert!(err.contains(&rel), "names the file {rel}: {err}");
    assert_scratch_clean(&w);
}

#[test]
fn a_target_time_beyond_the_archive_is_a_clear_error_and_one_inside_it_restores() {
    let p = Primary::start();
    let (backup, _) = workload(&p, "t");
    let w = work();
    let env = p.env(&w, "env.yaml", &base_source("nightly", &backup, &p.archive));
    let o = verify(&w, &env, &["--target-time", "2099-01-01T00:00:00Z"]);
    assert_eq!(o.code, 30, "{o:?}");
    let err = w.step_error(&w.runs().pop().unwrap(), "verify");
    assert!(
        err.contains("the target time 2099-01-01T00:00:00Z lies beyond the archive"),
        "{err}"
    );
    assert_scratch_clean(&w);
    // A time between heartbeats 30 and 31: commit times are later than a
    // row's clock_timestamp(), so take row 31's stamp as the bound.
    let t = p.sql("select to_char(at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') from drctl_heartbeat where id = 31");
    let o = verify(&w, &env, &["--target-time", &t]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = w.outputs(&w.runs().pop().unwrap(), "verify");
    assert_eq!(out["sources"][0]["recovered_heartbeat_id"], 30, "{out}");
}

#[test]
fn a_pg_dump_archive_restores_and_its_row_counts_are_asserted() {
    let p = Primary::start();
    p.heartbeats(1, 40);
    let dump = p.root.join("backups/app.dump");
    p.as_server(
        &p.bin.join("pg_dump"),
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p.port.to_string(),
            "-U",
            "postgres",
            "-Fc",
            "-f",
            &dump.display().to_string(),
            "postgres",
        ],
    );
    let w = work();
    let set = |n: u32| {
        format!(
            "name: rows\nchecks:\n  - id: heartbeat-rows\n    action: postgres.query\n    with: {{server: \"${{vars.postgres}}\", sql: select count(*) from drctl_heartbeat, equals: {n}}}\n"
        )
    };
    let good = w.write("rows.yaml", &set(40));
    let bad = w.write("rows-bad.yaml", &set(41));
    let src = |f: &Path| {
        format!("      dump: {{kind: pg_dump, dump_file: \"{}\", superuser: postgres, check_set: \"{}\"}}\n", dump.display(), f.display())
    };
    let env = p.env(&w, "env.yaml", &src(&good));
    let o = verify(&w, &env, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = w.outputs(&w.runs().pop().unwrap(), "verify");
    let checks = out["sources"][0]["checks"].to_string();
    assert!(checks.contains("1 checks passed"), "{checks}");
    let env = p.env(&w, "env-bad.yaml", &src(&bad));
    let o = verify(&w, &env, &[]);
    assert_eq!(o.code, 32, "{o:?}");
    let err = w.step_error(&w.runs().pop().unwrap(), "verify");
    assert!(
        err.contains("heartbeat-rows") && err.contains("expected 41"),
        "{err}"
    );
    assert_scratch_clean(&w);
}

#[test]
fn kill_9_during_the_restore_leaves_no_running_server_after_cleanup_or_the_next_run() {
    let p = Primary::start();
    let (backup, _) = workload(&p, "t");
    let w = work();
    let env = p.env(&w, "env.yaml", &base_source("nightly", &backup, &p.archive));
    let rb = repo_root()
        .join("runbooks/verify-backups.yaml")
        .display()
        .to_string();
    let scratch = w.state().join("scratch");
    for round in 0..2 {
        let mut child = w
            .cmd(&[
                "verify-backup",
                "--env",
                &env,
                "--runbook",
                &rb,
                "--full-read",
                "--heapallindexed",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut data: Option<PathBuf> = None;
        let up = wait_until(Duration::from_secs(60), || {
            for e in std::fs::read_dir(&scratch).into_iter().flatten().flatten() {
                let d = e.path().join("data");
                if !processes_in(&d).is_empty() {
                    data = Some(d);
                    return true;
                }
            }
            false
        });
        assert!(up, "the scratch server started");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let data = data.unwrap();
        assert!(
            !processes_in(&data).is_empty(),
            "the scratch server outlived drctl (what must be cleaned up)"
        );
        if round == 0 {
            let o = w.run(&["verify-backup", "--cleanup"]);
            assert_eq!(o.code, 0, "{o:?}");
            assert!(
                o.stdout
                    .contains("removed 1 leftover(s), killed 1 server(s)"),
                "{o:?}"
            );
        } else {
            let o = verify(&w, &env, &[]);
            assert_eq!(o.code, 0, "{o:?}");
            let out = w.outputs(&w.runs().pop().unwrap(), "verify");
            assert_eq!(
                out["leftovers_removed"].as_array().map(Vec::len),
                Some(1),
                "{out}"
            );
        }
        assert!(processes_in(&data).is_empty(), "no server left running");
        assert!(!data.exists());
        assert_scratch_clean(&w);
    }
}

#[test]
fn a_pgbackrest_backup_restores_to_the_repositorys_newest_segment() {
    let p = Primary::start();
    let conf = p.root.join("pgbackrest.conf");
    let r = p.root.display();
    let text = format!(
        "[global]\nrepo1-path={r}/pgbr\nlog-path={r}/pgbr-log\nlock-path={r}/pgbr-lock\nlog-level-file=off\nstart-fast=y\narchive-timeout=30\n\
         [main]\npg1-path={r}/data\npg1-port={}\npg1-socket-path={r}\npg1-user=postgres\n",
        p.port
    );
    std::fs::write(&conf, text).unwrap();
    p.as_server(
        Path::new("mkdir"),
        &[
            &format!("{r}/pgbr"),
            &format!("{r}/pgbr-log"),
            &format!("{r}/pgbr-lock"),
        ],
    );
    let c = conf.display().to_string();
    p.sql(&format!("alter system set archive_command = 'pgbackrest --config={c} --stanza=main archive-push %p'"));
    p.sql("select pg_reload_conf()");
    let br = |args: &[&str]| {
        let mut a = vec![format!("--config={c}"), "--stanza=main".to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        p.as_server(Path::new("pgbackrest"), &a)
    };
    br(&["stanza-create"]);
    p.heartbeats(1, 20);
    br(&["--type=full", "backup"]);
    for k in 0..3 {
        p.heartbeats(21 + 5 * k, 25 + 5 * k);
        let seg = p.sql("select pg_walfile_name(pg_switch_wal())");
        p.wait_archived(&seg);
    }
    let w = work();
    let src = format!("      br: {{kind: pgbackrest, stanza: main, pgbackrest_config: \"{c}\", superuser: postgres}}\n");
    let env = p.env(&w, "env.yaml", &src);
    let before = tree_hash(&p.root.join("pgbr"));
    let o = verify(&w, &env, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        tree_hash(&p.root.join("pgbr")),
        before,
        "the repository is only read"
    );
    let out = w.outputs(&w.runs().pop().unwrap(), "verify");
    let s = &out["sources"][0];
    assert_eq!(s["recovered_heartbeat_id"], 35, "{s}");
    assert_eq!(s["rpo_gap_bytes"], 0, "{s}");
    assert!(
        s["expected_method"]
            .as_str()
            .unwrap()
            .contains("pgbackrest info"),
        "{s}"
    );
    assert!(s["backup_label"].as_str().unwrap().ends_with('F'), "{s}");
    assert_scratch_clean(&w);
}

/// The lab archives WAL from `lab up` and takes backups, so a fresh lab
/// verifies with nothing but its own environment file.
#[test]
fn a_fresh_lab_archives_wal_and_its_backup_verifies() {
    use std::os::unix::fs::PermissionsExt;
    let lab = drctl_tests::Lab::up();
    // The scratch area sits in the lab's state dir (a temp dir is 0700).
    std::fs::set_permissions(lab.w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = verify(&lab.w, &lab.env(), &[]);
    assert_eq!(o.code, 34, "no backup yet: {o:?}");
    assert!(
        o.stderr.contains("drctl lab backup"),
        "the hint names it: {o:?}"
    );
    let o = lab.w.run(&["lab", "backup"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("base backup of pg-primary"), "{o:?}");
    let o = verify(&lab.w, &lab.env(), &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = lab.w.outputs(&lab.w.runs().pop().unwrap(), "verify");
    let s = &out["sources"][0];
    assert_eq!(s["source"], "lab");
    assert!(
        s["recovered_heartbeat_id"]
            .as_i64()
            .is_some_and(|id| id > 0),
        "{s}"
    );
    assert!(
        s["rpo_gap_rows"].as_i64().is_some(),
        "measured against the lab primary: {s}"
    );
    assert_eq!(s["rpo_gap_bytes"], 0, "{s}");
    let standby = lab.w.outputs(&lab.w.runs().pop().unwrap(), "standby");
    assert_eq!(standby["role"], "standby", "{standby}");
}

/// A scratch area too small for the backup is a clear error before
/// anything is written (a 2 MiB tmpfs against a ~30 MiB backup).
#[test]
fn a_backup_that_does_not_fit_is_refused_before_anything_is_written() {
    let p = Primary::start();
    let (backup, _) = workload(&p, "t");
    let w = work();
    let env = p.env(&w, "env.yaml", &base_source("nightly", &backup, &p.archive));
    let small = w.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let m = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount (the tests run as root)");
    assert!(m.success(), "mount a 2 MiB tmpfs");
    let o = verify(&w, &env, &["--scratch", &small.display().to_string()]);
    let listed: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let _ = Command::new("umount").arg(&small).status();
    assert_eq!(o.code, 34, "{o:?}");
    let err = w.step_error(&w.runs().pop().unwrap(), "verify");
    assert!(
        err.contains("not enough disk for the restore") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(listed.is_empty(), "nothing written: {listed:?}");
}

/// `drctl lab backup --kind pgbackrest` on a fresh lab: a stanza and a full
/// backup through the lab primary's socket, WAL pushed to the repository,
/// the source added to the lab's environment file, and verify-backup
/// restores it to the repository's newest segment. The basebackup source
/// keeps working beside it (its archive is still filled).
#[test]
fn a_fresh_lab_takes_a_pgbackrest_backup_and_it_verifies() {
    use std::os::unix::fs::PermissionsExt;
    let lab = drctl_tests::Lab::up();
    std::fs::set_permissions(lab.w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = lab.w.run(&["lab", "backup", "--kind", "pgbackrest"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout
            .contains("pgbackrest full backup of pg-primary: stanza lab"),
        "{o:?}"
    );
    let env = std::fs::read_to_string(lab.env()).unwrap();
    assert_eq!(env.matches("lab-pgbackrest:").count(), 1, "{env}");
    let o = verify(&lab.w, &lab.env(), &["--source", "lab-pgbackrest"]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = lab.w.outputs(&lab.w.runs().pop().unwrap(), "verify");
    let s = &out["sources"][0];
    assert_eq!(s["source"], "lab-pgbackrest", "{s}");
    assert_eq!(s["kind"], "pgbackrest", "{s}");
    assert!(s["backup_label"].as_str().unwrap().ends_with('F'), "{s}");
    assert!(
        s["expected_method"]
            .as_str()
            .unwrap()
            .contains("pgbackrest info"),
        "{s}"
    );
    assert!(
        s["recovered_heartbeat_id"]
            .as_i64()
            .is_some_and(|id| id > 0),
        "{s}"
    );
    // A second backup: the stanza exists, the push is set; the env file
    // names the source once.
    let o = lab.w.run(&["lab", "backup", "--kind", "pgbackrest"]);
    assert_eq!(o.code, 0, "{o:?}");
    let env = std::fs::read_to_string(lab.env()).unwrap();
    assert_eq!(env.matches("lab-pgbackrest:").count(), 1, "{env}");
    // Both kinds verify together.
    let o = lab.w.run(&["lab", "backup"]);
    assert_eq!(o.code, 0, "{o:?}");
    let o = verify(&lab.w, &lab.env(), &[]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = lab.w.outputs(&lab.w.runs().pop().unwrap(), "verify");
    assert_eq!(out["sources"].as_array().map(Vec::len), Some(2), "{out}");
}
