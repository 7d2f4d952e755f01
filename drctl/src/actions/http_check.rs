//! `http.check`: one HTTP request with assertions on status, body and a JSON
//! pointer. TLS is verified unless `tls_verify: false` is written down,
//! because a smoke check that accepts any certificate checks nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::action::{resolve_secret, ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::secret::SecretRef;
use crate::yaml::{Kind, Node};

#[derive(Clone, Copy)]
pub struct HttpCheck;

pub struct HttpParams {
    pub url: String,
    pub method: String,
    /// Header values; a value written as `env:`/`file:` is a secret.
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub expect_status: Vec<u16>,
    pub body_contains: Option<String>,
    pub json_pointer: Option<String>,
    pub equals: Option<Value>,
    pub attempt_timeout: Duration,
    pub tls_verify: bool,
    /// Pass when the request fails or answers non-2xx: confirms an outage.
    pub expect_failure: bool,
    /// Resolve the URL's host by asking this DNS server (IP:PORT) directly,
    /// so a smoke check follows the DNS switch, not a cached answer.
    pub resolve_via: Option<String>,
}

impl HttpCheck {
    /// Runs the request and assertions; shared with smoke check sets.
    pub async fn run(p: &HttpParams, deadline: Duration) -> Result<Outputs, ActionError> {
        let mut builder = reqwest::Client::builder()
            .timeout(
                p.attempt_timeout
                    .min(deadline.max(Duration::from_millis(1))),
            )
            .danger_accept_invalid_certs(!p.tls_verify);
        if let Some(ns) = &p.resolve_via {
            let url = reqwest::Url::parse(&p.url)
                .map_err(|e| ActionError::failed(format!("url {}: {e}", p.url)))?;
            let host = url.host_str().unwrap_or("").to_string();
            let port = url.port_or_known_default().unwrap_or(80);
            let fqdn = if host.ends_with('.') {
                host.clone()
            } else {
                format!("{host}.")
            };
            let ips = crate::dnsquery::answers(ns, &fqdn, "A", Duration::from_secs(2))
                .await
                .map_err(|e| {
                    ActionError::failed_hint(
                        e.to_string(),
                        "is the authoritative server reachable from here? check dns.nameservers",
                    )
                })?;
            let ip: std::net::IpAddr = ips
                .first()
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| ActionError::failed(format!("{ns} has no A record for {host}")))?;
            builder = builder.resolve(&host, std::net::SocketAddr::new(ip, port));
        }
        let client = builder
            .build()
            .map_err(|e| ActionError::failed(format!("http client: {e}")))?;
        let method = reqwest::Method::from_bytes(p.method.as_bytes())
            .map_err(|_| ActionError::failed(format!("bad method {}", p.method)))?;
        let mut req = client.request(method, &p.url);
        for (k, v) in &p.headers {
            let value = match SecretRef::parse(v) {
                Some(r) => resolve_secret(&r)?.expose().to_string(),
                None => v.clone(),
            };
            req = req.header(k, value);
        }
        if let Some(b) = &p.body {
            req = req.body(b.clone());
        }
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| {
            ActionError::failed_hint(
                format!("{} {}: {}", p.method, p.url, crate::diag::error_chain(&e)),
                "is the service up and the URL right? `drctl plan --check` probes it read-only",
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| ActionError::failed(format!("{}: reading body: {e}", p.url)))?;
        let elapsed = started.elapsed();
        let snippet: String = text.chars().take(512).collect();
        if !p.expect_status.contains(&status) {
            return Err(ActionError::failed(format!(
                "{} {} returned {status}, expected {:?}; body: {snippet}",
                p.method, p.url, p.expect_status
            )));
        }
        if let Some(needle) = &p.body_contains {
            if !text.contains(needle.as_str()) {
                return Err(ActionError::failed(format!(
                    "{}: body does not contain `{needle}`; body: {snippet}",
                    p.url
                )));
            }
        }
        let mut out = Outputs::new();
        if let Some(ptr) = &p.json_pointer {
            let doc: Value = serde_json::from_str(&text).map_err(|e| {
                ActionError::failed(format!("{}: body is not JSON ({e}): {snippet}", p.url))
            })?;
            let got = doc.pointer(ptr).cloned().ok_or_else(|| {
                ActionError::failed(format!("{}: JSON has nothing at `{ptr}`: {snippet}", p.url))
            })?;
            if let Some(want) = &p.equals {
                if !json_equal(&got, want) {
                    return Err(ActionError::failed(format!(
                        "{}: `{ptr}` is {got}, expected {want}",
                        p.url
                    )));
                }
            }
            out.insert("value".into(), got);
        }
        out.insert("status".into(), json!(status));
        out.insert("latency_ms".into(), json!(elapsed.as_secs_f64() * 1000.0));
        out.insert("body".into(), json!(snippet));
        Ok(out)
    }
}

/// Numbers compare by value and a string equals a number with the same text,
/// since YAML authors write `equals: 1` and `equals: "1"` interchangeably.
fn json_equal(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::Number(b)) | (Value::Number(b), Value::String(a)) => {
            a.parse::<f64>().ok() == b.as_f64()
        }
        _ => got == want,
    }
}

fn status(ctx: &mut Ctx<'_>, n: &Node) -> Option<u16> {
    let v = ctx.uint(n, "expect_status")?;
    if !(100..=599).contains(&v) {
        ctx.error(
            "E-VALUE",
            n,
            format!("HTTP status {v} is out of range 100-599"),
            None,
        );
        return None;
    }
    Some(v as u16)
}

#[async_trait]
impl ActionKind for HttpCheck {
    type Params = HttpParams;

    fn kind(&self) -> &'static str {
        "http.check"
    }
    fn read_only(&self, params: &Value) -> bool {
        // GET and HEAD are safe methods (RFC 9110); any other may change
        // something on the server.
        params
            .get("method")
            .and_then(Value::as_str)
            .is_none_or(|m| m.eq_ignore_ascii_case("GET") || m.eq_ignore_ascii_case("HEAD"))
    }
    fn summary(&self) -> &'static str {
        "HTTP request with assertions on status, body and a JSON pointer"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["status", "latency_ms", "body", "value", "summary"]
    }
    /// An `http.check` that expects the request to fail shows an outage (`confirm-outage`), not a recovery; one written with an expression could be either, so only a literal `false` or no `expect_failure` proves recovery.
    fn proves_recovery(&self, params: &Value) -> bool {
        match params.get("expect_failure") {
            None | Some(Value::Bool(false)) => true,
            Some(_) => false,
        }
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "http.check")?;
        let url_node = r.req(ctx, "url");
        let url = url_node.and_then(|n| ctx.string(n, "url"));
        if let (Some(u), Some(n)) = (&url, url_node) {
            if !(crate::expr::has_refs(u) || u.starts_with("http://") || u.starts_with("https://"))
            {
                ctx.error(
                    "E-VALUE",
                    n,
                    format!("url `{u}` must start with http:// or https://"),
                    None,
                );
            }
        }
        let method = r
            .opt("method")
            .and_then(|n| {
                ctx.one_of(
                    n,
                    &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                    "method",
                )
            })
            .unwrap_or("GET")
            .to_string();
        let mut headers = BTreeMap::new();
        if let Some(h) = r.opt("headers") {
            match h.as_map() {
                Some(entries) => {
                    for (k, v) in entries {
                        if let Some(s) = ctx.string(v, &format!("headers.{}", k.key_text())) {
                            headers.insert(k.key_text(), s);
                        }
                    }
                }
                None => ctx.expected(h, "a mapping of header names to values", "headers"),
            }
        }
        let body = r.opt("body").and_then(|n| ctx.string(n, "body"));
        let expect_status = match r.opt("expect_status") {
            None => vec![200],
            Some(n) => match &n.kind {
                Kind::Seq(items) => items.iter().filter_map(|i| status(ctx, i)).collect(),
                _ => status(ctx, n).into_iter().collect(),
            },
        };
        let body_contains = r
            .opt("body_contains")
            .and_then(|n| ctx.string(n, "body_contains"));
        let ptr_node = r.opt("json_pointer");
        let json_pointer = ptr_node.and_then(|n| ctx.string(n, "json_pointer"));
        if let (Some(p), Some(n)) = (&json_pointer, ptr_node) {
            if !p.is_empty() && !p.starts_with('/') {
                ctx.error(
                    "E-VALUE",
                    n,
                    format!("json_pointer `{p}` must start with `/`"),
                    Some(format!("write `/{p}`")),
                );
            }
        }
        let equals = r.opt("equals").map(Node::to_json);
        if equals.is_some() && json_pointer.is_none() {
            ctx.error(
                "E-VALUE",
                with,
                "http.check: `equals` needs `json_pointer`",
                Some("e.g. json_pointer: /status".into()),
            );
        }
        let attempt_timeout = r
            .opt("attempt_timeout")
            .and_then(|n| ctx.duration(n, "attempt_timeout"))
            .unwrap_or(Duration::from_secs(10));
        let tls_verify = r
            .opt("tls_verify")
            .and_then(|n| ctx.boolean(n, "tls_verify"))
            .unwrap_or(true);
        let expect_failure = r
            .opt("expect_failure")
            .and_then(|n| ctx.boolean(n, "expect_failure"))
            .unwrap_or(false);
        let resolve_via = r
            .opt("resolve_via")
            .and_then(|n| ctx.string(n, "resolve_via"));
        r.finish(ctx);
        Some(HttpParams {
            url: url?,
            method,
            headers,
            body,
            expect_status,
            body_contains,
            json_pointer,
            equals,
            attempt_timeout,
            tls_verify,
            expect_failure,
            resolve_via,
        })
    }
    fn describe(&self, params: &Value) -> String {
        if params.get("expect_failure") == Some(&Value::Bool(true)) {
            return format!(
                "confirm {} is down",
                params
                    .get("url")
                    .map(crate::action::short)
                    .unwrap_or_default()
            );
        }
        format!(
            "{} {} expect {}",
            params
                .get("method")
                .map(crate::action::short)
                .unwrap_or_else(|| "GET".into()),
            params
                .get("url")
                .map(crate::action::short)
                .unwrap_or_default(),
            params
                .get("expect_status")
                .map(crate::action::short)
                .unwrap_or_else(|| "200".into())
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        if p.method != "GET" && p.method != "HEAD" {
            return Ok(Preflight::ok(format!(
                "{} {} (not probed: not read-only)",
                p.method, p.url
            )));
        }
        // The same request and verdict as `execute`; whether failing now
        // is expected (a smoke check before the switch) or a problem (an
        // outage check against a healthy service) is the plan's decision.
        let first = |e: &ActionError| e.to_string().lines().next().unwrap_or("").to_string();
        Ok(
            match (p.expect_failure, Self::run(p, ctx.remaining()).await) {
                (false, Ok(o)) => Preflight::ok(format!(
                    "{} {} -> {} (passes now)",
                    p.method, p.url, o["status"]
                )),
                (false, Err(e)) => Preflight::fails_now(format!(
                    "{} {} -> fails now: {}",
                    p.method,
                    p.url,
                    first(&e)
                )),
                (true, Ok(o)) => Preflight::fails_now(format!(
                "{} {} answers {}: the service is up, so there is no outage to confirm (fails now)",
                p.method, p.url, o["status"]
            )),
                (true, Err(e)) => {
                    Preflight::ok(format!("outage confirmed: {} (passes now)", first(&e)))
                }
            },
        )
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        if !p.expect_failure {
            return Self::run(p, ctx.remaining()).await;
        }
        match Self::run(p, ctx.remaining()).await {
            Ok(o) => Err(ActionError::failed_hint(
                format!("{} {} answers {}: the service is up, so there is no outage to confirm", p.method, p.url, o["status"]),
                "check that you are failing over the right region; a healthy primary must not be failed over",
            )),
            Err(e) => {
                let first = e.to_string().lines().next().unwrap_or("").to_string();
                let mut o = Outputs::new();
                o.insert("status".into(), Value::Null);
                o.insert("body".into(), json!(first));
                o.insert("summary".into(), json!(format!("outage confirmed: {first}")));
                Ok(o)
            }
        }
    }
}
