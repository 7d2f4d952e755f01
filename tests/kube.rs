//! Kubernetes actions against the fake API server (`fake_kube.rs`; no real
//! API server can run on these machines). Two fakes play the primary and
//! the DR cluster; drctl runs as the real binary with kubeconfigs carrying
//! the fakes' CA and tokens, so TLS, auth, `/scale`, HPAs, 409s, 403s and
//! 404s go through kube-rs exactly as they would against a cluster.

use std::process::Stdio;
use std::time::Duration;

use drctl_tests::fake_kube::{BlackHole, FakeOptions, KubeFake};
use drctl_tests::{wait_until, Work};
use serde_json::Value;

/// The selected workloads (tier=critical) and one that is not selected.
fn populate(f: &KubeFake, web: i64, db: i64, api: i64) {
    f.add_workload("Deployment", "shop", "web", &[("tier", "critical")], web);
    f.add_workload("StatefulSet", "shop", "db", &[("tier", "critical")], db);
    f.add_workload("Deployment", "billing", "api", &[("tier", "critical")], api);
    f.add_workload("Deployment", "shop", "batch", &[("tier", "batch")], 2);
}

struct Regions {
    w: Work,
    primary: KubeFake,
    dr: KubeFake,
}

impl Regions {
    fn new(dr_opts: FakeOptions) -> Regions {
        let primary = KubeFake::start(FakeOptions::default());
        let dr = KubeFake::start(dr_opts);
        populate(&primary, 10, 3, 4);
        populate(&dr, 2, 1, 1);
        let w = Work::new();
        primary.write_kubeconfig(&w.path().join("primary.kubeconfig"), "primary");
        dr.write_kubeconfig(&w.path().join("dr.kubeconfig"), "dr");
        let r = Regions { w, primary, dr };
        r.write_env("primary.kubeconfig");
        r
    }

    /// The environment file; `primary_kubeconfig` lets a test point the
    /// primary region somewhere else (a dead API).
    fn write_env(&self, primary_kubeconfig: &str) {
        let dir = self.w.path().display();
        self.w.write(
            "env.yaml",
            &format!(
                "name: shop\nactive_region: primary\nregions:\n  primary:\n    kube:\n      kubeconfig: {dir}/{primary_kubeconfig}\n      timeout: 1s\n      workloads:\n        - namespaces: [shop, billing]\n          selector: tier=critical\n  dr:\n    kube:\n      kubeconfig: {dir}/dr.kubeconfig\n      timeout: 2s\n      workloads:\n        - namespaces: [shop, billing]\n          selector: tier=critical\n"
            ),
        );
    }

    /// The primary region dies: its API accepts connections and hangs.
    fn kill_primary(&self) -> BlackHole {
        let hole = BlackHole::start();
        let kc = std::fs::read_to_string(self.w.path().join("primary.kubeconfig")).unwrap();
        self.w.write(
            "dead.kubeconfig",
            &kc.replace(&self.primary.url(), &hole.url()),
        );
        self.write_env("dead.kubeconfig");
        hole
    }

    fn run(&self, runbook: &str, text: &str) -> (drctl_tests::Out, String) {
        self.w.write(runbook, text);
        let o = self.w.run(&[
            "run", runbook, "--env", "env.yaml", "--region", "dr", "--yes",
        ]);
        let run = self.w.runs().pop().unwrap_or_default();
        (o, run)
    }

    fn spec(&self, f: &KubeFake, kind: &str, ns: &str, name: &str) -> i64 {
        f.workload(kind, ns, name).expect("workload")["spec"]["replicas"]
            .as_i64()
            .unwrap_or(-1)
    }

    fn ready(&self, f: &KubeFake, kind: &str, ns: &str, name: &str) -> i64 {
        f.workload(kind, ns, name).expect("workload")["status"]["readyReplicas"]
            .as_i64()
            .unwrap_or(0)
    }

    fn dr_writes(&self) -> usize {
        [
            ("Deployment", "shop", "web"),
            ("StatefulSet", "shop", "db"),
            ("Deployment", "billing", "api"),
            ("Deployment", "shop", "batch"),
        ]
        .iter()
        .map(|(k, n, w)| self.dr.writes_to(k, n, w))
        .sum()
    }
}

const SCALE_PRIMARY: &str = "name: scale-dr\nsteps:\n  - id: scale\n    action: kube.scale\n    timeout: 60s\n    with:\n      region: dr\n      replicas: primary\n";

#[test]
fn scale_to_primary_capacity_waits_until_ready_and_reruns_as_noop() {
    let r = Regions::new(FakeOptions::default());
    let (o, run) = r.run("scale.yaml", SCALE_PRIMARY);
    assert_eq!(o.code, 0, "{o:?}");
    let out = r.w.outputs(&run, "scale");
    assert_eq!(out["targets"]["shop/Deployment/web"], 10, "{out}");
    assert_eq!(out["targets"]["shop/StatefulSet/db"], 3, "{out}");
    assert_eq!(out["targets"]["billing/Deployment/api"], 4, "{out}");
    assert!(
        out["targets"].get("shop/Deployment/batch").is_none(),
        "{out}"
    );
    assert_eq!(
        out["previous"]["shop/Deployment/web"]["replicas"], 2,
        "{out}"
    );
    assert_eq!(out["changed"], 3, "{out}");
    assert!(
        out["capacity_source"]
            .as_str()
            .unwrap()
            .contains("read live"),
        "{out}"
    );
    // Waited for readiness, not just for the write.
    assert_eq!(r.ready(&r.dr, "Deployment", "shop", "web"), 10);
    assert_eq!(r.ready(&r.dr, "StatefulSet", "shop", "db"), 3);
    assert_eq!(
        r.spec(&r.dr, "Deployment", "shop", "batch"),
        2,
        "unselected untouched"
    );
    // Through the /scale subresource, not by patching the Deployment.
    assert!(r.dr.requests().iter().any(|q| q.method == "PATCH"
        && q.path == "/apis/apps/v1/namespaces/shop/deployments/web/scale"
        && q.body.contains("resourceVersion")));
    assert!(r.dr.requests().iter().all(
        |q| !(q.method == "PATCH" && q.path == "/apis/apps/v1/namespaces/shop/deployments/web")
    ));

    let writes = r.dr_writes();
    let (o, run2) = r.run("scale.yaml", SCALE_PRIMARY);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(r.w.outputs(&run2, "scale")["changed"], 0);
    assert_eq!(r.dr_writes(), writes, "a re-run writes nothing");
}

#[test]
fn percentage_of_snapshot_when_the_primary_api_is_gone() {
    let r = Regions::new(FakeOptions::default());
    let snap = "name: snap\nsteps:\n  - id: snap\n    action: kube.snapshot\n    with:\n      region: primary\n";
    let (o, run) = r.run("snap.yaml", snap);
    assert_eq!(o.code, 0, "{o:?}");
    let out = r.w.outputs(&run, "snap");
    assert_eq!(out["total_replicas"], 17, "{out}");

    // The primary region dies: its API hangs.
    let _hole = r.kill_primary();
    let half = "name: scale-dr\nsteps:\n  - id: scale\n    action: kube.scale\n    timeout: 60s\n    with:\n      region: dr\n      replicas: \"50%\"\n";
    let (o, run) = r.run("half.yaml", half);
    assert_eq!(o.code, 0, "{o:?}");
    let out = r.w.outputs(&run, "scale");
    assert_eq!(out["targets"]["shop/Deployment/web"], 5, "{out}");
    assert_eq!(
        out["targets"]["shop/StatefulSet/db"], 2,
        "50% of 3 rounds up: {out}"
    );
    assert_eq!(out["targets"]["billing/Deployment/api"], 2, "{out}");
    let src = out["capacity_source"].as_str().unwrap();
    assert!(src.contains("snapshot"), "{src}");
    assert!(src.contains("live read of primary failed"), "{src}");

    // With live capacity required, the same step fails and says why.
    let live = half.replace(
        "replicas: \"50%\"",
        "replicas: primary\n      capacity_from: live",
    );
    let (o, run) = r.run("live.yaml", &live);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(r
        .w
        .step_error(&run, "scale")
        .contains("cannot read capacity live"));
}

#[test]
fn resume_after_kill_mid_wait_writes_nothing_twice() {
    let r = Regions::new(FakeOptions {
        tick: Duration::from_millis(150),
        ..FakeOptions::default()
    });
    r.w.write("scale.yaml", SCALE_PRIMARY);
    let mut child =
        r.w.cmd(&[
            "run",
            "scale.yaml",
            "--env",
            "env.yaml",
            "--region",
            "dr",
            "--yes",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn drctl");
    // All three writes are done and readiness is still climbing (one pod
    // per 150 ms tick: web needs over a second): the step is mid-wait.
    assert!(wait_until(Duration::from_secs(20), || r.dr_writes() == 3));
    assert!(r.ready(&r.dr, "Deployment", "shop", "web") < 10);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let run = r.w.runs().pop().expect("run");
    let o = r.w.run(&["resume", &run]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = r.w.outputs(&run, "scale");
    assert_eq!(
        out["previous"]["shop/Deployment/web"]["replicas"], 2,
        "{out}"
    );
    assert_eq!(out["targets"]["shop/Deployment/web"], 10, "{out}");
    assert_eq!(out["changed"], 0, "the resumed attempt only waited: {out}");
    assert_eq!(r.dr_writes(), 3, "no write repeated");
    assert_eq!(r.ready(&r.dr, "Deployment", "shop", "web"), 10);
    let st = r.w.run(&["status", &run]);
    assert_eq!(st.code, 0, "journal verifies: {st:?}");
}

const FAILOVER: &str = "name: kube-failover\nsteps:\n  - id: fence\n    action: kube.fence\n    timeout: 30s\n    with:\n      region: primary\n      within: 3s\n  - id: scale\n    action: kube.scale\n    needs: [fence]\n    timeout: 60s\n    with:\n      region: dr\n      replicas: primary\n  - id: check\n    action: kube.check\n    needs: [scale]\n    with:\n      region: dr\n";

#[test]
fn fence_then_scale_uses_the_counts_read_before_fencing() {
    let r = Regions::new(FakeOptions::default());
    let (o, run) = r.run("failover.yaml", FAILOVER);
    assert_eq!(o.code, 0, "{o:?}");
    let fence = r.w.outputs(&run, "fence");
    assert_eq!(fence["reachable"], true, "{fence}");
    assert_eq!(fence["pods_stopped"], true, "{fence}");
    assert_eq!(fence["previous"]["shop/Deployment/web"]["replicas"], 10);
    for (k, n, w) in [
        ("Deployment", "shop", "web"),
        ("StatefulSet", "shop", "db"),
        ("Deployment", "billing", "api"),
    ] {
        assert_eq!(r.spec(&r.primary, k, n, w), 0, "{n}/{w} fenced");
    }
    assert_eq!(r.spec(&r.primary, "Deployment", "shop", "batch"), 2);
    // The primary now runs 0, yet the DR side gets production capacity:
    // the fence recorded it.
    let scale = r.w.outputs(&run, "scale");
    assert_eq!(scale["targets"]["shop/Deployment/web"], 10, "{scale}");
    assert!(scale["capacity_source"].as_str().unwrap().contains("fence"));
    let check = r.w.outputs(&run, "check");
    assert_eq!(check["ready_pods"], 17, "{check}");
}

#[test]
fn fence_with_unreachable_primary_is_bounded_and_journaled() {
    let r = Regions::new(FakeOptions::default());
    let _hole = r.kill_primary();
    let (o, run) = r.run("failover.yaml", FAILOVER);
    let f = r.w.finished(&run, "fence");
    assert_eq!(f["status"], "succeeded", "best effort: {o:?}");
    assert_eq!(f["outputs"]["reachable"], false, "{f}");
    assert!(f["outputs"]["summary"]
        .as_str()
        .unwrap()
        .contains("not fenced"));
    // Bounded by `within: 3s` (not by the 30s step timeout).
    assert!(f["duration_ms"].as_u64().unwrap() < 10_000, "{f}");
    // No fence counts, no live primary and no scheduled snapshot: the
    // scale step refuses to guess production capacity.
    assert_eq!(o.code, 5, "{o:?}");
    let err = r.w.step_error(&run, "scale");
    assert!(err.contains("no capacity for region primary"), "{err}");

    // `required: true` turns the same situation into a failed step.
    let required = FAILOVER.replace("within: 3s", "within: 2s\n      required: true");
    let (o, run) = r.run("required.yaml", &required);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(r
        .w
        .step_error(&run, "fence")
        .contains("cannot fence region primary"));
}

#[test]
fn hpa_floor_is_raised_instead_of_fighting_the_autoscaler() {
    let r = Regions::new(FakeOptions::default());
    r.dr.add_hpa("shop", "web", "Deployment", "web", 2, 5, 2);
    let rb = "name: hpa\nsteps:\n  - id: scale\n    action: kube.scale\n    timeout: 60s\n    with:\n      region: dr\n      replicas: 8\n      workloads:\n        - namespace: shop\n          kind: Deployment\n          name: web\n";
    let (o, run) = r.run("hpa.yaml", rb);
    assert_eq!(o.code, 0, "{o:?}");
    let hpa = r.dr.hpa("shop", "web").unwrap();
    assert_eq!(hpa["spec"]["minReplicas"], 8, "{hpa}");
    assert_eq!(hpa["spec"]["maxReplicas"], 8, "max raised to fit: {hpa}");
    let out = r.w.outputs(&run, "scale");
    assert_eq!(
        out["previous"]["shop/Deployment/web"]["hpa"],
        serde_json::json!({"name": "web", "min_replicas": 2, "max_replicas": 5}),
        "{out}"
    );
    // The autoscaler keeps it there (it would have reverted a bare scale).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.spec(&r.dr, "Deployment", "shop", "web"), 8);
    assert_eq!(r.ready(&r.dr, "Deployment", "shop", "web"), 8);
}

#[test]
fn rbac_error_names_the_missing_verb_and_resource() {
    let r = Regions::new(FakeOptions::default());
    r.dr.forbid("patch", "deployments/scale");
    let (o, run) = r.run("scale.yaml", SCALE_PRIMARY);
    assert_eq!(o.code, 5, "{o:?}");
    let f = r.w.finished(&run, "scale");
    let msg = f["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("may not `patch` `deployments/scale` in API group \"apps\" in namespace `")
            && msg.contains("` in the `dr` cluster"),
        "{msg}"
    );
    let hint = f["error"]["hint"].as_str().unwrap_or("");
    assert!(
        hint.contains("grant verb `patch` on resource `deployments/scale`"),
        "{hint}"
    );
    assert!(
        o.stderr
            .contains("hint: grant verb `patch` on resource `deployments/scale`"),
        "{o:?}"
    );
}

#[test]
fn conflicts_are_retried_after_a_fresh_read() {
    let r = Regions::new(FakeOptions::default());
    r.dr.inject_conflicts("Deployment", "shop", "web", 2);
    let (o, _run) = r.run("scale.yaml", SCALE_PRIMARY);
    assert_eq!(o.code, 0, "{o:?}");
    let scale_path = "/apis/apps/v1/namespaces/shop/deployments/web/scale";
    let reqs = r.dr.requests();
    let conflicts = reqs
        .iter()
        .filter(|q| q.path == scale_path && q.status == 409)
        .count();
    assert_eq!(
        conflicts,
        2,
        "{:?}",
        reqs.iter()
            .map(|q| (&q.method, &q.path, q.status))
            .collect::<Vec<_>>()
    );
    assert_eq!(r.dr.writes_to("Deployment", "shop", "web"), 1);
    assert_eq!(r.spec(&r.dr, "Deployment", "shop", "web"), 10);
}

#[test]
fn missing_workload_names_namespace_kind_and_name() {
    let r = Regions::new(FakeOptions::default());
    let rb = "name: nf\nsteps:\n  - id: scale\n    action: kube.scale\n    with:\n      region: dr\n      replicas: 3\n      workloads:\n        - namespace: shop\n          kind: StatefulSet\n          name: nope\n";
    let (o, run) = r.run("nf.yaml", rb);
    assert_eq!(o.code, 5, "{o:?}");
    let e = r.w.step_error(&run, "scale");
    assert!(
        e.contains("StatefulSet shop/nope not found (404) in the `dr` cluster"),
        "{e}"
    );

    let none = rb.replace(
        "namespace: shop\n          kind: StatefulSet\n          name: nope",
        "namespace: shop\n          selector: tier=none",
    );
    let (o, run) = r.run("none.yaml", &none);
    assert_eq!(o.code, 5, "{o:?}");
    assert!(r
        .w
        .step_error(&run, "scale")
        .contains("selector `tier=none` matches no"));
}

#[test]
fn check_fails_while_pods_are_not_ready_and_plan_check_is_read_only() {
    let r = Regions::new(FakeOptions::default());
    r.dr.set_controller_paused(true);
    r.dr.set_replicas("Deployment", "shop", "web", 6);
    let rb =
        "name: chk\nsteps:\n  - id: check\n    action: kube.check\n    with:\n      region: dr\n";
    let (o, run) = r.run("check.yaml", rb);
    assert_eq!(o.code, 5, "{o:?}");
    let e = r.w.step_error(&run, "check");
    assert!(e.contains("shop/Deployment/web: 2/6 pods Ready"), "{e}");

    let before = r.dr_writes();
    r.w.write("scale.yaml", SCALE_PRIMARY);
    let p = r.w.run(&[
        "plan",
        "--check",
        "scale.yaml",
        "--env",
        "env.yaml",
        "--region",
        "dr",
    ]);
    assert_eq!(p.code, 0, "{p:?}");
    assert!(p.stdout.contains("shop/Deployment/web 6 -> 10"), "{p:?}");
    assert!(p.stdout.contains("shop/StatefulSet/db 1 -> 3"), "{p:?}");
    assert_eq!(r.dr_writes(), before, "plan --check writes nothing");
    r.dr.set_controller_paused(false);
    assert!(wait_until(Duration::from_secs(10), || {
        r.w.run(&[
            "run",
            "check.yaml",
            "--env",
            "env.yaml",
            "--region",
            "dr",
            "--yes",
        ])
        .code
            == 0
    }));
}

#[test]
fn tls_is_verified_and_cannot_be_switched_off() {
    let r = Regions::new(FakeOptions::default());
    // The DR kubeconfig, but trusting the primary's CA.
    let kc = std::fs::read_to_string(r.w.path().join("dr.kubeconfig")).unwrap();
    let other_ca = base64_of(&r.primary.ca_pem());
    let wrong = kc
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("certificate-authority-data:") {
                format!("    certificate-authority-data: {other_ca}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(r.w.path().join("dr.kubeconfig"), &wrong).unwrap();
    let (o, run) = r.run("scale.yaml", SCALE_PRIMARY);
    assert_eq!(o.code, 5, "{o:?}");
    let e = r.w.step_error(&run, "scale").to_lowercase();
    assert!(
        e.contains("certificate") || e.contains("unknownissuer"),
        "{e}"
    );
    assert_eq!(r.dr_writes(), 0);

    let insecure = kc.replace(
        "certificate-authority-data:",
        "insecure-skip-tls-verify: true\n    x-was-certificate-authority-data:",
    );
    std::fs::write(r.w.path().join("dr.kubeconfig"), insecure).unwrap();
    let (o, run) = r.run("scale.yaml", SCALE_PRIMARY);
    assert_eq!(o.code, 5, "a refused kubeconfig fails the run: {o:?}");
    assert!(
        r.w.step_error(&run, "scale")
            .contains("disables TLS verification"),
        "{}",
        r.w.step_error(&run, "scale")
    );
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn skip_unless_skips_kube_steps_without_a_kube_section() {
    let w = Work::new();
    w.write(
        "env.yaml",
        "name: lab\nactive_region: primary\nregions:\n  primary: {}\n  dr: {}\n",
    );
    w.write(
        "rb.yaml",
        "name: s\nsteps:\n  - id: scale\n    action: kube.scale\n    skip_unless: [target.kube]\n    with:\n      replicas: primary\n  - id: after\n    action: wait\n    needs: [scale]\n    with:\n      duration: 1ms\n",
    );
    let o = w.run(&[
        "run", "rb.yaml", "--env", "env.yaml", "--region", "dr", "--yes",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    let run = w.runs().pop().unwrap();
    let skipped: Vec<Value> = w
        .journal(&run)
        .into_iter()
        .filter(|r| r["type"] == "step_skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0]["reason"]
        .as_str()
        .unwrap()
        .contains("the environment has no `target.kube`"));
    assert_eq!(w.finished(&run, "after")["status"], "succeeded");
    let p = w.run(&["plan", "rb.yaml", "--env", "env.yaml", "--region", "dr"]);
    assert!(
        p.stdout
            .contains("skipped: the environment has no `target.kube`"),
        "{p:?}"
    );
}
