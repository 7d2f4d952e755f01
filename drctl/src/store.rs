//! All persistent state behind one interface: run journals, approvals and
//! abort requests, leases, and small documents (trusted immudb states,
//! capacity snapshots, heartbeat status) plus append-only histories (drills).
//!
//! The only backend today is a local directory. The interface is shaped for a
//! shared PostgreSQL backend later (teams, CronJobs): every write is a whole
//! record, journals are append-only, leases carry an expiry. The control
//! plane must outlive the failed region, so the state directory belongs on a
//! machine outside it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("run `{0}` not found")]
    RunNotFound(String),
    #[error("lock `{name}` is held by {holder}")]
    LeaseHeld { name: String, holder: LeaseHolder },
    #[error("lease `{name}` was lost: {reason}")]
    LeaseLost { name: String, reason: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseHolder {
    pub run_id: String,
    pub pid: u32,
    pub host: String,
    /// Unix milliseconds after which the lease is stale.
    pub expires_at_ms: u64,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} (pid {} on {}, lease until {})",
            self.run_id,
            self.pid,
            self.host,
            crate::journal::format_ms(self.expires_at_ms)
        )
    }
}

/// What acquiring a lease found.
#[derive(Debug)]
pub struct LeaseAcquired {
    /// A previous holder whose process died without releasing.
    pub took_over: Option<LeaseHolder>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub at: String,
    pub via: String,
}

impl Approval {
    pub fn now(by: &str, via: &str) -> Self {
        Approval {
            by: by.to_string(),
            at: crate::journal::now_rfc3339(),
            via: via.to_string(),
        }
    }
}

/// An append-only, durable byte sink for one run's journal.
pub trait JournalSink: Send {
    /// Appends `line` (without newline) and makes it durable before
    /// returning; an error means the record may not be on disk.
    fn append_durable(&mut self, line: &[u8]) -> Result<(), StoreError>;
}

pub trait Store: Send + Sync {
    fn describe(&self) -> String;

    fn create_run(&self, run_id: &str) -> Result<Box<dyn JournalSink>, StoreError>;
    fn append_run(&self, run_id: &str) -> Result<Box<dyn JournalSink>, StoreError>;
    fn read_journal(&self, run_id: &str) -> Result<Vec<u8>, StoreError>;
    /// Run ids, oldest first.
    fn list_runs(&self) -> Result<Vec<String>, StoreError>;
    /// A human-facing path or URL for the run's journal.
    fn journal_location(&self, run_id: &str) -> String;

    fn put_approval(&self, run_id: &str, step: &str, a: &Approval) -> Result<(), StoreError>;
    fn get_approval(&self, run_id: &str, step: &str) -> Result<Option<Approval>, StoreError>;
    fn request_abort(&self, run_id: &str, by: &str) -> Result<(), StoreError>;
    fn abort_requested(&self, run_id: &str) -> Result<Option<String>, StoreError>;

    fn acquire_lease(&self, name: &str, holder: &LeaseHolder) -> Result<LeaseAcquired, StoreError>;
    fn renew_lease(&self, name: &str, holder: &LeaseHolder) -> Result<(), StoreError>;
    fn release_lease(&self, name: &str, holder: &LeaseHolder);
    fn read_lease(&self, name: &str) -> Result<Option<LeaseHolder>, StoreError>;

    /// Stores a rendered file beside a run (e.g. its report); returns where.
    fn put_artifact(&self, run_id: &str, name: &str, bytes: &[u8]) -> Result<String, StoreError>;

    fn put_doc(&self, collection: &str, key: &str, doc: &Value) -> Result<(), StoreError>;
    fn get_doc(&self, collection: &str, key: &str) -> Result<Option<Value>, StoreError>;
    fn append_history(&self, collection: &str, record: &Value) -> Result<(), StoreError>;
    fn read_history(&self, collection: &str) -> Result<Vec<Value>, StoreError>;
}

/// The local-directory backend.
pub struct LocalStore {
    root: PathBuf,
    /// Open lock files: the flock lives as long as the handle.
    locks: Mutex<HashMap<String, File>>,
}

impl LocalStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for sub in ["runs", "locks", "docs", "history"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io("create state directory", &p))?;
        }
        Ok(LocalStore {
            root,
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(safe_name(run_id))
    }

    fn journal_path(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("journal.jsonl")
    }
}

/// Keeps keys from escaping their directory.
fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync directory", dir))
}

/// Replaces a file atomically and durably (write temp, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io("rename", path))?;
    fsync_dir(dir)
}

struct FileSink {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
}

impl JournalSink for FileSink {
    fn append_durable(&mut self, line: &[u8]) -> Result<(), StoreError> {
        self.buf.clear();
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        // One write(2) per record: with O_APPEND a record is never
        // interleaved, and a torn tail after a crash is detectable.
        self.file
            .write_all(&self.buf)
            .map_err(io("append to journal", &self.path))?;
        self.file
            .sync_data()
            .map_err(io("fsync journal", &self.path))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    fn create_run(&self, run_id: &str) -> Result<Box<dyn JournalSink>, StoreError> {
        let dir = self.run_dir(run_id);
        fs::create_dir_all(&dir).map_err(io("create run directory", &dir))?;
        let path = self.journal_path(run_id);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io("create journal", &path))?;
        fsync_dir(&dir)?;
        fsync_dir(&self.root.join("runs"))?;
        Ok(Box::new(FileSink {
            file,
            path,
            buf: Vec::new(),
        }))
    }

    fn append_run(&self, run_id: &str) -> Result<Box<dyn JournalSink>, StoreError> {
        let path = self.journal_path(run_id);
        if !path.exists() {
            return Err(StoreError::RunNotFound(run_id.to_string()));
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io("open journal", &path))?;
        Ok(Box::new(FileSink {
            file,
            path,
            buf: Vec::new(),
        }))
    }

    fn read_journal(&self, run_id: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.journal_path(run_id);
        match fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::RunNotFound(run_id.to_string()))
            }
            Err(e) => Err(io("read journal", &path)(e)),
        }
    }

    fn list_runs(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("runs");
        let mut ids: Vec<String> = fs::read_dir(&dir)
            .map_err(io("list runs", &dir))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("journal.jsonl").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        // Run ids start with a UTC timestamp, so name order is time order.
        ids.sort();
        Ok(ids)
    }

    fn journal_location(&self, run_id: &str) -> String {
        self.journal_path(run_id).display().to_string()
    }

    fn put_approval(&self, run_id: &str, step: &str, a: &Approval) -> Result<(), StoreError> {
        if !self.journal_path(run_id).exists() {
            return Err(StoreError::RunNotFound(run_id.to_string()));
        }
        let path = self
            .run_dir(run_id)
            .join("approvals")
            .join(format!("{}.json", safe_name(step)));
        write_atomic(&path, &serde_json::to_vec(a).unwrap_or_default())
    }

    fn get_approval(&self, run_id: &str, step: &str) -> Result<Option<Approval>, StoreError> {
        let path = self
            .run_dir(run_id)
            .join("approvals")
            .join(format!("{}.json", safe_name(step)));
        read_json(&path)
    }

    fn request_abort(&self, run_id: &str, by: &str) -> Result<(), StoreError> {
        if !self.journal_path(run_id).exists() {
            return Err(StoreError::RunNotFound(run_id.to_string()));
        }
        write_atomic(&self.run_dir(run_id).join("abort"), by.as_bytes())
    }

    fn abort_requested(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        match fs::read_to_string(self.run_dir(run_id).join("abort")) {
            Ok(s) => Ok(Some(s)),
            Err(_) => Ok(None),
        }
    }

    fn acquire_lease(&self, name: &str, holder: &LeaseHolder) -> Result<LeaseAcquired, StoreError> {
        let lock_path = self
            .root
            .join("locks")
            .join(format!("{}.lock", safe_name(name)));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io("open lock", &lock_path))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let previous = self.read_lease(name)?;
        if rc != 0 {
            let holder = previous.unwrap_or(LeaseHolder {
                run_id: "unknown".into(),
                pid: 0,
                host: "unknown".into(),
                expires_at_ms: 0,
            });
            return Err(StoreError::LeaseHeld {
                name: name.to_string(),
                holder,
            });
        }
        // We hold the flock, so any lease record left behind belongs to a
        // process that died without releasing it: a stale lease.
        let took_over = previous.filter(|p| p.run_id != holder.run_id || p.pid != holder.pid);
        self.write_lease(name, holder)?;
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.insert(name.to_string(), file);
        Ok(LeaseAcquired { took_over })
    }

    fn renew_lease(&self, name: &str, holder: &LeaseHolder) -> Result<(), StoreError> {
        match self.read_lease(name)? {
            Some(cur) if cur.run_id == holder.run_id && cur.pid == holder.pid => {
                self.write_lease(name, holder)
            }
            Some(cur) => Err(StoreError::LeaseLost {
                name: name.to_string(),
                reason: format!("now held by {cur}"),
            }),
            None => Err(StoreError::LeaseLost {
                name: name.to_string(),
                reason: "lease record disappeared".into(),
            }),
        }
    }

    fn release_lease(&self, name: &str, holder: &LeaseHolder) {
        if let Ok(Some(cur)) = self.read_lease(name) {
            if cur.run_id == holder.run_id && cur.pid == holder.pid {
                let _ = fs::remove_file(self.lease_path(name));
            }
        }
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.remove(name);
    }

    fn read_lease(&self, name: &str) -> Result<Option<LeaseHolder>, StoreError> {
        read_json(&self.lease_path(name))
    }

    fn put_artifact(&self, run_id: &str, name: &str, bytes: &[u8]) -> Result<String, StoreError> {
        let path = self.run_dir(run_id).join(safe_name(name));
        write_atomic(&path, bytes)?;
        Ok(path.display().to_string())
    }

    fn put_doc(&self, collection: &str, key: &str, doc: &Value) -> Result<(), StoreError> {
        let path = self
            .root
            .join("docs")
            .join(safe_name(collection))
            .join(format!("{}.json", safe_name(key)));
        let bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
        write_atomic(&path, &bytes)
    }

    fn get_doc(&self, collection: &str, key: &str) -> Result<Option<Value>, StoreError> {
        read_json(
            &self
                .root
                .join("docs")
                .join(safe_name(collection))
                .join(format!("{}.json", safe_name(key))),
        )
    }

    fn append_history(&self, collection: &str, record: &Value) -> Result<(), StoreError> {
        let path = self
            .root
            .join("history")
            .join(format!("{}.jsonl", safe_name(collection)));
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open history", &path))?;
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        f.write_all(&line).map_err(io("append history", &path))?;
        f.sync_data().map_err(io("fsync history", &path))
    }

    fn read_history(&self, collection: &str) -> Result<Vec<Value>, StoreError> {
        let path = self
            .root
            .join("history")
            .join(format!("{}.jsonl", safe_name(collection)));
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read history", &path)(e)),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

impl LocalStore {
    fn lease_path(&self, name: &str) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("{}.lease.json", safe_name(name)))
    }

    fn write_lease(&self, name: &str, holder: &LeaseHolder) -> Result<(), StoreError> {
        write_atomic(
            &self.lease_path(name),
            &serde_json::to_vec(holder).unwrap_or_default(),
        )
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Builds the lease holder record for this process.
pub fn this_holder(run_id: &str, ttl: Duration) -> LeaseHolder {
    LeaseHolder {
        run_id: run_id.to_string(),
        pid: std::process::id(),
        host: crate::journal::hostname(),
        expires_at_ms: now_ms() + ttl.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_excludes_second_holder_and_is_taken_over_after_release_of_flock() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalStore::open(dir.path()).unwrap();
        let b = LocalStore::open(dir.path()).unwrap();
        let ha = this_holder("run-a", Duration::from_secs(30));
        let hb = this_holder("run-b", Duration::from_secs(30));
        assert!(a.acquire_lease("env", &ha).unwrap().took_over.is_none());
        match b.acquire_lease("env", &hb) {
            Err(StoreError::LeaseHeld { holder, .. }) => assert_eq!(holder.run_id, "run-a"),
            other => panic!("expected LeaseHeld, got {other:?}"),
        }
        // Simulate a crash: the flock goes away but the record stays.
        a.locks.lock().unwrap().clear();
        let got = b.acquire_lease("env", &hb).unwrap();
        assert_eq!(got.took_over.unwrap().run_id, "run-a");
    }
}
