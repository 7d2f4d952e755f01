//! Where the state lives, decided in one documented order:
//!
//! 1. `--state URL|DIR` (alias `--state-dir`),
//! 2. the `DRCTL_STATE` environment variable (legacy: `DRCTL_STATE_DIR`),
//! 3. the environment file's `state:` section (`url: postgres://…` or
//!    `dir: …`, relative to the environment file),
//! 4. `./state`.
//!
//! A PostgreSQL URL never carries a password: it comes from
//! `DRCTL_STATE_PASSWORD`, or from the environment file's
//! `state.password: env:NAME|file:PATH`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DirStore, Store, StoreError};
use crate::pgconn::PgServer;
use crate::secret::SecretRef;

/// The environment variable holding the state database password.
pub const PASSWORD_VAR: &str = "DRCTL_STATE_PASSWORD";

#[derive(Debug, Clone)]
pub enum StateLocation {
    Dir(PathBuf),
    Postgres {
        /// The URL as given (no password), for messages and follow-ups.
        url: String,
        server: PgServer,
    },
}

/// Where the chosen location came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    EnvVar,
    EnvironmentFile,
    Default,
}

impl StateLocation {
    /// Parses `postgres://…`/`postgresql://…` as a database, anything else
    /// as a directory.
    pub fn parse(s: &str, password: Option<SecretRef>) -> Result<Self, StoreError> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let mut server = PgServer::from_dsn(s).map_err(|e| {
                StoreError::BadLocation(format!("{s}: {}", crate::diag::error_chain(&e)))
            })?;
            server.password = password.or_else(|| {
                std::env::var_os(PASSWORD_VAR).map(|_| SecretRef::Env(PASSWORD_VAR.into()))
            });
            Ok(StateLocation::Postgres {
                url: s.to_string(),
                server,
            })
        } else if s.is_empty() {
            Err(StoreError::BadLocation("empty state location".into()))
        } else {
            Ok(StateLocation::Dir(PathBuf::from(s)))
        }
    }

    /// The `--state` argument that names this location again.
    pub fn arg(&self) -> String {
        match self {
            StateLocation::Dir(p) => p.display().to_string(),
            StateLocation::Postgres { url, .. } => url.clone(),
        }
    }
}

/// The environment file's `state:` section as decoded.
#[derive(Debug, Clone, Default)]
pub struct EnvState {
    pub url: Option<String>,
    pub dir: Option<String>,
    pub password: Option<SecretRef>,
    /// Directory of the environment file: `dir:` is relative to it.
    pub base: PathBuf,
}

/// Applies the documented order.
pub fn locate(
    flag: Option<&str>,
    env_file: Option<&EnvState>,
) -> Result<(StateLocation, Source), StoreError> {
    let pw = env_file.and_then(|e| e.password.clone());
    if let Some(f) = flag {
        return Ok((StateLocation::parse(f, pw)?, Source::Flag));
    }
    for var in ["DRCTL_STATE", "DRCTL_STATE_DIR"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return Ok((StateLocation::parse(&v, pw)?, Source::EnvVar));
            }
        }
    }
    if let Some(e) = env_file {
        if let Some(u) = &e.url {
            return Ok((StateLocation::parse(u, pw)?, Source::EnvironmentFile));
        }
        if let Some(d) = &e.dir {
            let p = Path::new(d);
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                e.base.join(p)
            };
            return Ok((StateLocation::Dir(p), Source::EnvironmentFile));
        }
    }
    Ok((StateLocation::Dir(PathBuf::from("state")), Source::Default))
}

/// How a command uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the directory if needed (commands that write).
    Create,
    /// The store must exist already (read-only commands): a typo in the
    /// location is reported instead of silently creating empty state.
    Existing,
}

/// Opens a store. PostgreSQL stores must have been initialised with
/// `drctl state init`; their schema version is checked, never migrated.
pub async fn open(loc: &StateLocation, mode: OpenMode) -> Result<Arc<dyn Store>, StoreError> {
    match loc {
        StateLocation::Dir(p) => {
            let s = match mode {
                OpenMode::Create => DirStore::open(p)?,
                OpenMode::Existing => DirStore::open_existing(p)?,
            };
            Ok(Arc::new(s))
        }
        StateLocation::Postgres { url, server } => super::postgres::open(url, server.clone()).await,
    }
}
