//! Copies of production workloads in a throw-away `drill-<run>` namespace,
//! fenced by a default-deny NetworkPolicy: the Kubernetes capability the
//! isolated drill composes (`drill/isolated/kube.rs`).
//!
//! Why a copy and not the DR workloads themselves: an isolated drill must
//! never change production, and the DR region's warm workloads are
//! production (a real failover scales them). So drctl only *reads* them
//! and creates new objects in its own namespace; the namespace carries the
//! run id, so a cleanup deletes exactly what this run made, and deleting
//! the namespace deletes everything in it.
//!
//! The manifests are built by pure functions (unit-tested below); the API
//! calls go through [`Cluster::call`] (bounded, errors naming the object).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{json, Map, Value};

use super::config::Cluster;
use super::error::{KubeError, Op};
use super::workload::{Kind, WorkloadRef};

/// Label on everything drctl creates for a drill.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "drctl");
/// Label with the run id (label-safe) on the namespace, copies and pods.
pub const RUN_LABEL: &str = "drctl.io/drill-run";
/// Annotation with the exact run id: what ownership is decided on.
pub const RUN_ANNOTATION: &str = "drctl.io/run-id";
/// The NetworkPolicy fencing the drill namespace.
pub const POLICY_NAME: &str = "drill-default-deny";

/// The requests `kube.drill_copies` and the drill cleanup make beyond
/// [`super::PERMISSIONS`] (which they also use, to read the production
/// workloads). The drill namespace does not exist before the drill, so no
/// RoleBinding can be placed in it beforehand: `deploy/kubernetes/rbac-drills.yaml`
/// grants these cluster-wide, as an opt-in for clusters that run isolated
/// drills (`tests/manifests.rs` keeps the two equal).
pub const DRILL_PERMISSIONS: &[(&str, &str, &[&str])] = &[
    ("", "namespaces", &["create", "get", "delete"]),
    ("networking.k8s.io", "networkpolicies", &["create", "get"]),
    ("apps", "deployments", &["create", "get"]),
    ("apps", "statefulsets", &["create", "get"]),
];

/// `drill-<run id>` as a DNS-1123 label (lowercase, at most 63 bytes).
pub fn namespace_name(run_id: &str) -> String {
    super::dns_label("drill-", run_id, 63)
}

/// A run id as a label value (63 bytes of `[A-Za-z0-9._-]`).
fn label_value(run_id: &str) -> String {
    let mut s: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(63);
    s
}

fn drill_labels(run_id: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(MANAGED_BY.0.into(), json!(MANAGED_BY.1));
    m.insert(RUN_LABEL.into(), json!(label_value(run_id)));
    m
}

pub fn namespace_manifest(name: &str, run_id: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": drill_labels(run_id),
            "annotations": {RUN_ANNOTATION: run_id},
        },
    })
}

/// Default deny for every pod of the namespace, both directions; egress
/// only to cluster DNS and to the drill database's address and port.
pub fn network_policy_manifest(run_id: &str, db: IpAddr, port: u16) -> Value {
    let cidr = match db {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    };
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY_NAME, "labels": drill_labels(run_id)},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                {
                    "to": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
                {
                    "to": [{"ipBlock": {"cidr": cidr}}],
                    "ports": [{"protocol": "TCP", "port": port}],
                },
            ],
        },
    })
}

/// Sets `env` on a container list (an existing variable of that name is
/// replaced, so a copy never keeps production's PGHOST).
fn set_env(containers: &mut Value, env: &BTreeMap<String, String>) {
    let Some(list) = containers.as_array_mut() else {
        return;
    };
    for c in list {
        let mut vars: Vec<Value> = c
            .get("env")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| {
                v.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(|n| !env.contains_key(n))
            })
            .collect();
        vars.extend(env.iter().map(|(k, v)| json!({"name": k, "value": v})));
        c["env"] = Value::Array(vars);
    }
}

/// The copy of production object `prod` for namespace `ns`: server-set
/// metadata and status stripped, labels kept plus the drill's, `replicas`
/// set, `env` on every (init) container, and the pod template labelled
/// with the run so its pods are recognisable.
pub fn copy_manifest(
    prod: &Value,
    ns: &str,
    run_id: &str,
    replicas: i32,
    env: &BTreeMap<String, String>,
) -> Value {
    let mut labels = prod
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.extend(drill_labels(run_id));
    let mut spec = prod.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["replicas"] = json!(replicas);
    if let Some(t) = spec.get_mut("template") {
        let tl = &mut t["metadata"]["labels"];
        if !tl.is_object() {
            *tl = json!({});
        }
        if let Some(m) = tl.as_object_mut() {
            m.extend(drill_labels(run_id));
        }
        if let Some(ps) = t.get_mut("spec") {
            for k in ["containers", "initContainers"] {
                if let Some(cs) = ps.get_mut(k) {
                    set_env(cs, env);
                }
            }
        }
    }
    json!({
        "apiVersion": prod.get("apiVersion").cloned().unwrap_or(json!("apps/v1")),
        "kind": prod.get("kind").cloned().unwrap_or(Value::Null),
        "metadata": {
            "name": prod.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "namespace": ns,
            "labels": labels,
            "annotations": {RUN_ANNOTATION: run_id},
        },
        "spec": spec,
    })
}

fn namespace_api(cluster: &Cluster) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("", "v1", "Namespace"),
        "namespaces",
    );
    Api::all_with(cluster.client.clone(), &ar)
}

fn policy_api(cluster: &Cluster, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.k8s.io", "v1", "NetworkPolicy"),
        "networkpolicies",
    );
    Api::namespaced_with(cluster.client.clone(), ns, &ar)
}

fn ns_op(verb: &'static str, name: &str) -> Op {
    Op {
        verb,
        resource: "namespaces".into(),
        group: "",
        namespace: None,
        what: format!("Namespace {name}"),
    }
}

fn to_object(v: &Value) -> Result<DynamicObject, KubeError> {
    serde_json::from_value(v.clone())
        .map_err(|e| KubeError::Other(format!("cannot encode a manifest: {e}")))
}

fn to_value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// A namespace as drctl sees it: whose run made it and whether it is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceState {
    /// The run id annotation (`None`: not drctl's).
    pub run: Option<String>,
    pub terminating: bool,
}

/// Reads a namespace (`None`: it does not exist).
pub async fn namespace(cluster: &Cluster, name: &str) -> Result<Option<NamespaceState>, KubeError> {
    match cluster
        .call(ns_op("get", name), namespace_api(cluster).get(name))
        .await
    {
        Ok(o) => {
            let v = to_value(&o);
            Ok(Some(NamespaceState {
                run: v
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(RUN_ANNOTATION))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                terminating: v.pointer("/status/phase").and_then(Value::as_str)
                    == Some("Terminating")
                    || v.pointer("/metadata/deletionTimestamp").is_some(),
            }))
        }
        Err(KubeError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates a namespace; `false` when it already existed (409).
pub async fn create_namespace(cluster: &Cluster, manifest: &Value) -> Result<bool, KubeError> {
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    let obj = to_object(manifest)?;
    match cluster
        .call(
            ns_op("create", name),
            namespace_api(cluster).create(&PostParams::default(), &obj),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the NetworkPolicy, or checks the existing one has the same spec
/// (a resumed step finds its own). Returns whether it created it.
pub async fn ensure_policy(
    cluster: &Cluster,
    ns: &str,
    manifest: &Value,
) -> Result<bool, KubeError> {
    let api = policy_api(cluster, ns);
    let op = |verb| Op {
        verb,
        resource: "networkpolicies".into(),
        group: "networking.k8s.io",
        namespace: Some(ns.to_string()),
        what: format!("NetworkPolicy {ns}/{POLICY_NAME}"),
    };
    let obj = to_object(manifest)?;
    match cluster
        .call(op("create"), api.create(&PostParams::default(), &obj))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_conflict() => {
            let cur = to_value(&cluster.call(op("get"), api.get(POLICY_NAME)).await?);
            if cur.get("spec") == manifest.get("spec") {
                Ok(false)
            } else {
                Err(KubeError::Other(format!(
                    "NetworkPolicy {ns}/{POLICY_NAME} exists with a different spec than the drill's default deny"
                )))
            }
        }
        Err(e) => Err(e),
    }
}

/// Reads a workload's whole object (to copy it).
pub async fn get_object(cluster: &Cluster, r: &WorkloadRef) -> Result<Value, KubeError> {
    let o = cluster
        .call(r.op("get", ""), r.api(cluster).get(&r.name))
        .await?;
    Ok(to_value(&o))
}

/// Creates a copy in its namespace; `false` when one already existed.
pub async fn create_copy(
    cluster: &Cluster,
    kind: Kind,
    manifest: &Value,
) -> Result<bool, KubeError> {
    let r = WorkloadRef {
        kind,
        namespace: manifest["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        name: manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let obj = to_object(manifest)?;
    match cluster
        .call(
            r.op("create", ""),
            r.api(cluster).create(&PostParams::default(), &obj),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes a namespace and waits, polling, until the API no longer has
/// it (its content goes with it). Returns whether it existed.
pub async fn delete_namespace(
    cluster: &Cluster,
    name: &str,
    deadline: Instant,
) -> Result<bool, KubeError> {
    let api = namespace_api(cluster);
    let existed = match cluster
        .call(
            ns_op("delete", name),
            api.delete(name, &DeleteParams::default()),
        )
        .await
    {
        Ok(_) => true,
        Err(KubeError::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut interval = Duration::from_millis(50);
    loop {
        if namespace(cluster, name).await?.is_none() {
            return Ok(existed);
        }
        if Instant::now() + interval >= deadline {
            return Err(KubeError::Other(format!(
                "Namespace {name} is still terminating in the `{}` cluster",
                cluster.region
            )));
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_dns_labels() {
        assert_eq!(
            namespace_name("20261202T015700123Z-3fa9c2"),
            "drill-20261202t015700123z-3fa9c2"
        );
        let long = namespace_name(&"A_".repeat(60));
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn policy_denies_all_but_dns_and_the_drill_database() {
        let p = network_policy_manifest("r1", "10.1.2.3".parse().unwrap(), 6543);
        let s = &p["spec"];
        assert_eq!(s["podSelector"], json!({}), "selects every pod");
        assert_eq!(s["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(s["ingress"], json!([]), "no ingress rule: deny all");
        let egress = s["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 2);
        assert_eq!(
            egress[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
            "kube-dns"
        );
        assert_eq!(
            egress[0]["ports"],
            json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
        );
        assert_eq!(
            egress[1],
            json!({"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"protocol": "TCP", "port": 6543}]})
        );
        let v6 = network_policy_manifest("r1", "fd00::7".parse().unwrap(), 5432);
        assert_eq!(
            v6["spec"]["egress"][1]["to"][0]["ipBlock"]["cidr"],
            "fd00::7/128"
        );
    }

    #[test]
    fn copies_strip_server_fields_and_point_at_the_drill() {
        let prod = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "42",
                         "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 3,
                         "managedFields": [{"manager": "kubectl"}],
                         "ownerReferences": [{"kind": "X", "name": "y"}],
                         "annotations": {"deployment.kubernetes.io/revision": "3"},
                         "labels": {"app": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "app", "image": "i",
                                                           "env": [{"name": "PGHOST", "value": "prod-db"}, {"name": "KEEP", "value": "1"}]}],
                                           "initContainers": [{"name": "init", "image": "i"}]}}},
            "status": {"readyReplicas": 1},
        });
        let env: BTreeMap<String, String> = [
            ("PGHOST".to_string(), "drill.lab.example.".to_string()),
            ("PGPORT".to_string(), "6543".to_string()),
        ]
        .into_iter()
        .collect();
        let c = copy_manifest(&prod, "drill-r1", "r1", 4, &env);
        let m = c["metadata"].as_object().unwrap();
        let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["annotations", "labels", "name", "namespace"]);
        assert_eq!(c["metadata"]["namespace"], "drill-r1");
        assert_eq!(c["metadata"]["annotations"], json!({RUN_ANNOTATION: "r1"}));
        assert_eq!(
            c["metadata"]["labels"],
            json!({"app": "web", MANAGED_BY.0: MANAGED_BY.1, RUN_LABEL: "r1"})
        );
        assert!(c.get("status").is_none());
        assert_eq!(c["spec"]["replicas"], 4);
        assert_eq!(c["spec"]["selector"], prod["spec"]["selector"]);
        assert_eq!(c["spec"]["template"]["metadata"]["labels"][RUN_LABEL], "r1");
        assert_eq!(
            c["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "KEEP", "value": "1"}, {"name": "PGHOST", "value": "drill.lab.example."},
                   {"name": "PGPORT", "value": "6543"}])
        );
        assert_eq!(
            c["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["name"],
            "PGHOST"
        );
        assert_eq!(
            prod["spec"]["replicas"], 1,
            "the production object is not modified"
        );
    }
}
