//! `postgres.fence`: stop the old primary accepting writes if it can be
//! reached, and record its final WAL position (the upper bound of what a
//! failover can lose). `method` chooses how (see [`super::fencing`]):
//! `hba` (the default: reject every non-replication TCP connection, cut
//! every session), `stop` (shut it down) or `soft` (read-only by default,
//! which any client can undo). An unreachable server is recorded, not an
//! error: the step moves on within its timeout. Idempotent: fencing a
//! fenced server only re-verifies.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::fencing::{self, Method};
use super::{server_field, PgError, PgServer};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct PgFence;

pub struct Params {
    server: PgServer,
    method: Method,
}

fn method_of(raw: &Value) -> &str {
    raw.get("method").and_then(|m| m.as_str()).unwrap_or("hba")
}

#[async_trait]
impl ActionKind for PgFence {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "postgres.fence"
    }
    fn summary(&self) -> &'static str {
        "Fence the old primary if reachable (method hba: reject new sessions and cut all; stop: shut it down; soft: read-only default)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "reachable",
            "already_fenced",
            "method",
            "final_lsn",
            "terminated_backends",
            "verified",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "postgres.fence")?;
        let server = server_field(ctx, &mut r, "server", true);
        let method = match r.opt("method") {
            None => Some(Method::Hba),
            Some(n) => ctx
                .one_of(n, Method::NAMES, "method")
                .and_then(Method::parse),
        };
        r.finish(ctx);
        Some(Params {
            server: server?,
            method: method?,
        })
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Not read-only: it changes the old primary.
        false
    }
    // Idempotent (the default): every method checks before acting and
    // re-verifies, and its checkpoint tells a resumed attempt what an
    // earlier one did.
    fn describe(&self, params: &Value) -> String {
        let what = match method_of(params) {
            "soft" => "soft: read-only default, cut non-superuser sessions",
            "stop" => "stop: fast shutdown",
            _ => "hba: reject new non-replication sessions, cut all sessions",
        };
        format!(
            "fence postgres {} ({what})",
            super::addr_of(params, "server")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let s = &p.server;
        let m = p.method.as_str();
        let client = match s.connect(ctx.remaining()).await {
            Ok(c) => c,
            Err(e) if e.is_unreachable() => {
                return Ok(Preflight::ok(format!(
                    "postgres {} unreachable now: fence ({m}) will record that and move on",
                    s.addr()
                )))
            }
            Err(PgError::Rejected { .. }) if p.method == Method::Hba => {
                return Ok(Preflight::ok(format!(
                    "postgres {} already rejects new sessions (pg_hba.conf): fenced",
                    s.addr()
                )))
            }
            Err(e) => return Ok(Preflight::problem(format!("postgres {}: {e}", s.addr()))),
        };
        let addr = s.addr();
        let st = match super::ops::status(&client, &addr, ctx.remaining()).await {
            Ok(st) => st,
            Err(e) => return Ok(Preflight::problem(format!("postgres {addr}: {e}"))),
        };
        if st.is_standby() {
            return Ok(Preflight::ok(format!(
                "postgres {addr} is a standby: nothing to fence"
            )));
        }
        let privs = match fencing::privileges(&client, &addr, ctx.remaining()).await {
            Ok(x) => x,
            Err(e) => return Ok(Preflight::problem(format!("postgres {addr}: {e}"))),
        };
        if !privs.allow(p.method) {
            return Ok(Preflight::problem(format!(
                "postgres {addr}: fence method {m} needs {}; role `{}` has: {}",
                p.method.needs(),
                s.user,
                privs.describe()
            )));
        }
        let mut pre = Preflight::ok(format!(
            "postgres {addr} primary -> fenced ({m}; needs {}: role `{}` is {})",
            p.method.needs(),
            s.user,
            privs.describe()
        ));
        match p.method {
            Method::Soft => pre.lines.push(
                "soft fence: any client can undo it (SET / BEGIN READ WRITE); promote's write probe will refuse unless --force: prefer method hba or stop".into(),
            ),
            Method::Hba => pre.lines.push(
                "hba: prepends `host all all all reject` to pg_hba.conf (replication still allowed), reloads, terminates every client session".into(),
            ),
            Method::Stop => pre.lines.push(
                "stop: fast shutdown of the postmaster (SIGINT via COPY ... TO PROGRAM); the standby receives the shutdown checkpoint".into(),
            ),
        }
        if st.read_only {
            pre.lines
                .push("default_transaction_read_only is already on (a soft fence)".into());
        }
        Ok(pre)
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        // Leave headroom inside the step timeout so an unreachable primary
        // is recorded instead of timing the step out.
        let limit = ctx.remaining().mul_f64(0.8);
        let s = &p.server;
        let f = fencing::fence(s, p.method, ctx, limit).await?;
        let lsn = match f.final_lsn {
            Some(l) => format!("at {l}"),
            None => "(final LSN unknown: no session can be opened)".into(),
        };
        let m = f.method.as_str();
        let summary = match (f.reachable, f.already_fenced) {
            (false, false) => format!("{} unreachable: recorded, not fenced", s.addr()),
            (false, true) => format!("{} stopped ({m}) by this step {lsn}", s.addr()),
            (true, true) => format!("{} already fenced ({m}) {lsn}", s.addr()),
            (true, false) => format!("{} fenced ({m}) {lsn}", s.addr()),
        };
        let mut o = Outputs::new();
        o.insert("reachable".into(), json!(f.reachable));
        o.insert("already_fenced".into(), json!(f.already_fenced));
        o.insert("method".into(), json!(m));
        o.insert(
            "final_lsn".into(),
            json!(f.final_lsn.map(|l| l.to_string())),
        );
        o.insert("terminated_backends".into(), json!(f.terminated_backends));
        o.insert("verified".into(), json!(f.verified));
        if let Some(r) = f.unreachable_reason {
            o.insert("unreachable_reason".into(), json!(r));
        }
        o.insert("summary".into(), json!(summary));
        Ok(o)
    }
}
