//! `postgres.fence`: stop the old primary accepting writes if it can be
//! reached, and record its final WAL position (the upper bound of what a
//! failover can lose). An unreachable server is recorded, not an error: the
//! step moves on within its timeout. Idempotent: fencing a fenced server
//! only re-verifies.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{ops, server_field, PgServer};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct PgFence;

#[async_trait]
impl ActionKind for PgFence {
    type Params = PgServer;

    fn kind(&self) -> &'static str {
        "postgres.fence"
    }
    fn summary(&self) -> &'static str {
        "Make the old primary read-only and cut its sessions, if reachable"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "reachable",
            "already_fenced",
            "final_lsn",
            "terminated_backends",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "postgres.fence")?;
        let server = server_field(ctx, &mut r, "server", true);
        r.finish(ctx);
        server
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "fence postgres {} (read-only, cut sessions)",
            super::addr_of(params, "server")
        )
    }
    async fn preflight(
        &self,
        s: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        Ok(match ops::status_of(s, ctx.remaining()).await {
            Ok(st) if st.is_standby() => Preflight::ok(format!(
                "postgres {} is a standby: nothing to fence",
                s.addr()
            )),
            Ok(st) if st.read_only => {
                Preflight::ok(format!("postgres {} primary already read-only", s.addr()))
            }
            Ok(_) => Preflight::ok(format!(
                "postgres {} primary read-write -> read-only (fenced)",
                s.addr()
            )),
            Err(e) if e.is_unreachable() => Preflight::ok(format!(
                "postgres {} unreachable now: fence will record that and move on",
                s.addr()
            )),
            Err(e) => Preflight::problem(format!("postgres {}: {e}", s.addr())),
        })
    }
    async fn execute(&self, s: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        // Leave headroom inside the step timeout so an unreachable primary
        // is recorded instead of timing the step out.
        let limit = ctx.remaining().mul_f64(0.8);
        let f = ops::fence(s, limit).await?;
        let summary = match (f.reachable, f.already_fenced) {
            (false, _) => format!("{} unreachable: recorded, not fenced", s.addr()),
            (true, true) => format!(
                "{} already fenced at {}",
                s.addr(),
                f.final_lsn.map(|l| l.to_string()).unwrap_or_default()
            ),
            (true, false) => format!(
                "{} fenced at {}",
                s.addr(),
                f.final_lsn.map(|l| l.to_string()).unwrap_or_default()
            ),
        };
        let mut o = Outputs::new();
        o.insert("reachable".into(), json!(f.reachable));
        o.insert("already_fenced".into(), json!(f.already_fenced));
        o.insert(
            "final_lsn".into(),
            json!(f.final_lsn.map(|l| l.to_string())),
        );
        o.insert("terminated_backends".into(), json!(f.terminated_backends));
        if let Some(r) = f.unreachable_reason {
            o.insert("unreachable_reason".into(), json!(r));
        }
        o.insert("summary".into(), json!(summary));
        Ok(o)
    }
}
