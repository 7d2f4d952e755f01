//! The alert rules in `deploy/prometheus/` with the real `promtool`
//! (Debian's `prometheus` package): they check, their unit tests pass (the
//! three alerts firing and not firing), the unit tests catch a changed
//! threshold, and every metric the rules use is one drctl emits.

use drctl_tests::prom::{promtool, unit_tests_catch};
use drctl_tests::repo_root;

const RULES: &str = "drctl-backup-rules.yaml";
const TESTS: &str = "drctl-backup-rules.test.yaml";

#[test]
fn the_rules_check_and_their_unit_tests_pass() {
    let dir = repo_root().join("deploy/prometheus");
    let (ok, out) = promtool(&["check", "rules", RULES], &dir);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", TESTS], &dir);
    assert!(ok, "{out}");
}

#[test]
fn the_unit_tests_catch_a_changed_threshold() {
    let src = repo_root().join("deploy/prometheus");
    unit_tests_catch(
        &src,
        RULES,
        TESTS,
        &[
            ("> 26 * 3600", "> 30 * 3600"),
            (
                "drctl_backup_verify_success == 0",
                "drctl_backup_verify_success == 2",
            ),
            (
                "drctl_backup_rpo_gap_seconds > 2 * 3600",
                "drctl_backup_rpo_gap_seconds > 4 * 3600",
            ),
        ],
    );
}

#[test]
fn every_metric_the_rules_use_is_one_drctl_emits() {
    let report = drctl::backup::restore::Report {
        source: "s".into(),
        restore_ms: Some(1),
        backup_age_s: Some(1.0),
        rpo_gap_s: Some(1.0),
        ..Default::default()
    };
    let emitted: Vec<String> = drctl::backup::action::gauges("e", &report, &Ok(()))
        .into_iter()
        .map(|g| g.name)
        .collect();
    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus").join(RULES)).unwrap();
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("drctl_"))
        .collect();
    assert!(!used.is_empty());
    for m in used {
        assert!(
            emitted.iter().any(|e| e == m),
            "{m} is not emitted (emitted: {emitted:?})"
        );
    }
}
