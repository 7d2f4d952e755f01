//! The run journal: append-only JSON Lines, hash-chained, fsync'd per record.
//!
//! It is the single source of truth for what happened: status, resume and
//! reports read nothing else. Each record carries a format version, a
//! sequence number, timestamps and the SHA-256 of the previous line's bytes,
//! so one changed byte anywhere breaks the chain and is reported with a
//! stable code instead of being trusted.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

use std::sync::Arc;

use crate::store::{Lease, Store, StoreError};

pub const FORMAT_VERSION: u32 = 1;
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("[DRCTL-J001] journal hash chain broken at record {seq} (line {line}): prev {found} != hash of previous line {expected}")]
    ChainBroken {
        line: usize,
        seq: u64,
        expected: String,
        found: String,
    },
    #[error("[DRCTL-J007] journal record {seq} (line {line}) does not match its own hash: it was modified")]
    RecordHash { line: usize, seq: u64 },
    #[error(
        "[DRCTL-J002] journal sequence gap at line {line}: expected seq {expected}, found {found}"
    )]
    SequenceGap {
        line: usize,
        expected: u64,
        found: u64,
    },
    #[error("[DRCTL-J003] journal record at line {line} is not valid: {reason}")]
    BadRecord { line: usize, reason: String },
    #[error("[DRCTL-J004] journal record at line {line} has format version {version}; this drctl reads up to {FORMAT_VERSION}")]
    UnsupportedVersion { line: usize, version: u32 },
    #[error("[DRCTL-J005] journal does not start with a run_started record")]
    NoStart,
    /// Not damage: drctl stopped (a crash, kill -9, power loss) while the
    /// run's very first record was being written, so nothing ran.
    #[error("[DRCTL-J009] the journal holds no complete record: drctl stopped while writing the run's first record, before any step ran")]
    NeverStarted,
    #[error("[DRCTL-J006] cannot write journal; the run stopped before the next side effect")]
    Write(#[source] StoreError),
    /// Another process owns the run now (its lease was taken over).
    #[error("[DRCTL-J008] another drctl process took over this run's lease; this one stopped before its next side effect")]
    Fenced(#[source] StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl JournalError {
    /// Errors that mean the journal cannot be trusted (as opposed to I/O).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            JournalError::ChainBroken { .. }
                | JournalError::RecordHash { .. }
                | JournalError::SequenceGap { .. }
                | JournalError::BadRecord { .. }
                | JournalError::UnsupportedVersion { .. }
                | JournalError::NoStart
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileRef {
    pub name: String,
    pub path: String,
    pub sha256: String,
}

/// Run-wide switches an operator set explicitly; journaled at run start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunOptions {
    /// Promote even when the standby lags beyond the step's limit.
    #[serde(default)]
    pub accept_data_loss: bool,
    /// Override split-brain and similar guards.
    #[serde(default)]
    pub force: bool,
    /// A human is at a terminal and can answer prompts.
    #[serde(default, skip_serializing)]
    pub interactive: bool,
    /// An isolated drill (`mode: isolated`): every DNS-changing step
    /// refuses a record not declared `drill: true`, so the rehearsal cannot
    /// touch production names. Journaled in `run_started` (absent when
    /// false, so older journals keep their bytes), so a resume keeps it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub kind: FailureKind,
}

/// How a step or attempt failed. Journaled as a snake_case string
/// (`"failed"`, `"timeout"`, ...), the same bytes the journal held when
/// this was a free-form string, so older journals verify and fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The action ran and the system did not reach the desired state.
    Failed,
    /// The attempt ran out of its `timeout`.
    Timeout,
    /// A guard refused to act (split brain, too much lag): not retried.
    Refused,
    /// An approval step is waiting for `drctl approve`: the run parks.
    AwaitingApproval,
    /// The step was cut off by the run stopping.
    Interrupted,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Failed => "failed",
            FailureKind::Timeout => "timeout",
            FailureKind::Refused => "refused",
            FailureKind::AwaitingApproval => "awaiting_approval",
            FailureKind::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// One run_started per journal: boxing it would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    RunStarted {
        run_id: String,
        runbook: FileRef,
        #[serde(default)]
        environment: Option<FileRef>,
        mode: crate::runbook::model::Mode,
        operator: String,
        host: String,
        pid: u32,
        params: Map<String, Value>,
        #[serde(default)]
        target_region: Option<String>,
        #[serde(default)]
        source_region: Option<String>,
        options: RunOptions,
        /// Declared failure time (incident start or injected failure), ms.
        #[serde(default)]
        failed_at_ms: Option<u64>,
        /// The runbook's targets, so reports need nothing but the journal.
        #[serde(default)]
        rto_target_ms: Option<u64>,
        #[serde(default)]
        rpo_target_ms: Option<u64>,
        drctl_version: String,
        /// The lease the run took: exclusive when it may change something.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_mode: Option<crate::store::LeaseMode>,
        /// Ids of the steps whose success proves recovery (decided from the
        /// runbook at run start), so RTO never depends on the runbook file
        /// a report is computed with. Absent in older journals.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proofs: Option<Vec<String>>,
    },
    RunResumed {
        operator: String,
        host: String,
        pid: u32,
        #[serde(default)]
        runbook_changed: bool,
        #[serde(default)]
        decisions: BTreeMap<String, String>,
        /// Bytes of a torn final record (a write cut by a crash) that were
        /// truncated before this record was appended.
        #[serde(default, skip_serializing_if = "is_zero")]
        repaired_tail_bytes: u64,
        /// Content hash of a changed environment file the operator
        /// accepted (`--allow-env-change`): the run is bound to it from here.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment_sha256: Option<String>,
        /// `--param` values given to resume (typed), replacing the run's.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        params: Map<String, Value>,
        /// `--accept-data-loss` given to resume: in effect from here on.
        #[serde(default, skip_serializing_if = "is_false")]
        accept_data_loss: bool,
        /// `--force` given to resume: in effect from here on.
        #[serde(default, skip_serializing_if = "is_false")]
        force: bool,
        /// `--yes`: the operator resumed without being asked anything.
        #[serde(default, skip_serializing_if = "is_false")]
        yes: bool,
        /// The recovery proofs of a changed runbook (`--allow-runbook-change`):
        /// they replace the run's from here on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proofs: Option<Vec<String>>,
    },
    StepStarted {
        step: String,
        action: String,
        inputs: Value,
    },
    StepAttemptFailed {
        step: String,
        attempt: u32,
        error: ErrorInfo,
        retry_in_ms: u64,
    },
    StepFinished {
        step: String,
        status: StepStatus,
        #[serde(default)]
        outputs: Map<String, Value>,
        #[serde(default)]
        error: Option<ErrorInfo>,
        attempts: u32,
        duration_ms: u64,
    },
    StepSkipped {
        step: String,
        reason: String,
    },
    /// An action's pre-effect state (e.g. the DNS values before a switch),
    /// saved through the engine so that a resumed step finds it.
    StepCheckpoint {
        step: String,
        data: Value,
    },
    Approval {
        step: String,
        by: String,
        at: String,
        via: String,
    },
    Note {
        #[serde(default)]
        step: Option<String>,
        message: String,
        #[serde(default)]
        data: Value,
    },
    RunFinished {
        status: RunStatus,
        #[serde(default)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Interrupted,
    WaitingApproval,
    Aborted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::WaitingApproval => "waiting-approval",
            RunStatus::Aborted => "aborted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub seq: u64,
    pub ts: String,
    pub ts_ms: u64,
    pub prev: String,
    #[serde(flatten)]
    pub event: Event,
    /// SHA-256 of the record's canonical JSON without this field; the next
    /// record's `prev`. Protects the last record, which nothing follows.
    #[serde(default)]
    pub hash: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

pub fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn now_rfc3339() -> String {
    format_ms(now_ms())
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Fault injection for crash tests: with `DRCTL_TEST_CRASH_AFTER_SEQ=N` the
/// process kills itself with SIGKILL right after record N is durable, so a
/// test can stop drctl at every step boundary exactly. Never set it in
/// production; it is read once per process.
fn crash_point(seq: u64) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("DRCTL_TEST_CRASH_AFTER_SEQ")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *at == Some(seq) {
        // SAFETY: raising SIGKILL on ourselves; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Named crash points inside actions, for tests of mid-step kills:
/// `DRCTL_TEST_CRASH_AT=promote` kills the process right after
/// `pg_promote()` was issued. Never set it in production.
pub fn test_crash_at(point: &str) {
    if std::env::var("DRCTL_TEST_CRASH_AT").is_ok_and(|p| p == point) {
        // SAFETY: raising SIGKILL on ourselves; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Appends records durably through the store. Holding one means owning
/// the run: every append carries the run's lease (the fencing token) and
/// the sequence number it expects, so a writer whose lease was taken over
/// cannot add a record.
///
/// # Guarantees
/// [`JournalWriter::append`] returns only once its record, and every
/// record staged before it, is durable: callers act on that. Records are
/// written in sequence order, one chain.
///
/// # Caveats
/// A [`JournalWriter::stage`]d record (a conclusion, such as a finished
/// step, that guards no side effect) is held in memory until the next
/// append or [`JournalWriter::flush`]; a crash before then loses it, and
/// resume re-runs that step (steps are idempotent). The engine flushes
/// before it waits for anything, so this window spans no work.
pub struct JournalWriter {
    store: Arc<dyn Store>,
    run_id: String,
    lease: Lease,
    next_seq: u64,
    last_hash: String,
    /// Staged records: encoded and chained, not yet written.
    pending: Vec<(u64, Vec<u8>)>,
    /// Sequence number of the first staged record (= durable count).
    durable_seq: u64,
    /// Hash of the last durable record: where the chain restarts if a
    /// flush fails.
    durable_hash: String,
}

impl JournalWriter {
    /// Creates the run's journal with its `run_started` record.
    pub async fn create(
        store: Arc<dyn Store>,
        run_id: &str,
        lease: Lease,
        first: Event,
    ) -> Result<(Self, Record), JournalError> {
        let mut w = JournalWriter::resume(store, run_id, lease, 0, GENESIS.to_string());
        let rec = w.append(first).await?;
        Ok((w, rec))
    }

    /// Continues an existing, verified journal.
    pub fn resume(
        store: Arc<dyn Store>,
        run_id: &str,
        lease: Lease,
        next_seq: u64,
        last_hash: String,
    ) -> Self {
        JournalWriter {
            store,
            run_id: run_id.to_string(),
            lease,
            next_seq,
            pending: Vec::new(),
            durable_seq: next_seq,
            durable_hash: last_hash.clone(),
            last_hash,
        }
    }

    /// Writes one record, with any staged before it, and returns only once
    /// they are durable. Secret values are masked before hashing and
    /// serialisation, so they never reach disk.
    pub async fn append(&mut self, event: Event) -> Result<Record, JournalError> {
        let rec = self.stage(event)?;
        self.flush().await?;
        Ok(rec)
    }

    /// Adds a record to the chain without writing it yet: the next
    /// [`JournalWriter::append`] or [`JournalWriter::flush`] writes it in
    /// the same durable write (a group commit). Only for records that no
    /// side effect waits on.
    pub fn stage(&mut self, event: Event) -> Result<Record, JournalError> {
        let (rec, line) = encode(self.next_seq, &self.last_hash, event)?;
        self.last_hash = rec.hash.clone();
        self.next_seq += 1;
        self.pending.push((rec.seq, line));
        Ok(rec)
    }

    /// Makes every staged record durable (one write). A no-op when none is
    /// staged. On failure the staged records are dropped and the chain
    /// goes back to the last durable record, so nothing unwritten is
    /// chained on.
    pub async fn flush(&mut self) -> Result<(), JournalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let first = self.durable_seq;
        let res = if first == 0 {
            // Record 0 creates the journal; `create` stages nothing before it.
            let (seq0, line0) = &pending[0];
            debug_assert_eq!(*seq0, 0);
            let created = self
                .store
                .create_journal(&self.run_id, &self.lease, line0)
                .await;
            match created {
                Ok(()) if pending.len() > 1 => {
                    let rest: Vec<&[u8]> = pending[1..].iter().map(|(_, l)| l.as_slice()).collect();
                    self.store
                        .append_records(&self.run_id, &self.lease, 1, &rest)
                        .await
                }
                other => other,
            }
        } else {
            let lines: Vec<&[u8]> = pending.iter().map(|(_, l)| l.as_slice()).collect();
            self.store
                .append_records(&self.run_id, &self.lease, first, &lines)
                .await
        };
        if let Err(e) = res {
            self.next_seq = self.durable_seq;
            self.last_hash = self.durable_hash.clone();
            return Err(match e {
                e @ (StoreError::Fenced { .. } | StoreError::SeqConflict { .. }) => {
                    JournalError::Fenced(e)
                }
                e => JournalError::Write(e),
            });
        }
        self.durable_seq += pending.len() as u64;
        self.durable_hash = self.last_hash.clone();
        for (seq, _) in &pending {
            crash_point(*seq);
        }
        Ok(())
    }

    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn set_lease(&mut self, lease: Lease) {
        self.lease = lease;
    }
}

/// Builds record `seq` and its canonical line (secrets masked, hash set).
pub fn encode(seq: u64, prev: &str, event: Event) -> Result<(Record, Vec<u8>), JournalError> {
    let ts_ms = now_ms();
    let mut rec = Record {
        v: FORMAT_VERSION,
        seq,
        ts: format_ms(ts_ms),
        ts_ms,
        prev: prev.to_string(),
        event,
        hash: String::new(),
    };
    let bad = |e: serde_json::Error| JournalError::BadRecord {
        line: 0,
        reason: e.to_string(),
    };
    let mut value = serde_json::to_value(&rec).map_err(bad)?;
    crate::secret::redact_json(&mut value);
    let Value::Object(mut obj) = value else {
        return Err(JournalError::BadRecord {
            line: 0,
            reason: "record is not an object".into(),
        });
    };
    obj.remove("hash");
    let hash = sha256_hex(&serde_json::to_vec(&obj).map_err(bad)?);
    obj.insert("hash".into(), Value::String(hash.clone()));
    let line = serde_json::to_vec(&obj).map_err(bad)?;
    rec.hash = hash;
    Ok((rec, line))
}

/// A journal read back and verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub records: Vec<Record>,
    /// Hash of the last record: the chain head a report quotes.
    pub head: String,
    /// Bytes of an incomplete final line (a write torn by power loss).
    pub torn_tail: usize,
    pub complete_len: usize,
}

/// Verifies a journal incrementally: feed it bytes as they arrive (a
/// `status --follow` poll reads only new records), and it checks each
/// complete line against the chain so far. Cost is linear in the bytes fed.
#[derive(Debug, Clone)]
pub struct Verifier {
    expected_prev: String,
    next_seq: u64,
    line_no: usize,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            expected_prev: GENESIS.to_string(),
            next_seq: 0,
            line_no: 0,
        }
    }
}

impl Verifier {
    /// Verifies the complete lines in `bytes` (which must start at a line
    /// boundary) and returns their records and the length of an incomplete
    /// final line, which is not consumed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(Vec<Record>, usize), JournalError> {
        let mut records = Vec::new();
        let torn = self.feed_each(bytes, |r| records.push(r))?;
        Ok((records, torn))
    }

    /// [`Self::feed`] without keeping the records: each verified record is
    /// handed to `each` in order, so a reader that folds them (status,
    /// reports) holds one record at a time, not the whole journal.
    pub fn feed_each(
        &mut self,
        bytes: &[u8],
        mut each: impl FnMut(Record),
    ) -> Result<usize, JournalError> {
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(nl) = bytes[pos..].iter().position(|b| *b == b'\n') else {
                return Ok(bytes.len() - pos);
            };
            let line = &bytes[pos..pos + nl];
            pos += nl + 1;
            self.line_no += 1;
            each(self.check_line(line)?);
        }
        Ok(0)
    }

    /// The hash of the last verified record.
    pub fn head(&self) -> &str {
        &self.expected_prev
    }

    pub fn records(&self) -> u64 {
        self.next_seq
    }

    fn check_line(&mut self, line: &[u8]) -> Result<Record, JournalError> {
        let line_no = self.line_no;
        let bad = |reason: String| JournalError::BadRecord {
            line: line_no,
            reason,
        };
        let value: Value = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        let not_canonical = || bad("record is not in canonical form (edited?)".into());
        let Value::Object(mut obj) = value else {
            if serde_json::to_vec(&value).map_err(|e| bad(e.to_string()))? != line {
                return Err(not_canonical());
            }
            return Err(bad("record is not a JSON object".into()));
        };
        // Lines are written in canonical form (compact, sorted keys); any
        // other spelling of the same JSON was produced by an edit. One
        // serialization, member by member as serde_json writes a map, both
        // checks that and finds the `hash` member: the record's hash is
        // over the same bytes without it (what `encode` hashed).
        let (canon, hash_span) = canonical_members(&obj).map_err(|e| bad(e.to_string()))?;
        if canon != line {
            return Err(not_canonical());
        }
        let stored = match obj.remove("hash") {
            Some(Value::String(h)) => h,
            _ => return Err(bad("record has no hash".into())),
        };
        let computed = match hash_span {
            Some((from, to)) => {
                let mut h = Sha256::new();
                h.update(&canon[..from]);
                h.update(&canon[to..]);
                hex::encode(h.finalize())
            }
            None => sha256_hex(&canon),
        };
        let mut rec: Record =
            serde_json::from_value(Value::Object(obj)).map_err(|e| bad(e.to_string()))?;
        rec.hash = stored.clone();
        if rec.v > FORMAT_VERSION {
            return Err(JournalError::UnsupportedVersion {
                line: line_no,
                version: rec.v,
            });
        }
        if rec.seq != self.next_seq {
            return Err(JournalError::SequenceGap {
                line: line_no,
                expected: self.next_seq,
                found: rec.seq,
            });
        }
        if computed != stored {
            return Err(JournalError::RecordHash {
                line: line_no,
                seq: rec.seq,
            });
        }
        if rec.prev != self.expected_prev {
            return Err(JournalError::ChainBroken {
                line: line_no,
                seq: rec.seq,
                expected: self.expected_prev.clone(),
                found: rec.prev,
            });
        }
        if rec.seq == 0 && !matches!(rec.event, Event::RunStarted { .. }) {
            return Err(JournalError::NoStart);
        }
        self.expected_prev = stored;
        self.next_seq += 1;
        Ok(rec)
    }
}

/// A byte range `[from, to)`.
type Span = (usize, usize);

/// `obj` serialized as `serde_json::to_vec` does (compact; a map's members
/// in key order), and the byte range of its `hash` member with one
/// adjoining comma, so that removing the range leaves the serialization
/// of `obj` without it.
fn canonical_members(
    obj: &Map<String, Value>,
) -> Result<(Vec<u8>, Option<Span>), serde_json::Error> {
    let mut out = Vec::with_capacity(512);
    let mut span = None;
    out.push(b'{');
    for (i, (k, v)) in obj.iter().enumerate() {
        let start = out.len();
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k)?;
        out.push(b':');
        serde_json::to_writer(&mut out, v)?;
        if k == "hash" {
            // First member: take the comma that follows it instead.
            let end = if i == 0 && obj.len() > 1 {
                out.len() + 1
            } else {
                out.len()
            };
            span = Some((start, end));
        }
    }
    out.push(b'}');
    Ok((out, span))
}

/// Parses and verifies the whole chain.
pub fn verify(bytes: &[u8]) -> Result<Verified, JournalError> {
    let mut v = Verifier::default();
    let (records, torn_tail) = v.feed(bytes)?;
    if records.is_empty() {
        // Empty, or one torn line: a first write that never completed.
        return Err(JournalError::NeverStarted);
    }
    Ok(Verified {
        records,
        head: v.expected_prev,
        torn_tail,
        complete_len: bytes.len() - torn_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes events into journal bytes without a store.
    fn lines(events: Vec<Event>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        for (seq, e) in events.into_iter().enumerate() {
            let (rec, line) = encode(seq as u64, &prev, e).unwrap();
            prev = rec.hash;
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        out
    }

    fn sample() -> Vec<u8> {
        lines(vec![
            Event::RunStarted {
                run_id: "r".into(),
                runbook: FileRef {
                    name: "x".into(),
                    path: "x.yaml".into(),
                    sha256: "00".into(),
                },
                environment: None,
                mode: crate::runbook::model::Mode::Drill,
                operator: "op".into(),
                host: "h".into(),
                pid: 1,
                params: Map::new(),
                target_region: None,
                source_region: None,
                options: RunOptions::default(),
                failed_at_ms: None,
                rto_target_ms: None,
                rpo_target_ms: None,
                drctl_version: "0".into(),
                lease_mode: None,
                proofs: None,
            },
            Event::StepStarted {
                step: "a".into(),
                action: "wait".into(),
                inputs: Value::Null,
            },
            Event::RunFinished {
                status: RunStatus::Succeeded,
                reason: None,
            },
        ])
    }

    #[test]
    fn verifies_clean_journal() {
        let v = verify(&sample()).unwrap();
        assert_eq!(v.records.len(), 3);
        assert_eq!(v.torn_tail, 0);
    }

    #[test]
    fn every_single_byte_change_is_detected() {
        let good = sample();
        let mut undetected = Vec::new();
        for i in 0..good.len() {
            let mut bad = good.clone();
            // Flip to a different printable byte so JSON often stays valid.
            bad[i] = if bad[i] == b'0' {
                b'1'
            } else if bad[i] == b'\n' {
                b' '
            } else {
                b'0'
            };
            if let Ok(v) = verify(&bad) {
                if v.torn_tail == 0 {
                    undetected.push(i);
                }
            }
        }
        assert!(
            undetected.is_empty(),
            "undetected changes at byte offsets {undetected:?}"
        );
    }

    /// The one-pass serialization is serde_json's, and cutting the hash
    /// member out of it gives serde_json's serialization without it,
    /// wherever the member sits.
    #[test]
    fn canonical_members_match_serde_json_with_and_without_the_hash() {
        for text in [
            r#"{"event":{"a":[1,"x"]},"hash":"ab","prev":"cd","v":1}"#,
            r#"{"hash":"ab","prev":"cd"}"#,
            r#"{"a":1,"hash":"ab"}"#,
            r#"{"hash":"ab"}"#,
            r#"{"a":"no hash \u0001 é"}"#,
        ] {
            let Value::Object(mut obj) = serde_json::from_str::<Value>(text).unwrap() else {
                panic!()
            };
            let (canon, span) = canonical_members(&obj).unwrap();
            assert_eq!(canon, serde_json::to_vec(&obj).unwrap(), "{text}");
            let had = obj.remove("hash").is_some();
            assert_eq!(span.is_some(), had, "{text}");
            if let Some((from, to)) = span {
                let cut = [&canon[..from], &canon[to..]].concat();
                assert_eq!(cut, serde_json::to_vec(&obj).unwrap(), "{text}");
            }
        }
    }

    #[test]
    fn torn_tail_is_reported_not_trusted() {
        let mut b = sample();
        b.extend_from_slice(b"{\"v\":1,\"seq\":3");
        let v = verify(&b).unwrap();
        assert_eq!(v.records.len(), 3);
        assert!(v.torn_tail > 0);
    }

    /// The enum writes the strings the journal always held, and a line
    /// written when `kind` was a plain string reads back as the enum.
    #[test]
    fn failure_kinds_keep_their_journal_spelling() {
        let all = [
            (FailureKind::Failed, "failed"),
            (FailureKind::Timeout, "timeout"),
            (FailureKind::Refused, "refused"),
            (FailureKind::AwaitingApproval, "awaiting_approval"),
            (FailureKind::Interrupted, "interrupted"),
        ];
        for (kind, text) in all {
            let info = ErrorInfo {
                message: "m".into(),
                hint: None,
                kind,
            };
            assert_eq!(
                serde_json::to_string(&info).unwrap(),
                format!(r#"{{"message":"m","kind":"{text}"}}"#)
            );
            let old: ErrorInfo =
                serde_json::from_str(&format!(r#"{{"kind":"{text}","message":"m"}}"#)).unwrap();
            assert_eq!(old.kind, kind);
            assert_eq!(kind.to_string(), text);
        }
    }
}
