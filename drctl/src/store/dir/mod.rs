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
//!
//! The backend is split by concern: [`files`] holds the durable-file
//! primitives (atomic replace, fsync, `flock`) that every other part uses;
//! [`journal`], [`lease`] and [`docs`] each hold one kind of state. This
//! module holds the store itself, its paths, and the [`Store`] impl, which
//! only moves each call onto the blocking pool.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;

mod docs;
mod files;
mod journal;
mod lease;

pub use files::write_atomic;
use files::{fsync_dir, io, read_json, read_opt, safe_name};
use journal::OpenJournal;

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

#[derive(Serialize, Deserialize)]
struct StateMeta {
    schema_version: u32,
}

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

fn now_ms() -> u64 {
    crate::journal::now_ms()
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
}
