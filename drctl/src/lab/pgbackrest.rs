//! `drctl lab backup --kind pgbackrest`: a pgBackRest stanza `lab` for the
//! lab primary, its repository, configuration and logs under the lab's
//! data root (`<root>/pgbackrest`), and a full backup into it.
//!
//! pgBackRest needs three things the plain lab does not have: a Unix
//! socket to reach the primary (`pg1-socket-path`: the lab's socket
//! directory, see [`super::pg::socket_dir`]), a password for that socket
//! connection (a libpq password file of its own, whose host is the socket
//! directory: what a socket connection outside the default one matches), and the WAL in its repository (its backup
//! waits for the backup's last segment to arrive through `archive-push`).
//! So the primary's `archive_command` is extended, on the first such
//! backup, to push to pgBackRest after the copy into the lab's archive
//! directory, which `drctl lab backup` (basebackup) keeps using. The copy
//! is skipped when the file is already there, so a push that failed is
//! retried without the copy failing first.
//!
//! The environment file gains the source `lab-pgbackrest`, so
//! `drctl verify-backup --env STATE/lab/env.yaml --source lab-pgbackrest`
//! restores it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::pg::{self, ClusterSpec, LabError};

pub const STANZA: &str = "lab";
/// The environment's name for this backup source.
pub const SOURCE: &str = "lab-pgbackrest";

pub fn home(spec: &ClusterSpec) -> PathBuf {
    spec.root.join("pgbackrest")
}

pub fn config_file(spec: &ClusterSpec) -> PathBuf {
    home(spec).join("pgbackrest.conf")
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// Runs pgBackRest as the server user with its own password file; returns
/// its standard output.
async fn pgbackrest(
    spec: &ClusterSpec,
    args: &[&str],
    limit: Duration,
) -> Result<String, LabError> {
    let who = pg::run_as()?;
    let mut c = pg::command(Path::new("pgbackrest"), who);
    c.arg(format!("--config={}", config_file(spec).display()))
        .arg(format!("--stanza={STANZA}"))
        .args(args)
        .env("PGPASSFILE", home(spec).join("pgpass"))
        .current_dir("/")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("pgbackrest {}", args.last().copied().unwrap_or(""));
    let out = tokio::time::timeout(limit, c.output())
        .await
        .map_err(|_| LabError::Command {
            what: what.clone(),
            detail: format!("timed out after {limit:?}"),
        })?
        .map_err(|e| LabError::Command {
            what: what.clone(),
            detail: format!("cannot run pgbackrest ({e}); install it (scripts/install-deps.sh)"),
        })?;
    if !out.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let detail = text
            .lines()
            .rfind(|l| l.contains("ERROR"))
            .or_else(|| text.lines().next_back())
            .unwrap_or("")
            .to_string();
        return Err(LabError::Command { what, detail });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The primary's `archive_command` pushing to pgBackRest too.
pub fn archive_command(spec: &ClusterSpec) -> String {
    format!(
        "(test -f {a}/%f || cp %p {a}/%f) && pgbackrest --config={c} --stanza={STANZA} archive-push %p",
        a = pg::wal_archive(spec).display(),
        c = config_file(spec).display()
    )
}

/// Writes the configuration, turns on pushing, creates the stanza (again:
/// it is idempotent) and takes a full backup; returns its label.
pub async fn backup(spec: &ClusterSpec, data: &Path, port: u16) -> Result<String, LabError> {
    let who = pg::run_as()?;
    let h = home(spec);
    for d in ["", "repo", "log", "lock", "spool"] {
        let p = h.join(d);
        std::fs::create_dir_all(&p).map_err(io(format!("create {}", p.display())))?;
        pg::chown(&p, who)?;
    }
    let conf = format!(
        "# Written by `drctl lab backup --kind pgbackrest`.\n[global]\nrepo1-path={h}/repo\nrepo1-retention-full=2\n\
         log-path={h}/log\nlock-path={h}/lock\nspool-path={h}/spool\nlog-level-file=off\nlog-level-console=warn\n\
         start-fast=y\narchive-timeout=60\n\n[{STANZA}]\npg1-path={d}\npg1-port={port}\npg1-socket-path={s}\npg1-user={u}\n",
        h = h.display(),
        d = data.display(),
        s = pg::socket_dir(spec).display(),
        u = spec.superuser
    );
    pg::write_file(&config_file(spec), &conf, 0o600, who)?;
    let password = std::fs::read_to_string(&spec.password_file)
        .map_err(io(format!("read {}", spec.password_file.display())))?;
    pg::write_file(
        &h.join("pgpass"),
        // A socket connection outside the default directory matches a
        // password file line by that directory.
        &format!(
            "{}:{port}:*:{}:{}\n",
            pg::socket_dir(spec).display(),
            spec.superuser,
            password.trim()
        ),
        0o600,
        who,
    )?;
    let cmd = archive_command(spec);
    let conf_file = data.join("postgresql.conf");
    let current =
        std::fs::read_to_string(&conf_file).map_err(io(format!("read {}", conf_file.display())))?;
    if !current.contains(&cmd) {
        // The last setting in the file wins; reloading applies it.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf_file)
            .map_err(io(format!("open {}", conf_file.display())))?;
        f.write_all(
            format!(
                "# drctl lab backup --kind pgbackrest\narchive_command = '{}'\n",
                cmd.replace('\'', "''")
            )
            .as_bytes(),
        )
        .map_err(io(format!("write {}", conf_file.display())))?;
        let bin = pg::bindir()?;
        let mut c = pg::command(&bin.join("pg_ctl"), who);
        c.arg("-D").arg(data).args(["reload", "-s"]);
        let out = tokio::time::timeout(Duration::from_secs(30), c.output())
            .await
            .map_err(|_| LabError::Command {
                what: "pg_ctl reload".into(),
                detail: "timed out after 30s".into(),
            })?
            .map_err(io("pg_ctl reload"))?;
        if !out.status.success() {
            return Err(LabError::Command {
                what: "pg_ctl reload".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    pgbackrest(spec, &["stanza-create"], Duration::from_secs(120)).await?;
    pgbackrest(spec, &["--type=full", "backup"], Duration::from_secs(900)).await?;
    let info = pgbackrest(spec, &["--output=json", "info"], Duration::from_secs(60)).await?;
    let v: serde_json::Value = serde_json::from_str(&info).map_err(|e| LabError::Command {
        what: "pgbackrest info".into(),
        detail: format!("not the JSON expected: {e}"),
    })?;
    v[0]["backup"]
        .as_array()
        .and_then(|b| b.last())
        .and_then(|b| b["label"].as_str())
        .map(str::to_string)
        .ok_or_else(|| LabError::Command {
            what: "pgbackrest info".into(),
            detail: "the backup just taken is not listed".into(),
        })
}

/// The environment's source entry for the stanza.
pub fn env_source(spec: &ClusterSpec) -> String {
    format!(
        "      {SOURCE}: {{kind: pgbackrest, stanza: {STANZA}, pgbackrest_config: \"{}\", superuser: {}, database: postgres, max_age: 26h}}",
        config_file(spec).display(),
        spec.superuser
    )
}

/// Adds [`env_source`] to the lab's environment file, after its `lab:`
/// basebackup source, unless it is there already.
pub fn add_to_env(env_file: &Path, spec: &ClusterSpec) -> Result<(), LabError> {
    let text =
        std::fs::read_to_string(env_file).map_err(io(format!("read {}", env_file.display())))?;
    if text.contains(&format!("      {SOURCE}:")) {
        return Ok(());
    }
    let mut out = String::with_capacity(text.len() + 200);
    let mut added = false;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if !added && line.starts_with("      lab: {kind: basebackup") {
            out.push_str(&env_source(spec));
            out.push('\n');
            added = true;
        }
    }
    if !added {
        return Err(LabError::Other(format!(
            "{} has no `lab` backup source to add {SOURCE} beside (was it edited?)",
            env_file.display()
        )));
    }
    let tmp = env_file.with_extension("yaml.tmp");
    std::fs::write(&tmp, out).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, env_file).map_err(io(format!("rename {}", tmp.display())))
}
