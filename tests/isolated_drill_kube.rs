//! Isolated drills with Kubernetes: the real lab (PostgreSQL 15 pair,
//! PowerDNS) and a FAKE Kubernetes API server per region (`fake_kube`; no
//! real API server can run here, and the fake stores NetworkPolicies
//! without enforcing them). The drill copies the DR region's workloads
//! into `drill-<run>` behind a default-deny NetworkPolicy, waits until the
//! copies are ready, and its teardown deletes the namespace; production
//! objects are never written. Then: kill -9 after the namespace is made,
//! followed by `drctl drills cleanup` or `drctl resume`; a foreign
//! namespace of the drill's name is refused and left alone; an RBAC 403 on
//! create fails the step precisely and the drill still tears down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use drctl_tests::fake_kube::{FakeOptions, FakeRequest, KubeFake};
use drctl_tests::{block_on, Lab};
use serde_json::{json, Value};

struct Kube {
    primary: KubeFake,
    dr: KubeFake,
}

/// The lab with a fake cluster per region (primary runs web=6, db=3; the
/// warm DR region 1 and 1) and an isolated drill definition.
fn setup(lab: &Lab) -> (Kube, PathBuf, PathBuf) {
    setup_with(lab, "")
}

fn setup_with(lab: &Lab, params: &str) -> (Kube, PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(lab.w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let primary = KubeFake::start(FakeOptions::default());
    let dr = KubeFake::start(FakeOptions::default());
    for (f, web, db) in [(&primary, 6, 3), (&dr, 1, 1)] {
        f.add_workload("Deployment", "shop", "web", &[("tier", "critical")], web);
        f.add_workload("StatefulSet", "shop", "db", &[("tier", "critical")], db);
        f.add_workload("Deployment", "shop", "batch", &[("tier", "low")], 2);
    }
    let dir = lab.w.path().display().to_string();
    primary.write_kubeconfig(&lab.w.path().join("primary.kubeconfig"), "primary");
    dr.write_kubeconfig(&lab.w.path().join("dr.kubeconfig"), "dr");
    let kube = |kc: &str| {
        format!("    kube:\n      kubeconfig: {dir}/{kc}\n      timeout: 2s\n      workloads:\n        - namespace: shop\n          selector: tier=critical\n")
    };
    let env = lab.env();
    let text = std::fs::read_to_string(&env).expect("env");
    let text = text
        .replace(
            "regions:\n  primary:\n",
            &format!("regions:\n  primary:\n{}", kube("primary.kubeconfig")),
        )
        .replace("\n  dr:\n", &format!("\n  dr:\n{}", kube("dr.kubeconfig")));
    std::fs::write(&env, text).expect("write env");
    let scratch = lab.w.path().join("scratch");
    let def = lab.w.write(
        "iso-kube-def.yaml",
        &format!(
            "name: lab-iso-kube\nrunbook: {}\nenvironment: {env}\nmode: isolated\nparams:\n  scratch: {}\n{params}targets: {{rto: 1m, rpo: 5s}}\n",
            drctl_tests::repo_root().join("runbooks/isolated-drill.yaml").display(),
            scratch.display()
        ),
    );
    (Kube { primary, dr }, def, scratch)
}

/// `(resourceVersion, spec.replicas)` of every production workload.
type Counts = Vec<(String, i64)>;

fn production(f: &KubeFake) -> Counts {
    [
        ("Deployment", "web"),
        ("StatefulSet", "db"),
        ("Deployment", "batch"),
    ]
    .iter()
    .map(|(k, n)| {
        let w = f.workload(k, "shop", n).expect("workload");
        (
            w["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
            w["spec"]["replicas"].as_i64().unwrap(),
        )
    })
    .collect()
}

fn assert_production_untouched(k: &Kube, before: &(Counts, Counts)) {
    assert_eq!(production(&k.primary), before.0, "primary region objects");
    assert_eq!(production(&k.dr), before.1, "DR region production objects");
    for f in [&k.primary, &k.dr] {
        for (kind, name) in [
            ("Deployment", "web"),
            ("StatefulSet", "db"),
            ("Deployment", "batch"),
        ] {
            assert_eq!(
                f.writes_to(kind, "shop", name),
                0,
                "{kind} shop/{name} written"
            );
        }
        let prod_writes: Vec<FakeRequest> = f
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET" && r.path.contains("/namespaces/shop/"))
            .collect();
        assert!(prod_writes.is_empty(), "{prod_writes:?}");
    }
}

/// The lab's production pair still streams (as drill.assert_production
/// requires, checked here independently).
fn assert_streaming(lab: &Lab) {
    let e = drctl::environment::load_environment(Path::new(&lab.env()))
        .expect("env")
        .0;
    let primary = drctl::topology::server_of(&e, "primary").unwrap();
    let n: i64 = block_on(async {
        let c = primary.connect(Duration::from_secs(5)).await.unwrap();
        c.query_one(
            "select count(*) from pg_stat_replication where state = 'streaming'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    });
    assert_eq!(n, 1, "the production standby streams");
}

fn scratch_empty(scratch: &Path) -> bool {
    std::fs::read_dir(scratch)
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

fn posts(f: &KubeFake) -> Vec<(String, Value)> {
    f.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| {
            (
                r.path.clone(),
                serde_json::from_str(&r.body).unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[test]
fn an_isolated_drill_copies_the_workloads_into_a_fenced_namespace_and_removes_it() {
    let lab = Lab::up();
    // The clone reachable beyond the drctl host's 127.0.0.1 (here another
    // loopback address standing in for the host's pod-facing one).
    let (k, def, scratch) = setup_with(
        &lab,
        "  clone_listen: 127.0.0.2\n  clone_advertise: 127.0.0.2\n  clone_allow: 127.0.0.2/32\n",
    );
    let before = (production(&k.primary), production(&k.dr));
    let d = lab.w.run(&["drill", def.to_str().unwrap(), "--yes"]);
    assert_eq!(d.code, 0, "{d:?}");
    let run = lab.last_run();
    let ns = drctl::kube::drillcopy::namespace_name(&run);
    let clone = lab.outputs(&run, "clone");
    let port = clone["port"].as_u64().unwrap();
    assert_eq!(clone["host"], "127.0.0.2", "{clone}");
    assert_eq!(
        clone["safety"]["listen_addresses"], "127.0.0.1,127.0.0.2",
        "{clone}"
    );
    // The smoke check reached it through the drill name at the advertised address.
    assert_eq!(
        lab.outputs(&run, "smoke")["address"],
        format!("127.0.0.2:{port}")
    );
    let copies = lab.outputs(&run, "kube-copies");
    assert_eq!(copies["namespace"], ns.as_str(), "{copies}");
    assert_eq!(
        copies["replicas"],
        json!({"shop/Deployment/web": 6, "shop/StatefulSet/db": 3}),
        "the counts the failover's kube.scale would choose (primary's)"
    );
    assert!(copies["ready_ms"].as_u64().is_some(), "{copies}");

    // What drctl created, in order: namespace, NetworkPolicy, then copies.
    let p = posts(&k.dr);
    let paths: Vec<&str> = p.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces".to_string(),
            format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"),
            format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            format!("/apis/apps/v1/namespaces/{ns}/statefulsets"),
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
        "the policy is created before any workload"
    );
    assert!(
        posts(&k.primary).is_empty(),
        "nothing created in the primary region"
    );
    let nsobj = &p[0].1;
    assert_eq!(nsobj["metadata"]["name"], ns.as_str());
    assert_eq!(
        nsobj["metadata"]["annotations"]["drctl.io/run-id"],
        run.as_str()
    );
    assert_eq!(
        nsobj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "drctl"
    );
    // The policy: every pod, both directions denied but DNS and the clone.
    assert_eq!(
        p[1].1["spec"],
        json!({
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [{"ipBlock": {"cidr": "127.0.0.2/32"}}],
                 "ports": [{"protocol": "TCP", "port": port}]},
            ],
        })
    );
    for (i, (name, replicas)) in [(2, ("web", 6)), (3, ("db", 3))] {
        let c = &p[i].1;
        assert_eq!(c["metadata"]["name"], name);
        assert_eq!(c["metadata"]["namespace"], ns.as_str());
        assert!(
            c["metadata"].get("uid").is_none() && c["metadata"].get("resourceVersion").is_none(),
            "{c}"
        );
        assert!(c.get("status").is_none(), "{c}");
        assert_eq!(c["metadata"]["labels"]["tier"], "critical");
        assert_eq!(c["spec"]["replicas"], replicas);
        assert_eq!(
            c["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "PGHOST", "value": "drill.lab.example."},
                   {"name": "PGPORT", "value": port.to_string()}])
        );
    }
    // The copies were read ready before the step succeeded.
    let ready_reads =
        k.dr.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains(&format!("/namespaces/{ns}/")))
            .count();
    assert!(ready_reads >= 2, "readiness polled");
    // Teardown deleted the namespace and waited until it was gone.
    let td = lab.outputs(&run, "teardown");
    assert_eq!(
        td["namespaces_deleted"],
        json!([format!("dr/{ns}")]),
        "{td}"
    );
    assert!(k.dr.namespace(&ns).is_none(), "namespace left");
    assert!(k.dr.objects_in(&ns).is_empty(), "copies left");
    assert_production_untouched(&k, &before);
    assert_streaming(&lab);
    assert!(scratch_empty(&scratch));
    // The app part is inside the RTO: smoke (where RTO ends) ran after it.
    let copies_end = lab.w.finished(&run, "kube-copies")["ts_ms"]
        .as_u64()
        .unwrap();
    let smoke_end = lab.w.finished(&run, "smoke")["ts_ms"].as_u64().unwrap();
    assert!(copies_end <= smoke_end);
}

#[test]
fn a_drill_killed_after_its_namespace_is_made_is_cleaned_up_by_cleanup_and_by_resume() {
    let lab = Lab::up();
    let (k, def, scratch) = setup(&lab);
    let before = (production(&k.primary), production(&k.dr));
    for by_resume in [false, true] {
        let killed = lab.drill_killed_at(&def, "kube-namespace-created");
        assert_eq!(killed.code, -1, "{killed:?}");
        let run = lab.last_run();
        let ns = drctl::kube::drillcopy::namespace_name(&run);
        assert!(k.dr.namespace(&ns).is_some(), "the kill left the namespace");
        let o = if by_resume {
            lab.w.run(&["resume", &run, "--yes"])
        } else {
            lab.w.run(&["drills", "cleanup", &run])
        };
        assert_eq!(o.code, 0, "resume={by_resume}: {o:?}");
        if !by_resume {
            assert!(
                o.stdout
                    .contains(&format!("drill namespace(s) deleted: dr/{ns}")),
                "{o:?}"
            );
        } else {
            // The resumed step finished the copies; the teardown removed them.
            assert_eq!(lab.w.finished(&run, "kube-copies")["status"], "succeeded");
        }
        assert!(
            k.dr.namespace(&ns).is_none(),
            "resume={by_resume}: namespace left"
        );
        assert!(k.dr.objects_in(&ns).is_empty());
        assert!(scratch_empty(&scratch), "resume={by_resume}: clone left");
        drctl::journal::verify(&lab.w.journal_bytes(&run)).expect("the journal verifies");
    }
    assert_production_untouched(&k, &before);
    assert_streaming(&lab);
}

#[test]
fn a_foreign_drill_namespace_is_refused_and_left_alone() {
    let lab = Lab::up();
    let (k, def, scratch) = setup(&lab);
    let killed = lab.drill_killed_at(&def, "kube-namespace-created");
    assert_eq!(killed.code, -1, "{killed:?}");
    let run = lab.last_run();
    let ns = drctl::kube::drillcopy::namespace_name(&run);
    // Someone else's namespace of that name (e.g. recreated by hand).
    k.dr.add_namespace(
        &ns,
        json!({"team": "other"}),
        json!({"owner": "someone-else"}),
    );
    let o = lab.w.run(&["resume", &run, "--yes"]);
    assert_ne!(o.code, 0, "{o:?}");
    let err = lab.error(&run, "kube-copies");
    assert!(err.contains(&format!("namespace {ns} exists")), "{err}");
    assert!(err.contains("is not this run's"), "{err}");
    assert_eq!(lab.w.finished(&run, "teardown")["status"], "succeeded");
    assert!(
        k.dr.namespace(&ns).is_some(),
        "a foreign namespace is never deleted"
    );
    assert!(
        !k.dr.requests().iter().any(|r| r.method == "DELETE"),
        "no delete request"
    );
    assert!(scratch_empty(&scratch));
    assert_streaming(&lab);
}

#[test]
fn a_forbidden_create_fails_the_copies_precisely_and_the_drill_still_tears_down() {
    let lab = Lab::up();
    let (k, def, scratch) = setup(&lab);
    let before = (production(&k.primary), production(&k.dr));
    k.dr.forbid("create", "statefulsets");
    let d = lab.w.run(&["drill", def.to_str().unwrap(), "--yes"]);
    assert_eq!(d.code, 5, "{d:?}");
    let run = lab.last_run();
    let ns = drctl::kube::drillcopy::namespace_name(&run);
    let err = lab.error(&run, "kube-copies");
    assert!(err.contains("forbidden (403)"), "{err}");
    assert!(
        err.contains("`create` `statefulsets` in API group \"apps\""),
        "{err}"
    );
    assert!(err.contains(&format!("in namespace `{ns}`")), "{err}");
    assert_eq!(lab.w.finished(&run, "teardown")["status"], "succeeded");
    assert!(
        k.dr.namespace(&ns).is_none(),
        "namespace left after a failed copy"
    );
    assert_production_untouched(&k, &before);
    assert!(scratch_empty(&scratch));
    assert_streaming(&lab);
}
