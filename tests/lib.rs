//! Shared helpers for drctl's integration tests.
//!
//! Tests drive the real `drctl` binary (built by `cargo build`, found next to
//! the test executable or via `DRCTL_BIN`) against a temporary state
//! directory, and inspect its exit codes, output and journal.

pub mod prom;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub mod fake_kube;

/// Path of the built drctl binary. Panics with a clear instruction when it
/// is missing or older than the sources, so a stale binary never passes.
pub fn drctl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("DRCTL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("drctl");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} not found: run `cargo build -p drctl` first",
                bin.display()
            )
        });
    let newest = newest_source(&repo_root().join("drctl/src"));
    assert!(
        built >= newest,
        "{} is older than drctl/src: run `cargo build -p drctl` first",
        bin.display()
    );
    bin
}

fn newest_source(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_source(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).unwrap_or(newest)
        };
        newest = newest.max(t);
    }
    newest
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// A scratch workspace: a temp dir used as cwd, and its state store.
///
/// The store is the directory `state/` inside it, unless
/// `DRCTL_TEST_STORE=postgres` is set: then every workspace gets a fresh
/// database on the PostgreSQL server named by `DRCTL_TEST_PG_URL`
/// (`scripts/test.sh` starts one on loopback and runs the engine tests a
/// second time this way), initialised with `drctl state init`.
pub struct Work {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL state URL, in postgres mode.
    pub pg: Option<String>,
}

/// True when the engine tests run against the PostgreSQL store.
pub fn pg_mode() -> bool {
    std::env::var("DRCTL_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// A runtime for the few checks tests make through the library.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Creates a fresh database on the test server and returns its state URL.
fn fresh_pg_store() -> String {
    let base = std::env::var("DRCTL_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("DRCTL_TEST_STORE=postgres needs DRCTL_TEST_PG_URL (scripts/test.sh starts a server and sets both)")
    });
    let url = create_database(&base, &format!("drctl_t_{:016x}", rand_u64()));
    let o = Command::new(drctl_bin())
        .args(["state", "init", "--state", &url])
        .output()
        .expect("drctl state init");
    assert!(
        o.status.success(),
        "drctl state init: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    url
}

/// Creates database `name` on the server of `base` (a URL) and returns the
/// URL of the new database.
fn create_database(base: &str, name: &str) -> String {
    let server = drctl::postgres::PgServer::from_dsn(base).expect("a PostgreSQL URL");
    block_on(async {
        let c = server
            .connect(Duration::from_secs(10))
            .await
            .expect("connect to the test PostgreSQL server");
        c.batch_execute(&format!("create database {name}"))
            .await
            .expect("create test database");
    });
    let (head, query) = base.split_once('?').unwrap_or((base, ""));
    let root = head.rsplit_once('/').map_or(head, |(r, _)| r);
    if query.is_empty() {
        format!("{root}/{name}")
    } else {
        format!("{root}/{name}?{query}")
    }
}

fn rand_u64() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    t ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Default for Work {
    fn default() -> Self {
        Self::new()
    }
}

impl Work {
    pub fn new() -> Self {
        Work {
            dir: tempfile::tempdir().expect("tempdir"),
            pg: pg_mode().then(fresh_pg_store),
        }
    }

    /// A workspace on the directory store whatever the mode (tests of the
    /// directory backend's own files).
    pub fn dir_store() -> Self {
        Work {
            dir: tempfile::tempdir().expect("tempdir"),
            pg: None,
        }
    }

    /// The `--state` value of this workspace.
    pub fn state_arg(&self) -> String {
        self.pg
            .clone()
            .unwrap_or_else(|| self.state().display().to_string())
    }

    /// The workspace's store, opened through the library.
    pub fn store(&self) -> std::sync::Arc<dyn drctl::store::Store> {
        let loc = drctl::store::StateLocation::parse(&self.state_arg(), None).expect("location");
        block_on(drctl::store::locate::open(
            &loc,
            drctl::store::locate::OpenMode::Create,
        ))
        .expect("open the test store")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// A copy of an example environment file as a pod would see it: the
    /// files it names under /etc/drctl (mounted Secrets in production) are
    /// created in this work directory, and its relative runbook path is
    /// made absolute so the copy works from here.
    pub fn mounted_example_env(&self, example: &Path) -> PathBuf {
        let text = std::fs::read_to_string(example).expect("example environment");
        let etc = self.path().join("etc-drctl");
        for piece in text.split("file:/etc/drctl/").skip(1) {
            let rel: String = piece
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
                .collect();
            let f = etc.join(&rel);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            std::fs::write(&f, "a mounted secret for the test\n").expect("write");
        }
        let dir = example.parent().expect("the example's directory");
        let copy = text
            .replace("file:/etc/drctl/", &format!("file:{}/", etc.display()))
            .replace(
                "failover_runbook: ../",
                &format!("failover_runbook: {}/../", dir.display()),
            );
        self.write(
            &example.file_name().expect("a file").to_string_lossy(),
            &copy,
        )
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    /// A drctl command with cwd and state dir set to this workspace.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(drctl_bin());
        c.args(args)
            .current_dir(self.path())
            .env_remove("DRCTL_STATE_DIR")
            .env("DRCTL_STATE", self.state_arg())
            .env("DRCTL_OPERATOR", "test-operator")
            .env_remove("DRCTL_TEST_CRASH_AFTER_SEQ")
            .env_remove("DRCTL_TEST_CRASH_AT")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        Out::from(self.cmd(args).output().expect("spawn drctl"))
    }

    /// Run ids in the store, oldest first.
    pub fn runs(&self) -> Vec<String> {
        if self.pg.is_some() {
            let store = self.store();
            return block_on(store.list_runs()).unwrap_or_default();
        }
        let mut v: Vec<String> = std::fs::read_dir(self.state().join("runs"))
            .into_iter()
            .flatten()
            .flatten()
            // As the store lists them: a kill between creating a run's
            // directory and its journal leaves a directory that is no run.
            .filter(|e| e.path().join("journal.jsonl").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    /// The raw journal bytes, from whichever store the workspace uses.
    pub fn journal_bytes(&self, run: &str) -> Vec<u8> {
        if self.pg.is_some() {
            let store = self.store();
            return block_on(store.read_journal(run)).unwrap_or_default();
        }
        std::fs::read(self.journal_path(run)).unwrap_or_default()
    }

    /// Replaces a journal's bytes behind drctl's back (tamper tests): the
    /// file of a directory store, the rows of a PostgreSQL store.
    pub fn rewrite_journal(&self, run: &str, bytes: &[u8]) {
        let Some(url) = &self.pg else {
            std::fs::write(self.journal_path(run), bytes).expect("rewrite journal");
            return;
        };
        let server = drctl::postgres::PgServer::from_dsn(url).expect("dsn");
        let text = String::from_utf8_lossy(bytes).into_owned();
        block_on(async {
            let c = server
                .connect(Duration::from_secs(10))
                .await
                .expect("connect");
            for (seq, line) in text.split_terminator('\n').enumerate() {
                let n = c
                    .execute(
                        "update drctl.journal set line = $3 where run_id = $1 and seq = $2",
                        &[&run, &(seq as i64), &line],
                    )
                    .await
                    .expect("rewrite journal row");
                assert_eq!(n, 1, "row {seq} of {run}");
            }
        });
    }

    /// Live holders of a lease.
    pub fn leases(&self, name: &str) -> Vec<drctl::store::LeaseRecord> {
        let store = self.store();
        block_on(store.leases(name)).unwrap_or_default()
    }

    pub fn journal_path(&self, run: &str) -> PathBuf {
        self.state().join("runs").join(run).join("journal.jsonl")
    }

    pub fn journal(&self, run: &str) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.journal_bytes(run))
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The journal record of a step's last outcome (`Null` if none).
    pub fn finished(&self, run: &str, step: &str) -> serde_json::Value {
        self.journal(run)
            .into_iter()
            .rev()
            .find(|r| r["type"] == "step_finished" && r["step"] == step)
            .unwrap_or(serde_json::Value::Null)
    }

    /// The journaled outputs of a step's last outcome.
    pub fn outputs(&self, run: &str, step: &str) -> serde_json::Value {
        self.finished(run, step)["outputs"].clone()
    }

    /// The journaled error message of a step's last outcome.
    pub fn step_error(&self, run: &str, step: &str) -> String {
        self.finished(run, step)["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Reads one HTTP/1.1 request (head and body, by Content-Length) from a
/// test server's connection; returns the raw text.
pub fn read_http_request(s: &mut std::net::TcpStream) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_millis(2000)));
    let mut buf = [0u8; 16384];
    let mut got = Vec::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A tiny HTTP server on loopback for `http.check` tests: answers every
/// request with `status` and `body`, counting requests. Runs on a thread.
pub struct TinyHttp {
    pub port: u16,
    /// Raw requests received (head and body), for assertions.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TinyHttp {
    pub fn start(status: u16, body: &'static str) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let got = read_http_request(&mut s);
                seen.lock().unwrap().push(got);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes());
            }
        });
        TinyHttp { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A lab (`drctl lab up`: Postgres pair, PowerDNS, demo apps) in a temp
/// state dir, stopped on drop so no test leaks servers.
pub struct Lab {
    pub w: Work,
}

impl Lab {
    pub fn up() -> Lab {
        let w = Work::new();
        // libpq variables an operator's shell may hold, which the lab's own
        // tools (pg_basebackup as the server user) must not pick up.
        let o = Out::from(
            w.cmd(&["lab", "up"])
                .env("PGSSLMODE", "verify-full")
                .env("PGSSLROOTCERT", "/nonexistent/root.crt")
                .env("PGHOST", "/nonexistent")
                .env("PGPORT", "1")
                .output()
                .expect("spawn drctl"),
        );
        assert_eq!(o.code, 0, "lab up: {o:?}");
        // The heartbeat writes every 100 ms; give it a few beats.
        std::thread::sleep(Duration::from_millis(400));
        Lab { w }
    }

    pub fn env(&self) -> String {
        self.w.state().join("lab/env.yaml").display().to_string()
    }

    pub fn runbook(&self, name: &str, text: &str) -> String {
        self.w.write(name, text).display().to_string()
    }

    pub fn last_run(&self) -> String {
        self.w.runs().pop().expect("a run")
    }

    /// `drctl drill DEF --yes`, killed with SIGKILL at the named
    /// `DRCTL_TEST_CRASH_AT` point.
    pub fn drill_killed_at(&self, def: &Path, point: &str) -> Out {
        Out::from(
            self.w
                .cmd(&["drill", def.to_str().unwrap(), "--yes"])
                .env("DRCTL_TEST_CRASH_AT", point)
                .output()
                .expect("spawn drctl"),
        )
    }

    /// The journaled outputs of a step's last outcome.
    pub fn outputs(&self, run: &str, step: &str) -> serde_json::Value {
        self.w.outputs(run, step)
    }

    /// The journaled error message of a step's last outcome.
    pub fn error(&self, run: &str, step: &str) -> String {
        self.w.step_error(run, step)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.w.run(&["lab", "down"]);
    }
}

/// A throwaway PostgreSQL 15 server on loopback (`scripts/state-pg.sh`),
/// stopped and removed on drop.
pub struct TestPg {
    /// `postgresql://postgres@127.0.0.1:PORT/postgres?sslmode=disable`
    pub url: String,
    dir: String,
}

impl TestPg {
    pub fn start() -> TestPg {
        let o = Command::new("bash")
            .arg(repo_root().join("scripts/state-pg.sh"))
            .arg("start")
            .output()
            .expect("run scripts/state-pg.sh");
        assert!(
            o.status.success(),
            "state-pg.sh: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {k}='")))
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or_else(|| panic!("{k} in {text}"))
                .to_string()
        };
        TestPg {
            url: get("DRCTL_TEST_PG_URL"),
            dir: get("DRCTL_TEST_PG_DIR"),
        }
    }

    /// The URL of another database on the same server (created here).
    pub fn database(&self, name: &str) -> String {
        create_database(&self.url, name)
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/state-pg.sh"))
            .args(["stop", &self.dir])
            .output();
    }
}

/// Escapes regex metacharacters, for insta filters built from paths.
pub fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The secret variables the example environment names (set from Secrets
/// in a pod); tests set them to a dummy value to validate it strictly.
pub const EXAMPLE_SECRET_VARS: &[&str] = &[
    "PGPASSWORD",
    "IMMUDB_PASSWORD",
    "SLACK_WEBHOOK_URL",
    "PAGERDUTY_ROUTING_KEY",
    "DRCTL_STATE_PASSWORD",
];

/// Live processes (not zombies) whose working directory is `dir`: what a
/// killed drctl's step commands would be, had they outlived it.
pub fn processes_in(dir: &std::path::Path) -> Vec<u32> {
    let Ok(want) = dir.canonicalize() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|t| t.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && std::fs::read_link(e.path().join("cwd")).ok().as_deref() == Some(&want) {
            found.push(pid);
        }
    }
    found
}
