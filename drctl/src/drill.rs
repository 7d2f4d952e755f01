//! Drills: rehearse a failover for real and measure it.
//!
//! 1. Inject the failure. On the lab: kill -9 the primary (optionally after
//!    pausing replication to create lag). Elsewhere the runbook's first step
//!    is the injection and the failure time is the run's start.
//! 2. Run the runbook in drill mode with that failure time.
//! 3. On the lab, restart the old primary to read the exact data loss (the
//!    truth) and journal it next to the estimate.
//! 4. Compare RTO and RPO with the runbook's targets, append the result to
//!    the drill history, render the report.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use thiserror::Error;

use crate::engine::{self, EngineError, RunOutcome, RunSpec};
use crate::journal::{self, Event, JournalError, JournalWriter};
use crate::lab::LabError;
use crate::measure::{self, Measurements};
use crate::store::{Store, StoreError};

pub const HISTORY: &str = "drills";

/// Why a drill could not run or be recorded. The run's own outcome
/// (failed, interrupted) is not an error: it is in [`DrillResult`].
#[derive(Debug, Error)]
pub enum DrillError {
    /// Injecting the failure or measuring the truth through the lab.
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("lab did not report the failure time")]
    NoFailureTime,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Default)]
pub struct Injection {
    /// Pause WAL shipping this long before breaking the primary.
    pub lag: Option<Duration>,
}

/// Breaks the lab's primary; returns the failure time (ms).
pub async fn inject_lab(control: &str, inj: &Injection) -> Result<u64, DrillError> {
    if let Some(lag) = inj.lag {
        crate::lab::control(control, "POST", "/lag/primary").await?;
        tokio::time::sleep(lag).await;
    }
    let v = crate::lab::control(control, "POST", "/break/primary").await?;
    v["failed_at_ms"].as_u64().ok_or(DrillError::NoFailureTime)
}

/// Appends a note to a finished run's journal (the truth arrives after the
/// run ended). It takes the environment's lease like any writer, and the
/// chain is verified first, as for any append.
pub async fn append_note(
    store: &Arc<dyn Store>,
    lease_name: &str,
    run_id: &str,
    message: &str,
    data: Value,
) -> Result<(), DrillError> {
    let holder = crate::store::HolderId::this_process(run_id);
    let grant = store
        .acquire_lease(
            lease_name,
            crate::store::LeaseMode::Exclusive,
            &holder,
            engine::lease_ttl(),
        )
        .await?;
    let res = async {
        let bytes = store.read_journal(run_id).await?;
        let v = journal::verify(&bytes)?;
        let mut w = JournalWriter::resume(
            store.clone(),
            run_id,
            grant.lease.clone(),
            v.records.len() as u64,
            v.head,
        );
        w.append(Event::Note {
            step: None,
            message: message.to_string(),
            data,
        })
        .await?;
        Ok::<_, DrillError>(())
    }
    .await;
    let _ = store.release_lease(&grant.lease).await;
    res
}

pub struct DrillResult {
    pub outcome: RunOutcome,
    pub measurements: Option<Measurements>,
    pub rto_met: Option<bool>,
    pub rpo_met: Option<bool>,
    pub truth: Option<Value>,
    pub report_path: String,
}

pub async fn run(
    store: Arc<dyn Store>,
    mut spec: RunSpec,
    lab_control: Option<String>,
    inj: Injection,
    ui: engine::Ui,
) -> Result<DrillResult, DrillError> {
    let failed_at = match &lab_control {
        Some(c) => {
            ui(engine::UiEvent::Message(
                "injecting the failure: kill -9 of the primary region's Postgres and app".into(),
            ));
            inject_lab(c, &inj).await?
        }
        None => journal::now_ms(),
    };
    spec.failed_at_ms = Some(failed_at);
    let lease_name = engine::lock_name(spec.env.as_deref());
    let outcome = engine::start(store.clone(), spec, ui.clone()).await?;
    let mut truth = None;
    if let Some(c) = &lab_control {
        match crate::lab::control(c, "POST", "/truth").await {
            Ok(v) => {
                append_note(
                    &store,
                    &lease_name,
                    &outcome.run_id,
                    "RPO truth measured on the restarted old primary",
                    v.clone(),
                )
                .await?;
                truth = Some(v);
            }
            Err(e) => ui(engine::UiEvent::Message(format!(
                "could not measure the RPO truth: {}",
                crate::diag::error_chain(&e)
            ))),
        }
    }
    let (view, _) = engine::run::load_view_pub(store.as_ref(), &outcome.run_id).await?;
    let m = measure::from_view(&view);
    // Verdicts from `measure`: a failed drill or an unknown figure is never "met".
    let rto_met = m.as_ref().and_then(|m| m.rto_verdict.met());
    let rpo_met = m.as_ref().and_then(|m| m.rpo_verdict.met());
    let report = crate::report::markdown(&view);
    let report_path = store
        .put_artifact(&outcome.run_id, "report.md", report.as_bytes())
        .await?;
    let record = json!({
        "run_id": outcome.run_id,
        "runbook": view.runbook.name,
        "environment": view.environment.as_ref().map(|e| e.name.clone()),
        "status": outcome.status.as_str(),
        "failed_at": journal::format_ms(failed_at),
        "rto_ms": m.as_ref().and_then(|m| m.rto_ms),
        "rto_target_ms": view.rto_target_ms,
        "rpo_time_ms": m.as_ref().and_then(|m| m.rpo_time_ms()),
        "rpo_target_ms": view.rpo_target_ms,
        "rpo": m.as_ref().map(|m| m.rpo.clone()),
        "rpo_truth": truth,
        "rto_met": rto_met,
        "rpo_met": rpo_met,
        "rto_verdict": m.as_ref().map(|m| m.rto_verdict.clone()),
        "rpo_verdict": m.as_ref().map(|m| m.rpo_verdict.clone()),
        "journal_head": view.head,
    });
    store.append_history(HISTORY, &record).await?;
    Ok(DrillResult {
        outcome,
        measurements: m,
        rto_met,
        rpo_met,
        truth,
        report_path,
    })
}

pub fn summary(r: &DrillResult) -> String {
    let mut o = format!(
        "\ndrill {}: run {}\n",
        r.outcome.status.as_str(),
        r.outcome.run_id
    );
    if let Some(m) = &r.measurements {
        o.push_str(&format!("  RTO  {}\n", measure::rto_line(m)));
        for (step, v) in &m.rpo {
            o.push_str(&format!(
                "  RPO  estimate ({step}): {} (methods and bounds: see the report)\n",
                measure::figures_line(v)
            ));
        }
        if let Some(t) = &r.truth {
            o.push_str(&format!("  RPO  truth: {}\n", measure::describe_truth(t)));
            for c in measure::comparisons(&m.rpo, t) {
                o.push_str(&format!("  RPO  {c}\n"));
            }
        }
        o.push_str(&format!("  RPO  {}\n", measure::rpo_line(m)));
    }
    o.push_str(&format!("  report: {}\n", r.report_path));
    o
}

/// A drill definition (`drills/*.yaml`): what to rehearse, where, how to
/// inject the failure, and when it runs on a schedule.
#[derive(Debug, Clone)]
pub struct DrillDef {
    pub name: String,
    pub runbook: std::path::PathBuf,
    pub environment: Option<std::path::PathBuf>,
    pub inject_lag: Option<Duration>,
    pub params: Vec<String>,
    /// Five-field cron expression, for the scheduler that runs the drill
    /// (a Kubernetes CronJob, cron); drctl itself does not wait for it.
    pub schedule: Option<String>,
}

/// Whether a file is a drill definition rather than a runbook.
pub fn is_definition(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("runbook:"))
}

pub fn load_definition(path: &std::path::Path) -> Result<DrillDef, crate::diag::Diagnostics> {
    use crate::decode::{Ctx, MapReader};
    let (file, _) = crate::yaml::load_source(path, "drill definition", "see drills/ for examples")?;
    let mut diags = crate::diag::Diagnostics::default();
    let Some(root) = crate::yaml::parse(&file, &mut diags) else {
        return Err(diags);
    };
    let base = path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut ctx = Ctx::new(&file, &mut diags);
    let Some(mut r) = MapReader::new(&mut ctx, &root, "drill definition") else {
        return Err(diags);
    };
    let name = r.req(&mut ctx, "name").and_then(|n| ctx.string(n, "name"));
    r.opt("description")
        .and_then(|n| ctx.string(n, "description"));
    let runbook = r
        .req(&mut ctx, "runbook")
        .and_then(|n| ctx.string(n, "runbook"))
        .map(|p| base.join(p));
    let environment = r
        .opt("environment")
        .and_then(|n| ctx.string(n, "environment"))
        .map(|p| base.join(p));
    let inject_lag = r
        .opt("inject_lag")
        .and_then(|n| ctx.duration(n, "inject_lag"));
    let mut params = Vec::new();
    if let Some(p) = r.opt("params") {
        match p.as_map() {
            Some(entries) => {
                params = entries
                    .iter()
                    .map(|(k, v)| format!("{}={}", k.key_text(), v))
                    .collect()
            }
            None => ctx.expected(p, "a mapping of parameter values", "params"),
        }
    }
    let sched_node = r.opt("schedule");
    let schedule = sched_node.and_then(|n| ctx.string(n, "schedule"));
    if let (Some(s), Some(n)) = (&schedule, sched_node) {
        if s.split_whitespace().count() != 5 {
            ctx.error(
                "E-VALUE",
                n,
                format!("schedule `{s}` is not a five-field cron expression"),
                Some("e.g. \"0 3 * * 1\" (Mondays 03:00)".into()),
            );
        }
    }
    r.finish(&mut ctx);
    if diags.has_errors() {
        return Err(diags);
    }
    match (name, runbook) {
        (Some(name), Some(runbook)) => Ok(DrillDef {
            name,
            runbook,
            environment,
            inject_lag,
            params,
            schedule,
        }),
        _ => Err(diags),
    }
}
