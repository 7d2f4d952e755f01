//! The data-loss (RPO) figures of a promotion: WAL bytes, heartbeat rows
//! and time lost, each with how it was measured, or `null` with the reason.
//! Separate because it is pure arithmetic on the checkpoint and the
//! heartbeat, unit-tested on plain values.

use std::time::Duration;

use serde_json::{json, Value};

use super::super::heartbeat::HeartbeatStatus;
use super::super::ops;
use super::Checkpoint;
use crate::action::StepContext;

/// Data-loss figures, each with how it was measured and its error bound,
/// or `null` with the reason it cannot be measured (never 0 for unknown).
///
/// Time lost is the newest *acknowledged* heartbeat (recorded by the
/// writer in the state store after each commit) minus the newest heartbeat
/// that survived on the promoted server, both stamped by the old primary's
/// clock: how long the operator took to declare the failure is not data
/// loss. Without acknowledgements the declared failure time only bounds it
/// (`time_lost_ms_at_most`), and the figure stays unknown.
pub(super) fn rpo(
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
pub(super) fn heartbeat_stale(
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
    use crate::postgres::ops::Lsn;

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
