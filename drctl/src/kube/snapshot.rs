//! `kube.snapshot`: record the replica counts of the selected workloads in
//! the state store, on a schedule (a CronJob), so that "scale the DR region
//! to match the primary" has an answer when the primary API is gone.
//!
//! Snapshots live outside both clusters (the store), keyed by environment
//! and region; each one also appends a line to a history for audits.

use std::collections::BTreeMap;
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::{self, Hpa};
use super::config::{self, Cluster, ClusterConfig};
use super::workload::{self, decode_selections, Selection, Workload, WorkloadRef};
use super::{KubeError, CAPACITY, CAPACITY_HISTORY};
use crate::action::{
    decode_resolved, ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict,
};
use crate::decode::{Ctx, MapReader};
use crate::store::{Expect, Store, StoreError};
use crate::yaml::Node;

/// One workload's capacity: its replica count and the HPA bounds it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<Hpa>,
}

/// A stored snapshot of one region's capacity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capacity {
    pub env: String,
    pub region: String,
    pub taken_at: String,
    pub taken_at_ms: u64,
    /// `kube.snapshot`, or `kube.fence` (counts read just before fencing).
    pub taken_by: String,
    pub run_id: String,
    /// By `namespace/Kind/name`.
    pub workloads: BTreeMap<String, Entry>,
}

impl Capacity {
    pub fn age_text(&self) -> String {
        let age = crate::journal::now_ms().saturating_sub(self.taken_at_ms);
        crate::duration::format_duration(std::time::Duration::from_millis(age))
    }
}

fn key(env: &str, region: &str) -> String {
    format!("{env}-{region}")
}

pub async fn load(
    store: &dyn Store,
    env: &str,
    region: &str,
) -> Result<Option<Capacity>, ActionError> {
    Ok(load_versioned(store, env, region).await?.map(|(c, _)| c))
}

async fn load_versioned(
    store: &dyn Store,
    env: &str,
    region: &str,
) -> Result<Option<(Capacity, u64)>, ActionError> {
    let v = store
        .get_doc(CAPACITY, &key(env, region))
        .await
        .map_err(|e| ActionError::failed(format!("cannot read the capacity snapshot: {e}")))?;
    match v {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.doc)
            .map(|c| Some((c, v.version)))
            .map_err(|e| {
                ActionError::failed(format!(
                    "the capacity snapshot for {env}/{region} is unreadable: {e}"
                ))
            }),
    }
}

/// Read-modify-write of a region's snapshot with compare-and-set: `f` sees
/// the current snapshot and returns the new one (or `None` to leave it).
/// A concurrent writer (the snapshot CronJob and a fence) makes the write
/// retry on the fresh value instead of overwriting it.
pub async fn update(
    store: &dyn Store,
    env: &str,
    region: &str,
    f: impl Fn(Option<&Capacity>) -> Option<Capacity>,
) -> Result<(), ActionError> {
    for _ in 0..5 {
        let cur = load_versioned(store, env, region).await?;
        let Some(c) = f(cur.as_ref().map(|(c, _)| c)) else {
            return Ok(());
        };
        let doc = serde_json::to_value(&c).map_err(|e| ActionError::failed(e.to_string()))?;
        let expect = cur.map_or(Expect::Absent, |(_, v)| Expect::Version(v));
        match store
            .put_doc(CAPACITY, &key(env, region), &doc, expect)
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => {
                return Err(ActionError::failed(format!(
                    "cannot save the capacity snapshot: {e}"
                )))
            }
        }
        let total: i64 = c.workloads.values().map(|e| i64::from(e.replicas)).sum();
        return store
            .append_history(
                CAPACITY_HISTORY,
                &json!({"env": c.env, "region": c.region, "taken_at": c.taken_at,
                        "taken_by": c.taken_by, "run_id": c.run_id,
                        "workloads": c.workloads.len(), "total_replicas": total}),
            )
            .await
            .map_err(|e| {
                ActionError::failed(format!("cannot append to the capacity history: {e}"))
            });
    }
    Err(ActionError::failed(format!(
        "the capacity snapshot for {env}/{region} kept changing under concurrent writers"
    )))
}

/// Current counts (and HPA bounds) of the workloads in `ws`.
pub async fn entries(
    cluster: &Cluster,
    ws: &[Workload],
) -> Result<BTreeMap<String, Entry>, KubeError> {
    let hpas = api::hpas_for(cluster, ws).await?;
    Ok(entries_from(ws, &hpas))
}

/// Each workload's count and the HPA (if any) that targets it.
pub fn entries_from(ws: &[Workload], hpas: &BTreeMap<WorkloadRef, Hpa>) -> BTreeMap<String, Entry> {
    ws.iter()
        .map(|w| {
            (
                w.r.key(),
                Entry {
                    replicas: w.spec_replicas,
                    hpa: hpas.get(&w.r).cloned(),
                },
            )
        })
        .collect()
}

pub fn new_capacity(
    ctx: &StepContext,
    region: &str,
    taken_by: &str,
    workloads: BTreeMap<String, Entry>,
) -> Result<Capacity, ActionError> {
    Ok(Capacity {
        env: ctx.env()?.name.clone(),
        region: region.to_string(),
        taken_at: crate::journal::now_rfc3339(),
        taken_at_ms: crate::journal::now_ms(),
        taken_by: taken_by.to_string(),
        run_id: ctx.run_id.clone(),
        workloads,
    })
}

/// Parameters shared by the kube actions: which region, which workloads.
pub struct Target {
    pub region: Option<String>,
    pub workloads: Option<Vec<Selection>>,
}

/// Reads `region` and `workloads` from an action's `with`.
pub fn decode_target(ctx: &mut Ctx<'_>, r: &mut MapReader<'_>, kind: &str) -> Target {
    let region = r.opt("region").and_then(|n| ctx.string(n, "region"));
    let workloads = r
        .opt("workloads")
        .and_then(|n| decode_selections(ctx, n, &format!("{kind}: workloads")));
    Target { region, workloads }
}

/// The region an action acts on and that region's `kube:` section.
pub fn for_region(ctx: &StepContext, region: &str) -> Result<ClusterConfig, ActionError> {
    let env = ctx.env()?;
    if env.region(region).is_none() {
        return Err(ActionError::Config {
            message: format!("region `{region}` is not in environment `{}`", env.name),
            hint: format!("regions: {}", env.region_names().join(", ")),
        });
    }
    let node = env
        .component(region, "kube")
        .ok_or_else(|| ActionError::Config {
            message: format!("region `{region}` has no kube section"),
            hint: "add `kube:` (kubeconfig or in_cluster, workloads) to the region, or give the step `skip_unless: [target.kube]`".into(),
        })?;
    decode_resolved("kube", node, |c, n| {
        config::decode(c, n, &format!("regions.{region}.kube"))
    })
}

/// Connects to the region and resolves the workloads (the step's, else the
/// region's `kube.workloads`).
pub async fn connect_and_resolve(
    t: &Target,
    region: &str,
    ctx: &StepContext,
) -> Result<(Cluster, Vec<Workload>), ActionError> {
    let cfg = for_region(ctx, region)?;
    let sels = match &t.workloads {
        Some(s) => s.clone(),
        None if !cfg.workloads.is_empty() => cfg.workloads.clone(),
        None => {
            return Err(ActionError::Config {
                message: format!("no workloads selected for region `{region}`"),
                hint: format!(
                    "give the step `workloads:` or add `workloads:` to regions.{region}.kube"
                ),
            })
        }
    };
    let cluster = Cluster::connect(&cfg, region, ctx.deadline).await?;
    let ws = workload::resolve(&cluster, &sels).await?;
    Ok((cluster, ws))
}

/// `wait` (default true) and `concurrency` (default 16, 1..=256): how the
/// writing actions pace their API requests.
pub fn decode_pacing(ctx: &mut Ctx<'_>, r: &mut MapReader<'_>, kind: &str) -> (bool, usize) {
    let wait = r
        .opt("wait")
        .and_then(|n| ctx.boolean(n, &format!("{kind}: wait")))
        .unwrap_or(true);
    let concurrency = r
        .opt("concurrency")
        .and_then(|n| ctx.uint(n, &format!("{kind}: concurrency")))
        .map(|c| c.clamp(1, 256) as usize)
        .unwrap_or(16);
    (wait, concurrency)
}

#[derive(Clone, Copy)]
pub struct KubeSnapshot;

fn region_of(t: &Target, ctx: &StepContext) -> Result<String, ActionError> {
    Ok(t.region.clone().unwrap_or_else(|| {
        ctx.env
            .as_ref()
            .map(|e| e.active_region.clone())
            .unwrap_or_default()
    }))
}

#[async_trait]
impl ActionKind for KubeSnapshot {
    type Params = Target;

    fn kind(&self) -> &'static str {
        "kube.snapshot"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Reads the cluster; writes only drctl's own capacity document.
        true
    }
    fn summary(&self) -> &'static str {
        "Record the replica counts (and HPA bounds) of a region's workloads in the state store"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "workloads",
            "total_replicas",
            "capacity",
            "taken_at",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "kube.snapshot")?;
        let t = decode_target(ctx, &mut r, "kube.snapshot");
        r.finish(ctx);
        Some(t)
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "record workload capacity of region {}",
            crate::action::param_text(params, "region", "(active)")
        )
    }
    async fn preflight(
        &self,
        t: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let region = region_of(t, ctx)?;
        let (_, ws) = connect_and_resolve(t, &region, ctx).await?;
        Ok(Preflight::new(
            ws.iter()
                .map(|w| format!("kube {region} {}: {} replicas", w.r, w.spec_replicas))
                .collect(),
            Verdict::Passes,
        ))
    }
    async fn execute(&self, t: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let region = region_of(t, ctx)?;
        let started = Instant::now();
        let (cluster, ws) = connect_and_resolve(t, &region, ctx).await?;
        let entries = entries(&cluster, &ws).await?;
        let cap = new_capacity(ctx, &region, "kube.snapshot", entries)?;
        // The newest reading replaces whatever is there (compare-and-set
        // still makes a concurrent fence's merge retry, not vanish).
        update(ctx.store.as_ref(), &cap.env, &cap.region, |_| {
            Some(cap.clone())
        })
        .await?;
        let total: i64 = cap.workloads.values().map(|e| i64::from(e.replicas)).sum();
        let mut o = Outputs::new();
        o.insert("workloads".into(), json!(cap.workloads.len()));
        o.insert("total_replicas".into(), json!(total));
        o.insert(
            "capacity".into(),
            json!(cap
                .workloads
                .iter()
                .map(|(k, e)| (k.clone(), e.replicas))
                .collect::<BTreeMap<_, _>>()),
        );
        o.insert("taken_at".into(), json!(cap.taken_at));
        o.insert(
            "summary".into(),
            json!(format!(
                "recorded {} workload(s), {total} replicas, in region {region} ({} ms)",
                cap.workloads.len(),
                started.elapsed().as_millis()
            )),
        );
        Ok(o)
    }
}
