//! `postgres.verify_backup`: restore the environment's backup sources
//! into scratch instances and prove them (see [`super::restore`]).
//!
//! - `validate`: the parameters and each source, purely;
//! - `preflight`: read-only: the tools are installed, the backup and the
//!   archive are visible, the scratch area has room;
//! - `execute`: idempotent: a re-run removes this run's own scratch
//!   directory (and any leftover of a dead run it can prove is drctl's)
//!   and restores again; the production archive and backup are only read.
//!
//! Not read-only (it starts servers and writes the scratch area) and not a
//! proof of recovery: a restorable backup says nothing about whether the
//! service works.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::restore::{self, Options, Report};
use super::scratch;
use super::source::{self, Kind, Source};
use super::{BackupError, Class};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::metrics::{Gauge, Labels};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct PgVerifyBackup;

pub struct Params {
    sources: Vec<Source>,
    only: Option<String>,
    opts: Options,
    scratch: PathBuf,
    environment: String,
    pushgateway: Option<String>,
    textfile: Option<PathBuf>,
}

/// A string parameter where `""` (a runbook parameter's default) means unset.
fn opt_str(ctx: &mut Ctx<'_>, r: &mut MapReader<'_>, key: &'static str) -> Option<String> {
    r.opt(key)
        .filter(|n| !ctx.deferred(n))
        .and_then(|n| ctx.string(n, key))
        .filter(|s| !s.is_empty())
}

fn opt_bool(ctx: &mut Ctx<'_>, r: &mut MapReader<'_>, key: &'static str, default: bool) -> bool {
    r.opt(key)
        .filter(|n| !ctx.deferred(n))
        .and_then(|n| ctx.boolean(n, key))
        .unwrap_or(default)
}

impl PgVerifyBackup {
    fn selected(p: &Params) -> Result<Vec<&Source>, BackupError> {
        match &p.only {
            None => Ok(p.sources.iter().collect()),
            Some(name) => {
                let s: Vec<&Source> = p.sources.iter().filter(|s| &s.name == name).collect();
                if s.is_empty() {
                    let names: Vec<&str> = p.sources.iter().map(|s| s.name.as_str()).collect();
                    return Err(BackupError::verify_hint(
                        Class::CouldNotRun,
                        format!("no backup source `{name}`"),
                        format!("sources: {}", names.join(", ")),
                    ));
                }
                Ok(s)
            }
        }
    }
}

/// `name` found in `$PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
}

/// A backup tool's binary on `$PATH` and, when the source names one, its
/// configuration file readable: what a read-only preflight can check
/// without running the tool.
fn tool_and_config(tool: &str, config: Option<&std::path::Path>) -> Result<PathBuf, BackupError> {
    let bin = on_path(tool)
        .ok_or_else(|| BackupError::verify(Class::CouldNotRun, format!("{tool} is not on PATH")))?;
    if let Some(c) = config {
        std::fs::metadata(c).map_err(|e| {
            BackupError::verify(
                Class::CouldNotRun,
                format!("cannot read {}: {e}", c.display()),
            )
        })?;
    }
    Ok(bin)
}

/// The metrics of one source's verification. A figure not measured is
/// left out; the success timestamp only on success (push-add keeps the
/// previous one otherwise).
pub fn gauges(environment: &str, r: &Report, outcome: &Result<(), BackupError>) -> Vec<Gauge> {
    let labels = Labels::from([
        ("environment".to_string(), environment.to_string()),
        ("source".to_string(), r.source.clone()),
    ]);
    let ok = outcome.is_ok();
    let mut g = vec![Gauge::new(
        "drctl_backup_verify_success",
        "1 when the newest backup restored to the expected point and passed every check",
    )
    .sample(&labels, if ok { 1.0 } else { 0.0 })];
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        g.push(
            Gauge::new(
                "drctl_backup_verify_last_success_timestamp_seconds",
                "when a verification of this source last succeeded",
            )
            .sample(&labels, now.floor()),
        );
    }
    let mut opt = |name: &str, help: &str, v: Option<f64>| {
        let mut x = Gauge::new(name, help);
        if let Some(v) = v {
            x = x.sample(&labels, v);
        }
        g.push(x);
    };
    opt(
        "drctl_backup_restore_duration_seconds",
        "fetch/extract + pg_verifybackup + start + replay and promote",
        r.restore_ms.map(|m| m as f64 / 1000.0),
    );
    opt(
        "drctl_backup_age_seconds",
        "age of the newest backup",
        r.backup_age_s,
    );
    opt(
        "drctl_backup_rpo_gap_seconds",
        "how far the recovered point is behind the expectation (the backup's RPO exposure)",
        r.rpo_gap_s,
    );
    let mut checks = Gauge::new(
        "drctl_backup_check_failed",
        "1 for the check that failed the verification, 0 for checks that passed",
    );
    for c in &r.checks {
        let mut l = labels.clone();
        l.insert("check".into(), c.check.clone());
        checks = checks.sample(&l, if c.ok { 0.0 } else { 1.0 });
    }
    if let (Err(e), None) = (outcome, &r.failed_check) {
        // A failure outside the named checks: restore, point, age.
        let mut l = labels.clone();
        l.insert(
            "check".into(),
            match e.class() {
                Class::CannotRestore => "restore",
                Class::OldPoint => "recovery_point",
                Class::TooOld => "backup_age",
                Class::CouldNotRun => "verification",
                Class::CheckFailed => "check",
            }
            .into(),
        );
        checks = checks.sample(&l, 1.0);
    }
    g.push(checks);
    g
}

async fn verify_one(
    source: &Source,
    p: &Params,
    ctx: &StepContext,
) -> (Report, Result<(), BackupError>) {
    let mut report = Report {
        source: source.name.clone(),
        kind: source.kind_name().into(),
        ..Default::default()
    };
    let res = match &source.kind {
        Kind::BaseBackup { .. } => {
            restore::verify_basebackup(source, &p.opts, &p.scratch, ctx, &mut report).await
        }
        Kind::PgBackRest { .. } => {
            super::pgbackrest::verify_pgbackrest(source, &p.opts, &p.scratch, ctx, &mut report)
                .await
        }
        Kind::Barman { .. } => {
            super::barman::verify_barman(source, &p.opts, &p.scratch, ctx, &mut report).await
        }
        Kind::PgDump { .. } => {
            super::dump::verify_dump(source, &p.opts, &p.scratch, ctx, &mut report).await
        }
    };
    let res = res.and_then(|()| match (source.max_age, report.backup_age_s) {
        (Some(max), Some(age)) if age > max.as_secs_f64() => Err(BackupError::verify_hint(
            Class::TooOld,
            format!(
                "the newest backup of `{}` is {} old, more than its max_age {}",
                source.name,
                crate::duration::format_duration(Duration::from_secs(age as u64)),
                crate::duration::format_duration(max)
            ),
            "check the backup schedule (CronJob, pgBackRest/Barman timers)",
        )),
        (Some(_), None) => Err(BackupError::verify(
            Class::TooOld,
            format!("the age of `{}`'s newest backup could not be measured, so max_age cannot be shown met", source.name),
        )),
        _ => Ok(()),
    });
    (report, res)
}

#[async_trait]
impl ActionKind for PgVerifyBackup {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "postgres.verify_backup"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // It reads the backups and the archive (byte-identical afterwards,
        // tested) and writes only its own scratch instance, never a server
        // of the environment. So its run takes the shared lease: an hours-
        // long restore test must never hold off an incident failover.
        true
    }
    fn summary(&self) -> &'static str {
        "Restore backups into a scratch instance and prove them (recovered point, amcheck, checks, checksums)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["verified", "sources", "leftovers_removed"]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "postgres.verify_backup")?;
        let sources = r.req(ctx, "backups").and_then(|n| {
            if ctx.deferred(n) {
                Some(Vec::new())
            } else {
                source::decode_backups(ctx, n, "backups")
            }
        });
        let only = opt_str(ctx, &mut r, "source");
        let target_time = opt_str(ctx, &mut r, "target_time");
        if let (Some(t), Some(n)) = (&target_time, with.get("target_time")) {
            if humantime::parse_rfc3339_weak(t).is_err() {
                ctx.error(
                    "E-VALUE",
                    n,
                    format!("target_time: `{t}` is not a time"),
                    Some("write it as 2026-12-01T19:30:00Z (UTC)".into()),
                );
            }
        }
        let scratch = r
            .req(ctx, "scratch")
            .and_then(|n| ctx.string(n, "scratch"))
            .filter(|s| !s.is_empty());
        let environment = opt_str(ctx, &mut r, "environment").unwrap_or_default();
        let primary = match r.opt("primary") {
            Some(n) if ctx.deferred(n) || n.as_str() == Some("") => None,
            Some(n) => crate::pgconn::PgServer::decode(ctx, n, "primary"),
            None => None,
        };
        let max_rpo_gap = match r.opt("max_rpo_gap") {
            Some(n) if n.as_str() == Some("") || ctx.deferred(n) => None,
            Some(n) => ctx.duration(n, "max_rpo_gap"),
            None => None,
        };
        let amcheck = opt_bool(ctx, &mut r, "amcheck", true);
        let heapallindexed = opt_bool(ctx, &mut r, "heapallindexed", false);
        let full_read = opt_bool(ctx, &mut r, "full_read", false);
        let pushgateway = opt_str(ctx, &mut r, "pushgateway");
        let textfile = opt_str(ctx, &mut r, "metrics_textfile").map(PathBuf::from);
        r.finish(ctx);
        Some(Params {
            sources: sources?,
            only,
            opts: Options {
                target_time,
                amcheck,
                heapallindexed,
                full_read,
                primary,
                max_rpo_gap,
            },
            scratch: PathBuf::from(scratch?),
            environment,
            pushgateway,
            textfile,
        })
    }
    fn describe(&self, params: &Value) -> String {
        let which = params["source"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("every source");
        format!(
            "restore and verify backups ({which}) in {}",
            params["scratch"].as_str().unwrap_or("the scratch area")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        _ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let mut lines = Vec::new();
        let mut verdict = crate::action::Verdict::Passes;
        let sources = match Self::selected(p) {
            Ok(s) => s,
            Err(e) => return Ok(Preflight::problem(e.to_string())),
        };
        let bin = match crate::lab::pg::bindir() {
            Ok(b) => b,
            Err(e) => return Ok(Preflight::problem(e.to_string())),
        };
        for tool in [
            "postgres",
            "pg_verifybackup",
            "pg_amcheck",
            "pg_checksums",
            "pg_restore",
            "initdb",
        ] {
            if !bin.join(tool).exists() {
                lines.push(format!("{tool} missing from {}", bin.display()));
                verdict = crate::action::Verdict::Problem;
            }
        }
        for s in sources {
            let line = match &s.kind {
                Kind::BaseBackup {
                    backup_dir,
                    wal_archive,
                } => restore::locate_backup(backup_dir).and_then(|b| {
                    let (bytes, _) = restore::manifest_bytes(&b)?;
                    restore::check_space(&p.scratch, bytes + bytes / 10 + (64 << 20))?;
                    if let Some(a) = wal_archive {
                        super::archive::scan(a).map_err(|e| {
                            BackupError::verify(
                                Class::CouldNotRun,
                                format!("cannot read the WAL archive {}: {e}", a.display()),
                            )
                        })?;
                    }
                    Ok(format!(
                        "`{}`: backup {} ({} MiB), room in {}",
                        s.name,
                        b.display(),
                        bytes >> 20,
                        p.scratch.display()
                    ))
                }),
                // Preflight runs no command: the binary and its
                // configuration are looked at, `pgbackrest info` is not run.
                Kind::PgBackRest { stanza, config } => {
                    tool_and_config("pgbackrest", config.as_deref()).map(|b| {
                        format!(
                            "`{}`: pgbackrest stanza {stanza} ({}); the newest backup is found when the step runs",
                            s.name,
                            b.display()
                        )
                    })
                }
                // Like pgbackrest: the binary and its configuration only.
                Kind::Barman { server, config } => {
                    tool_and_config("barman", config.as_deref()).map(|b| {
                        format!(
                            "`{}`: barman server {server} ({}); the newest backup is found when the step runs",
                            s.name,
                            b.display()
                        )
                    })
                }
                Kind::PgDump { dump_file, .. } => std::fs::metadata(dump_file)
                    .map_err(|e| {
                        BackupError::verify(
                            Class::CouldNotRun,
                            format!("cannot read {}: {e}", dump_file.display()),
                        )
                    })
                    .and_then(|m| {
                        restore::check_space(&p.scratch, m.len() * 4 + (64 << 20))?;
                        Ok(format!(
                            "`{}`: dump {} ({} MiB)",
                            s.name,
                            dump_file.display(),
                            m.len() >> 20
                        ))
                    }),
            };
            match line {
                Ok(l) => lines.push(l),
                Err(e) => {
                    lines.push(format!("`{}`: {e}", s.name));
                    verdict = crate::action::Verdict::Problem;
                }
            }
        }
        Ok(Preflight::new(lines, verdict))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let sources = Self::selected(p).map_err(BackupError::into_action_error)?;
        // Leftovers of runs killed half-way, provably drctl's.
        let sweep = scratch::sweep(&p.scratch).map_err(BackupError::into_action_error)?;
        if !sweep.removed.is_empty() {
            ctx.progress(format!(
                "removed {} leftover scratch instance(s): {}",
                sweep.removed.len(),
                sweep.removed.join(", ")
            ));
        }
        let mut reports = Vec::new();
        let mut first_err: Option<BackupError> = None;
        for s in sources {
            ctx.progress(format!("restoring `{}` ({})", s.name, s.kind_name()));
            let (report, res) = verify_one(s, p, ctx).await;
            let g = gauges(&p.environment, &report, &res);
            if let Some(url) = &p.pushgateway {
                let grouping = Labels::from([
                    ("environment".to_string(), p.environment.clone()),
                    ("source".to_string(), s.name.clone()),
                ]);
                if let Err(e) = crate::metrics::push_add(
                    url,
                    "drctl_backup_verify",
                    &grouping,
                    &g,
                    Duration::from_secs(10),
                )
                .await
                {
                    ctx.progress(format!(
                        "metrics not pushed: {}",
                        crate::diag::error_chain(&e)
                    ));
                    if res.is_ok() && first_err.is_none() {
                        first_err = Some(BackupError::verify(
                            Class::CouldNotRun,
                            format!(
                                "the metrics could not be pushed: {}",
                                crate::diag::error_chain(&e)
                            ),
                        ));
                    }
                }
            }
            if let Some(path) = &p.textfile {
                if let Err(e) = crate::metrics::write_textfile(path, &g) {
                    if first_err.is_none() {
                        first_err = Some(BackupError::verify(
                            Class::CouldNotRun,
                            crate::diag::error_chain(&e),
                        ));
                    }
                }
            }
            let mut v = serde_json::to_value(&report).unwrap_or(Value::Null);
            v["ok"] = json!(res.is_ok());
            if let Err(e) = &res {
                v["error"] = json!(crate::diag::error_chain(e));
            }
            reports.push(v);
            if let Err(e) = res {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
        if let Some(e) = first_err {
            // The figures of every source stay visible in the error's log line.
            // A failed verification's figures (the gap of an old point,
            // the phases that ran) are journaled as the step's checkpoint.
            let _ = ctx.checkpoint(&json!({"sources": reports})).await;
            return Err(e.into_action_error());
        }
        let mut o = Outputs::new();
        o.insert("verified".into(), json!(reports.len()));
        o.insert("sources".into(), Value::Array(reports));
        o.insert("leftovers_removed".into(), json!(sweep.removed));
        Ok(o)
    }
}
