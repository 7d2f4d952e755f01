//! Which workloads an action touches, and what their status says.
//!
//! ```yaml
//! workloads:
//!   - namespaces: [shop, billing]         # or namespace: shop
//!     kinds: [Deployment, StatefulSet]    # default: both
//!     selector: dr.example.com/tier=critical
//!   - namespace: shop
//!     kind: Deployment
//!     names: [web, api]                   # or name: web
//! ```
//!
//! A selector that matches nothing and a named workload that does not
//! exist are errors: a failover that silently scales nothing is the worst
//! kind of success.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::Cluster;
use super::error::{KubeError, Op};
use crate::decode::{Ctx, MapReader};
use crate::yaml::{Kind as NodeKind, Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Deployment,
    StatefulSet,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Deployment, Kind::StatefulSet];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s) || k.plural() == s)
    }

    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", self.as_str()))
    }
}

/// One entry of `workloads:`.
#[derive(Debug, Clone)]
pub struct Selection {
    pub namespaces: Vec<String>,
    pub kinds: Vec<Kind>,
    pub names: Vec<String>,
    pub selector: Option<String>,
}

/// `namespace/Kind/name`: the identity used in outputs, checkpoints and
/// snapshots (the same in both regions).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl WorkloadRef {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.kind.as_str(), self.name)
    }

    pub fn human(&self) -> String {
        format!("{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }

    pub fn api(&self, cluster: &Cluster) -> Api<DynamicObject> {
        Api::namespaced_with(
            cluster.client.clone(),
            &self.namespace,
            &self.kind.api_resource(),
        )
    }

    pub fn op(&self, verb: &'static str, sub: &str) -> Op {
        Op {
            verb,
            resource: format!("{}{sub}", self.kind.plural()),
            group: "apps",
            namespace: Some(self.namespace.clone()),
            what: self.human(),
        }
    }
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// The fields of a Deployment/StatefulSet that readiness depends on.
/// Missing status integers are 0: the API omits zero values.
#[derive(Debug, Clone)]
pub struct Workload {
    pub r: WorkloadRef,
    pub generation: i64,
    pub spec_replicas: i32,
    pub observed_generation: i64,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    pub available: i32,
    pub match_labels: BTreeMap<String, String>,
}

fn int(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_i64().unwrap_or(0)
}

impl Workload {
    pub fn from_object(kind: Kind, obj: &DynamicObject) -> Workload {
        let d = &obj.data;
        let i32_of = |path: &[&str]| int(d, path).clamp(0, i32::MAX as i64) as i32;
        let match_labels = d
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        // `spec.replicas` defaults to 1 when unset (API defaulting).
        let spec_replicas = d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .clamp(0, i32::MAX as i64) as i32;
        let available = match kind {
            Kind::Deployment => i32_of(&["status", "availableReplicas"]),
            // StatefulSets report availableReplicas since 1.22; older
            // servers only have readyReplicas.
            Kind::StatefulSet => d
                .pointer("/status/availableReplicas")
                .map(|_| i32_of(&["status", "availableReplicas"]))
                .unwrap_or_else(|| i32_of(&["status", "readyReplicas"])),
        };
        Workload {
            r: WorkloadRef {
                kind,
                namespace: obj.metadata.namespace.clone().unwrap_or_default(),
                name: obj.metadata.name.clone().unwrap_or_default(),
            },
            generation: obj.metadata.generation.unwrap_or(0),
            spec_replicas,
            observed_generation: int(d, &["status", "observedGeneration"]),
            replicas: i32_of(&["status", "replicas"]),
            ready: i32_of(&["status", "readyReplicas"]),
            updated: i32_of(&["status", "updatedReplicas"]),
            available,
            match_labels,
        }
    }

    /// Rolled out and serving at least `want` replicas (more is fine: an
    /// HPA may already have scaled further).
    pub fn ready_for(&self, want: i32) -> bool {
        self.observed_generation >= self.generation
            && self.spec_replicas >= want
            && self.updated >= self.spec_replicas
            && self.ready >= self.spec_replicas
            && self.available >= self.spec_replicas
    }

    /// Scaled to zero with every pod gone.
    pub fn stopped(&self) -> bool {
        self.spec_replicas == 0 && self.replicas == 0
    }

    pub fn label_selector(&self) -> String {
        self.match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub fn decode_selections(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Option<Vec<Selection>> {
    if ctx.deferred(node) {
        return None;
    }
    let items: Vec<&Node> = match &node.kind {
        NodeKind::Seq(items) => items.iter().collect(),
        NodeKind::Map(_) => vec![node],
        _ => {
            ctx.expected(node, "a list of workload selections", what);
            return None;
        }
    };
    if items.is_empty() {
        ctx.error(
            "E-KUBE-WORKLOADS",
            node,
            format!("{what}: no workloads selected"),
            Some("add `- namespace: NS` with `selector:` or `kind:` and `name:`".into()),
        );
        return None;
    }
    let mut out = Vec::new();
    for (i, it) in items.into_iter().enumerate() {
        let w = format!("{what}[{i}]");
        if let Some(s) = decode_selection(ctx, it, &w) {
            out.push(s);
        }
    }
    Some(out)
}

fn one_or_many(
    ctx: &mut Ctx<'_>,
    r: &mut MapReader<'_>,
    one: &'static str,
    many: &'static str,
    what: &str,
) -> Vec<(String, Node)> {
    let a = r.opt(one);
    let b = r.opt(many);
    match (a, b) {
        (Some(a), Some(_)) => {
            ctx.error(
                "E-KUBE-WORKLOADS",
                a,
                format!("{what}: use `{one}` or `{many}`, not both"),
                None,
            );
            Vec::new()
        }
        (Some(a), None) => ctx
            .string(a, &format!("{what}.{one}"))
            .map(|s| vec![(s, a.clone())])
            .unwrap_or_default(),
        (None, Some(b)) => ctx
            .string_list(b, &format!("{what}.{many}"))
            .unwrap_or_default(),
        (None, None) => Vec::new(),
    }
}

fn decode_selection(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Option<Selection> {
    let mut r = MapReader::new(ctx, node, what.to_string())?;
    let namespaces = one_or_many(ctx, &mut r, "namespace", "namespaces", what);
    let kind_nodes = one_or_many(ctx, &mut r, "kind", "kinds", what);
    let names = one_or_many(ctx, &mut r, "name", "names", what);
    let selector = r
        .opt("selector")
        .and_then(|n| ctx.string(n, &format!("{what}.selector")));
    r.finish(ctx);
    let mut kinds = Vec::new();
    for (k, n) in &kind_nodes {
        match Kind::parse(k) {
            Some(k) => kinds.push(k),
            None => ctx.error(
                "E-VALUE",
                n,
                format!("{what}: unknown workload kind `{k}`"),
                Some("one of: Deployment, StatefulSet".into()),
            ),
        }
    }
    if namespaces.is_empty() {
        ctx.error(
            "E-MISSING-FIELD",
            node,
            format!("{what}: missing `namespace` (or `namespaces`)"),
            Some("drctl works per namespace, so its RBAC can stay namespaced".into()),
        );
    }
    match (names.is_empty(), &selector) {
        (true, None) => ctx.error(
            "E-KUBE-WORKLOADS",
            node,
            format!("{what}: select workloads by `name`/`names` or by `selector`"),
            Some("e.g. `selector: app.kubernetes.io/part-of=shop` or `kind: Deployment` with `name: web`".into()),
        ),
        (false, Some(_)) => ctx.error(
            "E-KUBE-WORKLOADS",
            node,
            format!("{what}: `names` and `selector` exclude each other"),
            Some("use two entries".into()),
        ),
        (false, None) if kinds.len() != 1 => ctx.error(
            "E-KUBE-WORKLOADS",
            node,
            format!("{what}: selecting by name needs exactly one `kind`"),
            Some("add `kind: Deployment` or `kind: StatefulSet`".into()),
        ),
        _ => {}
    }
    if kinds.is_empty() {
        kinds = Kind::ALL.to_vec();
    }
    Some(Selection {
        namespaces: namespaces.into_iter().map(|(s, _)| s).collect(),
        kinds,
        names: names.into_iter().map(|(s, _)| s).collect(),
        selector,
    })
}

/// Reads one workload.
pub async fn get(cluster: &Cluster, r: &WorkloadRef) -> Result<Workload, KubeError> {
    let obj = cluster
        .call(r.op("get", ""), r.api(cluster).get(&r.name))
        .await?;
    Ok(Workload::from_object(r.kind, &obj))
}

/// Resolves selections to workloads (deduplicated, sorted by key).
pub async fn resolve(cluster: &Cluster, sels: &[Selection]) -> Result<Vec<Workload>, KubeError> {
    let mut found: BTreeMap<WorkloadRef, Workload> = BTreeMap::new();
    for s in sels {
        if let Some(sel) = &s.selector {
            let mut n = 0;
            for ns in &s.namespaces {
                for &kind in &s.kinds {
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(cluster.client.clone(), ns, &kind.api_resource());
                    let op = Op {
                        verb: "list",
                        resource: kind.plural().into(),
                        group: "apps",
                        namespace: Some(ns.clone()),
                        what: format!("{} in namespace {ns} with selector `{sel}`", kind.plural()),
                    };
                    let list = cluster
                        .call(op, api.list(&ListParams::default().labels(sel)))
                        .await?;
                    for obj in &list.items {
                        let w = Workload::from_object(kind, obj);
                        n += 1;
                        found.insert(w.r.clone(), w);
                    }
                }
            }
            if n == 0 {
                return Err(KubeError::Other(format!(
                    "selector `{sel}` matches no {} in namespace(s) {} of the `{}` cluster",
                    s.kinds
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    s.namespaces.join(", "),
                    cluster.region
                )));
            }
        } else {
            let kind = s.kinds[0];
            for ns in &s.namespaces {
                for name in &s.names {
                    let r = WorkloadRef {
                        kind,
                        namespace: ns.clone(),
                        name: name.clone(),
                    };
                    let w = get(cluster, &r).await?;
                    found.insert(r, w);
                }
            }
        }
    }
    Ok(found.into_values().collect())
}

/// Namespaces of a set of workloads (for per-namespace HPA lists).
pub fn namespaces(ws: &[Workload]) -> BTreeSet<String> {
    ws.iter().map(|w| w.r.namespace.clone()).collect()
}
