//! `wait`: sleep for a duration, or poll a condition until it holds.
//!
//! `until` is re-evaluated every `interval` against the run's scope; the
//! step's `timeout` bounds the wait (a condition that never holds fails the
//! step instead of hanging the incident).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::action::{ActionError, ActionKind, Outputs, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::duration::format_duration;
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct Wait;

pub struct WaitParams {
    pub duration: Option<Duration>,
    pub until: Option<String>,
    pub interval: Duration,
}

#[async_trait]
impl ActionKind for Wait {
    type Params = WaitParams;

    fn kind(&self) -> &'static str {
        "wait"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Sleeps.
        true
    }
    fn summary(&self) -> &'static str {
        "Sleep for a duration, or until a condition holds"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["waited_ms"]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "wait")?;
        let duration = r.opt("duration").and_then(|n| ctx.duration(n, "duration"));
        let until_node = r.opt("until");
        let until = until_node.and_then(|n| ctx.string(n, "until"));
        let interval = r
            .opt("interval")
            .and_then(|n| ctx.duration(n, "interval"))
            .unwrap_or(Duration::from_millis(500));
        if let (Some(c), Some(n)) = (&until, until_node) {
            if let Err(e) = crate::expr::split_condition(c) {
                ctx.error(
                    "E-EXPR",
                    n,
                    e.to_string(),
                    Some("example: `${steps.status.outputs.lag_bytes} < 1024`".into()),
                );
            }
        }
        let dn = r.node();
        let has_duration = dn.get("duration").is_some();
        if !has_duration && until_node.is_none() {
            ctx.error(
                "E-MISSING-FIELD",
                dn,
                "wait: needs `duration` or `until`",
                Some("e.g. `with: {duration: 5s}`".into()),
            );
        } else if has_duration && until_node.is_some() {
            ctx.error(
                "E-VALUE",
                dn,
                "wait: give either `duration` or `until`, not both",
                None,
            );
        }
        r.finish(ctx);
        Some(WaitParams {
            duration,
            until,
            interval,
        })
    }
    fn describe(&self, params: &Value) -> String {
        match (params.get("duration"), params.get("until")) {
            (Some(d), _) => format!("wait {}", crate::action::short(d)),
            (_, Some(u)) => format!("wait until {}", crate::action::short(u)),
            _ => "wait".into(),
        }
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let start = std::time::Instant::now();
        if let Some(d) = p.duration {
            // tokio's timer has 1 ms granularity: even a zero sleep waits
            // for the next tick, so a zero wait must not sleep at all.
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
        } else if let Some(cond) = &p.until {
            // The condition was resolved with the run's scope before we got
            // here; what remains is a plain comparison of literals.
            let scope = crate::expr::Scope::default();
            loop {
                match scope.eval_condition(cond) {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => return Err(ActionError::failed(e.to_string())),
                }
                if ctx.remaining() <= p.interval {
                    return Err(ActionError::failed(format!(
                        "condition `{cond}` still false after {}",
                        format_duration(start.elapsed())
                    )));
                }
                tokio::time::sleep(p.interval).await;
            }
        }
        let mut out = Outputs::new();
        out.insert(
            "waited_ms".into(),
            json!(start.elapsed().as_millis() as u64),
        );
        Ok(out)
    }
}
