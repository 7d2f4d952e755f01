//! `drctl verify-backup`: a shorthand that runs `runbooks/verify-backups.yaml`
//! (a journaled run with lease and report like any other) and maps the
//! `verify` step's failure class back to its exit code (30–34), so a
//! CronJob's alert can say what happened. `--cleanup` only removes
//! leftovers of verifications killed half-way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::{ui, CliError, OutputFormat, RunArgs};
use crate::action::Registry;
use crate::backup::Class;
use crate::engine;
use crate::exit;
use crate::journal::StepStatus;
use crate::runbook::Mode;
use crate::store::Store;

#[derive(Debug, Args, Clone)]
pub struct VerifyBackupArgs {
    /// Environment file (its active region's `backups:` are verified).
    #[arg(long)]
    pub env: Option<PathBuf>,
    /// Verify only this backup source (default: every source).
    #[arg(long)]
    pub source: Option<String>,
    /// Recover to this time (RFC 3339, e.g. 2026-12-01T19:30:00Z) instead of the end of the archive.
    #[arg(long)]
    pub target_time: Option<String>,
    /// Only remove leftovers of killed verifications (provably drctl's) and exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Scratch area for the restored copies (default: STATE/scratch).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Push metrics to this Pushgateway (push-add), e.g. http://pushgateway:9091.
    #[arg(long)]
    pub pushgateway: Option<String>,
    /// Write metrics to this file for node_exporter's textfile collector.
    #[arg(long)]
    pub metrics_textfile: Option<PathBuf>,
    /// Also check that every heap tuple has its index entries (slower; e.g. weekly).
    #[arg(long)]
    pub heapallindexed: bool,
    /// Skip pg_amcheck.
    #[arg(long)]
    pub no_amcheck: bool,
    /// Also read every table with `pg_dump --no-sync -f /dev/null`.
    #[arg(long)]
    pub full_read: bool,
    /// A recovered point further behind the primary's newest heartbeat is an old point (e.g. 15m).
    #[arg(long)]
    pub max_rpo_gap: Option<String>,
    /// The runbook to run.
    #[arg(long, default_value = "runbooks/verify-backups.yaml")]
    pub runbook: PathBuf,
}

pub fn cmd_cleanup(scratch: &Path, output: OutputFormat) -> Result<i32, CliError> {
    let sweep = crate::backup::scratch::sweep(scratch)
        .map_err(|e| CliError::new(exit::BACKUP_NOT_VERIFIED, crate::diag::error_chain(&e)))?;
    if output == OutputFormat::Json {
        ui::out(&serde_json::to_string(&sweep).unwrap_or_default());
    } else {
        ui::out(&format!(
            "scratch area {}: removed {} leftover(s), killed {} server(s){}",
            scratch.display(),
            sweep.removed.len(),
            sweep.killed.len(),
            if sweep.kept.is_empty() {
                String::new()
            } else {
                format!("; kept: {}", sweep.kept.join("; "))
            }
        ));
        for r in &sweep.removed {
            ui::out(&format!("  removed {r}"));
        }
    }
    Ok(exit::OK)
}

/// One line per source from the step's outputs or checkpoint.
fn summary_lines(sources: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in sources.as_array().into_iter().flatten() {
        let name = s["source"].as_str().unwrap_or("?");
        let verdict = if s["ok"] == true {
            "verified"
        } else {
            "FAILED"
        };
        let mut parts = vec![format!(
            "backup `{name}` ({}): {verdict}",
            s["kind"].as_str().unwrap_or("?")
        )];
        if let Some(ms) = s["restore_ms"].as_u64() {
            parts.push(format!("restore {:.2}s", ms as f64 / 1000.0));
        }
        if let Some(lsn) = s["replay_lsn"].as_str() {
            parts.push(format!("recovered to {lsn}"));
        }
        if let Some(id) = s["recovered_heartbeat_id"].as_i64() {
            parts.push(format!("heartbeat row {id}"));
        }
        if let Some(g) = s["rpo_gap_bytes"].as_u64() {
            parts.push(format!("gap {g} WAL bytes"));
        }
        if let Some(g) = s["rpo_gap_s"].as_f64() {
            parts.push(format!("RPO gap {g:.1}s"));
        }
        if let Some(a) = s["backup_age_s"].as_f64() {
            parts.push(format!("backup age {:.0}s", a));
        }
        out.push(parts.join(", "));
        if let Some(e) = s["error"].as_str() {
            out.push(format!("  {e}"));
        }
    }
    out
}

pub async fn cmd_verify_backup(
    a: &VerifyBackupArgs,
    scratch: PathBuf,
    store: Arc<dyn Store>,
    output: OutputFormat,
    registry: &Arc<Registry>,
) -> Result<i32, CliError> {
    let mut params = vec![format!(
        "scratch={}",
        crate::environment::paths::absolute(&scratch).display()
    )];
    let mut p = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            params.push(format!("{k}={v}"));
        }
    };
    p("source", a.source.clone());
    p("target_time", a.target_time.clone());
    p("pushgateway", a.pushgateway.clone());
    p(
        "metrics_textfile",
        a.metrics_textfile
            .as_ref()
            .map(|f| crate::environment::paths::absolute(f).display().to_string()),
    );
    p("max_rpo_gap", a.max_rpo_gap.clone());
    p("heapallindexed", a.heapallindexed.then(|| "true".into()));
    p("amcheck", a.no_amcheck.then(|| "false".into()));
    p("full_read", a.full_read.then(|| "true".into()));
    let args = RunArgs {
        env: a.env.clone(),
        params,
        // A verification changes nothing in the environment's systems
        // that needs an operator's yes: it restores into local scratch.
        yes: true,
        accept_data_loss: false,
        force: false,
        failed_at: None,
        parallelism: 8,
    };
    let prepared = super::runs::prepare(
        &a.runbook,
        None,
        Mode::Incident,
        &args,
        store.clone(),
        None,
        registry,
        // The region the store records as active (after a failover, the DR
        // region's backups are the ones that matter).
        None,
    )
    .await?;
    if output == OutputFormat::Human {
        ui::err(&prepared.plan_text);
    }
    let outcome = engine::start(
        store.clone(),
        prepared.spec,
        ui::human_ui(output == OutputFormat::Json),
    )
    .await?;
    super::runs::print_outcome(&outcome, store.as_ref(), output);
    let view = engine::run::load_view_only(store.as_ref(), &outcome.run_id).await?;
    let step = view
        .steps
        .iter()
        .find(|s| s.action == "postgres.verify_backup");
    let Some(step) = step else {
        return Err(CliError::new(
            exit::BACKUP_NOT_VERIFIED,
            format!(
                "{} has no postgres.verify_backup step: nothing was verified",
                a.runbook.display()
            ),
        ));
    };
    let sources = if step.status == StepStatus::Succeeded {
        step.outputs.get("sources").cloned()
    } else {
        step.checkpoint
            .as_ref()
            .and_then(|c| c.get("sources").cloned())
    };
    if output == OutputFormat::Human {
        if let Some(s) = &sources {
            for l in summary_lines(s) {
                ui::err(&l);
            }
        }
        if let Some(h) = step.error.as_ref().and_then(|e| e.hint.as_deref()) {
            ui::err(&format!("  hint: {h}"));
        }
    }
    Ok(match step.status {
        StepStatus::Succeeded => super::runs::outcome_code(&outcome),
        StepStatus::Skipped => {
            ui::err(
                "nothing verified: the active region declares no `backups:` (or no `postgres:`)",
            );
            exit::BACKUP_NOT_VERIFIED
        }
        StepStatus::Failed => match &step.error {
            // Out of its timeout: the restore did not finish in its budget.
            Some(e) if e.kind == crate::journal::FailureKind::Timeout => {
                exit::BACKUP_CANNOT_RESTORE
            }
            Some(e) => Class::from_message(&e.message)
                .map(Class::exit_code)
                .unwrap_or(exit::BACKUP_NOT_VERIFIED),
            None => exit::BACKUP_NOT_VERIFIED,
        },
        _ => super::runs::outcome_code(&outcome),
    })
}
