//! `postgres.rejoin`: make a stopped (or rewound) server a standby of the
//! new primary and prove it replicates.
//!
//! Check: a node that already streams from the primary on the primary's
//! timeline needs nothing (a resume after kill -9 changes nothing). Act:
//! stop it if it runs otherwise; regenerate what a rewind copied from the
//! source or what a former primary never had (`port`, `primary_conninfo`
//! with a password file and the CA in the data directory,
//! `primary_slot_name`, `restore_command` cleared), `standby.signal`;
//! start it. Verify: `pg_stat_wal_receiver.status = streaming` *and*
//! `received_tli` equal to the primary's timeline (a node started on the
//! wrong timeline accepts connections while not replicating), then wait
//! until its replay reaches the primary's WAL position.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::fencing::{probe_writes, Writes};
use super::node::{node_field, Node, NodeSpec};
use super::ops::{self, Lsn};
use super::{server_field, PgServer};
use crate::action::{resolve_secret, ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::pgconn::SslMode;
use crate::postgres::conn::query;
use crate::yaml::Node as YamlNode;

#[derive(Clone, Copy)]
pub struct PgRejoin;

pub struct Params {
    pub node: NodeSpec,
    pub server: PgServer,
    pub primary: PgServer,
}

/// Settings drctl writes for a standby; any earlier line for them (copied
/// by pg_rewind from the source, or the node's own) is dropped first.
const KEYS: &[&str] = &[
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "restore_command",
    "recovery_target_timeline",
];

const MARK: &str = "# drctl rejoin: standby of the current primary";

const PASSFILE: &str = "drctl-replication.pgpass";
const ROOTCERT: &str = "drctl-replication-root.crt";

/// The receiver's view on a standby: status and received timeline.
pub async fn receiver(
    server: &PgServer,
    limit: Duration,
) -> Result<Option<(String, u32)>, ActionError> {
    let c = server.connect(limit).await?;
    let rows = query(
        &c,
        &server.addr(),
        "wal receiver",
        "select status, received_tli from pg_stat_wal_receiver",
        limit,
    )
    .await?;
    Ok(rows
        .first()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1) as u32)))
}

/// Whether `server` streams from the primary on `timeline` now.
pub async fn streams_on(server: &PgServer, timeline: u32, limit: Duration) -> bool {
    matches!(receiver(server, limit).await, Ok(Some((s, t))) if s == "streaming" && t == timeline)
}

/// `postgresql.auto.conf` without drctl's keys, plus the standby settings.
pub fn standby_conf(current: &str, settings: &[(&str, String)]) -> String {
    let mut out: Vec<String> = current
        .lines()
        .filter(|l| {
            let k = l.split('=').next().unwrap_or("").trim();
            !KEYS.contains(&k) && l.trim() != MARK
        })
        .map(str::to_string)
        .collect();
    out.push(MARK.into());
    for (k, v) in settings {
        out.push(format!("{k} = '{}'", v.replace('\'', "''")));
    }
    out.join("\n") + "\n"
}

/// Writes the node's standby configuration (idempotent).
pub fn configure(
    node: &Node,
    own: &PgServer,
    primary: &PgServer,
    app: &str,
) -> Result<(), ActionError> {
    let data = &node.data_dir;
    let pw = match &primary.password {
        Some(r) => resolve_secret(r)?.expose().to_string(),
        None => String::new(),
    };
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    node.write_owned(
        &data.join(PASSFILE),
        &format!(
            "{}:{}:*:{}:{}\n",
            esc(&primary.host),
            primary.port,
            esc(&primary.user),
            esc(&pw)
        ),
        0o600,
    )?;
    // `sslcert` names a file that does not exist: libpq then sends no
    // client certificate instead of failing on an unreadable
    // ~/.postgresql of whatever HOME the server was started with.
    let mut conninfo = format!(
        "host={} port={} user={} passfile={} application_name={app} sslcert={}",
        primary.host,
        primary.port,
        primary.user,
        data.join(PASSFILE).display(),
        data.join("drctl-no-client-cert").display()
    );
    match primary.sslmode {
        SslMode::Disable => conninfo.push_str(" sslmode=disable"),
        SslMode::Require => conninfo.push_str(" sslmode=require"),
        SslMode::VerifyFull => {
            conninfo.push_str(" sslmode=verify-full");
            if let Some(r) = &primary.sslrootcert {
                let pem = resolve_secret(r)?;
                node.write_owned(&data.join(ROOTCERT), pem.expose(), 0o600)?;
                conninfo.push_str(&format!(" sslrootcert={}", data.join(ROOTCERT).display()));
            }
        }
    }
    let auto = data.join("postgresql.auto.conf");
    let current = std::fs::read_to_string(&auto).unwrap_or_default();
    let text = standby_conf(
        &current,
        &[
            ("port", own.port.to_string()),
            ("primary_conninfo", conninfo),
            ("primary_slot_name", String::new()),
            ("restore_command", String::new()),
            ("recovery_target_timeline", "latest".into()),
        ],
    );
    node.write_owned(&auto, &text, 0o600)?;
    let _ = std::fs::remove_file(data.join("recovery.signal"));
    node.write_owned(&data.join("standby.signal"), "", 0o600)?;
    Ok(())
}

/// Waits until `server` streams on `timeline` and has replayed the
/// primary's WAL position read once streaming; returns the caught-up time.
pub async fn wait_caught_up(
    server: &PgServer,
    primary: &PgServer,
    timeline: u32,
    deadline: Instant,
) -> Result<f64, ActionError> {
    let started = Instant::now();
    let limit = Duration::from_secs(3);
    let mut last: String;
    let mut target: Option<Lsn> = None;
    loop {
        match receiver(server, limit).await {
            Ok(Some((s, t))) if s == "streaming" && t == timeline => {
                if target.is_none() {
                    target = ops::status_of(primary, limit).await?.current_lsn;
                }
                let st = ops::status_of(server, limit).await?;
                match (st.replay_lsn, target) {
                    (Some(r), Some(want)) if r >= want => {
                        return Ok(started.elapsed().as_secs_f64() * 1000.0)
                    }
                    (r, _) => {
                        last = format!(
                            "streaming, replayed {} of {}",
                            r.map(|l| l.to_string()).unwrap_or_else(|| "nothing".into()),
                            target.map(|l| l.to_string()).unwrap_or_default()
                        )
                    }
                }
            }
            Ok(Some((s, t))) => {
                last = format!("receiver {s} on timeline {t}, want streaming on {timeline}")
            }
            Ok(None) => last = "no WAL receiver".into(),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() + Duration::from_millis(20) >= deadline {
            return Err(ActionError::failed_hint(
                format!(
                    "{} does not replicate from {}: {last}",
                    server.addr(),
                    primary.addr()
                ),
                "read the node's server log; a node on the wrong timeline needs postgres.rewind",
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[async_trait]
impl ActionKind for PgRejoin {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "postgres.rejoin"
    }
    fn summary(&self) -> &'static str {
        "Make a stopped or rewound server a standby of the primary; verify it streams on the primary's timeline"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["timeline", "already_streaming", "catch_up_ms", "summary"]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &YamlNode) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "postgres.rejoin")?;
        let node = node_field(ctx, &mut r, "node");
        let server = server_field(ctx, &mut r, "server", true);
        let primary = server_field(ctx, &mut r, "primary", true);
        r.finish(ctx);
        Some(Params {
            node: node?,
            server: server?,
            primary: primary?,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "postgres {} rejoins as a standby of {}",
            super::addr_of(params, "server"),
            super::addr_of(params, "primary")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let limit = ctx.remaining().min(Duration::from_secs(3));
        let ps = match ops::status_of(&p.primary, limit).await {
            Ok(s) if !s.is_standby() => s,
            Ok(_) => {
                return Ok(Preflight::fails_now(format!(
                    "{} is not a primary yet",
                    p.primary.addr()
                )))
            }
            Err(e) => return Ok(Preflight::fails_now(format!("{}: {e}", p.primary.addr()))),
        };
        let tli = ps.timeline.unwrap_or(0);
        Ok(if streams_on(&p.server, tli, limit).await {
            Preflight::ok(format!(
                "{} already streams timeline {tli}",
                p.server.addr()
            ))
        } else {
            Preflight::fails_now(format!(
                "{} would be configured as a standby of {} (timeline {tli}) and started",
                p.server.addr(),
                p.primary.addr()
            ))
        })
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let limit = Duration::from_secs(3);
        let ps = ops::status_of(&p.primary, limit).await?;
        if ps.is_standby() {
            return Err(ActionError::failed(format!(
                "{} is not a primary: nothing to rejoin to",
                p.primary.addr()
            )));
        }
        let tli = ps.timeline.unwrap_or(0);
        let mut already = true;
        if !streams_on(&p.server, tli, limit).await {
            already = false;
            if let Writes::Accepted { .. } = probe_writes(&p.server, false, limit).await {
                return Err(ActionError::Refused {
                    message: format!(
                        "{} accepts writes (a primary): it must be rewound before it can rejoin",
                        p.server.addr()
                    ),
                    hint: "run postgres.rewind first (the failback runbook does)".into(),
                });
            }
            let node = Node::open(&p.node, ctx).await?;
            let (up, iso) = node.running().await?;
            if iso {
                node.stop_isolated().await?;
            }
            if up {
                node.stop().await?;
            }
            let app = match &p.node {
                NodeSpec::Lab { name } => name.replace('-', "_"),
                NodeSpec::Region { region } => region.replace('-', "_"),
            };
            configure(&node, &p.server, &p.primary, &app)?;
            crate::journal::test_crash_at("rejoin-configured");
            node.start().await?;
        }
        let catch_up_ms = wait_caught_up(&p.server, &p.primary, tli, ctx.deadline).await?;
        let mut o = Outputs::new();
        o.insert("timeline".into(), json!(tli));
        o.insert("already_streaming".into(), json!(already));
        o.insert("catch_up_ms".into(), json!(catch_up_ms));
        o.insert(
            "summary".into(),
            json!(format!(
                "{} streams timeline {tli} from {}{}; caught up after {catch_up_ms:.0} ms",
                p.server.addr(),
                p.primary.addr(),
                if already { " (already did)" } else { "" }
            )),
        );
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_settings_are_replaced_not_duplicated() {
        let copied = "# Do not edit\nport = 5433\nprimary_conninfo = 'host=x port=1'\nwork_mem = '8MB'\nprimary_slot_name = 'gone'\n";
        let t = standby_conf(
            copied,
            &[
                ("port", "5432".into()),
                ("primary_conninfo", "host=y".into()),
            ],
        );
        assert_eq!(t.matches("port =").count(), 1, "{t}");
        assert!(t.contains("port = '5432'"));
        assert!(t.contains("work_mem = '8MB'"));
        assert!(!t.contains("gone"));
        assert_eq!(t.matches("primary_conninfo").count(), 1);
        assert_eq!(
            standby_conf(
                &t,
                &[
                    ("port", "5432".into()),
                    ("primary_conninfo", "host=y".into())
                ]
            ),
            t,
            "idempotent"
        );
    }
}
