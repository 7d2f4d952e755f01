//! Starting, resuming and driving one run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, info_span, warn, Instrument};

use super::view::{fold, RunView};
use super::*;
use crate::action::{self, ActionError, Outputs, PreparedStep, Registry, StepContext};
use crate::journal::{self, ErrorInfo, Event, FileRef, JournalWriter, StepStatus};
use crate::runbook::{OnFailure, Step};
use crate::store::{HolderId, Lease, LeaseMode};

/// Operator decisions when resuming.
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    pub allow_runbook_change: bool,
    /// Interrupted steps to execute again although not known idempotent.
    pub rerun: Vec<String>,
    /// Interrupted steps the operator verified as done.
    pub mark_done: Vec<String>,
    pub operator: String,
    pub parallelism: usize,
    pub interactive: bool,
}

enum Msg {
    AttemptFailed {
        step: String,
        attempt: u32,
        error: ErrorInfo,
        delay: Duration,
        ack: oneshot::Sender<bool>,
    },
    Done {
        step: String,
        result: Result<Outputs, ErrorInfo>,
        attempts: u32,
        duration: Duration,
    },
    /// An action saves its pre-effect state; acknowledged once journaled.
    Checkpoint {
        step: String,
        data: Value,
        ack: oneshot::Sender<Result<(), String>>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Skipped because `when` excludes the mode: counts as satisfied.
    SkippedByMode,
    /// Skipped because a dependency failed: propagates.
    SkippedByFailure,
}

struct Run {
    run_id: String,
    store: Arc<dyn Store>,
    runbook: Arc<Runbook>,
    registry: Arc<Registry>,
    env: Option<Arc<Environment>>,
    mode: Mode,
    params: Map<String, Value>,
    target_region: Option<String>,
    source_region: Option<String>,
    operator: String,
    options: RunOptions,
    failed_at_ms: Option<u64>,
    parallelism: usize,
    journal: JournalWriter,
    states: HashMap<String, State>,
    outputs: BTreeMap<String, Map<String, Value>>,
    /// Resolution scope, updated in place as steps finish (rebuilding it
    /// per step would make a run quadratic in its length).
    scope: crate::expr::Scope,
    /// Indices of steps to re-evaluate: initially all, then the dependents
    /// of each step that reaches an end state.
    dirty: std::collections::BTreeSet<usize>,
    dependents: HashMap<String, Vec<usize>>,
    /// Steps whose needs are met, waiting for a parallelism slot.
    ready_queue: std::collections::VecDeque<String>,
    /// Latest checkpoint per step, replayed from the journal on resume.
    checkpoints: HashMap<String, Value>,
    ui: Ui,
}

fn file_ref(name: &str, path: &str, sha: &str) -> FileRef {
    FileRef {
        name: name.to_string(),
        path: path.to_string(),
        sha256: sha.to_string(),
    }
}

/// Bounds a store call so that a hung store stops the run instead of
/// freezing it (Ctrl-C stays responsive).
async fn bounded<T>(
    fut: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
) -> Result<T, EngineError> {
    match tokio::time::timeout(STORE_CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(EngineError::from),
        Err(_) => Err(EngineError::StoreTimeout(STORE_CALL_TIMEOUT)),
    }
}

/// The lease a runbook needs: shared when every step is read-only (it
/// changes nothing, so it must never lock out a failover), else exclusive.
pub fn lease_mode(runbook: &Runbook, kinds: &Registry) -> LeaseMode {
    let all_read_only = runbook.steps.iter().all(|s| {
        kinds
            .get(&s.action)
            .is_some_and(|a| a.read_only(&s.with.to_json()))
    });
    if all_read_only {
        LeaseMode::Shared
    } else {
        LeaseMode::Exclusive
    }
}

async fn take_lease(
    store: &Arc<dyn Store>,
    name: &str,
    mode: LeaseMode,
    run_id: &str,
    ui: &Ui,
) -> Result<Lease, EngineError> {
    let holder = HolderId::this_process(run_id);
    let got = bounded(store.acquire_lease(name, mode, &holder, lease_ttl())).await?;
    if let Some(prev) = got.took_over {
        ui(UiEvent::Message(format!(
            "took over the lock on `{name}` from {prev}: that process is gone or its lease expired"
        )));
        warn!(previous = %prev, "took over lease");
    }
    Ok(got.lease)
}

async fn release(store: &Arc<dyn Store>, lease: &Lease) {
    if let Err(e) = bounded(store.release_lease(lease)).await {
        warn!(error = %e, "could not release the lease; it expires by itself");
    }
}

/// Starts a new run and drives it to an end state.
pub async fn start(
    store: Arc<dyn Store>,
    spec: RunSpec,
    ui: Ui,
) -> Result<RunOutcome, EngineError> {
    let run_id = spec.run_id.clone().unwrap_or_else(new_run_id);
    let lease_name = lock_name(spec.env.as_deref());
    let lease = take_lease(
        &store,
        &lease_name,
        lease_mode(&spec.runbook, &spec.registry),
        &run_id,
        &ui,
    )
    .await?;
    let source_region = spec.env.as_ref().map(|e| e.active_region.clone());
    let rb = &spec.runbook;
    let first = Event::RunStarted {
        run_id: run_id.clone(),
        runbook: file_ref(&rb.name, &rb.file.path, &rb.content_hash),
        environment: spec
            .env
            .as_ref()
            .map(|e| file_ref(&e.name, &e.file.path, &e.content_hash)),
        mode: spec.mode,
        operator: spec.operator.clone(),
        host: journal::hostname(),
        pid: std::process::id(),
        params: spec.params.clone(),
        target_region: spec.target_region.clone(),
        source_region: source_region.clone(),
        options: spec.options.clone(),
        failed_at_ms: spec.failed_at_ms,
        rto_target_ms: rb.rto.map(|d| d.as_millis() as u64),
        rpo_target_ms: rb.rpo.map(|d| d.as_millis() as u64),
        drctl_version: env!("CARGO_PKG_VERSION").to_string(),
        lease_mode: Some(lease.mode),
    };
    let journal = match JournalWriter::create(store.clone(), &run_id, lease.clone(), first).await {
        Ok((w, _)) => w,
        Err(e) => {
            release(&store, &lease).await;
            return Err(e.into());
        }
    };
    ui(UiEvent::RunStarted {
        run_id: run_id.clone(),
        journal: store.journal_location(&run_id),
    });
    let states = rb
        .steps
        .iter()
        .map(|s| (s.id.clone(), State::Pending))
        .collect();
    let run = Run {
        run_id,
        store,
        runbook: spec.runbook,
        registry: spec.registry,
        env: spec.env,
        mode: spec.mode,
        params: spec.params,
        target_region: spec.target_region,
        source_region,
        operator: spec.operator,
        options: spec.options,
        failed_at_ms: spec.failed_at_ms,
        parallelism: spec.parallelism.max(1),
        journal,
        states,
        outputs: BTreeMap::new(),
        scope: Default::default(),
        dirty: Default::default(),
        dependents: Default::default(),
        ready_queue: Default::default(),
        checkpoints: HashMap::new(),
        ui,
    };
    run.drive().await
}

/// Reads and verifies a run's journal.
pub async fn load_view_pub(
    store: &dyn Store,
    run_id: &str,
) -> Result<(RunView, journal::Verified), EngineError> {
    let bytes = store.read_journal(run_id).await?;
    let verified = journal::verify(&bytes)?;
    let view = fold(&verified).ok_or(JournalError::NoStart)?;
    Ok((view, verified))
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
    let lease_name = lock_name(env.as_deref());
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
    if let Some(st @ (RunStatus::Succeeded | RunStatus::Aborted)) = view.status {
        return Err(EngineError::NotResumable {
            run_id: run_id.to_string(),
            status: st.as_str().to_string(),
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
    let repaired = if verified.torn_tail > 0 {
        bounded(store.repair_torn_tail(run_id, lease, verified.complete_len as u64)).await?
    } else {
        0
    };
    let mut journal = JournalWriter::resume(
        store.clone(),
        run_id,
        lease.clone(),
        verified.records.len() as u64,
        verified.head.clone(),
    );
    journal
        .append(Event::RunResumed {
            operator: opts.operator.clone(),
            host: journal::hostname(),
            pid: std::process::id(),
            runbook_changed: changed,
            decisions: decisions.clone(),
            repaired_tail_bytes: repaired,
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
        params: view.params.clone(),
        target_region: view.target_region.clone(),
        source_region: view.source_region.clone(),
        operator: opts.operator.clone(),
        options: RunOptions {
            interactive: opts.interactive,
            ..view.options.clone()
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
        ui,
    };
    run.drive().await
}

fn err_info(e: &ActionError) -> ErrorInfo {
    let kind = match e {
        ActionError::Refused { .. } => "refused",
        ActionError::AwaitingApproval { .. } => "awaiting_approval",
        _ => "failed",
    };
    ErrorInfo {
        message: e.to_string(),
        hint: e.hint().map(str::to_string),
        kind: kind.to_string(),
    }
}

impl Run {
    fn run_value(&self) -> Value {
        json!({
            "id": self.run_id,
            "mode": self.mode.as_str(),
            "target_region": self.target_region,
            "source_region": self.source_region,
            "operator": self.operator,
        })
    }

    fn step_timeout(step: &Step) -> Duration {
        step.timeout.unwrap_or(if step.action == "approval" {
            DEFAULT_APPROVAL_TIMEOUT
        } else {
            DEFAULT_STEP_TIMEOUT
        })
    }

    /// Marks steps that can no longer run; returns the ids ready to start.
    /// Only steps marked dirty are looked at, so each step is evaluated a
    /// bounded number of times over the whole run.
    async fn ready(&mut self) -> Result<Vec<String>, EngineError> {
        let mut ready = Vec::new();
        let runbook = self.runbook.clone();
        while let Some(idx) = self.dirty.pop_first() {
            let s = &runbook.steps[idx];
            if self.states.get(&s.id) != Some(&State::Pending) {
                continue;
            }
            let skip = if !s.when.applies(self.mode) {
                Some(format!(
                    "when: {} (this is a {} run)",
                    s.when.as_str(),
                    self.mode.as_str()
                ))
            } else {
                missing_env_ref(&self.scope, s)
                    .map(|r| format!("skip_unless: the environment has no `{r}`"))
            };
            if let Some(reason) = skip {
                self.journal
                    .append(Event::StepSkipped {
                        step: s.id.clone(),
                        reason: reason.clone(),
                    })
                    .await?;
                (self.ui)(UiEvent::StepSkipped {
                    step: s.id.clone(),
                    reason,
                });
                self.set_terminal(&s.id, State::SkippedByMode);
                continue;
            }
            let mut all_done = true;
            let mut blocked_by = None;
            for (n, _) in &s.needs {
                match self.states.get(n) {
                    Some(State::Succeeded | State::SkippedByMode) => {}
                    Some(State::Failed) => {
                        let tolerated = runbook
                            .step(n)
                            .is_some_and(|d| d.on_failure == OnFailure::Continue);
                        if !tolerated {
                            blocked_by = Some(n.clone());
                        }
                    }
                    Some(State::SkippedByFailure) => blocked_by = Some(n.clone()),
                    _ => all_done = false,
                }
            }
            if let Some(dep) = blocked_by {
                let reason = format!("needs `{dep}`, which did not succeed");
                self.journal
                    .append(Event::StepSkipped {
                        step: s.id.clone(),
                        reason: reason.clone(),
                    })
                    .await?;
                (self.ui)(UiEvent::StepSkipped {
                    step: s.id.clone(),
                    reason,
                });
                self.set_terminal(&s.id, State::SkippedByFailure);
            } else if all_done {
                ready.push(s.id.clone());
            }
        }
        Ok(ready)
    }

    /// Records an end state and queues the step's dependents for a look.
    fn set_terminal(&mut self, id: &str, state: State) {
        self.states.insert(id.to_string(), state);
        if let Some(deps) = self.dependents.get(id) {
            self.dirty.extend(deps.iter().copied());
        }
    }

    /// Builds the scheduling indexes and the scope once per process.
    fn prepare(&mut self) {
        self.dirty = (0..self.runbook.steps.len()).collect();
        self.dependents.clear();
        for (i, s) in self.runbook.steps.iter().enumerate() {
            for (n, _) in &s.needs {
                self.dependents.entry(n.clone()).or_default().push(i);
            }
        }
        self.scope = scope_for(
            &self.params,
            self.env.as_deref(),
            self.target_region.as_deref(),
            self.run_value(),
            &self.outputs,
        );
    }

    async fn drive(mut self) -> Result<RunOutcome, EngineError> {
        self.prepare();
        let span = info_span!("run", run_id = %self.run_id, runbook = %self.runbook.name, mode = self.mode.as_str());
        let result = self.event_loop().instrument(span).await;
        let lease = self.journal.lease().clone();
        release(&self.store, &lease).await;
        result
    }

    async fn event_loop(&mut self) -> Result<RunOutcome, EngineError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let mut running = Tasks::default();
        let mut stopping: Option<(RunStatus, String)> = None;
        let mut failed: Option<String> = None;
        let mut sigint = signal(SignalKind::interrupt())
            .map_err(|e| EngineError::Invalid(format!("signal handler: {e}")))?;
        let mut sigterm = signal(SignalKind::terminate())
            .map_err(|e| EngineError::Invalid(format!("signal handler: {e}")))?;
        let mut interrupts = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let ttl = lease_ttl();
        let mut last_renew = Instant::now();
        let mut last_abort_poll = Instant::now();
        let mut hard_stop = false;
        loop {
            if stopping.is_none() && failed.is_none() {
                let newly_ready = self.ready().await?;
                self.ready_queue.extend(newly_ready);
                while running.0.len() < self.parallelism {
                    let Some(id) = self.ready_queue.pop_front() else {
                        break;
                    };
                    if running.0.contains_key(&id) {
                        continue;
                    }
                    let handle = self.start_step(&id, tx.clone()).await?;
                    running.0.insert(id, handle);
                }
            }
            if running.0.is_empty() {
                break;
            }
            tokio::select! {
                Some(msg) = rx.recv() => match msg {
                    Msg::AttemptFailed { step, attempt, error, delay, ack } => {
                        (self.ui)(UiEvent::StepRetry { step: step.clone(), attempt, error: error.message.clone(), delay });
                        self.journal.append(Event::StepAttemptFailed { step, attempt, error, retry_in_ms: delay.as_millis() as u64 }).await?;
                        let _ = ack.send(stopping.is_none());
                    }
                    Msg::Checkpoint { step, data, ack } => {
                        // Journaled before the action may go on to its effect.
                        match self.journal.append(Event::StepCheckpoint { step: step.clone(), data: data.clone() }).await {
                            Ok(_) => {
                                self.checkpoints.insert(step, data);
                                let _ = ack.send(Ok(()));
                            }
                            Err(e) => {
                                let _ = ack.send(Err(e.to_string()));
                                return Err(e.into());
                            }
                        }
                    }
                    Msg::Done { step, result, attempts, duration } => {
                        running.0.remove(&step);
                        if let Some(f) = self.finish_step(&step, result, attempts, duration).await? {
                            match f {
                                Finish::Failed(msg) => failed = failed.or(Some(msg)),
                                Finish::AwaitingApproval(msg) => {
                                    stopping = stopping.or(Some((RunStatus::WaitingApproval, msg)));
                                }
                            }
                        }
                    }
                },
                _ = sigint.recv() => {
                    interrupts += 1;
                    if interrupts == 1 {
                        (self.ui)(UiEvent::Message("interrupt: finishing in-flight steps, starting no new ones (Ctrl-C again to stop now)".into()));
                        stopping = Some((RunStatus::Interrupted, "interrupted by Ctrl-C".into()));
                    } else {
                        hard_stop = true;
                        stopping = Some((RunStatus::Interrupted, "stopped by a second Ctrl-C; in-flight steps re-run on resume".into()));
                        break;
                    }
                }
                _ = sigterm.recv() => {
                    (self.ui)(UiEvent::Message("SIGTERM: finishing in-flight steps, starting no new ones".into()));
                    stopping = stopping.or(Some((RunStatus::Interrupted, "interrupted by SIGTERM".into())));
                }
                _ = tick.tick() => {
                    if stopping.is_none() && last_abort_poll.elapsed() >= ABORT_POLL {
                        last_abort_poll = Instant::now();
                        if let Ok(Ok(Some(by))) = tokio::time::timeout(Duration::from_secs(2), self.store.abort_requested(&self.run_id)).await {
                            (self.ui)(UiEvent::Message(format!("abort requested by {by}: finishing in-flight steps")));
                            stopping = Some((RunStatus::Aborted, format!("aborted by {}", by.trim())));
                        }
                    }
                    if last_renew.elapsed() >= ttl / 3 {
                        last_renew = Instant::now();
                        let lease = self.journal.lease().clone();
                        match bounded(self.store.renew_lease(&lease, ttl)).await {
                            Ok(l) => self.journal.set_lease(l),
                            Err(EngineError::Store(e @ crate::store::StoreError::Fenced { .. })) => {
                                // Someone else owns the environment now: stop
                                // acting at once rather than race them.
                                return Err(JournalError::Fenced(e).into());
                            }
                            Err(e) => {
                                // The store is unreachable: the next journal
                                // write decides; start nothing new meanwhile.
                                warn!(error = %e, "lease renewal failed");
                                stopping = stopping.or(Some((RunStatus::Interrupted, format!("lease renewal failed: {e}"))));
                            }
                        }
                    }
                }
            }
        }
        if hard_stop {
            for (_, h) in running.0.drain() {
                h.abort();
            }
        }
        // Invariant: a run that was not stopped or failed has run every
        // step. If scheduling ever left one pending, saying "succeeded"
        // would be a lie about a recovery; say "failed" instead.
        let stranded: Vec<String> = self
            .runbook
            .steps
            .iter()
            .filter(|s| self.states.get(&s.id) == Some(&State::Pending))
            .map(|s| s.id.clone())
            .collect();
        if stopping.is_none() && failed.is_none() && !stranded.is_empty() {
            failed = Some(format!(
                "internal error: steps never became ready: {}",
                stranded.join(", ")
            ));
        }
        let (status, reason) = match (stopping, failed) {
            (Some((RunStatus::Aborted, r)), _) => (RunStatus::Aborted, Some(r)),
            (_, Some(f)) => (RunStatus::Failed, Some(f)),
            (Some((s, r)), None) => (s, Some(r)),
            (None, None) => (RunStatus::Succeeded, None),
        };
        if matches!(status, RunStatus::Failed | RunStatus::Aborted) {
            // Say why the rest never ran; resume re-plans them regardless.
            let why = format!("not started: the run {}", status.as_str());
            for s in self.runbook.steps.clone() {
                if self.states.get(&s.id) == Some(&State::Pending) {
                    self.journal
                        .append(Event::StepSkipped {
                            step: s.id.clone(),
                            reason: why.clone(),
                        })
                        .await?;
                }
            }
        }
        self.journal
            .append(Event::RunFinished {
                status,
                reason: reason.clone(),
            })
            .await?;
        info!(status = status.as_str(), "run finished");
        Ok(RunOutcome {
            run_id: self.run_id.clone(),
            status,
            reason,
        })
    }

    async fn start_step(
        &mut self,
        id: &str,
        tx: mpsc::UnboundedSender<Msg>,
    ) -> Result<JoinHandle<()>, EngineError> {
        let step = self
            .runbook
            .step(id)
            .cloned()
            .ok_or_else(|| EngineError::Invalid(format!("unknown step {id}")))?;
        let resolved = self.scope.resolve_value(&step.with.to_json());
        let inputs = resolved.clone().unwrap_or(Value::Null);
        self.journal
            .append(Event::StepStarted {
                step: id.to_string(),
                action: step.action.clone(),
                inputs: inputs.clone(),
            })
            .await?;
        self.states.insert(id.to_string(), State::Running);
        let describe = self
            .registry
            .get(&step.action)
            .map(|a| a.describe(&inputs))
            .unwrap_or_default();
        (self.ui)(UiEvent::StepStarted {
            step: id.to_string(),
            action: step.action.clone(),
            describe,
        });
        let ctx_base = StepContext {
            run_id: self.run_id.clone(),
            step_id: id.to_string(),
            mode: self.mode,
            env: self.env.clone(),
            target_region: self.target_region.clone(),
            store: self.store.clone(),
            options: self.options.clone(),
            operator: self.operator.clone(),
            attempt: 1,
            deadline: Instant::now(),
            runbook_dir: std::path::Path::new(&self.runbook.file.path)
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default(),
            failed_at: self
                .failed_at_ms
                .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms)),
            progress: {
                let ui = self.ui.clone();
                let step = id.to_string();
                Arc::new(move |message| {
                    ui(UiEvent::StepProgress {
                        step: step.clone(),
                        message,
                    })
                })
            },
            checkpoints: {
                let tx = tx.clone();
                let step = id.to_string();
                let saver: action::CheckpointSaver = Arc::new(move |data| {
                    let tx = tx.clone();
                    let step = step.clone();
                    Box::pin(async move {
                        let (ack, rx) = oneshot::channel();
                        tx.send(Msg::Checkpoint { step, data, ack })
                            .map_err(|_| "the run is stopping".to_string())?;
                        rx.await.map_err(|_| {
                            "the run stopped before the checkpoint was journaled".to_string()
                        })?
                    })
                });
                action::Checkpoints::new(saver, self.checkpoints.get(id).cloned())
            },
            registry: self.registry.clone(),
        };
        // Parameters are decoded once, here; every attempt reuses them. A
        // value that does not decode fails the step as its first attempt
        // (not retried: another attempt would decode the same value).
        let prepared = match (self.registry.get(&step.action), resolved) {
            (None, _) => Err((
                ErrorInfo {
                    message: format!("unknown action `{}`", step.action),
                    hint: None,
                    kind: "failed".into(),
                },
                0,
            )),
            (_, Err(e)) => Err((
                ErrorInfo {
                    message: format!("cannot resolve parameters: {e}"),
                    hint: Some("check the ${...} references; `drctl validate` lists them".into()),
                    kind: "failed".into(),
                },
                0,
            )),
            (Some(action), Ok(params)) => action.prepare(&params).map_err(|e| (err_info(&e), 1)),
        };
        let span = info_span!("step", step = %id, action = %step.action);
        let id = id.to_string();
        Ok(tokio::spawn(
            async move {
                let started = Instant::now();
                let (result, attempts) = match prepared {
                    Err((info, attempts)) => (Err(info), attempts),
                    Ok(prepared) => {
                        run_attempts(prepared.as_ref(), &step, ctx_base, &tx, &id).await
                    }
                };
                let _ = tx.send(Msg::Done {
                    step: id,
                    result,
                    attempts,
                    duration: started.elapsed(),
                });
            }
            .instrument(span),
        ))
    }

    async fn finish_step(
        &mut self,
        id: &str,
        result: Result<Outputs, ErrorInfo>,
        attempts: u32,
        duration: Duration,
    ) -> Result<Option<Finish>, EngineError> {
        let duration_ms = duration.as_millis() as u64;
        match result {
            Ok(outputs) => {
                if let Some(step) = self.runbook.step(id) {
                    // A gate skipped in a drill is not an approval by anyone.
                    if step.action == "approval"
                        && outputs.get("skipped") != Some(&Value::Bool(true))
                    {
                        let get = |k: &str| {
                            outputs
                                .get(k)
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string()
                        };
                        self.journal
                            .append(Event::Approval {
                                step: id.to_string(),
                                by: get("approved_by"),
                                at: get("approved_at"),
                                via: get("via"),
                            })
                            .await?;
                    }
                }
                self.journal
                    .append(Event::StepFinished {
                        step: id.to_string(),
                        status: StepStatus::Succeeded,
                        outputs: outputs.clone(),
                        error: None,
                        attempts,
                        duration_ms,
                    })
                    .await?;
                let detail = outputs
                    .get("summary")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                (self.ui)(UiEvent::StepFinished {
                    step: id.to_string(),
                    ok: true,
                    duration,
                    detail,
                });
                if let Some(Value::Object(steps)) = self.scope.root.get_mut("steps") {
                    steps.insert(id.to_string(), json!({ "outputs": outputs }));
                }
                self.outputs.insert(id.to_string(), outputs);
                self.set_terminal(id, State::Succeeded);
                Ok(None)
            }
            Err(err) => {
                let awaiting = err.kind == "awaiting_approval";
                self.journal
                    .append(Event::StepFinished {
                        step: id.to_string(),
                        status: StepStatus::Failed,
                        outputs: Map::new(),
                        error: Some(err.clone()),
                        attempts,
                        duration_ms,
                    })
                    .await?;
                (self.ui)(UiEvent::StepFinished {
                    step: id.to_string(),
                    ok: false,
                    duration,
                    detail: err.message.clone(),
                });
                self.set_terminal(id, State::Failed);
                if awaiting {
                    return Ok(Some(Finish::AwaitingApproval(err.message)));
                }
                let abort = self
                    .runbook
                    .step(id)
                    .is_none_or(|s| s.on_failure == OnFailure::Abort);
                // The hint travels with the reason: at 3 a.m. the next
                // action matters more than the error's wording.
                let hint = err
                    .hint
                    .as_ref()
                    .map(|h| format!("\n  hint: {h}"))
                    .unwrap_or_default();
                Ok(abort
                    .then(|| Finish::Failed(format!("step `{id}` failed: {}{hint}", err.message))))
            }
        }
    }
}

enum Finish {
    Failed(String),
    AwaitingApproval(String),
}

/// How often the loop asks the store for an abort request.
const ABORT_POLL: Duration = Duration::from_millis(200);

/// In-flight step tasks; aborted if the loop exits early (a journal write
/// failed), so no step goes on acting for a run that stopped.
#[derive(Default)]
struct Tasks(HashMap<String, JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for (_, h) in self.0.drain() {
            h.abort();
        }
    }
}

/// Runs attempts with per-attempt timeout and backoff. Each failed attempt
/// is journaled (and acknowledged) before the next one acts.
async fn run_attempts(
    prepared: &dyn PreparedStep,
    step: &Step,
    mut ctx: StepContext,
    tx: &mpsc::UnboundedSender<Msg>,
    id: &str,
) -> (Result<Outputs, ErrorInfo>, u32) {
    let timeout = Run::step_timeout(step);
    let mut attempt = 1;
    loop {
        ctx.attempt = attempt;
        ctx.deadline = Instant::now() + timeout;
        let (info, retryable) = match tokio::time::timeout(timeout, prepared.execute(&ctx)).await {
            Ok(Ok(out)) => return (Ok(out), attempt),
            Ok(Err(e)) => (err_info(&e), e.retryable()),
            Err(_) => (
                ErrorInfo {
                    message: format!(
                        "timed out after {}",
                        crate::duration::format_duration(timeout)
                    ),
                    hint: Some(
                        "raise the step's `timeout`, or check why the system is slow".into(),
                    ),
                    kind: "timeout".into(),
                },
                true,
            ),
        };
        if !retryable || attempt >= step.retry.attempts {
            return (Err(info), attempt);
        }
        let delay = step.retry.backoff(attempt + 1);
        let (ack_tx, ack_rx) = oneshot::channel();
        if tx
            .send(Msg::AttemptFailed {
                step: id.to_string(),
                attempt,
                error: info.clone(),
                delay,
                ack: ack_tx,
            })
            .is_err()
        {
            return (Err(info), attempt);
        }
        match ack_rx.await {
            Ok(true) => {}
            _ => return (Err(info), attempt),
        }
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// The first `skip_unless` reference the environment does not provide.
pub fn missing_env_ref(scope: &crate::expr::Scope, step: &crate::runbook::Step) -> Option<String> {
    step.skip_unless.iter().find_map(|(r, _)| {
        let path: Vec<String> = r.split('.').map(str::to_string).collect();
        match scope.lookup(&path) {
            None | Some(Value::Null) => Some(r.clone()),
            Some(_) => None,
        }
    })
}
