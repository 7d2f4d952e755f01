//! Failback with Kubernetes capacity: the real lab (PostgreSQL 15 pair,
//! PowerDNS) with a fake Kubernetes API server per region (`fake_kube`; no
//! real API server can run here). The drill's failover fences the primary
//! region's workloads and scales the DR region's; `drctl failback` shows
//! the restore in its plan, refuses before changing anything when a count
//! changed since (43), and once that is undone puts replica counts and HPA
//! bounds back to the journaled previous values. A planned switchover
//! then moves the capacity with the primary, and the lab's heartbeat
//! writer follows the primary to the DR server.

use drctl_tests::fake_kube::{FakeOptions, KubeFake};
use std::time::Duration;

use drctl::postgres::heartbeat::HeartbeatStatus;
use drctl_tests::{block_on, wait_until, Lab};

fn heartbeat(lab: &Lab) -> HeartbeatStatus {
    block_on(drctl::postgres::heartbeat::load_status(
        lab.w.store().as_ref(),
        "lab",
    ))
    .expect("store")
    .expect("a heartbeat status")
}

fn counts(f: &KubeFake) -> Vec<i64> {
    [("Deployment", "shop", "web"), ("StatefulSet", "shop", "db")]
        .iter()
        .map(|(k, n, w)| {
            f.workload(k, n, w).expect("workload")["spec"]["replicas"]
                .as_i64()
                .unwrap_or(-1)
        })
        .collect()
}

fn bounds(f: &KubeFake) -> (i64, i64) {
    let h = f.hpa("shop", "web").expect("hpa");
    (
        h["spec"]["minReplicas"].as_i64().unwrap_or(-1),
        h["spec"]["maxReplicas"].as_i64().unwrap_or(-1),
    )
}

#[test]
fn failback_restores_kube_capacity_by_compare_and_set() {
    let lab = Lab::up();
    let primary = KubeFake::start(FakeOptions::default());
    let dr = KubeFake::start(FakeOptions::default());
    for (f, web, db) in [(&primary, 6, 3), (&dr, 1, 1)] {
        f.add_workload("Deployment", "shop", "web", &[("tier", "critical")], web);
        f.add_workload("StatefulSet", "shop", "db", &[("tier", "critical")], db);
    }
    dr.add_hpa("shop", "web", "Deployment", "web", 1, 4, 1);
    let dir = lab.w.path().display().to_string();
    primary.write_kubeconfig(&lab.w.path().join("primary.kubeconfig"), "primary");
    dr.write_kubeconfig(&lab.w.path().join("dr.kubeconfig"), "dr");
    let kube = |kc: &str| {
        format!("    kube:\n      kubeconfig: {dir}/{kc}\n      timeout: 2s\n      workloads:\n        - namespace: shop\n          selector: tier=critical\n")
    };
    let env = lab.env();
    let text = std::fs::read_to_string(&env).expect("env");
    assert!(text.contains("regions:\n  primary:\n") && text.contains("\n  dr:\n"));
    let text = text
        .replace(
            "regions:\n  primary:\n",
            &format!("regions:\n  primary:\n{}", kube("primary.kubeconfig")),
        )
        .replace("\n  dr:\n", &format!("\n  dr:\n{}", kube("dr.kubeconfig")));
    std::fs::write(&env, text).expect("write env");

    let rb = drctl_tests::repo_root()
        .join("runbooks/failover.yaml")
        .display()
        .to_string();
    let d = lab.w.run(&["drill", &rb, "--env", &env, "--yes"]);
    assert_eq!(d.code, 0, "drill: {d:?}");
    assert_eq!(
        counts(&primary),
        vec![0, 0],
        "the failover fenced the primary region"
    );
    assert_eq!(
        counts(&dr),
        vec![6, 3],
        "and scaled the DR region to production"
    );
    assert_eq!(bounds(&dr), (6, 6), "raising the HPA floor");

    // Someone resizes the DR database by hand after the failover.
    dr.set_replicas("StatefulSet", "shop", "db", 5);
    let runs = lab.w.runs().len();
    let param = format!("extract_dir={dir}/extracts");
    let refused = lab
        .w
        .run(&["failback", "latest", "--yes", "--param", &param]);
    assert_eq!(refused.code, 43, "{refused:?}");
    assert!(
        refused.stderr.contains("shop/StatefulSet/db")
            && refused.stderr.contains("runs 5")
            && refused.stderr.contains("nothing was changed")
            && refused.stderr.contains("--force"),
        "{refused:?}"
    );
    assert_eq!(lab.w.runs().len(), runs, "no run was started");
    assert_eq!(counts(&primary), vec![0, 0], "left alone");
    assert_eq!(counts(&dr), vec![6, 5]);

    // Undone: the failback goes through and restores both regions.
    dr.set_replicas("StatefulSet", "shop", "db", 3);
    let f = lab
        .w
        .run(&["failback", "latest", "--yes", "--param", &param]);
    assert_eq!(f.code, 0, "failback: {f:?}");
    assert!(
        f.stderr.contains("kube.restore"),
        "the plan shows the kube step: {f:?}"
    );
    let run = lab.last_run();
    drctl::journal::verify(&lab.w.journal_bytes(&run)).expect("journal verifies");
    assert_eq!(counts(&primary), vec![6, 3], "primary region back up");
    assert_eq!(counts(&dr), vec![1, 1], "DR region back down");
    assert_eq!(bounds(&dr), (1, 4), "HPA bounds back");
    let out = lab.outputs(&run, "kube");
    assert_eq!(
        out["restored"].as_object().map(|m| m.len()),
        Some(4),
        "{out}"
    );

    // A planned switchover to dr: capacity moves with the primary, and
    // the heartbeat writes to the new primary.
    let so = drctl_tests::repo_root()
        .join("runbooks/switchover.yaml")
        .display()
        .to_string();
    let s = lab.w.run(&[
        "switchover",
        "--to",
        "dr",
        "--env",
        &env,
        "--runbook",
        &so,
        "--yes",
    ]);
    assert_eq!(s.code, 0, "switchover: {s:?}");
    assert_eq!(
        counts(&primary),
        vec![0, 0],
        "the old primary region fenced"
    );
    assert_eq!(
        counts(&dr),
        vec![6, 3],
        "the DR region at production capacity"
    );
    let st = drctl::lab::read_state(&lab.w.state().join("lab")).expect("lab.json");
    let dr_addr = format!("127.0.0.1:{}", st.ports["pg-dr"]);
    let after = heartbeat(&lab).last_acked_id.unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let h = heartbeat(&lab);
            h.server == dr_addr && h.last_acked_id.unwrap_or(0) > after + 3
        }),
        "the heartbeat follows the primary to {dr_addr}: {:?}",
        heartbeat(&lab)
    );
}
