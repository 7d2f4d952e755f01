//! `drill.assert_production`: after an isolated drill's teardown, the
//! production invariants hold again, each read independently:
//!
//! - the primary's `pg_stat_replication` shows a streaming standby and the
//!   standby's `pg_stat_wal_receiver` streams;
//! - primary and standby are on the same timeline, the one the drill
//!   started with (a clone that leaked into production would show);
//! - the standby's replication slot, when it uses one, is active;
//! - the standby's replay lag is back under `max_lag_bytes` (polled until
//!   the step's deadline);
//! - every production DNS record answers the `region`'s values at every
//!   authoritative server.
//!
//! Read-only. A failed invariant fails the step, naming each.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::action::{ActionError, ActionKind, Outputs, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::pgconn::PgServer;
use crate::postgres::ops;
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct DrillAssertProduction;

pub struct Params {
    primary: PgServer,
    standby: PgServer,
    region: Option<String>,
    timeline: Option<u32>,
    max_lag_bytes: u64,
}

/// What one read of production found.
struct Reading {
    streaming_senders: i64,
    receiver: Option<String>,
    slot: Option<String>,
    slot_active: Option<bool>,
    primary_tl: Option<u32>,
    standby_tl: Option<u32>,
    lag: Option<u64>,
}

async fn read(p: &Params, limit: Duration) -> Result<Reading, ActionError> {
    let pc = p.primary.connect(limit).await?;
    let sc = p.standby.connect(limit).await?;
    let pa = p.primary.addr();
    let sa = p.standby.addr();
    let ps = ops::status(&pc, &pa, limit).await?;
    let ss = ops::status(&sc, &sa, limit).await?;
    let senders: i64 = crate::pgconn::query(
        &pc,
        &pa,
        "pg_stat_replication",
        "select count(*) from pg_stat_replication where state = 'streaming'",
        limit,
    )
    .await?
    .first()
    .map(|r| r.get(0))
    .unwrap_or(0);
    let slot: Option<String> = crate::pgconn::query(
        &sc,
        &sa,
        "pg_stat_wal_receiver",
        "select slot_name from pg_stat_wal_receiver",
        limit,
    )
    .await?
    .first()
    .and_then(|r| r.get(0));
    let slot_active = match &slot {
        Some(name) => Some(
            pc.query_opt(
                "select active from pg_replication_slots where slot_name = $1",
                &[name],
            )
            .await
            .map_err(|e| ActionError::failed(format!("{pa}: read pg_replication_slots: {e}")))?
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false),
        ),
        None => None,
    };
    Ok(Reading {
        streaming_senders: senders,
        receiver: ss.receiver_status.clone(),
        slot,
        slot_active,
        primary_tl: (!ps.is_standby()).then_some(ps.timeline).flatten(),
        standby_tl: ss.timeline,
        lag: match (ps.current_lsn, ss.replay_lsn) {
            (Some(c), Some(r)) => Some(c.bytes_after(r)),
            _ => None,
        },
    })
}

fn problems(p: &Params, r: &Reading) -> Vec<String> {
    let mut bad = Vec::new();
    if r.streaming_senders < 1 {
        bad.push(format!(
            "{} shows no streaming standby in pg_stat_replication",
            p.primary.addr()
        ));
    }
    if r.receiver.as_deref() != Some("streaming") {
        bad.push(format!(
            "the standby's WAL receiver is {}",
            r.receiver.as_deref().unwrap_or("not running")
        ));
    }
    match (r.primary_tl, r.standby_tl) {
        (Some(a), Some(b)) if a == b => {
            if let Some(want) = p.timeline.filter(|w| *w != a) {
                bad.push(format!(
                    "production is on timeline {a}, the drill started on {want}"
                ));
            }
        }
        (None, _) => bad.push(format!("{} is not a primary", p.primary.addr())),
        (a, b) => bad.push(format!("primary on timeline {a:?}, standby on {b:?}")),
    }
    if r.slot_active == Some(false) {
        bad.push(format!(
            "replication slot {} is not active",
            r.slot.as_deref().unwrap_or("?")
        ));
    }
    match r.lag {
        Some(l) if l <= p.max_lag_bytes => {}
        Some(l) => bad.push(format!("replay lag {l} bytes, over {}", p.max_lag_bytes)),
        None => bad.push("replay lag not measurable (no primary or standby LSN)".into()),
    }
    bad
}

/// Production records answer the region's values at every server.
async fn dns_unchanged(ctx: &StepContext, region: &str) -> Result<Vec<String>, ActionError> {
    let Some(env) = ctx.env.as_deref().filter(|e| e.doc.get("dns").is_some()) else {
        return Ok(Vec::new());
    };
    let cfg = super::dns::env_config(env)?;
    let mut bad = Vec::new();
    for s in cfg.desired(region) {
        for ns in &cfg.nameservers {
            match crate::dnsquery::answers(ns, &s.name, &s.rtype, cfg.timeout).await {
                Ok(v) if v == s.values => {}
                Ok(v) => bad.push(format!(
                    "{ns} answers {} = {v:?}, production is {:?}",
                    s.key(),
                    s.values
                )),
                Err(e) => bad.push(e.to_string()),
            }
        }
    }
    Ok(bad)
}

#[async_trait]
impl ActionKind for DrillAssertProduction {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "drill.assert_production"
    }
    fn summary(&self) -> &'static str {
        "Re-assert production after an isolated drill: standby streaming on the same timeline, slot active, lag normal, DNS unchanged"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "streaming_senders",
            "receiver",
            "timeline",
            "timeline_before",
            "slot",
            "slot_active",
            "lag_bytes",
            "summary",
        ]
    }
    fn read_only(&self, _params: &Value) -> bool {
        true
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "drill.assert_production")?;
        let primary = crate::postgres::server_field(ctx, &mut r, "primary", true);
        let standby = crate::postgres::server_field(ctx, &mut r, "standby", true);
        let region = r
            .opt("region")
            .filter(|n| !ctx.deferred(n))
            .and_then(|n| ctx.string(n, "region"));
        let timeline = r
            .opt("timeline")
            .filter(|n| !ctx.deferred(n) && n.as_str() != Some(""))
            .and_then(|n| ctx.uint(n, "timeline"))
            .map(|t| t as u32);
        let max_lag_bytes = r
            .opt("max_lag_bytes")
            .and_then(|n| ctx.uint(n, "max_lag_bytes"))
            .unwrap_or(16 << 20);
        r.finish(ctx);
        Some(Params {
            primary: primary?,
            standby: standby?,
            region,
            timeline,
            max_lag_bytes,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "production invariants: {} streams to {}, same timeline, slot active, lag normal, DNS unchanged",
            crate::postgres::addr_of(params, "primary"),
            crate::postgres::addr_of(params, "standby")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        _ctx: &StepContext,
    ) -> Result<crate::action::Preflight, ActionError> {
        use crate::action::Preflight;
        // Read-only: the same reads as the step, now (production before the
        // drill must already satisfy what it is held to after).
        Ok(match read(p, Duration::from_secs(5)).await {
            Err(e) => Preflight::problem(e.to_string()),
            Ok(r) => {
                let bad = problems(p, &r);
                if bad.is_empty() {
                    Preflight::ok(format!(
                        "production now: standby streaming on timeline {}, lag {} bytes",
                        r.primary_tl.unwrap_or(0),
                        r.lag.unwrap_or(0)
                    ))
                } else {
                    Preflight::problem(format!("production now: {}", bad.join("; ")))
                }
            }
        })
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let limit = Duration::from_secs(5);
        // Without an explicit timeline: the one the clone step saw on the
        // primary before it copied anything (its journaled checkpoint).
        // The run's view, read once: the journaled timeline and, below,
        // the steps that failed before this one. A journal that cannot be
        // read fails the step rather than passing a drill unchecked.
        let view = crate::engine::run::load_view_only(ctx.store.as_ref(), &ctx.run_id)
            .await
            .map_err(|e| {
                ActionError::failed(format!(
                    "read the run's journal: {}",
                    crate::diag::error_chain(&e)
                ))
            })?;
        let journaled = if p.timeline.is_none() {
            view.steps
                .iter()
                .filter(|s| s.action == super::CLONE_KIND)
                .find_map(|s| s.checkpoint.as_ref()?.get("production_timeline")?.as_u64())
                .map(|t| t as u32)
        } else {
            None
        };
        let p = &Params {
            primary: p.primary.clone(),
            standby: p.standby.clone(),
            region: p.region.clone(),
            timeline: p.timeline.or(journaled),
            max_lag_bytes: p.max_lag_bytes,
        };
        // Lag may need a moment to return to normal after the copy: poll.
        let (reading, mut bad) = loop {
            let r = read(p, limit).await?;
            let bad = problems(p, &r);
            if bad.is_empty() || Instant::now() + Duration::from_millis(300) >= ctx.deadline {
                break (r, bad);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let region = p
            .region
            .clone()
            .or_else(|| ctx.env.as_deref().map(|e| e.active_region.clone()));
        if let Some(region) = &region {
            bad.extend(dns_unchanged(ctx, region).await?);
        }
        if !bad.is_empty() {
            return Err(ActionError::failed_hint(
                format!(
                    "production invariants do not hold after the drill: {}",
                    bad.join("; ")
                ),
                "look at the standby and the primary now; the drill's clone is already torn down",
            ));
        }
        // The steps before the teardown carry on after a failure (so the
        // clone is always torn down); the drill still failed if one did.
        {
            let failed: Vec<String> = view
                .steps
                .iter()
                .filter(|s| s.id != ctx.step_id && s.status == crate::journal::StepStatus::Failed)
                .map(|s| {
                    format!(
                        "`{}` failed ({})",
                        s.id,
                        s.error
                            .as_ref()
                            .map(|e| e.message.as_str())
                            .unwrap_or("no error journaled")
                    )
                })
                .collect();
            if !failed.is_empty() {
                return Err(ActionError::failed_hint(
                    format!(
                        "production invariants hold, but the drill failed: {}",
                        failed.join("; ")
                    ),
                    "the clone is torn down; fix the cause and run the drill again",
                ));
            }
        }
        let mut o = Outputs::new();
        o.insert("streaming_senders".into(), json!(reading.streaming_senders));
        o.insert("receiver".into(), json!(reading.receiver));
        o.insert("timeline".into(), json!(reading.primary_tl));
        o.insert("timeline_before".into(), json!(p.timeline));
        o.insert("slot".into(), json!(reading.slot));
        o.insert("slot_active".into(), json!(reading.slot_active));
        o.insert("lag_bytes".into(), json!(reading.lag));
        o.insert(
            "summary".into(),
            json!(format!(
                "standby streaming on timeline {}, lag {} bytes, slot {}, production DNS unchanged",
                reading.primary_tl.unwrap_or(0),
                reading.lag.unwrap_or(0),
                match (&reading.slot, reading.slot_active) {
                    (Some(s), Some(true)) => format!("{s} active"),
                    _ => "none used".to_string(),
                }
            )),
        );
        Ok(o)
    }
}
