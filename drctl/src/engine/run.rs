//! Starting and driving one run: the lease, the first journal record, and
//! the event loop. Resuming ([`resume`]) and a step's lifecycle
//! ([`step`]) live in the child modules.

mod abort;
mod resume;
mod step;

pub use abort::{abort, AbortOutcome, ABORT_WAIT};
pub use resume::{resume, ResumeHooks, ResumeOptions, ENV_ARTIFACT};

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
        /// Sent once the record is durable; dropped when it cannot be.
        ack: oneshot::Sender<()>,
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
    /// Who started the run (`run_started.operator`), whoever resumed it:
    /// `distinct_approver` gates refuse this operator's approval.
    started_by: String,
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
    /// When each running step started in this process (for the duration
    /// of a step the run cuts short).
    started_at: HashMap<String, Instant>,
    ui: Ui,
    /// The caller's work under the lease (a new run's; resume has none).
    hooks: Option<Arc<dyn RunHooks>>,
}

/// The journal names files absolutely, so `resume`, `status` and `report`
/// find them from any directory.
fn file_ref(name: &str, path: &str, sha: &str) -> FileRef {
    FileRef {
        name: name.to_string(),
        path: crate::environment::paths::absolute(std::path::Path::new(path))
            .display()
            .to_string(),
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

/// The steps whose success proves the service works: the step's
/// `proves_recovery:` if written, else its action kind's declaration.
/// Journaled when the run starts, so RTO is computed from the journal alone.
pub fn proof_steps(runbook: &Runbook, kinds: &Registry) -> Vec<String> {
    runbook
        .steps
        .iter()
        .filter(|s| {
            s.proves_recovery.unwrap_or_else(|| {
                kinds
                    .get(&s.action)
                    .is_some_and(|a| a.proves_recovery(&s.with.to_json()))
            })
        })
        .map(|s| s.id.clone())
        .collect()
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
    let env_name = spec.env.as_deref().map(|e| e.name.as_str());
    if spec.options.isolated {
        super::lock::refuse_during_incident(store.as_ref(), env_name).await?;
    }
    let lease_name = run_lock_name(env_name, spec.options.isolated);
    let mode = lease_mode(&spec.runbook, &spec.registry);
    let mut lease = take_lease(&store, &lease_name, mode, &run_id, &ui).await?;
    if mode == LeaseMode::Exclusive && !spec.options.isolated {
        for drill in super::lock::live_drills(store.as_ref(), env_name).await {
            warn!(drill = %drill, "an isolated drill runs on this environment");
            ui(UiEvent::Message(format!(
                "isolated drill {drill} is running on this environment: it does not hold this run off (if this run changes production, the drill fails its final production check)"
            )));
        }
    }
    let mut failed_at_ms = spec.failed_at_ms;
    if let Some(h) = &spec.hooks {
        let fut = tokio::time::timeout(hooks::HOOK_TIMEOUT, h.before_start());
        match hooks::with_renewal(store.as_ref(), lease.clone(), fut).await {
            Ok((Ok(Ok(t)), l)) => {
                lease = l;
                failed_at_ms = t.or(failed_at_ms);
            }
            Ok((Ok(Err(e)), l)) => {
                release(&store, &l).await;
                return Err(EngineError::Hook(e));
            }
            Ok((Err(_), l)) => {
                release(&store, &l).await;
                return Err(EngineError::HookTimeout(hooks::HOOK_TIMEOUT));
            }
            Err(e) => {
                release(&store, &lease).await;
                return Err(e);
            }
        }
    }
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
        failed_at_ms,
        rto_target_ms: rb.rto.map(|d| d.as_millis() as u64),
        rpo_target_ms: rb.rpo.map(|d| d.as_millis() as u64),
        drctl_version: env!("CARGO_PKG_VERSION").to_string(),
        lease_mode: Some(lease.mode),
        proofs: Some(proof_steps(rb, &spec.registry)),
    };
    let journal = match JournalWriter::create(store.clone(), &run_id, lease.clone(), first).await {
        Ok((w, _)) => w,
        Err(e) => {
            release(&store, &lease).await;
            return Err(e.into());
        }
    };
    // The environment as it was, so a resume against a changed file can
    // show what changed (the journal holds only its hash). Before step 1.
    if let Some(env) = &spec.env {
        let saved =
            bounded(store.put_artifact(&run_id, resume::ENV_ARTIFACT, env.file.text.as_bytes()))
                .await;
        if let Err(e) = saved {
            release(&store, &lease).await;
            return Err(e);
        }
    }
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
        started_by: spec.operator.clone(),
        operator: spec.operator,
        options: spec.options,
        failed_at_ms,
        parallelism: spec.parallelism.max(1),
        journal,
        states,
        outputs: BTreeMap::new(),
        scope: Default::default(),
        dirty: Default::default(),
        dependents: Default::default(),
        ready_queue: Default::default(),
        checkpoints: HashMap::new(),
        started_at: HashMap::new(),
        ui,
        hooks: spec.hooks,
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

/// The run's view alone, verified and folded in one streaming pass (no
/// record list kept): for readers such as `status` and `report`.
pub async fn load_view_only(store: &dyn Store, run_id: &str) -> Result<RunView, EngineError> {
    fold_in_chunks(store, run_id, super::view::Inputs::Full).await
}

/// The view a report is rendered from: with `lean`, [`load_view_only`]
/// without the steps' inputs, which only the JSON report shows (for
/// 100,000 records they are a third of the view's memory); without, the
/// inputs as compact text ([`super::view::Inputs::Compact`]), which the JSON
/// report prints as they were.
pub async fn load_report_view(
    store: &dyn Store,
    run_id: &str,
    lean: bool,
) -> Result<RunView, EngineError> {
    let kept = if lean {
        super::view::Inputs::Dropped
    } else {
        super::view::Inputs::Compact
    };
    fold_in_chunks(store, run_id, kept).await
}

/// Journal bytes read per chunk while folding a view: readers hold one
/// chunk, never the whole journal (33 MB for 100,000 records).
pub const VIEW_CHUNK_BYTES: usize = 1 << 20;

async fn fold_in_chunks(
    store: &dyn Store,
    run_id: &str,
    kept: super::view::Inputs,
) -> Result<RunView, EngineError> {
    let mut folder = super::view::Folder::keeping(kept);
    let mut cursor = 0;
    loop {
        let chunk = store
            .read_journal_chunk(run_id, cursor, VIEW_CHUNK_BYTES)
            .await?;
        if chunk.bytes.is_empty() {
            return Ok(folder.finish(chunk.torn)?);
        }
        // Chunks hold complete records only.
        folder.feed(&chunk.bytes)?;
        cursor = chunk.next;
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
                self.journal.stage(Event::StepSkipped {
                    step: s.id.clone(),
                    reason: reason.clone(),
                })?;
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
                self.journal.stage(Event::StepSkipped {
                    step: s.id.clone(),
                    reason: reason.clone(),
                })?;
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
        // Every secret the run may use is known to the redactor before the
        // first step can print anything (new runs and resumes alike).
        crate::secretscan::register_references(&self.runbook, self.env.as_deref(), &self.params);
        let span = info_span!("run", run_id = %self.run_id, runbook = %self.runbook.name, mode = self.mode.as_str());
        let mut result = self.event_loop().instrument(span).await;
        if result.is_ok() {
            // Nothing stays staged past the run's end.
            result = match self.journal.flush().await {
                Ok(()) => result,
                Err(e) => Err(e.into()),
            };
        } else {
            // Keep what was concluded before the error, if the store still
            // takes writes (a fenced or failed store refuses; nothing lost
            // that resume would not redo).
            let _ = self.journal.flush().await;
        }
        if let (Ok(outcome), Some(h)) = (&result, self.hooks.clone()) {
            if let Err(e) = self.after_finish(h.as_ref(), outcome).await {
                result = Err(e);
            }
        }
        let lease = self.journal.lease().clone();
        release(&self.store, &lease).await;
        result
    }

    /// Journals the notes the caller hands over after the run finished,
    /// still under the run's lease and through the run's own writer.
    async fn after_finish(
        &mut self,
        h: &dyn RunHooks,
        outcome: &RunOutcome,
    ) -> Result<(), EngineError> {
        let lease = self.journal.lease().clone();
        let fut = tokio::time::timeout(hooks::HOOK_TIMEOUT, h.after_finish(outcome));
        let (notes, lease) = hooks::with_renewal(self.store.as_ref(), lease, fut).await?;
        self.journal.set_lease(lease);
        let Ok(notes) = notes else {
            (self.ui)(UiEvent::Message(format!(
                "the run's closing work did not finish within {:?}; nothing journaled for it",
                hooks::HOOK_TIMEOUT
            )));
            return Ok(());
        };
        for n in notes {
            self.journal
                .append(Event::Note {
                    step: None,
                    message: n.message,
                    data: n.data,
                })
                .await?;
        }
        Ok(())
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
        let mut pending_approvals: Vec<String> = Vec::new();
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
            if stopping.is_some() {
                // Nobody waits an hour for a human once the run stops.
                self.cancel_approvals(&mut running, &mut pending_approvals)?;
            }
            if running.0.is_empty() {
                break;
            }
            // Conclusions staged since the last write (finished or skipped
            // steps) become durable before the loop waits on anything; a
            // step started above already carried them in its write.
            self.journal.flush().await?;
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
                                let _ = ack.send(());
                            }
                            Err(e) => {
                                // Dropping the ack tells the action; the run
                                // stops with the journal's error.
                                drop(ack);
                                return Err(e.into());
                            }
                        }
                    }
                    Msg::Done { step, result, attempts, duration } => {
                        // A step cut short by the run stopping (a pending
                        // approval) is already concluded in the journal.
                        if running.0.remove(&step).is_none() {
                            continue;
                        }
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
                // Ctrl-C and SIGTERM count together: the first stops
                // gracefully, the second (of either) stops now.
                sig = async { tokio::select! {
                    _ = sigint.recv() => "Ctrl-C",
                    _ = sigterm.recv() => "SIGTERM",
                } } => {
                    interrupts += 1;
                    if interrupts == 1 {
                        (self.ui)(UiEvent::Message(format!("{sig}: finishing in-flight steps, starting no new ones ({sig} again to stop now)")));
                        stopping = Some((RunStatus::Interrupted, format!("interrupted by {sig}")));
                    } else {
                        hard_stop = true;
                        stopping = Some((RunStatus::Interrupted, format!("stopped by a second {sig}; in-flight steps re-run on resume")));
                        break;
                    }
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
        if let Some((_, why)) = &mut stopping {
            if !pending_approvals.is_empty() {
                why.push_str(&format!(
                    "; approval still pending for {}",
                    pending_approvals.join(", ")
                ));
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
            (None, None) => (RunStatus::Succeeded, self.carried_failures()),
        };
        if matches!(status, RunStatus::Failed | RunStatus::Aborted) {
            // Say why the rest never ran; resume re-plans them regardless.
            let why = format!("not started: the run {}", status.as_str());
            for s in self.runbook.steps.clone() {
                if self.states.get(&s.id) == Some(&State::Pending) {
                    self.journal.stage(Event::StepSkipped {
                        step: s.id.clone(),
                        reason: why.clone(),
                    })?;
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
            pending_approvals,
        })
    }
}

impl Run {
    /// A succeeded run whose `on_failure: continue` steps failed says so
    /// in its closing record, so status, reports and the exit line never
    /// show a plain "succeeded" over a failed step.
    fn carried_failures(&self) -> Option<String> {
        let failed: Vec<&str> = self
            .runbook
            .steps
            .iter()
            .filter(|s| self.states.get(&s.id) == Some(&State::Failed))
            .map(|s| s.id.as_str())
            .collect();
        (!failed.is_empty()).then(|| {
            format!(
                "{} step(s) failed and the run carried on past them (on_failure: continue): {}",
                failed.len(),
                failed.join(", ")
            )
        })
    }
}

/// Why a finished step stops the run.
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
