//! Drill metrics and alerts: the gauges reach a real Pushgateway
//! (Debian's `prometheus-pushgateway`), a node_exporter textfile and the
//! daemon's own `/metrics`; the alert rules in `deploy/prometheus/` pass
//! the real `promtool`'s checks and unit tests, and those tests catch a
//! changed threshold.

use std::net::TcpListener;

use std::process::Stdio;
use std::time::Duration;

use drctl_tests::prom::{promtool, unit_tests_catch, Pushgateway};
use drctl_tests::{repo_root, wait_until, Work};

const RULES: &str = "drctl-drill-rules.yaml";
const TESTS: &str = "drctl-drill-rules.test.yaml";

#[test]
fn drill_rules_check_and_their_unit_tests_pass_and_catch_changes() {
    let dir = repo_root().join("deploy/prometheus");
    let (ok, out) = promtool(&["check", "rules", RULES], &dir);
    assert!(ok && out.contains("SUCCESS: 4 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", TESTS], &dir);
    assert!(ok, "{out}");
    unit_tests_catch(
        &dir,
        RULES,
        TESTS,
        &[
            (
                "drctl_drill_rto_median_seconds * 1.5",
                "drctl_drill_rto_median_seconds * 1.7",
            ),
            ("drctl_drill_target_met == 0", "drctl_drill_target_met == 2"),
            ("for: 1d", "for: 2d"),
            (
                "> on (drill, mode) drctl_drill_overdue_after_seconds",
                "> on (drill, mode) 2 * drctl_drill_overdue_after_seconds",
            ),
        ],
    );
}

#[test]
fn every_metric_the_drill_rules_use_is_one_drctl_emits() {
    let recs = vec![
        serde_json::json!({
        "run_id": "r", "drill": "d", "mode": "full", "status": "succeeded",
        "failed_at": "2026-11-01T03:00:00.000Z", "rto_ms": 1, "rpo_time_ms": 1,
        "rto_verdict": {"verdict": "met"}, "rpo_verdict": {"verdict": "met"}}),
        serde_json::json!({
        "run_id": "s", "drill": "d", "mode": "full", "status": "succeeded",
        "failed_at": "2026-11-02T03:00:00.000Z", "rto_ms": 1, "rpo_time_ms": 1,
        "rto_verdict": {"verdict": "met"}, "rpo_verdict": {"verdict": "met"}}),
    ];
    let defs = drctl::drill::load_dir(&repo_root().join("drills")).unwrap();
    let emitted: Vec<String> = drctl::drill::metrics::gauges(&defs, &recs, chrono::Utc::now())
        .into_iter()
        .filter(|g| !g.samples.is_empty())
        .map(|g| g.name)
        .collect();
    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus").join(RULES)).unwrap();
    let used: std::collections::BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr:"))
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("drctl_"))
        .collect();
    assert!(used.len() >= 5, "{used:?}");
    for m in used {
        assert!(
            emitted.iter().any(|e| e == m),
            "{m} is not emitted ({emitted:?})"
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let ok = out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200");
    ok.then_some(out)
}

fn setup(w: &Work) {
    w.write(
        "rb.yaml",
        "name: m\ntargets: {rto: 1m}\nsteps:\n  - id: smoke\n    action: exec\n    proves_recovery: true\n    with: {argv: [\"true\"]}\n",
    );
    std::fs::create_dir_all(w.path().join("drills")).unwrap();
    w.write(
        "drills/m.yaml",
        "name: m\nrunbook: ../rb.yaml\nschedule: \"0 3 * * *\"\n",
    );
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_scheduled_drill_pushes_its_gauges_to_a_real_pushgateway_and_a_textfile() {
    let w = Work::new();
    setup(&w);
    let pgw = Pushgateway::start();
    let url = format!("http://127.0.0.1:{}", pgw.port);
    let textfile = w.path().join("node/drill.prom");
    let daemon = |now: &str| {
        let o = drctl_tests::Out::from(
            w.cmd(&[
                "daemon",
                "--drills",
                "drills",
                "--once",
                "--now",
                now,
                "--push",
                &url,
                "--textfile",
                textfile.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        );
        assert_eq!(o.code, 0, "{o:?}");
        o
    };
    daemon("2026-12-01T00:00:00Z");
    let o = daemon("2026-12-01T03:00:30Z");
    assert!(
        o.stdout.contains("ran the 2026-12-01T03:00:00.000Z slot"),
        "{o:?}"
    );
    let got = get(pgw.port, "/metrics").expect("pushgateway metrics");
    let series = |name: &str| {
        format!("{name}{{drill=\"m\",instance=\"\",job=\"drctl_drill\",mode=\"full\"}}")
    };
    let rto = sample(&got, &series("drctl_drill_rto_seconds")).expect(&got);
    // The RTO pushed is the one the drill journaled.
    let h = w.run(&["drills", "history", "m", "--output", "json"]);
    let t: Vec<serde_json::Value> = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(rto, t[0]["rto_ms"].as_u64().unwrap() as f64 / 1000.0);
    assert_eq!(sample(&got, &series("drctl_drill_target_met")), Some(1.0));
    assert!(sample(&got, &series("drctl_drill_last_success_timestamp_seconds")).is_some());
    // One drill: no median yet, so no regression baseline (absent, not 0).
    assert!(!got.contains("drctl_drill_rto_median_seconds{"), "{got}");
    let file = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        file.contains("drctl_drill_target_met{drill=\"m\",mode=\"full\"} 1"),
        "{file}"
    );
    let allowed = sample(
        &file,
        "drctl_drill_overdue_after_seconds{drill=\"m\",mode=\"full\"}",
    );
    assert_eq!(
        allowed,
        Some((24 * 3600 + 24 * 3600) as f64),
        "a day's period plus a day's grace"
    );
}

#[test]
fn the_daemon_serves_its_metrics_and_stops_on_sigterm() {
    let w = Work::new();
    setup(&w);
    let port = free_port();
    let mut child = w
        .cmd(&[
            "daemon",
            "--drills",
            "drills",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || get(
        port, "/metrics"
    )
    .is_some()));
    let text = get(port, "/metrics").unwrap();
    assert!(
        text.contains("drctl_drill_overdue_after_seconds{drill=\"m\",mode=\"full\"}"),
        "{text}"
    );
    // Nothing ran: no drill figures at all rather than zeros.
    assert!(!text.contains("drctl_drill_rto_seconds{"), "{text}");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let st = child.wait().unwrap();
    assert!(st.success(), "{st:?}");
}
