//! PostgreSQL operations used by the actions, the heartbeat and the lab.
//! Every call is bounded by a timeout; none of them retries on its own (the
//! engine's retry policy decides).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::conn::{query, PgError, PgServer};

/// A WAL position (`16/B374D848`), comparable and subtractable in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        Some(Lsn(
            (u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?
        ))
    }

    pub fn bytes_after(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub role: &'static str,
    pub timeline: Option<u32>,
    /// Primary only: where WAL ends now.
    pub current_lsn: Option<Lsn>,
    pub receive_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    pub last_replay_ms: Option<i64>,
    pub receiver_status: Option<String>,
    pub read_only: bool,
}

impl Status {
    pub fn is_standby(&self) -> bool {
        self.role == "standby"
    }
}

const STATUS_SQL: &str = "select pg_is_in_recovery(), \
  case when pg_is_in_recovery() then null else pg_current_wal_lsn()::text end, \
  pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
  (extract(epoch from pg_last_xact_replay_timestamp()) * 1000)::bigint, \
  case when pg_is_in_recovery() then coalesce((select received_tli from pg_stat_wal_receiver), (select timeline_id from pg_control_checkpoint())) \
       else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end, \
  (select status from pg_stat_wal_receiver), \
  current_setting('default_transaction_read_only') = 'on'";

pub async fn status(client: &Client, addr: &str, limit: Duration) -> Result<Status, PgError> {
    let rows = query(client, addr, "status", STATUS_SQL, limit).await?;
    let row = rows.first().ok_or_else(|| PgError::Unexpected {
        addr: addr.into(),
        op: "status",
        detail: "no row".into(),
    })?;
    let lsn = |i: usize| {
        row.get::<_, Option<String>>(i)
            .as_deref()
            .and_then(Lsn::parse)
    };
    let standby: bool = row.get(0);
    Ok(Status {
        role: if standby { "standby" } else { "primary" },
        timeline: row.get::<_, Option<i32>>(5).map(|t| t as u32),
        current_lsn: lsn(1),
        receive_lsn: lsn(2),
        replay_lsn: lsn(3),
        last_replay_ms: row.get(4),
        receiver_status: row.get(6),
        read_only: row.get(7),
    })
}

pub async fn status_of(server: &PgServer, limit: Duration) -> Result<Status, PgError> {
    let c = server.connect(limit).await?;
    status(&c, &server.addr(), limit).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    pub already_primary: bool,
    pub before: Status,
    pub timeline: Option<u32>,
    pub duration: Duration,
}

/// Promotes a standby: `pg_promote(wait => false)` then polls
/// `pg_is_in_recovery()` every `poll`, because `pg_promote`'s own wait only
/// checks every 100 ms while promotion takes tens of milliseconds.
pub async fn promote(
    server: &PgServer,
    poll: Duration,
    limit: Duration,
) -> Result<Promotion, PgError> {
    let addr = server.addr();
    let client = server.connect(limit).await?;
    let before = status(&client, &addr, limit).await?;
    if !before.is_standby() {
        return Ok(Promotion {
            already_primary: true,
            timeline: before.timeline,
            before,
            duration: Duration::ZERO,
        });
    }
    let started = Instant::now();
    let deadline = started + limit;
    let res = query(
        &client,
        &addr,
        "pg_promote",
        "select pg_promote(wait => false)",
        limit,
    )
    .await;
    if let Err(e) = res {
        // Promotion may already be under way (a resumed run): fall through
        // to polling rather than failing on "already being promoted".
        tracing::warn!(error = %e, "pg_promote returned an error; checking whether promotion is under way");
    }
    crate::journal::test_crash_at("promote");
    loop {
        let rows = query(
            &client,
            &addr,
            "poll pg_is_in_recovery",
            "select pg_is_in_recovery()",
            limit,
        )
        .await?;
        if !rows.first().map(|r| r.get::<_, bool>(0)).unwrap_or(true) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(PgError::Timeout {
                addr,
                op: "promotion",
                ms: limit.as_millis() as u64,
            });
        }
        tokio::time::sleep(poll).await;
    }
    let duration = started.elapsed();
    let after = status(&client, &addr, limit).await?;
    Ok(Promotion {
        already_primary: false,
        before,
        timeline: after.timeline,
        duration,
    })
}

/// The newest heartbeat row on a server, if the table exists.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Beat {
    pub id: i64,
    pub at_ms: i64,
}

pub async fn newest_beat(
    client: &Client,
    addr: &str,
    limit: Duration,
) -> Result<Option<Beat>, PgError> {
    let sql = "select id, (extract(epoch from at) * 1000)::bigint from drctl_heartbeat order by id desc limit 1";
    match query(client, addr, "read heartbeat", sql, limit).await {
        Ok(rows) => Ok(rows.first().map(|r| Beat {
            id: r.get(0),
            at_ms: r.get(1),
        })),
        Err(PgError::Query { source, .. })
            if source.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The replay position of a server in recovery once it holds still (two
/// reads 200 ms apart agree), or the last read after `within`: the end of
/// the WAL an isolated server (no upstream) holds, never read mid-replay.
pub async fn settled_replay_lsn(
    client: &Client,
    addr: &str,
    within: Duration,
    limit: Duration,
) -> Result<Option<Lsn>, PgError> {
    let replay = || async {
        query(
            client,
            addr,
            "replay lsn",
            "select pg_last_wal_replay_lsn()::text",
            limit,
        )
        .await
        .map(|rows| {
            rows.first()
                .and_then(|r| r.get::<_, Option<String>>(0))
                .as_deref()
                .and_then(Lsn::parse)
        })
    };
    let deadline = Instant::now() + within;
    let mut end = replay().await?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = replay().await?;
        let settled = now == end || Instant::now() > deadline;
        end = now;
        if settled {
            return Ok(end);
        }
    }
}

/// Heartbeats with id above `after`: rows the other server never got.
pub async fn beats_after(
    client: &Client,
    addr: &str,
    after: i64,
    limit: Duration,
) -> Result<(i64, Option<Beat>), PgError> {
    let sql = format!(
        "select count(*), max(id), (extract(epoch from max(at)) * 1000)::bigint from drctl_heartbeat where id > {after}"
    );
    let rows = query(client, addr, "count lost heartbeats", &sql, limit).await?;
    let r = rows.first().ok_or_else(|| PgError::Unexpected {
        addr: addr.into(),
        op: "count",
        detail: "no row".into(),
    })?;
    let count: i64 = r.get(0);
    let last = match (r.get::<_, Option<i64>>(1), r.get::<_, Option<i64>>(2)) {
        (Some(id), Some(at_ms)) => Some(Beat { id, at_ms }),
        _ => None,
    };
    Ok((count, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_roundtrip_and_diff() {
        let a = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(a.to_string(), "16/B374D848");
        let b = Lsn::parse("16/B374D800").unwrap();
        assert_eq!(a.bytes_after(b), 0x48);
        assert_eq!(b.bytes_after(a), 0);
        assert!(Lsn::parse("nope").is_none());
    }
}
