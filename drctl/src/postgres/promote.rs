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

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::fencing::{probe_writes, Writes};
use super::heartbeat::{load_status, HeartbeatStatus};
use super::ops::{self, Lsn, Status};
use super::{server_field, PgServer};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

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

/// How long the preflight waits for each server: a standby that does not
/// answer this quickly (down, or frozen: it accepts TCP connections and
/// never answers) is reported, not waited for.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The preflight: read-only probes of the target (reachable, in recovery,
/// receive/replay LSN, lag) and of the old primary (reachable, would it
/// take writes), with the verdict `execute`'s guards would reach now.
/// Nothing is written: the write probe only asks for a read-write
/// transaction and rolls it back, and no checkpoint is saved.
async fn probe(p: &Params, ctx: &StepContext) -> Preflight {
    let limit = ctx.remaining().min(PROBE_TIMEOUT);
    let addr = p.server.addr();
    let st = match ops::status_of(&p.server, limit).await {
        Ok(s) => s,
        Err(e) => {
            let what = if e.is_unreachable() {
                "unreachable"
            } else {
                "not inspectable"
            };
            return Preflight::problem(format!(
                "the standby to promote, postgres {addr}, is {what}: {}",
                crate::diag::error_chain(&e)
            ));
        }
    };
    if !st.is_standby() {
        return Preflight::ok(format!(
            "postgres {addr} is already primary (timeline {}): no-op",
            st.timeline.map_or("not reported".into(), |t| t.to_string())
        ));
    }
    let (hb, hb_place) = heartbeat_status(ctx).await;
    let (reference, writes) = reference_lsn(p, hb.as_ref(), limit, false).await;
    let recv = st.receive_lsn.or(st.replay_lsn);
    let lag_bytes = match (reference, recv) {
        (Some(r), Some(recv)) => Some(r.bytes_after(recv)),
        _ => None,
    };
    let show = |l: Option<Lsn>| l.map_or("none".to_string(), |l| l.to_string());
    let mut pre = Preflight::ok(format!(
        "postgres {addr} standby (in recovery; receive {}, replay {}, receiver {}) -> primary",
        show(st.receive_lsn),
        show(st.replay_lsn),
        st.receiver_status.as_deref().unwrap_or("not running")
    ));
    let newest = match p.server.connect(limit).await {
        Ok(c) => ops::newest_beat(&c, &addr, limit).await.ok().flatten(),
        Err(_) => None,
    };
    let time_lag_ms = match (hb.as_ref().and_then(|h| h.last_acked_at_ms), newest) {
        (Some(acked), Some(b)) => Some((acked - b.at_ms).max(0)),
        _ => None,
    };
    pre.lines.push(match (lag_bytes, reference) {
        (Some(l), Some(r)) => format!("lag now: {l} WAL bytes behind {r}"),
        _ => {
            "lag now: not measurable (no old-primary LSN and no heartbeat acknowledgements)".into()
        }
    });
    if let Some(t) = time_lag_ms {
        pre.lines.push(format!(
            "time lag now: {} behind the last acknowledged heartbeat",
            crate::duration::format_duration(Duration::from_millis(t as u64))
        ));
    }
    let mut refuse = Vec::new();
    if let (Some(max), Some(l)) = (p.max_lag_bytes, lag_bytes) {
        if l > max {
            refuse.push(format!("{l} bytes behind (max_lag_bytes {max})"));
        }
    }
    if let Some(max) = p.max_lag {
        match time_lag_ms {
            Some(t) if t as u128 > max.as_millis() => refuse.push(format!(
                "{} behind (max_lag {})",
                crate::duration::format_duration(Duration::from_millis(t as u64)),
                crate::duration::format_duration(max)
            )),
            Some(_) => {}
            None => pre.lines.push(format!(
                "max_lag: the time lag cannot be measured now (heartbeat acknowledgements in {hb_place}: {}; heartbeat rows on the standby: {})",
                if hb.is_some() { "found" } else { "none" },
                if newest.is_some() { "found" } else { "none" }
            )),
        }
    }
    if !refuse.is_empty() {
        pre.verdict = Verdict::FailsNow;
        pre.lines.push(format!(
            "promote would refuse now: standby is {} unless it catches up or --accept-data-loss",
            refuse.join(", ")
        ));
    }
    match (&p.old_primary, &writes) {
        (None, _) => pre
            .lines
            .push("no old_primary given: the split-brain guard cannot ask it".into()),
        (Some(old), Some(w)) => {
            let old = old.addr();
            match split_brain(Some(w)) {
                Some(why) => {
                    pre.verdict = Verdict::FailsNow;
                    pre.lines.push(format!(
                        "old primary {old} {why}: promote will refuse (split brain) unless fenced first or --force"
                    ));
                }
                None => pre
                    .lines
                    .push(format!("old primary {old}: {}", writes_text(w))),
            }
        }
        (Some(_), None) => {}
    }
    pre
}

/// What a write probe found, when it is no split brain.
fn writes_text(w: &Writes) -> String {
    match w {
        Writes::Unreachable(e) => format!("unreachable ({e}): no split brain"),
        Writes::Rejected(_) => "rejects new sessions (pg_hba.conf): fenced".into(),
        Writes::Standby => "in recovery: no split brain".into(),
        Writes::Refused(_) => "refuses a read-write transaction: no split brain".into(),
        Writes::Accepted { .. } => "accepts writes".into(),
        Writes::Unknown(e) => format!("cannot be asked ({e})"),
    }
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

/// Data-loss figures, each with how it was measured and its error bound,
/// or `null` with the reason it cannot be measured (never 0 for unknown).
///
/// Time lost is the newest *acknowledged* heartbeat (recorded by the
/// writer in the state store after each commit) minus the newest heartbeat
/// that survived on the promoted server, both stamped by the old primary's
/// clock: how long the operator took to declare the failure is not data
/// loss. Without acknowledgements the declared failure time only bounds it
/// (`time_lost_ms_at_most`), and the figure stays unknown.
fn rpo(
    cp: &Checkpoint,
    hb: Option<&HeartbeatStatus>,
    newest: Option<ops::Beat>,
    ctx: &StepContext,
) -> Value {
    let failed_at_ms = ctx.failed_at.and_then(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as i64)
    });
    rpo_figures(cp, hb, newest, failed_at_ms)
}

/// How much later than the newest heartbeat the standby's last replayed
/// transaction may be before the heartbeat counts as not covering the end
/// of the old primary's writes (at least three heartbeat intervals).
const HEARTBEAT_STALE_MS: i64 = 1_000;

/// How much later than the newest surviving heartbeat the standby's last
/// replayed transaction is, when that is more than the heartbeat can
/// explain: the writer had stopped while the old primary kept writing, so
/// the heartbeat measures neither the lag nor the loss.
fn heartbeat_stale(
    newest: Option<ops::Beat>,
    last_replay_ms: Option<i64>,
    interval_ms: Option<u64>,
) -> Option<i64> {
    let (b, replay) = (newest?, last_replay_ms?);
    let margin = interval_ms
        .map_or(0, |i| 3 * i as i64)
        .max(HEARTBEAT_STALE_MS);
    (replay - b.at_ms > margin).then_some(replay - b.at_ms)
}

/// [`rpo`] on plain values (unit-tested).
fn rpo_figures(
    cp: &Checkpoint,
    hb: Option<&HeartbeatStatus>,
    newest: Option<ops::Beat>,
    failed_at_ms: Option<i64>,
) -> Value {
    let mut v = serde_json::Map::new();
    let mut methods = serde_json::Map::new();
    let mut bounds = serde_json::Map::new();
    let mut unknown = serde_json::Map::new();
    let acked_id = hb.and_then(|h| h.last_acked_id);
    let acked_at = hb.and_then(|h| h.last_acked_at_ms);
    let interval = hb.map(|h| h.interval_ms).filter(|i| *i > 0);
    let no_acks = "no heartbeat acknowledgements in the state store this run reads";
    let no_row = "no heartbeat row on the promoted server";

    match (cp.reference_lsn, cp.receive_lsn.or(cp.replay_lsn)) {
        (Some(r), Some(recv)) => {
            v.insert("wal_bytes_lost".into(), json!(r.bytes_after(recv)));
            methods.insert("wal_bytes_lost".into(), json!(format!("newest known old-primary LSN {r} (fence, old primary, last acknowledged heartbeat) minus standby receive LSN {recv}")));
            bounds.insert("wal_bytes_lost".into(), json!("at least this: WAL the old primary wrote after the newest known LSN is not counted"));
        }
        (None, _) => {
            v.insert("wal_bytes_lost".into(), Value::Null);
            unknown.insert("wal_bytes_lost".into(), json!("no reference LSN: the old primary is unreachable, the fence gave no LSN and no heartbeat acknowledged one"));
        }
        (_, None) => {
            v.insert("wal_bytes_lost".into(), Value::Null);
            unknown.insert(
                "wal_bytes_lost".into(),
                json!("the standby reported no receive or replay LSN"),
            );
        }
    }

    if let Some(b) = newest {
        v.insert("newest_surviving_heartbeat_id".into(), json!(b.id));
        v.insert(
            "newest_surviving_heartbeat_at".into(),
            json!(crate::journal::format_ms(b.at_ms.max(0) as u64)),
        );
    }
    if let Some(id) = acked_id {
        v.insert("last_acked_heartbeat_id".into(), json!(id));
    }
    if let Some(at) = acked_at {
        v.insert(
            "last_acked_heartbeat_at".into(),
            json!(crate::journal::format_ms(at.max(0) as u64)),
        );
    }
    v.insert("heartbeat_interval_ms".into(), json!(interval));

    match (acked_id, newest) {
        (Some(a), Some(b)) => {
            v.insert("heartbeats_lost".into(), json!((a - b.id).max(0)));
            methods.insert("heartbeats_lost".into(), json!("last acknowledged heartbeat id (state store) minus newest id on the promoted server"));
            bounds.insert("heartbeats_lost".into(), json!("exact for acknowledged writes; a write in flight at the failure was never acknowledged, so it is not counted as acknowledged data lost"));
        }
        (None, _) => {
            v.insert("heartbeats_lost".into(), Value::Null);
            unknown.insert("heartbeats_lost".into(), json!(no_acks));
        }
        (_, None) => {
            v.insert("heartbeats_lost".into(), Value::Null);
            unknown.insert("heartbeats_lost".into(), json!(no_row));
        }
    }

    // The heartbeat covers the end of the old primary's writes only if it
    // was still writing then: a transaction the standby replayed well after
    // the newest heartbeat (same clock: the old primary's) shows writes the
    // heartbeat never saw, so its acknowledgements say nothing about what
    // came after them (a stopped writer would otherwise read as 0 lost).
    let stale = heartbeat_stale(newest, cp.last_replay_ms, interval);
    match (acked_at, newest) {
        (Some(_), Some(_)) if stale.is_some() => {
            v.insert("time_lost_ms".into(), Value::Null);
            unknown.insert("time_lost_ms".into(), json!(format!(
                "the heartbeat stopped before the old primary's last writes: the standby replayed a transaction {} after the newest heartbeat, so writes after the last acknowledgement were not probed",
                crate::duration::format_duration(Duration::from_millis(stale.unwrap_or(0).max(0) as u64))
            )));
        }
        (Some(a), Some(b)) => {
            v.insert("time_lost_ms".into(), json!((a - b.at_ms).max(0)));
            methods.insert("time_lost_ms".into(), json!("newest acknowledged heartbeat time minus newest surviving heartbeat time (both stamped by the old primary's clock)"));
            bounds.insert("time_lost_ms".into(), json!(match interval {
                Some(i) => format!("writes after the last acknowledged heartbeat are not seen: the window of lost writes is up to one heartbeat interval ({i} ms) longer; at least rows lost times the interval (the writer never writes faster), more when the writer was delayed"),
                None => "writes after the last acknowledged heartbeat are not seen: up to one heartbeat interval longer".into(),
            }));
        }
        (None, b) => {
            v.insert("time_lost_ms".into(), Value::Null);
            unknown.insert(
                "time_lost_ms".into(),
                json!(if b.is_none() {
                    format!("{no_acks}; {no_row}")
                } else {
                    no_acks.to_string()
                }),
            );
            if let (Some(b), Some(f)) = (b, failed_at_ms) {
                v.insert("time_lost_ms_at_most".into(), json!((f - b.at_ms).max(0)));
                bounds.insert("time_lost_ms".into(), json!("at most the declared failure time minus the newest surviving heartbeat (plus clock skew between drctl and the old primary): it includes the time until the failure was declared, so it is a bound, never the figure"));
            }
        }
        (_, None) => {
            v.insert("time_lost_ms".into(), Value::Null);
            unknown.insert("time_lost_ms".into(), json!(no_row));
        }
    }

    // One line each for summaries, in reading order.
    let join = |m: &serde_json::Map<String, Value>| {
        [
            ("wal_bytes_lost", "WAL"),
            ("heartbeats_lost", "rows"),
            ("time_lost_ms", "time"),
        ]
        .iter()
        .filter_map(|(k, label)| {
            m.get(*k)
                .and_then(Value::as_str)
                .map(|t| format!("{label}: {t}"))
        })
        .collect::<Vec<_>>()
        .join("; ")
    };
    v.insert("method".into(), json!(join(&methods)));
    v.insert("bound".into(), json!(join(&bounds)));
    v.insert("methods".into(), Value::Object(methods));
    v.insert("bounds".into(), Value::Object(bounds));
    v.insert("unknown".into(), Value::Object(unknown));
    Value::Object(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(reference: Option<&str>, recv: Option<&str>) -> Checkpoint {
        Checkpoint {
            receive_lsn: recv.and_then(Lsn::parse),
            replay_lsn: None,
            last_replay_ms: None,
            reference_lsn: reference.and_then(Lsn::parse),
            lag_bytes: None,
            time_lag_ms: None,
            time_lag_is_bound: false,
            accepted_data_loss: None,
            forced: None,
            at_ms: 0,
        }
    }

    fn acks(id: i64, at_ms: i64) -> HeartbeatStatus {
        HeartbeatStatus {
            interval_ms: 100,
            last_acked_id: Some(id),
            last_acked_at_ms: Some(at_ms),
            ..Default::default()
        }
    }

    #[test]
    fn time_lost_comes_from_acknowledged_writes_not_the_declared_failure_time() {
        let beat = ops::Beat {
            id: 90,
            at_ms: 1_000_000,
        };
        // Declared 9 s after the last acknowledged write.
        let v = rpo_figures(
            &cp(Some("0/3000200"), Some("0/3000100")),
            Some(&acks(100, 1_001_000)),
            Some(beat),
            Some(1_010_000),
        );
        assert_eq!(v["time_lost_ms"], 1000, "{v}");
        assert_eq!(v["heartbeats_lost"], 10, "{v}");
        assert_eq!(v["wal_bytes_lost"], 256, "{v}");
        assert!(v.get("time_lost_ms_at_most").is_none(), "{v}");
        assert!(!v["method"].as_str().unwrap().contains("+1"), "{v}");
    }

    #[test]
    fn without_acknowledgements_figures_are_null_and_the_failure_time_only_bounds() {
        let beat = ops::Beat {
            id: 90,
            at_ms: 1_000_000,
        };
        let v = rpo_figures(
            &cp(None, Some("0/3000100")),
            None,
            Some(beat),
            Some(1_009_213),
        );
        assert_eq!(v["time_lost_ms"], Value::Null, "{v}");
        assert_eq!(v["heartbeats_lost"], Value::Null, "{v}");
        assert_eq!(v["wal_bytes_lost"], Value::Null, "{v}");
        assert_eq!(v["time_lost_ms_at_most"], 9213, "{v}");
        assert!(v["unknown"]["time_lost_ms"]
            .as_str()
            .unwrap()
            .contains("no heartbeat acknowledgements"));
        assert!(v["unknown"]["wal_bytes_lost"]
            .as_str()
            .unwrap()
            .contains("no reference LSN"));
    }

    #[test]
    fn a_heartbeat_that_stopped_before_the_last_writes_gives_no_time_lost() {
        // The writer stopped an hour before the failure; the old primary
        // went on committing (the standby replayed a transaction at +1h).
        let beat = ops::Beat {
            id: 90,
            at_ms: 1_000_000,
        };
        let mut c = cp(Some("0/3000200"), Some("0/3000100"));
        c.last_replay_ms = Some(1_000_000 + 3_600_000);
        let v = rpo_figures(&c, Some(&acks(90, 1_000_000)), Some(beat), Some(4_700_000));
        assert_eq!(v["time_lost_ms"], Value::Null, "{v}");
        assert!(v["unknown"]["time_lost_ms"]
            .as_str()
            .unwrap()
            .contains("heartbeat stopped"));
        // A replay at the newest heartbeat (the usual case) keeps the figure.
        c.last_replay_ms = Some(1_000_050);
        let v = rpo_figures(&c, Some(&acks(95, 1_000_500)), Some(beat), Some(4_700_000));
        assert_eq!(v["time_lost_ms"], 500, "{v}");
    }

    #[test]
    fn no_surviving_row_is_unknown_not_zero() {
        let v = rpo_figures(
            &cp(Some("0/3000200"), Some("0/3000100")),
            Some(&acks(5, 1)),
            None,
            None,
        );
        assert_eq!(v["heartbeats_lost"], Value::Null, "{v}");
        assert_eq!(v["time_lost_ms"], Value::Null, "{v}");
        assert!(v.get("time_lost_ms_at_most").is_none(), "{v}");
    }
}
