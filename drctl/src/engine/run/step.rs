//! One step's lifecycle inside the event loop: start (journal, decode the
//! parameters once), the attempts with their timeout and backoff, and the
//! journaled end.

use super::*;
use crate::action::CheckpointError;
use crate::journal::FailureKind;

impl Run {
    pub(super) async fn start_step(
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
        self.started_at.insert(id.to_string(), Instant::now());
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
            started_by: self.started_by.clone(),
            attempt: 1,
            deadline: Instant::now(),
            // Absolute: paths in a runbook are relative to the runbook file.
            runbook_dir: crate::environment::paths::base_dir(&self.runbook.file.path),
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
                            .map_err(|_| CheckpointError::RunStopping)?;
                        rx.await.map_err(|_| CheckpointError::NotJournaled)
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
                    kind: FailureKind::Failed,
                },
                0,
            )),
            (_, Err(e)) => Err((
                ErrorInfo {
                    message: format!("cannot resolve parameters: {e}"),
                    hint: Some("check the ${...} references; `drctl validate` lists them".into()),
                    kind: FailureKind::Failed,
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

    pub(super) async fn finish_step(
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
                        self.journal.stage(Event::Approval {
                            step: id.to_string(),
                            by: get("approved_by"),
                            at: get("approved_at"),
                            via: get("via"),
                        })?;
                    }
                }
                self.journal.stage(Event::StepFinished {
                    step: id.to_string(),
                    status: StepStatus::Succeeded,
                    outputs: outputs.clone(),
                    error: None,
                    attempts,
                    duration_ms,
                })?;
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
                let awaiting = err.kind == FailureKind::AwaitingApproval;
                self.journal.stage(Event::StepFinished {
                    step: id.to_string(),
                    status: StepStatus::Failed,
                    outputs: Map::new(),
                    error: Some(err.clone()),
                    attempts,
                    duration_ms,
                })?;
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

impl Run {
    /// Cuts short the approval steps still waiting once the run stops (a
    /// signal, an abort, a failed lease renewal): an approval changes
    /// nothing, so there is nothing to finish. Each is journaled as
    /// interrupted (resume asks again) and named in `pending`.
    pub(super) fn cancel_approvals(
        &mut self,
        running: &mut Tasks,
        pending: &mut Vec<String>,
    ) -> Result<(), EngineError> {
        let waiting: Vec<String> = running
            .0
            .keys()
            .filter(|id| {
                self.runbook
                    .step(id)
                    .is_some_and(|s| s.action == "approval")
            })
            .cloned()
            .collect();
        for id in waiting {
            if let Some(h) = running.0.remove(&id) {
                h.abort();
            }
            let message = "the run stopped while this approval was pending".to_string();
            let waited = self
                .started_at
                .get(&id)
                .map_or(Duration::ZERO, Instant::elapsed);
            self.journal.stage(Event::StepFinished {
                step: id.clone(),
                status: StepStatus::Failed,
                outputs: Map::new(),
                error: Some(ErrorInfo {
                    message: message.clone(),
                    hint: None,
                    kind: FailureKind::Interrupted,
                }),
                attempts: 1,
                duration_ms: waited.as_millis() as u64,
            })?;
            (self.ui)(UiEvent::StepFinished {
                step: id.clone(),
                ok: false,
                duration: waited,
                detail: message,
            });
            self.states.insert(id.clone(), State::Failed);
            pending.push(id);
        }
        Ok(())
    }
}

fn err_info(e: &ActionError) -> ErrorInfo {
    let kind = match e {
        ActionError::Refused { .. } => FailureKind::Refused,
        ActionError::AwaitingApproval { .. } => FailureKind::AwaitingApproval,
        _ => FailureKind::Failed,
    };
    ErrorInfo {
        message: e.to_string(),
        hint: e.hint().map(str::to_string),
        kind,
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
                    kind: FailureKind::Timeout,
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
