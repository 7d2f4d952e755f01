//! `kube.scale`: bring a region's workloads to a replica count and wait
//! until they serve.
//!
//! The target is a number, `primary` (what the primary region runs, read
//! live or from the last snapshot), or a percentage of that (`"50%"`).
//! Check: read the counts (journaled as `previous`, for failback, saved
//! before the first write so a resumed step still knows them). Act: write
//! through `/scale` only where needed; a workload with an HPA gets the
//! HPA's `minReplicas` raised instead of a fight with the autoscaler.
//! Verify: wait for `observedGeneration`, `updatedReplicas` and
//! `readyReplicas`, with progress.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use thiserror::Error;

use super::api::{self, Goal};
use super::config::Cluster;
use super::snapshot::{self, decode_target, Entry, Target};
use super::workload::{self, Workload, WorkloadRef};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict};
use crate::decode::{Ctx, MapReader};
use crate::yaml::{Kind as NodeKind, Node};

#[derive(Clone, Copy)]
pub struct KubeScale;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Replicas {
    Count(i32),
    /// A percentage of what the primary region runs (100 = match it).
    Primary {
        percent: u32,
    },
}

/// A `replicas:` value that is none of the three forms.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplicasError {
    #[error("`{0}` is not a percentage between 1% and 1000%")]
    Percentage(String),
    #[error("`{0}` is not a replica count")]
    Count(String),
}

/// A written `replicas:` (an integer, or a string in one of the three
/// forms) as a [`Replicas`], or a located error. Shared by `kube.scale`
/// and `kube.drill_copies`, whose copies take the failover's counts.
pub(crate) fn decode_replicas(ctx: &mut Ctx<'_>, n: &Node, kind: &str) -> Option<Replicas> {
    let text = match &n.kind {
        NodeKind::Int(i) => i.to_string(),
        NodeKind::Str(s) => s.clone(),
        _ => {
            ctx.expected(
                n,
                "a count, `primary` or a percentage like \"50%\"",
                "replicas",
            );
            return None;
        }
    };
    match parse_replicas(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            ctx.error(
                "E-VALUE",
                n,
                format!("{kind}: replicas: {e}"),
                Some("a count (10), `primary` (match the primary region) or a percentage of it (\"50%\")".into()),
            );
            None
        }
    }
}

pub fn parse_replicas(s: &str) -> Result<Replicas, ReplicasError> {
    let s = s.trim();
    if s == "primary" {
        return Ok(Replicas::Primary { percent: 100 });
    }
    if let Some(p) = s.strip_suffix('%') {
        return match p.trim().parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(Replicas::Primary { percent: n }),
            _ => Err(ReplicasError::Percentage(s.to_string())),
        };
    }
    match s.parse::<i32>() {
        Ok(n) if n >= 0 => Ok(Replicas::Count(n)),
        _ => Err(ReplicasError::Count(s.to_string())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapacityFrom {
    /// A fence earlier in this run, else live, else the last snapshot.
    Auto,
    Live,
    Snapshot,
}

pub struct Params {
    pub target: Target,
    pub replicas: Option<Replicas>,
    pub from_region: Option<String>,
    pub capacity_from: CapacityFrom,
    pub max_snapshot_age: Option<Duration>,
    pub wait: bool,
    pub concurrency: usize,
}

/// What the DR workloads should run, and where that number came from.
struct Plan {
    targets: BTreeMap<String, i32>,
    source: String,
    /// Match-the-primary never scales down: a DR region already running
    /// more than production is not a problem to fix mid-failover.
    at_least: bool,
}

fn percent_of(n: i32, percent: u32) -> i32 {
    let v = (i64::from(n) * i64::from(percent) + 99) / 100;
    v.clamp(0, i64::from(i32::MAX)) as i32
}

async fn live_counts(
    ctx: &StepContext,
    from: &str,
    ws: &[Workload],
    concurrency: usize,
) -> Result<BTreeMap<String, i32>, ActionError> {
    let cfg = snapshot::for_region(ctx, from)?;
    // Bounded: the primary region may be the one that is gone.
    let deadline = ctx.deadline.min(Instant::now() + cfg.timeout);
    let cluster = Cluster::connect(&cfg, from, deadline).await?;
    let refs: Vec<WorkloadRef> = ws.iter().map(|w| w.r.clone()).collect();
    let got = api::concurrently(refs, concurrency, |r| {
        let c = cluster.clone();
        async move { (r.key(), workload::get(&c, &r).await) }
    })
    .await;
    let mut out = BTreeMap::new();
    for (k, res) in got {
        match res {
            Ok(w) => {
                out.insert(k, w.spec_replicas);
            }
            Err(super::KubeError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

async fn plan_targets(
    p: &Params,
    region: &str,
    ws: &[Workload],
    ctx: &StepContext,
) -> Result<Plan, ActionError> {
    let percent = match p.replicas {
        Some(Replicas::Count(n)) => {
            return Ok(Plan {
                targets: ws.iter().map(|w| (w.r.key(), n)).collect(),
                source: format!("fixed count {n}"),
                at_least: false,
            })
        }
        Some(Replicas::Primary { percent }) => percent,
        None => {
            return Err(ActionError::InvalidParams(
                "  - replicas is required".into(),
            ))
        }
    };
    let env = ctx.env()?;
    let from = p
        .from_region
        .clone()
        .unwrap_or_else(|| env.active_region.clone());
    if from == region {
        return Err(ActionError::Config {
            message: format!("kube.scale would match region `{region}` against itself"),
            hint: "set `from_region:` to the primary region".into(),
        });
    }
    let snap = snapshot::load(ctx.store.as_ref(), &env.name, &from).await?;
    let mut notes = Vec::new();
    let mut counts: Option<(BTreeMap<String, i32>, String)> = None;
    if p.capacity_from == CapacityFrom::Auto {
        if let Some(s) = snap
            .as_ref()
            .filter(|s| s.taken_by == "kube.fence" && s.run_id == ctx.run_id)
        {
            counts = Some((
                s.workloads
                    .iter()
                    .map(|(k, e)| (k.clone(), e.replicas))
                    .collect(),
                format!(
                    "region {from} as read by this run's fence at {}",
                    s.taken_at
                ),
            ));
        }
    }
    if counts.is_none() && p.capacity_from != CapacityFrom::Snapshot {
        match live_counts(ctx, &from, ws, p.concurrency).await {
            Ok(mut live) => {
                // A primary workload at 0 was most likely fenced earlier;
                // the snapshot knows what it ran.
                if let Some(s) = &snap {
                    for (k, v) in live.iter_mut() {
                        if *v == 0 {
                            if let Some(e) = s.workloads.get(k).filter(|e| e.replicas > 0) {
                                notes.push(format!(
                                    "{k} is at 0 in {from}; using the snapshot's {}",
                                    e.replicas
                                ));
                                *v = e.replicas;
                            }
                        }
                    }
                }
                counts = Some((live, format!("region {from}, read live")));
            }
            Err(e) if p.capacity_from == CapacityFrom::Live => {
                return Err(ActionError::failed_hint(
                    format!("cannot read capacity live from region {from}: {e}"),
                    "use capacity_from: auto or snapshot to fall back to the last snapshot",
                ))
            }
            Err(e) => notes.push(format!(
                "live read of {from} failed ({e}); using the snapshot"
            )),
        }
    }
    let (counts, mut source) = match counts {
        Some(c) => c,
        None => {
            let s = snap.ok_or_else(|| ActionError::Config {
                message: format!(
                    "no capacity for region {from}: its API is unavailable and there is no snapshot"
                ),
                hint: "run kube.snapshot on a schedule (deploy/kubernetes/cronjobs.yaml), or give `replicas:` a number".into(),
            })?;
            let age_ms = crate::journal::now_ms().saturating_sub(s.taken_at_ms);
            if let Some(max) = p.max_snapshot_age {
                if u128::from(age_ms) > max.as_millis() {
                    return Err(ActionError::failed_hint(
                        format!(
                            "the capacity snapshot of region {from} is {} old (max_snapshot_age {})",
                            s.age_text(),
                            crate::duration::format_duration(max)
                        ),
                        "give `replicas:` a number, or raise max_snapshot_age if that capacity is still right",
                    ));
                }
            }
            let src = format!(
                "snapshot of region {from} taken {} ago by {}",
                s.age_text(),
                s.taken_by
            );
            (
                s.workloads
                    .iter()
                    .map(|(k, e)| (k.clone(), e.replicas))
                    .collect(),
                src,
            )
        }
    };
    let missing: Vec<String> = ws
        .iter()
        .map(|w| w.r.key())
        .filter(|k| !counts.contains_key(k))
        .collect();
    if !missing.is_empty() {
        return Err(ActionError::failed_hint(
            format!(
                "no primary capacity known for {} ({source})",
                missing.join(", ")
            ),
            "the workload must exist in the primary region (or its snapshot) under the same namespace, kind and name; or give `replicas:` a number",
        ));
    }
    if percent != 100 {
        source = format!("{percent}% of {source}");
    }
    if !notes.is_empty() {
        source = format!("{source} ({})", notes.join("; "));
    }
    Ok(Plan {
        targets: ws
            .iter()
            .map(|w| (w.r.key(), percent_of(counts[&w.r.key()], percent)))
            .collect(),
        source,
        at_least: true,
    })
}

/// The counts a real failover's `kube.scale` would bring `ws` (in
/// `region`) to, decided the same way (same capacity sources, same
/// at-least rule for match-the-primary), with where they came from. The
/// isolated drill runs its workload copies at these counts.
pub(crate) async fn failover_targets(
    replicas: Replicas,
    from_region: Option<String>,
    region: &str,
    ws: &[Workload],
    ctx: &StepContext,
) -> Result<(BTreeMap<String, i32>, String), ActionError> {
    let p = Params {
        target: Target {
            region: Some(region.to_string()),
            workloads: None,
        },
        replicas: Some(replicas),
        from_region,
        capacity_from: CapacityFrom::Auto,
        max_snapshot_age: None,
        wait: true,
        concurrency: 16,
    };
    let plan = plan_targets(&p, region, ws, ctx).await?;
    let targets = ws
        .iter()
        .map(|w| {
            let t = plan.targets[&w.r.key()];
            let n = if plan.at_least {
                t.max(w.spec_replicas)
            } else {
                t
            };
            (w.r.key(), n)
        })
        .collect();
    Ok((targets, plan.source))
}

fn region_of(p: &Params, ctx: &StepContext) -> Result<String, ActionError> {
    p.target
        .region
        .clone()
        .or_else(|| ctx.target_region.clone())
        .ok_or_else(|| ActionError::Config {
            message: "no target region".into(),
            hint: "set `region:` or run with --region".into(),
        })
}

/// Writes one workload towards its target; returns whether it wrote.
async fn apply_one(
    cluster: &Cluster,
    w: &Workload,
    target: i32,
    hpa: Option<&api::Hpa>,
    at_least: bool,
) -> Result<bool, super::KubeError> {
    let mut wrote = false;
    let goal = match hpa {
        // The HPA's floor is what keeps the capacity; scaling alone would
        // be undone by the autoscaler at its next sync.
        Some(h) if target > 0 => {
            wrote |= api::raise_hpa_floor(cluster, &w.r.namespace, &h.name, target).await?;
            Goal::AtLeast(target)
        }
        _ if at_least => Goal::AtLeast(target),
        _ => Goal::Exactly(target),
    };
    let (_, changed) = api::scale(cluster, &w.r, goal).await?;
    Ok(wrote || changed)
}

#[async_trait]
impl ActionKind for KubeScale {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "kube.scale"
    }
    fn summary(&self) -> &'static str {
        "Scale a region's Deployments/StatefulSets (a count, `primary`, or a percentage of it) and wait until ready"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "changed",
            "previous",
            "targets",
            "capacity_source",
            "api_ms",
            "ready_ms",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "kube.scale")?;
        let target = decode_target(ctx, &mut r, "kube.scale");
        let replicas = r
            .req(ctx, "replicas")
            .filter(|n| !ctx.deferred(n))
            .and_then(|n| decode_replicas(ctx, n, "kube.scale"));
        let from_region = r
            .opt("from_region")
            .and_then(|n| ctx.string(n, "from_region"));
        let capacity_from = r
            .opt("capacity_from")
            .and_then(|n| {
                ctx.one_of(
                    n,
                    &["auto", "live", "snapshot"],
                    "kube.scale: capacity_from",
                )
            })
            .map(|s| match s {
                "live" => CapacityFrom::Live,
                "snapshot" => CapacityFrom::Snapshot,
                _ => CapacityFrom::Auto,
            })
            .unwrap_or(CapacityFrom::Auto);
        let max_snapshot_age = r
            .opt("max_snapshot_age")
            .and_then(|n| ctx.duration(n, "kube.scale: max_snapshot_age"));
        let (wait, concurrency) = snapshot::decode_pacing(ctx, &mut r, "kube.scale");
        r.finish(ctx);
        Some(Params {
            target,
            replicas,
            from_region,
            capacity_from,
            max_snapshot_age,
            wait,
            concurrency,
        })
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Not read-only: it scales the target region's workloads.
        false
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "scale workloads in region {} to {}",
            crate::action::param_text(params, "region", "(target)"),
            params
                .get("replicas")
                .map(crate::action::short)
                .unwrap_or_default()
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let region = region_of(p, ctx)?;
        let (cluster, ws) = snapshot::connect_and_resolve(&p.target, &region, ctx).await?;
        let hpas = api::hpas_for(&cluster, &ws).await?;
        let plan = plan_targets(p, &region, &ws, ctx).await?;
        let mut lines = vec![format!("kube {region}: capacity from {}", plan.source)];
        for w in &ws {
            let t = plan.targets[&w.r.key()];
            let mut line = if w.spec_replicas == t || (plan.at_least && w.spec_replicas >= t) {
                format!("kube {region} {} {} (already there)", w.r, w.spec_replicas)
            } else {
                format!("kube {region} {} {} -> {t}", w.r, w.spec_replicas)
            };
            if let Some(h) = hpas.get(&w.r).filter(|h| h.min_replicas < t) {
                line.push_str(&format!(
                    " (HPA {} minReplicas {} -> {t})",
                    h.name, h.min_replicas
                ));
            }
            lines.push(line);
        }
        Ok(Preflight::new(lines, Verdict::Passes))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let region = region_of(p, ctx)?;
        let (cluster, ws) = snapshot::connect_and_resolve(&p.target, &region, ctx).await?;
        let hpas = api::hpas_for(&cluster, &ws).await?;
        // Decide once: a resumed step keeps the first attempt's previous
        // counts and targets, even if the primary has changed since.
        let saved = match api::load_checkpoint(ctx)? {
            Some(v) => v,
            None => {
                let plan = plan_targets(p, &region, &ws, ctx).await?;
                let v = json!({
                    "previous": snapshot::entries_from(&ws, &hpas),
                    "targets": plan.targets,
                    "source": plan.source,
                    "at_least": plan.at_least,
                });
                api::save_checkpoint(ctx, &v).await?;
                v
            }
        };
        let previous: BTreeMap<String, Entry> =
            serde_json::from_value(saved["previous"].clone()).unwrap_or_default();
        let targets: BTreeMap<String, i32> =
            serde_json::from_value(saved["targets"].clone()).unwrap_or_default();
        let source = saved["source"].as_str().unwrap_or_default().to_string();
        let at_least = saved["at_least"].as_bool().unwrap_or(false);
        let work: Vec<(Workload, i32)> = ws
            .iter()
            .filter_map(|w| targets.get(&w.r.key()).map(|t| (w.clone(), *t)))
            .collect();
        if work.len() != ws.len() {
            return Err(ActionError::failed(
                "the selected workloads differ from those this step recorded before it was interrupted",
            ));
        }
        let started = Instant::now();
        let results = api::concurrently(work.clone(), p.concurrency, |(w, t)| {
            let c = cluster.clone();
            let h = hpas.get(&w.r).cloned();
            async move { apply_one(&c, &w, t, h.as_ref(), at_least).await }
        })
        .await;
        let api_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut changed = 0;
        let mut errors = Vec::new();
        for ((w, _), r) in work.iter().zip(results) {
            match r {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) => errors.push((w.r.clone(), e)),
            }
        }
        if let Some((r, first)) = errors.first() {
            let hint = first.hint();
            return Err(ActionError::failed_hint(
                format!(
                    "{} of {} workload(s) could not be scaled; first: {r}: {first}",
                    errors.len(),
                    work.len()
                ),
                hint,
            ));
        }
        crate::journal::test_crash_at("kube-scale");
        let want: Vec<(WorkloadRef, i32)> = work.iter().map(|(w, t)| (w.r.clone(), *t)).collect();
        let mut ready_ms = None;
        if p.wait {
            let waited = Instant::now();
            ctx.progress(format!(
                "waiting for {} workload(s) to be ready",
                want.len()
            ));
            api::wait_for(
                &cluster,
                &want,
                Workload::ready_for,
                p.concurrency,
                ctx.deadline,
                ctx,
            )
            .await
            .map_err(|(not_ready, last)| {
                ActionError::failed_hint(
                    format!(
                        "{} of {} workload(s) not ready in time: {}{}",
                        not_ready.len(),
                        want.len(),
                        not_ready
                            .iter()
                            .take(5)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("; "),
                        last.map(|e| format!(" (last API error: {e})"))
                            .unwrap_or_default()
                    ),
                    "the new counts are applied; `drctl resume` waits again without writing",
                )
            })?;
            ready_ms = Some(waited.elapsed().as_secs_f64() * 1000.0);
        }
        let total: i64 = targets.values().map(|t| i64::from(*t)).sum();
        let mut o = Outputs::new();
        o.insert("changed".into(), json!(changed));
        o.insert("previous".into(), json!(previous));
        o.insert("targets".into(), json!(targets));
        o.insert("capacity_source".into(), json!(source));
        o.insert("api_ms".into(), json!(api_ms));
        o.insert("ready_ms".into(), json!(ready_ms));
        o.insert(
            "summary".into(),
            json!(format!(
                "{} workload(s) in region {region} at {total} replicas{} ({changed} changed; capacity from {source})",
                want.len(),
                if p.wait { ", ready" } else { "" },
            )),
        );
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_forms() {
        assert_eq!(
            parse_replicas("primary"),
            Ok(Replicas::Primary { percent: 100 })
        );
        assert_eq!(parse_replicas("50%"), Ok(Replicas::Primary { percent: 50 }));
        assert_eq!(parse_replicas("7"), Ok(Replicas::Count(7)));
        assert!(parse_replicas("-1").is_err());
        assert!(parse_replicas("0%").is_err());
        assert!(parse_replicas("lots").is_err());
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(percent_of(10, 50), 5);
        assert_eq!(percent_of(3, 50), 2);
        assert_eq!(percent_of(1, 10), 1);
        assert_eq!(percent_of(0, 50), 0);
        assert_eq!(percent_of(i32::MAX, 1000), i32::MAX);
    }
}
