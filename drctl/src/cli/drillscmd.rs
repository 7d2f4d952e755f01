//! `drctl drills list|history` and `drctl daemon`: drill definitions as a
//! product (schedules, results over time, an in-process scheduler).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{ui, CliError, OutputFormat, RunArgs};
use crate::action::Registry;
use crate::drill::history::{self, Entry};
use crate::drill::scheduler::{self, Action, DrillRunner, RunState};
use crate::drill::{DrillDef, HISTORY};
use crate::exit;
use crate::store::Store;

/// How one drill runs beyond its runbook and flags.
pub struct DrillOpts {
    pub label: crate::drill::DrillLabel,
    /// RTO/RPO targets overriding the runbook's.
    pub targets: (Option<Duration>, Option<Duration>),
    pub notify: Option<crate::drill::DrillNotify>,
    /// The run id to use (the scheduler's claim); a fresh one otherwise.
    pub run_id: Option<String>,
}

/// Drill notifications (started, finished, target missed) through the
/// environment's notify targets. A notification that cannot be delivered
/// is logged, never fails the drill (like a `notify` step by default).
pub struct Notifier {
    cfg: Option<crate::drill::DrillNotify>,
    env: Option<Arc<crate::environment::Environment>>,
    run_id: String,
    what: String,
}

impl Notifier {
    pub fn new(
        cfg: Option<crate::drill::DrillNotify>,
        env: Option<Arc<crate::environment::Environment>>,
        run_id: &str,
        label: &crate::drill::DrillLabel,
        runbook: &str,
    ) -> Self {
        let what = match &label.name {
            Some(n) => format!("drill `{n}` ({}, runbook `{runbook}`)", label.mode.as_str()),
            None => format!("drill of runbook `{runbook}`"),
        };
        Notifier {
            cfg,
            env,
            run_id: run_id.to_string(),
            what,
        }
    }

    async fn send(&self, text: String, severity: &str, dedup: String) {
        let Some(cfg) = &self.cfg else { return };
        let text = format!("[drctl drill {}] {text}", self.run_id);
        match crate::actions::notify::send(
            self.env.as_deref(),
            &cfg.targets,
            &text,
            severity,
            &dedup,
            Duration::from_secs(10),
        )
        .await
        {
            Ok((_, failed)) => {
                for f in failed {
                    tracing::warn!(target_failure = %f, "drill notification not delivered");
                }
            }
            Err(e) => tracing::warn!(error = %e, "drill notification not sent"),
        }
    }

    pub async fn started(&self) {
        if self.cfg.as_ref().is_some_and(|c| c.started) {
            self.send(
                format!("{} started", self.what),
                "info",
                self.run_id.clone(),
            )
            .await;
        }
    }

    /// `summary` is the drill's printed summary; `code` its exit code.
    pub async fn finished(&self, summary: &str, code: i32) {
        let Some(cfg) = &self.cfg else { return };
        if cfg.finished {
            let severity = if code == exit::OK { "info" } else { "warning" };
            let verdict = exit::TABLE
                .iter()
                .find(|(c, _, _)| *c == code)
                .map_or("unknown exit", |(_, name, _)| name);
            self.send(
                format!(
                    "{} finished (exit {code}, {verdict}):\n{summary}",
                    self.what
                ),
                severity,
                self.run_id.clone(),
            )
            .await;
        }
        if cfg.target_missed && code == exit::TARGET_MISSED {
            self.send(
                format!(
                    "{} did not show its RTO/RPO targets met:\n{summary}",
                    self.what
                ),
                "error",
                format!("{}-target", self.run_id),
            )
            .await;
        }
    }
}

/// Loads every definition in `dir`, located errors on failure (exit 3).
pub fn load_defs(dir: &Path) -> Result<Vec<DrillDef>, CliError> {
    crate::drill::load_dir(dir).map_err(CliError::invalid)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One definition's line in `drills list`.
fn list_entry(def: &DrillDef, records: &[Entry], now: DateTime<Utc>) -> Value {
    let mine: Vec<&Entry> = records.iter().filter(|e| e.drill == def.name).collect();
    let last = mine.last();
    let last_success = mine.iter().rev().find(|e| e.success).and_then(|e| e.at());
    let sched = def.schedule.as_ref();
    let next = sched
        .filter(|s| !s.suspend)
        .and_then(|s| s.cron.next_after(now));
    // Overdue: no success within the longest gap between two slots plus
    // the grace (a monthly drill is judged against 31 days, not 28).
    let overdue = sched.filter(|s| !s.suspend).map(|s| {
        let period = s.cron.period_after(now, 24).unwrap_or_default();
        let allowed = period + chrono::Duration::from_std(s.grace).unwrap_or_default();
        match last_success {
            Some(t) => json!({"overdue": now - t > allowed, "allowed_s": allowed.num_seconds(), "since_success_s": (now - t).num_seconds()}),
            None => json!({"overdue": true, "allowed_s": allowed.num_seconds(), "reason": "never succeeded"}),
        }
    });
    json!({
        "name": def.name,
        "file": def.file.display().to_string(),
        "mode": def.mode.as_str(),
        "schedule": sched.map(|s| s.cron.expr()),
        "timezone": sched.map(|s| s.cron.tz_name()),
        "suspended": sched.map(|s| s.suspend),
        "missed_policy": sched.map(|s| s.missed.as_str()),
        "next_run": next.map(ts),
        "last_run": last.map(|e| json!({
            "run_id": e.run_id, "at": e.failed_at, "status": e.status,
            "rto_ms": e.rto_ms, "rpo_ms": e.rpo_ms, "success": e.success,
            "rto_verdict": e.rto_verdict, "rpo_verdict": e.rpo_verdict,
        })),
        "last_success": last_success.map(ts),
        "overdue": overdue,
    })
}

/// Ages and allowances in days and hours (an overdue monthly drill is
/// "49d 3h", not "1179h").
fn age(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn render_list(items: &[Value]) -> String {
    let mut out = String::new();
    for v in items {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        out.push_str(&format!("{}  ({}, {})\n", s("name"), s("mode"), s("file")));
        let sched = match v["schedule"].as_str() {
            None => "none (run by hand: `drctl drill FILE`)".to_string(),
            Some(c) => format!(
                "`{c}` {}{}; {}",
                s("timezone"),
                if v["suspended"] == json!(true) {
                    ", suspended"
                } else {
                    ""
                },
                match v["missed_policy"].as_str() {
                    Some("skip") => "a missed run is skipped and recorded",
                    _ => "a missed run runs once, late",
                }
            ),
        };
        out.push_str(&format!("  schedule:     {sched}\n"));
        if let Some(n) = v["next_run"].as_str() {
            out.push_str(&format!("  next run:     {n}\n"));
        }
        let last = &v["last_run"];
        if last.is_null() {
            out.push_str("  last run:     never\n");
        } else {
            let fig = |k: &str| {
                last[k]
                    .as_u64()
                    .map(|ms| crate::duration::format_duration(Duration::from_millis(ms)))
                    .unwrap_or_else(|| "unknown".into())
            };
            out.push_str(&format!(
                "  last run:     {} {} ({}), RTO {} (target {}), RPO {} (target {})\n",
                last["at"].as_str().unwrap_or("unknown time"),
                last["status"].as_str().unwrap_or("?"),
                if last["success"] == json!(true) {
                    "passed"
                } else {
                    "did not pass"
                },
                fig("rto_ms"),
                last["rto_verdict"]
                    .as_str()
                    .unwrap_or("?")
                    .replace('_', " "),
                fig("rpo_ms"),
                last["rpo_verdict"]
                    .as_str()
                    .unwrap_or("?")
                    .replace('_', " "),
            ));
        }
        let o = &v["overdue"];
        if !o.is_null() {
            let allowed = age(o["allowed_s"].as_u64().unwrap_or(0));
            let text = match (o["overdue"].as_bool(), o["reason"].as_str()) {
                (Some(true), Some(r)) => format!("OVERDUE: {r}"),
                (Some(true), None) => format!(
                    "OVERDUE: last success {} ago, allowed {allowed}",
                    age(o["since_success_s"].as_u64().unwrap_or(0))
                ),
                _ => format!("no (last success {}, allowed {allowed})", s("last_success")),
            };
            out.push_str(&format!("  overdue:      {text}\n"));
        }
    }
    if items.is_empty() {
        out.push_str("no drill definitions found\n");
    }
    out
}

pub async fn cmd_list(
    dir: &Path,
    store: Arc<dyn Store>,
    now: DateTime<Utc>,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let defs = load_defs(dir)?;
    let records: Vec<Entry> = store
        .read_history(HISTORY)
        .await?
        .iter()
        .filter_map(Entry::from_record)
        .collect();
    let items: Vec<Value> = defs.iter().map(|d| list_entry(d, &records, now)).collect();
    match output {
        OutputFormat::Json => ui::out(&serde_json::to_string_pretty(&items).unwrap_or_default()),
        OutputFormat::Human => ui::out(render_list(&items).trim_end()),
    }
    Ok(exit::OK)
}

pub async fn cmd_history(
    name: Option<&str>,
    window: usize,
    store: Arc<dyn Store>,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let records = store.read_history(HISTORY).await?;
    let t = history::trends(&records, name, window.max(1));
    match output {
        OutputFormat::Json => ui::out(&serde_json::to_string_pretty(&t).unwrap_or_default()),
        OutputFormat::Human => ui::out(history::render(&t, window.max(1)).trim_end()),
    }
    Ok(exit::OK)
}

/// Where drill metrics go besides stdout.
#[derive(Debug, Clone, Default)]
pub struct MetricsOut {
    /// A Pushgateway base URL (push-add, job `drctl_drill`).
    pub push: Option<String>,
    /// A node_exporter textfile (written atomically).
    pub textfile: Option<std::path::PathBuf>,
}

/// Computes the drill gauges from the store's history and sends them where
/// `out` says; returns the exposition text.
pub async fn export_metrics(
    store: &Arc<dyn Store>,
    defs: &[DrillDef],
    out: &MetricsOut,
    now: DateTime<Utc>,
) -> Result<String, CliError> {
    let records = store.read_history(HISTORY).await?;
    let gauges = crate::drill::metrics::gauges(defs, &records, now);
    let fail = |e: crate::metrics::MetricsError| {
        CliError::new(exit::INTERNAL, format!("drill metrics: {}", crate::diag::error_chain(&e)))
            .hint("check the Pushgateway URL (--push) and that the textfile's directory is writable (--textfile)")
    };
    if let Some(url) = &out.push {
        crate::metrics::push_add(
            url,
            "drctl_drill",
            &Default::default(),
            &gauges,
            Duration::from_secs(10),
        )
        .await
        .map_err(fail)?;
    }
    if let Some(path) = &out.textfile {
        let (path, g) = (path.clone(), gauges.clone());
        tokio::task::spawn_blocking(move || crate::metrics::write_textfile(&path, &g))
            .await
            .map_err(|e| CliError::new(exit::INTERNAL, format!("textfile task: {e}")))?
            .map_err(fail)?;
    }
    Ok(crate::metrics::render(&gauges))
}

/// `drctl drills metrics`: print, push or write the drill gauges.
pub async fn cmd_metrics(
    dir: &Path,
    out: &MetricsOut,
    store: Arc<dyn Store>,
    now: DateTime<Utc>,
) -> Result<i32, CliError> {
    let defs = load_defs(dir)?;
    let text = export_metrics(&store, &defs, out, now).await?;
    if out.push.is_none() && out.textfile.is_none() {
        ui::out(text.trim_end());
    }
    Ok(exit::OK)
}

/// Serves `/metrics` (the drill gauges, fresh from the store) until the
/// task is aborted.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    defs: Arc<Vec<DrillDef>>,
) {
    let handler: crate::lab::http::Handler = Arc::new(move |method, path, _body| {
        let (store, defs) = (store.clone(), defs.clone());
        Box::pin(async move {
            let text = if method == "GET" && path.split('?').next() == Some("/metrics") {
                export_metrics(&store, &defs, &MetricsOut::default(), Utc::now())
                    .await
                    .map_err(|e| e.message)
            } else {
                return crate::lab::http::json(404, json!({"error": "only GET /metrics"}));
            };
            let (status, body) = match text {
                Ok(t) => (200, t),
                Err(e) => (503, format!("# drill metrics unavailable: {e}\n")),
            };
            let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        })
    });
    crate::lab::http::serve(listener, handler).await
}

/// Runs drills in-process for the scheduler, like `drctl drill FILE --yes`.
struct CliRunner {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    output: OutputFormat,
}

#[async_trait]
impl DrillRunner for CliRunner {
    async fn run(&self, def: &DrillDef, run_id: &str) -> i32 {
        let args = RunArgs {
            env: None,
            params: Vec::new(),
            yes: true,
            accept_data_loss: false,
            force: false,
            failed_at: None,
            parallelism: 8,
        };
        let r = super::labcmd::run_definition(
            def,
            None,
            None,
            &args,
            self.store.clone(),
            self.output,
            &self.registry,
            Some(run_id.to_string()),
        )
        .await;
        match r {
            Ok(code) => code,
            Err(e) => {
                ui::err(&format!("drill `{}`: {}", def.name, e.render()));
                e.code
            }
        }
    }

    async fn resume(&self, run_id: &str) -> i32 {
        let opts = crate::engine::ResumeOptions {
            operator: super::operator(),
            parallelism: 8,
            ..Default::default()
        };
        let r = super::runs::cmd_resume(
            run_id,
            None,
            None,
            &[],
            opts,
            self.store.clone(),
            self.output,
            &self.registry,
        )
        .await;
        match r {
            Ok(code) => code,
            Err(e) => {
                ui::err(&format!("resume {run_id}: {}", e.render()));
                e.code
            }
        }
    }

    async fn run_state(&self, run_id: &str) -> RunState {
        use crate::journal::RunStatus;
        let view = match crate::engine::run::load_view_only(self.store.as_ref(), run_id).await {
            Ok(v) => v,
            Err(crate::engine::EngineError::Store(crate::store::StoreError::RunNotFound(_))) => {
                return RunState::Missing
            }
            Err(e) => return RunState::Unreadable(crate::diag::error_chain(&e)),
        };
        match view.status {
            // Interrupted, or no closing record (killed): resume takes the
            // run's lease, so a run still alive elsewhere refuses it.
            None | Some(RunStatus::Interrupted) => RunState::Unfinished,
            Some(RunStatus::Succeeded) => RunState::Ended(exit::OK),
            Some(RunStatus::Failed) => RunState::Ended(exit::RUN_FAILED),
            Some(RunStatus::Aborted) => RunState::Ended(exit::RUN_INTERRUPTED),
            Some(RunStatus::WaitingApproval) => RunState::Ended(exit::WAITING_APPROVAL),
        }
    }
}

/// Stops the `/metrics` server with the daemon.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn action_text(name: &str, a: &Action) -> String {
    match a {
        Action::Registered => format!("{name}: registered; its schedule starts now"),
        Action::Unreadable { run_id, error } => format!(
            "{name}: cannot read run {run_id} of the claimed slot ({error}); it stays claimed, trying again next pass"
        ),
        Action::Ran { slot, run_id, exit } => {
            format!("{name}: ran the {slot} slot as run {run_id} (exit {exit})")
        }
        Action::Resumed { run_id, exit } => {
            format!(
                "{name}: resumed run {run_id}, left unfinished by a stopped daemon (exit {exit})"
            )
        }
        Action::Missed { slots, more } => format!(
            "{name}: missed {}{} slot(s) (recorded; the policy skips them)",
            slots.len(),
            if *more { "+" } else { "" }
        ),
        Action::LostRace => format!("{name}: another daemon handled this slot"),
        Action::Busy { run_id, exit } => format!(
            "{name}: run {run_id} is still claimed (resume exited {exit}); trying again next pass"
        ),
        Action::Suspended => format!("{name}: suspended"),
        Action::Unscheduled => format!("{name}: no schedule"),
        Action::NotDue { next } => format!(
            "{name}: not due (next {})",
            next.as_deref().unwrap_or("never")
        ),
    }
}

/// `drctl daemon`: lead (store lease), tick, sleep until the next slot.
#[allow(clippy::too_many_arguments)]
pub async fn cmd_daemon(
    dir: &Path,
    once: bool,
    now_override: Option<DateTime<Utc>>,
    metrics: &MetricsOut,
    listen: Option<&str>,
    store: Arc<dyn Store>,
    registry: &Arc<Registry>,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let defs = load_defs(dir)?;
    let _server = match listen {
        None => None,
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                CliError::new(exit::USAGE, format!("--metrics-listen {addr}: {e}"))
                    .hint("an address such as 127.0.0.1:9187 that nothing else listens on")
            })?;
            let task = tokio::spawn(serve_metrics(l, store.clone(), Arc::new(defs.clone())));
            Some(AbortOnDrop(task))
        }
    };
    let runner = CliRunner {
        store: store.clone(),
        registry: registry.clone(),
        output,
    };
    let holder = crate::store::HolderId::this_process("drctl-daemon");
    let ttl = crate::engine::lease_ttl();
    let mut lease: Option<crate::store::Lease> = None;
    // Registered up front: a signal that interrupted a drill (the engine
    // journals it, resumably) also ends the daemon once the drill returns.
    use tokio::signal::unix::{signal, SignalKind};
    let sig =
        |k| signal(k).map_err(|e| CliError::new(exit::INTERNAL, format!("signal handler: {e}")));
    let (mut term, mut int) = (sig(SignalKind::terminate())?, sig(SignalKind::interrupt())?);
    loop {
        let now = now_override.unwrap_or_else(Utc::now);
        lease = match lease.take() {
            Some(l) => store.renew_lease(&l, ttl).await.ok(),
            None => None,
        };
        if lease.is_none() {
            match store
                .acquire_lease(
                    scheduler::LEADER_LEASE,
                    crate::store::LeaseMode::Exclusive,
                    &holder,
                    ttl,
                )
                .await
            {
                Ok(g) => {
                    tracing::info!("leading the drill scheduler");
                    lease = Some(g.lease);
                }
                Err(crate::store::StoreError::LeaseHeld { holder: h, .. }) => {
                    let msg =
                        format!("another daemon leads the drill scheduler ({h}); standing by");
                    if once {
                        ui::out(&msg);
                        return Ok(exit::OK);
                    }
                    tracing::info!("{msg}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        if lease.is_some() {
            let actions = scheduler::tick(&store, &defs, now, &runner).await?;
            let ran = actions
                .iter()
                .any(|(_, a)| matches!(a, Action::Ran { .. } | Action::Resumed { .. }));
            if ran && (metrics.push.is_some() || metrics.textfile.is_some()) {
                // A scheduler keeps scheduling when the Pushgateway is down.
                if let Err(e) = export_metrics(&store, &defs, metrics, now).await {
                    tracing::warn!(error = %e.message, "drill metrics not exported");
                    if once {
                        ui::err(&e.render());
                    }
                }
            }
            for (name, a) in &actions {
                let line = action_text(name, a);
                tracing::info!(drill = %name, "{line}");
                if once {
                    ui::out(&line);
                }
            }
        }
        if once {
            if let Some(l) = &lease {
                let _ = store.release_lease(l).await;
            }
            return Ok(exit::OK);
        }
        // Wake for the next slot, and often enough to renew the lease.
        let wait = scheduler::next_wake(&defs, now, ttl / 3);
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    if let Some(l) = &lease {
        let _ = store.release_lease(l).await;
    }
    Ok(exit::OK)
}
