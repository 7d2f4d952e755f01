//! `run`, `failover`, `resume`, `approve`, `abort`: commands that act.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::plan::{load, parse_params, render_plan, target_region, PlanArgs};
use super::{ui, CliError, OutputFormat, RunArgs};
use crate::action::Registry;
use crate::engine::{self, resolve_params, ResumeOptions, RunOutcome, RunSpec};
use crate::exit;
use crate::journal::RunOptions;
use crate::journal::RunStatus;
use crate::runbook::Mode;
use crate::store::{Approval, Store};

pub fn parse_time(s: &str) -> Result<u64, CliError> {
    humantime::parse_rfc3339_weak(s)
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        })
        .map_err(|e| {
            CliError::new(exit::USAGE, format!("--failed-at `{s}`: {e}"))
                .hint("use RFC 3339, e.g. 2026-11-22T03:12:00Z")
        })
}

pub fn outcome_code(o: &RunOutcome) -> i32 {
    match o.status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Failed => exit::RUN_FAILED,
        RunStatus::Interrupted | RunStatus::Aborted => exit::RUN_INTERRUPTED,
        RunStatus::WaitingApproval => exit::WAITING_APPROVAL,
    }
}

pub fn print_outcome(o: &RunOutcome, store: &dyn Store, output: OutputFormat) {
    if output == OutputFormat::Json {
        ui::out(&serde_json::json!({"run_id": o.run_id, "status": o.status.as_str(), "reason": o.reason, "journal": store.journal_location(&o.run_id)}).to_string());
        return;
    }
    let mut s = format!("\nrun {} {}", o.run_id, o.status.as_str());
    if let Some(r) = &o.reason {
        s.push_str(&format!(": {r}"));
    }
    ui::err(&s);
    let d = ui::drctl();
    let id = &o.run_id;
    let next = match o.status {
        RunStatus::Succeeded => format!("report: {d} report {id}"),
        RunStatus::Failed => {
            format!("fix the cause, then: {d} resume {id}   (report: {d} report {id})")
        }
        RunStatus::Interrupted => format!("continue with: {d} resume {id}"),
        RunStatus::WaitingApproval => {
            format!("approve with: {d} approve {id} STEP, then {d} resume {id}")
        }
        RunStatus::Aborted => format!("report: {d} report {id}"),
    };
    ui::err(&format!("  {next}"));
}

pub struct Prepared {
    pub spec: RunSpec,
    pub plan_text: String,
}

/// Loads, validates (against `registry`) and plans a run; nothing acts yet.
pub async fn prepare(
    runbook: &Path,
    region: Option<&str>,
    mode: Mode,
    args: &RunArgs,
    store: Arc<dyn Store>,
    failed_at_ms: Option<u64>,
    registry: &Arc<Registry>,
) -> Result<Prepared, CliError> {
    let dir = crate::runbook::Direction {
        source: None,
        target: region,
    };
    let loaded = load(runbook, args.env.as_deref(), dir, registry)?;
    if loaded.env.is_none() && references_environment(&loaded.runbook) {
        return Err(CliError::new(
            exit::INVALID_INPUT,
            "this runbook refers to the environment but no --env was given",
        )
        .hint("pass --env FILE (`drctl lab up` writes one for the local lab)"));
    }
    let plan_args = PlanArgs {
        runbook,
        env: args.env.as_deref(),
        region,
        check: false,
        mode,
        params: &args.params,
    };
    let (plan_text, _) = render_plan(&plan_args, &loaded, store, OutputFormat::Human).await?;
    let params = resolve_params(&loaded.runbook, &parse_params(&args.params)?)?;
    let target = target_region(loaded.env.as_deref(), region)?;
    let failed_at_ms = match (&args.failed_at, failed_at_ms) {
        (Some(s), _) => Some(parse_time(s)?),
        (None, Some(t)) => Some(t),
        (None, None) => None,
    };
    let spec = RunSpec {
        runbook: loaded.runbook,
        registry: loaded.registry,
        env: loaded.env,
        mode,
        params,
        target_region: target,
        operator: super::operator(),
        options: RunOptions {
            accept_data_loss: args.accept_data_loss,
            force: args.force,
            interactive: !args.yes,
        },
        failed_at_ms,
        parallelism: args.parallelism,
        run_id: None,
    };
    Ok(Prepared { spec, plan_text })
}

fn references_environment(rb: &crate::runbook::Runbook) -> bool {
    rb.steps.iter().any(|s| {
        let t = s.with.to_json().to_string();
        ["${regions.", "${target.", "${source.", "${env."]
            .iter()
            .any(|r| t.contains(r))
    })
}

/// `failover` declares the failure time as "now" unless `--failed-at` says
/// otherwise; a plain `run` has none unless given (no RTO is claimed).
#[allow(clippy::too_many_arguments)]
pub async fn cmd_run(
    runbook: &Path,
    region: Option<&str>,
    mode: Mode,
    args: &RunArgs,
    store: Arc<dyn Store>,
    output: OutputFormat,
    is_failover: bool,
    registry: &Arc<Registry>,
) -> Result<i32, CliError> {
    let failed_at = is_failover.then(crate::journal::now_ms);
    let prepared = prepare(
        runbook,
        region,
        mode,
        args,
        store.clone(),
        failed_at,
        registry,
    )
    .await?;
    if output == OutputFormat::Human {
        ui::err(&prepared.plan_text);
    }
    ui::confirm(
        &format!(
            "About to run `{}` in {} mode.",
            prepared.spec.runbook.name,
            mode.as_str()
        ),
        args.yes,
    )?;
    let outcome = engine::start(
        store.clone(),
        prepared.spec,
        ui::human_ui(output == OutputFormat::Json),
    )
    .await?;
    print_outcome(&outcome, store.as_ref(), output);
    Ok(outcome_code(&outcome))
}

pub fn failover_runbook(explicit: Option<&Path>, env: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(envp) = env {
        if let Ok((e, _)) = crate::environment::load_environment(envp) {
            if let Some(rb) = e.failover_runbook {
                return PathBuf::from(rb);
            }
        }
    }
    PathBuf::from("runbooks/failover.yaml")
}

#[allow(clippy::too_many_arguments)]
pub async fn cmd_resume(
    run_id: &str,
    runbook: Option<&Path>,
    env: Option<&Path>,
    params: &[String],
    mut opts: ResumeOptions,
    store: Arc<dyn Store>,
    output: OutputFormat,
    registry: &Arc<Registry>,
) -> Result<i32, CliError> {
    let run_id = super::inspect::resolve_run_id(store.as_ref(), run_id).await?;
    let (view, _) = engine::run::load_view_pub(store.as_ref(), &run_id).await?;
    if view.status == Some(RunStatus::Succeeded) {
        // Resuming is idempotent: a finished run has nothing left to do.
        ui::err(&format!(
            "run {run_id} already succeeded; nothing to resume"
        ));
        return Ok(exit::OK);
    }
    let rb_path = runbook
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(&view.runbook.path));
    let env_path = env
        .map(Path::to_path_buf)
        .or_else(|| view.environment.as_ref().map(|e| PathBuf::from(&e.path)));
    // Validate the current files fully; a resume must not half-apply either.
    let dir = crate::runbook::Direction {
        source: view.source_region.as_deref(),
        target: view.target_region.as_deref(),
    };
    let loaded = load(&rb_path, env_path.as_deref(), dir, registry)?;
    // New parameter values are checked before the lease and before any step.
    opts.params = crate::engine::typed_overrides(&loaded.runbook, &parse_params(params)?)?;
    let outcome = engine::resume(
        store.clone(),
        loaded.registry,
        &run_id,
        loaded.runbook,
        loaded.env,
        opts,
        ui::human_ui(output == OutputFormat::Json),
    )
    .await?;
    print_outcome(&outcome, store.as_ref(), output);
    Ok(outcome_code(&outcome))
}

pub async fn cmd_approve(
    run_id: &str,
    step: &str,
    by: Option<String>,
    store: &dyn Store,
) -> Result<i32, CliError> {
    let run_id = super::inspect::resolve_run_id(store, run_id).await?;
    let (view, _) = engine::run::load_view_pub(store, &run_id).await?;
    let known = view.step(step).is_some_and(|s| s.action == "approval");
    if !known {
        let approvals: Vec<&str> = view
            .steps
            .iter()
            .filter(|s| s.action == "approval")
            .map(|s| s.id.as_str())
            .collect();
        return Err(CliError::new(
            exit::INVALID_INPUT,
            format!("run {run_id} has no started approval step `{step}`"),
        )
        .hint(if approvals.is_empty() {
            "no approval step has started yet".to_string()
        } else {
            format!("approval steps: {}", approvals.join(", "))
        }));
    }
    let who = by.unwrap_or_else(super::operator);
    store
        .put_approval(&run_id, step, &Approval::now(&who, "drctl approve"))
        .await?;
    ui::out(&format!("approved `{step}` of run {run_id} as {who}"));
    if view.status.is_some() {
        ui::out(&format!(
            "the run is parked ({}); continue it with: {} resume {run_id}",
            view.status_text(),
            ui::drctl()
        ));
    }
    Ok(exit::OK)
}

pub async fn cmd_abort(run_id: &str, store: &dyn Store) -> Result<i32, CliError> {
    let run_id = super::inspect::resolve_run_id(store, run_id).await?;
    store.request_abort(&run_id, &super::operator()).await?;
    ui::out(&format!(
        "abort requested for run {run_id}: it stops after its in-flight steps"
    ));
    Ok(exit::OK)
}
