//! `postgres.clone_standby`: clone the DR standby into a scratch instance,
//! make it safe, start it, promote it (see the [module table](super)).
//!
//! Phases, each measured: **copy** (`pg_basebackup -X stream -c fast` from
//! the standby, as the server user), the **cut** (the primary's WAL end
//! and newest heartbeat read right after the copy: RPO is the lag of the
//! clone behind them), **consistent** (start in recovery without any
//! upstream, until it accepts read-only sessions), **promote**
//! (`pg_promote`, until it takes writes on the next timeline).
//!
//! Safety before start: signal files removed, `postgresql.auto.conf`
//! rewritten without the standby's `primary_conninfo`, slot, archive and
//! restore settings, its own loopback port, a pg_hba that rejects
//! replication; then the running clone is asked for each setting and for
//! a WAL receiver, and refused (stopped, removed) if any is not as set.
//!
//! Idempotent: a re-run (resume after a kill) removes this run's clone
//! directory and clones again; the standby is only read.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::PREFIX;
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::backup::scratch::{self, Scratch};
use crate::decode::{Ctx, MapReader};
use crate::lab::pg;
use crate::pgconn::{PgServer, SslMode};
use crate::postgres::ops::{self, Lsn};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct PgCloneStandby;

pub struct Params {
    /// The DR standby cloned (only read).
    server: PgServer,
    /// The production primary: the cut's reference.
    primary: PgServer,
    scratch: PathBuf,
    /// Who may reach the clone (default: loopback only).
    reach: super::reach::Reach,
}

/// What the step journals before it creates anything: where its clone
/// lives, so a cleanup after a kill -9 finds it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Placed {
    pub dir: String,
    pub port: u16,
    /// The primary's timeline before the drill: production must still be
    /// on it afterwards.
    pub production_timeline: Option<u32>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ActionError {
    move |e| ActionError::failed(format!("{what}: {e}"))
}

fn lab(e: pg::LabError) -> ActionError {
    ActionError::failed(crate::diag::error_chain(&e))
}

/// The settings the clone runs with, replacing any the copy brought.
pub const SAFE_KEYS: &[&str] = &[
    "port",
    "listen_addresses",
    "unix_socket_directories",
    "archive_mode",
    "archive_command",
    "archive_library",
    "restore_command",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_target_timeline",
    "hba_file",
    "ssl",
    "logging_collector",
    "log_destination",
    "hot_standby",
    "synchronous_standby_names",
];

/// `postgresql.auto.conf` as the clone reads it: the copy's lines without
/// any setting of [`SAFE_KEYS`], then drctl's.
pub fn safe_auto_conf(
    copied: &str,
    port: u16,
    listen: &str,
    socket_dir: &str,
    hba: &str,
) -> String {
    let mut out: Vec<String> = copied
        .lines()
        .filter(|l| {
            let key = l
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            !SAFE_KEYS.contains(&key.as_str())
        })
        .map(str::to_string)
        .collect();
    out.push("# drctl isolated drill clone: never archives, never streams, loopback only".into());
    for l in [
        format!("port = {port}"),
        format!("listen_addresses = '{listen}'"),
        format!("unix_socket_directories = '{socket_dir}'"),
        "archive_mode = off".into(),
        "archive_command = ''".into(),
        "archive_library = ''".into(),
        "restore_command = ''".into(),
        "primary_conninfo = ''".into(),
        "primary_slot_name = ''".into(),
        "recovery_target_timeline = 'latest'".into(),
        format!("hba_file = '{hba}'"),
        "ssl = off".into(),
        "logging_collector = off".into(),
        "log_destination = 'stderr'".into(),
        "hot_standby = on".into(),
        "synchronous_standby_names = ''".into(),
    ] {
        out.push(l);
    }
    out.push(String::new());
    out.join("\n")
}

fn libpq_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The standby's database size, for the free-space check.
async fn standby_bytes(server: &PgServer, limit: Duration) -> Result<u64, ActionError> {
    let c = server.connect(limit).await?;
    let rows = crate::pgconn::query(
        &c,
        &server.addr(),
        "database sizes",
        "select sum(pg_database_size(oid))::bigint from pg_database",
        limit,
    )
    .await?;
    Ok(rows
        .first()
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .unwrap_or(0)
        .max(0) as u64)
}

/// The primary at the cut: its WAL end and newest heartbeat.
async fn cut(
    primary: &PgServer,
    limit: Duration,
) -> Result<(Option<Lsn>, Option<ops::Beat>, u32), ActionError> {
    let c = primary.connect(limit).await?;
    let st = ops::status(&c, &primary.addr(), limit).await?;
    let beat = ops::newest_beat(&c, &primary.addr(), limit).await?;
    Ok((st.current_lsn, beat, st.timeline.unwrap_or(0)))
}

fn clone_server(s: &Scratch, user: &str) -> PgServer {
    PgServer {
        host: s.socket_dir().display().to_string(),
        port: s.port,
        dbname: "postgres".into(),
        user: user.into(),
        password: None,
        sslmode: SslMode::Disable,
        sslrootcert: None,
        connect_timeout: Duration::from_secs(5),
    }
}

/// The running clone's settings that make it safe, read back; the names
/// of those not as written.
async fn check_safe(
    c: &tokio_postgres::Client,
    addr: &str,
    listen: &str,
) -> Result<Value, ActionError> {
    let sql = "select current_setting('archive_mode'), current_setting('archive_command'), \
        current_setting('restore_command'), current_setting('primary_conninfo'), \
        current_setting('primary_slot_name'), current_setting('listen_addresses'), \
        (select count(*) from pg_stat_wal_receiver)::bigint, pg_is_in_recovery()";
    let rows = crate::pgconn::query(c, addr, "clone settings", sql, Duration::from_secs(5)).await?;
    let r = rows
        .first()
        .ok_or_else(|| ActionError::failed("the clone returned no settings row"))?;
    let get = |i: usize| r.get::<_, String>(i);
    let receivers: i64 = r.get(6);
    let v = json!({
        "archive_mode": get(0),
        "archive_command": get(1),
        "restore_command": get(2),
        "primary_conninfo": get(3),
        "primary_slot_name": get(4),
        "listen_addresses": get(5),
        "wal_receivers": receivers,
        "in_recovery": r.get::<_, bool>(7),
    });
    let mut bad = Vec::new();
    if get(0) != "off" {
        bad.push("archive_mode is not off");
    }
    for (i, name) in [
        (1, "archive_command"),
        (2, "restore_command"),
        (3, "primary_conninfo"),
        (4, "primary_slot_name"),
    ] {
        // With archiving off the server shows `archive_command` as
        // "(disabled)", whatever it holds.
        let v = get(i);
        if !(v.is_empty() || (i == 1 && v == "(disabled)")) {
            bad.push(name);
        }
    }
    if get(5) != listen {
        bad.push("listen_addresses is not what drctl set");
    }
    if receivers != 0 {
        bad.push("a WAL receiver runs");
    }
    if !bad.is_empty() {
        return Err(ActionError::failed_hint(
            format!("the clone is not isolated: {}", bad.join(", ")),
            "it was stopped and removed; check the standby's configuration includes (a setting drctl cannot override)",
        ));
    }
    Ok(v)
}

/// RPO as the lag at the cut: WAL bytes and heartbeat time the clone
/// lacks against the primary right after the copy.
fn rpo(
    primary_lsn: Option<Lsn>,
    clone_lsn: Option<Lsn>,
    pb: Option<ops::Beat>,
    cb: Option<ops::Beat>,
) -> Value {
    let mut v = serde_json::Map::new();
    let mut methods = serde_json::Map::new();
    let mut unknown = serde_json::Map::new();
    match (primary_lsn, clone_lsn) {
        (Some(p), Some(c)) => {
            v.insert("wal_bytes_lost".into(), json!(p.bytes_after(c)));
            methods.insert(
                "wal_bytes_lost".into(),
                json!(format!(
                    "primary WAL end {p} at the cut minus the clone's end of recovery {c}"
                )),
            );
        }
        _ => {
            v.insert("wal_bytes_lost".into(), Value::Null);
            unknown.insert(
                "wal_bytes_lost".into(),
                json!("the primary or the clone reported no LSN"),
            );
        }
    }
    match (pb, cb) {
        (Some(p), Some(c)) => {
            v.insert("time_lost_ms".into(), json!((p.at_ms - c.at_ms).max(0)));
            v.insert("heartbeats_lost".into(), json!((p.id - c.id).max(0)));
            methods.insert(
                "time_lost_ms".into(),
                json!("the primary's newest heartbeat at the cut minus the clone's newest"),
            );
        }
        _ => {
            v.insert("time_lost_ms".into(), Value::Null);
            unknown.insert(
                "time_lost_ms".into(),
                json!("no heartbeat table on the primary or the clone"),
            );
        }
    }
    v.insert("methods".into(), Value::Object(methods));
    if !unknown.is_empty() {
        v.insert("unknown".into(), Value::Object(unknown));
    }
    Value::Object(v)
}

async fn run(p: &Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
    let limit = Duration::from_secs(10).min(ctx.remaining().max(Duration::from_secs(1)));
    // Leftovers of drills whose drctl died, provably drctl's.
    let swept = scratch::sweep_prefixed(&p.scratch, PREFIX).map_err(|e| e.into_action_error())?;
    let need = standby_bytes(&p.server, limit).await?;
    crate::backup::restore::check_space(&p.scratch, need + need / 10 + (64 << 20))
        .map_err(|e| e.into_action_error())?;
    let port = pg::free_port().map_err(lab)?;
    let before = ops::status_of(&p.primary, limit).await?;
    let dir =
        crate::environment::paths::absolute(&p.scratch).join(format!("{PREFIX}{}", ctx.run_id));
    ctx.checkpoint(&Placed {
        dir: dir.display().to_string(),
        port,
        production_timeline: before.timeline,
    })
    .await?;
    let s = Scratch::create_prefixed(&p.scratch, PREFIX, &ctx.run_id, port)
        .map_err(|e| e.into_action_error())?;
    let who = pg::run_as().map_err(lab)?;
    let bin = pg::bindir().map_err(lab)?;
    // Credentials the server user can read: a passfile and the CA bundle
    // inside the 0700 scratch directory (the originals may sit where it
    // cannot go).
    let password = match &p.server.password {
        Some(r) => Some(r.resolve()?),
        None => None,
    };
    let passfile = s.dir.join("pgpass");
    pg::write_file(
        &passfile,
        &format!(
            "*:*:*:{}:{}\n",
            p.server.user.replace(':', "\\:"),
            password
                .as_ref()
                .map(|x| x.expose().replace(':', "\\:"))
                .unwrap_or_default()
        ),
        0o600,
        who,
    )
    .map_err(lab)?;
    let mut conninfo = format!(
        "host={} port={} user={} dbname={} passfile={} application_name=drctl-drill-clone",
        libpq_quote(&p.server.host),
        p.server.port,
        libpq_quote(&p.server.user),
        libpq_quote(&p.server.dbname),
        libpq_quote(&passfile.display().to_string()),
    );
    match p.server.sslmode {
        SslMode::Disable => conninfo.push_str(" sslmode=disable"),
        SslMode::Require => conninfo.push_str(" sslmode=require"),
        SslMode::VerifyFull => {
            conninfo.push_str(" sslmode=verify-full");
            if let Some(r) = &p.server.sslrootcert {
                let ca = s.dir.join("root.crt");
                pg::write_file(&ca, r.resolve()?.expose(), 0o600, who).map_err(lab)?;
                conninfo.push_str(&format!(
                    " sslrootcert={}",
                    libpq_quote(&ca.display().to_string())
                ));
            }
        }
    }
    let data = s.data();
    // copy
    ctx.progress(format!(
        "cloning {} into {}",
        p.server.addr(),
        data.display()
    ));
    let t = Instant::now();
    let mut c = pg::command(&bin.join("pg_basebackup"), who);
    // libpq looks for client certificates under $HOME/.postgresql, which
    // the server user may not enter: the scratch directory is its home.
    c.env("HOME", &s.dir)
        .arg("-d")
        .arg(&conninfo)
        .arg("-D")
        .arg(&data)
        .args(["-X", "stream", "-c", "fast", "--no-sync"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(ctx.remaining(), c.output())
        .await
        .map_err(|_| ActionError::failed("pg_basebackup did not finish within the step's timeout"))?
        .map_err(io(format!("run {}", bin.join("pg_basebackup").display())))?;
    if !out.status.success() {
        return Err(ActionError::failed(format!(
            "pg_basebackup from {} failed: {}",
            p.server.addr(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let copy_ms = t.elapsed().as_millis() as u64;
    crate::journal::test_crash_at("clone-copied");
    // the cut
    let cut_at_ms = crate::journal::now_ms();
    let (primary_lsn, primary_beat, production_timeline) = cut(&p.primary, limit).await?;

    // make it safe
    let _ = std::fs::remove_file(data.join("standby.signal"));
    let _ = std::fs::remove_file(data.join("recovery.signal"));
    let sock = s.socket_dir();
    std::fs::create_dir_all(&sock).map_err(io(format!("create {}", sock.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("chmod {}", sock.display())))?;
    pg::chown(&sock, who).map_err(lab)?;
    let hba = data.join("pg_hba.conf");
    pg::write_file(&hba, &p.reach.hba(), 0o600, who).map_err(lab)?;
    let auto = data.join("postgresql.auto.conf");
    let copied = std::fs::read_to_string(&auto).unwrap_or_default();
    pg::write_file(
        &auto,
        &safe_auto_conf(
            &copied,
            port,
            &p.reach.listen_addresses(),
            &sock.display().to_string(),
            &hba.display().to_string(),
        ),
        0o600,
        who,
    )
    .map_err(lab)?;
    // A standby without upstream: it reaches consistency on the copied
    // WAL, then waits, read-only, for the promotion.
    pg::write_file(&data.join("standby.signal"), "", 0o600, who).map_err(lab)?;

    // consistent
    let t = Instant::now();
    let mut s = s;
    s.server = Some(
        pg::start_with("drill-clone", &data, port, &s.log(), &[])
            .await
            .map_err(lab)?,
    );
    let srv = clone_server(&s, &p.server.user);
    let client = srv.connect(limit).await?;
    let consistent_ms = t.elapsed().as_millis() as u64;
    let safety = check_safe(&client, &srv.addr(), &p.reach.listen_addresses()).await?;
    let clone_lsn = crate::pgconn::query(
        &client,
        &srv.addr(),
        "clone replay lsn",
        "select pg_last_wal_replay_lsn()::text",
        limit,
    )
    .await?
    .first()
    .and_then(|r| r.get::<_, Option<String>>(0))
    .as_deref()
    .and_then(Lsn::parse);
    let clone_beat = ops::newest_beat(&client, &srv.addr(), limit).await?;
    crate::journal::test_crash_at("clone-started");

    // promote
    let t = Instant::now();
    crate::pgconn::query(
        &client,
        &srv.addr(),
        "promote the clone",
        "select pg_promote(true, 60)",
        ctx.remaining(),
    )
    .await?;
    let st = ops::status(&client, &srv.addr(), limit).await?;
    if st.is_standby() {
        return Err(ActionError::failed(
            "the clone is still in recovery after pg_promote",
        ));
    }
    let promote_ms = t.elapsed().as_millis() as u64;
    let sysid = crate::pgconn::query(
        &client,
        &srv.addr(),
        "system identifier",
        "select system_identifier::text from pg_control_system()",
        limit,
    )
    .await?
    .first()
    .map(|r| r.get::<_, String>(0));
    drop(client);
    let scratch_dir = s.dir.display().to_string();
    let pid = s.keep();
    crate::journal::test_crash_at("clone-promoted");
    let mut o = Outputs::new();
    o.insert("host".into(), json!(p.reach.advertise.to_string()));
    o.insert("port".into(), json!(port));
    o.insert("pid".into(), json!(pid));
    o.insert("scratch_dir".into(), json!(scratch_dir));
    o.insert("copy_ms".into(), json!(copy_ms));
    o.insert("consistent_ms".into(), json!(consistent_ms));
    o.insert("promote_ms".into(), json!(promote_ms));
    o.insert("failure_cut_ms".into(), json!(cut_at_ms));
    o.insert("timeline".into(), json!(st.timeline));
    o.insert("production_timeline".into(), json!(production_timeline));
    o.insert("system_identifier".into(), json!(sysid));
    o.insert("copied_bytes".into(), json!(need));
    o.insert("safety".into(), safety);
    o.insert(
        "rpo".into(),
        rpo(primary_lsn, clone_lsn, primary_beat, clone_beat),
    );
    o.insert("leftovers_removed".into(), json!(swept.removed));
    o.insert(
        "summary".into(),
        json!(format!(
            "clone of {} on {}:{port}, timeline {}: copy {copy_ms} ms, consistent {consistent_ms} ms, promote {promote_ms} ms",
            p.server.addr(),
            p.reach.advertise,
            st.timeline.unwrap_or(0)
        )),
    );
    Ok(o)
}

#[async_trait]
impl ActionKind for PgCloneStandby {
    type Params = Params;

    fn kind(&self) -> &'static str {
        super::CLONE_KIND
    }
    fn summary(&self) -> &'static str {
        "Clone the DR standby into a safe scratch instance (no archiving, no upstream, loopback) and promote the clone"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "host",
            "port",
            "pid",
            "scratch_dir",
            "copy_ms",
            "consistent_ms",
            "promote_ms",
            "failure_cut_ms",
            "timeline",
            "production_timeline",
            "system_identifier",
            "copied_bytes",
            "safety",
            "rpo",
            "leftovers_removed",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "postgres.clone_standby")?;
        let server = crate::postgres::server_field(ctx, &mut r, "server", true);
        let primary = crate::postgres::server_field(ctx, &mut r, "primary", true);
        let scratch = r
            .req(ctx, "scratch")
            .and_then(|n| ctx.string(n, "scratch"))
            .filter(|s| !s.is_empty());
        let reach = super::reach::Reach::decode(ctx, &mut r, "postgres.clone_standby");
        r.finish(ctx);
        Some(Params {
            server: server?,
            primary: primary?,
            scratch: PathBuf::from(scratch?),
            reach: reach?,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "clone the standby {} into {} and promote the clone (production untouched)",
            crate::postgres::addr_of(params, "server"),
            params["scratch"].as_str().unwrap_or("the scratch area")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let bin = match pg::bindir() {
            Ok(b) => b,
            Err(e) => return Ok(Preflight::problem(e.to_string())),
        };
        if !bin.join("pg_basebackup").exists() {
            return Ok(Preflight::problem(format!(
                "pg_basebackup missing from {}",
                bin.display()
            )));
        }
        let st = match ops::status_of(&p.server, ctx.remaining()).await {
            Ok(s) => s,
            Err(e) => return Ok(Preflight::problem(crate::diag::error_chain(&e))),
        };
        if !st.is_standby() {
            return Ok(Preflight::problem(format!(
                "{} is not a standby: an isolated drill clones the DR standby",
                p.server.addr()
            )));
        }
        let need = standby_bytes(&p.server, ctx.remaining()).await?;
        Ok(
            match crate::backup::restore::check_space(&p.scratch, need + need / 10 + (64 << 20)) {
                Ok(()) => Preflight::ok(format!(
                    "clone {} ({} MiB) into {}",
                    p.server.addr(),
                    need >> 20,
                    p.scratch.display()
                )),
                Err(e) => Preflight::problem(e.to_string()),
            },
        )
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        // A failure after the directory exists leaves nothing running:
        // the Scratch guard's drop kills the clone and removes it.
        run(p, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safe_configuration_replaces_every_upstream_and_archive_setting() {
        let copied = "# Do not edit\nprimary_conninfo = 'host=10.0.0.1 user=rep'\nprimary_slot_name = 'dr'\narchive_mode = on\narchive_command='cp %p /arch/%f'\nrestore_command = 'cp /arch/%f %p'\nport = 5433\nwork_mem = '8MB'\n";
        let c = safe_auto_conf(copied, 25001, "127.0.0.1", "/s", "/d/pg_hba.conf");
        assert!(c.contains("work_mem = '8MB'"), "{c}");
        for bad in ["10.0.0.1", "'dr'", "archive_mode = on", "/arch/", "5433"] {
            assert!(!c.contains(bad), "{bad} in {c}");
        }
        for good in [
            "port = 25001",
            "listen_addresses = '127.0.0.1'",
            "archive_mode = off",
            "archive_command = ''",
            "restore_command = ''",
            "primary_conninfo = ''",
            "primary_slot_name = ''",
        ] {
            assert!(c.contains(good), "{good} missing from {c}");
        }
        let hba = super::super::reach::Reach::default().hba();
        assert!(hba.find("replication").unwrap() < hba.find("scram").unwrap());
    }

    #[test]
    fn rpo_is_the_lag_at_the_cut() {
        let v = rpo(
            Some(Lsn(0x3000)),
            Some(Lsn(0x1000)),
            Some(ops::Beat {
                id: 50,
                at_ms: 10_500,
            }),
            Some(ops::Beat {
                id: 45,
                at_ms: 10_000,
            }),
        );
        assert_eq!(v["wal_bytes_lost"], 0x2000);
        assert_eq!(v["time_lost_ms"], 500);
        assert_eq!(v["heartbeats_lost"], 5);
        let v = rpo(None, Some(Lsn(1)), None, None);
        assert!(v["wal_bytes_lost"].is_null() && v["time_lost_ms"].is_null());
        assert!(v["unknown"]["time_lost_ms"].is_string());
    }
}
