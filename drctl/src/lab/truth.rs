//! The drill's truth: what a failover really lost, read from the killed old
//! primary restarted *isolated*, and the clean-up that makes sure no lab
//! server outlives the lab.
//!
//! The old primary is restarted as a standby with no upstream
//! (`standby.signal`, empty `primary_conninfo` and `restore_command`): it
//! replays its own WAL to its end and stays in recovery, so it is read-only
//! from its first moment, writes nothing new (its data stays as the
//! failure left it, for a later failback) and its end of WAL is
//! `pg_last_wal_replay_lsn()`. It listens on a fresh loopback port that
//! no client or environment file knows, with an hba file that admits only
//! the lab's superuser. `standby.signal` stays after the measurement, so a
//! later start of that data directory is read-only too.
//!
//! The WAL truth compares that end with the promoted server's switch
//! point, the last line of its timeline history file
//! (`pg_wal/0000000N.history`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::pg::{self, LabError, Server};
use super::supervisor::LabState;
use crate::postgres::conn::query;
use crate::postgres::heartbeat::HeartbeatStatus;
use crate::postgres::ops::{self, Lsn};

/// What `/break/primary` recorded at the injection: the failure time and
/// the heartbeat writer's last word, taken after it was stopped and
/// before the kill (so no heartbeat write was in flight at the kill).
#[derive(Debug, Clone)]
pub struct Broken {
    pub failed_at_ms: u64,
    pub writer: Option<HeartbeatStatus>,
}

/// The name the isolated old primary has among the lab's servers.
pub const ISOLATED: &str = "pg-primary-truth";

const LIMIT: Duration = Duration::from_secs(5);

fn other(e: impl std::fmt::Display) -> LabError {
    LabError::Other(e.to_string())
}

/// The promoted (DR) server's side: the newest heartbeat that survived and
/// where its timeline branched off the old primary's.
pub struct Survivor {
    pub newest: Option<ops::Beat>,
    pub switch_lsn: Option<Lsn>,
    pub timeline: Option<u32>,
    /// Out of recovery: a failover happened. While the DR server is still
    /// a standby (the promote was refused or never ran), what the old
    /// primary holds beyond it is what a failover *now* would lose, not a
    /// loss that happened, and no truth is measured.
    pub promoted: bool,
}

pub async fn survivor(st: &LabState) -> Result<Survivor, LabError> {
    let dr = pg::lab_server(st.ports["pg-dr"], &st.spec.superuser, &st.spec);
    let addr = dr.addr();
    let c = dr.connect(LIMIT).await.map_err(other)?;
    let newest = ops::newest_beat(&c, &addr, LIMIT).await.map_err(other)?;
    let status = ops::status(&c, &addr, LIMIT).await.map_err(other)?;
    let mut switch_lsn = None;
    if let (false, Some(tli)) = (status.is_standby(), status.timeline) {
        let sql = format!("select pg_read_file('pg_wal/{tli:08X}.history')");
        let rows = query(&c, &addr, "read timeline history", &sql, LIMIT)
            .await
            .map_err(other)?;
        let text: String = rows.first().map(|r| r.get(0)).unwrap_or_default();
        switch_lsn = switch_point(&text);
    }
    Ok(Survivor {
        newest,
        switch_lsn,
        timeline: status.timeline,
        promoted: !status.is_standby(),
    })
}

/// The switch point of the newest timeline in a history file: its last
/// non-comment line is `<parent tli>\t<switch lsn>\t<reason>`.
pub fn switch_point(history: &str) -> Option<Lsn> {
    history
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(Lsn::parse)
}

/// Marks a data directory as a standby's (`standby.signal`): whoever
/// starts it next gets a read-only server in recovery.
pub fn mark_standby(data: &Path) -> Result<(), LabError> {
    pg::write_file(&data.join("standby.signal"), "", 0o600, pg::run_as()?)
}

/// Starts the old primary's data directory isolated (see the module doc).
pub async fn start_isolated(st: &LabState) -> Result<Server, LabError> {
    start_isolated_dir(st, &st.data_root.join("primary"), ISOLATED).await
}

/// Starts the server of `data` as `name`, isolated: a standby with no
/// upstream (no `primary_conninfo`, slot or `restore_command`), no
/// archiving, on a fresh loopback port, admitting only the superuser. The
/// drill truth and failback's read of the old primary both use it.
pub async fn start_isolated_dir(
    st: &LabState,
    data: &Path,
    name: &str,
) -> Result<Server, LabError> {
    let who = pg::run_as()?;
    mark_standby(data)?;
    let hba = st.data_root.join(format!("{name}-hba.conf"));
    pg::write_file(
        &hba,
        &format!(
            "# drctl lab: an isolated server admits only the superuser\nhostssl postgres {} 127.0.0.1/32 scram-sha-256\n",
            st.spec.superuser
        ),
        0o600,
        who,
    )?;
    let port = pg::free_port()?;
    let args: Vec<String> = [
        format!("port={port}"),
        "listen_addresses=127.0.0.1".into(),
        format!("hba_file={}", hba.display()),
        "primary_conninfo=".into(),
        "primary_slot_name=".into(),
        "restore_command=".into(),
        "archive_mode=off".into(),
        "hot_standby=on".into(),
    ]
    .into_iter()
    .flat_map(|a| ["-c".to_string(), a])
    .collect();
    pg::start_with(
        name,
        data,
        port,
        &st.dir.join(format!("logs/{name}.log")),
        &args,
    )
    .await
}

/// What the isolated old primary holds: the heartbeats beyond the newest
/// survivor and its end of WAL. Refuses a server that is not in recovery
/// (it could take writes) before reading anything.
pub async fn read_isolated(
    st: &LabState,
    port: u16,
    after: i64,
) -> Result<(i64, Option<ops::Beat>, Option<Lsn>), LabError> {
    let old = pg::lab_server(port, &st.spec.superuser, &st.spec);
    let addr = old.addr();
    let c = old.connect(LIMIT).await.map_err(other)?;
    let rows = query(
        &c,
        &addr,
        "recovery check",
        "select pg_is_in_recovery()",
        LIMIT,
    )
    .await
    .map_err(other)?;
    if !rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
        return Err(LabError::Other(
            "the restarted old primary is not in recovery: refusing to read it".into(),
        ));
    }
    // Replay of the local WAL is over when the server accepts read-only
    // connections after a crash; wait until the position holds still
    // anyway, so the end of WAL is never read mid-replay.
    let end = ops::settled_replay_lsn(&c, &addr, Duration::from_secs(10), LIMIT)
        .await
        .map_err(other)?;
    let (count, last) = ops::beats_after(&c, &addr, after, LIMIT)
        .await
        .map_err(other)?;
    Ok((count, last, end))
}

/// The truth note's data. Every figure is an integer or `null` when it
/// could not be measured.
pub fn truth_value(
    broken: &Broken,
    surv: &Survivor,
    count: i64,
    last: Option<ops::Beat>,
    end: Option<Lsn>,
) -> Value {
    let newest = surv.newest;
    let time_lost_ms = match (count, last, newest) {
        (0, _, Some(_)) => Some(0),
        (_, Some(l), Some(n)) => Some((l.at_ms - n.at_ms).max(0)),
        _ => None,
    };
    let wal_bytes_lost = match (end, surv.switch_lsn) {
        (Some(e), Some(s)) if e >= s => Some(e.bytes_after(s)),
        _ => None,
    };
    json!({
        "kind": "rpo_truth",
        "method": "old primary restarted isolated (a read-only standby without upstream, own port, superuser only); \
                   rows: heartbeats it holds beyond the newest on the promoted server (writer stopped before the kill); \
                   time: last lost minus newest surviving heartbeat; WAL: its end of WAL minus the promoted timeline's switch point",
        "heartbeats_lost": count,
        "time_lost_ms": time_lost_ms,
        "wal_bytes_lost": wal_bytes_lost,
        "newest_surviving_heartbeat_id": newest.map(|b| b.id),
        "last_lost_heartbeat_id": last.map(|b| b.id),
        "old_primary_end_lsn": end.map(|l| l.to_string()),
        "switch_lsn": surv.switch_lsn.map(|l| l.to_string()),
        "promoted_timeline": surv.timeline,
        "writer_last_acked_id": broken.writer.as_ref().and_then(|w| w.last_acked_id),
        "failed_at_ms": broken.failed_at_ms,
    })
}

/// Kills every postmaster whose `postmaster.pid` sits in a directory under
/// `data_root`, when that pid really is a postgres on that directory (a
/// stale pid file may name a reused pid). Servers whose owner died (a
/// supervisor killed with -9) are found this way, including an isolated
/// truth server. Returns the pids killed.
pub fn kill_strays(data_root: &Path) -> Vec<u32> {
    let mut killed = Vec::new();
    for e in std::fs::read_dir(data_root).into_iter().flatten().flatten() {
        let dir = e.path();
        let Ok(text) = std::fs::read_to_string(dir.join("postmaster.pid")) else {
            continue;
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if !is_postgres_on(pid, &dir) {
            continue;
        }
        let children = pg::children_of(pid);
        // SAFETY: signalling a postmaster on the lab's own data directory
        // (checked above) and its backends.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
            libc::kill(pid as i32, libc::SIGKILL);
            for c in &children {
                libc::kill(*c as i32, libc::SIGKILL);
            }
        }
        killed.push(pid);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while killed
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists() && !pg::is_zombie(*p))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

/// Whether `pid` runs `postgres -D <dir>`.
fn is_postgres_on(pid: u32, dir: &Path) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
    let dir = dir.as_os_str().as_encoded_bytes();
    args.first().is_some_and(|a| a.ends_with(b"postgres"))
        && args.windows(2).any(|w| w[0] == b"-D" && w[1] == dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_point_is_the_last_line() {
        let h = "1\t0/3000148\tno recovery target specified\n";
        assert_eq!(switch_point(h), Lsn::parse("0/3000148"));
        let h2 = "1\t0/3000148\tno recovery target specified\n\n2\t0/5000A0\tno recovery target specified\n";
        assert_eq!(switch_point(h2), Lsn::parse("0/5000A0"));
        assert_eq!(switch_point(""), None);
    }

    fn beat(id: i64, at_ms: i64) -> ops::Beat {
        ops::Beat { id, at_ms }
    }

    #[test]
    fn unknowns_are_null_never_zero() {
        let broken = Broken {
            failed_at_ms: 1,
            writer: None,
        };
        let none = Survivor {
            newest: None,
            switch_lsn: None,
            timeline: None,
            promoted: true,
        };
        let v = truth_value(&broken, &none, 3, Some(beat(3, 300)), None);
        assert!(v["time_lost_ms"].is_null(), "{v}");
        assert!(v["wal_bytes_lost"].is_null(), "{v}");
        assert!(v["writer_last_acked_id"].is_null(), "{v}");
        let some = Survivor {
            newest: Some(beat(10, 1000)),
            switch_lsn: Lsn::parse("0/100"),
            timeline: Some(2),
            promoted: true,
        };
        let v = truth_value(&broken, &some, 2, Some(beat(12, 1250)), Lsn::parse("0/180"));
        assert_eq!(v["time_lost_ms"], 250, "{v}");
        assert_eq!(v["wal_bytes_lost"], 0x80, "{v}");
        let v = truth_value(&broken, &some, 0, None, Lsn::parse("0/100"));
        assert_eq!(v["time_lost_ms"], 0, "nothing lost is measured: {v}");
        assert_eq!(v["wal_bytes_lost"], 0, "{v}");
        // An end before the switch point contradicts itself: unknown.
        let v = truth_value(&broken, &some, 0, None, Lsn::parse("0/80"));
        assert!(v["wal_bytes_lost"].is_null(), "{v}");
    }
}
