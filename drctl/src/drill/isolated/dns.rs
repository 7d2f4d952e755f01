//! `dns.drill_point`: point a drill-only record (declared `drill: true` in
//! the environment's `dns.records`) at the drill endpoint, and verify it
//! at every authoritative server. Any other name is refused before a
//! change, in every mode: production records are changed by `dns.switch`.
//!
//! The values before the first change are journaled as the step's
//! checkpoint; [`set_back`] (teardown, `drctl drills cleanup`) restores
//! them, or deletes the record when there was none.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::action::{decode_resolved, ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::dns::config::{self, DnsConfig};
use crate::dns::RecordSet;
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct DnsDrillPoint;

pub struct Params {
    name: String,
    values: Vec<String>,
}

/// The step's checkpoint: what it sets and what was there before.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub wanted: RecordSet,
    pub previous: Option<RecordSet>,
}

/// The environment's DNS configuration.
pub fn env_config(env: &crate::environment::Environment) -> Result<DnsConfig, ActionError> {
    let node = env.doc.get("dns").ok_or_else(|| ActionError::Config {
        message: format!("environment `{}` has no dns section", env.name),
        hint: "add a `dns:` section with a drill record (`drill: true`)".into(),
    })?;
    let names = env.region_names();
    decode_resolved("dns", node, |c, n| config::decode(c, n, Some(&names)))
}

/// The drill record named `name`, or a refusal naming the drill records.
fn drill_record(cfg: &DnsConfig, name: &str) -> Result<RecordSet, ActionError> {
    let fq = config::fqdn(name);
    match cfg.records.iter().find(|r| r.name == fq) {
        Some(r) if r.drill => Ok(RecordSet {
            name: r.name.clone(),
            rtype: r.rtype.clone(),
            ttl: r.ttl,
            values: Vec::new(),
        }),
        found => {
            let drill: Vec<&str> = cfg
                .records
                .iter()
                .filter(|r| r.drill)
                .map(|r| r.name.as_str())
                .collect();
            Err(ActionError::Refused {
                message: match found {
                    Some(_) => format!("{fq} is a production record (not declared `drill: true`): a drill never changes it"),
                    None => format!("{fq} is not a record of the environment's dns section"),
                },
                hint: if drill.is_empty() {
                    "declare a drill-only name in dns.records with `drill: true`".into()
                } else {
                    format!("drill records: {}", drill.join(", "))
                },
            })
        }
    }
}

/// Sets a drill record back to `previous` (absent: deleted), verified at
/// every authoritative server. Only drill records are ever passed here.
pub async fn set_back(
    cfg: &DnsConfig,
    wanted: &RecordSet,
    previous: Option<&RecordSet>,
    limit: Duration,
) -> Result<(), ActionError> {
    drill_record(cfg, &wanted.name)?;
    let target = match previous {
        Some(p) => p.clone(),
        None => RecordSet {
            values: Vec::new(),
            ..wanted.clone()
        },
    };
    let provider = crate::dns::provider::build(cfg, limit)?;
    let cur = provider.current(std::slice::from_ref(wanted)).await?;
    let now = cur.first().cloned().flatten();
    if now.as_ref().map(|c| &c.values) != Some(&target.values)
        && !(now.is_none() && target.values.is_empty())
    {
        let change = provider
            .replace(std::slice::from_ref(&target), &cur)
            .await?;
        if let Some(id) = change {
            provider.wait(&id, Instant::now() + limit).await?;
        }
    }
    crate::dns::switch::converge(cfg, std::slice::from_ref(&target), Instant::now() + limit)
        .await?;
    Ok(())
}

#[async_trait]
impl ActionKind for DnsDrillPoint {
    type Params = Params;

    fn kind(&self) -> &'static str {
        super::DNS_KIND
    }
    fn summary(&self) -> &'static str {
        "Point a drill-only DNS record (drill: true) at the drill endpoint; verify at the authoritative servers"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["name", "previous", "desired", "convergence_ms", "summary"]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "dns.drill_point")?;
        let name = r.req(ctx, "name").and_then(|n| ctx.string(n, "name"));
        let values = r
            .req(ctx, "values")
            .and_then(|n| ctx.string_list(n, "values"))
            .map(|v| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>());
        r.finish(ctx);
        Some(Params {
            name: name?,
            values: values?,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "point the drill record {} at {}",
            params["name"].as_str().unwrap_or("?"),
            params["values"]
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let cfg = env_config(ctx.env()?)?;
        Ok(match drill_record(&cfg, &p.name) {
            Ok(r) => Preflight::ok(format!(
                "drill record {} -> {}",
                r.key(),
                p.values.join(",")
            )),
            Err(e) => Preflight::problem(e.to_string()),
        })
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let cfg = env_config(ctx.env()?)?;
        let mut want = drill_record(&cfg, &p.name)?;
        config::guard_isolated(&cfg, ctx.options.isolated, &[want.key()])?;
        want.values = crate::dnsquery::normalize(&p.values);
        let limit = ctx.remaining().min(Duration::from_secs(10));
        let provider = crate::dns::provider::build(&cfg, limit)?;
        let cur = provider.current(std::slice::from_ref(&want)).await?;
        let saved: Option<Saved> = ctx.saved()?;
        let previous = match saved {
            Some(s) => s.previous,
            None => {
                let prev = cur.first().cloned().flatten();
                ctx.checkpoint(&Saved {
                    wanted: want.clone(),
                    previous: prev.clone(),
                })
                .await?;
                prev
            }
        };
        let started = Instant::now();
        if cur.first().cloned().flatten().map(|c| c.values) != Some(want.values.clone()) {
            let change = provider.replace(std::slice::from_ref(&want), &cur).await?;
            crate::journal::test_crash_at("drill-dns-pointed");
            if let Some(id) = change {
                provider.wait(&id, ctx.deadline).await?;
            }
        }
        crate::dns::switch::converge(&cfg, std::slice::from_ref(&want), ctx.deadline).await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut o = Outputs::new();
        o.insert("name".into(), json!(want.name));
        o.insert(
            "previous".into(),
            json!(previous.as_ref().map(|p| p.values.clone())),
        );
        o.insert("desired".into(), json!(want.values));
        o.insert("convergence_ms".into(), json!(ms));
        o.insert(
            "summary".into(),
            json!(format!(
                "{} -> {} at every authoritative server",
                want.key(),
                want.values.join(",")
            )),
        );
        Ok(o)
    }
}
