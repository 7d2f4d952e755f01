//! `runs`, `status`, `report`: read-only views of journals.

use std::fmt::Write as _;
use std::time::Duration;

use super::{ui, CliError, OutputFormat};
use crate::engine::view::RunView;
use crate::exit;
use crate::journal::{format_ms, StepStatus};
use crate::store::Store;

/// Accepts `latest` for the newest run.
pub async fn resolve_run_id(store: &dyn Store, id: &str) -> Result<String, CliError> {
    if id != "latest" {
        return Ok(id.to_string());
    }
    store.list_runs().await?.pop().ok_or_else(|| {
        CliError::new(exit::NOT_FOUND, "there are no runs yet")
            .hint(format!("state: {}", store.describe()))
    })
}

pub async fn cmd_runs(store: &dyn Store, output: OutputFormat) -> Result<i32, CliError> {
    let mut rows = Vec::new();
    for id in store.list_runs().await? {
        // Verified and folded whole (a broken chain lists as unreadable),
        // without the steps' inputs, which a listing never shows: for a
        // 100,000-record journal they were a third of its memory.
        match crate::engine::run::load_report_view(store, &id, true).await {
            Ok(v) => rows.push(serde_json::json!({
                "run_id": id, "runbook": v.runbook.name, "mode": v.mode.as_str(),
                "status": v.status_text(), "started": format_ms(v.started_ms),
                "environment": v.environment.as_ref().map(|e| e.name.clone()),
            })),
            Err(e) => rows.push(serde_json::json!({"run_id": id, "status": "unreadable", "error": CliError::from(e).message})),
        }
    }
    if output == OutputFormat::Json {
        ui::out(&serde_json::to_string_pretty(&rows).unwrap_or_default());
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        ui::out("no runs yet");
    }
    for r in rows {
        ui::out(&format!(
            "{:<28} {:<17} {:<9} {:<16} {}",
            r["run_id"].as_str().unwrap_or(""),
            r["status"].as_str().unwrap_or(""),
            r["mode"].as_str().unwrap_or(""),
            r["runbook"].as_str().unwrap_or(""),
            r["started"]
                .as_str()
                .unwrap_or(r["error"].as_str().unwrap_or(""))
        ));
    }
    Ok(exit::OK)
}

/// The lease holder, when the run's own process still holds its lease.
async fn live_holder(store: &dyn Store, v: &RunView) -> Option<String> {
    let name = crate::engine::view_lock_name(v);
    let leases = store.leases(&name).await.ok()?;
    // A lease left behind by a killed process is not a live run.
    leases
        .into_iter()
        .find(|h| h.holder.run_id == v.run_id && !h.holder.is_provably_dead())
        .map(|h| {
            format!(
                "pid {} on {}, {} lease epoch {}",
                h.holder.pid,
                h.holder.host,
                h.mode.as_str(),
                h.epoch
            )
        })
}

fn render_status(v: &RunView, live: Option<String>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "run {}  runbook `{}`  mode {}",
        v.run_id,
        v.runbook.name,
        v.mode.as_str()
    );
    let state = match (&v.status, live) {
        (Some(_), _) => v.status_text().to_string(),
        (None, Some(holder)) => format!("running ({holder})"),
        (None, None) => "incomplete: drctl stopped without closing the run (crash or kill); `drctl resume` continues it".into(),
    };
    let _ = writeln!(
        o,
        "status: {state}{}",
        v.reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    for s in &v.steps {
        let mark = match s.status {
            StepStatus::Succeeded => "✓",
            StepStatus::Failed => "✗",
            StepStatus::Running => "▸",
            StepStatus::Skipped => "–",
            StepStatus::Pending => " ",
        };
        let dur = s
            .duration_ms
            .map(|d| crate::duration::format_duration(Duration::from_millis(d)))
            .unwrap_or_default();
        let extra = s
            .error
            .as_ref()
            .map(|e| e.message.lines().next().unwrap_or("").to_string())
            .or(s.skip_reason.clone())
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  {mark} {:<22} {:<18} {:<9} {extra}",
            s.id, s.action, dur
        );
    }
    // Measured only with a declared failure time; the same verdicts as
    // the report and the drill summary.
    if let Some(m) = crate::measure::from_view(v) {
        let _ = writeln!(o, "RTO: {}", crate::measure::rto_line(&m));
        if !m.rpo.is_empty() || !m.rpo_truth.is_empty() || m.rpo_target_ms.is_some() {
            let _ = writeln!(o, "RPO: {}", crate::measure::rpo_line(&m));
        }
    }
    let _ = writeln!(
        o,
        "journal: {} records, chain verified, head {}",
        v.records,
        &v.head[..16.min(v.head.len())]
    );
    o
}

/// Where the run's environment has its primary now: as the state store
/// recorded it (the last completed failover, switchover or failback), else
/// the environment file's `active_region`.
async fn active_region(store: &dyn Store, v: &RunView) -> Option<serde_json::Value> {
    let env = v.environment.as_ref()?;
    let file = crate::environment::load_environment(std::path::Path::new(&env.path))
        .ok()
        .map(|(e, _)| e);
    let name = file
        .as_ref()
        .map(|e| e.name.clone())
        .unwrap_or_else(|| env.name.clone());
    match crate::store::active::load(store, &name).await {
        Ok(Some(a)) => Some(serde_json::json!({
            "environment": name, "region": a.region, "run_id": a.run_id, "by": a.by,
            "source": if a.run_id.is_empty() { format!("recorded by {}", a.by) } else { format!("recorded by {} run {}", a.by, a.run_id) },
        })),
        _ => file.map(|e| {
            serde_json::json!({
                "environment": name, "region": e.active_region, "run_id": null, "by": null,
                "source": "the environment file's active_region; no run recorded one",
            })
        }),
    }
}

pub async fn cmd_status(
    store: &dyn Store,
    id: &str,
    follow: bool,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let id = resolve_run_id(store, id).await?;
    let mut last = String::new();
    // Follow the record stream: each poll reads and verifies only the new
    // records, so its cost does not grow with the journal.
    let mut verifier = crate::journal::Verifier::default();
    let chunk = store.read_journal_from(&id, 0).await?;
    let (records, _) = verifier.feed(&chunk.bytes).map_err(CliError::from)?;
    let mut cursor = chunk.next;
    let mut v = records
        .first()
        .and_then(RunView::start)
        .ok_or_else(|| CliError::from(crate::journal::JournalError::NoStart))?;
    for r in &records[1..] {
        v.apply(r);
    }
    loop {
        let live = live_holder(store, &v).await;
        let active = active_region(store, &v).await;
        let text = if output == OutputFormat::Json {
            serde_json::to_string_pretty(
                &serde_json::json!({"run": v, "status": v.status_text(), "live": live, "measurements": crate::measure::from_view(&v), "active_region": active}),
            )
            .unwrap_or_default()
        } else {
            let mut t = render_status(&v, live);
            if let Some(a) = &active {
                t.push_str(&format!(
                    "active region of `{}` now: {} ({})\n",
                    a["environment"].as_str().unwrap_or("?"),
                    a["region"].as_str().unwrap_or("?"),
                    a["source"].as_str().unwrap_or("?")
                ));
            }
            t
        };
        if text != last {
            ui::out(&text);
            last = text;
        }
        if !follow || v.status.is_some() {
            return Ok(status_exit(&v, follow));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let chunk = store.read_journal_from(&id, cursor).await?;
        let (records, _) = verifier.feed(&chunk.bytes).map_err(CliError::from)?;
        cursor = chunk.next;
        for r in &records {
            v.apply(r);
        }
    }
}

/// `status --follow` ends with the run: its exit code says how it ended,
/// so a script waiting on it learns whether the recovery worked. A plain
/// `status` succeeds whenever it could show the run.
fn status_exit(v: &RunView, follow: bool) -> i32 {
    use crate::journal::RunStatus;
    if !follow {
        return exit::OK;
    }
    match v.status {
        Some(RunStatus::Succeeded) | None => exit::OK,
        Some(RunStatus::Failed) => exit::RUN_FAILED,
        Some(RunStatus::Aborted) | Some(RunStatus::Interrupted) => exit::RUN_INTERRUPTED,
        Some(RunStatus::WaitingApproval) => exit::WAITING_APPROVAL,
    }
}
