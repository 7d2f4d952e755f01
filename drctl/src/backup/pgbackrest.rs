//! The `pgbackrest` kind, with pgBackRest's own CLI and files:
//! `pgbackrest info --output=json` names the newest backup (label,
//! start/stop LSN and time) and the repository's newest archived segment
//! (the independent expectation), `pgbackrest restore --archive-mode=off`
//! writes it into the scratch directory (checking every file against the
//! backup's manifest as it goes), and recovery reads the repository with
//! `archive-get`, which only reads. Then the shared phases
//! ([`super::instance`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::archive::{ArchiveView, SegName};
use super::instance::Expectation;
use super::restore::{
    check_space, first_lines, ms, rfc3339, secs_since, tool, CheckResult, Options, Report,
};
use super::scratch::Scratch;
use super::source::{Kind, Source};
use super::{BackupError, Class};
use crate::lab::pg;

/// The newest backup and archive as `pgbackrest info` reports them.
#[derive(Debug, Clone)]
pub struct Info {
    pub label: String,
    pub start: Option<SystemTime>,
    pub stop: Option<SystemTime>,
    pub stop_lsn: Option<u64>,
    /// The restored size of the database (`info.size`).
    pub size: u64,
    pub newest_segment: Option<SegName>,
}

fn epoch(v: &Value) -> Option<SystemTime> {
    v.as_u64()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// Reads `pgbackrest info --output=json` for one stanza.
pub fn parse_info(json: &str, stanza: &str) -> Result<Info, BackupError> {
    let v: Value = serde_json::from_str(json).map_err(|e| {
        BackupError::verify(
            Class::CouldNotRun,
            format!("pgbackrest info is not the JSON expected: {e}"),
        )
    })?;
    let st = v
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == stanza))
        .ok_or_else(|| {
            BackupError::verify(
                Class::CouldNotRun,
                format!("pgbackrest info knows no stanza `{stanza}`"),
            )
        })?;
    let code = st["status"]["code"].as_i64().unwrap_or(-1);
    let b = st["backup"].as_array().and_then(|b| b.last());
    let Some(b) = b else {
        return Err(BackupError::verify_hint(
            Class::CouldNotRun,
            format!(
                "stanza `{stanza}` has no backup (pgbackrest status {code}: {})",
                st["status"]["message"].as_str().unwrap_or("?")
            ),
            "take one with `pgbackrest --stanza=STANZA backup`",
        ));
    };
    let newest_segment = st["archive"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["max"].as_str().and_then(SegName::parse))
        .max();
    Ok(Info {
        label: b["label"].as_str().unwrap_or("").to_string(),
        start: epoch(&b["timestamp"]["start"]),
        stop: epoch(&b["timestamp"]["stop"]),
        stop_lsn: b["lsn"]["stop"]
            .as_str()
            .and_then(super::archive::parse_lsn),
        size: b["info"]["size"].as_u64().unwrap_or(0),
        newest_segment,
    })
}

fn base_args(config: Option<&Path>, stanza: &str) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(c) = config {
        a.push(format!("--config={}", c.display()));
    }
    a.push(format!("--stanza={stanza}"));
    // drctl reads pgBackRest's output; it writes no log files of its own.
    a.push("--log-level-file=off".into());
    a
}

pub async fn verify_pgbackrest(
    source: &Source,
    opts: &Options,
    root: &Path,
    ctx: &crate::action::StepContext,
    report: &mut Report,
) -> Result<(), BackupError> {
    let Kind::PgBackRest { stanza, config } = &source.kind else {
        return Err(BackupError::verify(
            Class::CouldNotRun,
            "not a pgbackrest source",
        ));
    };
    let deadline = ctx.deadline;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    };
    let bin = PathBuf::from("pgbackrest");
    let mut args = base_args(config.as_deref(), stanza);
    args.extend(["--output=json".to_string(), "info".to_string()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tool(&bin, &a, true, left().min(Duration::from_secs(120))).await?;
    if !out.ok {
        return Err(BackupError::verify_hint(
            Class::CouldNotRun,
            format!("pgbackrest info failed: {}", first_lines(&out.stderr, 3)),
            "check the stanza and pgbackrest_config of the source, and that the repository is mounted",
        ));
    }
    let info = parse_info(&out.stdout, stanza)?;
    report.backup = Some(format!("pgbackrest {stanza} {}", info.label));
    report.backup_label = Some(info.label.clone());
    report.backup_started_at = info.start.map(rfc3339);
    if let Some(t) = info.start {
        report.backup_age_s = secs_since(t);
        report.backup_age_method = Some("pgbackrest info timestamp.start".into());
    }
    check_space(root, info.size + info.size / 10 + (64 << 20))?;

    let port = pg::free_port().map_err(BackupError::lab)?;
    let s = Scratch::create(root, &ctx.run_id, port)?;
    report.scratch_dir = Some(s.dir.display().to_string());
    report.port = Some(port);
    let data = s.data();
    let lock = s.dir.join("lock");
    for d in [&data, &lock] {
        std::fs::create_dir(d).map_err(super::restore::io(format!("create {}", d.display())))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .map_err(super::restore::io("chmod"))?;
        pg::chown(d, pg::run_as().map_err(BackupError::lab)?).map_err(BackupError::lab)?;
    }
    // fetch = pgbackrest restore (it checks each file against the backup's manifest)
    let t = Instant::now();
    let mut args = base_args(config.as_deref(), stanza);
    args.extend([
        format!("--pg1-path={}", data.display()),
        format!("--lock-path={}", lock.display()),
        format!("--set={}", info.label),
        "--archive-mode=off".into(),
        "restore".into(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tool(&bin, &a, true, left()).await?;
    report.fetch_ms = Some(ms(t));
    if !out.ok {
        return Err(BackupError::verify(
            Class::CannotRestore,
            format!(
                "pgbackrest restore of {} failed: {}",
                info.label,
                first_lines(&out.stderr, 4)
            ),
        ));
    }
    report.checks.push(CheckResult {
        check: "pgbackrest restore".into(),
        ok: true,
        detail: "every file matched the backup's manifest".into(),
    });
    let mut get = base_args(config.as_deref(), stanza);
    // archive-get insists that the server's directory is its pg1-path.
    get.extend([
        format!("--pg1-path={}", data.display()),
        "archive-get".into(),
        "%f".into(),
        "\"%p\"".into(),
    ]);
    let exp = Expectation {
        restore_command: Some(format!("pgbackrest {}", get.join(" "))),
        archive: Some(ArchiveView {
            segments: Vec::new(),
            newest: info.newest_segment.map(|s| (s, None)),
            bytes: 0,
            what: format!("pgbackrest info: archive max of stanza {stanza}"),
        }),
        stop_lsn: info.stop_lsn,
    };
    super::instance::prove(s, source, opts, ctx, report, exp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_the_newest_backup_and_segment() {
        let j = r#"[{"name":"main","status":{"code":0,"message":"ok"},
          "archive":[{"id":"15-1","min":"000000010000000000000003","max":"00000001000000000000000A"}],
          "backup":[{"label":"20261201-100000F","timestamp":{"start":1764583200,"stop":1764583210},
                     "lsn":{"start":"0/3000028","stop":"0/3000100"},"info":{"size":31000000}},
                    {"label":"20261201-110000F","timestamp":{"start":1764586800,"stop":1764586810},
                     "lsn":{"start":"0/5000028","stop":"0/5000100"},"info":{"size":32000000}}]}]"#;
        let i = parse_info(j, "main").unwrap();
        assert_eq!(i.label, "20261201-110000F");
        assert_eq!(i.size, 32_000_000);
        assert_eq!(i.newest_segment, SegName::parse("00000001000000000000000A"));
        assert_eq!(i.stop_lsn, super::super::archive::parse_lsn("0/5000100"));
        assert!(parse_info(j, "other").is_err());
        let empty = r#"[{"name":"main","status":{"code":2,"message":"no valid backups"},"archive":[],"backup":[]}]"#;
        assert!(parse_info(empty, "main")
            .unwrap_err()
            .to_string()
            .contains("has no backup"));
    }
}
