//! Measurements from hand-written journals folded into views: the RTO and
//! RPO rules without servers (the integration tests drive real ones).

use serde_json::{json, Map, Value};

use super::*;
use crate::journal::{Event, FileRef, Record, RunOptions};

struct J {
    view: Option<RunView>,
}

fn rec(ts_ms: u64, event: Event) -> Record {
    Record {
        v: 1,
        seq: 0,
        ts: String::new(),
        ts_ms,
        prev: String::new(),
        event,
        hash: String::new(),
    }
}

impl J {
    fn new(proofs: Option<Vec<&str>>, status_rto_target: Option<u64>) -> J {
        let start = Event::RunStarted {
            run_id: "r".into(),
            runbook: FileRef {
                name: "rb".into(),
                path: "rb.yaml".into(),
                sha256: "00".into(),
            },
            environment: None,
            mode: crate::runbook::Mode::Incident,
            operator: "op".into(),
            host: "h".into(),
            pid: 1,
            params: Map::new(),
            target_region: None,
            source_region: None,
            options: RunOptions::default(),
            failed_at_ms: Some(1_000),
            rto_target_ms: status_rto_target,
            rpo_target_ms: Some(5_000),
            drctl_version: "0".into(),
            lease_mode: None,
            proofs: proofs.map(|p| p.into_iter().map(String::from).collect()),
        };
        J {
            view: RunView::start(&rec(1_000, start)),
        }
    }

    fn at(mut self, ts: u64, event: Event) -> J {
        if let Some(v) = self.view.as_mut() {
            v.apply(&rec(ts, event));
        }
        self
    }

    fn step(self, ts: u64, id: &str, action: &str, inputs: Value, ok: bool) -> J {
        self.at(
            ts,
            Event::StepStarted {
                step: id.into(),
                action: action.into(),
                inputs,
            },
        )
        .finish(ts + 1, id, ok, Map::new())
    }

    fn finish(self, ts: u64, id: &str, ok: bool, outputs: Map<String, Value>) -> J {
        self.at(
            ts,
            Event::StepFinished {
                step: id.into(),
                status: if ok {
                    StepStatus::Succeeded
                } else {
                    StepStatus::Failed
                },
                outputs,
                error: None,
                attempts: 1,
                duration_ms: 1,
            },
        )
    }

    fn end(self, ts: u64, status: RunStatus) -> Measurements {
        let j = self.at(
            ts,
            Event::RunFinished {
                status,
                reason: None,
            },
        );
        j.view
            .as_ref()
            .and_then(from_view)
            .expect("a failure time gives measurements")
    }
}

#[test]
fn a_failed_proof_is_not_recovered_whatever_on_failure_says() {
    // `confirm-outage` succeeded; the only proof failed (on_failure:
    // continue let the run succeed).
    let m = J::new(Some(vec!["smoke"]), Some(60_000))
        .step(
            1_001,
            "confirm-outage",
            "http.check",
            json!({"expect_failure": true}),
            true,
        )
        .step(1_010, "smoke", "http.check", json!({}), false)
        .end(1_020, RunStatus::Succeeded);
    assert_eq!(m.rto_ms, None);
    assert!(
        matches!(&m.recovery, Recovery::NotRecovered { gaps } if gaps[0].step == "smoke"),
        "{:?}",
        m.recovery
    );
    assert_eq!(m.rto_verdict.met(), Some(false));
    assert!(
        rto_line(&m).contains("proof step `smoke` failed"),
        "{}",
        rto_line(&m)
    );
}

#[test]
fn no_proof_claims_no_rto_and_says_why() {
    let m = J::new(Some(vec![]), Some(60_000))
        .step(
            1_001,
            "confirm-outage",
            "http.check",
            json!({"expect_failure": true}),
            true,
        )
        .end(1_020, RunStatus::Succeeded);
    assert_eq!(m.rto_ms, None);
    assert_eq!(
        m.rto_verdict,
        Verdict::Unknown("the runbook has no step that proves recovery".into())
    );
}

#[test]
fn old_journals_fall_back_to_checks_minus_expected_failures() {
    let m = J::new(None, Some(60_000))
        .step(
            1_001,
            "confirm-outage",
            "http.check",
            json!({"expect_failure": true}),
            true,
        )
        .step(5_000, "smoke", "checks.run", json!({}), true)
        .end(5_100, RunStatus::Succeeded);
    assert_eq!(m.rto_ms, Some(4_001));
    assert_eq!(m.recovery_step.as_deref(), Some("smoke"));
    assert_eq!(m.rto_verdict, Verdict::Met);
}

#[test]
fn rto_ends_at_the_last_proof_and_a_failed_run_does_not_meet_it() {
    let m = J::new(Some(vec!["a", "b"]), Some(60_000))
        .step(2_000, "a", "postgres.query", json!({}), true)
        .step(3_000, "b", "dns.check", json!({}), true)
        .step(4_000, "notify", "notify", json!({}), false)
        .end(4_100, RunStatus::Failed);
    assert_eq!(m.rto_ms, Some(2_001));
    assert_eq!(m.rto_verdict, Verdict::NotMet("the run failed".into()));
}

#[test]
fn a_proof_never_reached_is_named() {
    let m = J::new(Some(vec!["a", "b"]), Some(60_000))
        .step(2_000, "a", "postgres.query", json!({}), true)
        .end(2_100, RunStatus::Interrupted);
    assert!(
        rto_line(&m).contains("proof step `b` did not start"),
        "{}",
        rto_line(&m)
    );
}

fn with_rpo(rpo: Value) -> Measurements {
    let mut out = Map::new();
    out.insert("rpo".into(), rpo);
    J::new(Some(vec![]), None)
        .at(
            1_001,
            Event::StepStarted {
                step: "promote".into(),
                action: "postgres.promote".into(),
                inputs: json!({}),
            },
        )
        .finish(1_002, "promote", true, out)
        .end(1_003, RunStatus::Succeeded)
}

#[test]
fn an_unknown_time_lost_is_unknown_never_zero_and_never_met() {
    let m = with_rpo(json!({
        "time_lost_ms": null, "heartbeats_lost": null, "wal_bytes_lost": 12,
        "time_lost_ms_at_most": 9213,
        "unknown": {"time_lost_ms": "no heartbeat acknowledgements", "heartbeats_lost": "no heartbeat acknowledgements"},
    }));
    assert_eq!(m.rpo_time_ms(), None);
    assert!(
        matches!(m.rpo_verdict, Verdict::Unknown(_)),
        "{:?}",
        m.rpo_verdict
    );
    assert_eq!(m.rpo_verdict.met(), None);
    let text = markdown(&m);
    assert!(
        text.contains("heartbeat rows lost: unknown (no heartbeat acknowledgements)")
            && text.contains("at most 9.213s")
            && !text.contains("0 heartbeat rows lost"),
        "{text}"
    );
}

#[test]
fn a_measured_time_within_target_of_a_succeeded_run_is_met() {
    let m = with_rpo(json!({"time_lost_ms": 100, "heartbeats_lost": 1, "wal_bytes_lost": 12}));
    assert_eq!(m.rpo_time_ms(), Some(100));
    assert_eq!(m.rpo_verdict, Verdict::Met);
}

#[test]
fn truth_is_compared_figure_by_figure_and_null_is_unknown() {
    let rpo = vec![(
        "promote".to_string(),
        json!({"time_lost_ms": 1012, "heartbeats_lost": 10, "wal_bytes_lost": 1656}),
    )];
    let truth = json!({"kind": "rpo_truth", "time_lost_ms": 999, "heartbeats_lost": 10, "wal_bytes_lost": null});
    let c = comparisons(&rpo, &truth);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(
        c[0].contains("estimate (`promote`) 1.012s vs truth 999ms (estimate 13ms above)"),
        "{c:?}"
    );
    assert!(c[1].contains("10 vs truth 10 (equal)"), "{c:?}");
    assert!(describe_truth(&truth).contains("WAL bytes lost: unknown"));
}

#[test]
fn a_resume_with_a_changed_runbook_replaces_the_proofs() {
    let m = J::new(Some(vec!["old"]), Some(60_000))
        .step(2_000, "old", "http.check", json!({}), false)
        .at(
            3_000,
            Event::RunResumed {
                operator: "op".into(),
                host: "h".into(),
                pid: 2,
                runbook_changed: true,
                decisions: Default::default(),
                repaired_tail_bytes: 0,
                environment_sha256: None,
                params: Map::new(),
                accept_data_loss: false,
                force: false,
                yes: true,
                proofs: Some(vec!["new".into()]),
            },
        )
        .step(4_000, "new", "checks.run", json!({}), true)
        .end(4_100, RunStatus::Succeeded);
    assert_eq!(m.recovery_step.as_deref(), Some("new"));
    assert_eq!(m.rto_ms, Some(3_001));
}

#[test]
fn a_failure_declared_after_the_recovery_measures_no_rto_never_zero() {
    // `drctl failover --failed-at` a minute in the future of the run.
    let mut j = J::new(Some(vec!["smoke"]), Some(60_000));
    if let Some(v) = j.view.as_mut() {
        v.failed_at_ms = Some(61_000);
    }
    let m = j
        .step(2_000, "smoke", "checks.run", json!({}), true)
        .end(2_100, RunStatus::Succeeded);
    assert_eq!(m.rto_ms, None, "{:?}", m.rto_ms);
    assert!(
        matches!(m.rto_verdict, Verdict::Unknown(_)),
        "{:?}",
        m.rto_verdict
    );
    assert_eq!(m.rto_verdict.met(), None);
    assert!(m.contributions.iter().all(|c| c.ended_at_ms.is_none()));
    let line = rto_line(&m);
    assert!(line.contains("before the declared failure time"), "{line}");
    assert!(!line.contains("0ms"), "{line}");
    let md = markdown(&m);
    assert!(!md.contains("+0ms"), "{md}");
    assert!(!md.contains("met)"), "{md}");
}

#[test]
fn a_run_not_yet_recovered_has_not_missed_a_target_it_may_still_meet() {
    // An approval pending 10 s after the failure, target 1m: the run may
    // still recover in time, so not "not met".
    let waiting = J::new(Some(vec!["smoke"]), Some(60_000))
        .step(1_001, "confirm-outage", "http.check", json!({}), true)
        .at(
            11_000,
            Event::StepStarted {
                step: "approve".into(),
                action: "approval".into(),
                inputs: json!({}),
            },
        );
    let m = waiting.view.as_ref().and_then(from_view).expect("measured");
    assert!(
        matches!(&m.rto_verdict, Verdict::Unknown(r) if r.contains("not finished")),
        "{:?}",
        m.rto_verdict
    );
    assert_eq!(m.rto_verdict.met(), None);
    let m = waiting.end(12_000, RunStatus::Interrupted);
    assert_eq!(m.rto_verdict.met(), None, "{:?}", m.rto_verdict);
    // Interrupted 2 minutes after the failure, still not recovered: it
    // can only be above the target now.
    let m = J::new(Some(vec!["smoke"]), Some(60_000))
        .step(121_000, "confirm-outage", "http.check", json!({}), true)
        .end(121_100, RunStatus::Interrupted);
    assert_eq!(m.rto_verdict, Verdict::Missed);
}
