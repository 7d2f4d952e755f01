//! `kube.restore` against two fake Kubernetes API servers (`fake_kube`; no
//! real API server can run here): after a failover's `kube.fence` and
//! `kube.scale`, the counts and HPA bounds return to the values those
//! steps journaled, by compare-and-set; a count or bound someone changed
//! since is drift, refused before anything is written, unless `--force`.

use drctl_tests::fake_kube::{FakeOptions, KubeFake};
use drctl_tests::Work;

struct Regions {
    w: Work,
    primary: KubeFake,
    dr: KubeFake,
}

const WORKLOADS: [(&str, &str, &str); 3] = [
    ("Deployment", "shop", "web"),
    ("StatefulSet", "shop", "db"),
    ("Deployment", "billing", "api"),
];

fn populate(f: &KubeFake, web: i64, db: i64, api: i64) {
    f.add_workload("Deployment", "shop", "web", &[("tier", "critical")], web);
    f.add_workload("StatefulSet", "shop", "db", &[("tier", "critical")], db);
    f.add_workload("Deployment", "billing", "api", &[("tier", "critical")], api);
}

impl Regions {
    fn new() -> Regions {
        let primary = KubeFake::start(FakeOptions::default());
        let dr = KubeFake::start(FakeOptions::default());
        populate(&primary, 10, 3, 4);
        populate(&dr, 2, 1, 1);
        // An autoscaled workload in each region: its bounds are what the
        // failover changes (dr) or leaves (primary, idle at 0 once fenced).
        primary.add_hpa("billing", "api", "Deployment", "api", 2, 6, 4);
        dr.add_hpa("shop", "web", "Deployment", "web", 2, 5, 2);
        let w = Work::new();
        primary.write_kubeconfig(&w.path().join("primary.kubeconfig"), "primary");
        dr.write_kubeconfig(&w.path().join("dr.kubeconfig"), "dr");
        let dir = w.path().display().to_string();
        let kube = |kc: &str| {
            format!("    kube:\n      kubeconfig: {dir}/{kc}\n      timeout: 2s\n      workloads:\n        - namespaces: [shop, billing]\n          selector: tier=critical\n")
        };
        w.write(
            "env.yaml",
            &format!(
                "name: shop\nactive_region: primary\nregions:\n  primary:\n{}  dr:\n{}",
                kube("primary.kubeconfig"),
                kube("dr.kubeconfig")
            ),
        );
        Regions { w, primary, dr }
    }

    fn run(&self, runbook: &str, text: &str, extra: &[&str]) -> (drctl_tests::Out, String) {
        self.w.write(runbook, text);
        let mut args = vec![
            "run", runbook, "--env", "env.yaml", "--region", "dr", "--yes",
        ];
        args.extend(extra);
        let o = self.w.run(&args);
        let run = self.w.runs().pop().unwrap_or_default();
        (o, run)
    }

    fn spec(f: &KubeFake, kind: &str, ns: &str, name: &str) -> i64 {
        f.workload(kind, ns, name).expect("workload")["spec"]["replicas"]
            .as_i64()
            .unwrap_or(-1)
    }

    fn counts(f: &KubeFake) -> Vec<i64> {
        WORKLOADS
            .iter()
            .map(|(k, n, w)| Self::spec(f, k, n, w))
            .collect()
    }

    fn bounds(f: &KubeFake, ns: &str, name: &str) -> (i64, i64) {
        let h = f.hpa(ns, name).expect("hpa");
        (
            h["spec"]["minReplicas"].as_i64().unwrap_or(-1),
            h["spec"]["maxReplicas"].as_i64().unwrap_or(-1),
        )
    }

    fn writes(&self) -> usize {
        WORKLOADS
            .iter()
            .map(|(k, n, w)| self.primary.writes_to(k, n, w) + self.dr.writes_to(k, n, w))
            .sum::<usize>()
            + self
                .primary
                .writes_to("HorizontalPodAutoscaler", "billing", "api")
            + self.dr.writes_to("HorizontalPodAutoscaler", "shop", "web")
    }

    /// The failover's two kube steps, under the failover runbook's ids.
    fn failover(&self) -> String {
        let (o, run) = self.run("failover.yaml", FAILOVER, &[]);
        assert_eq!(o.code, 0, "failover: {o:?}");
        assert_eq!(Self::counts(&self.primary), vec![0, 0, 0], "fenced");
        assert_eq!(Self::counts(&self.dr), vec![10, 3, 4], "scaled");
        assert_eq!(
            Self::bounds(&self.dr, "shop", "web"),
            (10, 10),
            "HPA raised"
        );
        run
    }
}

const FAILOVER: &str = "name: kube-failover\nsteps:\n  - id: fence-kube\n    action: kube.fence\n    timeout: 30s\n    with:\n      region: primary\n      within: 5s\n  - id: scale\n    action: kube.scale\n    needs: [fence-kube]\n    timeout: 60s\n    with:\n      region: dr\n      from_region: primary\n      replicas: primary\n";

fn restore_rb(run: &str) -> String {
    format!("name: kube-back\nsteps:\n  - id: kube\n    action: kube.restore\n    timeout: 60s\n    with:\n      run: {run}\n      fenced_region: primary\n      scaled_region: dr\n")
}

#[test]
fn restore_puts_counts_and_hpa_bounds_back_and_reruns_as_noop() {
    let r = Regions::new();
    let failover = r.failover();
    let rb = restore_rb(&failover);
    r.w.write("back.yaml", &rb);
    let writes = r.writes();
    let p = r.w.run(&[
        "plan",
        "--check",
        "back.yaml",
        "--env",
        "env.yaml",
        "--region",
        "dr",
    ]);
    assert_eq!(p.code, 0, "{p:?}");
    // The checked plan shows every change before it is made, writing nothing.
    for line in [
        "kube primary shop/Deployment/web 0 -> 10",
        "kube primary billing/Deployment/api 0 -> 4",
        "kube dr shop/Deployment/web 10 -> 2 (HPA web min/max 10/10 -> 2/5)",
        "kube dr shop/StatefulSet/db 3 -> 1",
    ] {
        assert!(p.stdout.contains(line), "plan lacks `{line}`: {p:?}");
    }
    assert_eq!(r.writes(), writes, "plan --check writes nothing");
    let (o, run) = r.run("back.yaml", &rb, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        Regions::counts(&r.primary),
        vec![10, 3, 4],
        "primary back up"
    );
    assert_eq!(Regions::counts(&r.dr), vec![2, 1, 1], "dr back down");
    assert_eq!(
        Regions::bounds(&r.dr, "shop", "web"),
        (2, 5),
        "HPA bounds back"
    );
    assert_eq!(Regions::bounds(&r.primary, "billing", "api"), (2, 6));
    let out = r.w.outputs(&run, "kube");
    assert_eq!(
        out["restored"].as_object().map(|m| m.len()),
        Some(6),
        "{out}"
    );
    assert_eq!(out["drift"], serde_json::json!([]), "{out}");
    assert!(out["ready_ms"].as_f64().is_some(), "{out}");
    // The primary region's pods are Ready again (waited for, not assumed).
    let ready = r.primary.workload("Deployment", "shop", "web").unwrap()["status"]["readyReplicas"]
        .as_i64();
    assert_eq!(ready, Some(10));
    // The autoscaler keeps the restored values.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(Regions::counts(&r.primary), vec![10, 3, 4]);
    assert_eq!(Regions::counts(&r.dr), vec![2, 1, 1]);

    let writes = r.writes();
    let (o, run2) = r.run("back.yaml", &rb, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(r.w.outputs(&run2, "kube")["changed"], 0);
    assert_eq!(r.writes(), writes, "a second restore writes nothing");
}

#[test]
fn drift_is_refused_before_any_write_and_force_overrides_it() {
    let r = Regions::new();
    let failover = r.failover();
    // Someone resized the DR database by hand.
    r.dr.set_replicas("StatefulSet", "shop", "db", 5);
    let writes = r.writes();
    let rb = restore_rb(&failover);
    let (o, run) = r.run("back.yaml", &rb, &[]);
    assert_eq!(o.code, 5, "the step refused: {o:?}");
    assert!(r.w.step_error(&run, "kube").contains("left alone"), "{o:?}");
    let all = format!("{}{}", o.stderr, o.stdout);
    assert!(
        all.contains("shop/StatefulSet/db") && all.contains("runs 5") && all.contains("drift"),
        "{o:?}"
    );
    assert_eq!(r.writes(), writes, "nothing written: {run}");
    assert_eq!(
        Regions::counts(&r.primary),
        vec![0, 0, 0],
        "primary left alone"
    );
    assert_eq!(Regions::counts(&r.dr), vec![10, 5, 4]);

    let (o, run) = r.run("back.yaml", &rb, &["--force"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(Regions::counts(&r.primary), vec![10, 3, 4]);
    assert_eq!(
        Regions::counts(&r.dr),
        vec![2, 1, 1],
        "the drifted count too"
    );
    let summary = r.w.outputs(&run, "kube")["summary"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(summary.contains("drift overridden (--force)"), "{summary}");
}
