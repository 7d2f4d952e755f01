//! Benchmark: scale 200 workloads across 10 namespaces on the fake API
//! server, one at a time (200 chained `kube.scale` steps, each waiting for
//! its workload, as a script of `kubectl scale` + `kubectl rollout status`
//! would) versus concurrently (one step, `concurrency: 32`). Reported as a
//! ratio measured in the same run; wall clock of the real `drctl` binary.
//!
//! The fake answers every request after `LATENCY` (a modelled API round
//! trip) and its controller readies one pod per `TICK`; both are printed.
//! Run: `bash scripts/bench-kube.sh` (builds release first).

use std::time::{Duration, Instant};

use drctl_tests::fake_kube::{FakeOptions, KubeFake};
use drctl_tests::Work;

const NAMESPACES: usize = 10;
const PER_NAMESPACE: usize = 20;
const FROM: i64 = 1;
const TO: i64 = 3;
const TICK: Duration = Duration::from_millis(20);
const LATENCY: Duration = Duration::from_millis(2);

fn setup() -> (Work, KubeFake) {
    let fake = KubeFake::start(FakeOptions {
        tick: TICK,
        ready_per_tick: 1,
        latency: LATENCY,
        ..FakeOptions::default()
    });
    for n in 0..NAMESPACES {
        for i in 0..PER_NAMESPACE {
            fake.add_workload(
                "Deployment",
                &format!("ns-{n}"),
                &format!("app-{i}"),
                &[("bench", "yes")],
                FROM,
            );
        }
    }
    let w = Work::new();
    fake.write_kubeconfig(&w.path().join("dr.kubeconfig"), "dr");
    w.write(
        "env.yaml",
        &format!(
            "name: bench\nactive_region: primary\nregions:\n  primary: {{}}\n  dr:\n    kube:\n      kubeconfig: {}/dr.kubeconfig\n      timeout: 10s\n",
            w.path().display()
        ),
    );
    (w, fake)
}

fn one_at_a_time() -> String {
    let mut s = String::from("name: one-at-a-time\nsteps:\n");
    let mut prev: Option<String> = None;
    for n in 0..NAMESPACES {
        for i in 0..PER_NAMESPACE {
            let id = format!("s-{n}-{i}");
            s.push_str(&format!(
                "  - id: {id}\n    action: kube.scale\n    timeout: 60s\n{}    with:\n      region: dr\n      replicas: {TO}\n      workloads: [{{namespace: ns-{n}, kind: Deployment, name: app-{i}}}]\n",
                prev.as_ref().map(|p| format!("    needs: [{p}]\n")).unwrap_or_default()
            ));
            prev = Some(id);
        }
    }
    s
}

fn one_step(concurrency: usize) -> String {
    let namespaces: Vec<String> = (0..NAMESPACES).map(|n| format!("ns-{n}")).collect();
    format!(
        "name: concurrent\nsteps:\n  - id: scale\n    action: kube.scale\n    timeout: 300s\n    with:\n      region: dr\n      replicas: {TO}\n      concurrency: {concurrency}\n      workloads: [{{namespaces: [{}], selector: bench=yes}}]\n",
        namespaces.join(", ")
    )
}

fn measure(runbook: &str) -> (f64, serde_json::Value) {
    let (w, fake) = setup();
    w.write("rb.yaml", runbook);
    let t = Instant::now();
    let o = w.run(&[
        "run",
        "rb.yaml",
        "--env",
        "env.yaml",
        "--region",
        "dr",
        "--yes",
        "--parallelism",
        "1",
    ]);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(o.code, 0, "{o:?}");
    for n in 0..NAMESPACES {
        for i in 0..PER_NAMESPACE {
            let obj = fake
                .workload("Deployment", &format!("ns-{n}"), &format!("app-{i}"))
                .unwrap();
            assert_eq!(
                obj["status"]["readyReplicas"], TO,
                "every workload ready at the end"
            );
        }
    }
    let run = w.runs().pop().unwrap();
    (secs, w.outputs(&run, "scale"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let total = NAMESPACES * PER_NAMESPACE;
    println!(
        "kube.scale benchmark: {total} Deployments in {NAMESPACES} namespaces, {FROM} -> {TO} replicas; fake API latency {LATENCY:?}/request, controller readies 1 pod per {TICK:?}; median of {rounds} rounds"
    );
    let (mut seq, mut c1, mut c32) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = serde_json::Value::Null;
    for _ in 0..rounds {
        seq.push(measure(&one_at_a_time()).0);
        c1.push(measure(&one_step(1)).0);
        let (t, out) = measure(&one_step(32));
        c32.push(t);
        last = out;
    }
    let (seq, c1, c32) = (median(seq), median(c1), median(c32));
    println!(
        "  one at a time ({total} chained steps, each waits)    {:>8.2} s   (baseline, 1.00x)",
        seq
    );
    println!(
        "  one step, concurrency 1 (writes in turn, one wait)  {:>8.2} s   ({:.3}x)",
        c1,
        c1 / seq
    );
    println!(
        "  one step, concurrency 32                            {:>8.2} s   ({:.3}x; {:.1}x faster)",
        c32,
        c32 / seq,
        seq / c32
    );
    println!(
        "  last concurrent run: API phase {:.0} ms, wait for ready {:.0} ms",
        last["api_ms"].as_f64().unwrap_or(0.0),
        last["ready_ms"].as_f64().unwrap_or(0.0)
    );
}
