//! The phases every physical restore shares once the data directory is
//! in place (see [`super::restore`] for the table): configure the scratch
//! server, start it (consistency), wait for the end of recovery, compare
//! the recovered point with the independent expectation, run the checks
//! that need a running server, then shut down cleanly and run
//! `pg_checksums`.

use std::time::{Duration, Instant, SystemTime};

use super::archive::{lsn_text, parse_lsn, ArchiveView};
use super::restore::{
    check, chown_tree, io, log_says_target_unreached, log_tail, ms, rfc3339, run_check_set,
    scratch_conf, scratch_server, secs_since, tool, unreached, CheckResult, Options, Report,
    SCRATCH_HBA,
};
use super::scratch::Scratch;
use super::source::Source;
use super::{BackupError, Class};
use crate::lab::pg;

/// What the restore is held to, from outside the restored copy.
pub struct Expectation {
    /// How recovery reads the archive (`None`: only the backup's own WAL).
    pub restore_command: Option<String>,
    /// The archive's newest segment (and the others, to name a gap).
    pub archive: Option<ArchiveView>,
    /// The backup's stop LSN, when no archive is read.
    pub stop_lsn: Option<u64>,
}

/// Configures, starts and checks the restored data directory in `s`.
pub async fn prove(
    mut s: Scratch,
    source: &Source,
    opts: &Options,
    ctx: &crate::action::StepContext,
    report: &mut Report,
    exp: Expectation,
) -> Result<(), BackupError> {
    let deadline = ctx.deadline;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    };
    let bin = pg::bindir().map_err(BackupError::lab)?;
    let who = pg::run_as().map_err(BackupError::lab)?;
    let data = s.data();
    let d = data.display().to_string();
    let port = s.port;
    let archive_view = exp.archive;
    let manifest_end = exp.stop_lsn;
    use std::os::unix::fs::PermissionsExt;
    // configure
    let sock = s.socket_dir();
    std::fs::create_dir(&sock).map_err(io(format!("create {}", sock.display())))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o700))
        .map_err(io("chmod socket dir"))?;
    pg::chown(&sock, who).map_err(BackupError::lab)?;
    let conf = scratch_conf(
        &s,
        exp.restore_command.as_deref(),
        opts.target_time.as_deref(),
    );
    {
        use std::io::Write;
        let p = data.join("postgresql.auto.conf");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io(format!("open {}", p.display())))?;
        f.write_all(conf.as_bytes())
            .map_err(io(format!("write {}", p.display())))?;
    }
    std::fs::write(data.join("pg_hba.conf"), SCRATCH_HBA).map_err(io("write pg_hba.conf"))?;
    let _ = std::fs::remove_file(data.join("standby.signal"));
    if exp.restore_command.is_some() {
        std::fs::write(data.join("recovery.signal"), "").map_err(io("write recovery.signal"))?;
    }
    chown_tree(&data, who)?;

    // start: returns at consistency
    let t = Instant::now();
    let log = s.log();
    let archive_end = archive_view
        .as_ref()
        .and_then(|v| v.newest)
        .and_then(|(_, t)| t)
        .map(rfc3339);
    let server = match pg::start_with("verify", &data, port, &log, &[]).await {
        Ok(server) => server,
        Err(e) => {
            if let Some(tt) = &opts.target_time {
                if log_says_target_unreached(&log) {
                    return Err(unreached(tt, archive_end.as_deref()));
                }
            }
            return Err(BackupError::verify(
                Class::CannotRestore,
                format!(
                    "the restored server did not start: {} (postgres {})",
                    log_tail(&log),
                    crate::diag::error_chain(&e),
                ),
            ));
        }
    };
    s.server = Some(server);
    let start_ms = ms(t);
    report.start_to_consistent_ms = Some(start_ms);

    // replay and promote: poll pg_is_in_recovery()
    let t = Instant::now();
    let srv = scratch_server(&s, source, &source.database);
    let client = loop {
        let gone = s
            .server
            .as_mut()
            .map(|x| matches!(x.child.try_wait(), Ok(Some(_))))
            .unwrap_or(true);
        if gone {
            if let Some(tt) = &opts.target_time {
                if log_says_target_unreached(&log) {
                    return Err(unreached(tt, archive_end.as_deref()));
                }
            }
            return Err(BackupError::verify(
                Class::CannotRestore,
                format!(
                    "the restored server stopped during recovery: {}",
                    log_tail(&log)
                ),
            ));
        }
        if Instant::now() > deadline {
            return Err(BackupError::verify(
                Class::CannotRestore,
                "recovery did not end within the step's timeout",
            ));
        }
        if let Ok(c) = srv.connect(Duration::from_secs(2)).await {
            if let Ok(Ok(row)) = tokio::time::timeout(
                Duration::from_secs(5),
                c.query_one("select pg_is_in_recovery()", &[]),
            )
            .await
            {
                let rec: bool = row.get(0);
                if !rec {
                    break c;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let replay_ms = ms(t);
    report.replay_promote_ms = Some(replay_ms);
    // Fetch and verify were measured by the kind that placed the files.
    report.restore_ms = Some(
        report.fetch_ms.unwrap_or(0) + report.verifybackup_ms.unwrap_or(0) + start_ms + replay_ms,
    );

    // the recovered point
    let q = "select pg_last_wal_replay_lsn()::text, extract(epoch from pg_last_xact_replay_timestamp())::float8, \
             (select setting::bigint from pg_settings where name = 'wal_segment_size'), current_setting('data_checksums') = 'on', \
             to_regclass('drctl_heartbeat') is not null";
    let row = tokio::time::timeout(Duration::from_secs(10), client.query_one(q, &[]))
        .await
        .map_err(|_| {
            BackupError::verify(
                Class::CannotRestore,
                "the restored server did not answer within 10s",
            )
        })?
        .map_err(|e| {
            BackupError::verify(
                Class::CannotRestore,
                format!("query the restored server: {e}"),
            )
        })?;
    let replay_lsn: Option<String> = row.get(0);
    let xact_at: Option<f64> = row.get(1);
    let seg_size: i64 = row.get(2);
    let checksums: bool = row.get(3);
    let has_hb: bool = row.get(4);
    let replay = replay_lsn.as_deref().and_then(parse_lsn);
    report.replay_lsn = replay_lsn.clone();
    let epoch = |f: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(f.max(0.0));
    report.recovered_xact_at = xact_at.map(|f| rfc3339(epoch(f)));
    let mut recovered_hb: Option<(i64, f64)> = None;
    if has_hb {
        if let Ok(Ok(Some(r))) = tokio::time::timeout(
            Duration::from_secs(10),
            client.query_opt("select id, extract(epoch from at)::float8 from drctl_heartbeat order by id desc limit 1", &[]),
        )
        .await
        {
            recovered_hb = Some((r.get(0), r.get(1)));
        }
    }
    report.recovered_heartbeat_id = recovered_hb.map(|h| h.0);
    report.recovered_heartbeat_at = recovered_hb.map(|h| rfc3339(epoch(h.1)));
    let point_time = recovered_hb.map(|h| h.1).or(xact_at);
    report.recovery_point_age_s = point_time.and_then(|f| secs_since(epoch(f)));

    // against the independent expectation
    let seg_size = seg_size.max(1) as u64;
    let mut old_point: Option<String> = None;
    if opts.target_time.is_none() {
        if let (Some(view), Some(replay)) = (&archive_view, replay) {
            if let Some((newest, archived_at)) = view.newest {
                let expected = newest.start_lsn(seg_size);
                report.expected_method =
                    Some(format!("newest archived WAL segment ({})", view.what));
                report.expected_lsn = Some(lsn_text(expected + seg_size));
                let gap = (expected + seg_size).saturating_sub(replay);
                report.rpo_gap_bytes = Some(if replay >= expected { 0 } else { gap });
                if let (Some(x), Some(archived_at)) = (xact_at, archived_at) {
                    if let Ok(d) = archived_at.duration_since(epoch(x)) {
                        report.rpo_gap_s = Some(d.as_secs_f64());
                        report.rpo_gap_method = Some("newest archived segment's archive time minus the last replayed transaction".into());
                    }
                }
                if replay < expected {
                    let missing = view
                        .segments
                        .iter()
                        .filter(|sg| sg.timeline == newest.timeline)
                        .map(|sg| sg.number(seg_size))
                        .collect::<Vec<_>>();
                    let first_gap = missing
                        .windows(2)
                        .find(|w| w[1] != w[0] + 1)
                        .map(|w| w[0] + 1);
                    old_point = Some(format!(
                        "recovery stopped at {} but the archive holds WAL up to {} ({} bytes not replayed{})",
                        lsn_text(replay),
                        lsn_text(expected + seg_size),
                        gap,
                        first_gap
                            .map(|n| format!("; the archive has no segment {:08X}{:08X}{:08X}", newest.timeline, n / (0x1_0000_0000 / seg_size), n % (0x1_0000_0000 / seg_size)))
                            .unwrap_or_default()
                    ));
                }
            }
        } else if let (None, Some(end), Some(replay)) = (&archive_view, manifest_end, replay) {
            report.expected_method =
                Some("the backup's stop LSN (backup_manifest WAL-Ranges)".into());
            report.expected_lsn = Some(lsn_text(end));
            report.rpo_gap_bytes = Some(end.saturating_sub(replay));
            if replay < end {
                old_point = Some(format!(
                    "recovery stopped at {} before the backup's end {}",
                    lsn_text(replay),
                    lsn_text(end)
                ));
            }
        }
    }
    if let (Some(primary), Some((rid, rat))) = (&opts.primary, recovered_hb) {
        if let Ok(pc) = primary.connect(Duration::from_secs(5).min(left())).await {
            if let Ok(Ok(Some(r))) = tokio::time::timeout(
                Duration::from_secs(10),
                pc.query_opt("select id, extract(epoch from at)::float8 from drctl_heartbeat order by id desc limit 1", &[]),
            )
            .await
            {
                let (pid, pat): (i64, f64) = (r.get(0), r.get(1));
                report.rpo_gap_rows = Some(pid - rid);
                report.rpo_gap_s = Some((pat - rat).max(0.0));
                report.rpo_gap_method = Some("the primary's newest heartbeat minus the newest recovered heartbeat (both the primary's clock)".into());
                if let Some(max) = opts.max_rpo_gap {
                    if pat - rat > max.as_secs_f64() && old_point.is_none() {
                        old_point = Some(format!(
                            "the newest recovered heartbeat is row {rid}, {:.1}s and {} rows behind the primary's newest (row {pid}; limit {})",
                            pat - rat,
                            pid - rid,
                            crate::duration::format_duration(max)
                        ));
                    }
                }
            }
        }
    }
    if let Some(why) = old_point {
        let rows = report
            .rpo_gap_rows
            .zip(report.recovered_heartbeat_id)
            .map(|(g, id)| {
                format!("; newest recovered heartbeat row {id}, {g} rows behind the primary")
            })
            .unwrap_or_default();
        return Err(BackupError::verify_hint(
            Class::OldPoint,
            format!("restored to an old point: {why}{rows}, although the server itself recovered and promoted without error"),
            "look for a missing or damaged segment in the WAL archive and check archive_command; take a new base backup",
        ));
    }
    drop(client);

    // checks while up
    let sock_s = s.socket_dir().display().to_string();
    let port_s = port.to_string();
    if opts.amcheck {
        let mut args = vec![
            "-h",
            sock_s.as_str(),
            "-p",
            port_s.as_str(),
            "-U",
            source.superuser.as_str(),
            "--all",
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
        run_check_set(
            report,
            set,
            &scratch_server(&s, source, &source.database),
            ctx,
        )
        .await?;
    }
    if opts.full_read {
        let out = tool(
            &bin.join("pg_dump"),
            &[
                "--no-sync",
                "-f",
                "/dev/null",
                "-h",
                &sock_s,
                "-p",
                &port_s,
                "-U",
                &source.superuser,
                "-d",
                &source.database,
            ],
            true,
            left(),
        )
        .await?;
        check(report, "pg_dump", out.ok, &out.stderr)?;
    }

    // clean shutdown, then checksums
    let clean = s.stop(Duration::from_secs(60).min(left())).await;
    if checksums {
        if !clean {
            return Err(BackupError::verify(
                Class::CannotRestore,
                "the restored server did not shut down cleanly, so pg_checksums cannot run",
            ));
        }
        let out = tool(
            &bin.join("pg_checksums"),
            &["--check", "-D", &d],
            true,
            left(),
        )
        .await?;
        check(
            report,
            "pg_checksums",
            out.ok,
            &format!("{}{}", out.stderr, out.stdout),
        )?;
    } else {
        report.checks.push(CheckResult {
            check: "pg_checksums".into(),
            ok: true,
            detail: "not run: the cluster has no data checksums".into(),
        });
    }
    // Removing the copy is part of the run: off the async threads.
    let _ = tokio::task::spawn_blocking(move || drop(s)).await;
    Ok(())
}
