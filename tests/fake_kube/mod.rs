//! A FAKE Kubernetes API server for drctl's tests. No real API server can
//! run on these machines (no kind/k3s, no container engine), so this one
//! implements, with the real paths, object shapes and status bodies, what
//! drctl's kube actions use:
//!
//! - HTTPS with a CA generated at start (openssl CLI) and bearer-token auth
//!   (401 `Unauthorized` otherwise);
//! - `apps/v1` Deployments and StatefulSets: GET, LIST (namespaced and
//!   cluster-wide, `labelSelector` with `=`, `==`, `!=`, `in`, `notin`,
//!   existence), PUT, PATCH (JSON merge patch; strategic merge is treated as
//!   merge, which is exact for the scalar fields drctl writes; apply patches
//!   get 415);
//! - the `/scale` subresource returning a real `autoscaling/v1` Scale;
//! - `autoscaling/v2` HorizontalPodAutoscalers (GET, LIST, PUT, PATCH);
//! - create (POST) and DELETE of Namespaces, NetworkPolicies, Deployments
//!   and StatefulSets with AlreadyExists / NotFound / Terminating semantics
//!   (see `lifecycle.rs`); NetworkPolicies are stored, never enforced;
//! - pod lists synthesized from workload status (Ready condition);
//! - one global resourceVersion; a write carrying a stale resourceVersion
//!   gets 409 Conflict; `generation` moves with spec changes;
//! - 403 Forbidden and 404 NotFound in the API server's own wording;
//! - a workload controller whose status fields move apart, as the real ones
//!   do: a new generation is observed a tick before pods change, pods are
//!   created a few per tick, turn Ready a tick later and Available a tick
//!   after that (zero-valued status fields omitted, as the API does),
//!   and an HPA controller that reverts manual scaling to
//!   clamp(recommendation, min, max) and stays idle at 0 replicas.
//!
//! Not covered: watch (drctl polls), admission, defaulting beyond the above,
//! scheduling, real pods, server-side apply, field selectors, pagination.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

mod api;
mod lifecycle;

pub struct FakeOptions {
    /// Controller period.
    pub tick: Duration,
    /// Pods that become (un)ready per tick and workload.
    pub ready_per_tick: i64,
    /// Added before every response (a modelled API round trip).
    pub latency: Duration,
    pub token: String,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            tick: Duration::from_millis(20),
            ready_per_tick: 1,
            latency: Duration::ZERO,
            token: "fake-token".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub status: u16,
}

type Key = (String, String, String); // (Kind, namespace, name)

struct Obj {
    value: Value,
    /// HPA only: what the metrics would recommend.
    recommended: i64,
    client_writes: usize,
    pending_conflicts: u32,
    /// Namespace only: controller ticks left before a deleted namespace
    /// disappears (`None`: not deleted).
    terminating: Option<u32>,
}

impl Obj {
    fn new(value: Value) -> Obj {
        Obj {
            value,
            recommended: 0,
            client_writes: 0,
            pending_conflicts: 0,
            terminating: None,
        }
    }
}

/// Kinds the workload controller and the pod list act on.
fn is_workload(kind: &str) -> bool {
    kind == "Deployment" || kind == "StatefulSet"
}

#[derive(Default)]
struct State {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Obj>,
    forbidden: HashSet<(String, String)>,
    paused: bool,
    requests: Vec<FakeRequest>,
}

impl State {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }
}

pub struct KubeFake {
    state: Arc<Mutex<State>>,
    port: u16,
    ca_pem: String,
    token: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn tls_config(dir: &Path) -> (Arc<rustls::ServerConfig>, String) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=fake-kube-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("srv.crt"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("srv.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    (Arc::new(cfg), ca_pem)
}

impl KubeFake {
    pub fn start(opts: FakeOptions) -> KubeFake {
        let dir = tempfile::tempdir().unwrap();
        let (tls, ca_pem) = tls_config(dir.path());
        let state = Arc::new(Mutex::new(State::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let token = opts.token.clone();
        let opts = Arc::new(opts);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                let ctl_state = st.clone();
                let ctl_opts = opts.clone();
                tokio::spawn(async move {
                    let mut t = tokio::time::interval(ctl_opts.tick);
                    loop {
                        t.tick().await;
                        controllers(&mut ctl_state.lock().unwrap(), ctl_opts.ready_per_tick);
                    }
                });
                loop {
                    let accepted = tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => a,
                    };
                    let Ok((tcp, _)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    let st = st.clone();
                    let opts = opts.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let svc = hyper::service::service_fn(move |req| {
                            let st = st.clone();
                            let opts = opts.clone();
                            async move { Ok::<_, Infallible>(api::handle(req, st, opts).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        });
        KubeFake {
            state,
            port,
            ca_pem,
            token,
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    pub fn write_kubeconfig(&self, path: &Path, context: &str) {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: {context}\n  user:\n    token: {}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\ncurrent-context: {context}\n",
            self.url(),
            self.token
        );
        std::fs::write(path, text).unwrap();
    }

    pub fn add_workload(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
        replicas: i64,
    ) {
        let mut st = self.state.lock().unwrap();
        st.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", st.uid);
        let rv = st.next_rv();
        let mut l = Map::new();
        l.insert("app".into(), json!(name));
        for (k, v) in labels {
            l.insert((*k).into(), json!(v));
        }
        let mut spec = json!({
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": l}, "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}},
        });
        if kind == "StatefulSet" {
            spec["serviceName"] = json!(name);
        }
        let mut v = json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": rv, "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z", "labels": l},
            "spec": spec,
        });
        set_status(&mut v, kind, Counts::settled(1, replicas));
        lifecycle::ensure_namespace(&mut st, ns);
        st.objects.insert(key(kind, ns, name), Obj::new(v));
    }

    /// An HPA whose metrics recommend `recommended` replicas.
    #[allow(clippy::too_many_arguments)] // mirrors the HPA spec fields one to one
    pub fn add_hpa(
        &self,
        ns: &str,
        name: &str,
        target_kind: &str,
        target_name: &str,
        min: i64,
        max: i64,
        recommended: i64,
    ) {
        let mut st = self.state.lock().unwrap();
        let rv = st.next_rv();
        let v = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": ns, "uid": format!("hpa-{ns}-{name}"), "resourceVersion": rv,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": target_kind, "name": target_name},
                     "minReplicas": min, "maxReplicas": max,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            "status": {"desiredReplicas": 0},
        });
        lifecycle::ensure_namespace(&mut st, ns);
        st.objects.insert(
            key("HorizontalPodAutoscaler", ns, name),
            Obj {
                recommended,
                ..Obj::new(v)
            },
        );
    }

    pub fn workload(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&key(kind, ns, name))
            .map(|o| o.value.clone())
    }

    pub fn hpa(&self, ns: &str, name: &str) -> Option<Value> {
        self.workload("HorizontalPodAutoscaler", ns, name)
    }

    /// Someone else (an operator, another controller) changes the count.
    pub fn set_replicas(&self, kind: &str, ns: &str, name: &str, replicas: i64) {
        let mut st = self.state.lock().unwrap();
        let rv = st.next_rv();
        let o = st.objects.get_mut(&key(kind, ns, name)).expect("workload");
        set_spec_replicas(&mut o.value, replicas, rv);
    }

    pub fn forbid(&self, verb: &str, resource: &str) {
        self.state
            .lock()
            .unwrap()
            .forbidden
            .insert((verb.into(), resource.into()));
    }

    pub fn inject_conflicts(&self, kind: &str, ns: &str, name: &str, n: u32) {
        self.state
            .lock()
            .unwrap()
            .objects
            .get_mut(&key(kind, ns, name))
            .expect("object")
            .pending_conflicts = n;
    }

    pub fn set_controller_paused(&self, paused: bool) {
        self.state.lock().unwrap().paused = paused;
    }

    pub fn requests(&self) -> Vec<FakeRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn writes_to(&self, kind: &str, ns: &str, name: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&key(kind, ns, name))
            .map(|o| o.client_writes)
            .unwrap_or(0)
    }
}

impl Drop for KubeFake {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An API server that accepts connections and never answers.
pub struct BlackHole {
    port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
            }
        });
        BlackHole {
            port,
            _thread: thread,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

fn key(kind: &str, ns: &str, name: &str) -> Key {
    (kind.to_string(), ns.to_string(), name.to_string())
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// A workload's status counters, as the controller tracks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    observed: i64,
    replicas: i64,
    updated: i64,
    ready: i64,
    available: i64,
}

impl Counts {
    fn of(v: &Value) -> Self {
        Counts {
            observed: int(v, "/status/observedGeneration"),
            replicas: int(v, "/status/replicas"),
            updated: int(v, "/status/updatedReplicas"),
            ready: int(v, "/status/readyReplicas"),
            available: int(v, "/status/availableReplicas"),
        }
    }

    /// Settled at `n` replicas for generation `g`.
    fn settled(g: i64, n: i64) -> Self {
        Counts {
            observed: g,
            replicas: n,
            updated: n,
            ready: n,
            available: n,
        }
    }

    /// One controller tick towards `spec` for `generation`, in the order
    /// the real controllers move: the new generation is observed first (the
    /// counters still describe the old spec), then pods are created or
    /// deleted `per_tick` at a time (`replicas`, `updatedReplicas`), a new
    /// pod turns Ready one tick after it was created and Available one tick
    /// after that (minReadySeconds); deleted pods stop counting at once.
    fn tick(self, generation: i64, spec: i64, per_tick: i64) -> Self {
        if self.observed < generation {
            return Counts {
                observed: generation,
                ..self
            };
        }
        let updated = self.updated + (spec - self.updated).clamp(-per_tick, per_tick);
        let ready =
            (self.ready + (self.updated - self.ready).clamp(-per_tick, per_tick)).min(updated);
        let available =
            (self.available + (self.ready - self.available).clamp(-per_tick, per_tick)).min(ready);
        Counts {
            observed: generation,
            replicas: updated,
            updated,
            ready,
            available,
        }
    }
}

/// Writes a workload's status the way the API serializes it: zero-valued
/// integers are omitted.
fn set_status(v: &mut Value, kind: &str, c: Counts) {
    let mut s = Map::new();
    // StatefulSetStatus.replicas and .availableReplicas have no omitempty
    // in the API's Go types; every other status integer does.
    let always = |k: &str| kind == "StatefulSet" && (k == "replicas" || k == "availableReplicas");
    let mut put = |k: &str, n: i64| {
        if n != 0 || always(k) {
            s.insert(k.into(), json!(n));
        }
    };
    put("observedGeneration", c.observed);
    put("replicas", c.replicas);
    put("readyReplicas", c.ready);
    put("updatedReplicas", c.updated);
    put("availableReplicas", c.available);
    if kind == "StatefulSet" {
        put("currentReplicas", c.ready);
    }
    v["status"] = Value::Object(s);
}

fn set_spec_replicas(v: &mut Value, replicas: i64, rv: String) {
    if int(v, "/spec/replicas") != replicas {
        v["spec"]["replicas"] = json!(replicas);
        let g = int(v, "/metadata/generation") + 1;
        v["metadata"]["generation"] = json!(g);
    }
    v["metadata"]["resourceVersion"] = json!(rv);
}

fn controllers(st: &mut State, per_tick: i64) {
    if st.paused {
        return;
    }
    // HPAs first: they decide spec.replicas of their targets.
    let hpas: Vec<Key> = st
        .objects
        .keys()
        .filter(|k| k.0 == "HorizontalPodAutoscaler")
        .cloned()
        .collect();
    for hk in hpas {
        let (tkind, tname, min, max, rec) = {
            let h = &st.objects[&hk];
            let s = &h.value["spec"];
            (
                s["scaleTargetRef"]["kind"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                s["scaleTargetRef"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                s["minReplicas"].as_i64().unwrap_or(1),
                s["maxReplicas"].as_i64().unwrap_or(1),
                h.recommended,
            )
        };
        let tk = key(&tkind, &hk.1, &tname);
        let Some(cur) = st.objects.get(&tk).map(|o| int(&o.value, "/spec/replicas")) else {
            continue;
        };
        if cur == 0 {
            continue; // "scaling is disabled since the replica count of the target is zero"
        }
        let desired = rec.clamp(min, max.max(min));
        if cur != desired {
            let rv = st.next_rv();
            set_spec_replicas(&mut st.objects.get_mut(&tk).unwrap().value, desired, rv);
        }
        let status = json!({"currentReplicas": cur, "desiredReplicas": desired});
        if st.objects[&hk].value["status"] != status {
            let rv = st.next_rv();
            let h = &mut st.objects.get_mut(&hk).unwrap().value;
            h["status"] = status;
            h["metadata"]["resourceVersion"] = json!(rv);
        }
    }
    lifecycle::finalize_namespaces(st);
    let workloads: Vec<Key> = st
        .objects
        .keys()
        .filter(|k| is_workload(&k.0))
        .cloned()
        .collect();
    for k in workloads {
        let v = &st.objects[&k].value;
        let spec = int(v, "/spec/replicas");
        let generation = int(v, "/metadata/generation");
        let counts = Counts::of(v).tick(generation, spec, per_tick);
        let mut next = v.clone();
        set_status(&mut next, &k.0, counts);
        if next["status"] != v["status"] {
            let rv = st.next_rv();
            next["metadata"]["resourceVersion"] = json!(rv);
            st.objects.get_mut(&k).unwrap().value = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::api::{matches, merge, parse_selector, percent_decode, query_param};
    use super::*;

    #[test]
    fn selectors() {
        let l = json!({"app": "web", "tier": "critical"});
        for (s, want) in [
            ("tier=critical", true),
            ("tier==critical,app=web", true),
            ("tier!=critical", false),
            ("tier in (a, critical)", true),
            ("tier notin (critical)", false),
            ("app", true),
            ("!app", false),
            ("missing", false),
            ("", true),
        ] {
            assert_eq!(matches(&parse_selector(s).unwrap(), &l), want, "{s}");
        }
        assert!(parse_selector("a b=c").is_err());
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_param(
                "labelSelector=tier%3Dcritical%2Capp%21%3Dx",
                "labelSelector"
            )
            .unwrap(),
            "tier=critical,app!=x"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn merge_patch_semantics() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge(&mut t, &json!({"b": {"c": null, "e": 4}, "f": [1]}));
        assert_eq!(t, json!({"a": 1, "b": {"d": 3, "e": 4}, "f": [1]}));
    }

    #[test]
    fn controller_moves_readiness_and_hpa_clamps() {
        let mut st = State::default();
        let f = KubeFake {
            state: Arc::new(Mutex::new(State::default())),
            port: 0,
            ca_pem: String::new(),
            token: String::new(),
            _dir: tempfile::tempdir().unwrap(),
            stop: None,
            thread: None,
        };
        f.add_workload("Deployment", "ns", "web", &[], 1);
        f.add_hpa("ns", "web", "Deployment", "web", 2, 5, 3);
        std::mem::swap(&mut st, &mut f.state.lock().unwrap());
        let counts = |st: &State| Counts::of(&st.objects[&key("Deployment", "ns", "web")].value);
        controllers(&mut st, 1);
        let w = &st.objects[&key("Deployment", "ns", "web")].value;
        assert_eq!(int(w, "/spec/replicas"), 3, "HPA sets clamp(3, 2, 5)");
        // The new generation is observed before any pod changes.
        assert_eq!(
            counts(&st),
            Counts {
                observed: 2,
                ..Counts::settled(1, 1)
            }
        );
        controllers(&mut st, 1);
        assert_eq!(
            counts(&st),
            Counts {
                observed: 2,
                replicas: 2,
                updated: 2,
                ready: 1,
                available: 1
            },
            "a pod is created before it is ready"
        );
        controllers(&mut st, 1);
        assert_eq!(
            counts(&st),
            Counts {
                observed: 2,
                replicas: 3,
                updated: 3,
                ready: 2,
                available: 1
            },
            "ready trails creation, available trails ready"
        );
        for _ in 0..3 {
            controllers(&mut st, 1);
        }
        assert_eq!(counts(&st), Counts::settled(2, 3));
        // At 0 replicas the HPA stands still.
        let rv = st.next_rv();
        set_spec_replicas(
            &mut st
                .objects
                .get_mut(&key("Deployment", "ns", "web"))
                .unwrap()
                .value,
            0,
            rv,
        );
        for _ in 0..4 {
            controllers(&mut st, 1);
        }
        let w = &st.objects[&key("Deployment", "ns", "web")].value;
        assert_eq!(int(w, "/spec/replicas"), 0);
        assert!(
            w["status"].get("readyReplicas").is_none(),
            "zero omitted: {w}"
        );
    }
}
