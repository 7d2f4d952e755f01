//! Drills: rehearse a failover for real and measure it.
//!
//! 1. Inject the failure. On the lab: refuse a lab not in its initial state
//!    (exit 22), take the environment's lease, stop the heartbeat writer and
//!    kill -9 the primary (optionally after pausing replication to create
//!    lag). Elsewhere the runbook's first step is the injection and the
//!    failure time is the run's start.
//! 2. Run the runbook in drill mode with that failure time.
//! 3. On the lab, still under the lease, restart the old primary isolated
//!    (read-only, its own port) to read the exact data loss (the truth); the
//!    engine journals it next to the estimate before releasing the lease.
//! 4. Compare RTO and RPO with the runbook's targets, append the result to
//!    the drill history, render the report.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use thiserror::Error;

use crate::engine::{self, EngineError, RunOutcome, RunSpec};
use crate::journal::{self, JournalError};
use crate::lab::LabError;
use crate::measure::{self, Measurements};
use crate::store::{Store, StoreError};

mod definition;
pub mod history;
pub mod isolated;
pub mod metrics;
pub mod scheduler;
pub use definition::{
    is_definition, load_definition, load_dir, DrillDef, DrillMode, DrillNotify, DrillSchedule,
};

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
    /// A drill rehearses a failover from the initial state: on a lab that
    /// already failed over it would measure nothing real (a promote that is
    /// a no-op, a truth of the previous drill).
    #[error("the {scope} is not in its initial state: {detail}; the primary now is {primary_now}; nothing was injected")]
    NotInitial {
        /// `lab` or `environment`: what to reset.
        scope: &'static str,
        detail: String,
        primary_now: String,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which drill a run rehearses, for its history record: the definition's
/// name (or, for `drctl drill RUNBOOK`, none: the runbook's name keys it).
#[derive(Debug, Clone)]
pub struct DrillLabel {
    pub name: Option<String>,
    pub mode: DrillMode,
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

/// How long a DR server in recovery may take to (re)connect its WAL
/// receiver before the lab counts as not initial (right after `lab up`
/// the receiver may still be starting).
const STREAMING_WAIT: Duration = Duration::from_secs(10);

/// Refuses a lab whose `pg-primary` is not a reachable primary or whose
/// `pg-dr` is not a streaming standby, naming the server that is primary.
pub async fn check_initial(control: &str) -> Result<(), DrillError> {
    let deadline = std::time::Instant::now() + STREAMING_WAIT;
    loop {
        let v = crate::lab::control(control, "GET", "/roles").await?;
        let servers = v["servers"].as_array().cloned().unwrap_or_default();
        let find = |n: &str| {
            servers
                .iter()
                .find(|s| s["name"] == n)
                .cloned()
                .unwrap_or(Value::Null)
        };
        let (p, d) = (find("pg-primary"), find("pg-dr"));
        let is_primary = |s: &Value| s["reachable"] == true && s["in_recovery"] == false;
        let primary_now = {
            let now: Vec<String> = [&p, &d]
                .iter()
                .filter(|s| is_primary(s))
                .map(|s| {
                    format!(
                        "{} ({})",
                        s["name"].as_str().unwrap_or("?"),
                        s["addr"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            if now.is_empty() {
                "none (no server answers as a primary)".to_string()
            } else {
                now.join(" and ")
            }
        };
        let refuse = |detail: String| {
            Err(DrillError::NotInitial {
                scope: "lab",
                detail,
                primary_now: primary_now.clone(),
            })
        };
        if v["primary_broken"] == true {
            return refuse(
                "its primary was broken (by a drill or `drctl lab break primary`)".into(),
            );
        }
        if !is_primary(&p) {
            return refuse(match p["reachable"] {
                Value::Bool(true) => "pg-primary is in recovery (a standby)".to_string(),
                _ => format!(
                    "pg-primary is unreachable ({})",
                    p["error"].as_str().unwrap_or("no answer")
                ),
            });
        }
        if d["reachable"] != true || d["in_recovery"] != true {
            return refuse(if d["reachable"] == true {
                "pg-dr is a primary, not a standby (promoted by an earlier failover)".to_string()
            } else {
                format!(
                    "pg-dr is unreachable ({})",
                    d["error"].as_str().unwrap_or("no answer")
                )
            });
        }
        if d["receiver_status"] == "streaming" {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return refuse(format!(
                "pg-dr is a standby but not streaming from pg-primary (receiver: {})",
                d["receiver_status"].as_str().unwrap_or("none")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The drill's work under the run's lease: check the lab, inject the
/// failure (before `run_started`, which carries the failure time), and
/// after the run measure the truth and hand it to the engine to journal.
struct LabHooks {
    control: String,
    inj: Injection,
    ui: engine::Ui,
    truth: std::sync::Mutex<Option<Value>>,
}

#[async_trait::async_trait]
impl engine::RunHooks for LabHooks {
    async fn before_start(&self) -> Result<Option<u64>, Box<dyn std::error::Error + Send + Sync>> {
        check_initial(&self.control).await?;
        (self.ui)(engine::UiEvent::Message(
            "injecting the failure: kill -9 of the primary region's Postgres and app".into(),
        ));
        Ok(Some(inject_lab(&self.control, &self.inj).await?))
    }

    async fn after_finish(&self, _outcome: &RunOutcome) -> Vec<engine::Note> {
        match crate::lab::control(&self.control, "POST", "/truth").await {
            Ok(v) => {
                *self.truth.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.clone());
                vec![engine::Note {
                    message: "RPO truth measured on the old primary restarted isolated".into(),
                    data: v,
                }]
            }
            Err(e) => {
                (self.ui)(engine::UiEvent::Message(format!(
                    "could not measure the RPO truth: {}",
                    crate::diag::error_chain(&e)
                )));
                Vec::new()
            }
        }
    }
}

/// How long each server may take to say its role before a drill outside
/// the lab starts.
const ROLE_PROBE: Duration = Duration::from_secs(5);

/// Outside the lab, the runbook injects the failure itself; before it does,
/// the environment must be in the state the drill rehearses a failover
/// from: the target region's Postgres a standby (else promote is a no-op
/// and the drill measures nothing) and the source region's not a standby.
/// A server that does not answer is not judged here: the runbook's own
/// steps report it, and a drill may rehearse exactly that.
struct EnvHooks {
    env: Arc<crate::environment::Environment>,
    source: String,
    target: String,
}

impl EnvHooks {
    async fn check(&self) -> Result<(), DrillError> {
        let role = |region: &str| {
            let server = crate::topology::server_of(&self.env, region);
            async move {
                let server = server?;
                let st = crate::postgres::ops::status_of(&server, ROLE_PROBE)
                    .await
                    .ok()?;
                Some((server.addr(), st.is_standby()))
            }
        };
        let (source, target) = tokio::join!(role(&self.source), role(&self.target));
        let primary_now = [(&self.source, &source), (&self.target, &target)]
            .iter()
            .filter_map(|(r, s)| match s {
                Some((addr, false)) => Some(format!("{r}.postgres ({addr})")),
                _ => None,
            })
            .collect::<Vec<_>>();
        let primary_now = if primary_now.is_empty() {
            "none that answered".to_string()
        } else {
            primary_now.join(" and ")
        };
        if let Some((addr, false)) = &target {
            return Err(DrillError::NotInitial {
                scope: "environment",
                detail: format!(
                    "the target region `{}`'s postgres ({addr}) is a primary, not a standby: promote would be a no-op (an earlier failover?)",
                    self.target
                ),
                primary_now,
            });
        }
        if let Some((addr, true)) = &source {
            return Err(DrillError::NotInitial {
                scope: "environment",
                detail: format!(
                    "the source region `{}`'s postgres ({addr}) is in recovery (a standby): `active_region` may be stale after a failover",
                    self.source
                ),
                primary_now,
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl engine::RunHooks for EnvHooks {
    async fn before_start(&self) -> Result<Option<u64>, Box<dyn std::error::Error + Send + Sync>> {
        self.check().await?;
        // The failure time is the run's start (the runbook injects it).
        Ok(None)
    }

    async fn after_finish(&self, _outcome: &RunOutcome) -> Vec<engine::Note> {
        Vec::new()
    }
}

/// An isolated drill injects nothing: before it starts, the lab (when it
/// is one) must be in its initial state, so the production invariants
/// asserted at the end are compared with a healthy start.
struct IsolatedHooks {
    control: Option<String>,
}

#[async_trait::async_trait]
impl engine::RunHooks for IsolatedHooks {
    async fn before_start(&self) -> Result<Option<u64>, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(c) = &self.control {
            check_initial(c).await?;
        }
        Ok(None)
    }

    async fn after_finish(&self, _outcome: &RunOutcome) -> Vec<engine::Note> {
        Vec::new()
    }
}

/// The clone step's phase times, for the history (copy apart from RTO).
fn clone_phases(view: &engine::view::RunView) -> Value {
    view.steps
        .iter()
        .find(|s| s.action == isolated::CLONE_KIND && s.status == journal::StepStatus::Succeeded)
        .map(|s| {
            json!({
                "copy_ms": s.outputs.get("copy_ms"),
                "consistent_ms": s.outputs.get("consistent_ms"),
                "promote_ms": s.outputs.get("promote_ms"),
                "copied_bytes": s.outputs.get("copied_bytes"),
            })
        })
        .unwrap_or(Value::Null)
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
    label: DrillLabel,
    ui: engine::Ui,
) -> Result<DrillResult, DrillError> {
    if label.mode == DrillMode::Isolated {
        spec.options.isolated = true;
        spec.failed_at_ms = Some(journal::now_ms());
        spec.hooks = Some(Arc::new(IsolatedHooks {
            control: lab_control.clone(),
        }));
    }
    // On the lab the lease is taken before the injection and held across
    // the run and the truth: the engine runs the hooks inside it.
    let lab_control = lab_control.filter(|_| label.mode == DrillMode::Full);
    let hooks = lab_control.map(|control| {
        Arc::new(LabHooks {
            control,
            inj,
            ui: ui.clone(),
            truth: std::sync::Mutex::new(None),
        })
    });
    spec.failed_at_ms = match &hooks {
        Some(_) => None,
        None => spec.failed_at_ms.or(Some(journal::now_ms())),
    };
    spec.hooks = match (&hooks, &spec.env) {
        _ if label.mode == DrillMode::Isolated => spec.hooks.take(),
        (Some(h), _) => Some(h.clone() as Arc<dyn engine::RunHooks>),
        (None, Some(env)) => spec.target_region.clone().map(|target| {
            Arc::new(EnvHooks {
                env: env.clone(),
                source: env.active_region.clone(),
                target,
            }) as Arc<dyn engine::RunHooks>
        }),
        (None, None) => None,
    };
    let outcome = match engine::start(store.clone(), spec, ui.clone()).await {
        Ok(o) => o,
        Err(EngineError::Hook(e)) => {
            return Err(match e.downcast::<DrillError>() {
                Ok(d) => *d,
                Err(other) => DrillError::Engine(EngineError::Hook(other)),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let truth = hooks.and_then(|h| h.truth.lock().unwrap_or_else(|p| p.into_inner()).take());
    let view = engine::run::load_view_only(store.as_ref(), &outcome.run_id).await?;
    let m = measure::from_view(&view);
    // Verdicts from `measure`: a failed drill or an unknown figure is never "met".
    let rto_met = m.as_ref().and_then(|m| m.rto_verdict.met());
    let rpo_met = m.as_ref().and_then(|m| m.rpo_verdict.met());
    let record = json!({
        "run_id": outcome.run_id,
        "drill": label.name.clone().unwrap_or_else(|| view.runbook.name.clone()),
        "mode": label.mode.as_str(),
        "finished_at": journal::format_ms(journal::now_ms()),
        "runbook": view.runbook.name,
        "environment": view.environment.as_ref().map(|e| e.name.clone()),
        "status": outcome.status.as_str(),
        "failed_at": view.failed_at_ms.map(journal::format_ms),
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
        "isolated": (label.mode == DrillMode::Isolated).then(|| clone_phases(&view)),
    });
    store.append_history(HISTORY, &record).await?;
    // Rendered after the history holds this drill, so its trend ends
    // with it (the same report `drctl report RUN` renders).
    let history = store.read_history(HISTORY).await?;
    let trend = crate::report::trend::select(&view, &history, crate::report::trend::WINDOW);
    let inputs = crate::report::Inputs {
        trend_window: if trend.is_empty() {
            0
        } else {
            crate::report::trend::WINDOW
        },
        trend,
        ..crate::report::Inputs::plain(crate::report::Format::Md)
    };
    let report = crate::report::render(&view, &inputs);
    let report_path = store
        .put_artifact(&outcome.run_id, "report.md", report.as_bytes())
        .await?;
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
        } else if let Some(why) = &m.truth_missing {
            o.push_str(&format!(
                "  RPO  truth: {why}; the figures above are estimates\n"
            ));
        }
        o.push_str(&format!("  RPO  {}\n", measure::rpo_line(m)));
    }
    o.push_str(&format!("  report: {}\n", r.report_path));
    o
}
