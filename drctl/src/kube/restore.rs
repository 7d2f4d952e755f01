//! `kube.restore`: put replica counts and HPA bounds back to the values a
//! failover's `kube.fence` and `kube.scale` steps journaled as `previous`,
//! by compare-and-set against what those steps set.
//!
//! Why from the journal and not from a snapshot: the journal holds exactly
//! what the failover changed and what was there before, verified by its
//! hash chain; a snapshot may have been retaken since. Check: each
//! workload as it is now. One still as the failover left it is restored;
//! one already back is left; one someone changed since (neither value) is
//! *drift*, refused before anything is written unless `--force`
//! (journaled). Workloads with an HPA are judged by the HPA's bounds (the
//! autoscaler owns the count in between). Act: the fenced region (the
//! failback's target) is brought up first, then the scaled region down,
//! so the service never runs without capacity; the plan and the drift
//! verdict are saved as the step's checkpoint before the first write, so a
//! resumed step keeps them. Verify: every restored workload is rolled out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::{self, Goal, Hpa};
use super::config::{self, Cluster, ClusterConfig};
use super::snapshot::{decode_pacing, Entry};
use super::workload::{self, Kind, Workload, WorkloadRef};
use crate::action::{
    decode_resolved, ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict,
};
use crate::decode::{Ctx, MapReader};
use crate::environment::Environment;
use crate::journal::{Event, StepStatus};
use crate::store::Store;
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct KubeRestore;

pub struct Params {
    pub run: String,
    pub fenced_region: String,
    pub fence_step: String,
    pub scaled_region: String,
    pub scale_step: String,
    pub wait: bool,
    pub concurrency: usize,
}

/// What to do with one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    /// Still as the failover left it: restore.
    Restore,
    /// Already at the journaled previous values.
    Back,
    /// Changed since the failover: left alone unless `--force`.
    Drift,
}

/// One workload of one region: the journaled values before the failover,
/// what the failover's step may have set, and what it is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub region: String,
    pub key: String,
    pub previous: Entry,
    /// Replica counts the failover's step could have left (a `kube.scale`
    /// to "at least" leaves the larger of before and target).
    pub set_replicas: Vec<i32>,
    /// HPA bounds the failover's step left (the previous ones when it did
    /// not touch the HPA).
    pub set_hpa: Option<(i32, i32)>,
    pub now_replicas: Option<i32>,
    pub now_hpa: Option<Hpa>,
    pub verdict: Disposition,
    pub why: String,
}

impl Item {
    fn line(&self) -> String {
        let now = self
            .now_replicas
            .map(|n| n.to_string())
            .unwrap_or_else(|| "(gone)".into());
        let mut s = match self.verdict {
            Disposition::Back => format!("kube {} {} {now} (already back)", self.region, self.key),
            _ => format!(
                "kube {} {} {now} -> {}",
                self.region, self.key, self.previous.replicas
            ),
        };
        if let (Some(p), Some(n)) = (&self.previous.hpa, &self.now_hpa) {
            if (p.min_replicas, p.max_replicas) != (n.min_replicas, n.max_replicas) {
                s.push_str(&format!(
                    " (HPA {} min/max {}/{} -> {}/{})",
                    p.name, n.min_replicas, n.max_replicas, p.min_replicas, p.max_replicas
                ));
            }
        }
        if self.verdict == Disposition::Drift {
            s = format!("drift: {s}: {}", self.why);
        }
        s
    }
}

/// The plan of a restore: every journaled workload of both regions, and
/// why a region has nothing to restore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Planned {
    pub items: Vec<Item>,
    pub notes: Vec<String>,
}

impl Planned {
    pub fn drift(&self) -> Vec<String> {
        self.items
            .iter()
            .filter(|i| i.verdict == Disposition::Drift)
            .map(Item::line)
            .collect()
    }
}

/// The outputs of the latest finished `step` of `run` (verified journal):
/// `Ok(None)` when that step was skipped or is not in the run.
async fn step_outputs(
    store: &dyn Store,
    run: &str,
    step: &str,
) -> Result<Option<serde_json::Map<String, Value>>, ActionError> {
    let bytes = store
        .read_journal(run)
        .await
        .map_err(|e| ActionError::failed(format!("run {run}: {e}")))?;
    let v = crate::journal::verify(&bytes)
        .map_err(|e| ActionError::failed(format!("run {run}'s journal: {e}")))?;
    for r in v.records.iter().rev() {
        match &r.event {
            Event::StepFinished {
                step: s,
                status,
                outputs,
                ..
            } if s == step => {
                return match status {
                    StepStatus::Succeeded => Ok(Some(outputs.clone())),
                    StepStatus::Skipped => Ok(None),
                    other => Err(ActionError::Config {
                        message: format!(
                            "step `{step}` of run {run} is {other:?}: the capacity it changed is not known"
                        ),
                        hint: "restore the capacity by hand, or resume the failover first".into(),
                    }),
                };
            }
            Event::StepSkipped { step: s, .. } if s == step => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

fn entries(o: &serde_json::Map<String, Value>) -> BTreeMap<String, Entry> {
    o.get("previous")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// What the failover's two steps changed, per region, before looking at
/// the clusters: `(region, key, previous, set_replicas, set_hpa)`.
type Journaled = Vec<(String, String, Entry, Vec<i32>, Option<(i32, i32)>)>;

async fn journaled(store: &dyn Store, p: &Params) -> Result<(Journaled, Vec<String>), ActionError> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    match step_outputs(store, &p.run, &p.fence_step).await? {
        None => notes.push(format!(
            "region {}: run {} did not fence it (step `{}` skipped or absent); left as it is",
            p.fenced_region, p.run, p.fence_step
        )),
        Some(o) if o.get("reachable") == Some(&json!(false)) => notes.push(format!(
            "region {}: its API did not answer when run {} fenced it, so nothing was changed there; left as it is",
            p.fenced_region, p.run
        )),
        Some(o) => {
            for (k, e) in entries(&o) {
                let bounds = e.hpa.as_ref().map(|h| (h.min_replicas, h.max_replicas));
                out.push((p.fenced_region.clone(), k, e, vec![0], bounds));
            }
        }
    }
    match step_outputs(store, &p.run, &p.scale_step).await? {
        None => notes.push(format!(
            "region {}: run {} did not scale it (step `{}` skipped or absent); left as it is",
            p.scaled_region, p.run, p.scale_step
        )),
        Some(o) => {
            let targets: BTreeMap<String, i32> = o
                .get("targets")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            for (k, e) in entries(&o) {
                let Some(t) = targets.get(&k).copied() else {
                    continue;
                };
                let bounds = e.hpa.as_ref().map(|h| {
                    if t > 0 {
                        (h.min_replicas.max(t), h.max_replicas.max(t))
                    } else {
                        (h.min_replicas, h.max_replicas)
                    }
                });
                let mut set = vec![t, e.replicas.max(t)];
                set.dedup();
                out.push((p.scaled_region.clone(), k, e, set, bounds));
            }
        }
    }
    Ok((out, notes))
}

/// A region's `kube:` section.
pub fn cluster_config(env: &Environment, region: &str) -> Result<ClusterConfig, ActionError> {
    let node = env
        .component(region, "kube")
        .ok_or_else(|| ActionError::Config {
            message: format!(
                "region `{region}` has no kube section, but the failover scaled workloads there"
            ),
            hint: format!(
                "add `kube:` to regions.{region} of environment `{}`",
                env.name
            ),
        })?;
    decode_resolved("kube", node, |c, n| {
        config::decode(c, n, &format!("regions.{region}.kube"))
    })
}

/// `namespace/Kind/name` back to a reference.
fn parse_key(key: &str) -> Option<WorkloadRef> {
    let mut it = key.splitn(3, '/');
    let (ns, kind, name) = (it.next()?, it.next()?, it.next()?);
    Some(WorkloadRef {
        kind: Kind::parse(kind)?,
        namespace: ns.to_string(),
        name: name.to_string(),
    })
}

fn judge(
    previous: &Entry,
    set_replicas: &[i32],
    set_hpa: Option<(i32, i32)>,
    now: Option<&Workload>,
    now_hpa: Option<&Hpa>,
) -> (Disposition, String) {
    let Some(now) = now else {
        return (Disposition::Drift, "the workload no longer exists".into());
    };
    let bounds = |h: &Hpa| (h.min_replicas, h.max_replicas);
    match (&previous.hpa, now_hpa) {
        (Some(p), Some(n)) if p.name == n.name => {
            // The autoscaler owns the count between the bounds; the bounds
            // are what the failover changed and what a person would change.
            let nb = bounds(n);
            if nb == bounds(p) && now.spec_replicas > 0 {
                (Disposition::Back, String::new())
            } else if Some(nb) == set_hpa || nb == bounds(p) {
                (Disposition::Restore, String::new())
            } else {
                (
                    Disposition::Drift,
                    format!(
                        "HPA {} is at min/max {}/{}; the failover left {}, it was {}/{} before",
                        n.name,
                        nb.0,
                        nb.1,
                        set_hpa
                            .map(|(a, b)| format!("{a}/{b}"))
                            .unwrap_or_else(|| "it untouched".into()),
                        p.min_replicas,
                        p.max_replicas
                    ),
                )
            }
        }
        (Some(p), _) => (
            Disposition::Drift,
            format!(
                "its HPA {} was removed or replaced since the failover",
                p.name
            ),
        ),
        (None, Some(n)) => (
            Disposition::Drift,
            format!("an HPA ({}) targets it since the failover", n.name),
        ),
        (None, None) => {
            let n = now.spec_replicas;
            if n == previous.replicas {
                (Disposition::Back, String::new())
            } else if set_replicas.contains(&n) {
                (Disposition::Restore, String::new())
            } else {
                (
                    Disposition::Drift,
                    format!(
                        "it runs {n} replicas; the failover left {}, it was {} before",
                        set_replicas
                            .iter()
                            .map(i32::to_string)
                            .collect::<Vec<_>>()
                            .join(" or "),
                        previous.replicas
                    ),
                )
            }
        }
    }
}

/// Reads both regions and judges every journaled workload.
pub async fn plan(
    env: &Environment,
    store: &dyn Store,
    p: &Params,
    deadline: Instant,
) -> Result<(Planned, BTreeMap<String, Cluster>), ActionError> {
    let (journaled, notes) = journaled(store, p).await?;
    let mut clusters: BTreeMap<String, Cluster> = BTreeMap::new();
    let mut items = Vec::new();
    for (region, key, previous, set_replicas, set_hpa) in journaled {
        if !clusters.contains_key(&region) {
            let cfg = cluster_config(env, &region)?;
            let c = Cluster::connect(&cfg, &region, deadline).await?;
            clusters.insert(region.clone(), c);
        }
        let cluster = &clusters[&region];
        let r = parse_key(&key).ok_or_else(|| {
            ActionError::failed(format!("run {}: `{key}` is not a workload key", p.run))
        })?;
        let now = match workload::get(cluster, &r).await {
            Ok(w) => Some(w),
            Err(super::KubeError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let now_hpa = match &now {
            Some(w) => api::hpas(cluster, &r.namespace).await?.remove(&w.r),
            None => None,
        };
        let (verdict, why) = judge(
            &previous,
            &set_replicas,
            set_hpa,
            now.as_ref(),
            now_hpa.as_ref(),
        );
        items.push(Item {
            region,
            key,
            previous,
            set_replicas,
            set_hpa,
            now_replicas: now.as_ref().map(|w| w.spec_replicas),
            now_hpa,
            verdict,
            why,
        });
    }
    Ok((Planned { items, notes }, clusters))
}

/// Writes one workload back: the HPA's bounds first (so the autoscaler
/// does not undo the count), then the count, within those bounds.
async fn restore_one(cluster: &Cluster, it: &Item) -> Result<bool, super::KubeError> {
    let Some(r) = parse_key(&it.key) else {
        return Ok(false);
    };
    let mut wrote = false;
    let mut want = it.previous.replicas;
    if let Some(h) = &it.previous.hpa {
        wrote |= api::set_hpa_bounds(
            cluster,
            &r.namespace,
            &h.name,
            h.min_replicas,
            h.max_replicas,
        )
        .await?;
        if want > 0 {
            want = want.clamp(h.min_replicas, h.max_replicas.max(h.min_replicas));
        }
    }
    let (_, changed) = api::scale(cluster, &r, Goal::Exactly(want)).await?;
    Ok(wrote || changed)
}

fn region_order(p: &Params) -> [String; 2] {
    [p.fenced_region.clone(), p.scaled_region.clone()]
}

#[async_trait]
impl ActionKind for KubeRestore {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "kube.restore"
    }
    fn summary(&self) -> &'static str {
        "Put replica counts and HPA bounds back to the values a failover's kube.fence/kube.scale journaled as previous (compare-and-set; drift refused unless --force)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["changed", "restored", "drift", "ready_ms", "summary"]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "kube.restore")?;
        let run = r.req(ctx, "run").and_then(|n| ctx.string(n, "run"));
        let fenced_region = r
            .req(ctx, "fenced_region")
            .and_then(|n| ctx.string(n, "fenced_region"));
        let scaled_region = r
            .req(ctx, "scaled_region")
            .and_then(|n| ctx.string(n, "scaled_region"));
        let fence_step = r
            .opt("fence_step")
            .and_then(|n| ctx.string(n, "fence_step"))
            .unwrap_or_else(|| "fence-kube".into());
        let scale_step = r
            .opt("scale_step")
            .and_then(|n| ctx.string(n, "scale_step"))
            .unwrap_or_else(|| "scale".into());
        let (wait, concurrency) = decode_pacing(ctx, &mut r, "kube.restore");
        r.finish(ctx);
        Some(Params {
            run: run?,
            fenced_region: fenced_region?,
            fence_step,
            scaled_region: scaled_region?,
            scale_step,
            wait,
            concurrency,
        })
    }
    fn read_only(&self, _params: &Value) -> bool {
        false
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "replica counts and HPA bounds in regions {} and {} back to their values before run {}, compare-and-set",
            crate::action::param_text(params, "fenced_region", "?"),
            crate::action::param_text(params, "scaled_region", "?"),
            crate::action::param_text(params, "run", "?"),
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let env = ctx.env()?;
        let (pl, _) = plan(env, ctx.store.as_ref(), p, ctx.deadline).await?;
        let mut lines: Vec<String> = pl.items.iter().map(Item::line).collect();
        lines.extend(pl.notes.iter().map(|n| format!("kube {n}")));
        let verdict = if pl.drift().is_empty() || ctx.options.force {
            Verdict::Passes
        } else {
            Verdict::Problem
        };
        Ok(Preflight::new(lines, verdict))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let env = ctx.env()?;
        let read_by = ctx.deadline.min(Instant::now() + Duration::from_secs(30));
        let (fresh, clusters) = plan(env, ctx.store.as_ref(), p, read_by).await?;
        // Drift is judged once, before the first write: a resumed step
        // must not call its own half-done restore drift.
        let pl = match ctx.saved::<Planned>()? {
            Some(saved) => saved,
            None => {
                let drift = fresh.drift();
                if !drift.is_empty() && !ctx.options.force {
                    return Err(ActionError::Refused {
                        message: format!(
                            "Kubernetes capacity changed since the failover, left alone: {}",
                            drift.join("; ")
                        ),
                        hint: "check who changed it; `drctl resume RUN --force` restores the failover's previous values anyway".into(),
                    });
                }
                ctx.checkpoint(&fresh).await?;
                fresh
            }
        };
        let todo: Vec<&Item> = pl
            .items
            .iter()
            .filter(|i| i.verdict != Disposition::Drift || ctx.options.force)
            .collect();
        let mut changed = 0usize;
        let mut restored = BTreeMap::new();
        let started = Instant::now();
        // The fenced region comes back before the scaled one goes down.
        for region in region_order(p) {
            let mine: Vec<&Item> = todo
                .iter()
                .copied()
                .filter(|i| i.region == region)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let Some(cluster) = clusters.get(&region) else {
                continue;
            };
            let results = api::concurrently(mine.clone(), p.concurrency, |it| {
                let c = cluster.clone();
                async move { restore_one(&c, it).await }
            })
            .await;
            for (it, r) in mine.iter().zip(results) {
                match r {
                    Ok(w) => changed += usize::from(w),
                    Err(e) => {
                        let hint = e.hint();
                        return Err(ActionError::failed_hint(
                            format!("cannot restore {} in region {region}: {e}", it.key),
                            hint,
                        ));
                    }
                }
                restored.insert(format!("{region} {}", it.key), json!(it.previous));
            }
            crate::journal::test_crash_at("kube-restore");
            if p.wait {
                let want: Vec<(WorkloadRef, i32)> = mine
                    .iter()
                    .filter_map(|it| {
                        let r = parse_key(&it.key)?;
                        let n = match &it.previous.hpa {
                            Some(h) if it.previous.replicas > 0 => h.min_replicas,
                            _ => it.previous.replicas,
                        };
                        Some((r, n))
                    })
                    .collect();
                ctx.progress(format!(
                    "region {region}: waiting for {} workload(s) to roll out",
                    want.len()
                ));
                api::wait_for(
                    cluster,
                    &want,
                    Workload::ready_for,
                    p.concurrency,
                    ctx.deadline,
                    ctx,
                )
                .await
                .map_err(|(left, last)| {
                    ActionError::failed_hint(
                        format!(
                            "region {region}: {} workload(s) not rolled out in time: {}{}",
                            left.len(),
                            left.join("; "),
                            last.map(|e| format!(" (last API error: {e})"))
                                .unwrap_or_default()
                        ),
                        "the counts are written; `drctl resume` waits again without writing",
                    )
                })?;
            }
        }
        let drift = pl.drift();
        let mut summary = format!(
            "{} workload(s) back to their capacity before run {} ({changed} written)",
            restored.len(),
            p.run
        );
        if !drift.is_empty() {
            summary.push_str(&if ctx.options.force {
                format!("; drift overridden (--force): {}", drift.join("; "))
            } else {
                format!("; drift left alone: {}", drift.join("; "))
            });
        }
        for n in &pl.notes {
            summary.push_str(&format!("; {n}"));
        }
        let mut o = Outputs::new();
        o.insert("changed".into(), json!(changed));
        o.insert("restored".into(), json!(restored));
        o.insert("drift".into(), json!(drift));
        o.insert(
            "ready_ms".into(),
            if p.wait {
                json!(started.elapsed().as_secs_f64() * 1000.0)
            } else {
                Value::Null
            },
        );
        o.insert("summary".into(), json!(summary));
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: i32) -> Workload {
        let mut x = Workload::from_object(
            Kind::Deployment,
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"replicas": n}
            }))
            .expect("object"),
        );
        x.spec_replicas = n;
        x
    }

    fn hpa(min: i32, max: i32) -> Hpa {
        Hpa {
            name: "web".into(),
            min_replicas: min,
            max_replicas: max,
        }
    }

    #[test]
    fn keys_parse_back() {
        let r = parse_key("shop/StatefulSet/db").expect("key");
        assert_eq!(r.key(), "shop/StatefulSet/db");
        assert!(parse_key("shop/Job/x").is_none());
        assert!(parse_key("shop").is_none());
    }

    #[test]
    fn counts_are_compared_with_both_values() {
        let prev = Entry {
            replicas: 2,
            hpa: None,
        };
        assert_eq!(
            judge(&prev, &[10], None, Some(&w(10)), None).0,
            Disposition::Restore
        );
        assert_eq!(
            judge(&prev, &[10], None, Some(&w(2)), None).0,
            Disposition::Back
        );
        let (v, why) = judge(&prev, &[10], None, Some(&w(7)), None);
        assert_eq!(v, Disposition::Drift);
        assert!(why.contains("runs 7") && why.contains("left 10"), "{why}");
        assert_eq!(judge(&prev, &[10], None, None, None).0, Disposition::Drift);
    }

    #[test]
    fn hpa_workloads_are_judged_by_their_bounds() {
        let prev = Entry {
            replicas: 3,
            hpa: Some(hpa(2, 5)),
        };
        let set = Some((10, 10));
        // The autoscaler moved the count: not drift.
        assert_eq!(
            judge(&prev, &[10], set, Some(&w(9)), Some(&hpa(10, 10))).0,
            Disposition::Restore
        );
        assert_eq!(
            judge(&prev, &[10], set, Some(&w(4)), Some(&hpa(2, 5))).0,
            Disposition::Back
        );
        // A fenced workload at 0 with its bounds intact still needs its count.
        assert_eq!(
            judge(&prev, &[0], Some((2, 5)), Some(&w(0)), Some(&hpa(2, 5))).0,
            Disposition::Restore
        );
        let (v, why) = judge(&prev, &[10], set, Some(&w(9)), Some(&hpa(6, 12)));
        assert_eq!(v, Disposition::Drift);
        assert!(why.contains("6/12"), "{why}");
        assert_eq!(
            judge(&prev, &[10], set, Some(&w(9)), None).0,
            Disposition::Drift
        );
    }
}
