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
    let (runbook, inject_lag, args) = if crate::drill::is_definition(&text) {
        let def = crate::drill::load_definition(file).map_err(CliError::invalid)?;
        let mut a = args.clone();
        if a.env.is_none() {
            a.env = def.environment.clone();
        }
        let mut params = def.params.clone();
        params.extend(a.params.iter().cloned());
        a.params = params;
        (def.runbook.clone(), inject_lag.or(def.inject_lag), a)
    } else {
        (file.to_path_buf(), inject_lag, args.clone())
    };
    let (runbook, args) = (runbook.as_path(), &args);
    let prepared = super::runs::prepare(
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
    let lab = prepared
        .spec
        .env
        .as_ref()
        .and_then(|e| e.lab_control.clone());
    if output == OutputFormat::Human {
        ui::err(&prepared.plan_text);
        ui::err(match &lab {
            Some(_) => "failure injection: the lab's primary region will be killed (kill -9) when the drill starts",
            None => "failure injection: none by drctl; the failure time is the start of the run (make the runbook's first step inject it)",
        });
    }
    if inject_lag.is_some() && lab.is_none() {
        return Err(
            CliError::new(exit::USAGE, "--inject-lag needs a lab environment")
                .hint("`drctl lab up` writes one"),
        );
    }
    ui::confirm(
        &format!("About to run drill `{}`.", prepared.spec.runbook.name),
        args.yes,
    )?;
    let env = prepared.spec.env.clone();
    let target = prepared.spec.target_region.clone();
    let state = store.clone();
    let r = crate::drill::run(
        store,
        prepared.spec,
        lab,
        crate::drill::Injection { lag: inject_lag },
        ui::human_ui(output == OutputFormat::Json),
    )
    .await
    .map_err(CliError::from)?;
    if output == OutputFormat::Json {
        ui::out(&serde_json::json!({
            "run_id": r.outcome.run_id, "status": r.outcome.status.as_str(), "measurements": r.measurements,
            "rpo_truth": r.truth, "rto_met": r.rto_met, "rpo_met": r.rpo_met, "report": r.report_path,
        }).to_string());
    } else {
        ui::out(&crate::drill::summary(&r));
    }
    let code = super::runs::outcome_code(&r.outcome);
    // A drill that promoted moved the primary for real (on the lab too):
    // where it runs now is recorded, so `failback` and the next run see it.
    if code == exit::OK {
        super::failback::record_active(
            state.as_ref(),
            env.as_deref(),
            target.as_deref(),
            &r.outcome.run_id,
            "drill",
        )
        .await;
    }
    if code != exit::OK {
        return Ok(code);
    }
    // A target the drill could not show met (unknown figure, no proof of
    // recovery) is not a pass.
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
    Ok(
        if not_met || r.rto_met == Some(false) || r.rpo_met == Some(false) {
            exit::TARGET_MISSED
        } else {
            exit::OK
        },
    )
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
