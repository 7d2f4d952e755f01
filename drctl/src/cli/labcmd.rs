//! `drill`, `lab` and `heartbeat` commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{ui, CliError, LabCmd, OutputFormat, RunArgs};
use crate::action::Registry;
use crate::exit;
use crate::runbook::Mode;
use crate::store::Store;

pub async fn cmd_drill(
    file: &Path,
    region: Option<&str>,
    inject_lag: Option<Duration>,
    args: &RunArgs,
    store: Arc<dyn Store>,
    output: OutputFormat,
    registry: &Arc<Registry>,
) -> Result<i32, CliError> {
    // A drill definition names the runbook, environment and injection;
    // flags given on the command line win.
    let text = std::fs::read_to_string(file).unwrap_or_default();
    if crate::drill::is_definition(&text) {
        let def = crate::drill::load_definition(file).map_err(CliError::invalid)?;
        return run_definition(
            &def, region, inject_lag, args, store, output, registry, None,
        )
        .await;
    }
    let opts = super::drillscmd::DrillOpts {
        label: crate::drill::DrillLabel {
            name: None,
            mode: crate::drill::DrillMode::Full,
        },
        targets: (None, None),
        notify: None,
        run_id: None,
    };
    run_drill(
        file, region, inject_lag, args, opts, store, output, registry,
    )
    .await
}

/// Runs a drill definition (`drctl drill FILE`, `drctl daemon`): its
/// environment, parameters, injection and targets, under the flags given.
/// `run_id` names the run in advance (the scheduler claims its slot with it).
#[allow(clippy::too_many_arguments)]
pub async fn run_definition(
    def: &crate::drill::DrillDef,
    region: Option<&str>,
    inject_lag: Option<Duration>,
    args: &RunArgs,
    store: Arc<dyn Store>,
    output: OutputFormat,
    registry: &Arc<Registry>,
    run_id: Option<String>,
) -> Result<i32, CliError> {
    let mut a = args.clone();
    if a.env.is_none() {
        a.env = def.environment.clone();
    }
    let mut params = def.params.clone();
    params.extend(a.params.iter().cloned());
    a.params = params;
    let opts = super::drillscmd::DrillOpts {
        label: crate::drill::DrillLabel {
            name: Some(def.name.clone()),
            mode: def.mode,
        },
        targets: (def.rto_target, def.rpo_target),
        notify: def.notify.clone(),
        run_id,
    };
    run_drill(
        &def.runbook,
        region,
        inject_lag.or(def.inject_lag),
        &a,
        opts,
        store,
        output,
        registry,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run_drill(
    runbook: &Path,
    region: Option<&str>,
    inject_lag: Option<Duration>,
    args: &RunArgs,
    opts: super::drillscmd::DrillOpts,
    store: Arc<dyn Store>,
    output: OutputFormat,
    registry: &Arc<Registry>,
) -> Result<i32, CliError> {
    let targets = opts.targets;
    let mut prepared = super::runs::prepare(
        runbook,
        region,
        Mode::Drill,
        args,
        store.clone(),
        None,
        registry,
        lab_active(args.env.as_deref()),
    )
    .await?;
    // The definition's targets win over the runbook's; they are journaled
    // in `run_started` like the runbook's would be.
    if targets.0.is_some() || targets.1.is_some() {
        let mut rb = (*prepared.spec.runbook).clone();
        rb.rto = targets.0.or(rb.rto);
        rb.rpo = targets.1.or(rb.rpo);
        prepared.spec.runbook = Arc::new(rb);
    }
    // Named up front: the scheduler claims its slot with it, and the
    // "started" notification carries it.
    let run_id = opts.run_id.unwrap_or_else(crate::engine::new_run_id);
    prepared.spec.run_id = Some(run_id.clone());
    let lab = prepared
        .spec
        .env
        .as_ref()
        .and_then(|e| e.lab_control.clone());
    let isolated = opts.label.mode == crate::drill::DrillMode::Isolated;
    if output == OutputFormat::Human {
        ui::err(&prepared.plan_text);
        ui::err(match &lab {
            _ if isolated => "isolated drill: nothing is injected; the DR standby is cloned and the clone promoted, production is not touched",
            Some(_) => "failure injection: the lab's primary region will be killed (kill -9) when the drill starts",
            None => "failure injection: none by drctl; the failure time is the start of the run (make the runbook's first step inject it)",
        });
    }
    if inject_lag.is_some() && (lab.is_none() || isolated) {
        return Err(
            CliError::new(exit::USAGE, "--inject-lag needs a lab environment")
                .hint("`drctl lab up` writes one"),
        );
    }
    ui::confirm(
        &format!("About to run drill `{}`.", prepared.spec.runbook.name),
        args.yes,
    )?;
    let tell = super::drillscmd::Notifier::new(
        opts.notify,
        prepared.spec.env.clone(),
        &run_id,
        &opts.label,
        &prepared.spec.runbook.name,
    );
    tell.started().await;
    let env = prepared.spec.env.clone();
    let target = prepared.spec.target_region.clone();
    let state = store.clone();
    let r = crate::drill::run(
        store,
        prepared.spec,
        lab,
        crate::drill::Injection { lag: inject_lag },
        opts.label,
        ui::human_ui(output == OutputFormat::Json),
    )
    .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            let e = CliError::from(e);
            tell.finished(&format!("could not run: {}", e.message), e.code)
                .await;
            return Err(e);
        }
    };
    if output == OutputFormat::Json {
        ui::out(&serde_json::json!({
            "run_id": r.outcome.run_id, "status": r.outcome.status.as_str(), "measurements": r.measurements,
            "rpo_truth": r.truth, "rto_met": r.rto_met, "rpo_met": r.rpo_met, "report": r.report_path,
        }).to_string());
    } else {
        ui::out(&crate::drill::summary(&r));
    }
    // A drill that promoted moved the primary for real (on the lab too):
    // where it runs now is recorded, so `failback` and the next run see it.
    if super::runs::outcome_code(&r.outcome) == exit::OK && !isolated {
        super::failback::record_active(
            state.as_ref(),
            env.as_deref(),
            target.as_deref(),
            &r.outcome.run_id,
            "drill",
        )
        .await;
    }
    let code = drill_code(&r);
    let summary = crate::drill::summary(&r);
    tell.finished(summary.trim_end(), code).await;
    Ok(code)
}

/// The drill's exit code: the run's, or `TARGET_MISSED` when a target the
/// drill could not show met (unknown figure, no proof of recovery).
fn drill_code(r: &crate::drill::DrillResult) -> i32 {
    let code = super::runs::outcome_code(&r.outcome);
    if code != exit::OK {
        return code;
    }
    let unproven = |v: &crate::measure::Verdict| {
        !matches!(
            v,
            crate::measure::Verdict::Met | crate::measure::Verdict::NoTarget
        )
    };
    let not_met = r
        .measurements
        .as_ref()
        .is_some_and(|m| unproven(&m.rto_verdict) || unproven(&m.rpo_verdict));
    if not_met || r.rto_met == Some(false) || r.rpo_met == Some(false) {
        exit::TARGET_MISSED
    } else {
        exit::OK
    }
}

/// On a lab the drill runs from `primary` whatever a store recorded: the
/// lab breaks `pg-primary`, and the drill refuses a lab whose primary is
/// not there (its initial-state check).
fn lab_active(env: Option<&Path>) -> Option<String> {
    let (e, _) = crate::environment::load_environment(env?).ok()?;
    e.lab_control.map(|_| "primary".to_string())
}

fn lab_dir(dir: &Option<PathBuf>, state: &Path) -> PathBuf {
    dir.clone()
        .unwrap_or_else(|| crate::lab::default_dir(state))
}

pub async fn cmd_lab(
    cmd: &LabCmd,
    state_dir: &Path,
    output: OutputFormat,
) -> Result<i32, CliError> {
    match cmd {
        LabCmd::Up { dir, state_backend } => {
            let dir = lab_dir(dir, state_dir);
            let st = crate::lab::up(&dir, state_dir, *state_backend).await.map_err(|e| {
                CliError::from(e).hint("are the lab packages installed? (bash scripts/install-deps.sh: postgresql-15, pdns-server, pdns-backend-sqlite3, sqlite3)")
            })?;
            if output == OutputFormat::Json {
                ui::out(&serde_json::to_string_pretty(&st).unwrap_or_default());
            } else {
                ui::out(&crate::lab::render(&st));
                ui::out(&format!(
                    "next:\n  drctl drill runbooks/failover.yaml --env {} --yes     # fail over, measure RTO/RPO\n  drctl lab status | drctl lab break primary | drctl lab down",
                    st.env_file.display()
                ));
            }
            Ok(exit::OK)
        }
        LabCmd::Status { dir } => {
            let dir = lab_dir(dir, state_dir);
            let Some(st) = crate::lab::read_state(&dir) else {
                return Err(
                    CliError::new(exit::NOT_FOUND, format!("no lab in {}", dir.display()))
                        .hint("start one with `drctl lab up`"),
                );
            };
            let st = match crate::lab::running(&dir) {
                Some(s) => crate::lab::control(&s.control, "GET", "/status")
                    .await
                    .ok()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or(s),
                None => st,
            };
            if output == OutputFormat::Json {
                ui::out(&serde_json::to_string_pretty(&st).unwrap_or_default());
            } else {
                ui::out(&crate::lab::render(&st));
            }
            Ok(exit::OK)
        }
        LabCmd::Down { dir } => {
            let dir = lab_dir(dir, state_dir);
            let stopped = crate::lab::down(&dir).await;
            if output == OutputFormat::Json {
                ui::out(&serde_json::json!({"stopped": stopped}).to_string());
                return Ok(exit::OK);
            }
            ui::out(if stopped {
                "lab stopped; its servers and data are gone"
            } else {
                "no running lab"
            });
            Ok(exit::OK)
        }
        LabCmd::Break { dir, .. } => {
            let dir = lab_dir(dir, state_dir);
            let st = crate::lab::running(&dir).ok_or_else(|| {
                CliError::new(exit::NOT_FOUND, "no running lab").hint("`drctl lab up`")
            })?;
            let v = crate::lab::control(&st.control, "POST", "/break/primary").await?;
            // The lab's own clock says when; a missing time is not "1970".
            let at = v["failed_at_ms"].as_u64();
            if output == OutputFormat::Json {
                ui::out(&serde_json::json!({"broken": "primary", "failed_at_ms": at}).to_string());
            } else {
                ui::out(&match at {
                    Some(ms) => format!(
                        "primary region broken (kill -9) at {}",
                        crate::journal::format_ms(ms)
                    ),
                    None => "primary region broken (kill -9); the lab did not report when".into(),
                });
            }
            Ok(exit::OK)
        }
        LabCmd::Backup { dir, kind } => {
            let dir = lab_dir(dir, state_dir);
            let st = crate::lab::running(&dir).ok_or_else(|| {
                CliError::new(exit::NOT_FOUND, "no running lab").hint("`drctl lab up`")
            })?;
            let port = st.ports.get("pg-primary").copied().unwrap_or(0);
            if kind == "pgbackrest" {
                use crate::lab::pgbackrest as br;
                let data = st.data_root.join("primary");
                let label = br::backup(&st.spec, &data, port).await?;
                br::add_to_env(&st.env_file, &st.spec)?;
                if output == OutputFormat::Json {
                    ui::out(
                        &serde_json::json!({"kind": "pgbackrest", "stanza": br::STANZA, "label": label,
                            "config": br::config_file(&st.spec), "source": br::SOURCE})
                        .to_string(),
                    );
                } else {
                    ui::out(&format!(
                        "pgbackrest full backup of pg-primary: stanza {}, {label} ({})\nnext: drctl verify-backup --env {} --source {}",
                        br::STANZA,
                        br::config_file(&st.spec).display(),
                        st.env_file.display(),
                        br::SOURCE
                    ));
                }
                return Ok(exit::OK);
            }
            let dest = crate::lab::pg::base_backup(&st.spec, port).await?;
            if output == OutputFormat::Json {
                ui::out(&serde_json::json!({"kind": "basebackup", "backup": dest}).to_string());
            } else {
                ui::out(&format!(
                    "base backup of pg-primary: {}\nnext: drctl verify-backup --env {}",
                    dest.display(),
                    st.env_file.display()
                ));
            }
            Ok(exit::OK)
        }
        LabCmd::Supervise { dir, state_backend } => {
            crate::lab::supervisor::supervise(dir.clone(), state_dir.to_path_buf(), *state_backend)
                .await?;
            Ok(exit::OK)
        }
    }
}

pub async fn cmd_heartbeat(
    env: &Path,
    region: &str,
    interval: Duration,
    store: Arc<dyn Store>,
) -> Result<i32, CliError> {
    let (e, d) = crate::environment::load_environment(env).map_err(CliError::invalid)?;
    if d.has_errors() {
        return Err(CliError::invalid(d));
    }
    let comp = e.component(region, "postgres").ok_or_else(|| {
        CliError::new(
            exit::INVALID_INPUT,
            format!("region `{region}` has no postgres in {}", env.display()),
        )
    })?;
    let server = crate::action::decode_resolved("heartbeat", comp, |ctx, n| {
        crate::postgres::PgServer::decode(ctx, n, "postgres")
    })
    .map_err(|err| CliError::new(exit::INVALID_INPUT, err.to_string()))?;
    ui::err(&format!(
        "heartbeat -> {} every {} (Ctrl-C to stop); status in {}",
        server.addr(),
        crate::duration::format_duration(interval),
        store.describe()
    ));
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    crate::postgres::heartbeat::run_writer(server, interval, store, e.name.clone(), stop).await;
    Ok(exit::OK)
}
