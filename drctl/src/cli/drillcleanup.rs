//! `drctl drills cleanup RUN`: undo what an isolated drill killed half-way
//! left: its drill namespace (deleted), its clone (stopped, scratch
//! directory removed) and its drill DNS record (set back), from what the
//! run journaled. Production is not
//! touched: only the run's own `drill-<run>` directory and records
//! declared `drill: true` are. A run whose drctl still runs is refused:
//! the cleanup holds the run's lock (the environment's drill lock for an
//! isolated drill) while it works, so it never races a live run or a
//! resume of it, on this host or another.

use std::sync::Arc;
use std::time::Duration;

use super::{ui, CliError, OutputFormat};
use crate::exit;
use crate::store::{LeaseMode, Store};

pub async fn cmd_cleanup(
    run: &str,
    store: Arc<dyn Store>,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let view = crate::engine::run::load_view_only(store.as_ref(), run).await?;
    let alive = view.host == crate::journal::hostname()
        && crate::backup::scratch::proc_start(view.pid).is_some()
        && view.pid != std::process::id();
    if view.status.is_none() && view.resumes.is_empty() && alive {
        return Err(CliError::new(
            exit::LOCK_HELD,
            format!(
                "run {run} is still running (drctl pid {} on this host)",
                view.pid
            ),
        )
        .hint("wait for it, or stop it (Ctrl-C) and run the cleanup again"));
    }
    let lock = crate::engine::view_lock_name(&view);
    let holder = crate::store::HolderId::this_process(run);
    let acquired = tokio::time::timeout(
        crate::engine::STORE_CALL_TIMEOUT,
        store.acquire_lease(
            &lock,
            LeaseMode::Exclusive,
            &holder,
            crate::engine::lease_ttl(),
        ),
    )
    .await
    .map_err(|_| {
        CliError::new(
            exit::STATE_UNAVAILABLE,
            format!(
                "the state store did not answer within {:?} while taking `{lock}`",
                crate::engine::STORE_CALL_TIMEOUT
            ),
        )
        .hint("check the state store (`drctl state check`), then run the cleanup again")
    })?;
    let lease = match acquired {
        Ok(g) => g.lease,
        Err(crate::store::StoreError::LeaseHeld { holder, .. }) => {
            return Err(CliError::new(
                exit::LOCK_HELD,
                format!("not cleaning up run {run}: `{lock}` is held by {holder}"),
            )
            .hint("a drill (this one resumed, or another) is live; wait for it or stop it (Ctrl-C), then run the cleanup again"))
        }
        Err(e) => return Err(e.into()),
    };
    let result = cleanup_locked(run, &view, output).await;
    if let Err(e) = store.release_lease(&lease).await {
        tracing::warn!(error = %e, "could not release the cleanup's lease; it expires by itself");
    }
    result
}

async fn cleanup_locked(
    run: &str,
    view: &crate::engine::view::RunView,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let env = match &view.environment {
        Some(e) => Some(
            crate::environment::load_environment(std::path::Path::new(&e.path))
                .map_err(CliError::invalid)?
                .0,
        ),
        None => None,
    };
    let cfg = match env.as_ref().filter(|e| e.doc.get("dns").is_some()) {
        Some(e) => Some(
            crate::drill::isolated::dns::env_config(e)
                .map_err(|e| CliError::new(exit::RUN_FAILED, e.to_string()))?,
        ),
        None => None,
    };
    let done = crate::drill::isolated::cleanup(
        view,
        run,
        env.as_ref(),
        cfg.as_ref(),
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| {
        let hint = e.hint().map(str::to_string);
        let c = CliError::new(exit::RUN_FAILED, format!("cleanup of run {run}: {e}"));
        match hint {
            Some(h) => c.hint(h),
            None => c,
        }
    })?;
    match output {
        OutputFormat::Json => ui::out(&serde_json::to_string_pretty(&done).unwrap_or_default()),
        OutputFormat::Human => ui::out(&format!(
            "run {run}: removed {} clone directory(ies){}, killed {} server(s), drill namespace(s) deleted: {}, drill record(s) set back: {}",
            done.removed.len(),
            if done.removed.is_empty() {
                String::new()
            } else {
                format!(" ({})", done.removed.join(", "))
            },
            done.killed.len(),
            if done.namespaces_deleted.is_empty() {
                "none".to_string()
            } else {
                done.namespaces_deleted.join(", ")
            },
            if done.dns_restored.is_empty() {
                "none".to_string()
            } else {
                done.dns_restored.join(", ")
            }
        )),
    }
    Ok(exit::OK)
}
