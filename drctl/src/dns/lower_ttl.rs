//! `dns.lower_ttl`: before a planned switchover, lower the TTL of the
//! environment's records (values unchanged) so resolvers pick up the
//! switch quickly. Previous TTLs are journaled for restoring afterwards.
//! Idempotent: records already at or below the TTL are left alone.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::config;
use super::RecordSet;
use crate::action::{
    decode_resolved, ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict,
};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct DnsLowerTtl;

fn cfg(ctx: &StepContext) -> Result<config::DnsConfig, ActionError> {
    let env = ctx.env()?;
    let node = env.doc.get("dns").ok_or_else(|| ActionError::Config {
        message: format!("environment `{}` has no dns section", env.name),
        hint: "add a `dns:` section".into(),
    })?;
    let names = env.region_names();
    decode_resolved("dns", node, |c, n| config::decode(c, n, Some(&names)))
}

/// The record sets as they are now, one per configured record.
async fn current(
    cfg: &config::DnsConfig,
    limit: Duration,
) -> Result<Vec<Option<RecordSet>>, ActionError> {
    let want: Vec<RecordSet> = cfg
        .records
        .iter()
        .map(|r| RecordSet {
            name: r.name.clone(),
            rtype: r.rtype.clone(),
            ttl: r.ttl,
            values: Vec::new(),
        })
        .collect();
    Ok(super::provider::build(cfg, limit)?.current(&want).await?)
}

#[async_trait]
impl ActionKind for DnsLowerTtl {
    type Params = u32;

    fn kind(&self) -> &'static str {
        "dns.lower_ttl"
    }
    fn summary(&self) -> &'static str {
        "Lower the TTL of the environment's records before a planned switchover"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["changed", "previous_ttls", "summary"]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "dns.lower_ttl")?;
        let ttl = r.req(ctx, "ttl").and_then(|n| ctx.uint(n, "ttl"));
        if let (Some(t), Some(n)) = (ttl, with.get("ttl")) {
            if t == 0 || t > 86400 {
                ctx.error(
                    "E-VALUE",
                    n,
                    format!("ttl {t} is out of range 1-86400 seconds"),
                    None,
                );
            }
        }
        r.finish(ctx);
        ttl.map(|t| t as u32)
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Not read-only: it changes the records' TTLs.
        false
    }
    fn describe(&self, params: &Value) -> String {
        format!("lower dns TTLs to {}s", params["ttl"])
    }
    async fn preflight(
        &self,
        ttl: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let ttl = *ttl;
        let c = cfg(ctx)?;
        let lines = current(&c, ctx.remaining())
            .await?
            .into_iter()
            .flatten()
            .map(|r| {
                if r.ttl > ttl {
                    format!("dns {} {} ttl {} -> {ttl}", r.name, r.rtype, r.ttl)
                } else {
                    format!("dns {} {} ttl {} (already low)", r.name, r.rtype, r.ttl)
                }
            })
            .collect();
        Ok(Preflight::new(lines, Verdict::Passes))
    }
    async fn execute(&self, ttl: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let ttl = *ttl;
        let c = cfg(ctx)?;
        let keys: Vec<String> = c.records.iter().map(|r| r.key()).collect();
        config::guard_isolated(&c, ctx.options.isolated, &keys)?;
        let now = current(&c, ctx.remaining()).await?;
        let previous: serde_json::Map<String, Value> = now
            .iter()
            .flatten()
            .map(|r| (r.key(), json!(r.ttl)))
            .collect();
        let changes: Vec<RecordSet> = now
            .iter()
            .flatten()
            .filter(|r| r.ttl > ttl)
            .map(|r| RecordSet { ttl, ..r.clone() })
            .collect();
        if !changes.is_empty() {
            let p = super::provider::build(&c, ctx.remaining())?;
            if let Some(id) = p.replace(&changes, &now).await? {
                p.wait(&id, ctx.deadline).await?;
            }
            // Verify through the provider: TTLs are not visible in our
            // value comparison at the authoritative servers.
            for (w, b) in changes.iter().zip(p.current(&changes).await?) {
                if b.as_ref().map(|b| (b.ttl, &b.values)) != Some((ttl, &w.values)) {
                    return Err(ActionError::failed(format!(
                        "{} {} did not take ttl {ttl}",
                        w.name, w.rtype
                    )));
                }
            }
        }
        let mut o = Outputs::new();
        o.insert("changed".into(), json!(!changes.is_empty()));
        o.insert("previous_ttls".into(), Value::Object(previous));
        o.insert(
            "summary".into(),
            json!(format!("{} record(s) lowered to {ttl}s", changes.len())),
        );
        Ok(o)
    }
}
