//! Create (POST) and delete (DELETE) in the fake API server, with the real
//! server's semantics for what isolated drills do: Namespaces
//! (cluster-scoped), NetworkPolicies, Deployments and StatefulSets.
//!
//! - a duplicate name gets 409 `AlreadyExists`;
//! - creating into a namespace that does not exist gets 404 `NotFound`
//!   (`namespaces "x" not found`), into a Terminating one 403 `Forbidden`
//!   (`unable to create new content in namespace x because it is being
//!   terminated`);
//! - the server sets uid, resourceVersion, creationTimestamp, generation
//!   and drops any status a client sends; a new workload starts with an
//!   empty status and the controller makes its pods ready tick by tick;
//! - deleting a namespace sets `status.phase: Terminating` and
//!   `metadata.deletionTimestamp`; a few controller ticks later it is gone
//!   with everything in it (the namespace controller's finalizer);
//!   deleting a namespaced object removes it at once.
//!
//! Not modelled: finalizers other than the namespace's, admission,
//! `dryRun`, `generateName`, propagation policies.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{json, Value};

use super::api::{details, resource_name, respond, status, Target};
use super::{is_workload, key, KubeFake, Obj, State};

/// Controller ticks a deleted namespace stays Terminating.
pub(super) const TERMINATING_TICKS: u32 = 5;

pub(super) fn api_version(group: &str) -> &'static str {
    match group {
        "apps" => "apps/v1",
        "autoscaling" => "autoscaling/v2",
        "networking.k8s.io" => "networking.k8s.io/v1",
        _ => "v1",
    }
}

fn not_found(what: String, t: &Target) -> Response<Full<Bytes>> {
    status(404, "NotFound", what, Some(details(t)))
}

/// The phase of namespace `ns`, if it exists.
pub(super) fn namespace_phase(st: &State, ns: &str) -> Option<String> {
    st.objects.get(&key("Namespace", "", ns)).map(|o| {
        o.value
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("Active")
            .to_string()
    })
}

pub(super) fn create(st: &mut State, t: &Target, body: &str) -> Response<Full<Bytes>> {
    let Ok(mut v) = serde_json::from_str::<Value>(body) else {
        return status(
            400,
            "BadRequest",
            "the request body is not valid JSON".into(),
            None,
        );
    };
    let Some(name) = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
    else {
        return status(
            422,
            "Invalid",
            format!(
                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                t.kind
            ),
            None,
        );
    };
    let named = Target {
        group: t.group,
        plural: t.plural.clone(),
        kind: t.kind.clone(),
        ns: t.ns.clone(),
        name: Some(name.clone()),
        scale: false,
    };
    if v.get("kind").and_then(Value::as_str) != Some(t.kind.as_str()) {
        return status(
            400,
            "BadRequest",
            format!(
                "the object's kind {} does not match the path's {}",
                v.get("kind").unwrap_or(&Value::Null),
                t.kind
            ),
            None,
        );
    }
    let ns = match (&t.ns, t.kind.as_str()) {
        (None, "Namespace") => String::new(),
        (Some(ns), k) if k != "Namespace" => ns.clone(),
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
                None,
            )
        }
    };
    if !ns.is_empty() {
        if v.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .is_some_and(|m| m != ns)
        {
            return status(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request".into(),
                None,
            );
        }
        match namespace_phase(st, &ns).as_deref() {
            None => {
                let nst = Target {
                    group: "",
                    plural: "namespaces".into(),
                    kind: "Namespace".into(),
                    ns: None,
                    name: Some(ns.clone()),
                    scale: false,
                };
                return not_found(format!("namespaces \"{ns}\" not found"), &nst);
            }
            Some("Terminating") => {
                return status(
                    403,
                    "Forbidden",
                    format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        resource_name(&named)
                    ),
                    Some(details(&named)),
                );
            }
            Some(_) => {}
        }
    }
    let k = key(&t.kind, &ns, &name);
    if st.objects.contains_key(&k) {
        return status(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource_name(&named)),
            Some(details(&named)),
        );
    }
    st.uid += 1;
    let uid = format!("00000000-0000-4000-9000-{:012}", st.uid);
    let rv = st.next_rv();
    let m = &mut v["metadata"];
    for f in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "managedFields",
    ] {
        if let Some(o) = m.as_object_mut() {
            o.remove(f);
        }
    }
    m["uid"] = json!(uid);
    m["resourceVersion"] = json!(rv);
    m["creationTimestamp"] = json!("2026-01-02T00:00:00Z");
    if !ns.is_empty() {
        m["namespace"] = json!(ns);
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if is_workload(&t.kind) {
        v["metadata"]["generation"] = json!(1);
        v["status"] = json!({});
    }
    if t.kind == "Namespace" {
        v["spec"] = json!({"finalizers": ["kubernetes"]});
        v["status"] = json!({"phase": "Active"});
        if let Some(l) = v["metadata"]["labels"].as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        } else {
            v["metadata"]["labels"] = json!({"kubernetes.io/metadata.name": name});
        }
    }
    st.objects.insert(k, Obj::new(v.clone()));
    respond(201, v)
}

pub(super) fn delete(st: &mut State, t: &Target) -> Response<Full<Bytes>> {
    let name = t.name.clone().unwrap_or_default();
    let ns = t.ns.clone().unwrap_or_default();
    let k = key(&t.kind, &ns, &name);
    if !st.objects.contains_key(&k) {
        return not_found(format!("{} \"{name}\" not found", resource_name(t)), t);
    }
    if t.kind == "Namespace" {
        let rv = st.next_rv();
        let o = st.objects.get_mut(&k).expect("checked above");
        if o.terminating.is_none() {
            o.terminating = Some(TERMINATING_TICKS);
            o.value["metadata"]["deletionTimestamp"] = json!("2026-01-02T00:00:01Z");
            o.value["status"]["phase"] = json!("Terminating");
            o.value["metadata"]["resourceVersion"] = json!(rv);
        }
        return respond(200, o.value.clone());
    }
    st.next_rv();
    let gone = st.objects.remove(&k).map(|o| o.value).unwrap_or_default();
    respond(
        200,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": name, "group": t.group, "kind": t.plural, "uid": gone["metadata"]["uid"]}}),
    )
}

/// The namespace controller: a Terminating namespace is removed with its
/// content once its ticks ran out.
pub(super) fn finalize_namespaces(st: &mut State) {
    let mut done = Vec::new();
    for ((kind, _, name), o) in st.objects.iter_mut() {
        if kind != "Namespace" {
            continue;
        }
        if let Some(n) = o.terminating.as_mut() {
            if *n == 0 {
                done.push(name.clone());
            } else {
                *n -= 1;
            }
        }
    }
    for ns in done {
        st.objects
            .retain(|(kind, n, name), _| *n != ns && !(kind == "Namespace" && *name == ns));
        st.next_rv();
    }
}

/// Namespaces of objects added by a test exist, Active, as on a cluster.
pub(super) fn ensure_namespace(st: &mut State, ns: &str) {
    let k = key("Namespace", "", ns);
    if st.objects.contains_key(&k) {
        return;
    }
    let rv = st.next_rv();
    let v = json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": ns, "uid": format!("ns-{ns}"), "resourceVersion": rv,
                                "creationTimestamp": "2026-01-01T00:00:00Z",
                                "labels": {"kubernetes.io/metadata.name": ns}},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
    st.objects.insert(k, Obj::new(v));
}

impl KubeFake {
    /// A namespace someone else made or changed (e.g. a foreign
    /// `drill-<run>`): created when absent, `labels` merged, `annotations`
    /// replaced.
    pub fn add_namespace(&self, name: &str, labels: Value, annotations: Value) {
        let mut st = self.state.lock().unwrap();
        ensure_namespace(&mut st, name);
        let rv = st.next_rv();
        let o = st.objects.get_mut(&key("Namespace", "", name)).unwrap();
        if let (Some(l), Some(extra)) = (
            o.value["metadata"]["labels"].as_object_mut(),
            labels.as_object(),
        ) {
            l.extend(extra.clone());
        }
        o.value["metadata"]["annotations"] = annotations;
        o.value["metadata"]["resourceVersion"] = json!(rv);
    }

    pub fn namespace(&self, name: &str) -> Option<Value> {
        self.workload("Namespace", "", name)
    }

    pub fn network_policy(&self, ns: &str, name: &str) -> Option<Value> {
        self.workload("NetworkPolicy", ns, name)
    }

    /// Every object stored in namespace `ns` (not the Namespace itself).
    pub fn objects_in(&self, ns: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|((_, n, _), _)| n == ns)
            .map(|(_, o)| o.value.clone())
            .collect()
    }
}
