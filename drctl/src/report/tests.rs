//! Reports of hand-written journals folded through the view: what no
//! local integration run produces (a failback's discarded transactions, a
//! resume with `--mark-done` and `--accept-data-loss`, DNS servers and
//! Kubernetes capacity), rendered in every format.

use serde_json::{json, Map, Value};

use super::*;
use crate::engine::view::RunView;
use crate::journal::{ErrorInfo, Event, FailureKind, FileRef, Record, RunOptions, RunStatus};

fn rec(ts_ms: u64, event: Event) -> Record {
    Record {
        v: 1,
        seq: 0,
        ts: String::new(),
        ts_ms,
        prev: String::new(),
        event,
        hash: "h".repeat(64),
    }
}

fn outputs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn started(step: &str, action: &str) -> Event {
    Event::StepStarted {
        step: step.into(),
        action: action.into(),
        inputs: json!({}),
    }
}

fn finished(step: &str, out: Value, duration_ms: u64) -> Event {
    Event::StepFinished {
        step: step.into(),
        status: StepStatus::Succeeded,
        outputs: outputs(out),
        error: None,
        attempts: 1,
        duration_ms,
    }
}

/// A failback run: the old primary rewound (one note with figures, one
/// with the figures unknown), DNS switched back, capacity restored; it was
/// interrupted during `rewind` and resumed with `--mark-done fence` and
/// `--accept-data-loss`.
fn failback_view() -> RunView {
    let start = Event::RunStarted {
        run_id: "fb".into(),
        runbook: FileRef {
            name: "failback".into(),
            path: "failback.yaml".into(),
            sha256: "00".into(),
        },
        environment: None,
        mode: crate::runbook::Mode::Incident,
        operator: "op".into(),
        host: "h".into(),
        pid: 1,
        params: Map::new(),
        target_region: Some("primary".into()),
        source_region: Some("dr".into()),
        options: RunOptions::default(),
        failed_at_ms: Some(1_000),
        rto_target_ms: Some(60_000),
        rpo_target_ms: None,
        drctl_version: "0.1.0".into(),
        lease_mode: None,
        proofs: Some(vec!["smoke".into()]),
    };
    let mut v = RunView::start(&rec(1_000, start)).expect("start");
    let events = [
        (1_010, started("fence", "postgres.fence")),
        (1_020, started("rewind", "postgres.rewind")),
        // drctl was killed here; a resume at 5_000.
        (
            5_000,
            Event::RunResumed {
                operator: "bob".into(),
                host: "h2".into(),
                pid: 2,
                runbook_changed: false,
                decisions: [
                    ("fence".to_string(), "marked done by operator".to_string()),
                    (
                        "rewind".to_string(),
                        "re-run by operator decision".to_string(),
                    ),
                ]
                .into_iter()
                .collect(),
                repaired_tail_bytes: 0,
                environment_sha256: None,
                params: Map::new(),
                accept_data_loss: true,
                force: false,
                yes: true,
                proofs: None,
            },
        ),
        (5_010, started("rewind", "postgres.rewind")),
        (
            5_100,
            Event::StepAttemptFailed {
                step: "rewind".into(),
                attempt: 1,
                error: ErrorInfo {
                    message: "pg_rewind: <timeline> not found".into(),
                    hint: Some("check the WAL archive".into()),
                    kind: FailureKind::Failed,
                },
                retry_in_ms: 200,
            },
        ),
        (6_000, finished("rewind", json!({}), 700)),
        (
            6_010,
            Event::Note {
                step: None,
                message: "the old primary's discarded transactions were saved".into(),
                data: json!({
                    "kind": "failback_discarded",
                    "fork_lsn": "0/3000060",
                    "old_primary_end_lsn": "0/3001F28",
                    "timeline": 2,
                    "heartbeat_rows": 7,
                    "first_heartbeat_id": 101,
                    "last_heartbeat_id": 107,
                    "extract_file": "/var/lib/drctl/fb/discarded.sql",
                    "tables": [
                        {"table": "public.orders", "rows": 3, "file": "/var/lib/drctl/fb/orders.csv"},
                        {"table": "public.heartbeat", "rows": 7, "file": "/var/lib/drctl/fb/heartbeat.csv"}
                    ]
                }),
            },
        ),
        (
            6_020,
            Event::Note {
                step: None,
                message: "second extract".into(),
                data: json!({
                    "kind": "failback_discarded",
                    "fork_lsn": "0/4000000",
                    "old_primary_end_lsn": null,
                    "timeline": 3,
                    "heartbeat_rows": null,
                    "first_heartbeat_id": null,
                    "last_heartbeat_id": null,
                    "extract_file": "/x.sql",
                    "tables": []
                }),
            },
        ),
        (6_030, started("dns", "dns.switch")),
        (
            6_100,
            finished(
                "dns",
                json!({"changed": true, "convergence_ms": 40.5, "api_ms": 3.0,
                       "per_server_ms": {"ns1.example.": 12.5, "ns2.example.": 40.5}}),
                70,
            ),
        ),
        (6_110, started("scale", "kube.scale")),
        (
            6_200,
            finished(
                "scale",
                json!({"previous": {"shop/Deployment/web": {"replicas": 0}},
                       "targets": {"shop/Deployment/web": 4, "shop/Deployment/api": 2}}),
                90,
            ),
        ),
        (6_210, started("smoke", "http.check")),
        (6_300, finished("smoke", json!({}), 90)),
        (
            6_310,
            Event::RunFinished {
                status: RunStatus::Succeeded,
                reason: None,
            },
        ),
    ];
    for (ts, e) in events {
        v.apply(&rec(ts, e));
    }
    v
}

#[test]
fn failback_discards_render_with_unknowns_never_zero() {
    let v = failback_view();
    let md = markdown(&v);
    assert!(md.contains("## Discarded by failback"), "{md}");
    assert!(
        md.contains("after fork LSN 0/3000060 (its WAL ended at 0/3001F28; new primary on timeline 2) were discarded by the rewind: 7 heartbeat rows (heartbeat ids 101–107); saved to /var/lib/drctl/fb/discarded.sql"),
        "{md}"
    );
    assert!(md.contains("  - `public.orders`: 3 rows (in /var/lib/drctl/fb/orders.csv)"));
    // The second note's nulls are unknown, not 0.
    assert!(
        md.contains("after fork LSN 0/4000000 (its WAL ended at unknown; new primary on timeline 3) were discarded by the rewind: unknown heartbeat rows; saved to /x.sql"),
        "{md}"
    );
    // The note itself is not repeated among the events.
    assert!(!md.contains("second extract"), "{md}");
    let html = render(&v, &Inputs::plain(Format::Html));
    assert!(html.contains("<h3>Discarded by failback</h3>"));
    assert!(html.contains("<th scope=\"row\"><code>public.heartbeat</code></th><td>7</td>"));
    assert!(html.contains("unknown heartbeat rows"));
    let j = json::json(&v);
    assert_eq!(j["failback_discarded"][0]["heartbeat_rows"], 7);
    assert_eq!(j["failback_discarded"][1]["heartbeat_rows"], Value::Null);
    assert_eq!(j["failback_discarded"][0]["tables"][1]["rows"], 7);
}

#[test]
fn resume_decisions_say_who_and_what() {
    let v = failback_view();
    let ds = facts::decisions(&v);
    let whats: Vec<(&str, &str, &str)> = ds
        .iter()
        .map(|d| (d.who.as_str(), d.what.as_str(), d.detail.as_str()))
        .collect();
    assert_eq!(
        whats,
        vec![
            ("bob", "resumed the run", "--accept-data-loss --yes"),
            ("bob", "--mark-done `fence`", "marked done by operator"),
            ("bob", "--rerun `rewind`", "re-run by operator decision"),
        ]
    );
    // --accept-data-loss came with the resume, not the start.
    let md = markdown(&v);
    assert!(!md.contains("given at run start"), "{md}");
    assert!(md.contains("| bob | --mark-done `fence` | marked done by operator |"));
}

#[test]
fn the_timeline_draws_attempts_waits_and_the_interrupted_start() {
    let v = failback_view();
    let html = render(&v, &Inputs::plain(Format::Html));
    let gantt = &html[html.find("<svg").expect("svg")..html.find("</svg>").expect("end")];
    for step in ["fence", "rewind", "dns", "scale", "smoke"] {
        assert!(gantt.contains(&format!("data-step=\"{step}\"")), "{step}");
    }
    // The start cut off by the kill (drawn up to the resume), the failed
    // attempt, the retry wait.
    assert!(gantt.contains("bar interrupted"), "{gantt}");
    assert!(gantt.contains("bar failed-attempt"));
    assert!(gantt.contains("bar retry-wait"));
    assert!(gantt.contains("class=\"mark rto\""));
    assert!(gantt.contains("role=\"img\"") && gantt.contains("<title"));
    // Text from the journal is escaped.
    assert!(html.contains("pg_rewind: &lt;timeline&gt; not found"));
    assert!(!html.contains("<timeline>"));
    // The chain of steps that decided the recovery.
    let path = facts::critical_path(&v, Some("smoke"));
    assert_eq!(path, vec!["rewind", "dns", "scale", "smoke"]);
}

#[test]
fn dns_servers_and_capacity_are_tabled() {
    let v = failback_view();
    let md = markdown(&v);
    assert!(md.contains("| `dns` | ns2.example. | 40.5 ms |"), "{md}");
    assert!(
        md.contains("| `scale` | shop/Deployment/web | 0 | 4 |"),
        "{md}"
    );
    // No previous count journaled: unknown, not 0.
    assert!(
        md.contains("| `scale` | shop/Deployment/api | unknown | 2 |"),
        "{md}"
    );
    let html = render(&v, &Inputs::plain(Format::Html));
    assert!(html.contains("<h2 id=\"dns\">DNS convergence</h2>"));
    assert!(html.contains("<h2 id=\"capacity\">Kubernetes capacity</h2>"));
}

#[test]
fn html_is_self_contained_with_a_strict_policy() {
    let v = failback_view();
    let html = render(&v, &Inputs::plain(Format::Html));
    assert!(html.contains("default-src 'none'"));
    assert!(!html.contains("<script"));
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "external reference"
    );
    assert!(html.contains("@media (prefers-color-scheme:dark)"));
    assert!(html.contains("@media print"));
    // The policy's hash is the style's.
    let css = html::css();
    assert!(html.contains(&format!("<style>{css}</style>")));
    assert!(html.contains(&html::style_src()));
}
