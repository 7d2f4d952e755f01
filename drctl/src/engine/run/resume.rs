//! Resuming a run: the journal decides what already happened, the
//! registry decides which interrupted steps are safe to repeat, and the
//! operator decides the rest.

use super::*;

/// The run's environment file as it was at run start (a run artifact).
pub const ENV_ARTIFACT: &str = "environment.yaml";

/// Operator decisions when resuming.
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    pub allow_runbook_change: bool,
    /// Accept a changed environment file (same name, same regions); the
    /// new content hash is journaled.
    pub allow_env_change: bool,
    /// Interrupted steps to execute again although not known idempotent.
    pub rerun: Vec<String>,
    /// Interrupted steps the operator verified as done.
    pub mark_done: Vec<String>,
    pub operator: String,
    pub parallelism: usize,
    pub interactive: bool,
    /// `--param` values, already checked against the runbook's declarations.
    pub params: Map<String, Value>,
    pub accept_data_loss: bool,
    pub force: bool,
    /// `--yes`: do not ask (journaled).
    pub yes: bool,
    /// Work after the resumed run finishes, under its lease (a failback's
    /// note and the lab's return, as when it started).
    pub hooks: ResumeHooks,
    /// The run is an isolated drill (read from its journal by the caller):
    /// it resumes under the drill lock, and the engine checks the journal
    /// agrees once it holds it.
    pub isolated: bool,
}

/// [`crate::engine::hooks::RunHooks`] for a resume (only `after_finish` runs: the
/// run started long ago).
#[derive(Clone, Default)]
pub struct ResumeHooks(pub Option<Arc<dyn crate::engine::hooks::RunHooks>>);

impl std::fmt::Debug for ResumeHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ResumeHooks(some)"
        } else {
            "ResumeHooks(none)"
        })
    }
}

/// Continues an interrupted or failed run where the journal says it stopped.
pub async fn resume(
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    run_id: &str,
    runbook: Arc<Runbook>,
    env: Option<Arc<Environment>>,
    opts: ResumeOptions,
    ui: Ui,
) -> Result<RunOutcome, EngineError> {
    let env_name = env.as_deref().map(|e| e.name.as_str());
    if opts.isolated {
        super::super::lock::refuse_during_incident(store.as_ref(), env_name).await?;
    }
    let lease_name = run_lock_name(env_name, opts.isolated);
    // Lock first: a run still alive in another process holds it, and we
    // must not read a journal someone is appending to.
    let lease = take_lease(
        &store,
        &lease_name,
        lease_mode(&runbook, &registry),
        run_id,
        &ui,
    )
    .await?;
    let result = resume_locked(
        store.clone(),
        registry,
        run_id,
        runbook,
        env,
        opts,
        ui,
        &lease,
    )
    .await;
    if result.is_err() {
        release(&store, &lease).await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn resume_locked(
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    run_id: &str,
    runbook: Arc<Runbook>,
    env: Option<Arc<Environment>>,
    opts: ResumeOptions,
    ui: Ui,
    lease: &Lease,
) -> Result<RunOutcome, EngineError> {
    let (view, verified) = load_view_pub(store.as_ref(), run_id).await?;
    if view.options.isolated != opts.isolated {
        return Err(EngineError::Invalid(format!(
            "run {run_id} {} an isolated drill, but was resumed as {}: its lock would be the wrong one",
            if view.options.isolated { "is" } else { "is not" },
            if opts.isolated { "one" } else { "another run" },
        )));
    }
    if let Some(st @ (RunStatus::Succeeded | RunStatus::Aborted)) = view.status {
        return Err(EngineError::RunEnded {
            run_id: run_id.to_string(),
            status: st,
            reason: view.reason.clone(),
        });
    }
    // An abort asked of a live process that parked before it saw the
    // request: honour it now, before any step.
    if let Some(by) = bounded(store.abort_requested(run_id)).await? {
        let reason = format!(
            "aborted by {} (asked while the run was live; it had parked {})",
            by.trim(),
            view.status_text()
        );
        abort::append_abort(&store, run_id, lease, &verified, reason.clone()).await?;
        return Err(EngineError::RunEnded {
            run_id: run_id.to_string(),
            status: RunStatus::Aborted,
            reason: Some(reason),
        });
    }
    let changed = view.runbook.sha256 != runbook.content_hash;
    if changed && !opts.allow_runbook_change {
        return Err(EngineError::RunbookChanged {
            run_id: run_id.to_string(),
            path: runbook.file.path.clone(),
            journal: view.runbook.sha256.chars().take(12).collect(),
            now: runbook.content_hash.chars().take(12).collect(),
        });
    }
    let env_changed = check_binding(run_id, &view, env.as_deref(), opts.allow_env_change)?;
    // Decide what to do with steps that were running when we stopped.
    let mut decisions = BTreeMap::new();
    let mut undecided = Vec::new();
    for s in view
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Running)
    {
        let safe = registry
            .get(&s.action)
            .is_some_and(|a| a.idempotent(&s.inputs));
        if opts.mark_done.contains(&s.id) {
            decisions.insert(s.id.clone(), "marked done by operator".to_string());
        } else if opts.rerun.contains(&s.id) {
            decisions.insert(s.id.clone(), "re-run by operator decision".to_string());
        } else if safe {
            decisions.insert(s.id.clone(), "re-run (idempotent)".to_string());
        } else {
            undecided.push(s.id.clone());
        }
    }
    if !undecided.is_empty() {
        return Err(EngineError::NeedsDecision { steps: undecided });
    }
    // A torn final line was never acknowledged as durable: dropping it
    // loses nothing the run relied on. It is cut off before anything is
    // appended (appending after it would turn it into a corrupt record),
    // and the repair is journaled.
    let (mut journal, repaired) = continue_journal(&store, run_id, lease, &verified).await?;
    journal
        .append(Event::RunResumed {
            operator: opts.operator.clone(),
            host: journal::hostname(),
            pid: std::process::id(),
            runbook_changed: changed,
            decisions: decisions.clone(),
            repaired_tail_bytes: repaired,
            environment_sha256: env_changed,
            params: opts.params.clone(),
            accept_data_loss: opts.accept_data_loss,
            force: opts.force,
            yes: opts.yes,
            proofs: changed.then(|| super::proof_steps(&runbook, &registry)),
        })
        .await?;
    ui(UiEvent::RunStarted {
        run_id: run_id.to_string(),
        journal: store.journal_location(run_id),
    });
    let mut states = HashMap::new();
    let mut outputs = BTreeMap::new();
    for step in &runbook.steps {
        let st = match view.step(&step.id) {
            Some(v) => match v.status {
                StepStatus::Succeeded => {
                    outputs.insert(step.id.clone(), v.outputs.clone());
                    State::Succeeded
                }
                StepStatus::Skipped
                    if v.skip_reason.as_deref().is_some_and(|r| {
                        r.starts_with("when:") || r.starts_with("skip_unless:")
                    }) =>
                {
                    State::SkippedByMode
                }
                StepStatus::Running if opts.mark_done.contains(&step.id) => {
                    journal
                        .append(Event::StepFinished {
                            step: step.id.clone(),
                            status: StepStatus::Succeeded,
                            outputs: Map::new(),
                            error: None,
                            attempts: 0,
                            duration_ms: 0,
                        })
                        .await?;
                    outputs.insert(step.id.clone(), Map::new());
                    State::Succeeded
                }
                _ => State::Pending,
            },
            None => State::Pending,
        };
        states.insert(step.id.clone(), st);
    }
    let run = Run {
        run_id: run_id.to_string(),
        store,
        runbook,
        registry,
        env,
        mode: view.mode,
        params: {
            let mut p = view.params.clone();
            p.extend(opts.params.clone());
            p
        },
        target_region: view.target_region.clone(),
        source_region: view.source_region.clone(),
        operator: opts.operator.clone(),
        started_by: view.operator.clone(),
        options: RunOptions {
            interactive: opts.interactive && !opts.yes,
            accept_data_loss: view.options.accept_data_loss || opts.accept_data_loss,
            force: view.options.force || opts.force,
            isolated: view.options.isolated,
        },
        failed_at_ms: view.failed_at_ms,
        parallelism: opts.parallelism.max(1),
        journal,
        states,
        outputs,
        scope: Default::default(),
        dirty: Default::default(),
        dependents: Default::default(),
        ready_queue: Default::default(),
        checkpoints: view
            .steps
            .iter()
            .filter_map(|s| s.checkpoint.clone().map(|c| (s.id.clone(), c)))
            .collect(),
        started_at: HashMap::new(),
        ui,
        hooks: opts.hooks.0.clone(),
    };
    run.drive().await
}

/// A run is bound to the environment it started with: another environment
/// (name), or one without the run's regions, is refused; the same one with
/// changed content needs `allow_env_change`. Returns the new content hash
/// when a change is accepted, for the `run_resumed` record.
pub fn check_binding(
    run_id: &str,
    view: &RunView,
    env: Option<&Environment>,
    allow_env_change: bool,
) -> Result<Option<String>, EngineError> {
    let mismatch = |reason: String| EngineError::EnvironmentMismatch {
        run_id: run_id.to_string(),
        reason,
    };
    let (started, now) = match (&view.environment, env) {
        (None, None) => return Ok(None),
        (None, Some(e)) => {
            return Err(mismatch(format!(
                "the run started without an environment; `{}` was given",
                e.name
            )))
        }
        (Some(j), None) => {
            return Err(mismatch(format!(
                "the run started with environment `{}` ({}); none was given",
                j.name, j.path
            )))
        }
        (Some(j), Some(e)) => (j, e),
    };
    if started.name != now.name {
        return Err(mismatch(format!(
            "the run started with environment `{}` ({}), not `{}` ({})",
            started.name, started.path, now.name, now.file.path
        )));
    }
    for (role, region) in [
        ("source", &view.source_region),
        ("target", &view.target_region),
    ] {
        if let Some(r) = region {
            if now.region(r).is_none() {
                return Err(mismatch(format!(
                    "its {role} region `{r}` is not in {}",
                    now.file.path
                )));
            }
        }
    }
    if started.sha256 == now.content_hash {
        return Ok(None);
    }
    if !allow_env_change {
        return Err(EngineError::EnvironmentChanged {
            run_id: run_id.to_string(),
            path: now.file.path.clone(),
            journal: started.sha256.chars().take(12).collect(),
            now: now.content_hash.chars().take(12).collect(),
        });
    }
    Ok(Some(now.content_hash.clone()))
}

/// A writer that continues a verified journal under `lease`, and the bytes
/// of a torn final line cut off first (appending after it would turn it
/// into a corrupt record). The caller journals the repair.
pub(super) async fn continue_journal(
    store: &Arc<dyn Store>,
    run_id: &str,
    lease: &Lease,
    verified: &journal::Verified,
) -> Result<(JournalWriter, u64), EngineError> {
    let repaired = if verified.torn_tail > 0 {
        bounded(store.repair_torn_tail(run_id, lease, verified.complete_len as u64)).await?
    } else {
        0
    };
    let writer = JournalWriter::resume(
        store.clone(),
        run_id,
        lease.clone(),
        verified.records.len() as u64,
        verified.head.clone(),
    );
    Ok((writer, repaired))
}
