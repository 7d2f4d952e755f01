//! All persistent state behind one async contract ([`Store`]) with two
//! backends: a local directory ([`dir::DirStore`], the embedded default) and
//! PostgreSQL ([`postgres::PgStore`], the shared control plane for teams,
//! CronJobs and the heartbeat, placed outside the regions it protects).
//!
//! What lives here: run journals (append-only, conditional on the writer's
//! sequence number and lease epoch), approvals and abort requests, leases
//! with fencing tokens, versioned documents with compare-and-set (trusted
//! immudb states, capacity snapshots, heartbeat status), append-only
//! histories (drills, backup verifications) and run artifacts (reports).
//!
//! Which store a command uses is decided once, in [`locate`]: `--state`,
//! then `DRCTL_STATE`, then the environment file's `state:` section, then
//! `./state`.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

pub mod active;
pub mod bench;
pub mod dir;
pub mod holder;
pub mod locate;
pub mod postgres;

#[cfg(test)]
pub(crate) mod contract;

pub use dir::{write_atomic, DirStore};
pub use holder::HolderId;
pub use locate::{locate, open, StateLocation};

/// The store schema this drctl reads and writes (PostgreSQL backend; the
/// directory backend records it in `state.json`).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database: {op}")]
    Database {
        op: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("state store did not answer within {limit:?} ({op})")]
    Timeout { op: &'static str, limit: Duration },
    #[error("cannot connect to the state store {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("corrupt record in {path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("run `{0}` not found")]
    RunNotFound(String),
    #[error("run `{0}` already exists")]
    RunExists(String),
    #[error("lease `{name}` is held by {holder}")]
    LeaseHeld {
        name: String,
        holder: Box<LeaseRecord>,
    },
    /// The writer's lease was taken over or expired and reassigned: it
    /// must stop before its next side effect.
    #[error("lease `{name}` (epoch {epoch}) is no longer ours: {reason}")]
    Fenced {
        name: String,
        epoch: u64,
        reason: String,
    },
    /// A conditional journal append found another sequence number.
    #[error("journal of run `{run_id}` has {found} records, the writer expected {expected}")]
    SeqConflict {
        run_id: String,
        expected: u64,
        found: u64,
    },
    /// A compare-and-set on a document found another version.
    #[error(
        "document {collection}/{key} changed concurrently (expected {expected}, found {found})"
    )]
    Conflict {
        collection: String,
        key: String,
        expected: String,
        found: String,
    },
    #[error("state store schema is version {found}, this drctl needs {wanted}")]
    Schema { found: u32, wanted: u32 },
    #[error("state store at {url} is not initialised")]
    NotInitialised { url: String },
    #[error("invalid state location `{0}`")]
    BadLocation(String),
}

impl StoreError {
    /// A hint for the operator, rendered by the CLI.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            StoreError::Io { .. } => "choose a writable state location (--state DIR|URL or DRCTL_STATE)",
            StoreError::Database { .. } | StoreError::Timeout { .. } | StoreError::Connect { .. } => {
                "check that the state database is up (`drctl state check`); an interrupted run continues with `drctl resume RUN_ID`"
            }
            StoreError::NotInitialised { .. } => "run `drctl state init --state URL` once",
            StoreError::Schema { .. } => "run `drctl state init --state URL` with the newer drctl to migrate the schema",
            StoreError::Fenced { .. } => "another drctl process took over this environment's lease; see `drctl status`",
            StoreError::LeaseHeld { .. } => "wait for that run to finish, or `drctl abort` it",
            _ => return None,
        })
    }

    /// True when the store could not be reached or did not answer (as
    /// opposed to answering "no").
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. }
                | StoreError::Database { .. }
                | StoreError::Timeout { .. }
                | StoreError::Connect { .. }
        )
    }
}

/// Whether a lease excludes others.
///
/// A run whose steps are all read-only takes a shared lease; a run that
/// changes anything takes an exclusive one. Exclusive leases exclude each
/// other; shared leases exclude nothing (they make the holder visible), so
/// housekeeping never locks out a failover.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LeaseMode {
    Shared,
    Exclusive,
}

impl LeaseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseMode::Shared => "shared",
            LeaseMode::Exclusive => "exclusive",
        }
    }
}

/// A lease held by this process: the fencing token every conditional
/// write carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub name: String,
    pub mode: LeaseMode,
    /// Monotonically increasing per lease name: an exclusive acquisition
    /// always gets a higher epoch than every earlier one.
    pub epoch: u64,
    pub holder: HolderId,
    /// Expiry as the store's clock decided it (Unix ms).
    pub expires_at_ms: u64,
}

/// A lease as another process sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseRecord {
    pub mode: LeaseMode,
    pub epoch: u64,
    pub holder: HolderId,
    pub since_ms: u64,
    pub expires_at_ms: u64,
}

impl std::fmt::Display for LeaseRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} ({} lease, epoch {}, on {} pid {}, since {}, until {})",
            self.holder.run_id,
            self.mode.as_str(),
            self.epoch,
            self.holder.host,
            self.holder.pid,
            crate::journal::format_ms(self.since_ms),
            crate::journal::format_ms(self.expires_at_ms)
        )
    }
}

/// What acquiring a lease found.
#[derive(Debug)]
pub struct LeaseGrant {
    pub lease: Lease,
    /// An exclusive holder whose lease expired or whose process is gone.
    pub took_over: Option<LeaseRecord>,
}

/// The condition of a compare-and-set write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write only if the document does not exist yet.
    Absent,
    /// Write only if the document is at this version.
    Version(u64),
    /// Unconditional (last writer wins): only for documents one writer owns.
    Any,
}

/// A document and the version a compare-and-set must quote.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub version: u64,
    pub doc: Value,
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

/// New journal bytes since a cursor: only complete records, so a reader
/// never sees half a line.
#[derive(Debug, Clone, Default)]
pub struct JournalChunk {
    pub bytes: Vec<u8>,
    /// Pass back to read the records after these.
    pub next: u64,
    /// With no complete record left: the bytes of an incomplete final line
    /// after `next` (a torn write, never acknowledged); always 0 for
    /// PostgreSQL, whose rows are whole.
    pub torn: usize,
}

/// What `drctl state check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub location: String,
    pub schema_version: u32,
    /// Store clock minus this machine's clock (PostgreSQL; 0 for a directory).
    pub clock_skew_ms: i64,
    pub runs: usize,
}

/// One run as `prune` sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub last_write_ms: u64,
}

/// The state contract every backend implements.
///
/// # Guarantees
/// - **Journals** are append-only. [`Store::append_journal`] succeeds only
///   when the journal holds exactly `seq` records and `lease` is still the
///   current lease of its name with the same epoch and holder; otherwise it
///   fails with [`StoreError::SeqConflict`] or [`StoreError::Fenced`] and
///   writes nothing. A successful append is durable (fsync'd, or committed)
///   before it returns.
/// - **Leases**: [`Store::acquire_lease`] in exclusive mode fails with
///   [`StoreError::LeaseHeld`] while another live exclusive holder exists;
///   every exclusive grant has a higher epoch than all earlier ones. Expiry
///   is decided by the store's clock (the database's `now()` for
///   PostgreSQL). A holder whose process is provably gone (same host, pid
///   absent or restarted) is taken over at once. Shared leases exclude
///   nothing.
/// - **Documents**: [`Store::put_doc`] with [`Expect::Absent`] or
///   [`Expect::Version`] writes only if the condition holds, so two writers
///   cannot silently overwrite each other.
/// - **Histories** are append-only; records are returned in append order.
///
/// # Caveats
/// - An expired lease that nobody took over still renews and appends: a
///   lease is lost only when another holder is granted it.
/// - `since_ms`/`expires_at_ms` come from the store's clock; compare them
///   with local time only allowing for [`Health::clock_skew_ms`].
/// - Journal records are text lines (UTF-8, no newline or NUL).
/// - The directory backend decides expiry with the local clock and fences
///   with `flock` on a local filesystem: it is for one host. Teams,
///   CronJobs and the heartbeat share the PostgreSQL backend.
/// - A fenced writer learns of the takeover at its next journal append or
///   lease renewal; an effect it is in the middle of is not undone.
#[async_trait]
pub trait Store: Send + Sync {
    /// Human description, e.g. `local directory ./state`.
    fn describe(&self) -> String;
    /// The `--state` value that reaches this store again (printed in
    /// follow-up commands). Never contains a password.
    fn location(&self) -> String;

    async fn health(&self) -> Result<Health, StoreError>;

    /// Creates a journal whose first record is `first` (seq 0).
    async fn create_journal(
        &self,
        run_id: &str,
        lease: &Lease,
        first: &[u8],
    ) -> Result<(), StoreError>;
    /// Appends record `seq` (a line without newline) if the journal holds
    /// exactly `seq` records and `lease` is current.
    async fn append_journal(
        &self,
        run_id: &str,
        lease: &Lease,
        seq: u64,
        line: &[u8],
    ) -> Result<(), StoreError> {
        self.append_records(run_id, lease, seq, &[line]).await
    }
    /// Appends records `seq`, `seq + 1`, … (lines without newline) under
    /// the same conditions as [`Store::append_journal`], with one durable
    /// write: a group commit, so a step's `step_finished` and the next
    /// step's `step_started` cost one fsync or one commit, not two.
    ///
    /// # Guarantees
    /// All or nothing for the conditions (seq, lease). On PostgreSQL the
    /// records commit together. In a directory a crash mid-write can leave
    /// a prefix of them plus a torn line, which the torn-tail repair cuts
    /// back to the last complete record; nothing after the batch was acted
    /// on, since the caller acts only once the call returns.
    async fn append_records(
        &self,
        run_id: &str,
        lease: &Lease,
        seq: u64,
        lines: &[&[u8]],
    ) -> Result<(), StoreError>;
    /// Drops an incomplete final record (a write torn by a crash) so that
    /// the journal holds only complete records; returns the bytes removed.
    async fn repair_torn_tail(
        &self,
        run_id: &str,
        lease: &Lease,
        complete_len: u64,
    ) -> Result<u64, StoreError>;
    /// The whole journal as JSON Lines.
    async fn read_journal(&self, run_id: &str) -> Result<Vec<u8>, StoreError>;
    /// Complete records after `cursor` (0 = from the start). Cursors are
    /// opaque (a byte offset for a directory, a record count for
    /// PostgreSQL): pass back only the `next` of a previous chunk.
    async fn read_journal_from(
        &self,
        run_id: &str,
        cursor: u64,
    ) -> Result<JournalChunk, StoreError>;
    /// [`Self::read_journal_from`] bounded: complete records after
    /// `cursor` totalling at most `max_bytes`, or the one next record when
    /// it alone is larger (so a reader always progresses). Empty at the
    /// end. Readers that fold a whole journal (reports, status) read it in
    /// such chunks, so their memory does not hold the journal's bytes.
    async fn read_journal_chunk(
        &self,
        run_id: &str,
        cursor: u64,
        max_bytes: usize,
    ) -> Result<JournalChunk, StoreError>;
    /// Run ids, oldest first.
    async fn list_runs(&self) -> Result<Vec<String>, StoreError>;
    /// Runs with the time of their last journal write, oldest first.
    async fn run_summaries(&self) -> Result<Vec<RunSummary>, StoreError>;
    /// Deletes a run (journal, approvals, artifacts).
    async fn delete_run(&self, run_id: &str) -> Result<(), StoreError>;
    /// A human-facing path or URL for the run's journal.
    fn journal_location(&self, run_id: &str) -> String;

    async fn put_approval(&self, run_id: &str, step: &str, a: &Approval) -> Result<(), StoreError>;
    async fn get_approval(&self, run_id: &str, step: &str) -> Result<Option<Approval>, StoreError>;
    async fn request_abort(&self, run_id: &str, by: &str) -> Result<(), StoreError>;
    async fn abort_requested(&self, run_id: &str) -> Result<Option<String>, StoreError>;

    async fn acquire_lease(
        &self,
        name: &str,
        mode: LeaseMode,
        holder: &HolderId,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError>;
    /// Extends a lease; fails with [`StoreError::Fenced`] when it is no
    /// longer ours.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError>;
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Live holders of a lease name.
    async fn leases(&self, name: &str) -> Result<Vec<LeaseRecord>, StoreError>;

    /// Stores a rendered file beside a run (e.g. its report); returns where.
    async fn put_artifact(
        &self,
        run_id: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, StoreError>;
    async fn get_artifact(&self, run_id: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    async fn get_doc(&self, collection: &str, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Compare-and-set; returns the new version.
    async fn put_doc(
        &self,
        collection: &str,
        key: &str,
        doc: &Value,
        expect: Expect,
    ) -> Result<u64, StoreError>;
    async fn append_history(&self, collection: &str, record: &Value) -> Result<(), StoreError>;
    async fn read_history(&self, collection: &str) -> Result<Vec<Value>, StoreError>;
}
