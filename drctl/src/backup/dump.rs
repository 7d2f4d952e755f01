//! The `pg_dump` kind: a custom-format archive restored with `pg_restore`
//! into a fresh scratch cluster (initdb), then the source's check set (row
//! counts, hashes) and `pg_amcheck` run against it. A logical dump has no
//! WAL position, so no recovered point is compared; its age is the
//! archive file's modification time.

use std::path::Path;
use std::time::{Duration, Instant};

use super::restore::{self, check, first_lines, io, ms, tool, Options, Report};
use super::scratch::Scratch;
use super::source::{Kind, Source};
use super::{BackupError, Class};
use crate::lab::pg;

pub async fn verify_dump(
    source: &Source,
    opts: &Options,
    root: &Path,
    ctx: &crate::action::StepContext,
    report: &mut Report,
) -> Result<(), BackupError> {
    let Kind::PgDump {
        dump_file,
        database,
    } = &source.kind
    else {
        return Err(BackupError::verify(
            Class::CouldNotRun,
            "not a pg_dump source",
        ));
    };
    let deadline = ctx.deadline;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    };
    let bin = pg::bindir().map_err(BackupError::lab)?;
    let who = pg::run_as().map_err(BackupError::lab)?;
    let md = std::fs::metadata(dump_file).map_err(|e| {
        BackupError::verify_hint(
            Class::CouldNotRun,
            format!("cannot read the dump {}: {e}", dump_file.display()),
            "check dump_file in the environment file and that the backup volume is mounted",
        )
    })?;
    report.backup = Some(dump_file.display().to_string());
    if let Ok(t) = md.modified() {
        report.backup_age_s = restore::secs_since(t);
        report.backup_started_at = Some(restore::rfc3339(t));
        report.backup_age_method = Some("the dump file's modification time".into());
    }
    // A custom-format dump is compressed: budget four times its size.
    restore::check_space(root, md.len() * 4 + (64 << 20))?;

    let port = pg::free_port().map_err(BackupError::lab)?;
    let mut s = Scratch::create(root, &ctx.run_id, port)?;
    report.scratch_dir = Some(s.dir.display().to_string());
    report.port = Some(port);
    let data = s.data();
    let d = data.display().to_string();
    let t = Instant::now();
    let out = tool(
        &bin.join("initdb"),
        &[
            "-D",
            &d,
            "-U",
            &source.superuser,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-instructions",
            "--no-sync",
        ],
        true,
        left(),
    )
    .await?;
    if !out.ok {
        return Err(BackupError::verify(
            Class::CouldNotRun,
            format!(
                "initdb of the scratch cluster failed: {}",
                first_lines(&out.stderr, 3)
            ),
        ));
    }
    let sock = s.socket_dir();
    std::fs::create_dir(&sock).map_err(io(format!("create {}", sock.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o700))
        .map_err(io("chmod socket dir"))?;
    pg::chown(&sock, who).map_err(BackupError::lab)?;
    {
        use std::io::Write;
        let p = data.join("postgresql.auto.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .map_err(io(format!("open {}", p.display())))?;
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nlogging_collector = off\n",
            sock.display()
        );
        f.write_all(conf.as_bytes())
            .map_err(io(format!("write {}", p.display())))?;
    }
    pg::write_file(&data.join("pg_hba.conf"), restore::SCRATCH_HBA, 0o600, who)
        .map_err(BackupError::lab)?;
    let server = pg::start("verify", &data, port, &s.log())
        .await
        .map_err(|e| {
            BackupError::verify(
                Class::CouldNotRun,
                format!(
                    "the scratch cluster did not start: {}",
                    crate::diag::error_chain(&e)
                ),
            )
        })?;
    s.server = Some(server);
    report.start_to_consistent_ms = Some(ms(t));

    let admin = restore::scratch_server(&s, source, "postgres");
    let c = admin.connect(Duration::from_secs(5)).await.map_err(|e| {
        BackupError::verify(
            Class::CouldNotRun,
            format!(
                "connect to the scratch cluster: {}",
                crate::diag::error_chain(&e)
            ),
        )
    })?;
    if database != "postgres" {
        tokio::time::timeout(
            Duration::from_secs(30),
            c.batch_execute(&format!(
                "create database \"{}\"",
                database.replace('"', "\"\"")
            )),
        )
        .await
        .map_err(|_| {
            BackupError::verify(
                Class::CouldNotRun,
                "create database did not finish within 30s",
            )
        })?
        .map_err(|e| {
            BackupError::verify(
                Class::CouldNotRun,
                format!("create database {database}: {e}"),
            )
        })?;
    }
    drop(c);

    // fetch = pg_restore into the scratch database
    let t = Instant::now();
    let sock_s = sock.display().to_string();
    let port_s = port.to_string();
    let f = dump_file.display().to_string();
    let out = tool(
        &bin.join("pg_restore"),
        &[
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "-h",
            &sock_s,
            "-p",
            &port_s,
            "-U",
            &source.superuser,
            "-d",
            database,
            &f,
        ],
        false,
        left(),
    )
    .await?;
    let fetch_ms = ms(t);
    report.fetch_ms = Some(fetch_ms);
    report.restore_ms = Some(fetch_ms + report.start_to_consistent_ms.unwrap_or(0));
    if !out.ok {
        return Err(BackupError::verify(
            Class::CannotRestore,
            format!("pg_restore of {f} failed: {}", first_lines(&out.stderr, 4)),
        ));
    }
    report.checks.push(restore::CheckResult {
        check: "pg_restore".into(),
        ok: true,
        detail: "restored without error".into(),
    });

    if opts.amcheck {
        let mut args = vec![
            "-h",
            sock_s.as_str(),
            "-p",
            port_s.as_str(),
            "-U",
            source.superuser.as_str(),
            "-d",
            database.as_str(),
            "--install-missing",
        ];
        if opts.heapallindexed {
            args.push("--heapallindexed");
        }
        let out = tool(&bin.join("pg_amcheck"), &args, true, left()).await?;
        check(
            report,
            "pg_amcheck",
            out.ok,
            &format!("{}{}", out.stdout, out.stderr),
        )?;
    }
    if let Some(set) = &source.check_set {
        restore::run_check_set(
            report,
            set,
            &restore::scratch_server(&s, source, database),
            ctx,
        )
        .await?;
    }
    s.stop(Duration::from_secs(30).min(left())).await;
    let _ = tokio::task::spawn_blocking(move || drop(s)).await;
    Ok(())
}
