//! The run journal: append-only JSON Lines, hash-chained, fsync'd per record.
//!
//! It is the single source of truth for what happened: status, resume and
//! reports read nothing else. Each record carries a format version, a
//! sequence number, timestamps and the SHA-256 of the previous line's bytes,
//! so one changed byte anywhere breaks the chain and is reported with a
//! stable code instead of being trusted.
//!
//! Split by concern: [`record`] holds what a record says (the events and
//! their types, the journal's schema); [`chain`] how a record becomes its
//! canonical line and how a journal is verified; [`writer`] how records
//! reach the store durably under the run's lease. This module holds the
//! errors, the clock and host helpers every part uses, and the named crash
//! points for tests.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::store::StoreError;

mod chain;
mod record;
mod writer;

pub use chain::{encode, verify, Verified, Verifier};
pub use record::{
    ErrorInfo, Event, FailureKind, FileRef, Record, RunOptions, RunStatus, StepStatus,
};
pub use writer::JournalWriter;

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
