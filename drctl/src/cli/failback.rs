//! `switchover` and `failback`: the way back after a failover, as runs of
//! `runbooks/switchover.yaml` and `runbooks/failback.yaml` (journaled,
//! resumable, under the environment's lease like any run). `failback`
//! builds its run from the failover's journal: the regions, the nodes, and
//! the DNS values to restore, and refuses before anything changes when that
//! run is not a completed failover, when the old primary cannot be reached
//! or when DNS drifted since.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::{ui, CliError, OutputFormat, RunArgs};
use crate::action::Registry;
use crate::engine::{self, view::RunView, RunOutcome};
use crate::environment::Environment;
use crate::exit;
use crate::journal::{RunStatus, StepStatus};
use crate::store::active::{self, ActiveRegion};
use crate::store::Store;

/// A shipped runbook beside the failover runbook the environment names,
/// else under `runbooks/` here.
pub fn sibling_runbook(explicit: Option<&Path>, env: Option<&Path>, name: &str) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let failover = super::runs::failover_runbook(None, env);
    match failover.parent() {
        Some(dir) if failover.is_absolute() => dir.join(name),
        _ => PathBuf::from("runbooks").join(name),
    }
}

/// Records where the primary runs after a run that moved it succeeded.
pub async fn record_active(
    store: &dyn Store,
    env: Option<&Environment>,
    region: Option<&str>,
    run_id: &str,
    by: &str,
) {
    let (Some(env), Some(region)) = (env, region) else {
        return;
    };
    // Only a run that did move it: a promote or switchover that succeeded
    // (a read-only drill, or one whose promote was skipped, moved nothing).
    match engine::run::load_view_only(store, run_id).await {
        Ok(v) if moved_primary(&v) => {}
        _ => return,
    }
    let rec = ActiveRegion {
        region: region.to_string(),
        run_id: run_id.to_string(),
        by: by.to_string(),
        at_ms: crate::journal::now_ms(),
    };
    match active::record(store, &env.name, &rec).await {
        Ok(_) => ui::err(&format!(
            "active region of `{}` is now `{region}` (recorded in the state store)",
            env.name
        )),
        Err(e) => ui::err(&format!(
            "warning: could not record the active region `{region}` of `{}`: {e}; set active_region in the environment file",
            env.name
        )),
    }
}

/// The node drctl drives for a region: the one the environment declares
/// (`regions.REGION.node`, `region:REGION`), else the lab's server
/// (`lab:pg-primary`).
fn region_node(env: &Environment, region: &str) -> Option<String> {
    if env.component(region, "node").is_some() {
        return Some(format!("region:{region}"));
    }
    env.lab_control.as_ref().map(|_| format!("lab:pg-{region}"))
}

fn has_param(args: &RunArgs, key: &str) -> bool {
    args.params
        .iter()
        .any(|p| p.split_once('=').is_some_and(|(k, _)| k == key))
}

fn load_env(path: &Path) -> Result<Environment, CliError> {
    crate::environment::load_environment(path)
        .map(|(e, _)| e)
        .map_err(CliError::invalid)
}

#[allow(clippy::too_many_arguments)]
async fn run_prepared(
    runbook: &Path,
    region: &str,
    args: &RunArgs,
    store: Arc<dyn Store>,
    output: OutputFormat,
    registry: &Arc<Registry>,
    active: Option<String>,
    hooks: Option<Arc<dyn engine::RunHooks>>,
    what: &str,
) -> Result<RunOutcome, CliError> {
    let mut prepared = super::runs::prepare(
        runbook,
        Some(region),
        crate::runbook::Mode::Incident,
        args,
        store.clone(),
        None,
        registry,
        active,
    )
    .await?;
    if output == OutputFormat::Human {
        ui::err(&prepared.plan_text);
    }
    ui::confirm(&format!("About to run the {what} to `{region}`."), args.yes)?;
    prepared.spec.hooks = hooks;
    let env = prepared.spec.env.clone();
    let outcome = engine::start(
        store.clone(),
        prepared.spec,
        ui::human_ui(output == OutputFormat::Json),
    )
    .await?;
    super::runs::print_outcome(&outcome, store.as_ref(), output);
    if outcome.status == RunStatus::Succeeded {
        record_active(
            store.as_ref(),
            env.as_deref(),
            Some(region),
            &outcome.run_id,
            what,
        )
        .await;
    }
    Ok(outcome)
}

/// `drctl switchover --to REGION --env FILE`.
pub async fn cmd_switchover(
    to: &str,
    runbook: Option<&Path>,
    args: &RunArgs,
    store: Arc<dyn Store>,
    output: OutputFormat,
    registry: &Arc<Registry>,
) -> Result<i32, CliError> {
    let env_path = args.env.as_deref().ok_or_else(|| {
        CliError::new(exit::USAGE, "switchover needs --env FILE").hint("`drctl lab up` writes one")
    })?;
    let env = load_env(env_path)?;
    let active = super::plan::recorded_active(store.as_ref(), Some(env_path))
        .await
        .unwrap_or_else(|| env.active_region.clone());
    let mut args = args.clone();
    for (key, region) in [("source_node", active.as_str()), ("target_node", to)] {
        if !has_param(&args, key) {
            if let Some(n) = region_node(&env, region) {
                args.params.push(format!("{key}={n}"));
            }
        }
    }
    let rb = sibling_runbook(runbook, Some(env_path), "switchover.yaml");
    let target_node = args
        .params
        .iter()
        .rev()
        .find_map(|p| p.strip_prefix("target_node=lab:").map(str::to_string));
    let outcome = run_prepared(
        &rb,
        to,
        &args,
        store,
        output,
        registry,
        Some(active),
        None,
        "switchover",
    )
    .await?;
    // The lab's heartbeat writes to the primary, wherever it now runs.
    if let (Some(c), Some(n), RunStatus::Succeeded) =
        (&env.lab_control, &target_node, outcome.status)
    {
        if let Err(e) = crate::lab::control(c, "POST", &format!("/node/heartbeat?name={n}")).await {
            ui::err(&format!(
                "warning: the lab's heartbeat still writes to the old primary: {}",
                crate::diag::error_chain(&e)
            ));
        }
    }
    Ok(super::runs::outcome_code(&outcome))
}

/// Why a run cannot be failed back.
fn not_failover(run: &str, why: impl Into<String>) -> CliError {
    CliError::new(
        exit::NOT_A_FAILOVER,
        format!("run {run} cannot be failed back: {}", why.into()),
    )
    .hint("name a completed failover (`drctl runs`; `drctl failback latest` takes the newest one)")
}

/// A run that moved the primary: a promote step and a DNS switch.
fn is_failover(v: &RunView) -> bool {
    v.steps.iter().any(|s| s.action == "postgres.promote")
}

/// The failover run `id` names (`latest`: the newest run that promoted).
async fn failover_view(store: &dyn Store, id: &str) -> Result<RunView, CliError> {
    if id != "latest" {
        return engine::run::load_view_only(store, id)
            .await
            .map_err(CliError::from);
    }
    for rid in store.list_runs().await?.iter().rev() {
        if let Ok(v) = engine::run::load_view_only(store, rid).await {
            if is_failover(&v) {
                return Ok(v);
            }
        }
    }
    Err(
        CliError::new(exit::NOT_FOUND, "there is no failover run to fail back")
            .hint(format!("state: {}", store.describe())),
    )
}

/// The facts a failback is built from, checked against the journal.
struct FromFailover {
    run_id: String,
    env: PathBuf,
    /// Where the primary was before the failover: the failback's target.
    home: String,
    /// Where the failover put it: the failback's source.
    now: String,
}

fn from_failover(v: &RunView, env: Option<&Path>) -> Result<FromFailover, CliError> {
    let id = &v.run_id;
    if !is_failover(v) {
        return Err(not_failover(
            id,
            format!(
                "it is a `{}` run, not a failover (no postgres.promote step)",
                v.runbook.name
            ),
        ));
    }
    if v.status != Some(RunStatus::Succeeded) {
        return Err(not_failover(
            id,
            format!("the failover is {}, not succeeded", v.status_text()),
        ));
    }
    let promoted = v
        .steps
        .iter()
        .any(|s| s.action == "postgres.promote" && s.status == StepStatus::Succeeded);
    if !promoted {
        return Err(not_failover(id, "its promote step did not succeed"));
    }
    let (Some(home), Some(now)) = (v.source_region.clone(), v.target_region.clone()) else {
        return Err(not_failover(id, "its journal names no source and target region (a journal from before regions were journaled)"));
    };
    // No dns.switch at all (an environment without DNS): nothing to
    // restore. One that did not succeed: the values before are unknown.
    let switches: Vec<_> = v
        .steps
        .iter()
        .filter(|s| s.action == "dns.switch")
        .collect();
    if !switches.is_empty() && !switches.iter().any(|s| s.status == StepStatus::Succeeded) {
        return Err(not_failover(
            id,
            "its journal has no succeeded dns.switch step, so the DNS values before the failover are unknown",
        ));
    }
    let env = match (env, &v.environment) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(f)) => PathBuf::from(&f.path),
        (None, None) => {
            return Err(not_failover(
                id,
                "its journal names no environment file (pass --env)",
            ))
        }
    };
    Ok(FromFailover {
        run_id: id.clone(),
        env,
        home,
        now,
    })
}

/// After the failback run: its discarded-transactions note (the journal
/// contract with reports) and, on the lab, the lab's return to its
/// initial state, both journaled by the engine before the lease goes.
struct FailbackHooks {
    store: Arc<dyn Store>,
    lab_control: Option<String>,
}

#[async_trait::async_trait]
impl engine::RunHooks for FailbackHooks {
    async fn before_start(&self) -> Result<Option<u64>, Box<dyn std::error::Error + Send + Sync>> {
        // The lab's primary-region app was stopped by the break; the
        // failback's smoke checks ask it (it follows its server's role).
        if let Some(c) = &self.lab_control {
            crate::lab::control(c, "POST", "/app/primary/start").await?;
        }
        Ok(None)
    }

    async fn after_finish(&self, outcome: &RunOutcome) -> Vec<engine::Note> {
        let mut notes = Vec::new();
        if let Ok(v) = engine::run::load_view_only(self.store.as_ref(), &outcome.run_id).await {
            let d = v
                .steps
                .iter()
                .find(|s| s.action == "postgres.rewind" && s.status == StepStatus::Succeeded)
                .and_then(|s| s.outputs.get("discarded").cloned());
            // Once per run: a resumed failback keeps the first extraction.
            let noted = v
                .notes
                .iter()
                .any(|n| n.data["kind"] == "failback_discarded");
            if let (Some(Value::Object(mut d)), false) = (d, noted) {
                d.insert("kind".into(), json!("failback_discarded"));
                let rows = d.get("heartbeat_rows").and_then(Value::as_u64);
                notes.push(engine::Note {
                    message: format!(
                        "transactions the old primary committed after the fork, kept before the rewind: {}",
                        rows.map(|n| format!("{n} heartbeat row(s)")).unwrap_or_else(|| "heartbeat rows unknown".into())
                    ),
                    data: Value::Object(d),
                });
            }
        }
        if let (Some(c), RunStatus::Succeeded) = (&self.lab_control, outcome.status) {
            match crate::lab::control(c, "POST", "/restore").await {
                Ok(v) => notes.push(engine::Note {
                    message:
                        "the lab is back in its initial state (pg-primary primary, pg-dr streaming)"
                            .into(),
                    data: json!({"kind": "lab_restored", "lab": v}),
                }),
                Err(e) => notes.push(engine::Note {
                    message: format!(
                        "the lab could not be restored: {}",
                        crate::diag::error_chain(&e)
                    ),
                    data: json!({"kind": "lab_restore_failed"}),
                }),
            }
        }
        notes
    }
}

/// A run whose success moved the primary to its target region (an
/// incident or drill run that promotes or switches over).
pub fn moves_primary(v: &RunView) -> bool {
    v.steps.iter().any(|s| {
        matches!(
            s.action.as_str(),
            "postgres.promote" | "postgres.switchover"
        )
    })
}

/// A run in which a promote or switchover step succeeded.
pub fn moved_primary(v: &RunView) -> bool {
    v.steps.iter().any(|s| {
        matches!(
            s.action.as_str(),
            "postgres.promote" | "postgres.switchover"
        ) && s.status == StepStatus::Succeeded
    })
}

/// A failback run (it rewinds an old primary).
pub fn is_failback(v: &RunView) -> bool {
    v.steps.iter().any(|s| s.action == "postgres.rewind")
}

/// The failback's hooks for `env`.
pub fn hooks(store: Arc<dyn Store>, env: Option<&Environment>) -> Arc<dyn engine::RunHooks> {
    Arc::new(FailbackHooks {
        store,
        lab_control: env.and_then(|e| e.lab_control.clone()),
    })
}

/// `drctl failback RUN_ID | latest`.
pub async fn cmd_failback(
    run: &str,
    runbook: Option<&Path>,
    args: &RunArgs,
    store: Arc<dyn Store>,
    output: OutputFormat,
    registry: &Arc<Registry>,
) -> Result<i32, CliError> {
    let v = failover_view(store.as_ref(), run).await?;
    let f = from_failover(&v, args.env.as_deref())?;
    let env = load_env(&f.env)?;
    if let Ok(Some(a)) = active::load(store.as_ref(), &env.name).await {
        if a.region != f.now {
            return Err(not_failover(
                &f.run_id,
                format!(
                    "the primary of `{}` is no longer where it put it: the active region is `{}` (recorded by {} run {})",
                    env.name, a.region, a.by, a.run_id
                ),
            ));
        }
    }
    let mut args = args.clone();
    args.env = Some(f.env.clone());
    for (key, region) in [
        ("old_primary_node", f.home.as_str()),
        ("new_primary_node", f.now.as_str()),
    ] {
        if !has_param(&args, key) {
            match region_node(&env, region) {
                Some(n) => args.params.push(format!("{key}={n}")),
                None => {
                    return Err(CliError::new(
                        exit::INVALID_INPUT,
                        format!("environment `{}` declares no node for region `{region}`: name the nodes of both regions", env.name),
                    )
                    .hint("add `node: {kind: pg_ctl, data_dir: ...}` to both regions, or pass --param old_primary_node=... --param new_primary_node=... (lab:NAME or region:NAME)"))
                }
            }
        }
    }
    if !has_param(&args, "failover_run") {
        args.params.push(format!("failover_run={}", f.run_id));
    }
    precheck(&env, &f, &args, store.as_ref()).await?;
    // Beside the runbook the failover ran (journaled by absolute path).
    let rb = match (runbook, Path::new(&v.runbook.path).parent()) {
        (None, Some(dir)) if dir.join("failback.yaml").exists() => dir.join("failback.yaml"),
        _ => sibling_runbook(runbook, Some(&f.env), "failback.yaml"),
    };
    let hooks = hooks(store.clone(), Some(&env));
    if output == OutputFormat::Human {
        ui::err(&format!(
            "failback of run {}: the primary returns from `{}` to `{}`",
            f.run_id, f.now, f.home
        ));
    }
    let outcome = run_prepared(
        &rb,
        &f.home,
        &args,
        store,
        output,
        registry,
        Some(f.now.clone()),
        Some(hooks),
        "failback",
    )
    .await?;
    Ok(super::runs::outcome_code(&outcome))
}

/// What must hold before anything changes: the old primary's node can be
/// controlled, the new primary answers as one, DNS did not drift.
async fn precheck(
    env: &Environment,
    f: &FromFailover,
    args: &RunArgs,
    store: &dyn Store,
) -> Result<(), CliError> {
    let param = |k: &str| {
        args.params.iter().rev().find_map(|p| {
            p.split_once('=')
                .filter(|(kk, _)| *kk == k)
                .map(|(_, v)| v.to_string())
        })
    };
    let old = param("old_primary_node").unwrap_or_default();
    let unreachable = |why: String| {
        CliError::new(exit::OLD_PRIMARY_UNREACHABLE, format!("the old primary ({old}, region `{}`) cannot be reached: {why}; nothing was changed", f.home))
            .hint("the failback reads and rewinds the old primary's data directory: bring its host (the lab: `drctl lab status`) back, then run failback again")
    };
    let spec = crate::postgres::node::NodeSpec::parse(&old)
        .map_err(|e| CliError::new(exit::INVALID_INPUT, e))?;
    let data_dir = crate::postgres::node::Node::open_in(&spec, env)
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .data_dir;
    if !data_dir.join("PG_VERSION").exists() {
        return Err(unreachable(format!(
            "its data directory {} holds no cluster",
            data_dir.display()
        )));
    }
    if let Some(server) = crate::topology::server_of(env, &f.now) {
        match crate::postgres::ops::status_of(&server, std::time::Duration::from_secs(5)).await {
            Ok(s) if !s.is_standby() => {}
            Ok(_) => {
                return Err(not_failover(
                    &f.run_id,
                    format!(
                        "region `{}`'s postgres ({}) is in recovery, not the primary",
                        f.now,
                        server.addr()
                    ),
                ))
            }
            Err(e) => {
                return Err(CliError::new(
                    exit::RUN_FAILED,
                    format!(
                        "the new primary ({}) does not answer: {}",
                        server.addr(),
                        crate::diag::error_chain(&e)
                    ),
                )
                .hint("a failback needs the new primary as the rewind source"))
            }
        }
    }
    kube_precheck(env, f, args, store).await?;
    let cfg = match env.doc.get("dns") {
        Some(node) => {
            let names = env.region_names();
            crate::action::decode_resolved("dns", node, |c, n| {
                crate::dns::config::decode(c, n, Some(&names))
            })
            .map_err(|e| CliError::new(exit::INVALID_INPUT, e.to_string()))?
        }
        None => return Ok(()),
    };
    let undo = crate::dns::restore::journaled(store, &f.run_id, "dns")
        .await
        .map_err(|e| not_failover(&f.run_id, e.to_string()))?;
    let planned = crate::dns::restore::plan(&cfg, &undo, std::time::Duration::from_secs(10))
        .await
        .map_err(|e| {
            CliError::new(
                exit::RUN_FAILED,
                format!("cannot read the DNS records: {e}"),
            )
            .hint("is the DNS provider's API reachable?")
        })?;
    if !planned.drift.is_empty() && !args.force {
        return Err(CliError::new(
            exit::DNS_DRIFT,
            format!("DNS changed since the failover: {}; nothing was changed", planned.drift.join("; ")),
        )
        .hint("find out who changed it; `--force` restores the failover's previous values anyway (journaled)"));
    }
    Ok(())
}

/// Replica counts and HPA bounds someone changed since the failover
/// scaled them: refused here, before the rewind, not at the end of a
/// failback that already moved the primary.
async fn kube_precheck(
    env: &Environment,
    f: &FromFailover,
    args: &RunArgs,
    store: &dyn Store,
) -> Result<(), CliError> {
    if env.component(&f.home, "kube").is_none() || env.component(&f.now, "kube").is_none() {
        return Ok(());
    }
    let p = crate::kube::restore::Params {
        run: f.run_id.clone(),
        fenced_region: f.home.clone(),
        fence_step: "fence-kube".into(),
        scaled_region: f.now.clone(),
        scale_step: "scale".into(),
        wait: false,
        concurrency: 16,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (planned, _) = crate::kube::restore::plan(env, store, &p, deadline)
        .await
        .map_err(|e| {
            CliError::new(
                exit::RUN_FAILED,
                format!("cannot read the Kubernetes capacity to restore: {e}"),
            )
            .hint("both regions' Kubernetes APIs must answer for a failback to restore capacity")
        })?;
    let drift = planned.drift();
    if !drift.is_empty() && !args.force {
        return Err(CliError::new(
            exit::KUBE_DRIFT,
            format!(
                "Kubernetes capacity changed since the failover: {}; nothing was changed",
                drift.join("; ")
            ),
        )
        .hint("find out who changed it; `--force` restores the failover's previous values anyway (journaled)"));
    }
    Ok(())
}
