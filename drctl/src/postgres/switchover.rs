//! `postgres.switchover`: a planned move of the primary role to a streaming
//! standby with zero data loss.
//!
//! Check: the standby streams on the primary's timeline, within
//! `max_lag_bytes`, and both share a system identifier (what
//! CloudNativePG's promotion token checks). Act: fast shutdown of the
//! primary (clients cut, a shutdown checkpoint written and streamed); read
//! that final checkpoint from `pg_controldata` and wait until the standby
//! has replayed past it (the pre-stop `pg_current_wal_lsn()` is not enough:
//! the shutdown checkpoint comes after it); check the timeline again;
//! promote; CHECKPOINT. Verify: the old primary no longer accepts writes.
//! The old primary rejoins as a standby afterwards (`postgres.rejoin`, no
//! rewind needed: its WAL ends at the checkpoint the new primary replayed).
//!
//! Resumable: the pre-checks are journaled as a checkpoint before the stop,
//! so a resume after kill -9 continues from whatever state the servers are
//! in (stopped primary, promoted standby) without asking for a running
//! primary again; a standby already promoted is not promoted twice.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::fencing::{probe_writes, Writes};
use super::node::{node_field, Node, NodeSpec};
use super::ops::{self, Lsn};
use super::{server_field, PgServer};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict};
use crate::decode::{Ctx, MapReader};
use crate::postgres::conn::query;
use crate::yaml::Node as YamlNode;

#[derive(Clone, Copy)]
pub struct PgSwitchover;

pub struct Params {
    primary: PgServer,
    primary_node: NodeSpec,
    standby: PgServer,
    max_lag_bytes: u64,
}

/// What the pre-checks established, journaled before the primary stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checked {
    system_identifier: String,
    timeline: u32,
    lag_bytes: u64,
}

const DEFAULT_MAX_LAG: u64 = 16 * 1024 * 1024;
const POLL: Duration = Duration::from_millis(5);

pub async fn system_identifier(server: &PgServer, limit: Duration) -> Result<String, ActionError> {
    let c = server.connect(limit).await?;
    let rows = query(
        &c,
        &server.addr(),
        "system identifier",
        "select system_identifier::text from pg_control_system()",
        limit,
    )
    .await?;
    Ok(rows.first().map(|r| r.get(0)).unwrap_or_default())
}

/// The pre-checks: what must hold before the primary is stopped.
async fn check(p: &Params, limit: Duration) -> Result<Checked, String> {
    let ps = ops::status_of(&p.primary, limit).await.map_err(|e| {
        format!(
            "primary {}: {}",
            p.primary.addr(),
            crate::diag::error_chain(&e)
        )
    })?;
    let ss = ops::status_of(&p.standby, limit).await.map_err(|e| {
        format!(
            "standby {}: {}",
            p.standby.addr(),
            crate::diag::error_chain(&e)
        )
    })?;
    if ps.is_standby() {
        return Err(format!(
            "{} is not a primary (in recovery)",
            p.primary.addr()
        ));
    }
    if !ss.is_standby() {
        return Err(format!(
            "{} is not a standby: it is a primary already (two primaries?)",
            p.standby.addr()
        ));
    }
    if ss.receiver_status.as_deref() != Some("streaming") {
        return Err(format!(
            "{} is not streaming (receiver: {})",
            p.standby.addr(),
            ss.receiver_status.as_deref().unwrap_or("none")
        ));
    }
    if ss.timeline != ps.timeline {
        return Err(format!(
            "{} receives timeline {:?}, the primary is on {:?}",
            p.standby.addr(),
            ss.timeline,
            ps.timeline
        ));
    }
    let lag = match (ps.current_lsn, ss.replay_lsn) {
        (Some(c), Some(r)) => c.bytes_after(r),
        _ => return Err("the replication lag cannot be measured".into()),
    };
    if lag > p.max_lag_bytes {
        return Err(format!(
            "{} is {lag} bytes behind (max_lag_bytes {})",
            p.standby.addr(),
            p.max_lag_bytes
        ));
    }
    let (a, b) = tokio::join!(
        system_identifier(&p.primary, limit),
        system_identifier(&p.standby, limit)
    );
    let (a, b) = (a.map_err(|e| e.to_string())?, b.map_err(|e| e.to_string())?);
    if a != b {
        return Err(format!(
            "system identifiers differ ({a} vs {b}): the standby is not a copy of this primary"
        ));
    }
    Ok(Checked {
        system_identifier: a,
        timeline: ps.timeline.unwrap_or(0),
        lag_bytes: lag,
    })
}

fn refused(message: String) -> ActionError {
    ActionError::Refused {
        message,
        hint: "bring the standby back to streaming on the primary's timeline (check `drctl plan --check`), then resume".into(),
    }
}

#[async_trait]
impl ActionKind for PgSwitchover {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "postgres.switchover"
    }
    fn summary(&self) -> &'static str {
        "Planned, zero-loss move of the primary role: stop the primary cleanly, wait for replay past its shutdown checkpoint, promote"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "old_timeline",
            "timeline",
            "shutdown_checkpoint_lsn",
            "stop_ms",
            "replay_wait_ms",
            "promote_ms",
            "checkpoint_ms",
            "writes_blocked_ms",
            "already_switched",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &YamlNode) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "postgres.switchover")?;
        let primary = server_field(ctx, &mut r, "primary", true);
        let primary_node = node_field(ctx, &mut r, "primary_node");
        let standby = server_field(ctx, &mut r, "standby", true);
        let max_lag_bytes = r
            .opt("max_lag_bytes")
            .and_then(|n| ctx.uint(n, "max_lag_bytes"))
            .unwrap_or(DEFAULT_MAX_LAG);
        r.finish(ctx);
        Some(Params {
            primary: primary?,
            primary_node: primary_node?,
            standby: standby?,
            max_lag_bytes,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "switch the primary role from postgres {} to {} (clean stop, replay past the shutdown checkpoint, promote)",
            super::addr_of(params, "primary"),
            super::addr_of(params, "standby")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let limit = ctx.remaining().min(Duration::from_secs(3));
        Ok(match check(p, limit).await {
            Ok(c) => Preflight::new(
                vec![format!(
                    "{} streams timeline {} from {}, {} bytes behind; same system {}",
                    p.standby.addr(),
                    c.timeline,
                    p.primary.addr(),
                    c.lag_bytes,
                    c.system_identifier
                )],
                Verdict::Passes,
            ),
            Err(e) => Preflight::fails_now(e),
        })
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let limit = Duration::from_secs(5);
        let started = Instant::now();
        let standby_now = ops::status_of(&p.standby, limit).await?;
        let saved: Option<Checked> = ctx.saved()?;
        let checked = match saved {
            Some(c) => c,
            None => {
                let c = check(p, limit).await.map_err(refused)?;
                // Durable before the primary stops: a resume continues from here.
                ctx.checkpoint(&c).await?;
                c
            }
        };
        if !standby_now.is_standby() && standby_now.timeline > Some(checked.timeline) {
            // Promoted by an earlier attempt of this step.
            let w = probe_writes(&p.primary, false, limit).await;
            if matches!(w, Writes::Accepted { .. }) {
                return Err(ActionError::Refused {
                    message: format!(
                        "two primaries: {} was promoted and {} accepts writes again",
                        p.standby.addr(),
                        p.primary.addr()
                    ),
                    hint: "stop the old primary now; it must rejoin as a standby (postgres.rewind)"
                        .into(),
                });
            }
            // The CHECKPOINT the earlier attempt may not have reached
            // (idempotent; pg_rewind and rejoins read the new timeline from it).
            let c = p.standby.connect(limit).await?;
            super::conn::execute(
                &c,
                &p.standby.addr(),
                "checkpoint",
                "CHECKPOINT",
                ctx.remaining(),
            )
            .await?;
            let mut o = Outputs::new();
            o.insert("already_switched".into(), json!(true));
            o.insert("old_timeline".into(), json!(checked.timeline));
            o.insert("timeline".into(), json!(standby_now.timeline));
            o.insert(
                "summary".into(),
                json!(format!(
                    "{} already promoted (timeline {}) by an earlier attempt",
                    p.standby.addr(),
                    standby_now.timeline.unwrap_or(0)
                )),
            );
            return Ok(o);
        }
        let node = Node::open(&p.primary_node, ctx).await?;
        let t_stop = Instant::now();
        node.stop().await?;
        let stop_ms = t_stop.elapsed().as_secs_f64() * 1000.0;
        crate::journal::test_crash_at("switchover-stopped");
        let cd = node.controldata().await?;
        if cd.state != "shut down" {
            return Err(ActionError::failed_hint(
                format!(
                    "the old primary's data directory is `{}`, not cleanly shut down: its final checkpoint is not known",
                    cd.state
                ),
                "a crashed primary needs a failover and a rewind, not a switchover",
            ));
        }
        if cd.system_identifier != checked.system_identifier
            || cd.checkpoint_timeline != Some(checked.timeline)
        {
            return Err(ActionError::failed(format!(
                "the stopped primary is system {} timeline {:?}, the checks saw system {} timeline {}",
                cd.system_identifier, cd.checkpoint_timeline, checked.system_identifier, checked.timeline
            )));
        }
        let ck: Lsn = cd
            .checkpoint_lsn
            .ok_or_else(|| ActionError::failed("pg_controldata names no checkpoint location"))?;
        let t_wait = Instant::now();
        let client = p.standby.connect(limit).await?;
        let addr = p.standby.addr();
        loop {
            // The receiver goes away once the primary has stopped (its row
            // then says nothing); while it is there it must be on the
            // checked timeline.
            if let Some((_, tli)) = super::rejoin::receiver(&p.standby, limit).await? {
                if tli != checked.timeline {
                    return Err(ActionError::failed(format!(
                        "{addr} receives timeline {tli}, the stopped primary was on {}",
                        checked.timeline
                    )));
                }
            }
            let st = ops::status(&client, &addr, limit).await?;
            if !st.is_standby() {
                // Promoted already (an attempt killed after pg_promote): zero
                // loss only if its new timeline forked after the shutdown
                // checkpoint, which its history file says.
                let tli = st.timeline.unwrap_or(0);
                let rows = query(
                    &client,
                    &addr,
                    "read timeline history",
                    &format!("select pg_read_file('pg_wal/{tli:08X}.history')"),
                    limit,
                )
                .await?;
                let hist: String = rows.first().map(|r| r.get(0)).unwrap_or_default();
                match super::rewind::fork_of(&hist, checked.timeline) {
                    Some(fork) if fork > ck => break,
                    fork => {
                        return Err(ActionError::Refused {
                            message: format!(
                                "{addr} was promoted at {} on timeline {tli}, before the old primary's shutdown checkpoint {ck}: writes of the old primary are missing",
                                fork.map(|f| f.to_string()).unwrap_or_else(|| "an unknown point".into())
                            ),
                            hint: "the old primary must be rewound (a failback), not rejoined".into(),
                        })
                    }
                }
            }
            if st.replay_lsn.is_some_and(|r| r > ck) {
                break;
            }
            if Instant::now() + POLL >= ctx.deadline {
                return Err(ActionError::failed_hint(
                    format!(
                        "{addr} has not replayed past the old primary's shutdown checkpoint {ck} (replayed {})",
                        st.replay_lsn.map(|l| l.to_string()).unwrap_or_else(|| "nothing".into())
                    ),
                    "is it still streaming? the old primary is stopped; resume retries the wait",
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        let replay_wait_ms = t_wait.elapsed().as_secs_f64() * 1000.0;
        let promo = ops::promote(&p.standby, POLL, ctx.remaining()).await?;
        let t_ck = Instant::now();
        super::conn::execute(&client, &addr, "checkpoint", "CHECKPOINT", ctx.remaining()).await?;
        let checkpoint_ms = t_ck.elapsed().as_secs_f64() * 1000.0;
        let writes_blocked_ms = t_stop.elapsed().as_secs_f64() * 1000.0 - checkpoint_ms;
        let mut o = Outputs::new();
        o.insert("already_switched".into(), json!(false));
        o.insert("old_timeline".into(), json!(checked.timeline));
        o.insert("timeline".into(), json!(promo.timeline));
        o.insert("shutdown_checkpoint_lsn".into(), json!(ck.to_string()));
        o.insert("stop_ms".into(), json!(stop_ms));
        o.insert("replay_wait_ms".into(), json!(replay_wait_ms));
        o.insert(
            "promote_ms".into(),
            json!(promo.duration.as_secs_f64() * 1000.0),
        );
        o.insert("checkpoint_ms".into(), json!(checkpoint_ms));
        o.insert("writes_blocked_ms".into(), json!(writes_blocked_ms));
        o.insert(
            "summary".into(),
            json!(format!(
                "{addr} is the primary on timeline {} after replaying past {ck}; no server took writes for {writes_blocked_ms:.0} ms (stop {stop_ms:.0}, replay wait {replay_wait_ms:.0}, promote {:.0}); step {:.0} ms",
                promo.timeline.unwrap_or(0),
                promo.duration.as_secs_f64() * 1000.0,
                started.elapsed().as_secs_f64() * 1000.0
            )),
        );
        Ok(o)
    }
}
