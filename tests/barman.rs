//! `drctl verify-backup` of a real Barman (Debian `barman` 3.4) catalogue:
//! each test starts its own PostgreSQL 15 primary, a Barman server in a
//! temp dir (`backup_method = postgres`, `archiver = on` with the
//! primary's `archive_command` feeding Barman's incoming directory), takes
//! a real `barman backup`, and damages the catalogue the way it breaks: a
//! flipped byte in a backed-up data file, a WAL segment lost from the
//! `wals` directory, a segment the catalogue no longer lists.

#[path = "backup_common.rs"]
#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// A Barman server `pg` backing up `p`, run as root (`barman_user = root`).
struct Barman {
    conf: PathBuf,
    home: PathBuf,
}

impl Barman {
    fn new(p: &Primary) -> Barman {
        let r = p.root.display().to_string();
        let home = p.root.join("barman");
        let incoming = home.join("pg/incoming");
        std::fs::create_dir_all(&incoming).unwrap();
        std::fs::create_dir_all(p.root.join("barman.d")).unwrap();
        // The server user's archive_command writes into incoming.
        std::os::unix::fs::chown(&incoming, Some(p.uid), Some(p.gid)).unwrap();
        let conf = p.root.join("barman.conf");
        std::fs::write(
            &conf,
            format!(
                "[barman]\nbarman_home = {h}\nbarman_user = root\nlog_file = {r}/barman.log\nlog_level = INFO\n\
                 configuration_files_directory = {r}/barman.d\n\
                 [pg]\ndescription = drctl test\nconninfo = host={r} port={port} user=postgres dbname=postgres\n\
                 streaming_conninfo = host={r} port={port} user=postgres\nbackup_method = postgres\narchiver = on\nstreaming_archiver = off\n",
                h = home.display(),
                port = p.port
            ),
        )
        .unwrap();
        let i = incoming.display();
        p.sql(&format!(
            "alter system set archive_command = 'test ! -f {i}/%f && cp %p {i}/%f'"
        ));
        p.sql("select pg_reload_conf()");
        Barman { conf, home }
    }

    fn run(&self, args: &[&str]) -> String {
        let o = Command::new("barman")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("barman (scripts/install-deps.sh)");
        assert!(
            o.status.success(),
            "barman {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Closes the current segment and waits until Barman has it in its
    /// catalogue.
    fn switch_wal(&self) {
        self.run(&[
            "switch-wal",
            "--force",
            "--archive",
            "--archive-timeout",
            "60",
            "pg",
        ]);
    }

    fn wals(&self) -> PathBuf {
        self.home.join("pg/wals")
    }

    fn base(&self) -> PathBuf {
        self.home.join("pg/base")
    }

    fn source(&self) -> String {
        format!(
            "      bm: {{kind: barman, server: pg, barman_config: \"{}\", superuser: postgres, max_age: 1h}}\n",
            self.conf.display()
        )
    }
}

/// Heartbeats 1-20 before the backup, 21-35 after it in three segments.
fn barman_workload(p: &Primary) -> Barman {
    let b = Barman::new(p);
    b.switch_wal();
    p.heartbeats(1, 20);
    b.run(&["backup", "--wait", "--wait-timeout", "60", "pg"]);
    for k in 0..3 {
        p.heartbeats(21 + 5 * k, 25 + 5 * k);
        b.switch_wal();
    }
    b
}

/// The segment holding heartbeats 21-25 (the first after the backup).
fn first_after_backup(b: &Barman) -> (String, PathBuf) {
    let v: serde_json::Value =
        serde_json::from_str(&b.run(&["-f", "json", "show-backup", "pg", "latest"])).unwrap();
    let end = v["pg"]["base_backup_information"]["end_wal"]
        .as_str()
        .unwrap()
        .to_string();
    let mut segs: Vec<PathBuf> = std::fs::read_dir(b.wals())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .collect();
    segs.sort();
    let next = segs
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().as_ref() > end.as_str())
        .expect("a segment after the backup");
    (
        next.file_name().unwrap().to_string_lossy().to_string(),
        next,
    )
}

#[test]
fn a_barman_backup_restores_to_the_catalogues_newest_segment_and_the_catalogue_is_untouched() {
    let p = Primary::start();
    let b = barman_workload(&p);
    let w = work();
    let env = p.env(&w, "env.yaml", &b.source());
    let before = (tree_hash(&b.base()), tree_hash(&b.wals()));
    let o = verify(&w, &env, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        (tree_hash(&b.base()), tree_hash(&b.wals())),
        before,
        "Barman's backups and WAL are only read"
    );
    let out = w.outputs(&w.runs().pop().unwrap(), "verify");
    let s = &out["sources"][0];
    assert_eq!(s["kind"], "barman", "{s}");
    assert_eq!(s["recovered_heartbeat_id"], 35, "{s}");
    assert_eq!(s["rpo_gap_bytes"], 0, "{s}");
    assert!(
        s["expected_method"]
            .as_str()
            .unwrap()
            .contains("barman show-backup"),
        "{s}"
    );
    let checks = s["checks"].to_string();
    assert!(
        checks.contains("manifest matches") && checks.contains("pg_amcheck"),
        "pg_verifybackup ran against Barman's manifest: {checks}"
    );
    assert!(s["backup_age_s"].as_f64().is_some_and(|a| a < 600.0), "{s}");
    assert_scratch_clean(&w);
    // The primary archived nothing from the restored copy: Barman's
    // incoming directory is empty after its cron.
    b.run(&["archive-wal", "pg"]);
    assert_eq!(
        std::fs::read_dir(b.home.join("pg/incoming"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_flipped_byte_in_a_barman_backup_fails_naming_the_file() {
    let p = Primary::start();
    let b = barman_workload(&p);
    let id = std::fs::read_dir(b.base())
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    let rel = p.sql("select pg_relation_filepath('drctl_heartbeat')");
    let f = id.path().join("data").join(&rel);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let w = work();
    let env = p.env(&w, "env.yaml", &b.source());
    let o = verify(&w, &env, &[]);
    assert_eq!(o.code, 32, "a data check failed: {o:?}");
    let err = w.step_error(&w.runs().pop().unwrap(), "verify");
    assert!(
        err.contains("pg_verifybackup") && err.contains(&rel),
        "names the check and the file: {err}"
    );
    assert_scratch_clean(&w);
}

/// A segment lost from `wals/` fails `barman recover` itself (exit 30);
/// once the catalogue forgets it too (`rebuild-xlogdb`), Barman restores
/// without a word and PostgreSQL recovers up to the gap and exits 0: only
/// the comparison with the catalogue's newest segment finds it (exit 31).
#[test]
fn a_lost_wal_segment_is_a_failed_restore_or_an_old_point() {
    let p = Primary::start();
    let b = barman_workload(&p);
    let (name, path) = first_after_backup(&b);
    std::fs::remove_file(&path).unwrap();
    let w = work();
    let env = p.env(&w, "env.yaml", &b.source());
    let o = verify(&w, &env, &[]);
    assert_eq!(o.code, 30, "cannot restore: {o:?}");
    let err = w.step_error(&w.runs().pop().unwrap(), "verify");
    assert!(
        err.contains("barman recover") && err.contains(&name),
        "names the tool and the segment: {err}"
    );
    assert_scratch_clean(&w);

    b.run(&["rebuild-xlogdb", "pg"]);
    let o = verify(&w, &env, &[]);
    assert_eq!(o.code, 31, "restored to an old point: {o:?}");
    let err = w.step_error(&w.runs().pop().unwrap(), "verify");
    assert!(
        err.contains("[DRCTL-B31] restored to an old point")
            && err.contains("bytes not replayed")
            && err.contains("newest recovered heartbeat row 20, 15 rows behind the primary"),
        "up to the gap, measured: {err}"
    );
    assert_scratch_clean(&w);
}

/// With a target time Barman copies the WAL into `barman_wal` and the
/// copy recovers from there to the target; beyond the catalogue it is a
/// clear error.
#[test]
fn a_barman_target_time_inside_the_catalogue_restores_and_one_beyond_it_is_an_error() {
    let p = Primary::start();
    let b = barman_workload(&p);
    let w = work();
    let env = p.env(&w, "env.yaml", &b.source());
    // Between the commits of rows 26-30 and 31-35 (a commit is later than
    // its rows' clock_timestamp()).
    let t = p.sql("select to_char(at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') from drctl_heartbeat where id = 31");
    let o = verify(&w, &env, &["--target-time", &t]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = w.outputs(&w.runs().pop().unwrap(), "verify");
    assert_eq!(out["sources"][0]["recovered_heartbeat_id"], 30, "{out}");
    assert_scratch_clean(&w);
    let o = verify(&w, &env, &["--target-time", "2099-01-01T00:00:00Z"]);
    assert_eq!(o.code, 30, "{o:?}");
    let err = w.step_error(&w.runs().pop().unwrap(), "verify");
    assert!(
        err.contains("the target time 2099-01-01T00:00:00Z lies beyond the archive"),
        "{err}"
    );
    assert_scratch_clean(&w);
}
