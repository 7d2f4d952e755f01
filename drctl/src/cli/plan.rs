//! `validate`, `plan` and `schema`: everything that reads runbooks without
//! changing anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::{preflight, ui, CliError, OutputFormat};
use crate::action::{self, Registry, StepContext};
use crate::diag::Diagnostics;
use crate::engine::{resolve_params, scope_for};
use crate::environment::{load_environment, Environment};
use crate::exit;
use crate::journal::RunOptions;
use crate::runbook::{
    load_runbook, validate_runbook, validate_runbook_for, Direction, ExecutionPlan, Mode, Runbook,
};
use crate::store::Store;

/// Loads an environment, adding its diagnostics to `all`.
fn load_env_into(path: Option<&Path>, all: &mut Diagnostics) -> Option<Environment> {
    match load_environment(path?) {
        Ok((e, d)) => {
            all.extend(d);
            Some(e)
        }
        Err(d) => {
            all.extend(d);
            None
        }
    }
}

pub struct Loaded {
    pub runbook: Arc<Runbook>,
    /// The kinds the runbook was validated against; plans and runs use
    /// the same ones.
    pub registry: Arc<Registry>,
    pub env: Option<Arc<Environment>>,
    pub plan: ExecutionPlan,
    pub warnings: Diagnostics,
}

/// Loads a runbook (and environment) and validates them together against
/// `registry`, for a run in direction `dir` (`${source.…}`/`${target.…}`
/// checked against those regions), with every secret reference of the
/// environment resolvable. Any error stops here, before anything runs:
/// nothing half-applies.
pub fn load(
    runbook: &Path,
    env: Option<&Path>,
    dir: Direction<'_>,
    registry: &Arc<Registry>,
) -> Result<Loaded, CliError> {
    load_with(runbook, env, dir, registry, None)
}

/// The environment's active region as the state store recorded it (the
/// last completed failover, switchover or failback, see
/// [`crate::store::active`]); `None` when none did, and the file's
/// `active_region` holds.
pub async fn recorded_active(store: &dyn Store, env: Option<&Path>) -> Option<String> {
    let (e, _) = load_environment(env?).ok()?;
    match crate::store::active::load(store, &e.name).await {
        Ok(a) => a.map(|a| a.region),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the recorded active region; using the environment file's");
            None
        }
    }
}

/// [`load`] with the active region the store recorded (`active`), which
/// replaces the file's `active_region` (its initial value) when it names
/// one of the environment's regions.
pub fn load_with(
    runbook: &Path,
    env: Option<&Path>,
    dir: Direction<'_>,
    registry: &Arc<Registry>,
    active: Option<&str>,
) -> Result<Loaded, CliError> {
    let mut all = Diagnostics::default();
    let mut env = load_env_into(env, &mut all);
    if let (Some(e), Some(a)) = (env.as_mut(), active) {
        if e.regions.contains_key(a) {
            e.active_region = a.to_string();
        }
    }
    if let Some(e) = &env {
        // A region that does not exist is one clear error, not one per
        // `${target.…}` reference.
        target_region(Some(e), dir.target)?;
        all.extend(crate::environment::refs::check_references(e));
    }
    let rb = match load_runbook(runbook) {
        Ok((rb, d)) => {
            all.extend(d);
            Some(rb)
        }
        Err(d) => {
            all.extend(d);
            None
        }
    };
    let mut plan = None;
    if let Some(rb) = &rb {
        let (d, p) = validate_runbook_for(rb, env.as_ref(), registry, dir);
        all.extend(d);
        plan = p;
    }
    if all.has_errors() {
        return Err(CliError::invalid(all.sorted()));
    }
    match (rb, plan) {
        (Some(rb), Some(plan)) => Ok(Loaded {
            runbook: Arc::new(rb),
            registry: registry.clone(),
            env: env.map(Arc::new),
            plan,
            warnings: all,
        }),
        _ => Err(CliError::invalid(all)),
    }
}

pub fn parse_params(raw: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for p in raw {
        let Some((k, v)) = p.split_once('=') else {
            return Err(
                CliError::new(exit::USAGE, format!("--param `{p}` is not KEY=VALUE"))
                    .hint("e.g. --param max_lag=5s"),
            );
        };
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// Picks the target region: explicit, else the only non-active region.
pub fn target_region(
    env: Option<&Environment>,
    explicit: Option<&str>,
) -> Result<Option<String>, CliError> {
    let Some(env) = env else {
        return Ok(explicit.map(str::to_string));
    };
    match explicit {
        Some(r) if env.region(r).is_some() => Ok(Some(r.to_string())),
        Some(r) => Err(CliError::new(
            exit::INVALID_INPUT,
            format!("region `{r}` is not in environment `{}`", env.name),
        )
        .hint(format!("regions: {}", env.region_names().join(", ")))),
        None => Ok(env.default_target().map(str::to_string)),
    }
}

pub fn cmd_validate(
    files: &[std::path::PathBuf],
    env: Option<&Path>,
    output: OutputFormat,
    registry: &Registry,
) -> Result<i32, CliError> {
    let mut all = Diagnostics::default();
    let env_loaded = load_env_into(env, &mut all);
    if let Some(e) = &env_loaded {
        all.extend(crate::environment::refs::check_references(e));
    }
    let mut summary = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        // Sniff the kind from its top-level keys; parsing reports errors.
        let kind = if crate::drill::is_definition(&text) {
            "drill definition"
        } else if text.lines().any(|l| l.starts_with("regions:")) {
            "environment"
        } else if text.lines().any(|l| l.starts_with("checks:")) {
            "check set"
        } else {
            "runbook"
        };
        let before = all.error_count();
        if kind == "drill definition" {
            match crate::drill::load_definition(f) {
                Ok(def) => match load_runbook(&def.runbook) {
                    Ok((rb, d)) => {
                        all.extend(d);
                        let env = load_env_into(
                            def.environment.as_deref().filter(|p| p.exists()),
                            &mut all,
                        );
                        if let Some(e) = &env {
                            all.extend(crate::environment::refs::check_references(e));
                        }
                        all.extend(validate_runbook(&rb, env.as_ref(), registry).0);
                    }
                    Err(d) => all.extend(d),
                },
                Err(d) => all.extend(d),
            }
        } else if kind == "check set" {
            crate::actions::checks::load(f, None, registry, &mut all);
        } else if kind == "environment" {
            match load_environment(f) {
                Ok((e, d)) => {
                    all.extend(d);
                    all.extend(crate::environment::refs::check_references(&e));
                }
                Err(d) => all.extend(d),
            }
        } else {
            match load_runbook(f) {
                Ok((rb, d)) => {
                    all.extend(d);
                    let (d2, _) = validate_runbook(&rb, env_loaded.as_ref(), registry);
                    all.extend(d2);
                }
                Err(d) => all.extend(d),
            }
        }
        summary.push((f.display().to_string(), kind, all.error_count() - before));
    }
    let all = all.sorted();
    if output == OutputFormat::Json {
        let v = json!({
            "ok": !all.has_errors(),
            "files": summary.iter().map(|(f, k, n)| json!({"file": f, "kind": k, "errors": n})).collect::<Vec<_>>(),
            "diagnostics": all.to_json(),
        });
        ui::out(&serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(if all.has_errors() {
            exit::INVALID_INPUT
        } else {
            exit::OK
        });
    }
    if all.has_errors() {
        return Err(CliError::invalid(all));
    }
    if !all.is_empty() {
        ui::err(&all.render());
    }
    for (f, k, _) in &summary {
        ui::out(&format!("ok: {f} ({k})"));
    }
    Ok(exit::OK)
}

/// Resolves what can be resolved before running; references to step
/// outputs are shown as written (they exist only at run time).
fn resolve_for_plan(scope: &crate::expr::Scope, v: &Value) -> Value {
    match v {
        Value::String(s) if crate::expr::has_refs(s) => {
            if s.contains("${steps.") {
                Value::String(s.clone())
            } else {
                scope
                    .resolve_str(s)
                    .unwrap_or_else(|e| Value::String(format!("{s} <{e}>")))
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve_for_plan(scope, x)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), resolve_for_plan(scope, x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

pub struct PlanArgs<'a> {
    pub runbook: &'a Path,
    pub env: Option<&'a Path>,
    pub region: Option<&'a str>,
    pub check: bool,
    pub mode: Mode,
    pub params: &'a [String],
}

/// A runbook that acts on `${target.…}` or `${source.…}` moves service
/// between regions: its target must be another region than the active
/// one, with other servers (see [`crate::topology`]). Checked before any
/// plan is shown, so nothing is ever confirmed for a wrong direction.
async fn check_topology(loaded: &Loaded, target: Option<&str>) -> Result<(), CliError> {
    let (Some(env), Some(target)) = (loaded.env.as_deref(), target) else {
        return Ok(());
    };
    let directional = loaded.runbook.steps.iter().any(|s| {
        let t = s.with.to_json().to_string();
        t.contains("${target.") || t.contains("${source.")
    });
    if !directional {
        return Ok(());
    }
    let refuse = |e: crate::topology::TopologyError| {
        let hint = e.hint();
        CliError::new(exit::INVALID_INPUT, e.to_string()).hint(hint)
    };
    crate::topology::check_direction(env, target).map_err(refuse)?;
    crate::topology::check_identity(env, &env.active_region, target)
        .await
        .map_err(refuse)
}

/// Renders the plan; with `check`, runs every step's preflight (never its
/// `execute`) and judges it ([`preflight::judge`]). Returns the text and
/// the steps found to be problems (none: every preflight passed or is
/// expected to pass after the steps it depends on).
pub async fn render_plan(
    a: &PlanArgs<'_>,
    loaded: &Loaded,
    store: Arc<dyn Store>,
    output: OutputFormat,
) -> Result<(String, Vec<String>), CliError> {
    let params = resolve_params(&loaded.runbook, &parse_params(a.params)?)?;
    let target = target_region(loaded.env.as_deref(), a.region)?;
    check_topology(loaded, target.as_deref()).await?;
    let run = json!({"id": "(plan)", "mode": a.mode.as_str(), "target_region": target, "source_region": loaded.env.as_ref().map(|e| e.active_region.clone()), "operator": super::operator()});
    let scope = scope_for(
        &params,
        loaded.env.as_deref(),
        target.as_deref(),
        run,
        &BTreeMap::new(),
    );
    let rb = &loaded.runbook;
    if a.check {
        // Preflights run probes whose answers may print a secret: mask
        // every one the runbook can use.
        crate::secretscan::register_references(rb, loaded.env.as_deref(), &params);
    }
    let mut o = String::new();
    let mut problems = Vec::new();
    let mut json_steps = Vec::new();
    // Which steps run at all, and so which earlier steps change what a
    // later step's preflight sees.
    let skipped_ids: std::collections::BTreeSet<String> = rb
        .steps
        .iter()
        .filter(|s| skip_reason(a, loaded, &scope, s).is_some())
        .map(|s| s.id.clone())
        .collect();
    let ancestors = preflight::mutating_ancestors(rb, &loaded.plan, &loaded.registry, &skipped_ids);
    // A drill on the lab kills the primary region before step 1.
    let lab_drill =
        a.mode == Mode::Drill && loaded.env.as_ref().is_some_and(|e| e.lab_control.is_some());
    let _ = writeln!(o, "Plan: runbook `{}` ({})", rb.name, rb.file.path);
    if let Some(env) = &loaded.env {
        let _ = writeln!(
            o,
            "  environment `{}`: {} -> {}",
            env.name,
            env.active_region,
            target.as_deref().unwrap_or("?")
        );
    }
    let _ = writeln!(o, "  mode: {}", a.mode.as_str());
    if let Some(d) = &rb.description {
        let _ = writeln!(o, "  {}", d.trim());
    }
    for (i, wave) in loaded.plan.waves.iter().enumerate() {
        let _ = writeln!(
            o,
            "\nWave {}{}:",
            i + 1,
            if wave.len() > 1 { " (in parallel)" } else { "" }
        );
        for id in wave {
            let Some(step) = rb.step(id) else { continue };
            let resolved = resolve_for_plan(&scope, &step.with.to_json());
            let action = loaded.registry.get(&step.action);
            let skipped = skip_reason(a, loaded, &scope, step);
            let desc = action.map(|x| x.describe(&resolved)).unwrap_or_default();
            let _ = writeln!(
                o,
                "  {id:<22} {:<18} {desc}{}",
                step.action,
                match &skipped {
                    Some(why) => format!("  (skipped: {why})"),
                    None => String::new(),
                }
            );
            if !step.needs.is_empty() {
                let _ = writeln!(
                    o,
                    "  {:<22} needs: {}",
                    "",
                    step.needs
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let mut pre_json = Value::Null;
            if a.check && skipped.is_none() {
                if let Some(action) = action {
                    let ctx = StepContext {
                        run_id: "(plan)".into(),
                        step_id: id.clone(),
                        mode: a.mode,
                        env: loaded.env.clone(),
                        target_region: target.clone(),
                        store: store.clone(),
                        options: RunOptions::default(),
                        operator: super::operator(),
                        started_by: super::operator(),
                        attempt: 1,
                        deadline: Instant::now() + preflight::STEP_PREFLIGHT_TIMEOUT,
                        failed_at: None,
                        runbook_dir: crate::environment::paths::base_dir(&rb.file.path),
                        progress: action::no_progress(),
                        checkpoints: action::Checkpoints::none(),
                        registry: loaded.registry.clone(),
                    };
                    // Values from earlier steps' outputs do not exist yet:
                    // probe with everything else, and say what was left out.
                    let (probe, later) = preflight::without_step_refs(&resolved);
                    let (pre, note) = match action.prepare(&probe) {
                        Ok(step) => (
                            preflight::run(Ok(step), &ctx).await,
                            (!later.is_empty()).then(|| {
                                format!(
                                    "probed without {} (from earlier steps' outputs, known at run time)",
                                    later
                                        .iter()
                                        .map(|k| format!("`{k}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            }),
                        ),
                        Err(_) if !later.is_empty() => (
                            action::Preflight::ok(
                                "not probed: its parameters need earlier steps' outputs; checked at run time",
                            ),
                            None,
                        ),
                        Err(e) => (preflight::run(Err(e), &ctx).await, None),
                    };
                    let after = match ancestors.get(id).map(Vec::as_slice) {
                        Some(a) if !a.is_empty() => preflight::Earlier::Steps(a),
                        _ if lab_drill => preflight::Earlier::Injection,
                        _ => preflight::Earlier::Steps(&[]),
                    };
                    let tolerated = step.on_failure == crate::runbook::OnFailure::Continue;
                    let judged = preflight::judge(&pre, after, tolerated);
                    if judged.problem {
                        problems.push(id.clone());
                    }
                    for (marker, l) in &judged.lines {
                        let _ = writeln!(o, "  {:<22} {marker} {l}", "");
                    }
                    if let Some(n) = &note {
                        let _ = writeln!(o, "  {:<22} note: {n}", "");
                    }
                    pre_json = judged.json;
                    pre_json["note"] = json!(note);
                }
            }
            json_steps.push(json!({"id": id, "wave": i + 1, "action": step.action, "with": resolved, "skipped": skipped, "describe": desc, "preflight": pre_json}));
        }
    }
    if output == OutputFormat::Json {
        let v = json!({"runbook": rb.name, "mode": a.mode.as_str(), "target_region": target, "steps": json_steps, "preflight_ok": problems.is_empty(), "problems": problems});
        return Ok((
            serde_json::to_string_pretty(&v).unwrap_or_default(),
            problems,
        ));
    }
    Ok((o, problems))
}

/// Why a step will not run in this plan's mode and environment, if so.
fn skip_reason(
    a: &PlanArgs<'_>,
    loaded: &Loaded,
    scope: &crate::expr::Scope,
    step: &crate::runbook::Step,
) -> Option<String> {
    if !step.when.applies(a.mode) {
        Some(format!("when {}", step.when.as_str()))
    } else if loaded.env.is_some() {
        crate::engine::run::missing_env_ref(scope, step)
            .map(|r| format!("the environment has no `{r}`"))
    } else {
        None
    }
}

pub async fn cmd_plan(
    a: PlanArgs<'_>,
    store: Arc<dyn Store>,
    output: OutputFormat,
    registry: &Arc<Registry>,
) -> Result<i32, CliError> {
    let dir = Direction {
        source: None,
        target: a.region,
    };
    let active = recorded_active(store.as_ref(), a.env).await;
    let loaded = load_with(a.runbook, a.env, dir, registry, active.as_deref())?;
    let (text, problems) = render_plan(&a, &loaded, store, output).await?;
    ui::out(&text);
    if a.check && !problems.is_empty() {
        return Err(CliError::new(
            exit::PREFLIGHT_FAILED,
            format!(
                "preflight found problems in {} (marked PROBLEM above)",
                problems
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .hint("fix what they name, or wait until the steps would pass, then plan again"));
    }
    Ok(exit::OK)
}

pub fn cmd_schema(registry: &Registry) -> i32 {
    let mut schema = serde_json::to_value(schemars::schema_for!(crate::runbook::RunbookDoc))
        .unwrap_or(Value::Null);
    // Editors complete action kinds from this list.
    let kinds = registry.kinds();
    if let Some(p) = schema.pointer_mut("/$defs/StepDoc/properties/action") {
        p["enum"] = json!(kinds);
    }
    // Per-kind `with:` schemas: `exec` from the model (ExecWithDoc), and
    // any kind that publishes its own.
    let exec = serde_json::to_value(schemars::schema_for!(crate::runbook::model::ExecWithDoc))
        .unwrap_or(Value::Null);
    let defs = exec
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut own = exec;
    if let Some(o) = own.as_object_mut() {
        o.remove("$defs");
        o.remove("$schema");
    }
    let mut per_kind: Vec<Value> = vec![json!({
        "if": {"properties": {"action": {"const": "exec"}}, "required": ["action"]},
        "then": {"properties": {"with": {"$ref": "#/$defs/ExecWithDoc"}}}
    })];
    per_kind.extend(registry.iter().filter_map(|k| {
        k.with_schema().map(|w| {
            json!({
                "if": {"properties": {"action": {"const": k.kind()}}, "required": ["action"]},
                "then": {"properties": {"with": w}}
            })
        })
    }));
    if let Some(step) = schema.pointer_mut("/$defs/StepDoc") {
        step["allOf"] = json!(per_kind);
    }
    if let Some(all) = schema.get_mut("$defs").and_then(Value::as_object_mut) {
        all.insert("ExecWithDoc".into(), own);
        all.extend(defs);
    }
    ui::out(&serde_json::to_string_pretty(&schema).unwrap_or_default());
    exit::OK
}
