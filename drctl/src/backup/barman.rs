//! The `barman` kind, with Barman's own CLI and files:
//! `barman -f json show-backup SERVER latest` names the newest backup (id,
//! begin/end time, end LSN) and the catalogue's newest WAL segment after
//! it (`wal_information.last_available`, the independent expectation);
//! `barman recover SERVER ID DIR` writes it into the scratch directory.
//! Then `pg_verifybackup` against the manifest Barman kept (PostgreSQL 13+
//! with `backup_method = postgres`), and the shared phases
//! ([`super::instance`]).
//!
//! Where the WAL comes from, decided: Barman copies the segments the
//! backup needs from its catalogue into the copy (`pg_wal`, or
//! `barman_wal` for a target time) as part of `recover`. Recovery then
//! reads only the copy: no `barman get-wal` or `barman-wal-restore`
//! against the catalogue, so the restored server cannot touch it, and a
//! segment the catalogue lists but lost fails the restore itself. Barman
//! already replaces `archive_command` with `false` in the copy; the
//! scratch settings appended after it turn archiving off altogether.
//!
//! Barman refuses to run as another user than its `barman_user`: drctl
//! runs it as drctl's own user (the CronJob's), then hands the files to
//! the server user.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::archive::{parse_lsn, ArchiveView, SegName};
use super::instance::Expectation;
use super::restore::{
    check_space, chown_tree, first_lines, ms, pg_time, rfc3339, secs_since, tool, CheckResult,
    Options, Report,
};
use super::scratch::Scratch;
use super::source::{Kind, Source};
use super::{BackupError, Class};
use crate::lab::pg;

/// The newest backup as `barman show-backup` reports it.
#[derive(Debug, Clone)]
pub struct Info {
    pub backup_id: String,
    pub status: String,
    pub begin: Option<SystemTime>,
    pub end: Option<SystemTime>,
    pub end_lsn: Option<u64>,
    /// The base backup plus the WAL up to the next backup, in bytes.
    pub size_with_wals: u64,
    pub last_available: Option<SegName>,
}

fn epoch_text(v: &Value) -> Option<SystemTime> {
    v.as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// Reads `barman -f json show-backup SERVER latest` (Barman 3.x: one key,
/// the server's name).
pub fn parse_show_backup(json: &str, server: &str) -> Result<Info, BackupError> {
    let v: Value = serde_json::from_str(json).map_err(|e| {
        BackupError::verify(
            Class::CouldNotRun,
            format!("barman show-backup is not the JSON expected: {e}"),
        )
    })?;
    if let Some(err) = v["_ERROR"].as_array() {
        let lines: Vec<&str> = err.iter().filter_map(Value::as_str).collect();
        return Err(BackupError::verify_hint(
            Class::CouldNotRun,
            format!("barman show-backup {server}: {}", lines.join("; ")),
            format!("take one with `barman backup {server}`"),
        ));
    }
    let b = &v[server];
    let Some(id) = b["backup_id"].as_str() else {
        return Err(BackupError::verify(
            Class::CouldNotRun,
            format!("barman show-backup names no backup of server `{server}`"),
        ));
    };
    let base = &b["base_backup_information"];
    let wal = &b["wal_information"];
    Ok(Info {
        backup_id: id.to_string(),
        status: b["status"].as_str().unwrap_or("").to_string(),
        begin: epoch_text(&base["begin_time_timestamp"]),
        end: epoch_text(&base["end_time_timestamp"]),
        end_lsn: base["end_lsn"].as_str().and_then(parse_lsn),
        size_with_wals: base["disk_usage_with_wals_bytes"]
            .as_u64()
            .or_else(|| base["disk_usage_bytes"].as_u64())
            .unwrap_or(0),
        last_available: wal["last_available"].as_str().and_then(SegName::parse),
    })
}

fn base_args(config: Option<&Path>) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(c) = config {
        a.push("-c".to_string());
        a.push(c.display().to_string());
    }
    a
}

/// Files Barman adds to or rewrites in the copy, which the backup's
/// manifest cannot match: its recovery record, the renamed manifest, the
/// configuration it makes safe (`archive_command = false`) and the
/// originals it keeps.
const BARMAN_WRITES: &[&str] = &[
    ".barman-recover.info",
    "postgresql.conf",
    "postgresql.auto.conf",
    "postgresql.conf.origin",
    "postgresql.auto.conf.origin",
    "barman_wal",
];

pub async fn verify_barman(
    source: &Source,
    opts: &Options,
    root: &Path,
    ctx: &crate::action::StepContext,
    report: &mut Report,
) -> Result<(), BackupError> {
    let Kind::Barman { server, config } = &source.kind else {
        return Err(BackupError::verify(
            Class::CouldNotRun,
            "not a barman source",
        ));
    };
    let deadline = ctx.deadline;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    };
    let bin = PathBuf::from("barman");
    let mut args = base_args(config.as_deref());
    args.extend(["-f", "json", "show-backup", server, "latest"].map(String::from));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tool(&bin, &a, false, left().min(Duration::from_secs(120))).await?;
    if !out.ok && !out.stdout.contains("_ERROR") {
        return Err(BackupError::verify_hint(
            Class::CouldNotRun,
            format!(
                "barman show-backup failed: {}",
                first_lines(&format!("{}{}", out.stderr, out.stdout), 3)
            ),
            "check the server and barman_config of the source, and that drctl runs as Barman's barman_user",
        ));
    }
    let info = parse_show_backup(&out.stdout, server)?;
    report.backup = Some(format!("barman {server} {}", info.backup_id));
    report.backup_label = Some(info.backup_id.clone());
    report.backup_started_at = info.begin.map(rfc3339);
    if let Some(t) = info.begin {
        report.backup_age_s = secs_since(t);
        report.backup_age_method = Some("barman show-backup begin_time".into());
    }
    if info.status != "DONE" {
        return Err(BackupError::verify_hint(
            Class::CannotRestore,
            format!(
                "the newest barman backup {} of `{server}` has status {}, not DONE",
                info.backup_id, info.status
            ),
            "look at `barman check` and the backup's log; a backup WAITING_FOR_WALS needs its WAL archived",
        ));
    }
    check_space(
        root,
        info.size_with_wals + info.size_with_wals / 10 + (64 << 20),
    )?;

    let port = pg::free_port().map_err(BackupError::lab)?;
    let s = Scratch::create(root, &ctx.run_id, port)?;
    report.scratch_dir = Some(s.dir.display().to_string());
    report.port = Some(port);
    let data = s.data();
    let who = pg::run_as().map_err(BackupError::lab)?;

    // fetch = barman recover (base backup and the WAL it needs)
    let t = Instant::now();
    let mut args = base_args(config.as_deref());
    args.push("recover".into());
    if let Some(tt) = &opts.target_time {
        args.push(format!("--target-time={}", pg_time(tt)));
        args.push("--target-action=promote".into());
    }
    args.extend([
        server.clone(),
        info.backup_id.clone(),
        data.display().to_string(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tool(&bin, &a, false, left()).await?;
    report.fetch_ms = Some(ms(t));
    if !out.ok {
        let why = out
            .stderr
            .lines()
            .chain(out.stdout.lines())
            .filter(|l| l.contains("ERROR") || l.contains("rsync:") || l.contains("failed"))
            .take(3)
            .collect::<Vec<_>>()
            .join("; ");
        let why = if why.is_empty() {
            first_lines(&format!("{}{}", out.stderr, out.stdout), 4)
        } else {
            why
        };
        return Err(BackupError::verify(
            Class::CannotRestore,
            format!("barman recover of {} failed: {why}", info.backup_id),
        ));
    }
    chown_tree(&data, who)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(super::restore::io("chmod data"))?;
    }

    // verify, before start, against the manifest Barman renamed
    let manifest = data.join(format!("backup_manifest.{}", info.backup_id));
    let t = Instant::now();
    if manifest.exists() {
        let m = manifest.display().to_string();
        let d = data.display().to_string();
        let mut args = vec!["-m".to_string(), m.clone(), "-q".into()];
        args.extend([
            "-i".to_string(),
            format!("backup_manifest.{}", info.backup_id),
        ]);
        for f in BARMAN_WRITES {
            args.extend(["-i".to_string(), (*f).to_string()]);
        }
        if opts.target_time.is_some() {
            // The backup's WAL sits in barman_wal, not pg_wal.
            args.push("-n".into());
        }
        args.push(d);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let pgbin = pg::bindir().map_err(BackupError::lab)?;
        super::restore::verifybackup(
            report,
            &pgbin,
            &a,
            t,
            &format!("barman backup {}", info.backup_id),
            "manifest matches (the configuration files Barman rewrote excepted)",
            left(),
        )
        .await?;
    } else {
        report.checks.push(CheckResult {
            check: "pg_verifybackup".into(),
            ok: true,
            detail: "not run: the barman backup has no backup_manifest (rsync method or PostgreSQL before 13)".into(),
        });
    }

    let archive = info.last_available.map(|seg| ArchiveView {
        segments: Vec::new(),
        newest: Some((seg, None)),
        bytes: 0,
        what: format!("barman show-backup: wal_information.last_available of server {server}"),
    });
    let exp = Expectation {
        // With a target time Barman puts the WAL in barman_wal and
        // recovery needs a restore_command; without one the WAL is in
        // pg_wal and the server replays all of it.
        restore_command: opts
            .target_time
            .as_ref()
            .map(|_| format!("cp \"{}/barman_wal/%f\" \"%p\"", data.display())),
        archive,
        stop_lsn: info.end_lsn,
    };
    super::instance::prove(s, source, opts, ctx, report, exp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape barman 3.4 prints (trimmed to the fields read).
    #[test]
    fn show_backup_names_the_backup_and_the_newest_wal() {
        let j = r#"{"pg": {"backup_id": "20261201T221254", "base_backup_information": {"begin_lsn": "0/3000028",
          "begin_time_timestamp": "1796163174", "disk_usage_bytes": 23155073, "disk_usage_with_wals_bytes": 39932289,
          "end_lsn": "0/4000000", "end_time_timestamp": "1796163179", "end_wal": "000000010000000000000003"},
          "status": "DONE", "wal_information": {"last_available": "000000010000000000000006", "no_of_files": 3}}}"#;
        let i = parse_show_backup(j, "pg").unwrap();
        assert_eq!(i.backup_id, "20261201T221254");
        assert_eq!(i.status, "DONE");
        assert_eq!(i.size_with_wals, 39_932_289);
        assert_eq!(i.end_lsn, parse_lsn("0/4000000"));
        assert_eq!(i.last_available, SegName::parse("000000010000000000000006"));
        assert_eq!(
            i.begin,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_163_174))
        );
        let err = r#"{"_ERROR": ["Unknown backup 'latest' for server 'pg'"]}"#;
        let e = parse_show_backup(err, "pg").unwrap_err().to_string();
        assert!(e.contains("Unknown backup"), "{e}");
        assert!(parse_show_backup("{}", "pg").is_err());
    }
}
