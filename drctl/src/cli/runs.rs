//! `run`, `failover`, `resume`, `approve`, `abort`: commands that act.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::plan::{parse_params, render_plan, target_region, PlanArgs};
use super::{ui, CliError, OutputFormat, RunArgs};
use crate::action::Registry;
use crate::engine::{self, resolve_params, ResumeOptions, RunOutcome, RunSpec};
use crate::exit;
use crate::journal::RunOptions;
use crate::journal::RunStatus;
use crate::runbook::Mode;
use crate::store::{Approval, Store};

/// How far ahead of this host's clock a `--failed-at` may be (clock skew
/// between the machine that saw the failure and this one).
const FAILED_AT_SKEW_MS: u64 = 60_000;

/// `--failed-at`: RFC 3339, not before 1970 and not in the future (an RTO
/// from a failure that has not happened yet would be made up).
pub fn parse_time(s: &str) -> Result<u64, CliError> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        CliError::new(exit::USAGE, format!("--failed-at `{s}`: {e}"))
            .hint("use RFC 3339, e.g. 2026-11-22T03:12:00Z")
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| CliError::new(exit::USAGE, format!("--failed-at `{s}` is before 1970")))?;
    let now = crate::journal::now_ms();
    if ms > now + FAILED_AT_SKEW_MS {
        return Err(CliError::new(
            exit::USAGE,
            format!(
                "--failed-at `{s}` is in the future (now is {}): the RTO would be made up",
                crate::journal::format_ms(now)
            ),
        )
        .hint("give the time the failure was observed, in UTC (e.g. 2026-11-22T03:12:00Z), or leave --failed-at out to use now"));
    }
    Ok(ms)
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
        ui::out(&serde_json::json!({"run_id": o.run_id, "status": o.status.as_str(), "reason": o.reason, "pending_approvals": o.pending_approvals, "journal": store.journal_location(&o.run_id)}).to_string());
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
        RunStatus::Interrupted if !o.pending_approvals.is_empty() => format!(
            "approve with: {d} approve {id} {}, then continue with: {d} resume {id}",
            o.pending_approvals[0]
        ),
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
/// `active`: the active region to use (`None`: the one the store recorded,
/// else the file's).
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    runbook: &Path,
    region: Option<&str>,
    mode: Mode,
    args: &RunArgs,
    store: Arc<dyn Store>,
    failed_at_ms: Option<u64>,
    registry: &Arc<Registry>,
    active: Option<String>,
) -> Result<Prepared, CliError> {
    let dir = crate::runbook::Direction {
        source: None,
        target: region,
    };
    let active = match active {
        Some(a) => Some(a),
        None => super::plan::recorded_active(store.as_ref(), args.env.as_deref()).await,
    };
    let loaded = super::plan::load_with(
        runbook,
        args.env.as_deref(),
        dir,
        registry,
        active.as_deref(),
    )?;
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
            isolated: false,
        },
        failed_at_ms,
        parallelism: args.parallelism,
        run_id: None,
        hooks: None,
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
        None,
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
    let env = prepared.spec.env.clone();
    let target = prepared.spec.target_region.clone();
    let outcome = engine::start(
        store.clone(),
        prepared.spec,
        ui::human_ui(output == OutputFormat::Json),
    )
    .await?;
    print_outcome(&outcome, store.as_ref(), output);
    if is_failover && outcome.status == RunStatus::Succeeded {
        super::failback::record_active(
            store.as_ref(),
            env.as_deref(),
            target.as_deref(),
            &outcome.run_id,
            "failover",
        )
        .await;
    }
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
    let view = engine::run::load_view_only(store.as_ref(), &run_id).await?;
    // Refused before the runbook is even loaded; the engine checks again
    // under the lease.
    refuse_ended(&view)?;
    opts.isolated = view.options.isolated;
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
    // `${source.…}` is the region the run started from (journaled), not
    // whatever the file or the store says is active now: the run may have
    // moved the primary itself before it stopped.
    let loaded = super::plan::load_with(
        &rb_path,
        env_path.as_deref(),
        dir,
        registry,
        view.source_region.as_deref(),
    )?;
    // New parameter values are checked before the lease and before any step.
    opts.params = crate::engine::typed_overrides(&loaded.runbook, &parse_params(params)?)?;
    if !opts.allow_env_change {
        if let Some(diff) =
            environment_diff(store.as_ref(), &run_id, &view, loaded.env.as_deref()).await
        {
            ui::err(&diff);
            // On a terminal the operator decides here; otherwise the engine
            // refuses with the documented code and the flag to pass.
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                ui::confirm(
                    "The environment file changed since this run started (diff above). Resume against it?",
                    false,
                )?;
                opts.allow_env_change = true;
            }
        }
    }
    let env = loaded.env.clone();
    let moves = super::failback::moves_primary(&view);
    if super::failback::is_failback(&view) {
        opts.hooks =
            engine::ResumeHooks(Some(super::failback::hooks(store.clone(), env.as_deref())));
    }
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
    if moves && outcome.status == RunStatus::Succeeded {
        super::failback::record_active(
            store.as_ref(),
            env.as_deref(),
            view.target_region.as_deref(),
            &outcome.run_id,
            &view.runbook.name,
        )
        .await;
    }
    Ok(outcome_code(&outcome))
}

/// A run that ended for good (succeeded or aborted) takes no command that
/// would append to it or to its approvals: exit 20, nothing written.
fn refuse_ended(view: &engine::view::RunView) -> Result<(), CliError> {
    match view.status {
        Some(status @ (RunStatus::Succeeded | RunStatus::Aborted)) => {
            Err(engine::EngineError::RunEnded {
                run_id: view.run_id.clone(),
                status,
                reason: view.reason.clone(),
            }
            .into())
        }
        _ => Ok(()),
    }
}

pub async fn cmd_approve(
    run_id: &str,
    step: &str,
    by: Option<String>,
    store: &dyn Store,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let run_id = super::inspect::resolve_run_id(store, run_id).await?;
    let view = engine::run::load_view_only(store, &run_id).await?;
    refuse_ended(&view)?;
    let Some(started) = view.step(step).filter(|s| s.action == "approval") else {
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
    };
    let distinct = started.inputs.get("distinct_approver") == Some(&serde_json::Value::Bool(true));
    // Approving twice changes nothing: say who did, write nothing. (An
    // approval by the starter under `distinct_approver` never counted.)
    let earlier = match view.approvals.iter().rev().find(|a| a.step == step) {
        Some(a) => Some(Approval {
            by: a.by.clone(),
            at: a.at.clone(),
            via: a.via.clone(),
        }),
        None => store.get_approval(&run_id, step).await?,
    }
    .filter(|a| !(distinct && a.by == view.operator));
    if let Some(a) = earlier {
        if output == OutputFormat::Json {
            ui::out(&serde_json::json!({"run_id": run_id, "step": step, "approved": true, "already": true, "by": a.by, "via": a.via, "at": a.at}).to_string());
        } else {
            ui::out(&format!(
                "`{step}` of run {run_id} is already approved by {} ({}, {}); nothing done",
                a.by, a.via, a.at
            ));
        }
        return Ok(exit::OK);
    }
    let me = super::operator();
    let who = by.unwrap_or_else(|| me.clone());
    if distinct && (who == view.operator || me == view.operator) {
        return Err(CliError::new(
            exit::NOT_CONFIRMED,
            format!(
                "approval refused: step `{step}` has `distinct_approver: true` and {} started run {run_id}; \
                 someone else must approve it",
                view.operator
            ),
        )
        .hint(format!(
            "ask another operator to run: {} approve {run_id} {step}",
            ui::drctl()
        )));
    }
    store
        .put_approval(&run_id, step, &Approval::now(&who, "drctl approve"))
        .await?;
    if output == OutputFormat::Json {
        let resume = view
            .status
            .is_some()
            .then(|| format!("{} resume {run_id}", ui::drctl()));
        ui::out(&serde_json::json!({"run_id": run_id, "step": step, "approved": true, "already": false, "by": who, "parked": view.status.is_some(), "resume": resume}).to_string());
        return Ok(exit::OK);
    }
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

/// Ends a parked run at once (journaled under the lease), or stops a live
/// one; refuses a run that already ended.
pub async fn cmd_abort(
    run_id: &str,
    store: Arc<dyn Store>,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let run_id = super::inspect::resolve_run_id(store.as_ref(), run_id).await?;
    let outcome = engine::abort(
        store.clone(),
        &run_id,
        &super::operator(),
        ui::human_ui(false),
    )
    .await?;
    let d = ui::drctl();
    if output == OutputFormat::Json {
        let v = match &outcome {
            engine::AbortOutcome::Ended { reason, .. } => {
                serde_json::json!({"run_id": run_id, "outcome": "ended", "reason": reason})
            }
            engine::AbortOutcome::Stopped { reason } => {
                serde_json::json!({"run_id": run_id, "outcome": "stopped", "reason": reason})
            }
            engine::AbortOutcome::Requested { holder } => serde_json::json!({
                "run_id": run_id, "outcome": "requested",
                "holder": {"pid": holder.holder.pid, "host": holder.holder.host},
            }),
        };
        ui::out(&v.to_string());
        return Ok(exit::OK);
    }
    match outcome {
        engine::AbortOutcome::Ended { reason, .. } => ui::out(&format!(
            "run {run_id} ended: {reason} (no process was driving it)\n  report: {d} report {run_id}"
        )),
        engine::AbortOutcome::Stopped { reason } => ui::out(&format!(
            "run {run_id} aborted ({reason}): its process stopped\n  report: {d} report {run_id}"
        )),
        engine::AbortOutcome::Requested { holder } => ui::out(&format!(
            "abort requested for run {run_id}: its process (pid {} on {}) stops after its in-flight steps\n  \
             watch it: {d} status {run_id} --follow",
            holder.holder.pid, holder.holder.host
        )),
    }
    Ok(exit::OK)
}

/// A unified diff of the run's environment file (as saved at run start)
/// against the one given now, when both have the same name and differ.
async fn environment_diff(
    store: &dyn Store,
    run_id: &str,
    view: &crate::engine::view::RunView,
    env: Option<&crate::environment::Environment>,
) -> Option<String> {
    let (started, now) = (view.environment.as_ref()?, env?);
    if started.name != now.name || started.sha256 == now.content_hash {
        return None;
    }
    let before = store
        .get_artifact(run_id, engine::run::ENV_ARTIFACT)
        .await
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let Some(before) = before else {
        return Some(format!(
            "environment {} changed since run {run_id} started (the run predates saved environments: no diff to show)",
            now.file.path
        ));
    };
    let diff = similar::TextDiff::from_lines(&before, &now.file.text);
    Some(format!(
        "environment {} changed since run {run_id} started:\n{}",
        now.file.path,
        diff.unified_diff()
            .context_radius(2)
            .header("at run start", "now")
    ))
}
