//! The `stop` fence: a fast shutdown of the old primary, asked of the
//! server itself.
//!
//! The postmaster's pid is the first line of `postmaster.pid` in the data
//! directory (`pg_read_file`); `COPY (SELECT 1) TO PROGRAM 'kill -INT pid'`
//! runs `kill` as the server's own OS user, so drctl needs no shell access
//! to the host. SIGINT is PostgreSQL's fast shutdown: sessions are cut,
//! a shutdown checkpoint is written and sent to the standbys, the server
//! exits. drctl then waits until it no longer answers at all.
//!
//! The pid and the LSN before the stop are checkpointed first: a resumed
//! step that finds the server gone knows this step stopped it.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::{current_lsn, outcome, FenceCheckpoint, FenceOutcome, Method};
use crate::action::{ActionError, StepContext};
use crate::postgres::conn::{execute, query, PgError, PgServer};

/// How long a server that answered the signal with an error may take to
/// start shutting down before that error counts.
const SIGNAL_GRACE: Duration = Duration::from_secs(2);

fn failed(addr: &str, what: String) -> ActionError {
    ActionError::failed_hint(
        format!("fence (stop) on {addr}: {what}"),
        "check the server log on the database host; stop it there (pg_ctl stop -m fast) if drctl cannot",
    )
}

pub(super) async fn fence(
    server: &PgServer,
    c: &Client,
    ctx: &StepContext,
    limit: Duration,
) -> Result<FenceOutcome, ActionError> {
    let addr = server.addr();
    let deadline = Instant::now() + limit;
    let left = || deadline.saturating_duration_since(Instant::now());
    let rows = query(
        c,
        &addr,
        "fence: postmaster.pid",
        "select split_part(pg_read_file('postmaster.pid'), E'\\n', 1)::int, \
         (select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid())",
        left(),
    )
    .await?;
    let (pid, sessions): (i32, i64) = rows
        .first()
        .map(|r| (r.get(0), r.get(1)))
        .ok_or_else(|| failed(&addr, "postmaster.pid gave no pid".into()))?;
    if pid <= 1 {
        return Err(failed(&addr, format!("postmaster.pid names pid {pid}")));
    }
    let final_lsn = current_lsn(c, &addr, left()).await?;
    ctx.checkpoint(&FenceCheckpoint {
        method: Some(Method::Stop),
        postmaster_pid: Some(pid),
        final_lsn,
        ..Default::default()
    })
    .await?;
    let sql = format!("COPY (SELECT 1) TO PROGRAM 'kill -INT {pid}'");
    // Any other error is judged by the verification below: the shutdown
    // can also hit this backend while it closes the pipe to `kill` ("could
    // not close pipe to external command: Broken pipe"), after the signal
    // was sent. If the server still answers a moment later, the signal
    // really failed and that error is the step's.
    let signal_error = match execute(c, &addr, "fence: signal the postmaster", &sql, left()).await {
        Ok(()) => None,
        // The shutdown may cut this very session before COPY returns.
        Err(PgError::Query { source, .. })
            if source.is_closed()
                || source.as_db_error().is_none()
                || source.code() == Some(&SqlState::ADMIN_SHUTDOWN) =>
        {
            None
        }
        Err(e) => Some(e),
    };
    let signalled = Instant::now();
    // Verify: gone means a refused connection, not "shutting down".
    loop {
        match server.connect(left().max(Duration::from_millis(100))).await {
            Err(e) if e.is_unreachable() && !shutting_down(&e) => {
                let mut o = outcome(Method::Stop, true, false);
                o.final_lsn = final_lsn;
                o.terminated_backends = sessions;
                o.verified = format!(
                    "postmaster {pid} told to shut down fast; the server no longer answers ({})",
                    crate::diag::error_chain(&e)
                );
                return Ok(o);
            }
            Ok(_) if signal_error.is_some() && signalled.elapsed() >= SIGNAL_GRACE => {
                if let Some(e) = signal_error {
                    return Err(e.into());
                }
            }
            _ if Instant::now() >= deadline => {
                return Err(failed(
                    &addr,
                    format!("still answering after SIGINT to postmaster {pid}"),
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn shutting_down(e: &PgError) -> bool {
    match e {
        PgError::Connect { source, .. } => source.code() == Some(&SqlState::CANNOT_CONNECT_NOW),
        _ => false,
    }
}
