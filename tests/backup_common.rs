//! Shared by the backup test binaries (`backup`, `barman`): a real
//! PostgreSQL 15 primary with WAL archiving, the verify-backup command and
//! the checks on the archive and the scratch area.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use drctl_tests::{repo_root, wait_until, Out, Work};
use sha2::{Digest, Sha256};

/// A primary with `archive_command` copying into `archive/`.
pub struct Primary {
    pub root: PathBuf,
    pub port: u16,
    pub bin: PathBuf,
    pub archive: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

pub fn bindir() -> PathBuf {
    drctl::lab::pg::bindir().expect("PostgreSQL 15 binaries (scripts/install-deps.sh)")
}

impl Primary {
    pub fn start() -> Primary {
        let who = drctl::lab::pg::run_as().expect("the postgres user");
        let root = drctl::lab::pg::data_root(&std::env::temp_dir()).expect("data root");
        let port = drctl::lab::pg::free_port().expect("port");
        let p = Primary {
            archive: root.join("archive"),
            root,
            port,
            bin: bindir(),
            uid: who.uid,
            gid: who.gid,
        };
        let data = p.root.join("data");
        p.as_server(
            &p.bin.join("initdb"),
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--data-checksums",
                "--no-instructions",
                "--no-sync",
            ],
        );
        p.as_server(
            Path::new("mkdir"),
            &[
                &p.archive.display().to_string(),
                &p.root.join("backups").display().to_string(),
            ],
        );
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{r}'\nwal_level = replica\narchive_mode = on\n\
             archive_command = 'test ! -f {a}/%f && cp %p {a}/%f'\nmax_wal_senders = 5\nshared_buffers = 32MB\nfsync = off\n",
            a = p.archive.display(),
            r = p.root.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .expect("configure");
        p.as_server(
            &p.bin.join("pg_ctl"),
            &[
                "-D",
                &data.display().to_string(),
                "-w",
                "-l",
                &p.root.join("log").display().to_string(),
                "start",
            ],
        );
        p.sql("create table drctl_heartbeat (id bigint primary key, at timestamptz not null, lsn pg_lsn not null)");
        p
    }

    pub fn as_server(&self, bin: &Path, args: &[&str]) -> String {
        let o = Command::new(bin)
            .args(args)
            .uid(self.uid)
            .gid(self.gid)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        assert!(
            o.status.success(),
            "{} {args:?}: {}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn sql(&self, q: &str) -> String {
        self.as_server(
            &self.bin.join("psql"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atqc",
                q,
            ],
        )
    }

    pub fn heartbeats(&self, from: i64, to: i64) {
        self.sql(&format!(
            "insert into drctl_heartbeat select i, clock_timestamp(), pg_current_wal_lsn() from generate_series({from}, {to}) i"
        ));
    }

    /// Closes the current WAL segment and waits until it is archived;
    /// returns its name.
    pub fn switch_wal(&self) -> String {
        let seg = self.sql("select pg_walfile_name(pg_switch_wal())");
        assert!(
            wait_until(Duration::from_secs(20), || self.archive.join(&seg).exists()),
            "segment {seg} archived"
        );
        seg
    }

    /// Waits until the server reports `seg` archived (any archive_command).
    pub fn wait_archived(&self, seg: &str) {
        assert!(
            wait_until(Duration::from_secs(30), || self
                .sql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
                .as_str()
                >= seg),
            "segment {seg} archived"
        );
    }

    pub fn basebackup(&self, name: &str, format: &str) -> PathBuf {
        let dir = self.root.join("backups").join(name);
        self.as_server(
            &self.bin.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &dir.display().to_string(),
                "-F",
                format,
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        dir
    }

    pub fn env(&self, w: &Work, name: &str, backups: &str) -> String {
        let text = format!(
            "name: t\nactive_region: primary\nregions:\n  primary:\n    postgres: {{host: 127.0.0.1, port: {}, dbname: postgres, user: postgres, sslmode: disable}}\n    backups:\n{backups}  dr: {{}}\n",
            self.port
        );
        w.write(name, &text).display().to_string()
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        let _ = Command::new(self.bin.join("pg_ctl"))
            .args([
                "-D",
                &self.root.join("data").display().to_string(),
                "-m",
                "immediate",
                "stop",
            ])
            .uid(self.uid)
            .gid(self.gid)
            .current_dir("/")
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A workspace the server user can traverse (a temp dir is 0700): the
/// scratch area lives in its state directory.
pub fn work() -> Work {
    use std::os::unix::fs::PermissionsExt;
    let w = Work::dir_store();
    std::fs::set_permissions(w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    w
}

/// A basebackup source entry for the environment file.
pub fn base_source(name: &str, backup: &Path, archive: &Path) -> String {
    format!(
        "      {name}: {{kind: basebackup, backup_dir: \"{}\", wal_archive: \"{}\", superuser: postgres, max_age: 1h}}\n",
        backup.display(),
        archive.display()
    )
}

pub fn verify(w: &Work, env: &str, extra: &[&str]) -> Out {
    let rb = repo_root()
        .join("runbooks/verify-backups.yaml")
        .display()
        .to_string();
    let mut args = vec!["verify-backup", "--env", env, "--runbook", &rb];
    args.extend_from_slice(extra);
    w.run(&args)
}

/// SHA-256 of every file under `dir`, by relative path.
pub fn tree_hash(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(tree_hash(&p));
        } else {
            out.push((
                p.display().to_string(),
                hex::encode(Sha256::digest(std::fs::read(&p).unwrap())),
            ));
        }
    }
    out.sort();
    out
}

/// The backup is restored under `<state>/scratch`; nothing may be left.
pub fn assert_scratch_clean(w: &Work) {
    let root = w.state().join("scratch");
    let left: Vec<_> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "scratch leftovers: {left:?}");
}

/// Heartbeats 1-20 before the backup, 21-40 after it in four archived
/// segments; returns those segments' names.
pub fn workload(p: &Primary, format: &str) -> (PathBuf, Vec<String>) {
    p.heartbeats(1, 20);
    let backup = p.basebackup("b1", format);
    let mut segs = Vec::new();
    for k in 0..4 {
        p.heartbeats(21 + 5 * k, 25 + 5 * k);
        segs.push(p.switch_wal());
    }
    (backup, segs)
}
