//! `approval`: a human gate before a dangerous step.
//!
//! Approval comes from `drctl approve RUN_ID STEP` in another terminal (it
//! writes to the state store, which this step polls) or, when drctl runs on
//! a TTY, from a confirmation typed here. If nobody approves within the
//! step's timeout, the run ends `waiting-approval`; approving later and
//! `drctl resume` continues it. In drills the gate is skipped unless
//! `skip_in_drill: false`, because drills measure the machine, not the pager.
//!
//! `distinct_approver: true` is the four-eyes rule: the operator who
//! started the run (`run_started.operator`) cannot approve, neither with
//! `drctl approve` nor at the TTY. Identities are the names operators give
//! (`DRCTL_OPERATOR`, `$USER`, `--as`): the rule stops a mistake, it does
//! not authenticate anyone.
//!
//! A run that stops (Ctrl-C, SIGTERM, `drctl abort`) cuts a pending
//! approval short at once; the engine journals it as interrupted.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::action::{ActionError, ActionKind, Outputs, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::runbook::Mode;
use crate::store::Approval as ApprovalRecord;
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct Approval;

pub struct ApprovalParams {
    pub message: String,
    pub skip_in_drill: bool,
    /// The run's starter may not approve.
    pub distinct_approver: bool,
}

fn outputs(rec: &ApprovalRecord, skipped: bool) -> Outputs {
    let mut o = Outputs::new();
    o.insert("approved_by".into(), json!(rec.by));
    o.insert("approved_at".into(), json!(rec.at));
    o.insert("via".into(), json!(rec.via));
    o.insert("skipped".into(), json!(skipped));
    o
}

#[async_trait]
impl ActionKind for Approval {
    type Params = ApprovalParams;

    fn kind(&self) -> &'static str {
        "approval"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Waits for a human; changes nothing.
        true
    }
    fn summary(&self) -> &'static str {
        "Wait for a human to approve (drctl approve, or a TTY confirmation)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["approved_by", "approved_at", "via", "skipped"]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "approval")?;
        let message = r
            .opt("message")
            .and_then(|n| ctx.string(n, "message"))
            .unwrap_or_else(|| "Proceed?".into());
        let skip_in_drill = r
            .opt("skip_in_drill")
            .and_then(|n| ctx.boolean(n, "skip_in_drill"))
            .unwrap_or(true);
        let distinct_approver = r
            .opt("distinct_approver")
            .and_then(|n| ctx.boolean(n, "distinct_approver"))
            .unwrap_or(false);
        r.finish(ctx);
        Some(ApprovalParams {
            message,
            skip_in_drill,
            distinct_approver,
        })
    }
    fn with_schema(&self) -> Option<Value> {
        Some(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "message": {"type": "string", "description": "The question shown to the approver."},
                "skip_in_drill": {"type": "boolean", "default": true, "description": "Skip the gate in drill mode."},
                "distinct_approver": {"type": "boolean", "default": false,
                    "description": "Refuse an approval by the operator who started the run (four eyes)."}
            }
        }))
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "ask for approval: {}",
            params
                .get("message")
                .map(crate::action::short)
                .unwrap_or_else(|| "Proceed?".into())
        )
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        if ctx.mode == Mode::Drill && p.skip_in_drill {
            let rec = ApprovalRecord::now("drill-mode", "skipped-in-drill");
            return Ok(outputs(&rec, true));
        }
        let store = ctx.store.clone();
        let (run, step) = (ctx.run_id.clone(), ctx.step_id.clone());
        // Under `distinct_approver` an approval by the run's starter does
        // not count (`drctl approve` refuses it; this guards the store).
        let mut warned = false;
        let mut accept = |rec: ApprovalRecord| -> Option<ApprovalRecord> {
            if p.distinct_approver && rec.by == ctx.started_by {
                if !warned {
                    warned = true;
                    (ctx.progress)(format!(
                        "approval by {} ignored: distinct_approver wants someone other than the run's starter",
                        rec.by
                    ));
                }
                return None;
            }
            Some(rec)
        };
        let stored = store
            .get_approval(&run, &step)
            .await
            .map_err(|e| ActionError::failed(e.to_string()))?;
        if let Some(rec) = stored.and_then(&mut accept) {
            return Ok(outputs(&rec, false));
        }
        let d = crate::cli::ui::drctl();
        let who = if p.distinct_approver {
            format!(
                " (someone other than {}: distinct_approver)",
                ctx.started_by
            )
        } else {
            String::new()
        };
        crate::cli::ui::err(&format!(
            "\n  approval needed for step `{step}`: {}\n  approve from another terminal{who}: {d} approve {run} {step}",
            p.message
        ));
        let tty = ctx.options.interactive && std::io::stdin().is_terminal();
        let self_gate = p.distinct_approver && ctx.operator == ctx.started_by;
        if tty && self_gate {
            crate::cli::ui::err(&format!(
                "  {} started this run, so this terminal cannot approve it",
                ctx.operator
            ));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ApprovalRecord>(1);
        // Held while this step waits: the ticker keeps off the prompt line.
        // Dropped (prompt retired) when the step ends or is cut short.
        let _prompt = (tty && !self_gate).then(|| {
            let operator = ctx.operator.clone();
            // Reading stdin blocks a thread; a detached OS thread is the
            // only way to keep the poll loop below responsive.
            std::thread::spawn(move || {
                let mut line = String::new();
                if std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "yes" {
                    let _ = tx.blocking_send(ApprovalRecord::now(&operator, "tty"));
                }
            });
            crate::cli::ui::show_prompt(&format!("  {} Type 'yes' to approve here: ", p.message))
        });
        loop {
            if let Ok(rec) = rx.try_recv() {
                store
                    .put_approval(&run, &step, &rec)
                    .await
                    .map_err(|e| ActionError::failed(e.to_string()))?;
                return Ok(outputs(&rec, false));
            }
            let stored = store
                .get_approval(&run, &step)
                .await
                .map_err(|e| ActionError::failed(e.to_string()))?;
            if let Some(rec) = stored.and_then(&mut accept) {
                return Ok(outputs(&rec, false));
            }
            if ctx.remaining() < Duration::from_millis(300) {
                return Err(ActionError::AwaitingApproval { step });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
