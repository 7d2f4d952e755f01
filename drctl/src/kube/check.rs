//! `kube.check`: assert that a region's workloads are rolled out and their
//! pods Ready; a smoke check after scaling, and read-only for
//! `drctl plan --check`.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

use super::config::Cluster;
use super::error::Op;
use super::snapshot::{self, decode_target, Target};
use super::workload::Workload;
use super::KubeError;
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct KubeCheck;

pub struct Params {
    pub target: Target,
    pub allow_zero: bool,
}

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready pods of `w`, and the names of those that are not.
async fn pods(cluster: &Cluster, w: &Workload) -> Result<(usize, Vec<String>), KubeError> {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &w.r.namespace);
    let sel = w.label_selector();
    let op = Op {
        verb: "list",
        resource: "pods".into(),
        group: "",
        namespace: Some(w.r.namespace.clone()),
        what: format!("pods of {}", w.r.human()),
    };
    let list = cluster
        .call(op, api.list(&ListParams::default().labels(&sel)))
        .await?;
    let mut ready = 0;
    let mut not = Vec::new();
    for p in &list.items {
        if pod_ready(p) {
            ready += 1;
        } else {
            not.push(p.metadata.name.clone().unwrap_or_default());
        }
    }
    Ok((ready, not))
}

/// What `kube.check` found for one workload: a line for the operator, and
/// whether the workload is ready (a problem line otherwise).
enum Finding {
    Ready(String),
    NotReady(String),
}

impl Finding {
    fn problem(&self) -> Option<&str> {
        match self {
            Finding::Ready(_) => None,
            Finding::NotReady(s) => Some(s),
        }
    }
}

/// One finding per workload.
async fn inspect(
    p: &Params,
    ctx: &StepContext,
) -> Result<(String, Vec<Finding>, usize), ActionError> {
    let region = p
        .target
        .region
        .clone()
        .or_else(|| ctx.target_region.clone())
        .ok_or_else(|| ActionError::Config {
            message: "no region to check".into(),
            hint: "set `region:` or run with --region".into(),
        })?;
    let (cluster, ws) = snapshot::connect_and_resolve(&p.target, &region, ctx).await?;
    let mut lines = Vec::new();
    let mut ready_pods = 0;
    for w in &ws {
        let (ready, not) = pods(&cluster, w).await?;
        ready_pods += ready;
        let rollout = w.ready_for(w.spec_replicas);
        let line = format!(
            "{}: {}/{} pods Ready, {} updated, generation {}/{}",
            w.r, ready, w.spec_replicas, w.updated, w.observed_generation, w.generation
        );
        let ok = rollout
            && ready >= w.spec_replicas.max(0) as usize
            && (w.spec_replicas > 0 || p.allow_zero);
        lines.push(if ok {
            Finding::Ready(line)
        } else if w.spec_replicas == 0 && !p.allow_zero {
            Finding::NotReady(format!(
                "{}: scaled to 0 (set allow_zero: true if that is expected)",
                w.r
            ))
        } else if !not.is_empty() {
            Finding::NotReady(format!(
                "{line}; not Ready: {}",
                not.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ))
        } else {
            Finding::NotReady(format!("{line}; rollout incomplete"))
        });
    }
    Ok((region, lines, ready_pods))
}

#[async_trait]
impl ActionKind for KubeCheck {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "kube.check"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Reads rollout and pod status.
        true
    }
    fn summary(&self) -> &'static str {
        "Assert a region's workloads are rolled out and their pods Ready"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["workloads", "ready_pods", "summary"]
    }
    /// Ready workloads at the wanted capacity show the service runs.
    fn proves_recovery(&self, _params: &Value) -> bool {
        true
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "kube.check")?;
        let target = decode_target(ctx, &mut r, "kube.check");
        let allow_zero = r
            .opt("allow_zero")
            .and_then(|n| ctx.boolean(n, "allow_zero"))
            .unwrap_or(false);
        r.finish(ctx);
        Some(Params { target, allow_zero })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "check rollouts and pod readiness in region {}",
            crate::action::param_text(params, "region", "(target)")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let (region, lines, _) = inspect(p, ctx).await?;
        let ok = lines.iter().all(|l| l.problem().is_none());
        Ok(Preflight::new(
            lines
                .into_iter()
                .map(|l| match l {
                    Finding::Ready(s) => format!("kube {region} {s}"),
                    Finding::NotReady(s) => format!("kube {region} NOT READY {s}"),
                })
                .collect(),
            // Not ready now is what a check before `kube.scale` sees.
            if ok {
                Verdict::Passes
            } else {
                Verdict::FailsNow
            },
        ))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let (region, lines, ready_pods) = inspect(p, ctx).await?;
        let bad: Vec<&str> = lines.iter().filter_map(Finding::problem).collect();
        if !bad.is_empty() {
            return Err(ActionError::failed_hint(
                format!(
                    "{} of {} workload(s) in region {region} not ready: {}",
                    bad.len(),
                    lines.len(),
                    bad.join("; ")
                ),
                "retry the step (a rollout may still be progressing) or inspect with kubectl describe",
            ));
        }
        let mut o = Outputs::new();
        o.insert("workloads".into(), json!(lines.len()));
        o.insert("ready_pods".into(), json!(ready_pods));
        o.insert(
            "summary".into(),
            json!(format!(
                "{} workload(s) in region {region} rolled out, {ready_pods} pods Ready",
                lines.len()
            )),
        );
        Ok(o)
    }
}
