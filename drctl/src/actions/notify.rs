//! `notify`: tell humans. Slack-compatible incoming webhooks (Slack,
//! Mattermost, Rocket.Chat accept the same `{"text": ...}`) and PagerDuty
//! Events API v2. Targets come from the environment file so runbooks stay
//! portable; their URLs and keys are secrets resolved only here.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::action::{resolve_secret, ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::secret::SecretRef;
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct Notify;

pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

pub struct NotifyParams {
    pub message: String,
    /// Names of environment notify targets; empty means all of them.
    pub targets: Vec<String>,
    pub severity: String,
    /// Fail the step when a target rejects the message (default: no, a
    /// broken chat integration must not fail a recovery).
    pub required: bool,
}

fn secret_field(cfg: &Value, key: &str) -> Result<String, ActionError> {
    let raw = cfg
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ActionError::Config {
            message: format!("notify target has no `{key}`"),
            hint: "see the environment file's notify section".into(),
        })?;
    match SecretRef::parse(raw) {
        Some(r) => Ok(resolve_secret(&r)?.expose().to_string()),
        None => Ok(raw.to_string()),
    }
}

#[async_trait]
impl ActionKind for Notify {
    type Params = NotifyParams;

    fn kind(&self) -> &'static str {
        "notify"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Sends a message; changes no system of the environment.
        true
    }
    fn summary(&self) -> &'static str {
        "Send a message to Slack-compatible webhooks and PagerDuty"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["sent", "failed"]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "notify")?;
        let message = r.req(ctx, "message").and_then(|n| ctx.string(n, "message"));
        let targets = r
            .opt("targets")
            .and_then(|n| ctx.string_list(n, "targets"))
            .map(|v| v.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        let severity = r
            .opt("severity")
            .and_then(|n| ctx.one_of(n, &["critical", "error", "warning", "info"], "severity"))
            .unwrap_or("info")
            .to_string();
        let required = r
            .opt("required")
            .and_then(|n| ctx.boolean(n, "required"))
            .unwrap_or(false);
        r.finish(ctx);
        Some(NotifyParams {
            message: message?,
            targets,
            severity,
            required,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "notify: {}",
            params
                .get("message")
                .map(crate::action::short)
                .unwrap_or_default()
        )
    }
    async fn preflight(
        &self,
        _p: &Self::Params,
        params: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let n = ctx.env.as_ref().map_or(0, |e| e.notify.len());
        Ok(Preflight::ok(format!(
            "{} ({n} target(s) configured)",
            self.describe(params)
        )))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let text = format!("[drctl {} {}] {}", ctx.mode.as_str(), ctx.run_id, p.message);
        let (sent, failed) = send(
            ctx.env.as_deref(),
            &p.targets,
            &text,
            &p.severity,
            &ctx.run_id,
            ctx.remaining().min(Duration::from_secs(10)),
        )
        .await?;
        if p.required && !failed.is_empty() {
            return Err(ActionError::failed(format!(
                "notification failed: {}",
                failed.join("; ")
            )));
        }
        for f in &failed {
            tracing::warn!(target_failure = %f, "notification not delivered");
        }
        let mut out = Outputs::new();
        out.insert("sent".into(), json!(sent));
        out.insert("failed".into(), json!(failed));
        Ok(out)
    }
}

/// Sends `text` to the environment's notify targets named in `targets`
/// (all when empty); returns the names reached and the failures. Used by
/// the `notify` step and by drill notifications. Secrets (webhook URLs,
/// routing keys) are resolved here and never returned.
pub async fn send(
    env: Option<&crate::environment::Environment>,
    targets: &[String],
    text: &str,
    severity: &str,
    dedup: &str,
    timeout: Duration,
) -> Result<(Vec<String>, Vec<String>), ActionError> {
    let targets: Vec<_> = match env {
        Some(env) => env
            .notify
            .iter()
            .filter(|t| targets.is_empty() || targets.contains(&t.name))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| ActionError::failed(format!("http client: {e}")))?;
    let (mut sent, mut failed) = (Vec::new(), Vec::new());
    for t in &targets {
        let res = match t.kind.as_str() {
            "slack" => {
                let url = secret_field(&t.config, "webhook_url")?;
                let mut body = json!({ "text": text });
                if let Some(ch) = t.config.get("channel") {
                    body["channel"] = ch.clone();
                }
                client.post(url).json(&body).send().await
            }
            _ => {
                let key = secret_field(&t.config, "routing_key")?;
                let url = t
                    .config
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or(PAGERDUTY_URL)
                    .to_string();
                let body = json!({
                    "routing_key": key,
                    "event_action": "trigger",
                    "dedup_key": format!("drctl-{dedup}"),
                    "payload": {
                        "summary": text,
                        "source": "drctl",
                        "severity": severity,
                    }
                });
                client.post(url).json(&body).send().await
            }
        };
        match res {
            Ok(r) if r.status().is_success() => sent.push(t.name.clone()),
            Ok(r) => failed.push(format!("{}: HTTP {}", t.name, r.status())),
            Err(e) => failed.push(format!("{}: {}", t.name, crate::diag::error_chain(&e))),
        }
    }
    Ok((sent, failed))
}
