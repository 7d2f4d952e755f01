//! Restoring one backup source into the scratch instance and checking it,
//! in the order the tools force:
//!
//! | phase | what | why here |
//! |---|---|---|
//! | fetch | extract the tars (or copy a plain backup) | `pg_verifybackup` reads a plain directory |
//! | verify | `pg_verifybackup` against `backup_manifest` | before start: a started server changes files |
//! | start | `postgres` on a loopback port, archiving off | returns at consistency, not at the end of recovery |
//! | replay | poll `pg_is_in_recovery()` until promoted | the end of recovery is what the backup can give |
//! | point | replay LSN, last transaction, newest heartbeat vs the expectation | a restore can exit 0 and be wrong |
//! | checks | `pg_amcheck`, the check set, `pg_dump --no-sync -f /dev/null` | need a running server |
//! | checksums | clean shutdown, `pg_checksums --check` | refuses a running or crashed cluster |
//!
//! The restored copy never writes to the production archive:
//! `archive_mode = off`, an empty `archive_command`, and the archive is
//! only read by `restore_command` (`cp`). Only the scratch's Unix socket
//! (inside the 0700 scratch directory) admits connections; TCP on its
//! loopback port is rejected, since the copy holds production data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::archive::{self, parse_lsn};
use super::instance::Expectation;
use super::scratch::{self, Scratch};
use super::source::{Kind, Source};
use super::{BackupError, Class};
use crate::lab::pg;
use crate::pgconn::{PgServer, SslMode};

/// What the step was asked to check beyond the default.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub target_time: Option<String>,
    pub amcheck: bool,
    pub heapallindexed: bool,
    pub full_read: bool,
    /// The live primary, for its newest heartbeat (RPO exposure).
    pub primary: Option<PgServer>,
    /// A recovered point further behind the primary's newest heartbeat
    /// than this is an old point.
    pub max_rpo_gap: Option<Duration>,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// Everything measured, filled as the phases go (so a failure still
/// reports what was measured before it). `None` is "not measured".
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub source: String,
    pub kind: String,
    pub backup: Option<String>,
    pub backup_label: Option<String>,
    pub backup_started_at: Option<String>,
    pub backup_age_s: Option<f64>,
    pub backup_age_method: Option<String>,
    pub scratch_dir: Option<String>,
    pub port: Option<u16>,
    pub fetch_ms: Option<u64>,
    pub verifybackup_ms: Option<u64>,
    pub start_to_consistent_ms: Option<u64>,
    pub replay_promote_ms: Option<u64>,
    /// fetch + verify + start + replay/promote: the time to a usable copy.
    pub restore_ms: Option<u64>,
    pub replay_lsn: Option<String>,
    pub recovered_xact_at: Option<String>,
    pub recovered_heartbeat_id: Option<i64>,
    pub recovered_heartbeat_at: Option<String>,
    pub recovery_point_age_s: Option<f64>,
    pub expected_method: Option<String>,
    pub expected_lsn: Option<String>,
    pub rpo_gap_bytes: Option<u64>,
    pub rpo_gap_s: Option<f64>,
    pub rpo_gap_rows: Option<i64>,
    pub rpo_gap_method: Option<String>,
    pub checks: Vec<CheckResult>,
    pub failed_check: Option<String>,
}

pub(crate) fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

pub(crate) fn secs_since(t: SystemTime) -> Option<f64> {
    SystemTime::now()
        .duration_since(t)
        .ok()
        .map(|d| d.as_secs_f64())
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A tool's output, run with a timeout as the server user (`as_server`) or
/// as drctl's own user.
pub(crate) struct ToolOut {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub(crate) async fn tool(
    bin: &Path,
    args: &[&str],
    as_server: bool,
    limit: Duration,
) -> Result<ToolOut, BackupError> {
    let who = pg::run_as().map_err(BackupError::lab)?;
    let mut c = if as_server {
        pg::command(bin, who)
    } else {
        let mut c = tokio::process::Command::new(bin);
        c.stdin(Stdio::null());
        // Connection settings come from the arguments only.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("PG")) {
                c.env_remove(&k);
            }
        }
        c
    };
    c.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let out = tokio::time::timeout(limit, c.output())
        .await
        .map_err(|_| {
            BackupError::verify(
                Class::CouldNotRun,
                format!("{name} did not finish within {limit:?}"),
            )
        })?
        .map_err(|e| {
            BackupError::verify_hint(
                Class::CouldNotRun,
                format!("cannot run {}: {e}", bin.display()),
                "install the PostgreSQL client tools (and tar) on the verifying host",
            )
        })?;
    Ok(ToolOut {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    })
}

/// The tool's error lines, at most a few, for a message.
pub(crate) fn first_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).take(n).collect();
    lines.join("; ")
}

pub(crate) fn chown_tree(root: &Path, who: pg::RunAs) -> Result<(), BackupError> {
    if !who.drop {
        return Ok(());
    }
    pg::chown(root, who).map_err(BackupError::lab)?;
    if root.is_dir() && !root.is_symlink() {
        for e in std::fs::read_dir(root).map_err(io(format!("read {}", root.display())))? {
            let e = e.map_err(io(format!("read {}", root.display())))?;
            chown_tree(&e.path(), who)?;
        }
    }
    Ok(())
}

/// The backup to restore: `backup_dir` itself when it holds a
/// `backup_manifest`, else its newest subdirectory that does.
pub fn locate_backup(dir: &Path) -> Result<PathBuf, BackupError> {
    if dir.join("backup_manifest").exists() {
        return Ok(dir.to_path_buf());
    }
    let mut best: Option<(SystemTime, PathBuf)> = None;
    let entries = std::fs::read_dir(dir).map_err(|e| {
        BackupError::verify_hint(
            Class::CouldNotRun,
            format!("cannot read the backup directory {}: {e}", dir.display()),
            "take a backup first (pg_basebackup -D DIR/NAME; on the lab: drctl lab backup), and check backup_dir in the environment file and that the backup volume is mounted",
        )
    })?;
    for e in entries.flatten() {
        let m = e.path().join("backup_manifest");
        if let Ok(t) = std::fs::metadata(&m).and_then(|md| md.modified()) {
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, e.path()));
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        BackupError::verify_hint(
            Class::CouldNotRun,
            format!("no backup in {}: no backup_manifest there or in a subdirectory", dir.display()),
            "take one with `pg_basebackup -D DIR --manifest-checksums=SHA256` (or `drctl lab backup` on the lab)",
        )
    })
}

/// Sum of the file sizes `backup_manifest` lists: what the restored data
/// directory will hold, whatever the compression of the tars.
pub fn manifest_bytes(backup: &Path) -> Result<(u64, Option<u64>), BackupError> {
    let m = backup.join("backup_manifest");
    let bytes = std::fs::read(&m).map_err(io(format!("read {}", m.display())))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        BackupError::verify(
            Class::CheckFailed,
            format!("{} is not a valid manifest: {e}", m.display()),
        )
    })?;
    let total = v["Files"]
        .as_array()
        .map(|fs| fs.iter().filter_map(|f| f["Size"].as_u64()).sum())
        .unwrap_or(0);
    let end = v["WAL-Ranges"]
        .as_array()
        .and_then(|r| r.last())
        .and_then(|r| r["End-LSN"].as_str())
        .and_then(parse_lsn);
    Ok((total, end))
}

/// Fails before anything is written when the restore cannot fit.
pub fn check_space(root: &Path, needed: u64) -> Result<(), BackupError> {
    // The nearest existing ancestor: preflight checks before anything exists.
    let mut at = root;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    let free = scratch::free_bytes(at)?;
    if free < needed {
        return Err(BackupError::verify_hint(
            Class::CouldNotRun,
            format!(
                "not enough disk for the restore under {}: it needs {} MiB (the backup's files, 10% and 64 MiB for WAL), {} MiB are free; nothing was written",
                root.display(),
                needed >> 20,
                free >> 20
            ),
            "give the scratch volume more room, or point --scratch at a larger one",
        ));
    }
    Ok(())
}

/// Fields of `backup_label` (`LABEL: …`, `START TIME: …`).
fn label_field(label: &str, key: &str) -> Option<String> {
    label
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map(|s| s.trim().to_string())
}

async fn extract(backup: &Path, data: &Path, limit: Duration) -> Result<(), BackupError> {
    let tar = Path::new("tar");
    let find = |stem: &str| -> Option<PathBuf> {
        ["", ".gz", ".lz4", ".zst"]
            .iter()
            .map(|ext| backup.join(format!("{stem}.tar{ext}")))
            .find(|p| p.exists())
    };
    if let Some(base) = find("base") {
        let d = data.display().to_string();
        let b = base.display().to_string();
        let out = tool(tar, &["-xf", &b, "-C", &d], false, limit).await?;
        if !out.ok {
            return Err(BackupError::verify(
                Class::CannotRestore,
                format!("cannot extract {b}: {}", first_lines(&out.stderr, 3)),
            ));
        }
        if let Some(w) = find("pg_wal") {
            let wd = data.join("pg_wal");
            std::fs::create_dir_all(&wd).map_err(io(format!("create {}", wd.display())))?;
            let w = w.display().to_string();
            let out = tool(
                tar,
                &["-xf", &w, "-C", &wd.display().to_string()],
                false,
                limit,
            )
            .await?;
            if !out.ok {
                return Err(BackupError::verify(
                    Class::CannotRestore,
                    format!("cannot extract {w}: {}", first_lines(&out.stderr, 3)),
                ));
            }
        }
    } else if backup.join("PG_VERSION").exists() {
        let src = format!("{}/.", backup.display());
        let out = tool(
            Path::new("cp"),
            &["-a", &src, &data.display().to_string()],
            false,
            limit,
        )
        .await?;
        if !out.ok {
            return Err(BackupError::verify(
                Class::CannotRestore,
                format!(
                    "cannot copy {}: {}",
                    backup.display(),
                    first_lines(&out.stderr, 3)
                ),
            ));
        }
    } else {
        return Err(BackupError::verify(
            Class::CannotRestore,
            format!(
                "{} holds neither base.tar[.gz] nor a plain data directory (PG_VERSION)",
                backup.display()
            ),
        ));
    }
    Ok(())
}

/// The scratch server's configuration: appended to `postgresql.auto.conf`
/// (read last, so it wins over whatever the backed-up server had).
pub(crate) fn scratch_conf(
    s: &Scratch,
    restore_command: Option<&str>,
    target_time: Option<&str>,
) -> String {
    let mut c = format!(
        "\n# drctl verify-backup scratch instance\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
         archive_mode = off\narchive_command = ''\nssl = off\nhot_standby = on\nprimary_conninfo = ''\nprimary_slot_name = ''\n\
         logging_collector = off\nlog_destination = 'stderr'\nrecovery_target_timeline = 'latest'\n",
        s.port,
        s.socket_dir().display()
    );
    if let Some(r) = restore_command {
        c.push_str(&format!("restore_command = '{}'\n", r.replace('\'', "''")));
    }
    if let Some(t) = target_time {
        c.push_str(&format!(
            "recovery_target_time = '{}'\nrecovery_target_action = 'promote'\n",
            pg_time(t)
        ));
    }
    c
}

/// An RFC 3339 time as the server's `recovery_target_time` takes it
/// (`2026-12-01 19:30:00.123456+00`; it refuses the `T…Z` form).
pub(crate) fn pg_time(t: &str) -> String {
    match humantime::parse_rfc3339_weak(t) {
        Ok(st) => humantime::format_rfc3339_micros(st)
            .to_string()
            .replace('T', " ")
            .replace('Z', "+00"),
        // Validated at decode; never reached with a bad value.
        Err(_) => t.replace('\'', ""),
    }
}

/// Only the scratch's own socket admits connections.
pub(crate) const SCRATCH_HBA: &str = "# drctl verify-backup: only the scratch directory's socket (mode 0700)\nlocal all all trust\nhost all all 0.0.0.0/0 reject\nhost all all ::/0 reject\n";

pub fn scratch_server(s: &Scratch, source: &Source, dbname: &str) -> PgServer {
    PgServer {
        host: s.socket_dir().display().to_string(),
        port: s.port,
        dbname: dbname.into(),
        user: source.superuser.clone(),
        password: None,
        sslmode: SslMode::Disable,
        sslrootcert: None,
        connect_timeout: Duration::from_secs(5),
    }
}

pub(crate) fn log_says_target_unreached(log: &Path) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("recovery ended before configured recovery target was reached")
}

/// What the server's log says went wrong: its FATAL/PANIC lines (the
/// cause), else its last lines.
pub(crate) fn log_tail(log: &Path) -> String {
    let t = std::fs::read_to_string(log).unwrap_or_default();
    let fatal: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("FATAL:") || l.contains("PANIC:") || l.contains("ERROR:"))
        .collect();
    let pick: Vec<&str> = if fatal.is_empty() {
        t.lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    } else {
        fatal
            .into_iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    };
    pick.join(" | ")
}

pub(crate) fn unreached(target: &str, archive_end: Option<&str>) -> BackupError {
    BackupError::verify_hint(
        Class::CannotRestore,
        format!(
            "the target time {target} lies beyond the archive: recovery ended before reaching it{}",
            archive_end
                .map(|e| format!(" (the newest archived WAL segment was archived at {e})"))
                .unwrap_or_default()
        ),
        "pick a target time the archive covers, or check that archiving runs",
    )
}

/// Restores and checks a `basebackup` source. `root` is the scratch area.
pub async fn verify_basebackup(
    source: &Source,
    opts: &Options,
    root: &Path,
    ctx: &crate::action::StepContext,
    report: &mut Report,
) -> Result<(), BackupError> {
    let deadline = ctx.deadline;
    let Kind::BaseBackup {
        backup_dir,
        wal_archive,
    } = &source.kind
    else {
        return Err(BackupError::verify(
            Class::CouldNotRun,
            "not a basebackup source",
        ));
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    };
    let bin = pg::bindir().map_err(BackupError::lab)?;
    let who = pg::run_as().map_err(BackupError::lab)?;
    let backup = locate_backup(backup_dir)?;
    report.backup = Some(backup.display().to_string());
    let (files_bytes, manifest_end) = manifest_bytes(&backup)?;
    check_space(root, files_bytes + files_bytes / 10 + (64 << 20))?;
    let archive_view = match wal_archive {
        Some(a) => Some(archive::scan(a).map_err(|e| {
            BackupError::verify_hint(
                Class::CouldNotRun,
                format!("cannot read the WAL archive {}: {e}", a.display()),
                "check wal_archive in the environment file",
            )
        })?),
        None => None,
    };

    let port = pg::free_port().map_err(BackupError::lab)?;
    let s = Scratch::create(root, &ctx.run_id, port)?;
    report.scratch_dir = Some(s.dir.display().to_string());
    report.port = Some(port);
    let data = s.data();
    std::fs::create_dir(&data).map_err(io(format!("create {}", data.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
        .map_err(io("chmod data"))?;

    // fetch
    let t = Instant::now();
    extract(&backup, &data, left()).await?;
    chown_tree(&data, who)?;
    let fetch_ms = ms(t);
    report.fetch_ms = Some(fetch_ms);

    // verify (before start: the server changes files)
    let t = Instant::now();
    let has_wal = std::fs::read_dir(data.join("pg_wal"))
        .map(|d| {
            d.flatten()
                .any(|e| archive::SegName::parse(&e.file_name().to_string_lossy()).is_some())
        })
        .unwrap_or(false);
    let manifest = backup.join("backup_manifest").display().to_string();
    let d = data.display().to_string();
    let mut args = vec!["-m", manifest.as_str(), "-q"];
    if !has_wal {
        // The backup's WAL comes from the archive, not from the backup.
        args.push("-n");
    }
    args.push(&d);
    verifybackup(
        report,
        &bin,
        &args,
        t,
        &backup.display().to_string(),
        "manifest matches",
        left(),
    )
    .await?;

    // the backup's own facts
    let label = std::fs::read_to_string(data.join("backup_label")).unwrap_or_default();
    report.backup_label = label_field(&label, "LABEL");
    let started = label_field(&label, "START TIME").and_then(|t| {
        let t = t.strip_suffix(" UTC")?;
        humantime::parse_rfc3339_weak(t).ok()
    });
    let manifest_time = std::fs::metadata(backup.join("backup_manifest"))
        .and_then(|m| m.modified())
        .ok();
    match (started, manifest_time) {
        (Some(t), _) => {
            report.backup_started_at = Some(rfc3339(t));
            report.backup_age_s = secs_since(t);
            report.backup_age_method = Some("backup_label START TIME".into());
        }
        (None, Some(t)) => {
            report.backup_age_s = secs_since(t);
            report.backup_age_method =
                Some("backup_manifest modification time (the end of the backup)".into());
        }
        (None, None) => {}
    }

    let exp = Expectation {
        restore_command: wal_archive
            .as_ref()
            .map(|a| format!("cp \"{}/%f\" \"%p\"", a.display())),
        archive: archive_view,
        stop_lsn: manifest_end,
    };
    super::instance::prove(s, source, opts, ctx, report, exp).await
}

/// Runs `pg_verifybackup` (from `pgbin`) with `args` and records it as the
/// `pg_verifybackup` check, its time counted from `since`: a failure fails
/// the verification naming `subject`; `ok_detail` says what a pass means.
/// It must run before the server starts, which changes the files.
pub(crate) async fn verifybackup(
    report: &mut Report,
    pgbin: &Path,
    args: &[&str],
    since: Instant,
    subject: &str,
    ok_detail: &str,
    limit: Duration,
) -> Result<(), BackupError> {
    let out = tool(&pgbin.join("pg_verifybackup"), args, true, limit).await?;
    report.verifybackup_ms = Some(ms(since));
    let ok = out.ok;
    let detail = if ok {
        ok_detail.to_string()
    } else {
        first_lines(&format!("{}{}", out.stderr, out.stdout), 4)
    };
    report.checks.push(CheckResult {
        check: "pg_verifybackup".into(),
        ok,
        detail: detail.clone(),
    });
    if ok {
        return Ok(());
    }
    report.failed_check = Some("pg_verifybackup".into());
    Err(BackupError::verify(
        Class::CheckFailed,
        format!("check pg_verifybackup failed for {subject}: {detail}"),
    ))
}

/// Records a check; a failed one fails the verification naming it.
pub(crate) fn check(
    report: &mut Report,
    name: &str,
    ok: bool,
    output: &str,
) -> Result<(), BackupError> {
    let detail = if ok {
        "ok".to_string()
    } else {
        first_lines(output, 4)
    };
    report.checks.push(CheckResult {
        check: name.into(),
        ok,
        detail: detail.clone(),
    });
    if ok {
        return Ok(());
    }
    report.failed_check = Some(name.into());
    Err(BackupError::verify(
        Class::CheckFailed,
        format!("check {name} failed: {detail}"),
    ))
}

/// Runs the source's check set through `checks.run` (the kinds this run
/// was validated against), with `vars.postgres` the scratch server.
pub(crate) async fn run_check_set(
    report: &mut Report,
    set: &Path,
    server: &PgServer,
    ctx: &crate::action::StepContext,
) -> Result<(), BackupError> {
    let vars = serde_json::json!({"postgres": {
        "host": server.host, "port": server.port, "dbname": server.dbname, "user": server.user, "sslmode": "disable"
    }});
    let name = format!("check set {}", set.display());
    let kind = ctx.registry.get("checks.run").ok_or_else(|| {
        BackupError::verify(Class::CouldNotRun, "this drctl has no checks.run kind")
    })?;
    let params = serde_json::json!({"file": set.display().to_string(), "vars": vars});
    let result = match kind.prepare(&params) {
        Ok(step) => step.execute(ctx).await.map(|o| {
            o.get("summary")
                .and_then(|s| s.as_str())
                .unwrap_or("passed")
                .to_string()
        }),
        Err(e) => Err(e),
    };
    match result.map_err(|e| e.to_string()) {
        Ok(summary) => {
            report.checks.push(CheckResult {
                check: name,
                ok: true,
                detail: summary,
            });
            Ok(())
        }
        Err(e) => {
            report.checks.push(CheckResult {
                check: name.clone(),
                ok: false,
                detail: e.clone(),
            });
            report.failed_check = Some(name.clone());
            Err(BackupError::verify(
                Class::CheckFailed,
                format!("{name} failed: {e}"),
            ))
        }
    }
}
