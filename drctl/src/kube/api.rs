//! The writes (scale through `/scale`, HPA floors) with optimistic
//! concurrency, the readiness wait, and the per-step checkpoint.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::Cluster;
use super::error::{KubeError, Op};
use super::workload::{self, Kind, Workload, WorkloadRef};
use crate::action::{ActionError, StepContext};

/// Fresh reads after a 409 before giving up: a controller that rewrites the
/// object this often is fighting us, and a human should look.
const CONFLICT_ATTEMPTS: u32 = 6;

/// How a write relates to the current replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Exactly(i32),
    /// Raise to at least this many (an HPA may keep more).
    AtLeast(i32),
}

impl Goal {
    fn satisfied(self, cur: i32) -> bool {
        match self {
            Goal::Exactly(n) => cur == n,
            Goal::AtLeast(n) => cur >= n,
        }
    }
    fn value(self) -> i32 {
        match self {
            Goal::Exactly(n) | Goal::AtLeast(n) => n,
        }
    }
}

/// Sets `spec.replicas` through the `/scale` subresource. Reads first and
/// writes only when needed (idempotent); the write carries the
/// resourceVersion just read, and a 409 means "read again and decide
/// again". Returns the count found before, and whether it wrote.
pub async fn scale(
    cluster: &Cluster,
    r: &WorkloadRef,
    goal: Goal,
) -> Result<(i32, bool), KubeError> {
    let api = r.api(cluster);
    let mut last = None;
    for attempt in 1..=CONFLICT_ATTEMPTS {
        let s = cluster
            .call(r.op("get", "/scale"), api.get_scale(&r.name))
            .await?;
        let cur = s.spec.as_ref().and_then(|x| x.replicas).unwrap_or(0);
        if goal.satisfied(cur) {
            return Ok((cur, false));
        }
        let patch = json!({
            "metadata": {"resourceVersion": s.metadata.resource_version},
            "spec": {"replicas": goal.value()},
        });
        let res = cluster
            .call(
                r.op("patch", "/scale"),
                api.patch_scale(&r.name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
        match res {
            Ok(_) => return Ok((cur, true)),
            Err(e) if e.is_conflict() => {
                tracing::debug!(workload = %r, attempt, "409 on /scale; reading again");
                last = Some(e);
                backoff(attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(conflict(last, r.human()))
}

fn conflict(last: Option<KubeError>, what: String) -> KubeError {
    let server = match last {
        Some(KubeError::Conflict { server, .. }) => server,
        _ => String::new(),
    };
    KubeError::Conflict {
        what,
        attempts: CONFLICT_ATTEMPTS,
        server,
    }
}

async fn backoff(attempt: u32) {
    let ms = 10u64 * u64::from(attempt) + fastrand::u64(0..20);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// An HPA and the bounds it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hpa {
    pub name: String,
    pub min_replicas: i32,
    pub max_replicas: i32,
}

fn hpa_op(verb: &'static str, ns: &str, what: String) -> Op {
    Op {
        verb,
        resource: "horizontalpodautoscalers".into(),
        group: "autoscaling",
        namespace: Some(ns.to_string()),
        what,
    }
}

fn hpa_bounds(h: &HorizontalPodAutoscaler) -> (i32, i32) {
    let spec = h.spec.as_ref();
    (
        spec.and_then(|s| s.min_replicas).unwrap_or(1),
        spec.map(|s| s.max_replicas).unwrap_or(0),
    )
}

/// The HPAs of a namespace, by the workload they target.
pub async fn hpas(cluster: &Cluster, ns: &str) -> Result<BTreeMap<WorkloadRef, Hpa>, KubeError> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), ns);
    let list = cluster
        .call(
            hpa_op(
                "list",
                ns,
                format!("HorizontalPodAutoscalers in namespace {ns}"),
            ),
            api.list(&ListParams::default()),
        )
        .await?;
    let mut out = BTreeMap::new();
    for h in list.items {
        let Some(spec) = &h.spec else { continue };
        let t = &spec.scale_target_ref;
        let group_ok = t
            .api_version
            .as_deref()
            .is_none_or(|v| v.starts_with("apps/"));
        let (Some(kind), true) = (Kind::parse(&t.kind), group_ok) else {
            continue;
        };
        let (min, max) = hpa_bounds(&h);
        out.insert(
            WorkloadRef {
                kind,
                namespace: ns.to_string(),
                name: t.name.clone(),
            },
            Hpa {
                name: h.metadata.name.clone().unwrap_or_default(),
                min_replicas: min,
                max_replicas: max,
            },
        );
    }
    Ok(out)
}

/// HPAs for the namespaces of `ws`.
pub async fn hpas_for(
    cluster: &Cluster,
    ws: &[Workload],
) -> Result<BTreeMap<WorkloadRef, Hpa>, KubeError> {
    let mut all = BTreeMap::new();
    for ns in workload::namespaces(ws) {
        all.extend(hpas(cluster, &ns).await?);
    }
    Ok(all)
}

/// Raises an HPA's floor to `min` (and its ceiling when below), so the
/// autoscaler keeps the capacity instead of scaling it back down. Same
/// optimistic concurrency as [`scale`]. Returns whether it wrote.
pub async fn raise_hpa_floor(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    min: i32,
) -> Result<bool, KubeError> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), ns);
    let what = format!("HorizontalPodAutoscaler {ns}/{name}");
    let mut last = None;
    for attempt in 1..=CONFLICT_ATTEMPTS {
        let h = cluster
            .call(hpa_op("get", ns, what.clone()), api.get(name))
            .await?;
        let (cur_min, cur_max) = hpa_bounds(&h);
        if cur_min >= min && cur_max >= min {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"resourceVersion": h.metadata.resource_version},
            "spec": {"minReplicas": cur_min.max(min), "maxReplicas": cur_max.max(min)},
        });
        let res = cluster
            .call(
                hpa_op("patch", ns, what.clone()),
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
        match res {
            Ok(_) => return Ok(true),
            Err(e) if e.is_conflict() => {
                last = Some(e);
                backoff(attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(conflict(last, what))
}

/// Sets an HPA's bounds to exactly `min`/`max` (a failback restoring the
/// bounds a failover raised). Same optimistic concurrency as [`scale`].
/// Returns whether it wrote.
pub async fn set_hpa_bounds(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    min: i32,
    max: i32,
) -> Result<bool, KubeError> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), ns);
    let what = format!("HorizontalPodAutoscaler {ns}/{name}");
    let mut last = None;
    for attempt in 1..=CONFLICT_ATTEMPTS {
        let h = cluster
            .call(hpa_op("get", ns, what.clone()), api.get(name))
            .await?;
        if hpa_bounds(&h) == (min, max) {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"resourceVersion": h.metadata.resource_version},
            "spec": {"minReplicas": min, "maxReplicas": max},
        });
        let res = cluster
            .call(
                hpa_op("patch", ns, what.clone()),
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
        match res {
            Ok(_) => return Ok(true),
            Err(e) if e.is_conflict() => {
                last = Some(e);
                backoff(attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(conflict(last, what))
}

/// Runs `f` over `items` with at most `n` in flight, keeping input order.
pub async fn concurrently<T, R, F, Fut>(items: Vec<T>, n: usize, f: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R>,
{
    let mut out: Vec<(usize, R)> = stream::iter(items.into_iter().enumerate())
        .map(|(i, t)| {
            let fut = f(t);
            async move { (i, fut.await) }
        })
        .buffer_unordered(n.max(1))
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Polls until every workload satisfies `done`, reporting progress; a
/// transient API error is retried on the next poll until the deadline.
pub async fn wait_for(
    cluster: &Cluster,
    want: &[(WorkloadRef, i32)],
    done: fn(&Workload, i32) -> bool,
    concurrency: usize,
    deadline: Instant,
    ctx: &StepContext,
) -> Result<Vec<Workload>, (Vec<String>, Option<KubeError>)> {
    let mut state: BTreeMap<WorkloadRef, Option<Workload>> =
        want.iter().map(|(r, _)| (r.clone(), None)).collect();
    let mut last_err = None;
    let mut last_report = Instant::now();
    let mut last_line = String::new();
    let mut interval = Duration::from_millis(50);
    loop {
        let pending: Vec<(WorkloadRef, i32)> = want
            .iter()
            .filter(|(r, n)| !state[r].as_ref().is_some_and(|w| done(w, *n)))
            .cloned()
            .collect();
        if pending.is_empty() {
            return Ok(state.into_values().flatten().collect());
        }
        let results = concurrently(pending.clone(), concurrency, |(r, _)| async move {
            workload::get(cluster, &r).await
        })
        .await;
        for ((r, _), res) in pending.iter().zip(results) {
            match res {
                Ok(w) => {
                    state.insert(r.clone(), Some(w));
                }
                Err(e) => last_err = Some(e),
            }
        }
        let not_done: Vec<String> = want
            .iter()
            .filter_map(|(r, n)| match &state[r] {
                Some(w) if done(w, *n) => None,
                Some(w) => Some(format!(
                    "{r}: {}/{} ready, {} updated (want {n})",
                    w.ready, w.spec_replicas, w.updated
                )),
                None => Some(format!("{r}: not read yet")),
            })
            .collect();
        if not_done.is_empty() {
            continue;
        }
        let line = format!(
            "{}/{} done; waiting on {}",
            want.len() - not_done.len(),
            want.len(),
            not_done[0]
        );
        if line != last_line && last_report.elapsed() >= Duration::from_millis(500)
            || last_report.elapsed() >= Duration::from_secs(5)
        {
            ctx.progress(line.clone());
            last_report = Instant::now();
            last_line = line;
        }
        let now = Instant::now();
        if now + interval >= deadline {
            return Err((not_done, last_err));
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

/// The state this step saved before its first write on an earlier attempt
/// (`None` on a first attempt), replayed from the journal. A resumed step
/// uses it instead of what it reads now, so `previous` stays the real
/// pre-change state.
pub fn load_checkpoint(ctx: &StepContext) -> Result<Option<Value>, ActionError> {
    ctx.saved()
}

/// Journals the pre-change state; call before the first write.
pub async fn save_checkpoint(ctx: &StepContext, v: &Value) -> Result<(), ActionError> {
    ctx.checkpoint(v).await
}
