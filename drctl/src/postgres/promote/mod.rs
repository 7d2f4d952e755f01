//! `postgres.promote`: turn the DR standby into the primary.
//!
//! Check, act, verify:
//! 1. Already primary? Then nothing to do (reported as such). If this run
//!    promoted it before being killed, the checkpoint saved in step 3 gives
//!    back the pre-promotion figures, so resumed outputs are the same.
//! 2. Guards: the old primary, if reachable, must not accept writes (split
//!    brain) unless `--force`: a fresh session asks it for a read-write
//!    transaction and creates a temporary table in it (rolled back), since
//!    a read-only flag is something any client can undo; the standby's lag must be within `max_lag_bytes` /
//!    `max_lag` unless `--accept-data-loss` (both journaled in the outputs).
//! 3. Save the pre-promotion state (receive/replay LSN, last replay time)
//!    durably in the state store, then `pg_promote(wait => false)` and poll.
//! 4. Measure RPO: WAL bytes and heartbeat rows lost, and time lost.
//!
//! The read-only preflight is in [`preflight`], the data-loss (RPO)
//! arithmetic in [`rpo`]: each reads on its own, and the figures are
//! unit-tested without a server. This module holds the action, its
//! checkpoint, the guards and `execute`.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::fencing::{probe_writes, Writes};
use super::heartbeat::{load_status, HeartbeatStatus};
use super::ops::{self, Lsn, Status};
use super::{server_field, PgServer};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

mod preflight;
mod rpo;

use preflight::probe;
use rpo::{heartbeat_stale, rpo};

#[derive(Clone, Copy)]
pub struct PgPromote;

/// The step's `with:`, decoded.
pub struct Params {
    server: PgServer,
    old_primary: Option<PgServer>,
    old_primary_lsn: Option<Lsn>,
    max_lag_bytes: Option<u64>,
    max_lag: Option<Duration>,
    poll: Duration,
}

/// Saved before acting, so a resumed step reports what was true before the
/// promotion it already did.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    receive_lsn: Option<Lsn>,
    replay_lsn: Option<Lsn>,
    last_replay_ms: Option<i64>,
    reference_lsn: Option<Lsn>,
    lag_bytes: Option<u64>,
    time_lag_ms: Option<i64>,
    /// True when `time_lag_ms` is an upper bound (declared failure time
    /// minus the newest surviving heartbeat), not a measurement.
    #[serde(default)]
    time_lag_is_bound: bool,
    accepted_data_loss: Option<Value>,
    forced: Option<Value>,
    at_ms: u64,
}

/// The heartbeat's acknowledgements for this environment, and where they
/// were looked for (said in messages when they are missing).
async fn heartbeat_status(ctx: &StepContext) -> (Option<HeartbeatStatus>, String) {
    let Some(env) = ctx.env.as_ref() else {
        return (None, "no environment".into());
    };
    let place = format!(
        "document {}/{} in {}",
        super::heartbeat::COLLECTION,
        env.name,
        ctx.store.describe()
    );
    match load_status(ctx.store.as_ref(), &env.name).await {
        Ok(s) => (s, place),
        Err(e) => (None, format!("{place} (unreadable: {e})")),
    }
}

/// The newest WAL position known to exist on the old primary, and what a
/// fresh session on it was allowed to do (`write`: see [`probe_writes`]).
async fn reference_lsn(
    p: &Params,
    hb: Option<&HeartbeatStatus>,
    limit: Duration,
    write: bool,
) -> (Option<Lsn>, Option<Writes>) {
    let mut best = p.old_primary_lsn;
    let mut writes = None;
    if let Some(old) = &p.old_primary {
        if let Ok(st) = ops::status_of(old, limit).await {
            best = best.max(st.current_lsn);
        }
        writes = Some(probe_writes(old, write, limit).await);
    }
    if let Some(l) = hb
        .and_then(|h| h.last_acked_lsn.as_deref())
        .and_then(Lsn::parse)
    {
        best = best.max(Some(l));
    }
    (best, writes)
}

/// Why promoting now would split the brain, if it would: the old primary
/// gave a fresh session a read-write transaction, or cannot be asked.
fn split_brain(w: Option<&Writes>) -> Option<String> {
    match w? {
        Writes::Accepted { read_only_default: true } => Some("accepts writes: a fresh session got a read-write transaction although default_transaction_read_only is on (a soft fence, which any client can undo)".into()),
        Writes::Accepted { read_only_default: false } => Some("accepts writes: a fresh session got a read-write transaction".into()),
        Writes::Unknown(e) => Some(format!("cannot be asked whether it accepts writes ({e})")),
        Writes::Unreachable(_) | Writes::Rejected(_) | Writes::Standby | Writes::Refused(_) => None,
    }
}

const SPLIT_BRAIN_HINT: &str = "fence it first with postgres.fence `method: hba` (rejects new sessions, cuts all) or `method: stop`, or resume with --force if you are certain it is isolated (journaled)";

async fn survivor(server: &PgServer, limit: Duration) -> Option<ops::Beat> {
    let c = server.connect(limit).await.ok()?;
    ops::newest_beat(&c, &server.addr(), limit)
        .await
        .ok()
        .flatten()
}

fn lsn_s(l: Option<Lsn>) -> Value {
    json!(l.map(|x| x.to_string()))
}

#[async_trait]
impl ActionKind for PgPromote {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "postgres.promote"
    }
    fn summary(&self) -> &'static str {
        "Promote the standby to primary (guards: split brain, max lag); measure data loss"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "promoted",
            "already_primary",
            "timeline",
            "promotion_ms",
            "receive_lsn",
            "replay_lsn",
            "last_replay_at",
            "lag_bytes",
            "rpo",
            "summary",
            "accepted_data_loss",
            "forced",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "postgres.promote")?;
        let server = server_field(ctx, &mut r, "server", true);
        let old_primary = server_field(ctx, &mut r, "old_primary", false);
        let lsn_node = r.opt("old_primary_lsn");
        let old_primary_lsn = lsn_node.and_then(|n| {
            if ctx.deferred(n) {
                return None;
            }
            let s = ctx.string(n, "old_primary_lsn")?;
            let l = Lsn::parse(&s);
            if l.is_none() {
                ctx.error(
                    "E-VALUE",
                    n,
                    format!("old_primary_lsn `{s}` is not an LSN"),
                    Some("e.g. 0/3000148, or ${steps.fence.outputs.final_lsn}".into()),
                );
            }
            l
        });
        let max_lag_bytes = r
            .opt("max_lag_bytes")
            .and_then(|n| ctx.uint(n, "max_lag_bytes"));
        let max_lag = r.opt("max_lag").and_then(|n| ctx.duration(n, "max_lag"));
        let poll = r
            .opt("poll_interval")
            .and_then(|n| ctx.duration(n, "poll_interval"))
            .unwrap_or(Duration::from_millis(5));
        r.finish(ctx);
        Some(Params {
            server: server?,
            old_primary,
            old_primary_lsn,
            max_lag_bytes,
            max_lag,
            poll,
        })
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Not read-only: it promotes the standby.
        false
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "promote postgres {} to primary",
            super::addr_of(params, "server")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        Ok(probe(p, ctx).await)
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let limit = ctx.remaining();
        let addr = p.server.addr();
        let client = p.server.connect(limit).await?;
        let st: Status = ops::status(&client, &addr, limit).await?;
        let saved: Option<Checkpoint> = ctx.saved()?;
        let (hb, hb_place) = heartbeat_status(ctx).await;

        let (cp, promotion) = if !st.is_standby() {
            // Already primary: either another actor promoted it (a no-op for
            // us) or this very step did before drctl was killed.
            (saved.clone(), None)
        } else {
            let (reference, writes) =
                reference_lsn(p, hb.as_ref(), limit.min(Duration::from_secs(2)), true).await;
            let mut forced = None;
            if let Some(why) = split_brain(writes.as_ref()) {
                let old = p.old_primary.as_ref().map(|o| o.addr()).unwrap_or_default();
                if !ctx.options.force {
                    return Err(ActionError::Refused {
                        message: format!("old primary {old} is reachable and {why}: promoting now would split the brain"),
                        hint: SPLIT_BRAIN_HINT.into(),
                    });
                }
                forced = Some(
                    json!({"by": ctx.operator, "at": crate::journal::now_rfc3339(), "reason": format!("old primary {old} {why}")}),
                );
            }
            let lag_bytes = match (reference, st.receive_lsn.or(st.replay_lsn)) {
                (Some(r), Some(recv)) => Some(r.bytes_after(recv)),
                _ => None,
            };
            let newest = ops::newest_beat(&client, &addr, limit).await.ok().flatten();
            // Without the heartbeat's acknowledgements, the declared failure
            // time bounds the lag from above: nothing acknowledged after the
            // failure can have been lost.
            let failed_at_ms = ctx.failed_at.and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_millis() as i64)
            });
            let stale = heartbeat_stale(
                newest,
                st.last_replay_ms,
                hb.as_ref().map(|h| h.interval_ms),
            );
            let (time_lag_ms, lag_is_bound) = match (
                hb.as_ref().and_then(|h| h.last_acked_at_ms),
                newest,
                failed_at_ms,
            ) {
                _ if stale.is_some() => (None, false),
                (Some(acked), Some(b), _) => (Some((acked - b.at_ms).max(0)), false),
                (None, Some(b), Some(f)) => (Some((f - b.at_ms).max(0)), true),
                _ => (None, false),
            };
            let mut problems = Vec::new();
            if let Some(max) = p.max_lag_bytes {
                match lag_bytes {
                    Some(l) if l > max => problems.push(format!("standby is {l} bytes behind (max_lag_bytes {max})")),
                    None => problems.push("standby lag in bytes cannot be measured (old primary unreachable, no fence LSN, no heartbeat)".into()),
                    _ => {}
                }
            }
            if let Some(max) = p.max_lag {
                match time_lag_ms {
                    Some(t) if t as u128 > max.as_millis() && lag_is_bound => problems.push(format!(
                        "standby may be up to {} behind: no heartbeat acknowledgements in {hb_place}, so the lag is bounded by the declared failure time minus the newest heartbeat on the standby (max_lag {})",
                        crate::duration::format_duration(Duration::from_millis(t as u64)),
                        crate::duration::format_duration(max)
                    )),
                    Some(t) if t as u128 > max.as_millis() => problems.push(format!(
                        "standby is {} behind the last heartbeat (max_lag {})",
                        crate::duration::format_duration(Duration::from_millis(t as u64)),
                        crate::duration::format_duration(max)
                    )),
                    None if stale.is_some() => problems.push(format!(
                        "standby time lag cannot be measured: the heartbeat stopped before the old primary's last writes (the standby replayed a transaction {} after the newest heartbeat), so its acknowledgements say nothing about what came after (max_lag {})",
                        crate::duration::format_duration(Duration::from_millis(stale.unwrap_or(0).max(0) as u64)),
                        crate::duration::format_duration(max)
                    )),
                    None => problems.push(format!(
                        "standby time lag cannot be measured: no heartbeat acknowledgements in {hb_place}{}",
                        if newest.is_none() { " and no heartbeat rows on the standby" } else { " and no declared failure time" }
                    )),
                    _ => {}
                }
            }
            let mut accepted = None;
            if !problems.is_empty() {
                if !ctx.options.accept_data_loss {
                    return Err(ActionError::Refused {
                        message: problems.join("; "),
                        hint: if hb.is_none() {
                            format!("the heartbeat writes its acknowledgements to its own state store: run this failover against the same store (the environment's `state:` section, or the same --state), or wait for the standby to catch up, or resume with --accept-data-loss to promote anyway (journaled); looked in {hb_place}")
                        } else {
                            "wait for the standby to catch up, or resume with --accept-data-loss to promote anyway (journaled)".into()
                        },
                    });
                }
                accepted = Some(
                    json!({"by": ctx.operator, "at": crate::journal::now_rfc3339(), "problems": problems}),
                );
            }
            // A checkpoint from before an interruption is the truth about
            // "before": the promotion may already be under way now.
            let cp = saved.clone().unwrap_or(Checkpoint {
                receive_lsn: st.receive_lsn,
                replay_lsn: st.replay_lsn,
                last_replay_ms: st.last_replay_ms,
                reference_lsn: reference,
                lag_bytes,
                time_lag_ms,
                time_lag_is_bound: lag_is_bound,
                accepted_data_loss: accepted,
                forced,
                at_ms: crate::journal::now_ms(),
            });
            // Journaled (durable) before the side effect.
            ctx.checkpoint(&cp).await?;
            drop(client);
            let promo = ops::promote(&p.server, p.poll, limit).await?;
            (Some(cp), Some(promo))
        };

        let after = ops::status_of(&p.server, limit).await?;
        let newest = survivor(&p.server, limit).await;
        // A saved checkpoint means this step issued the promotion (perhaps
        // before drctl was killed), whatever the server says now.
        let promoted_here =
            promotion.as_ref().is_some_and(|x| !x.already_primary) || saved.is_some();
        let mut o = Outputs::new();
        o.insert("promoted".into(), json!(promoted_here));
        o.insert("already_primary".into(), json!(!promoted_here));
        o.insert("timeline".into(), json!(after.timeline));
        o.insert(
            "promotion_ms".into(),
            json!(promotion
                .as_ref()
                .map(|x| x.duration.as_secs_f64() * 1000.0)),
        );
        if let Some(cp) = &cp {
            o.insert("receive_lsn".into(), lsn_s(cp.receive_lsn));
            o.insert("replay_lsn".into(), lsn_s(cp.replay_lsn));
            o.insert(
                "last_replay_at".into(),
                json!(cp
                    .last_replay_ms
                    .map(|m| crate::journal::format_ms(m as u64))),
            );
            o.insert("lag_bytes".into(), json!(cp.lag_bytes));
            o.insert(
                "accepted_data_loss".into(),
                cp.accepted_data_loss.clone().unwrap_or(Value::Null),
            );
            o.insert("forced".into(), cp.forced.clone().unwrap_or(Value::Null));
            o.insert("rpo".into(), rpo(cp, hb.as_ref(), newest, ctx));
        }
        let summary = match &promotion {
            Some(pr) if !pr.already_primary => format!(
                "{addr} promoted in {:.1} ms, timeline {}",
                pr.duration.as_secs_f64() * 1000.0,
                after.timeline.unwrap_or(0)
            ),
            _ if promoted_here => format!(
                "{addr} promoted by this run before an interruption; timeline {}",
                after.timeline.unwrap_or(0)
            ),
            _ => format!(
                "{addr} was already primary (timeline {}): no-op",
                after.timeline.unwrap_or(0)
            ),
        };
        o.insert("summary".into(), json!(summary));
        Ok(o)
    }
}
