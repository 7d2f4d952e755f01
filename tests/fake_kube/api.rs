//! Request routing of the fake API server: paths, verbs, RBAC, label
//! selectors, merge patches, preconditions and status bodies.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Map, Value};

use super::{int, key, set_spec_replicas, FakeOptions, FakeRequest, State};

pub(super) fn respond(code: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

pub(super) fn status(
    code: u16,
    reason: &str,
    message: String,
    details: Option<Value>,
) -> Response<Full<Bytes>> {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code});
    if let Some(d) = details {
        s["details"] = d;
    }
    respond(code, s)
}

/// What a path addresses.
pub(super) struct Target {
    pub(super) group: &'static str,
    pub(super) plural: String,
    pub(super) kind: String,
    pub(super) ns: Option<String>,
    pub(super) name: Option<String>,
    pub(super) scale: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest): (&'static str, &[&str]) = match seg.as_slice() {
        ["apis", "apps", "v1", rest @ ..] => ("apps", rest),
        ["apis", "autoscaling", "v2", rest @ ..] => ("autoscaling", rest),
        ["apis", "networking.k8s.io", "v1", rest @ ..] => ("networking.k8s.io", rest),
        ["api", "v1", rest @ ..] => ("", rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, scale) = match rest {
        [p] => (*p, None, false),
        [p, n] => (*p, Some(n.to_string()), false),
        [p, n, "scale"] => (*p, Some(n.to_string()), true),
        _ => return None,
    };
    let kind = match (group, plural) {
        ("apps", "deployments") => "Deployment",
        ("apps", "statefulsets") => "StatefulSet",
        ("autoscaling", "horizontalpodautoscalers") => "HorizontalPodAutoscaler",
        ("", "pods") if name.is_none() => "Pod",
        // Cluster-scoped: `/api/v1/namespaces[/NAME]`.
        ("", "namespaces") if ns.is_none() => "Namespace",
        ("networking.k8s.io", "networkpolicies") => "NetworkPolicy",
        _ => return None,
    };
    if scale && group != "apps" {
        return None;
    }
    Some(Target {
        group,
        plural: plural.to_string(),
        kind: kind.to_string(),
        ns,
        name,
        scale,
    })
}

pub(super) fn resource_name(t: &Target) -> String {
    if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

pub(super) fn details(t: &Target) -> Value {
    json!({"name": t.name, "group": t.group, "kind": t.plural})
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (c, None) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

pub(super) enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

pub(super) fn parse_selector(s: &str) -> Result<Vec<Req>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut cur) = (0, String::new());
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    let valid = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    let mut out = Vec::new();
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let set = |p: &str, op: &str| -> Option<(String, Vec<String>)> {
            let (k, rest) = p.split_once(op)?;
            let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            Some((
                k.trim().to_string(),
                inner.split(',').map(|v| v.trim().to_string()).collect(),
            ))
        };
        let r = if let Some((k, vs)) = set(p, " notin ") {
            Req::NotIn(k, vs)
        } else if let Some((k, vs)) = set(p, " in ") {
            Req::In(k, vs)
        } else if let Some((k, v)) = p.split_once("!=") {
            Req::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            Req::Eq(k.trim().into(), v.trim().into())
        } else if let Some(k) = p.strip_prefix('!') {
            Req::NotExists(k.trim().into())
        } else {
            Req::Exists(p.into())
        };
        let k = match &r {
            Req::Eq(k, _)
            | Req::Ne(k, _)
            | Req::In(k, _)
            | Req::NotIn(k, _)
            | Req::Exists(k)
            | Req::NotExists(k) => k,
        };
        if !valid(k) {
            return Err(format!(
                "unable to parse requirement: invalid label key {k:?}"
            ));
        }
        out.push(r);
    }
    Ok(out)
}

pub(super) fn matches(reqs: &[Req], labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k) == Some(v),
        Req::Ne(k, v) => get(k) != Some(v),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    })
}

pub(super) fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn scale_of(v: &Value) -> Value {
    let labels = v
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let sel: Vec<String> = labels
        .iter()
        .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
        .collect();
    let mut status = json!({"selector": sel.join(",")});
    let r = int(v, "/status/replicas");
    if r != 0 {
        status["replicas"] = json!(r);
    }
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": v["metadata"]["name"], "namespace": v["metadata"]["namespace"], "uid": v["metadata"]["uid"],
                     "resourceVersion": v["metadata"]["resourceVersion"], "creationTimestamp": v["metadata"]["creationTimestamp"]},
        // ScaleSpec.replicas is omitempty: a Scale at 0 has `"spec": {}`.
        "spec": match int(v, "/spec/replicas") { 0 => json!({}), n => json!({"replicas": n}) },
        "status": status,
    })
}

fn pods_of(v: &Value) -> Vec<Value> {
    let kind = v["kind"].as_str().unwrap_or("");
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let ns = &v["metadata"]["namespace"];
    let labels = v
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    let (n, ready) = (int(v, "/status/replicas"), int(v, "/status/readyReplicas"));
    (0..n)
        .map(|i| {
            let pod = if kind == "StatefulSet" { format!("{name}-{i}") } else { format!("{name}-7c9d8f6b5-{i:05}") };
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": pod, "namespace": ns, "uid": format!("pod-{pod}"), "resourceVersion": "1", "labels": labels},
                   "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
                   "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if i < ready { "True" } else { "False" }}]}})
        })
        .collect()
}

pub(super) async fn handle(
    req: Request<Incoming>,
    st: Arc<Mutex<State>>,
    opts: Arc<FakeOptions>,
) -> Response<Full<Bytes>> {
    if !opts.latency.is_zero() {
        tokio::time::sleep(opts.latency).await;
    }
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let ctype = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut guard = st.lock().unwrap();
    let resp = if auth != format!("Bearer {}", opts.token) {
        status(401, "Unauthorized", "Unauthorized".into(), None)
    } else {
        route(&mut guard, &method, &path, &query, &ctype, &body)
    };
    let code = resp.status().as_u16();
    guard.requests.push(FakeRequest {
        method,
        path,
        query,
        body,
        status: code,
    });
    resp
}

fn route(
    st: &mut State,
    method: &str,
    path: &str,
    query: &str,
    ctype: &str,
    body: &str,
) -> Response<Full<Bytes>> {
    if path == "/version" {
        return respond(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}),
        );
    }
    let Some(t) = parse_path(path) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            None,
        );
    };
    let verb = match (method, &t.name) {
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("PUT", Some(_)) => "update",
        ("PATCH", Some(_)) => "patch",
        ("POST", None) if !t.scale => "create",
        ("DELETE", Some(_)) if !t.scale => "delete",
        _ => {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".to_string(),
                None,
            )
        }
    };
    let resource = if t.scale {
        format!("{}/scale", t.plural)
    } else {
        t.plural.clone()
    };
    if st.forbidden.contains(&(verb.to_string(), resource.clone())) {
        let who = "User \"system:serviceaccount:drctl:drctl\"";
        let scope = match &t.ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        let obj = match &t.name {
            Some(n) => format!("{} \"{n}\" is forbidden", resource_name(&t)),
            None => format!("{} is forbidden", resource_name(&t)),
        };
        let msg = format!(
            "{obj}: {who} cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
            t.group
        );
        return status(403, "Forbidden", msg, Some(details(&t)));
    }
    match verb {
        "create" => return super::lifecycle::create(st, &t, body),
        "delete" => return super::lifecycle::delete(st, &t),
        _ => {}
    }
    if verb == "list" {
        let sel = match parse_selector(&query_param(query, "labelSelector").unwrap_or_default()) {
            Ok(s) => s,
            Err(e) => return status(400, "BadRequest", e, None),
        };
        let mut items = Vec::new();
        for ((kind, ns, _), o) in &st.objects {
            if t.ns.as_ref().is_some_and(|n| n != ns) {
                continue;
            }
            if t.kind == "Pod" {
                if super::is_workload(kind) {
                    items.extend(
                        pods_of(&o.value)
                            .into_iter()
                            .filter(|p| matches(&sel, &p["metadata"]["labels"])),
                    );
                }
            } else if *kind == t.kind
                && matches(
                    &sel,
                    o.value.pointer("/metadata/labels").unwrap_or(&Value::Null),
                )
            {
                items.push(o.value.clone());
            }
        }
        let api_version = super::lifecycle::api_version(t.group);
        return respond(
            200,
            json!({"kind": format!("{}List", t.kind), "apiVersion": api_version,
                                   "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
        );
    }
    // Namespaces are cluster-scoped: stored under namespace "".
    let ns =
        t.ns.clone()
            .or_else(|| (t.kind == "Namespace").then(String::new));
    let (Some(ns), Some(name)) = (ns, t.name.clone()) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            None,
        );
    };
    let k = key(&t.kind, &ns, &name);
    if !st.objects.contains_key(&k) {
        return status(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource_name(&t)),
            Some(details(&t)),
        );
    }
    if verb == "get" {
        let v = &st.objects[&k].value;
        return respond(200, if t.scale { scale_of(v) } else { v.clone() });
    }
    // Writes.
    if ctype.starts_with("application/apply-patch") {
        return status(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json".to_string(), None);
    }
    let Ok(patch) = serde_json::from_str::<Value>(body) else {
        return status(
            400,
            "BadRequest",
            "the request body is not valid JSON".into(),
            None,
        );
    };
    let current = st.objects[&k].value.clone();
    let base = if t.scale {
        scale_of(&current)
    } else {
        current.clone()
    };
    let mut new = if verb == "patch" {
        let mut b = base.clone();
        merge(&mut b, &patch);
        b
    } else {
        patch.clone()
    };
    // A resourceVersion in the body is a precondition.
    let wanted_rv = if verb == "patch" {
        patch.pointer("/metadata/resourceVersion")
    } else {
        new.pointer("/metadata/resourceVersion")
    }
    .and_then(Value::as_str)
    .map(str::to_string);
    if wanted_rv.is_some() && st.objects[&k].pending_conflicts > 0 {
        let rv = st.next_rv();
        let o = st.objects.get_mut(&k).unwrap();
        o.pending_conflicts -= 1;
        o.value["metadata"]["resourceVersion"] = json!(rv);
    }
    let cur_rv = st.objects[&k].value["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if wanted_rv.as_ref().is_some_and(|w| *w != cur_rv) {
        return status(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", resource_name(&t)), Some(details(&t)));
    }
    let rv = st.next_rv();
    let o = st.objects.get_mut(&k).unwrap();
    if t.scale {
        let Some(n) = new
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .filter(|n| *n >= 0)
        else {
            return status(422, "Invalid", format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: must be greater than or equal to 0"), Some(details(&t)));
        };
        set_spec_replicas(&mut o.value, n, rv);
        o.client_writes += 1;
        return respond(200, scale_of(&o.value));
    }
    // The main resource: server-managed fields and status are kept.
    for f in [
        "uid",
        "creationTimestamp",
        "generation",
        "name",
        "namespace",
    ] {
        new["metadata"][f] = current["metadata"][f].clone();
    }
    new["status"] = current["status"].clone();
    if new["spec"] != current["spec"] {
        new["metadata"]["generation"] = json!(int(&current, "/metadata/generation") + 1);
    }
    new["metadata"]["resourceVersion"] = json!(rv);
    o.value = new.clone();
    o.client_writes += 1;
    respond(200, new)
}
