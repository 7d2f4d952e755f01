//! Backups proven by restoring them (`postgres.verify_backup`,
//! `drctl verify-backup`): a backup source from the environment is
//! restored into a scratch instance on a loopback port, and checked in the
//! order the tools force: `pg_verifybackup` before start; while up, the
//! recovered point against an independent expectation (the newest
//! archived WAL segment, the primary's newest heartbeat), `pg_amcheck`,
//! the source's SQL check set, optionally a full read with `pg_dump`;
//! after a clean shutdown, `pg_checksums --check`.
//!
//! Why the recovered point is compared at all: a restore can exit 0 and
//! be wrong. With an archived segment missing in the middle, PostgreSQL
//! recovers silently up to the gap, promotes and reports success.
//!
//! Each failure has a class with its own exit code (30–34), carried in the
//! step's error as a stable code (`[DRCTL-B31]`) that `drctl verify-backup`
//! maps back, so an alert can say what happened.

pub mod action;
pub mod archive;
pub mod barman;
pub mod dump;
pub mod instance;
pub mod pgbackrest;
pub mod restore;
pub mod scratch;
pub mod source;

use thiserror::Error;

/// What went wrong, for the exit code and the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The backup could not be restored (tool failed, server did not
    /// start or recover, the target time lies beyond the archive).
    CannotRestore,
    /// It restored, but to a point older than the independent expectation.
    OldPoint,
    /// A data check failed (pg_verifybackup, pg_amcheck, a SQL assertion,
    /// the full read, pg_checksums).
    CheckFailed,
    /// The newest backup is older than the source's `max_age`.
    TooOld,
    /// The verification itself could not run (disk, tool missing, no
    /// backup found, state).
    CouldNotRun,
}

impl Class {
    pub fn exit_code(self) -> i32 {
        match self {
            Class::CannotRestore => crate::exit::BACKUP_CANNOT_RESTORE,
            Class::OldPoint => crate::exit::BACKUP_OLD_POINT,
            Class::CheckFailed => crate::exit::BACKUP_CHECK_FAILED,
            Class::TooOld => crate::exit::BACKUP_TOO_OLD,
            Class::CouldNotRun => crate::exit::BACKUP_NOT_VERIFIED,
        }
    }

    /// The stable code in the step's error (`[DRCTL-B31]`).
    pub fn code(self) -> String {
        format!("DRCTL-B{}", self.exit_code())
    }

    /// Finds the class a step's error message names.
    pub fn from_message(message: &str) -> Option<Class> {
        [
            Class::CannotRestore,
            Class::OldPoint,
            Class::CheckFailed,
            Class::TooOld,
            Class::CouldNotRun,
        ]
        .into_iter()
        .find(|c| message.contains(&format!("[{}]", c.code())))
    }
}

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lab(crate::lab::pg::LabError),
    /// A failure of one class, with what an operator needs to act on it.
    #[error("{message}")]
    Verify {
        class: Class,
        message: String,
        hint: Option<String>,
    },
}

impl BackupError {
    pub fn lab(e: crate::lab::pg::LabError) -> Self {
        BackupError::Lab(e)
    }

    pub fn verify(class: Class, message: impl Into<String>) -> Self {
        BackupError::Verify {
            class,
            message: message.into(),
            hint: None,
        }
    }

    pub fn verify_hint(class: Class, message: impl Into<String>, hint: impl Into<String>) -> Self {
        BackupError::Verify {
            class,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn class(&self) -> Class {
        match self {
            BackupError::Verify { class, .. } => *class,
            BackupError::Io { .. } | BackupError::Lab(_) => Class::CouldNotRun,
        }
    }

    /// The step's error: the class's stable code, then the message chain.
    pub fn into_action_error(self) -> crate::action::ActionError {
        let class = self.class();
        let hint = match &self {
            BackupError::Verify { hint, .. } => hint.clone(),
            _ => None,
        };
        let message = format!("[{}] {}", class.code(), crate::diag::error_chain(&self));
        crate::action::ActionError::Failed { message, hint }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_survives_the_round_trip_through_the_message() {
        for c in [
            Class::CannotRestore,
            Class::OldPoint,
            Class::CheckFailed,
            Class::TooOld,
            Class::CouldNotRun,
        ] {
            let e = BackupError::verify(c, "x").into_action_error();
            assert_eq!(Class::from_message(&e.to_string()), Some(c));
        }
        assert_eq!(Class::from_message("step failed: nothing"), None);
    }
}
