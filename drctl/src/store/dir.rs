//! The local-directory backend: the embedded default, for one host.
//!
//! Layout (compatible with earlier versions): `runs/RUN/journal.jsonl`
//! (+ `approvals/`, `abort`, artifacts), `locks/NAME.lease.json`,
//! `docs/COLLECTION/KEY.json`, `history/COLLECTION.jsonl`, `state.json`.
//!
//! Every blocking call runs on tokio's blocking pool, so a hung disk never
//! stalls the event loop (Ctrl-C, lease renewal). Lease changes and journal
//! appends serialise on a short `flock` of `locks/NAME.lock` taken per
//! operation, never for a whole run: the lease record (with its epoch) is
//! the truth, the flock only makes check-then-write atomic on this host.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The local-directory backend. Cheap to clone.
#[derive(Clone)]
pub struct DirStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Journals this process appends to: handle, record count, length.
    open: Mutex<HashMap<String, OpenJournal>>,
}

struct OpenJournal {
    file: File,
    records: u64,
    len: u64,
    /// The file ended in an incomplete line when it was read: appending
    /// would turn the torn bytes into a corrupt record.
    torn: bool,
}

/// `locks/NAME.lease.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LeaseFile {
    epoch: u64,
    holders: Vec<LeaseRecord>,
}

#[derive(Serialize, Deserialize)]
struct StateMeta {
    schema_version: u32,
}

const DOC_VERSION_KEY: &str = "drctl_doc_version";

impl DirStore {
    /// Opens (creating if needed) a state directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for sub in ["runs", "locks", "docs", "history"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io("create state directory", &p))?;
        }
        let meta = root.join("state.json");
        if !meta.exists() {
            let bytes = serde_json::to_vec(&StateMeta {
                schema_version: SCHEMA_VERSION,
            })
            .unwrap_or_default();
            write_atomic(&meta, &bytes)?;
        }
        Ok(Self::at(root))
    }

    /// Opens a state directory that must already exist: read-only commands
    /// use this so that a mistyped location is an error, not empty state.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        if !root.join("runs").is_dir() {
            return Err(StoreError::NotInitialised {
                url: root.display().to_string(),
            });
        }
        Ok(Self::at(root))
    }

    fn at(root: PathBuf) -> Self {
        DirStore {
            inner: Arc::new(Inner {
                root,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Io {
                op: "run blocking store operation",
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })?
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

/// Replaces a file atomically and durably (write temp, fsync, rename, fsync
/// dir). The temp name is unique per call, not per pid: in containers every
/// drctl is PID 1.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let tmp = path.with_extension(format!("tmp-{:016x}", fastrand::u64(..)));
    let res = (|| {
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename", path))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res?;
    fsync_dir(dir)
}

/// A file's bytes, or `None` when it does not exist.
fn read_opt(path: &Path, op: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(op, path)(e)),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    read_opt(path, "read")?
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

fn now_ms() -> u64 {
    crate::journal::now_ms()
}

/// An exclusive or shared `flock` held while the guard lives.
struct Flock(File);

impl Flock {
    fn take(path: &Path, exclusive: bool) -> Result<Flock, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("open lock", path))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(Flock(file));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(io("lock", path)(err));
            }
        }
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own; closing would unlock too.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

impl Inner {
    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(safe_name(run_id))
    }

    fn journal_path(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("journal.jsonl")
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("{}.lock", safe_name(name)))
    }

    fn lease_path(&self, name: &str) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("{}.lease.json", safe_name(name)))
    }

    fn doc_path(&self, collection: &str, key: &str) -> PathBuf {
        self.root
            .join("docs")
            .join(safe_name(collection))
            .join(format!("{}.json", safe_name(key)))
    }

    fn history_path(&self, collection: &str) -> PathBuf {
        self.root
            .join("history")
            .join(format!("{}.jsonl", safe_name(collection)))
    }

    fn require_run(&self, run_id: &str) -> Result<(), StoreError> {
        if self.journal_path(run_id).exists() {
            Ok(())
        } else {
            Err(StoreError::RunNotFound(run_id.to_string()))
        }
    }

    /// The lease file. A file in the older format (a JSON object without
    /// `holders`) reads as free: its holder held a flock that died with it.
    /// Anything else unreadable is an error, never "free": reading a
    /// damaged file as free would let a second mutating run start beside
    /// a live one.
    fn read_leases(&self, name: &str) -> Result<LeaseFile, StoreError> {
        let path = self.lease_path(name);
        let Some(bytes) = read_opt(&path, "read lease")? else {
            return Ok(LeaseFile::default());
        };
        match serde_json::from_slice::<LeaseFile>(&bytes) {
            Ok(f) => Ok(f),
            Err(e) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) if !m.contains_key("holders") => Ok(LeaseFile::default()),
                _ => Err(StoreError::Corrupt {
                    path: path.display().to_string(),
                    reason: format!(
                        "the lease file is damaged ({e}); check that no drctl run of this \
                         environment is active, then remove the file"
                    ),
                }),
            },
        }
    }

    fn write_leases(&self, name: &str, f: &LeaseFile) -> Result<(), StoreError> {
        write_atomic(
            &self.lease_path(name),
            &serde_json::to_vec_pretty(f).unwrap_or_default(),
        )
    }

    /// Fails unless `lease` is a live entry of its lease file. Call with
    /// the name's flock held.
    fn check_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let f = self.read_leases(&lease.name)?;
        let mine = f
            .holders
            .iter()
            .any(|h| h.holder.instance == lease.holder.instance && h.epoch == lease.epoch);
        if mine {
            return Ok(());
        }
        let reason = match f.holders.iter().find(|h| h.mode == LeaseMode::Exclusive) {
            Some(h) => format!("now held by {h}"),
            None => "the lease record is gone (expired and reassigned)".to_string(),
        };
        Err(StoreError::Fenced {
            name: lease.name.clone(),
            epoch: lease.epoch,
            reason,
        })
    }

    /// The open handle of a journal, counting its records on first use.
    fn journal_handle<'a>(
        &self,
        open: &'a mut HashMap<String, OpenJournal>,
        run_id: &str,
    ) -> Result<&'a mut OpenJournal, StoreError> {
        let path = self.journal_path(run_id);
        let stale = match open.get(run_id) {
            Some(j) => j.file.metadata().map(|m| m.len()).ok() != Some(j.len),
            None => true,
        };
        if stale {
            let mut file = match OpenOptions::new().read(true).append(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::RunNotFound(run_id.to_string()))
                }
                Err(e) => return Err(io("open journal", &path)(e)),
            };
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(io("read journal", &path))?;
            let records = bytes.iter().filter(|b| **b == b'\n').count() as u64;
            let len = bytes.len() as u64;
            let torn = bytes.last().is_some_and(|b| *b != b'\n');
            open.insert(
                run_id.to_string(),
                OpenJournal {
                    file,
                    records,
                    len,
                    torn,
                },
            );
        }
        open.get_mut(run_id)
            .ok_or_else(|| StoreError::RunNotFound(run_id.to_string()))
    }

    fn append(
        &self,
        run_id: &str,
        lease: &Lease,
        seq: u64,
        lines: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        let _lock = Flock::take(&self.lock_path(&lease.name), false)?;
        self.check_lease(lease)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.journal_path(run_id);
        // Known from when the handle was (re)read: every append of ours
        // ends in a newline, so the last byte needs no read per record.
        let j = self.journal_handle(&mut open, run_id)?;
        if j.torn {
            return Err(StoreError::Corrupt {
                path: path.display().to_string(),
                reason: "the journal ends in a torn record; resume repairs it".into(),
            });
        }
        if j.records != seq {
            return Err(StoreError::SeqConflict {
                run_id: run_id.to_string(),
                expected: seq,
                found: j.records,
            });
        }
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        // One write(2) per batch with O_APPEND: never interleaved, and a
        // torn tail after a crash is detectable.
        let res = j
            .file
            .write_all(&buf)
            .map_err(io("append to journal", &path))
            .and_then(|_| j.file.sync_data().map_err(io("fsync journal", &path)));
        match res {
            Ok(()) => {
                j.records += lines.len() as u64;
                j.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // We no longer know what is on disk: recount next time.
                open.remove(run_id);
                Err(e)
            }
        }
    }

    fn create(&self, run_id: &str, lease: &Lease, first: &[u8]) -> Result<(), StoreError> {
        let _lock = Flock::take(&self.lock_path(&lease.name), false)?;
        self.check_lease(lease)?;
        let dir = self.run_dir(run_id);
        fs::create_dir_all(&dir).map_err(io("create run directory", &dir))?;
        let path = self.journal_path(run_id);
        let mut file = match OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::RunExists(run_id.to_string()))
            }
            Err(e) => return Err(io("create journal", &path)(e)),
        };
        let mut buf = first.to_vec();
        buf.push(b'\n');
        file.write_all(&buf)
            .map_err(io("append to journal", &path))?;
        file.sync_data().map_err(io("fsync journal", &path))?;
        fsync_dir(&dir)?;
        fsync_dir(&self.root.join("runs"))?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(
            run_id.to_string(),
            OpenJournal {
                file,
                records: 1,
                len: buf.len() as u64,
                torn: false,
            },
        );
        Ok(())
    }

    fn repair(&self, run_id: &str, lease: &Lease, complete_len: u64) -> Result<u64, StoreError> {
        let _lock = Flock::take(&self.lock_path(&lease.name), false)?;
        self.check_lease(lease)?;
        let path = self.journal_path(run_id);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io("open journal", &path))?;
        let len = file.metadata().map_err(io("stat journal", &path))?.len();
        if len <= complete_len {
            return Ok(0);
        }
        file.set_len(complete_len)
            .map_err(io("truncate journal", &path))?;
        file.sync_all().map_err(io("fsync journal", &path))?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(run_id);
        Ok(len - complete_len)
    }

    fn read_from(&self, run_id: &str, cursor: u64) -> Result<JournalChunk, StoreError> {
        let path = self.journal_path(run_id);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::RunNotFound(run_id.to_string()))
            }
            Err(e) => return Err(io("read journal", &path)(e)),
        };
        file.seek(SeekFrom::Start(cursor))
            .map_err(io("read journal", &path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io("read journal", &path))?;
        // Only complete records: a line being written is left for later.
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let torn = if keep == 0 { bytes.len() } else { 0 };
        bytes.truncate(keep);
        Ok(JournalChunk {
            next: cursor + bytes.len() as u64,
            bytes,
            torn,
        })
    }

    /// Up to `max_bytes` of complete lines from `cursor` (the whole next
    /// line when it alone is longer).
    fn read_chunk(
        &self,
        run_id: &str,
        cursor: u64,
        max_bytes: usize,
    ) -> Result<JournalChunk, StoreError> {
        let path = self.journal_path(run_id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::RunNotFound(run_id.to_string()))
            }
            Err(e) => return Err(io("read journal", &path)(e)),
        };
        let mut file = std::io::BufReader::new(file);
        file.seek(SeekFrom::Start(cursor))
            .map_err(io("read journal", &path))?;
        let mut bytes = Vec::with_capacity(max_bytes.min(1 << 20));
        let mut limited = (&mut file).take(max_bytes as u64);
        limited
            .read_to_end(&mut bytes)
            .map_err(io("read journal", &path))?;
        let mut keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        if keep == 0 && bytes.len() == max_bytes {
            // One line longer than the bound: the whole line, if complete.
            file.read_until(b'\n', &mut bytes)
                .map_err(io("read journal", &path))?;
            keep = if bytes.last() == Some(&b'\n') {
                bytes.len()
            } else {
                0
            };
        }
        let torn = if keep == 0 { bytes.len() } else { 0 };
        bytes.truncate(keep);
        Ok(JournalChunk {
            next: cursor + bytes.len() as u64,
            bytes,
            torn,
        })
    }

    fn acquire(
        &self,
        name: &str,
        mode: LeaseMode,
        holder: &HolderId,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let _lock = Flock::take(&self.lock_path(name), true)?;
        let mut f = self.read_leases(name)?;
        let now = now_ms();
        let mut took_over = None;
        f.holders.retain(|h| {
            let gone = h.expires_at_ms <= now || h.holder.is_provably_dead();
            if gone && h.mode == LeaseMode::Exclusive {
                took_over = Some(h.clone());
            }
            !gone
        });
        if mode == LeaseMode::Exclusive {
            if let Some(h) = f.holders.iter().find(|h| h.mode == LeaseMode::Exclusive) {
                return Err(StoreError::LeaseHeld {
                    name: name.to_string(),
                    holder: Box::new(h.clone()),
                });
            }
            f.epoch += 1;
        }
        let rec = LeaseRecord {
            mode,
            epoch: f.epoch,
            holder: holder.clone(),
            since_ms: now,
            expires_at_ms: now + ttl.as_millis() as u64,
        };
        f.holders.push(rec.clone());
        self.write_leases(name, &f)?;
        Ok(LeaseGrant {
            lease: Lease {
                name: name.to_string(),
                mode,
                epoch: rec.epoch,
                holder: holder.clone(),
                expires_at_ms: rec.expires_at_ms,
            },
            took_over,
        })
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let _lock = Flock::take(&self.lock_path(&lease.name), true)?;
        self.check_lease(lease)?;
        let mut f = self.read_leases(&lease.name)?;
        let expires = now_ms() + ttl.as_millis() as u64;
        for h in &mut f.holders {
            if h.holder.instance == lease.holder.instance && h.epoch == lease.epoch {
                h.expires_at_ms = expires;
            }
        }
        self.write_leases(&lease.name, &f)?;
        Ok(Lease {
            expires_at_ms: expires,
            ..lease.clone()
        })
    }

    fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let _lock = Flock::take(&self.lock_path(&lease.name), true)?;
        let mut f = self.read_leases(&lease.name)?;
        let before = f.holders.len();
        f.holders
            .retain(|h| !(h.holder.instance == lease.holder.instance && h.epoch == lease.epoch));
        if f.holders.len() != before {
            self.write_leases(&lease.name, &f)?;
        }
        Ok(())
    }

    fn get_doc(&self, collection: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(
            read_json::<Value>(&self.doc_path(collection, key))?.map(|v| match v {
                Value::Object(mut m) if m.contains_key(DOC_VERSION_KEY) => Versioned {
                    version: m.get(DOC_VERSION_KEY).and_then(Value::as_u64).unwrap_or(0),
                    doc: m.remove("doc").unwrap_or(Value::Null),
                },
                // Written by an earlier drctl, before documents had versions.
                other => Versioned {
                    version: 0,
                    doc: other,
                },
            }),
        )
    }

    fn put_doc(
        &self,
        collection: &str,
        key: &str,
        doc: &Value,
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let _lock = Flock::take(&self.lock_path(&format!("doc-{collection}")), true)?;
        let cur = self.get_doc(collection, key)?;
        let conflict = |expected: String, found: String| StoreError::Conflict {
            collection: collection.to_string(),
            key: key.to_string(),
            expected,
            found,
        };
        let found = cur
            .as_ref()
            .map_or("absent".to_string(), |c| format!("version {}", c.version));
        let next = match (expect, &cur) {
            (Expect::Absent, None) => 1,
            (Expect::Absent, Some(_)) => return Err(conflict("absent".into(), found)),
            (Expect::Version(v), Some(c)) if c.version == v => v + 1,
            (Expect::Version(v), _) => return Err(conflict(format!("version {v}"), found)),
            (Expect::Any, c) => c.as_ref().map_or(1, |c| c.version + 1),
        };
        let bytes = serde_json::to_vec_pretty(&serde_json::json!({
            DOC_VERSION_KEY: next,
            "doc": doc,
        }))
        .unwrap_or_default();
        write_atomic(&self.doc_path(collection, key), &bytes)?;
        Ok(next)
    }

    fn append_history(&self, collection: &str, record: &Value) -> Result<(), StoreError> {
        let path = self.history_path(collection);
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
        let path = self.history_path(collection);
        let Some(bytes) = read_opt(&path, "read history")? else {
            return Ok(Vec::new());
        };
        let text = String::from_utf8_lossy(&bytes);
        // A torn last line (crash mid-append) was never acknowledged.
        let complete = text.rfind('\n').map_or("", |p| &text[..p]);
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| StoreError::Corrupt {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            })
            .collect()
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
}

#[async_trait]
impl Store for DirStore {
    fn describe(&self) -> String {
        format!("local directory {}", self.inner.root.display())
    }

    fn location(&self) -> String {
        self.inner.root.display().to_string()
    }

    async fn health(&self) -> Result<Health, StoreError> {
        self.blocking(|i| {
            let meta: Option<StateMeta> = read_json(&i.root.join("state.json"))?;
            Ok(Health {
                location: i.root.display().to_string(),
                schema_version: meta.map_or(SCHEMA_VERSION, |m| m.schema_version),
                clock_skew_ms: 0,
                runs: i.list_runs()?.len(),
            })
        })
        .await
    }

    async fn create_journal(
        &self,
        run_id: &str,
        lease: &Lease,
        first: &[u8],
    ) -> Result<(), StoreError> {
        let (r, l, b) = (run_id.to_string(), lease.clone(), first.to_vec());
        self.blocking(move |i| i.create(&r, &l, &b)).await
    }

    async fn append_records(
        &self,
        run_id: &str,
        lease: &Lease,
        seq: u64,
        lines: &[&[u8]],
    ) -> Result<(), StoreError> {
        let (r, l) = (run_id.to_string(), lease.clone());
        let b: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
        self.blocking(move |i| i.append(&r, &l, seq, &b)).await
    }

    async fn repair_torn_tail(
        &self,
        run_id: &str,
        lease: &Lease,
        complete_len: u64,
    ) -> Result<u64, StoreError> {
        let (r, l) = (run_id.to_string(), lease.clone());
        self.blocking(move |i| i.repair(&r, &l, complete_len)).await
    }

    async fn read_journal(&self, run_id: &str) -> Result<Vec<u8>, StoreError> {
        let r = run_id.to_string();
        self.blocking(move |i| {
            read_opt(&i.journal_path(&r), "read journal")?
                .ok_or_else(|| StoreError::RunNotFound(r.clone()))
        })
        .await
    }

    async fn read_journal_from(
        &self,
        run_id: &str,
        cursor: u64,
    ) -> Result<JournalChunk, StoreError> {
        let r = run_id.to_string();
        self.blocking(move |i| i.read_from(&r, cursor)).await
    }

    async fn read_journal_chunk(
        &self,
        run_id: &str,
        cursor: u64,
        max_bytes: usize,
    ) -> Result<JournalChunk, StoreError> {
        let r = run_id.to_string();
        self.blocking(move |i| i.read_chunk(&r, cursor, max_bytes))
            .await
    }

    async fn list_runs(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|i| i.list_runs()).await
    }

    async fn run_summaries(&self) -> Result<Vec<RunSummary>, StoreError> {
        self.blocking(|i| {
            let mut out = Vec::new();
            for id in i.list_runs()? {
                let ms = fs::metadata(i.journal_path(&id))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                out.push(RunSummary {
                    run_id: id,
                    last_write_ms: ms,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn delete_run(&self, run_id: &str) -> Result<(), StoreError> {
        let r = run_id.to_string();
        self.blocking(move |i| {
            i.require_run(&r)?;
            let dir = i.run_dir(&r);
            fs::remove_dir_all(&dir).map_err(io("delete run", &dir))?;
            i.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&r);
            fsync_dir(&i.root.join("runs"))
        })
        .await
    }

    fn journal_location(&self, run_id: &str) -> String {
        self.inner.journal_path(run_id).display().to_string()
    }

    async fn put_approval(&self, run_id: &str, step: &str, a: &Approval) -> Result<(), StoreError> {
        let (r, s, a) = (run_id.to_string(), step.to_string(), a.clone());
        self.blocking(move |i| {
            i.require_run(&r)?;
            let path = i
                .run_dir(&r)
                .join("approvals")
                .join(format!("{}.json", safe_name(&s)));
            write_atomic(&path, &serde_json::to_vec(&a).unwrap_or_default())
        })
        .await
    }

    async fn get_approval(&self, run_id: &str, step: &str) -> Result<Option<Approval>, StoreError> {
        let (r, s) = (run_id.to_string(), step.to_string());
        self.blocking(move |i| {
            read_json(
                &i.run_dir(&r)
                    .join("approvals")
                    .join(format!("{}.json", safe_name(&s))),
            )
        })
        .await
    }

    async fn request_abort(&self, run_id: &str, by: &str) -> Result<(), StoreError> {
        let (r, b) = (run_id.to_string(), by.to_string());
        self.blocking(move |i| {
            i.require_run(&r)?;
            write_atomic(&i.run_dir(&r).join("abort"), b.as_bytes())
        })
        .await
    }

    async fn abort_requested(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        let r = run_id.to_string();
        self.blocking(move |i| {
            Ok(
                read_opt(&i.run_dir(&r).join("abort"), "read abort request")?
                    .map(|b| String::from_utf8_lossy(&b).into_owned()),
            )
        })
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        mode: LeaseMode,
        holder: &HolderId,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let (n, h) = (name.to_string(), holder.clone());
        self.blocking(move |i| i.acquire(&n, mode, &h, ttl)).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let l = lease.clone();
        self.blocking(move |i| i.renew(&l, ttl)).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let l = lease.clone();
        self.blocking(move |i| i.release(&l)).await
    }

    async fn leases(&self, name: &str) -> Result<Vec<LeaseRecord>, StoreError> {
        let n = name.to_string();
        self.blocking(move |i| {
            let now = now_ms();
            Ok(i.read_leases(&n)?
                .holders
                .into_iter()
                .filter(|h| h.expires_at_ms > now)
                .collect())
        })
        .await
    }

    async fn put_artifact(
        &self,
        run_id: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, StoreError> {
        let (r, n, b) = (run_id.to_string(), name.to_string(), bytes.to_vec());
        self.blocking(move |i| {
            let path = i.run_dir(&r).join(safe_name(&n));
            write_atomic(&path, &b)?;
            Ok(path.display().to_string())
        })
        .await
    }

    async fn get_artifact(&self, run_id: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (r, n) = (run_id.to_string(), name.to_string());
        self.blocking(move |i| read_opt(&i.run_dir(&r).join(safe_name(&n)), "read artifact"))
            .await
    }

    async fn get_doc(&self, collection: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let (c, k) = (collection.to_string(), key.to_string());
        self.blocking(move |i| i.get_doc(&c, &k)).await
    }

    async fn put_doc(
        &self,
        collection: &str,
        key: &str,
        doc: &Value,
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let (c, k, d) = (collection.to_string(), key.to_string(), doc.clone());
        self.blocking(move |i| i.put_doc(&c, &k, &d, expect)).await
    }

    async fn append_history(&self, collection: &str, record: &Value) -> Result<(), StoreError> {
        let (c, r) = (collection.to_string(), record.clone());
        self.blocking(move |i| i.append_history(&c, &r)).await
    }

    async fn read_history(&self, collection: &str) -> Result<Vec<Value>, StoreError> {
        let c = collection.to_string();
        self.blocking(move |i| i.read_history(&c)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_contract_holds_for_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path().join("state")).unwrap();
        crate::store::contract::run_all(&store).await;
        // Two handles on one directory: what two processes on one host see.
        let other = DirStore::open(dir.path().join("state")).unwrap();
        crate::store::contract::takeover_is_a_cut(&store, &other).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_tail_is_cut_at_every_byte_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let holder = HolderId::this_process("torn");
        let lease = store
            .acquire_lease(
                "torn",
                LeaseMode::Exclusive,
                &holder,
                Duration::from_secs(60),
            )
            .await
            .unwrap()
            .lease;
        store
            .create_journal("r", &lease, b"{\"a\":0}")
            .await
            .unwrap();
        let line = b"{\"record\":\"one more, long enough to be torn anywhere\"}";
        let path = dir.path().join("runs/r/journal.jsonl");
        let good = std::fs::read(&path).unwrap();
        for k in 1..=line.len() {
            std::fs::write(&path, [&good[..], &line[..k]].concat()).unwrap();
            let cut = store
                .repair_torn_tail("r", &lease, good.len() as u64)
                .await
                .unwrap();
            assert_eq!(cut, k as u64);
            store.append_journal("r", &lease, 1, line).await.unwrap();
            let bytes = store.read_journal("r").await.unwrap();
            assert_eq!(bytes, [&good[..], &line[..], b"\n"].concat(), "torn at {k}");
            std::fs::write(&path, &good).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_lease_file_is_an_error_not_a_free_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let holder = HolderId::this_process("r");
        let acquire = || {
            store.acquire_lease(
                "env",
                LeaseMode::Exclusive,
                &holder,
                Duration::from_secs(60),
            )
        };
        let path = dir.path().join("locks/env.lease.json");
        for damaged in [
            &b"{\"epoch\": 3, \"holders\": [{\"run_id\": "[..],
            b"\x00\x01",
            b"[]",
        ] {
            std::fs::write(&path, damaged).unwrap();
            match acquire().await {
                Err(StoreError::Corrupt { path: p, reason }) => {
                    assert!(p.ends_with("env.lease.json"), "{p}");
                    assert!(reason.contains("no drctl run"), "{reason}");
                }
                other => panic!("damaged lease file {damaged:?}: {other:?}"),
            }
        }
        // The older format (no `holders`: a flock was the lease) is free.
        std::fs::write(&path, br#"{"run_id": "old", "pid": 1}"#).unwrap();
        let grant = acquire().await.unwrap();
        assert!(grant.lease.epoch >= 1);
    }
}
