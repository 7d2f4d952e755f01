//! `approval`: a human gate before a dangerous step.
//!
//! Approval comes from `drctl approve RUN_ID STEP` in another terminal (it
//! writes to the state store, which this step polls) or, when drctl runs on
//! a TTY, from a confirmation typed here. If nobody approves within the
//! step's timeout, the run ends `waiting-approval`; approving later and
//! `drctl resume` continues it. In drills the gate is skipped unless
//! `skip_in_drill: false`, because drills measure the machine, not the pager.

use std::io::{BufRead, IsTerminal, Write};
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
        r.finish(ctx);
        Some(ApprovalParams {
            message,
            skip_in_drill,
        })
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
        if let Some(rec) = store
            .get_approval(&run, &step)
            .await
            .map_err(|e| ActionError::failed(e.to_string()))?
        {
            return Ok(outputs(&rec, false));
        }
        eprintln!(
            "\n  approval needed for step `{step}`: {}\n  approve from another terminal: drctl approve {run} {step}",
            p.message
        );
        let tty = ctx.options.interactive && std::io::stdin().is_terminal();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ApprovalRecord>(1);
        if tty {
            let operator = ctx.operator.clone();
            let message = p.message.clone();
            // Reading stdin blocks a thread; a detached OS thread is the
            // only way to keep the poll loop below responsive.
            std::thread::spawn(move || {
                eprint!("  {message} Type 'yes' to approve here: ");
                let _ = std::io::stderr().flush();
                let mut line = String::new();
                if std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "yes" {
                    let _ = tx.blocking_send(ApprovalRecord::now(&operator, "tty"));
                }
            });
        }
        loop {
            if let Ok(rec) = rx.try_recv() {
                store
                    .put_approval(&run, &step, &rec)
                    .await
                    .map_err(|e| ActionError::failed(e.to_string()))?;
                return Ok(outputs(&rec, false));
            }
            if let Some(rec) = store
                .get_approval(&run, &step)
                .await
                .map_err(|e| ActionError::failed(e.to_string()))?
            {
                return Ok(outputs(&rec, false));
            }
            if ctx.remaining() < Duration::from_millis(300) {
                return Err(ActionError::AwaitingApproval { step });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
