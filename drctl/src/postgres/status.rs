//! `postgres.status`: role, timeline, LSNs, replication state and, given
//! the primary, lag in bytes. Read-only; its preflight is itself.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::ops;
use super::{server_field, PgServer};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct PgStatus;

/// The step's `with:`, decoded.
pub struct Params {
    server: PgServer,
    primary: Option<PgServer>,
}

async fn measure(p: &Params, limit: Duration) -> Result<Outputs, ActionError> {
    let st = ops::status_of(&p.server, limit).await?;
    let mut lag = None;
    if let Some(primary) = &p.primary {
        if let Ok(ps) = ops::status_of(primary, limit.min(Duration::from_secs(2))).await {
            if let (Some(cur), Some(recv)) = (ps.current_lsn, st.receive_lsn.or(st.replay_lsn)) {
                lag = Some(cur.bytes_after(recv));
            }
        }
    }
    let mut o = Outputs::new();
    o.insert("role".into(), json!(st.role));
    o.insert("timeline".into(), json!(st.timeline));
    o.insert(
        "current_lsn".into(),
        json!(st.current_lsn.map(|l| l.to_string())),
    );
    o.insert(
        "receive_lsn".into(),
        json!(st.receive_lsn.map(|l| l.to_string())),
    );
    o.insert(
        "replay_lsn".into(),
        json!(st.replay_lsn.map(|l| l.to_string())),
    );
    o.insert(
        "last_replay_at".into(),
        json!(st
            .last_replay_ms
            .map(|m| crate::journal::format_ms(m as u64))),
    );
    o.insert("replication_state".into(), json!(st.receiver_status));
    o.insert("read_only".into(), json!(st.read_only));
    o.insert("lag_bytes".into(), json!(lag));
    o.insert(
        "summary".into(),
        json!(format!(
            "{} {} timeline {}",
            p.server.addr(),
            st.role,
            st.timeline.unwrap_or(0)
        )),
    );
    Ok(o)
}

#[async_trait]
impl ActionKind for PgStatus {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "postgres.status"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Reads server status.
        true
    }
    fn summary(&self) -> &'static str {
        "Report a server's role, timeline, LSNs, replication state and lag"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "role",
            "timeline",
            "current_lsn",
            "receive_lsn",
            "replay_lsn",
            "last_replay_at",
            "replication_state",
            "read_only",
            "lag_bytes",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "postgres.status")?;
        let server = server_field(ctx, &mut r, "server", true);
        let primary = server_field(ctx, &mut r, "primary", false);
        r.finish(ctx);
        Some(Params {
            server: server?,
            primary,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!("status of postgres {}", super::addr_of(params, "server"))
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        Ok(match measure(p, ctx.remaining()).await {
            Ok(o) => Preflight::ok(format!(
                "postgres {} is {}",
                p.server.addr(),
                o["role"].as_str().unwrap_or("?")
            )),
            Err(e) => Preflight::problem(format!("postgres {}: {e}", p.server.addr())),
        })
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        measure(p, ctx.remaining()).await
    }
}
