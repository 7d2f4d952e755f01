//! The `postgres.promote` preflight: read-only probes of the target and
//! of the old primary, with the verdict `execute`'s guards would reach
//! now. Separate from `execute` so that what the plan may touch (nothing)
//! is visible in one place.

use std::time::Duration;

use super::super::fencing::Writes;
use super::super::ops::{self, Lsn};
use super::{heartbeat_status, reference_lsn, split_brain, Params};
use crate::action::{Preflight, StepContext, Verdict};

/// How long the preflight waits for each server: a standby that does not
/// answer this quickly (down, or frozen: it accepts TCP connections and
/// never answers) is reported, not waited for.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The preflight: read-only probes of the target (reachable, in recovery,
/// receive/replay LSN, lag) and of the old primary (reachable, would it
/// take writes), with the verdict `execute`'s guards would reach now.
/// Nothing is written: the write probe only asks for a read-write
/// transaction and rolls it back, and no checkpoint is saved.
pub(super) async fn probe(p: &Params, ctx: &StepContext) -> Preflight {
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
