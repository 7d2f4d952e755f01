//! `kube.fence`: scale the old primary region's workloads to zero while its
//! API still answers, so two regions never serve writes at once.
//!
//! Best effort and bounded: a dead region's API usually does not answer, and
//! failover must not wait on it. Unreachable within `within` is journaled as
//! "not fenced" and the step succeeds (unless `required: true`); a reachable
//! API that refuses (403, 404) fails the step, because a live primary that
//! cannot be fenced is exactly the split brain this step exists to prevent.
//! The counts read just before fencing are saved as the region's capacity
//! snapshot: the freshest answer to "what did production run?".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::api::{self, Goal};
use super::config::Cluster;
use super::snapshot::{self, decode_target, Entry, Target};
use super::workload::{self, Workload, WorkloadRef};
use super::KubeError;
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct KubeFence;

pub struct Params {
    pub target: Target,
    pub within: Duration,
    pub required: bool,
    pub wait: bool,
    pub concurrency: usize,
}

fn region_of(p: &Params, ctx: &StepContext) -> Result<String, ActionError> {
    Ok(match &p.target.region {
        Some(r) => r.clone(),
        None => ctx.env()?.active_region.clone(),
    })
}

/// Connects and resolves within the fence's bound; `Ok(None)` when the API
/// does not answer.
async fn reach(
    p: &Params,
    region: &str,
    deadline: Instant,
    ctx: &StepContext,
) -> Result<Result<(Cluster, Vec<Workload>), KubeError>, ActionError> {
    let cfg = snapshot::for_region(ctx, region)?;
    let sels = match &p.target.workloads {
        Some(s) => s.clone(),
        None => cfg.workloads.clone(),
    };
    if sels.is_empty() {
        return Err(ActionError::Config {
            message: format!("no workloads selected for region `{region}`"),
            hint: format!(
                "give the step `workloads:` or add `workloads:` to regions.{region}.kube"
            ),
        });
    }
    let cluster = Cluster::connect(&cfg, region, deadline).await?;
    Ok(workload::resolve(&cluster, &sels)
        .await
        .map(|ws| (cluster, ws)))
}

fn unreachable(p: &Params, region: &str, e: KubeError) -> Result<Outputs, ActionError> {
    if p.required {
        return Err(ActionError::failed_hint(
            format!("cannot fence region {region}: {e}"),
            "the step is `required: true`; fence by other means, or set required: false to fail over without it",
        ));
    }
    let mut o = Outputs::new();
    o.insert("reachable".into(), json!(false));
    o.insert("fenced".into(), json!([]));
    o.insert("unfenced".into(), json!([]));
    o.insert("previous".into(), json!({}));
    o.insert("pods_stopped".into(), json!(false));
    o.insert("reason".into(), json!(e.to_string()));
    o.insert(
        "summary".into(),
        json!(format!(
            "region {region} not fenced: its API did not answer ({e}); best effort, the region is presumed down"
        )),
    );
    Ok(o)
}

/// Saves the pre-fence counts as the region's capacity, keeping an older
/// snapshot's value where this read found 0 (already fenced before).
async fn record_capacity(
    ctx: &StepContext,
    region: &str,
    previous: &BTreeMap<String, Entry>,
) -> Result<(), ActionError> {
    let env = ctx.env()?.name.clone();
    if !previous.values().any(|e| e.replicas > 0) {
        return Ok(());
    }
    snapshot::update(ctx.store.as_ref(), &env, region, |cur| {
        let mut merged = cur.map(|c| c.workloads.clone()).unwrap_or_default();
        for (k, e) in previous {
            if e.replicas > 0 {
                merged.insert(k.clone(), e.clone());
            }
        }
        snapshot::new_capacity(ctx, region, "kube.fence", merged).ok()
    })
    .await
}

#[async_trait]
impl ActionKind for KubeFence {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "kube.fence"
    }
    fn summary(&self) -> &'static str {
        "Scale the old primary region's workloads to zero if its API answers (best effort, bounded)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "reachable",
            "fenced",
            "unfenced",
            "previous",
            "pods_stopped",
            "reason",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "kube.fence")?;
        let target = decode_target(ctx, &mut r, "kube.fence");
        let within = r
            .opt("within")
            .and_then(|n| ctx.duration(n, "kube.fence: within"))
            .unwrap_or(Duration::from_secs(30));
        let required = r
            .opt("required")
            .and_then(|n| ctx.boolean(n, "kube.fence: required"))
            .unwrap_or(false);
        let (wait, concurrency) = snapshot::decode_pacing(ctx, &mut r, "kube.fence");
        r.finish(ctx);
        Some(Params {
            target,
            within,
            required,
            wait,
            concurrency,
        })
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Not read-only: it scales the old primary's workloads to zero.
        false
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "scale workloads in region {} to 0 (if reachable)",
            crate::action::param_text(params, "region", "(active)")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let region = region_of(p, ctx)?;
        let deadline = ctx.deadline.min(Instant::now() + p.within);
        match reach(p, &region, deadline, ctx).await? {
            Ok((_, ws)) => Ok(Preflight::new(
                ws.iter()
                    .map(|w| {
                        if w.spec_replicas == 0 {
                            format!("kube {region} {} 0 (already fenced)", w.r)
                        } else {
                            format!("kube {region} {} {} -> 0", w.r, w.spec_replicas)
                        }
                    })
                    .collect(),
                Verdict::Passes,
            )),
            Err(e) if e.is_unreachable() => Ok(Preflight::new(
                vec![format!(
                    "kube {region}: API unreachable ({e}); the fence would be skipped"
                )],
                // A required fence of an unreachable API fails whatever
                // earlier steps do.
                if p.required {
                    Verdict::Problem
                } else {
                    Verdict::Passes
                },
            )),
            Err(e) => Err(e.into()),
        }
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let region = region_of(p, ctx)?;
        let deadline = ctx.deadline.min(Instant::now() + p.within);
        let (cluster, ws) = match reach(p, &region, deadline, ctx).await? {
            Ok(x) => x,
            Err(e) if e.is_unreachable() => return unreachable(p, &region, e),
            Err(e) => return Err(e.into()),
        };
        let hpas = match api::hpas_for(&cluster, &ws).await {
            Ok(h) => h,
            Err(e) if e.is_unreachable() => return unreachable(p, &region, e),
            Err(e) => return Err(e.into()),
        };
        let saved = match api::load_checkpoint(ctx)? {
            Some(v) => v,
            None => {
                let previous = snapshot::entries_from(&ws, &hpas);
                api::save_checkpoint(ctx, &json!({ "previous": previous })).await?;
                record_capacity(ctx, &region, &previous).await?;
                json!({ "previous": previous })
            }
        };
        let previous: BTreeMap<String, Entry> =
            serde_json::from_value(saved["previous"].clone()).unwrap_or_default();
        // Scaling to zero also pauses an HPA ("scaling is disabled since
        // the replica count of the target is zero"), so no HPA write here.
        let refs: Vec<WorkloadRef> = ws.iter().map(|w| w.r.clone()).collect();
        let results = api::concurrently(refs.clone(), p.concurrency, |r| {
            let c = cluster.clone();
            async move { api::scale(&c, &r, Goal::Exactly(0)).await }
        })
        .await;
        let mut fenced = Vec::new();
        let mut unfenced = Vec::new();
        for (r, res) in refs.iter().zip(results) {
            match res {
                Ok(_) => fenced.push(r.key()),
                Err(e) if e.is_unreachable() => unfenced.push(format!("{r}: {e}")),
                Err(e) => {
                    let hint = e.hint();
                    return Err(ActionError::failed_hint(
                        format!("cannot fence {r} in region {region}: {e}"),
                        hint,
                    ));
                }
            }
        }
        if !unfenced.is_empty() && p.required {
            return Err(ActionError::failed(format!(
                "region {region} only partly fenced; not fenced: {}",
                unfenced.join("; ")
            )));
        }
        let mut pods_stopped = false;
        if p.wait && unfenced.is_empty() {
            let want: Vec<(WorkloadRef, i32)> = refs.iter().map(|r| (r.clone(), 0)).collect();
            let fenced_cluster = cluster.until(deadline);
            match api::wait_for(
                &fenced_cluster,
                &want,
                |w, _| w.stopped(),
                p.concurrency,
                deadline,
                ctx,
            )
            .await
            {
                Ok(_) => pods_stopped = true,
                Err((left, _)) if p.required => {
                    return Err(ActionError::failed(format!(
                        "region {region}: pods still running after {}: {}",
                        crate::duration::format_duration(p.within),
                        left.join("; ")
                    )))
                }
                Err(_) => {}
            }
        }
        let mut o = Outputs::new();
        o.insert("reachable".into(), json!(true));
        o.insert("fenced".into(), json!(fenced));
        o.insert("unfenced".into(), json!(unfenced));
        o.insert("previous".into(), json!(previous));
        o.insert("pods_stopped".into(), json!(pods_stopped));
        o.insert("reason".into(), Value::Null);
        let summary = if unfenced.is_empty() {
            format!(
                "region {region}: {} workload(s) scaled to 0{}",
                fenced.len(),
                if pods_stopped {
                    ", pods gone"
                } else if p.wait {
                    "; pods still terminating at the bound"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "region {region}: {} workload(s) scaled to 0; {} not reached (API stopped answering)",
                fenced.len(),
                unfenced.len()
            )
        };
        o.insert("summary".into(), json!(summary));
        Ok(o)
    }
}
