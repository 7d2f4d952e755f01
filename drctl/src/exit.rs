//! Exit codes: the one documented place (README "Exit codes" mirrors it).
//!
//! Scripts and CronJobs branch on these, so they never change meaning.

/// Everything went as asked.
pub const OK: i32 = 0;
/// A bug or an unexpected environment problem (I/O outside the journal).
pub const INTERNAL: i32 = 1;
/// Bad command line (unknown flag, missing argument).
pub const USAGE: i32 = 2;
/// A runbook, environment or check file is invalid; nothing was run.
pub const INVALID_INPUT: i32 = 3;
/// `plan --check`: a preflight found a step that would fail the run and
/// that no earlier step is expected to fix.
pub const PREFLIGHT_FAILED: i32 = 4;
/// The run ended `failed`: a step failed and the run stopped.
pub const RUN_FAILED: i32 = 5;
/// Another run holds the environment's lock.
pub const LOCK_HELD: i32 = 6;
/// The run ended `interrupted` or `aborted`; `drctl resume` continues an interrupted one.
pub const RUN_INTERRUPTED: i32 = 7;
/// The run is parked `waiting-approval`: `drctl approve`, then `drctl resume`.
pub const WAITING_APPROVAL: i32 = 8;
/// The journal failed verification (hash chain broken, edited record).
pub const JOURNAL_CORRUPT: i32 = 9;
/// The journal could not be written; the run stopped before its next side effect.
pub const JOURNAL_WRITE: i32 = 10;
/// Resume refused: the runbook or environment file changed since the run started.
pub const RUNBOOK_CHANGED: i32 = 11;
/// A drill finished but missed its RTO or RPO target, or could not show it
/// met (the figure is unknown, or the service was not shown recovered).
pub const TARGET_MISSED: i32 = 12;
/// immudb verification rejected the state or a proof.
pub const VERIFY_REJECTED: i32 = 13;
/// immudb replica is behind the trusted state (data loss).
pub const VERIFY_BEHIND: i32 = 14;
/// Resume needs an operator decision about an interrupted step.
pub const NEEDS_DECISION: i32 = 15;
/// The operator declined the confirmation prompt (or no TTY and no --yes),
/// or an approval was refused (`distinct_approver`: not by the run's starter).
pub const NOT_CONFIRMED: i32 = 16;
/// The run or file asked for does not exist.
pub const NOT_FOUND: i32 = 17;
/// This run's lease was taken over by another drctl process (it was paused
/// or cut off past its lease); it stopped before its next side effect.
pub const LEASE_LOST: i32 = 18;
/// The state store (directory or database) cannot be reached or is not
/// initialised; nothing was done.
pub const STATE_UNAVAILABLE: i32 = 19;
/// The run already ended (succeeded or aborted): `resume`, `approve` and
/// `abort` of it did nothing. A failed run has not ended: it resumes.
pub const RUN_ENDED: i32 = 20;
/// immudb could not be asked (connection refused, timeout, TLS, an HTTP
/// error status such as 5xx or a refused login): nothing was verified, so
/// this is an outage or a configuration problem, never evidence of
/// tampering (that is `VERIFY_REJECTED`).
pub const IMMUDB_UNAVAILABLE: i32 = 21;
/// A drill refused to start: the lab or environment is not in its initial
/// state (the primary region's server is not the primary, or the DR server
/// is not a streaming standby); nothing was injected.
pub const NOT_INITIAL: i32 = 22;
/// `verify-backup`: the backup could not be restored (a tool failed, the
/// restored server did not start or recover, the target time lies beyond
/// the archive).
pub const BACKUP_CANNOT_RESTORE: i32 = 30;
/// `verify-backup`: the backup restored, but to a point older than the
/// independent expectation (the newest archived WAL segment, the backup's
/// stop LSN, the primary's heartbeat); the gap is in the output.
pub const BACKUP_OLD_POINT: i32 = 31;
/// `verify-backup`: a data check failed on the restored copy
/// (pg_verifybackup, pg_amcheck, a check-set assertion, the full read,
/// pg_checksums); the message names it.
pub const BACKUP_CHECK_FAILED: i32 = 32;
/// `verify-backup`: the newest backup is older than the source's `max_age`.
pub const BACKUP_TOO_OLD: i32 = 33;
/// `verify-backup`: the verification itself could not run (no disk, a
/// tool missing, no backup found, the state store); nothing was proven.
pub const BACKUP_NOT_VERIFIED: i32 = 34;
/// `failback` refused: the run named is not a completed failover (or the
/// primary is no longer where it put it); nothing was changed.
pub const NOT_A_FAILOVER: i32 = 40;
/// `failback` refused: the old primary's node cannot be reached (its data
/// directory is needed to extract and rewind); nothing was changed.
pub const OLD_PRIMARY_UNREACHABLE: i32 = 41;
/// `failback` refused: a DNS record changed since the failover (neither
/// the failover's value nor the one before); nothing was changed.
pub const DNS_DRIFT: i32 = 42;
/// `failback` refused: a replica count or HPA bound changed since the
/// failover scaled it (neither the failover's value nor the one before);
/// nothing was changed.
pub const KUBE_DRIFT: i32 = 43;
/// `report verify`: the report does not match its run's journal (an edited
/// figure or word, another run, or a journal that changed since).
pub const REPORT_MISMATCH: i32 = 50;
/// `report verify --public-key`: the report is unsigned, signed with
/// another key, or its signature over the journal head does not verify.
pub const SIGNATURE_REJECTED: i32 = 51;
/// `report verify` of an anchored report: the immudb ledger proves the
/// journal head it held when anchored, and the journal no longer has it
/// (edited after anchoring).
pub const ANCHOR_MISMATCH: i32 = 52;

pub const TABLE: &[(i32, &str, &str)] = &[
    (OK, "ok", "success"),
    (
        INTERNAL,
        "internal",
        "unexpected error (a bug, or I/O outside the journal)",
    ),
    (USAGE, "usage", "bad command line"),
    (
        INVALID_INPUT,
        "invalid-input",
        "runbook, environment or check file invalid; nothing ran",
    ),
    (
        PREFLIGHT_FAILED,
        "preflight-failed",
        "plan --check found a step that would fail the run (a problem no earlier step is expected to fix)",
    ),
    (
        RUN_FAILED,
        "run-failed",
        "a step failed and the run stopped",
    ),
    (
        LOCK_HELD,
        "lock-held",
        "another run holds the environment's lock",
    ),
    (
        RUN_INTERRUPTED,
        "run-interrupted",
        "run interrupted or aborted; resume continues an interrupted run",
    ),
    (
        WAITING_APPROVAL,
        "waiting-approval",
        "run parked until `drctl approve` + `drctl resume`",
    ),
    (
        JOURNAL_CORRUPT,
        "journal-corrupt",
        "journal failed hash-chain verification",
    ),
    (
        JOURNAL_WRITE,
        "journal-write",
        "journal could not be written; run stopped",
    ),
    (
        RUNBOOK_CHANGED,
        "runbook-changed",
        "resume refused: the runbook or environment file changed (`--allow-runbook-change`, `--allow-env-change`)",
    ),
    (
        TARGET_MISSED,
        "target-missed",
        "drill missed its RTO or RPO target, or could not show it met",
    ),
    (
        VERIFY_REJECTED,
        "verify-rejected",
        "immudb state or proof rejected",
    ),
    (
        VERIFY_BEHIND,
        "verify-behind",
        "immudb replica behind the trusted state",
    ),
    (
        NEEDS_DECISION,
        "needs-decision",
        "resume needs --rerun STEP or --mark-done STEP",
    ),
    (
        NOT_CONFIRMED,
        "not-confirmed",
        "confirmation declined or impossible (use --yes), or approval refused",
    ),
    (NOT_FOUND, "not-found", "run or file not found"),
    (
        LEASE_LOST,
        "lease-lost",
        "lease taken over by another process; this one stopped",
    ),
    (
        STATE_UNAVAILABLE,
        "state-unavailable",
        "state store unreachable or not initialised; nothing done",
    ),
    (
        RUN_ENDED,
        "run-ended",
        "the run already ended (succeeded or aborted); nothing done",
    ),
    (
        IMMUDB_UNAVAILABLE,
        "immudb-unavailable",
        "immudb could not be asked (connect, timeout, TLS, HTTP error); nothing verified",
    ),
    (
        NOT_INITIAL,
        "not-initial-state",
        "drill refused: the lab is not in its initial state (primary, streaming standby); nothing injected",
    ),
    (
        BACKUP_CANNOT_RESTORE,
        "backup-cannot-restore",
        "verify-backup: the backup could not be restored (tool, server, target time beyond the archive)",
    ),
    (
        BACKUP_OLD_POINT,
        "backup-old-point",
        "verify-backup: restored to an older point than expected (gap in the output)",
    ),
    (
        BACKUP_CHECK_FAILED,
        "backup-check-failed",
        "verify-backup: a data check failed on the restored copy (named in the message)",
    ),
    (
        BACKUP_TOO_OLD,
        "backup-too-old",
        "verify-backup: the newest backup is older than the source's max_age",
    ),
    (
        BACKUP_NOT_VERIFIED,
        "backup-not-verified",
        "verify-backup: the verification could not run (disk, tool, no backup, store); nothing proven",
    ),
    (
        NOT_A_FAILOVER,
        "not-a-failover",
        "failback refused: the run is not a completed failover, or the primary moved since; nothing changed",
    ),
    (
        OLD_PRIMARY_UNREACHABLE,
        "old-primary-unreachable",
        "failback refused: the old primary's node cannot be reached; nothing changed",
    ),
    (
        DNS_DRIFT,
        "dns-drift",
        "failback refused: DNS changed since the failover (--force restores anyway); nothing changed",
    ),
    (
        KUBE_DRIFT,
        "kube-drift",
        "failback refused: Kubernetes capacity changed since the failover (--force restores anyway); nothing changed",
    ),
    (
        REPORT_MISMATCH,
        "report-mismatch",
        "report verify: the report does not match its run's journal",
    ),
    (
        SIGNATURE_REJECTED,
        "signature-rejected",
        "report verify: unsigned, another key, or the signature does not verify",
    ),
    (
        ANCHOR_MISMATCH,
        "anchor-mismatch",
        "report verify: the journal no longer has the head anchored in the immudb ledger",
    ),
];
