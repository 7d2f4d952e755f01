//! `dns.restore`: put the records back to the values a run's `dns.switch`
//! journaled as `previous`, by compare-and-set against what that switch
//! set (`desired`).
//!
//! Check: read the failover run's journal (verified) for the switch
//! step's outputs, and the records as they are now. A record still at
//! the failover's value is switched back; one already back is left; one
//! someone changed since (neither value) is *drift*: the step refuses and
//! changes nothing, unless the run has `--force` (journaled), which
//! restores it anyway. Act: one atomic replace, after the current values
//! are saved as the step's checkpoint. Verify: every authoritative server
//! answers the restored values.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::config::{self, DnsConfig};
use super::switch::converge;
use super::RecordSet;
use crate::action::{
    decode_resolved, ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict,
};
use crate::decode::{Ctx, MapReader};
use crate::journal::{Event, StepStatus};
use crate::store::Store;
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct DnsRestore;

pub struct Params {
    run: String,
    step: String,
}

/// One record as the failover left it: what it was before, what was set.
#[derive(Debug, Clone, PartialEq)]
pub struct Undo {
    pub key: String,
    pub previous: Option<Vec<String>>,
    pub desired: Vec<String>,
}

/// The switch step's `previous`/`desired` from a run's verified journal.
pub async fn journaled(store: &dyn Store, run: &str, step: &str) -> Result<Vec<Undo>, ActionError> {
    let bytes = store
        .read_journal(run)
        .await
        .map_err(|e| ActionError::failed(format!("run {run}: {e}")))?;
    let v = crate::journal::verify(&bytes)
        .map_err(|e| ActionError::failed(format!("run {run}'s journal: {e}")))?;
    let outputs = v
        .records
        .iter()
        .rev()
        .find_map(|r| match &r.event {
            Event::StepFinished {
                step: s,
                status: StepStatus::Succeeded,
                outputs,
                ..
            } if s == step => Some(outputs.clone()),
            _ => None,
        })
        .ok_or_else(|| ActionError::Config {
            message: format!("run {run} has no succeeded step `{step}`: no DNS values to restore"),
            hint: "name the run's dns.switch step (`step:`)".into(),
        })?;
    let (Some(prev), Some(des)) = (
        outputs.get("previous").and_then(Value::as_object),
        outputs.get("desired").and_then(Value::as_object),
    ) else {
        return Err(ActionError::Config {
            message: format!(
                "step `{step}` of run {run} journaled no `previous`/`desired` DNS values"
            ),
            hint: "only a dns.switch step's values can be restored".into(),
        });
    };
    let mut out = Vec::new();
    for (key, d) in des {
        let values = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        };
        out.push(Undo {
            key: key.clone(),
            previous: prev.get(key).and_then(values),
            desired: values(d).unwrap_or_default(),
        });
    }
    Ok(out)
}

fn cfg_of(ctx: &StepContext) -> Result<DnsConfig, ActionError> {
    let env = ctx.env()?;
    let node = env.doc.get("dns").ok_or_else(|| ActionError::Config {
        message: format!("environment `{}` has no dns section", env.name),
        hint: "add a `dns:` section or remove the DNS steps".into(),
    })?;
    let names = env.region_names();
    decode_resolved("dns", node, |c, n| config::decode(c, n, Some(&names)))
}

/// What restoring would do: the sets to write (with the configured TTL),
/// the current values, and the records that drifted.
pub struct Planned {
    pub want: Vec<RecordSet>,
    pub current: Vec<Option<RecordSet>>,
    pub drift: Vec<String>,
    pub absent_before: Vec<String>,
}

pub async fn plan(
    cfg: &DnsConfig,
    undo: &[Undo],
    timeout: Duration,
) -> Result<Planned, ActionError> {
    let mut want = Vec::new();
    let mut absent_before = Vec::new();
    for u in undo {
        let Some(r) = cfg.records.iter().find(|r| r.key() == u.key) else {
            continue;
        };
        match &u.previous {
            Some(p) => want.push(RecordSet {
                name: r.name.clone(),
                rtype: r.rtype.clone(),
                ttl: r.ttl,
                values: crate::dnsquery::normalize(p),
            }),
            None => absent_before.push(u.key.clone()),
        }
    }
    let current = super::provider::build(cfg, timeout)?.current(&want).await?;
    let mut drift = Vec::new();
    for (w, c) in want.iter().zip(&current) {
        let undo = undo.iter().find(|u| u.key == w.key());
        let now = c.as_ref().map(|c| c.values.clone());
        let set = undo.map(|u| crate::dnsquery::normalize(&u.desired));
        if now.as_ref() != Some(&w.values) && now != set {
            drift.push(format!(
                "{} is {} (the failover set {}, it was {} before)",
                w.key(),
                now.map(|v| v.join(",")).unwrap_or_else(|| "(none)".into()),
                set.map(|v| v.join(",")).unwrap_or_default(),
                w.values.join(",")
            ));
        }
    }
    Ok(Planned {
        want,
        current,
        drift,
        absent_before,
    })
}

#[async_trait]
impl ActionKind for DnsRestore {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "dns.restore"
    }
    fn summary(&self) -> &'static str {
        "Put DNS records back to the values a run's dns.switch journaled as previous (compare-and-set; drift refused unless --force)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["changed", "restored", "drift", "convergence_ms", "summary"]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "dns.restore")?;
        let run = r.req(ctx, "run").and_then(|n| ctx.string(n, "run"));
        let step = r
            .opt("step")
            .and_then(|n| ctx.string(n, "step"))
            .unwrap_or_else(|| "dns".into());
        r.finish(ctx);
        Some(Params { run: run?, step })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "dns records back to their values before run {} (step `{}`), compare-and-set",
            crate::action::param_text(params, "run", "?"),
            crate::action::param_text(params, "step", "dns")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let cfg = cfg_of(ctx)?;
        let undo = journaled(ctx.store.as_ref(), &p.run, &p.step).await?;
        let pl = plan(&cfg, &undo, ctx.remaining()).await?;
        let mut lines: Vec<String> = pl
            .want
            .iter()
            .zip(&pl.current)
            .map(|(w, c)| {
                format!(
                    "dns {} {} -> {}",
                    w.key(),
                    c.as_ref()
                        .map(|c| c.values.join(","))
                        .unwrap_or_else(|| "(none)".into()),
                    w.values.join(",")
                )
            })
            .collect();
        lines.extend(pl.drift.iter().map(|d| format!("drift: {d}")));
        let verdict = if pl.drift.is_empty() || ctx.options.force {
            Verdict::Passes
        } else {
            Verdict::Problem
        };
        Ok(Preflight::new(lines, verdict))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let cfg = cfg_of(ctx)?;
        let undo = journaled(ctx.store.as_ref(), &p.run, &p.step).await?;
        let keys: Vec<String> = undo.iter().map(|u| u.key.clone()).collect();
        super::config::guard_isolated(&cfg, ctx.options.isolated, &keys)?;
        let saved: Option<Vec<Option<RecordSet>>> = ctx.saved()?;
        let pl = plan(&cfg, &undo, ctx.remaining().min(Duration::from_secs(10))).await?;
        // Drift is judged against the values before this step first acted
        // (a resume after the change must not call its own change drift).
        if saved.is_none() && !pl.drift.is_empty() && !ctx.options.force {
            return Err(ActionError::Refused {
                message: format!("DNS drifted since the failover, left alone: {}", pl.drift.join("; ")),
                hint: "check who changed it; `drctl resume RUN --force` restores the failover's previous values anyway".into(),
            });
        }
        if saved.is_none() {
            ctx.checkpoint(&pl.current).await?;
        }
        let changes: Vec<RecordSet> = pl
            .want
            .iter()
            .zip(&pl.current)
            .filter(|(w, c)| c.as_ref().map(|c| (&c.values, c.ttl)) != Some((&w.values, w.ttl)))
            .map(|(w, _)| w.clone())
            .collect();
        let prov = super::provider::build(&cfg, ctx.remaining().min(Duration::from_secs(10)))?;
        let started = std::time::Instant::now();
        if !changes.is_empty() {
            if let Some(id) = prov.replace(&changes, &pl.current).await? {
                prov.wait(&id, ctx.deadline).await?;
            }
        }
        let per = converge(&cfg, &pl.want, ctx.deadline).await?;
        let total = started.elapsed().as_secs_f64() * 1000.0;
        let mut o = Outputs::new();
        o.insert("changed".into(), json!(!changes.is_empty()));
        o.insert(
            "restored".into(),
            json!(pl
                .want
                .iter()
                .map(|w| (w.key(), w.values.clone()))
                .collect::<BTreeMap<_, _>>()),
        );
        o.insert("drift".into(), json!(pl.drift));
        o.insert("convergence_ms".into(), json!(total));
        let mut summary = format!(
            "{} record(s) back to their values before run {}; {} authoritative server(s) agree after {total:.1} ms",
            changes.len(),
            p.run,
            per.len()
        );
        if !pl.drift.is_empty() {
            summary.push_str(&format!(
                "; drift overridden (--force): {}",
                pl.drift.join("; ")
            ));
        }
        if !pl.absent_before.is_empty() {
            summary.push_str(&format!(
                "; absent before the failover, left as they are: {}",
                pl.absent_before.join(", ")
            ));
        }
        o.insert("summary".into(), json!(summary));
        Ok(o)
    }
}
