//! `dns.switch`: point the environment's records at the target region.
//!
//! Check: read the current rrsets (journaled as `previous`, for failback
//! and the report). Act: one atomic replace of those that differ (none when
//! already there: idempotent, also after a kill -9 mid-switch). Verify: ask
//! every authoritative server directly until each answers the new values,
//! and report the convergence time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::config::{self, DnsConfig};
use super::RecordSet;
use crate::action::{
    decode_resolved, ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict,
};
use crate::decode::{Ctx, MapReader};
use crate::dnsquery::answers;
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct DnsSwitch;

pub struct Params {
    pub region: Option<String>,
}

pub fn decode_params(ctx: &mut Ctx<'_>, with: &Node, kind: &str) -> Option<Params> {
    let mut r = MapReader::new(ctx, with, kind.to_string())?;
    let region = r.opt("region").and_then(|n| ctx.string(n, "region"));
    r.finish(ctx);
    Some(Params { region })
}

/// The environment's DNS config and the region to point at.
pub fn setup(p: &Params, ctx: &StepContext) -> Result<(DnsConfig, String), ActionError> {
    let env = ctx.env()?;
    let node = env.doc.get("dns").ok_or_else(|| ActionError::Config {
        message: format!("environment `{}` has no dns section", env.name),
        hint: "add a `dns:` section (provider, zone, nameservers, records) or remove the DNS steps"
            .into(),
    })?;
    let names = env.region_names();
    let cfg = decode_resolved("dns", node, |c, n| config::decode(c, n, Some(&names)))?;
    let region = p
        .region
        .clone()
        .or_else(|| ctx.target_region.clone())
        .ok_or_else(|| ActionError::Config {
            message: "no target region".into(),
            hint: "set `region:` or run with --region".into(),
        })?;
    if cfg.desired(&region).is_empty() {
        return Err(ActionError::Config {
            message: format!("no dns record has values for region `{region}`"),
            hint: "add them under dns.records[].values".into(),
        });
    }
    Ok((cfg, region))
}

/// Polls every nameserver until it answers `sets`; per-server times in ms.
pub async fn converge(
    cfg: &DnsConfig,
    sets: &[RecordSet],
    deadline: Instant,
) -> Result<BTreeMap<String, f64>, ActionError> {
    let start = Instant::now();
    let mut done: BTreeMap<String, f64> = BTreeMap::new();
    let mut last = String::new();
    loop {
        for ns in &cfg.nameservers {
            if done.contains_key(ns) {
                continue;
            }
            let mut all = true;
            for s in sets {
                match answers(ns, &s.name, &s.rtype, cfg.timeout).await {
                    Ok(v) if v == s.values => {}
                    Ok(v) => {
                        all = false;
                        last = format!(
                            "{ns} answers {} {} = {:?}, want {:?}",
                            s.name, s.rtype, v, s.values
                        );
                    }
                    Err(e) => {
                        all = false;
                        last = e.to_string();
                    }
                }
            }
            if all {
                done.insert(ns.clone(), start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if done.len() == cfg.nameservers.len() {
            return Ok(done);
        }
        if Instant::now() + Duration::from_millis(20) >= deadline {
            return Err(ActionError::failed_hint(
                format!("not every authoritative server answers the new values: {last}"),
                "the change is applied at the provider; resume re-verifies without changing anything",
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn show(v: &Option<RecordSet>) -> String {
    v.as_ref()
        .map(|s| s.values.join(","))
        .unwrap_or_else(|| "(none)".into())
}

#[async_trait]
impl ActionKind for DnsSwitch {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "dns.switch"
    }
    fn summary(&self) -> &'static str {
        "Point DNS records at the target region; verify at the authoritative servers"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "changed",
            "previous",
            "desired",
            "convergence_ms",
            "per_server_ms",
            "api_ms",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        decode_params(ctx, with, "dns.switch")
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Not read-only: it changes the public records.
        false
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "dns records -> region {}",
            crate::action::param_text(params, "region", "(target)")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let (cfg, region) = setup(p, ctx)?;
        let want = cfg.desired(&region);
        let cur = super::provider::build(&cfg, ctx.remaining())?
            .current(&want)
            .await?;
        let lines = want
            .iter()
            .zip(&cur)
            .map(|(w, c)| {
                if c.as_ref().map(|c| &c.values) == Some(&w.values) {
                    format!(
                        "dns {} {} {} (already there)",
                        w.name,
                        w.rtype,
                        w.values.join(",")
                    )
                } else {
                    format!(
                        "dns {} {} {} -> {}",
                        w.name,
                        w.rtype,
                        show(c),
                        w.values.join(",")
                    )
                }
            })
            .collect();
        Ok(Preflight::new(lines, Verdict::Passes))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let (cfg, region) = setup(p, ctx)?;
        let want = cfg.desired(&region);
        let keys: Vec<String> = want.iter().map(RecordSet::key).collect();
        config::guard_isolated(&cfg, ctx.options.isolated, &keys)?;
        let pdns = super::provider::build(&cfg, ctx.remaining().min(Duration::from_secs(10)))?;
        let cur = pdns.current(&want).await?;
        // What was there before this step first acted: saved durably before
        // the change, so a step resumed after a kill mid-switch still
        // journals the real previous values (for failback and the report).
        let saved: Option<Vec<Option<RecordSet>>> = ctx.saved()?;
        let before = match saved {
            Some(b) => b,
            None => {
                ctx.checkpoint(&cur).await?;
                cur.clone()
            }
        };
        let changes: Vec<RecordSet> = want
            .iter()
            .zip(&cur)
            .filter(|(w, c)| c.as_ref().map(|c| (&c.values, c.ttl)) != Some((&w.values, w.ttl)))
            .map(|(w, _)| w.clone())
            .collect();
        let started = Instant::now();
        let mut api_ms = 0.0;
        if !changes.is_empty() {
            let change = pdns.replace(&changes, &cur).await?;
            crate::journal::test_crash_at("dns-switch");
            api_ms = started.elapsed().as_secs_f64() * 1000.0;
            if let Some(id) = change {
                pdns.wait(&id, ctx.deadline).await?;
            }
        }
        let per = converge(&cfg, &want, ctx.deadline).await?;
        if cfg.nameservers.is_empty() {
            // No servers to ask directly (a cloud provider without listed
            // nameservers): the provider's own read-back is the check.
            let back = pdns.current(&want).await?;
            for (w, b) in want.iter().zip(&back) {
                if b.as_ref().map(|b| &b.values) != Some(&w.values) {
                    return Err(ActionError::failed(format!(
                        "{} {} reads back as {:?} after the change",
                        w.name,
                        w.rtype,
                        b.as_ref().map(|b| &b.values)
                    )));
                }
            }
        }
        let total = started.elapsed().as_secs_f64() * 1000.0;
        let previous: serde_json::Map<String, Value> = want
            .iter()
            .zip(&before)
            .map(|(w, c)| (w.key(), json!(c.as_ref().map(|c| c.values.clone()))))
            .collect();
        let mut o = Outputs::new();
        o.insert("changed".into(), json!(!changes.is_empty()));
        o.insert("previous".into(), Value::Object(previous));
        o.insert(
            "desired".into(),
            json!(want
                .iter()
                .map(|w| (w.key(), w.values.clone()))
                .collect::<BTreeMap<_, _>>()),
        );
        o.insert("convergence_ms".into(), json!(total));
        o.insert("api_ms".into(), json!(api_ms));
        o.insert("per_server_ms".into(), json!(per));
        let what = if changes.is_empty() {
            "already pointed at".to_string()
        } else {
            format!("{} record(s) switched to", changes.len())
        };
        o.insert(
            "summary".into(),
            json!(format!(
                "{what} {region}; {} authoritative server(s) agree after {total:.1} ms",
                per.len()
            )),
        );
        Ok(o)
    }
}
