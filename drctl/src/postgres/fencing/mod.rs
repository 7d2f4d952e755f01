//! Fencing an old primary, and asking whether it still takes writes.
//!
//! Three methods, weakest first:
//!
//! - `soft`: `default_transaction_read_only = on` (ALTER SYSTEM + reload),
//!   non-superuser sessions cut. Soft because any client can undo it for
//!   itself (`SET default_transaction_read_only = off`, `BEGIN READ WRITE`)
//!   and superusers keep their sessions: promote's write probe sees through
//!   it and refuses.
//! - `hba` ([`hba`]): a `reject` rule for every non-replication TCP
//!   connection is put at the top of pg_hba.conf, in a marked block, the
//!   configuration reloaded and verified, then every client backend is
//!   terminated (superusers too) except drctl's own session and the WAL
//!   senders: the standby keeps streaming, nobody writes.
//! - `stop` ([`stop`]): the postmaster is told to shut down fast, and
//!   drctl waits until it no longer answers.
//!
//! Each is check-act-verify: a second execute finds it fenced and only
//! re-verifies. Each step saves a pre-effect checkpoint (the original
//! pg_hba.conf, the postmaster pid) and, once verified, the final LSN, so
//! a resumed step that can no longer open a session still reports it.

mod hba;
mod stop;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::conn::{execute, query, PgError, PgServer};
use super::ops::{self, Lsn};
use crate::action::{ActionError, StepContext};

/// How `postgres.fence` stops the old primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Soft,
    Hba,
    Stop,
}

impl Method {
    pub const NAMES: &'static [&'static str] = &["soft", "hba", "stop"];

    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "soft" => Some(Method::Soft),
            "hba" => Some(Method::Hba),
            "stop" => Some(Method::Stop),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Soft => "soft",
            Method::Hba => "hba",
            Method::Stop => "stop",
        }
    }

    /// What the method needs from drctl's role, for preflight.
    pub fn needs(self) -> &'static str {
        match self {
            Method::Soft => "superuser (ALTER SYSTEM)",
            Method::Hba => "superuser (read and write pg_hba.conf, reload, terminate superuser sessions)",
            Method::Stop => "superuser, or pg_read_server_files and pg_execute_server_program (read postmaster.pid, signal it through COPY ... TO PROGRAM)",
        }
    }
}

/// What fencing found and did.
#[derive(Debug, Clone, Serialize)]
pub struct FenceOutcome {
    pub method: Method,
    pub reachable: bool,
    pub already_fenced: bool,
    pub final_lsn: Option<Lsn>,
    pub terminated_backends: i64,
    pub unreachable_reason: Option<String>,
    /// How the fence was verified, in words.
    pub verified: String,
}

/// The step's checkpoint: saved before the effect (what to restore, whom
/// to signal), then again once verified (the final LSN).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FenceCheckpoint {
    pub method: Option<Method>,
    pub hba_file: Option<String>,
    /// pg_hba.conf as it was before drctl's block went in.
    pub original_hba: Option<String>,
    pub postmaster_pid: Option<i32>,
    pub final_lsn: Option<Lsn>,
    #[serde(default)]
    pub done: bool,
}

/// What drctl's role may do on the server.
#[derive(Debug, Clone, Copy)]
pub struct Privileges {
    pub superuser: bool,
    pub read_files: bool,
    pub write_files: bool,
    pub execute_program: bool,
}

impl Privileges {
    pub fn allow(&self, m: Method) -> bool {
        match m {
            Method::Soft | Method::Hba => self.superuser,
            Method::Stop => self.superuser || (self.read_files && self.execute_program),
        }
    }

    pub fn describe(&self) -> String {
        if self.superuser {
            return "superuser".into();
        }
        let mut v = Vec::new();
        for (on, name) in [
            (self.read_files, "pg_read_server_files"),
            (self.write_files, "pg_write_server_files"),
            (self.execute_program, "pg_execute_server_program"),
        ] {
            if on {
                v.push(name);
            }
        }
        if v.is_empty() {
            "no superuser, no server-file or server-program roles".into()
        } else {
            format!("not superuser; member of {}", v.join(", "))
        }
    }
}

pub async fn privileges(c: &Client, addr: &str, limit: Duration) -> Result<Privileges, PgError> {
    let rows = query(
        c,
        addr,
        "fence: privileges",
        "select r.rolsuper, pg_has_role(current_user, 'pg_read_server_files', 'MEMBER'), \
         pg_has_role(current_user, 'pg_write_server_files', 'MEMBER'), \
         pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER') \
         from pg_roles r where r.rolname = current_user",
        limit,
    )
    .await?;
    let r = rows.first().ok_or_else(|| PgError::Unexpected {
        addr: addr.into(),
        op: "fence: privileges",
        detail: "no row for current_user".into(),
    })?;
    Ok(Privileges {
        superuser: r.get(0),
        read_files: r.get(1),
        write_files: r.get(2),
        execute_program: r.get(3),
    })
}

fn outcome(method: Method, reachable: bool, already: bool) -> FenceOutcome {
    FenceOutcome {
        method,
        reachable,
        already_fenced: already,
        final_lsn: None,
        terminated_backends: 0,
        unreachable_reason: None,
        verified: String::new(),
    }
}

/// Fences `server` with `method`. Unreachable is an outcome, not an error:
/// a dead primary is fenced by its death (or, with a checkpoint from an
/// earlier attempt of `stop`, by this step).
pub async fn fence(
    server: &PgServer,
    method: Method,
    ctx: &StepContext,
    limit: Duration,
) -> Result<FenceOutcome, ActionError> {
    let deadline = Instant::now() + limit;
    let saved: Option<FenceCheckpoint> = ctx.saved()?;
    let client = match server.connect(limit).await {
        Ok(c) => c,
        Err(e) if e.is_unreachable() => {
            let ours = saved.as_ref().filter(|c| c.method == Some(Method::Stop));
            let mut o = outcome(method, false, ours.is_some());
            o.final_lsn = ours.and_then(|c| c.final_lsn);
            o.unreachable_reason = Some(crate::diag::error_chain(&e));
            o.verified = match ours {
                Some(_) => "stopped by this step in an earlier attempt; no longer answers".into(),
                None => "unreachable: recorded, not fenced".into(),
            };
            return Ok(o);
        }
        Err(e @ PgError::Rejected { .. }) if method == Method::Hba => {
            let mut o = outcome(method, true, true);
            o.final_lsn = saved.as_ref().and_then(|c| c.final_lsn);
            o.verified = format!(
                "a new session is rejected: {}",
                crate::diag::error_chain(&e)
            );
            return Ok(o);
        }
        Err(e) => return Err(e.into()),
    };
    let addr = server.addr();
    let st = ops::status(&client, &addr, limit).await?;
    if st.is_standby() {
        let mut o = outcome(method, true, true);
        o.final_lsn = st.replay_lsn;
        o.verified = "a standby (in recovery) accepts no writes".into();
        return Ok(o);
    }
    let privs = privileges(&client, &addr, limit).await?;
    if !privs.allow(method) {
        return Err(ActionError::Config {
            message: format!(
                "fence method `{}` needs {} on {addr}; the role `{}` has: {}",
                method.as_str(),
                method.needs(),
                server.user,
                privs.describe()
            ),
            hint: "connect the fence as a role with those rights (the `server:` entry's user), or choose another method".into(),
        });
    }
    let remaining = || deadline.saturating_duration_since(Instant::now());
    match method {
        Method::Soft => soft(server, &client, remaining()).await.map_err(Into::into),
        Method::Hba => hba::fence(server, &client, ctx, saved, remaining()).await,
        Method::Stop => stop::fence(server, &client, ctx, remaining()).await,
    }
}

/// The soft fence: read-only by default (survives restarts via ALTER
/// SYSTEM) and non-superuser sessions cut. Any session can undo it for
/// itself; see the module doc.
async fn soft(
    server: &PgServer,
    client: &Client,
    limit: Duration,
) -> Result<FenceOutcome, PgError> {
    let addr = server.addr();
    let already = read_only_default(client, &addr, limit).await?;
    if !already {
        execute(
            client,
            &addr,
            "fence: set read-only",
            "ALTER SYSTEM SET default_transaction_read_only = on",
            limit,
        )
        .await?;
        query(
            client,
            &addr,
            "fence: reload",
            "select pg_reload_conf()",
            limit,
        )
        .await?;
    }
    let rows = query(
        client,
        &addr,
        "fence: terminate sessions",
        "select count(pg_terminate_backend(a.pid)) from pg_stat_activity a join pg_roles r on r.oid = a.usesysid \
         where a.backend_type = 'client backend' and a.pid <> pg_backend_pid() and not r.rolsuper",
        limit,
    )
    .await?;
    let terminated: i64 = rows.first().map(|r| r.get(0)).unwrap_or(0);
    // Verify from a fresh session, as a new writer would see it.
    let deadline = Instant::now() + limit;
    loop {
        let fresh = server.connect(limit).await?;
        if read_only_default(&fresh, &addr, limit).await? {
            break;
        }
        if Instant::now() >= deadline {
            return Err(PgError::Unexpected {
                addr,
                op: "fence",
                detail: "read-only setting did not take effect".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut o = outcome(Method::Soft, true, already);
    o.final_lsn = current_lsn(client, &addr, limit).await?;
    o.terminated_backends = terminated;
    o.verified = "a new session defaults to read-only (soft: any client can SET it back)".into();
    Ok(o)
}

async fn read_only_default(client: &Client, addr: &str, limit: Duration) -> Result<bool, PgError> {
    let rows = query(
        client,
        addr,
        "fence check",
        "select current_setting('default_transaction_read_only') = 'on'",
        limit,
    )
    .await?;
    Ok(rows.first().map(|r| r.get::<_, bool>(0)).unwrap_or(false))
}

async fn current_lsn(client: &Client, addr: &str, limit: Duration) -> Result<Option<Lsn>, PgError> {
    let rows = query(
        client,
        addr,
        "fence: final lsn",
        "select pg_current_wal_lsn()::text",
        limit,
    )
    .await?;
    Ok(rows
        .first()
        .and_then(|r| Lsn::parse(&r.get::<_, String>(0))))
}

/// Whether a possible old primary takes writes from a fresh session that
/// asks for them: the split-brain guard's question. A flag such as
/// `default_transaction_read_only` is not an answer (any client can undo
/// it), so the probe opens its own session and asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writes {
    /// No answer at all (down, or not taking sessions).
    Unreachable(String),
    /// The server turns new sessions away (pg_hba.conf `reject`).
    Rejected(String),
    /// In recovery: a standby.
    Standby,
    /// The session asked for a read-write transaction and was refused.
    Refused(String),
    /// A fresh session got a read-write transaction (and, when `write` was
    /// asked, created a temporary table in it).
    Accepted { read_only_default: bool },
    /// Reached, but the answer is unclear (authentication, TLS, rights).
    Unknown(String),
}

/// Asks `server` for a read-write transaction in a new session. With
/// `write`, it also creates a temporary table in it and rolls back (nothing
/// persists; an xid is consumed). Without, it only asks (for preflight,
/// which must not write at all).
pub async fn probe_writes(server: &PgServer, write: bool, limit: Duration) -> Writes {
    let addr = server.addr();
    let client = match server.connect(limit).await {
        Ok(c) => c,
        Err(e) if e.is_unreachable() => return Writes::Unreachable(crate::diag::error_chain(&e)),
        Err(e @ PgError::Rejected { .. }) => return Writes::Rejected(crate::diag::error_chain(&e)),
        Err(e) => return Writes::Unknown(crate::diag::error_chain(&e)),
    };
    let flags = query(
        &client,
        &addr,
        "write probe: recovery",
        "select pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'",
        limit,
    )
    .await;
    let (standby, read_only_default) = match flags.as_deref().map(|r| r.first()) {
        Ok(Some(r)) => (r.get::<_, bool>(0), r.get::<_, bool>(1)),
        Ok(None) => return Writes::Unknown("no answer to the recovery check".into()),
        Err(e) => return Writes::Unknown(crate::diag::error_chain(e)),
    };
    if standby {
        return Writes::Standby;
    }
    let sql = if write {
        "BEGIN TRANSACTION READ WRITE; CREATE TEMP TABLE drctl_write_probe (x int); ROLLBACK"
    } else {
        "BEGIN TRANSACTION READ WRITE; ROLLBACK"
    };
    match execute(&client, &addr, "write probe", sql, limit).await {
        Ok(()) => Writes::Accepted { read_only_default },
        Err(PgError::Query { source, .. })
            if source.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) =>
        {
            Writes::Refused(source.to_string())
        }
        Err(e) if e.is_unreachable() => Writes::Unreachable(crate::diag::error_chain(&e)),
        Err(e) => Writes::Unknown(crate::diag::error_chain(&e)),
    }
}
