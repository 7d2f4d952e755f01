//! PostgreSQL: connections, operations, the heartbeat (RPO probe) and the
//! `postgres.*` actions (status, fence, promote, query).

pub mod discarded;
pub mod fence;
pub mod fencing;
pub mod heartbeat;
pub mod node;
pub mod ops;
pub mod pgctl;
pub mod promote;
pub mod query;
pub mod rejoin;
pub mod rewind;
pub mod status;
pub mod switchover;

use crate::action::ActionError;
use crate::decode::{Ctx, MapReader};
/// Connections live in [`crate::pgconn`] (a foundation module the state
/// store uses too); re-exported here for the `postgres.*` actions.
pub use crate::pgconn as conn;
pub use crate::pgconn::{DsnError, PgError, PgServer};

impl From<PgError> for ActionError {
    fn from(e: PgError) -> Self {
        let hint = if let Some(h) = e.hint() {
            h
        } else if e.is_unreachable() {
            "is the server up and reachable from here? check host/port in the environment file"
        } else {
            "check the server's log; the step is retried per its retry policy"
        };
        ActionError::failed_hint(crate::diag::error_chain(&e), hint)
    }
}

/// Reads a server field: a mapping, or (while validating) a `${...}`
/// reference such as `${target.postgres}` that resolves to one.
pub fn server_field(
    ctx: &mut Ctx<'_>,
    r: &mut MapReader<'_>,
    key: &'static str,
    required: bool,
) -> Option<PgServer> {
    let node = if required {
        r.req(ctx, key)
    } else {
        r.opt(key)
    }?;
    if ctx.deferred(node) {
        return None;
    }
    PgServer::decode(ctx, node, key)
}

/// `host:port` of a server field in resolved params, for plans.
pub fn addr_of(params: &serde_json::Value, key: &str) -> String {
    let s = &params[key];
    match (s.get("host").and_then(|h| h.as_str()), s.get("port")) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => format!("{h}:5432"),
        _ => crate::action::short(s),
    }
}
