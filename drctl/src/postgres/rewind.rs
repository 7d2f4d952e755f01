//! `postgres.rewind`: prepare a diverged old primary to follow the new one.
//!
//! Check: a node that already streams from the source on the source's
//! timeline needs nothing. Then, in journaled phases (a step checkpoint
//! before each, so a resume after kill -9 never repeats one):
//!
//! 1. **extract**: find the fork point in the source's timeline history;
//!    start the node isolated (a read-only standby without upstream, own
//!    port, superuser only), let it replay its own WAL to the end, and
//!    keep what it holds beyond the source (heartbeat rows and the named
//!    tables, as `COPY` text files) with the counts. Nothing is rewound
//!    before this is journaled.
//! 2. **rewind**: CHECKPOINT on the source (without it pg_rewind may read
//!    the source's last checkpoint from before the fork and report "no
//!    rewind required" on a diverged node), then `pg_rewind`.
//! 3. A resume that finds phase 2 started but not finished does not run
//!    pg_rewind again (a data directory left by an interrupted rewind is
//!    not safe to rewind): it clones the node afresh (`pg_basebackup`).
//!    So does `method: clone`, and a rewind that fails.
//!
//! WAL the old primary no longer has (recycled after the fork) makes plain
//! pg_rewind fail with "could not open file ... No such file". When the
//! old region's WAL archive is known (`wal_archive:`, else the first
//! `wal_archive` among the target region's `backups:` in the environment),
//! pg_rewind runs with `-c` (`--restore-target-wal`) and a
//! `restore_command` copying from that archive, written into the node's
//! `postgresql.auto.conf` for the rewind only (pg_rewind replaces that
//! file with the source's, and `postgres.rejoin` regenerates the standby
//! settings). Without an archive such a rewind falls back to the clone,
//! and the journaled `how` says why.
//!
//! The node's configuration as copied from the source is fixed by
//! `postgres.rejoin`, which starts it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::discarded::{self, Discarded, TableRows, HEARTBEAT_TABLE};
use super::fencing::{probe_writes, Writes};
use super::node::{node_field, Node, NodeSpec};
use super::ops::{self, Lsn};
use super::rejoin::streams_on;
use super::{server_field, PgServer};
use crate::action::{resolve_secret, ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::pgconn::SslMode;
use crate::postgres::conn::{execute, query};
use crate::yaml::Node as YamlNode;

#[derive(Clone, Copy)]
pub struct PgRewind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Rewind,
    Clone,
}

pub struct Params {
    node: NodeSpec,
    server: PgServer,
    source: PgServer,
    tables: Vec<String>,
    extract_dir: Option<String>,
    method: Method,
    wal_archive: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    Extracted {
        discarded: Discarded,
    },
    Rewinding {
        discarded: Discarded,
    },
    Done {
        discarded: Discarded,
        how: String,
        ms: f64,
    },
}

const LIMIT: Duration = Duration::from_secs(5);

/// The switch point of `timeline` (the node's) in the source's history:
/// where the source's timeline forked from it.
pub fn fork_of(history: &str, timeline: u32) -> Option<Lsn> {
    history
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let tli: u32 = f.next()?.parse().ok()?;
            (tli == timeline)
                .then(|| f.next().and_then(Lsn::parse))
                .flatten()
        })
}

async fn history(source: &PgServer, tli: u32) -> Result<String, ActionError> {
    if tli <= 1 {
        return Ok(String::new());
    }
    let c = source.connect(LIMIT).await?;
    let rows = query(
        &c,
        &source.addr(),
        "read timeline history",
        &format!("select pg_read_file('pg_wal/{tli:08X}.history')"),
        LIMIT,
    )
    .await?;
    Ok(rows.first().map(|r| r.get(0)).unwrap_or_default())
}

/// Connection settings for a server tool run as the node's owner: the
/// password and CA go to files beside the data directory (not inside it:
/// pg_rewind and pg_basebackup replace its contents).
fn tool_conn(node: &Node, source: &PgServer) -> Result<(String, PathBuf), ActionError> {
    let dir = node
        .data_dir
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let passfile = dir.join("drctl-rewind.pgpass");
    let pw = match &source.password {
        Some(r) => resolve_secret(r)?.expose().to_string(),
        None => String::new(),
    };
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    node.write_owned(
        &passfile,
        &format!(
            "{}:{}:*:{}:{}\n",
            esc(&source.host),
            source.port,
            esc(&source.user),
            esc(&pw)
        ),
        0o600,
    )?;
    // No client certificate: libpq would look in the tool user's
    // ~/.postgresql, which may be unreadable (drctl's HOME) and then fails
    // the connection; a missing file is skipped.
    let mut conn = format!(
        "host={} port={} user={} dbname={} sslcert={}",
        source.host,
        source.port,
        source.user,
        source.dbname,
        dir.join("drctl-no-client-cert").display()
    );
    match source.sslmode {
        SslMode::Disable => conn.push_str(" sslmode=disable"),
        SslMode::Require => conn.push_str(" sslmode=require"),
        SslMode::VerifyFull => {
            conn.push_str(" sslmode=verify-full");
            if let Some(r) = &source.sslrootcert {
                let ca = dir.join("drctl-rewind-root.crt");
                node.write_owned(&ca, resolve_secret(r)?.expose(), 0o600)?;
                conn.push_str(&format!(" sslrootcert={}", ca.display()));
            }
        }
    }
    Ok((conn, passfile))
}

/// Step 1: what the node holds beyond the source, read isolated.
async fn extract(
    p: &Params,
    node: &Node,
    source_tli: u32,
    dir: &std::path::Path,
) -> Result<Discarded, ActionError> {
    let cd = node.controldata().await?;
    let node_tli = cd
        .min_recovery_end_timeline
        .filter(|t| *t > 0)
        .or(cd.checkpoint_timeline)
        .unwrap_or(0);
    let hist = history(&p.source, source_tli).await?;
    let fork = fork_of(&hist, node_tli).ok_or_else(|| {
        ActionError::failed_hint(
            format!(
                "the node's timeline {node_tli} is not in the source's history (timeline {source_tli}): it did not fork from it"
            ),
            "a node from another cluster cannot be rewound; use `method: clone`",
        )
    })?;
    let port = node.start_isolated(&p.server.user).await?;
    let read = async {
        let mut iso = p.server.clone();
        iso.port = port;
        let c = iso.connect(LIMIT).await?;
        let addr = iso.addr();
        let rec = query(
            &c,
            &addr,
            "recovery check",
            "select pg_is_in_recovery()",
            LIMIT,
        )
        .await?;
        if !rec.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Err(ActionError::failed(
                "the isolated old primary is not in recovery: refusing to read it",
            ));
        }
        // Its own WAL replayed to the end: the replay position stops moving.
        let end = ops::settled_replay_lsn(&c, &addr, Duration::from_secs(20), LIMIT).await?;
        let src = p.source.connect(LIMIT).await?;
        std::fs::create_dir_all(dir)
            .map_err(|e| ActionError::failed(format!("create {}: {e}", dir.display())))?;
        let copy_limit = Duration::from_secs(60);
        let (old_hb, new_hb) = (
            discarded::copy_rows(&c, &iso, HEARTBEAT_TABLE, copy_limit).await?,
            discarded::copy_rows(&src, &p.source, HEARTBEAT_TABLE, copy_limit).await?,
        );
        let (mut rows, mut first, mut last) = (None, None, None);
        let mut tables = Vec::new();
        if let (Some(o), Some(n)) = (&old_hb, &new_hb) {
            let lost = discarded::only_in(o, n);
            let ids = discarded::heartbeat_ids(&lost);
            rows = Some(lost.len() as u64);
            first = ids.iter().min().copied();
            last = ids.iter().max().copied();
            let f = discarded::file_for(dir, HEARTBEAT_TABLE);
            discarded::write_copy(&f, &lost)?;
            tables.push(TableRows {
                table: HEARTBEAT_TABLE.into(),
                rows: lost.len() as u64,
                file: f.display().to_string(),
            });
        }
        for t in &p.tables {
            let o = discarded::copy_rows(&c, &iso, t, copy_limit)
                .await?
                .unwrap_or_default();
            let n = discarded::copy_rows(&src, &p.source, t, copy_limit)
                .await?
                .unwrap_or_default();
            let lost = discarded::only_in(&o, &n);
            let f = discarded::file_for(dir, t);
            discarded::write_copy(&f, &lost)?;
            tables.push(TableRows {
                table: t.clone(),
                rows: lost.len() as u64,
                file: f.display().to_string(),
            });
        }
        let d = Discarded {
            fork_lsn: fork.to_string(),
            old_primary_end_lsn: end.map(|l| l.to_string()),
            timeline: source_tli,
            heartbeat_rows: rows,
            first_heartbeat_id: first,
            last_heartbeat_id: last,
            extract_file: dir.join("discarded.json").display().to_string(),
            tables,
        };
        let manifest = serde_json::to_vec_pretty(&d).unwrap_or_default();
        crate::store::write_atomic(&dir.join("discarded.json"), &manifest)
            .map_err(|e| ActionError::failed(format!("write the extract manifest: {e}")))?;
        Ok(d)
    }
    .await;
    // Always stopped again, also when reading failed.
    let stopped = node.stop_isolated().await;
    let d = read?;
    stopped?;
    Ok(d)
}

/// The old region's WAL archive: the step's `wal_archive`, else the first
/// `wal_archive` of the target region's backup sources, if it exists here.
fn archive_of(p: &Params, ctx: &StepContext) -> Option<PathBuf> {
    let declared = p.wal_archive.clone().or_else(|| {
        let env = ctx.env.as_deref()?;
        let region = ctx.target_region.as_deref()?;
        env.component(region, "backups")?
            .as_object()?
            .values()
            .find_map(|b| b.get("wal_archive")?.as_str().map(str::to_string))
    })?;
    let dir = PathBuf::from(declared);
    dir.is_dir().then_some(dir)
}

/// The `restore_command` pg_rewind `-c` runs: a copy from the archive.
pub fn restore_command(archive: &std::path::Path) -> String {
    let a = archive.display().to_string().replace('"', "\\\"");
    format!("cp \"{a}/%f\" \"%p\"").replace('\'', "''")
}

/// The WAL segment file holding `lsn` on timeline `tli`.
pub fn segment_name(tli: u32, lsn: Lsn, seg_bytes: u64) -> Option<String> {
    if seg_bytes == 0 {
        return None;
    }
    let per_id = 0x1_0000_0000u64 / seg_bytes;
    let seg = lsn.0 / seg_bytes;
    Some(format!("{tli:08X}{:08X}{:08X}", seg / per_id, seg % per_id))
}

/// Whether the node's `pg_wal` still holds the segment of the fork point
/// (`None`: not measurable). Recycled segments are renamed, so a missing
/// one is gone for pg_rewind.
async fn fork_wal_on_node(node: &Node, fork: &str) -> Option<bool> {
    let cd = node.controldata().await.ok()?;
    let tli = cd
        .min_recovery_end_timeline
        .filter(|t| *t > 0)
        .or(cd.checkpoint_timeline)?;
    let (fork, seg) = (Lsn::parse(fork)?, cd.wal_segment_bytes?);
    // The fork is on the timeline the node was on then: its current one,
    // or an earlier one if it had switched since.
    let wal = node.data_dir.join("pg_wal");
    Some((1..=tli).any(|t| segment_name(t, fork, seg).is_some_and(|n| wal.join(n).exists())))
}

async fn rewind(
    node: &Node,
    source: &PgServer,
    archive: Option<&std::path::Path>,
) -> Result<String, ActionError> {
    let c = source.connect(LIMIT).await?;
    execute(
        &c,
        &source.addr(),
        "checkpoint",
        "CHECKPOINT",
        Duration::from_secs(120),
    )
    .await?;
    let (conn, passfile) = tool_conn(node, source)?;
    let mut args: Vec<OsString> = vec![
        "--target-pgdata".into(),
        node.data_dir.clone().into_os_string(),
        format!("--source-server={conn}").into(),
        "--progress".into(),
    ];
    if let Some(a) = archive {
        // Read by pg_rewind through `postgres -C restore_command` on the
        // target; gone when pg_rewind copies the source's auto.conf.
        let auto = node.data_dir.join("postgresql.auto.conf");
        let cur = std::fs::read_to_string(&auto).unwrap_or_default();
        node.write_owned(
            &auto,
            &format!(
                "{cur}\n# drctl postgres.rewind: for pg_rewind -c only\nrestore_command = '{}'\n",
                restore_command(a)
            ),
            0o600,
        )?;
        args.push("--restore-target-wal".into());
    }
    crate::journal::test_crash_at("rewind-start");
    node.tool(
        "pg_rewind",
        &args,
        &[("PGPASSFILE", passfile.as_path())],
        Duration::from_secs(600),
    )
    .await
}

/// A fresh copy of the source into the node's (emptied) data directory.
async fn clone(node: &Node, source: &PgServer) -> Result<String, ActionError> {
    let (conn, passfile) = tool_conn(node, source)?;
    let entries = std::fs::read_dir(&node.data_dir)
        .map_err(|e| ActionError::failed(format!("{}: {e}", node.data_dir.display())))?;
    for e in entries.flatten() {
        let p = e.path();
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|e| ActionError::failed(format!("empty {}: {e}", p.display())))?;
    }
    let args: Vec<OsString> = vec![
        "-D".into(),
        node.data_dir.clone().into_os_string(),
        "-d".into(),
        conn.into(),
        "-X".into(),
        "stream".into(),
        "-c".into(),
        "fast".into(),
    ];
    node.tool(
        "pg_basebackup",
        &args,
        &[("PGPASSFILE", passfile.as_path())],
        Duration::from_secs(1800),
    )
    .await
}

fn outputs(d: &Discarded, how: &str, ms: Option<f64>, already: bool) -> Outputs {
    let mut o = Outputs::new();
    o.insert("already_rejoined".into(), json!(already));
    o.insert("how".into(), json!(how));
    o.insert("ms".into(), json!(ms));
    o.insert("discarded".into(), json!(d));
    o.insert("fork_lsn".into(), json!(d.fork_lsn));
    o.insert("heartbeat_rows".into(), json!(d.heartbeat_rows));
    o.insert("extract_file".into(), json!(d.extract_file));
    let hb = d
        .heartbeat_rows
        .map(|n| format!("{n} heartbeat row(s)"))
        .unwrap_or_else(|| "heartbeat rows unknown".into());
    o.insert(
        "summary".into(),
        json!(format!(
            "fork at {}, old primary ended at {}; discarded {hb}{} kept in {}; {how}",
            d.fork_lsn,
            d.old_primary_end_lsn.as_deref().unwrap_or("unknown"),
            d.tables
                .iter()
                .filter(|t| t.table != HEARTBEAT_TABLE)
                .map(|t| format!(", {} row(s) of {}", t.rows, t.table))
                .collect::<String>(),
            d.extract_file
        )),
    );
    o
}

#[async_trait]
impl ActionKind for PgRewind {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "postgres.rewind"
    }
    fn summary(&self) -> &'static str {
        "Keep what a diverged old primary holds beyond the fork, then pg_rewind it (or clone it afresh) onto the new primary's timeline"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "already_rejoined",
            "how",
            "ms",
            "discarded",
            "fork_lsn",
            "heartbeat_rows",
            "extract_file",
            "summary",
        ]
    }
    fn idempotent(&self, _params: &Value) -> bool {
        // Phases are journaled; a resume never repeats pg_rewind.
        true
    }
    fn decode(ctx: &mut Ctx<'_>, with: &YamlNode) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "postgres.rewind")?;
        let node = node_field(ctx, &mut r, "node");
        let server = server_field(ctx, &mut r, "server", true);
        let source = server_field(ctx, &mut r, "source", true);
        let mut tables = Vec::new();
        if let Some(n) = r.opt("tables") {
            for (t, at) in ctx.string_list(n, "tables").unwrap_or_default() {
                match discarded::quote_table(&t) {
                    Ok(_) => tables.push(t),
                    Err(e) => ctx.error("E-TYPE", &at, e, None),
                }
            }
        }
        let extract_dir = r
            .opt("extract_dir")
            .and_then(|n| ctx.string(n, "extract_dir"));
        let wal_archive = r
            .opt("wal_archive")
            .and_then(|n| ctx.string(n, "wal_archive"));
        let method = match r.opt("method") {
            None => Some(Method::Rewind),
            Some(n) if ctx.deferred(n) => Some(Method::Rewind),
            Some(n) => match ctx.string(n, "method").as_deref() {
                Some("rewind") => Some(Method::Rewind),
                Some("clone") => Some(Method::Clone),
                Some(other) => {
                    ctx.error(
                        "E-VALUE",
                        n,
                        format!("method `{other}`: expected rewind or clone"),
                        None,
                    );
                    None
                }
                None => None,
            },
        };
        r.finish(ctx);
        Some(Params {
            node: node?,
            server: server?,
            source: source?,
            tables,
            extract_dir,
            method: method?,
            wal_archive,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "extract what postgres {} holds beyond the fork, then rewind it onto {}'s timeline",
            super::addr_of(params, "server"),
            super::addr_of(params, "source")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let limit = ctx.remaining().min(Duration::from_secs(3));
        let st = match ops::status_of(&p.source, limit).await {
            Ok(s) if !s.is_standby() => s,
            Ok(_) => {
                return Ok(Preflight::fails_now(format!(
                    "{} is not a primary",
                    p.source.addr()
                )))
            }
            Err(e) => {
                return Ok(Preflight::problem(format!(
                    "source {}: {e}",
                    p.source.addr()
                )))
            }
        };
        let tli = st.timeline.unwrap_or(0);
        if streams_on(&p.server, tli, limit).await {
            return Ok(Preflight::ok(format!(
                "{} already streams timeline {tli}: nothing to rewind",
                p.server.addr()
            )));
        }
        Ok(match Node::open(&p.node, ctx).await {
            Ok(n) => Preflight::ok(format!(
                "{} ({}) would be read isolated, then rewound onto timeline {tli} of {}",
                p.server.addr(),
                n.data_dir.display(),
                p.source.addr()
            )),
            Err(e) => Preflight::problem(e.to_string()),
        })
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let st = ops::status_of(&p.source, LIMIT).await?;
        if st.is_standby() {
            return Err(ActionError::failed(format!(
                "{} is in recovery: the rewind source must be the new primary",
                p.source.addr()
            )));
        }
        let tli = st.timeline.unwrap_or(0);
        let saved: Option<Phase> = ctx.saved()?;
        if streams_on(&p.server, tli, LIMIT).await {
            let d = match &saved {
                Some(Phase::Extracted { discarded } | Phase::Rewinding { discarded } | Phase::Done { discarded, .. }) => discarded.clone(),
                None => {
                    return Err(ActionError::failed_hint(
                        format!("{} already streams timeline {tli}, and this step extracted nothing", p.server.addr()),
                        "the node was rejoined outside this run: its discarded transactions are gone; mark the step done if that is expected",
                    ))
                }
            };
            return Ok(outputs(
                &d,
                "already streaming on the new timeline: nothing done",
                None,
                true,
            ));
        }
        let node = Node::open(&p.node, ctx).await?;
        let (up, iso) = node.running().await?;
        if up {
            // A running old primary (split brain) or a standby on the wrong
            // timeline: stopped before anything is read or rewound.
            if let Writes::Accepted { .. } = probe_writes(&p.server, false, LIMIT).await {
                ctx.progress(format!(
                    "{} accepts writes: stopping it (split brain)",
                    p.server.addr()
                ));
            }
            node.stop().await?;
        }
        let phase = match saved {
            Some(ph) => ph,
            None => {
                if iso {
                    node.stop_isolated().await?;
                }
                let dir = match &p.extract_dir {
                    Some(d) if std::path::Path::new(d).is_absolute() => PathBuf::from(d),
                    Some(d) => ctx.runbook_dir.join(d),
                    None => ctx.runbook_dir.join("../state/failback"),
                }
                .join(&ctx.run_id);
                let d = extract(p, &node, tli, &dir).await?;
                let line = outputs(&d, "extracted", None, false)["summary"].to_string();
                let ph = Phase::Extracted { discarded: d };
                ctx.checkpoint(&ph).await?;
                crate::journal::test_crash_at("rewind-extracted");
                ctx.progress(line);
                ph
            }
        };
        let (d, how, ms) = match phase {
            Phase::Done { discarded, how, ms } => (discarded, how, ms),
            Phase::Extracted { discarded } if p.method == Method::Rewind => {
                ctx.checkpoint(&Phase::Rewinding {
                    discarded: discarded.clone(),
                })
                .await?;
                let archive = archive_of(p, ctx);
                let on_node = fork_wal_on_node(&node, &discarded.fork_lsn).await;
                if on_node == Some(false) {
                    ctx.progress(format!(
                        "the old primary no longer holds the WAL at the fork ({}): {}",
                        discarded.fork_lsn,
                        match &archive {
                            Some(a) => format!("pg_rewind -c restores it from {}", a.display()),
                            None => "no WAL archive is declared for pg_rewind -c".into(),
                        }
                    ));
                }
                let t = Instant::now();
                match rewind(&node, &p.source, archive.as_deref()).await {
                    Ok(_) => (
                        discarded,
                        match (&archive, on_node) {
                            (Some(a), Some(false)) => format!(
                                "rewound with pg_rewind -c (the WAL at the fork was recycled on the old primary; restored from the archive {})",
                                a.display()
                            ),
                            (Some(a), _) => format!(
                                "rewound with pg_rewind -c (restore_command from the archive {})",
                                a.display()
                            ),
                            (None, _) => "rewound with pg_rewind".to_string(),
                        },
                        t.elapsed().as_secs_f64() * 1000.0,
                    ),
                    Err(e) if e.to_string().contains("connection to server") => {
                        // It never reached the source, so it changed
                        // nothing: back to the extracted phase, and retry.
                        ctx.checkpoint(&Phase::Extracted { discarded }).await?;
                        return Err(ActionError::failed_hint(
                            format!("pg_rewind could not reach the source: {e}"),
                            "the old primary is untouched; fix the connection, then resume",
                        ));
                    }
                    Err(e) => {
                        ctx.progress(format!("pg_rewind failed ({e}); cloning afresh"));
                        let missing = e.to_string().contains("could not open file");
                        let why = match (&archive, missing) {
                            (None, true) => format!("pg_rewind needs WAL the old primary no longer has, and no WAL archive is declared for pg_rewind -c: {e}"),
                            (Some(a), true) => format!("pg_rewind -c found the WAL neither on the old primary nor in the archive {}: {e}", a.display()),
                            _ => format!("pg_rewind failed: {e}"),
                        };
                        let t = Instant::now();
                        clone(&node, &p.source).await?;
                        (
                            discarded,
                            format!("cloned afresh ({why})"),
                            t.elapsed().as_secs_f64() * 1000.0,
                        )
                    }
                }
            }
            Phase::Extracted { discarded } => {
                let t = Instant::now();
                clone(&node, &p.source).await?;
                (
                    discarded,
                    "cloned afresh (method: clone)".to_string(),
                    t.elapsed().as_secs_f64() * 1000.0,
                )
            }
            Phase::Rewinding { discarded } => {
                // A rewind that may have stopped half-way: never again on
                // this directory.
                let t = Instant::now();
                clone(&node, &p.source).await?;
                (
                    discarded,
                    "cloned afresh (an earlier pg_rewind was interrupted)".to_string(),
                    t.elapsed().as_secs_f64() * 1000.0,
                )
            }
        };
        ctx.checkpoint(&Phase::Done {
            discarded: d.clone(),
            how: how.clone(),
            ms,
        })
        .await?;
        Ok(outputs(&d, &how, Some(ms), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fork_of_the_nodes_timeline() {
        let h = "1\t0/3000060\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n";
        assert_eq!(fork_of(h, 1), Lsn::parse("0/3000060"));
        assert_eq!(fork_of(h, 2), Lsn::parse("0/5000000"));
        assert_eq!(fork_of(h, 3), None);
    }

    #[test]
    fn segment_names_and_restore_command() {
        let seg = 16 * 1024 * 1024;
        assert_eq!(
            segment_name(1, Lsn::parse("0/3000060").expect("lsn"), seg).as_deref(),
            Some("000000010000000000000003")
        );
        assert_eq!(
            segment_name(2, Lsn::parse("1/FF000000").expect("lsn"), seg).as_deref(),
            Some("0000000200000001000000FF")
        );
        assert_eq!(segment_name(1, Lsn(0), 0), None);
        assert_eq!(
            restore_command(std::path::Path::new("/a/it's")),
            "cp \"/a/it''s/%f\" \"%p\""
        );
    }
}
