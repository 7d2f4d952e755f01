//! The composition root of action kinds: the one module that names every
//! kind drctl knows. `main` builds [`standard`] once and passes it down to
//! validation, plans, the engine and `checks.run`; kind modules never see
//! each other, only the [`Action`](crate::action::Action) contract.
//!
//! Adding a kind means writing its module and adding one line here.

use crate::action::{Action, Registry};

/// Every built-in kind, in the order `drctl schema` and error hints list
/// them (generic kinds first, then by domain).
pub fn standard() -> Registry {
    let kinds: Vec<Box<dyn Action>> = vec![
        Box::new(crate::actions::wait::Wait),
        Box::new(crate::actions::approval::Approval),
        Box::new(crate::actions::http_check::HttpCheck),
        Box::new(crate::actions::exec::Exec),
        Box::new(crate::actions::notify::Notify),
        Box::new(crate::actions::checks::ChecksRun),
        Box::new(crate::dns::switch::DnsSwitch),
        Box::new(crate::dns::check::DnsCheck),
        Box::new(crate::dns::lower_ttl::DnsLowerTtl),
        Box::new(crate::dns::restore::DnsRestore),
        Box::new(crate::immudb::action::ImmudbVerify),
        Box::new(crate::kube::snapshot::KubeSnapshot),
        Box::new(crate::kube::fence::KubeFence),
        Box::new(crate::kube::scale::KubeScale),
        Box::new(crate::kube::check::KubeCheck),
        Box::new(crate::kube::restore::KubeRestore),
        Box::new(crate::postgres::status::PgStatus),
        Box::new(crate::postgres::fence::PgFence),
        Box::new(crate::postgres::promote::PgPromote),
        Box::new(crate::postgres::query::PgQuery),
        Box::new(crate::backup::action::PgVerifyBackup),
        Box::new(crate::postgres::switchover::PgSwitchover),
        Box::new(crate::postgres::rewind::PgRewind),
        Box::new(crate::postgres::rejoin::PgRejoin),
        Box::new(crate::drill::isolated::clone::PgCloneStandby),
        Box::new(crate::drill::isolated::dns::DnsDrillPoint),
        Box::new(crate::drill::isolated::kube::KubeDrillCopies),
        Box::new(crate::drill::isolated::smoke::DrillSmoke),
        Box::new(crate::drill::isolated::teardown::DrillTeardown),
        Box::new(crate::drill::isolated::production::DrillAssertProduction),
    ];
    // Invariant: the names above are distinct literals; the test below
    // proves it, so this cannot fail at run time.
    Registry::new(kinds).expect("built-in action kinds have distinct names")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_kinds_are_distinct_and_ordered() {
        let r = standard();
        let kinds = r.kinds();
        assert_eq!(kinds.len(), 30);
        assert_eq!(kinds[0], "wait");
        assert_eq!(kinds[19], "postgres.query");
        assert_eq!(kinds[23], "postgres.rejoin");
        for k in &kinds {
            assert_eq!(r.get(k).map(|a| a.kind()), Some(*k));
        }
        assert!(r.get("nope").is_none());
    }

    /// What each kind declares (with its parameters as written, here
    /// none): read-only kinds take shared leases and may sit in check sets,
    /// so a kind that starts changing something must show up here.
    #[test]
    fn read_only_declarations_are_as_reviewed() {
        let r = standard();
        let none = serde_json::json!({});
        let read_only: Vec<&str> = r
            .iter()
            .filter(|k| k.read_only(&none))
            .map(|k| k.kind())
            .collect();
        assert_eq!(
            read_only,
            [
                "wait",
                "approval",
                "http.check",
                "notify",
                "checks.run",
                "dns.check",
                "immudb.verify",
                "kube.snapshot",
                "kube.check",
                "postgres.status",
                "postgres.query",
                "postgres.verify_backup",
                "drill.assert_production",
            ]
        );
        let post = serde_json::json!({"method": "POST"});
        assert!(!r.get("http.check").is_some_and(|k| k.read_only(&post)));
    }

    #[test]
    fn kinds_declare_which_successes_prove_recovery() {
        let r = standard();
        let proves =
            |k: &str, p: serde_json::Value| r.get(k).is_some_and(|a| a.proves_recovery(&p));
        let none = serde_json::json!({});
        for k in [
            "checks.run",
            "postgres.query",
            "kube.check",
            "dns.check",
            "immudb.verify",
            "http.check",
            "drill.smoke",
        ] {
            assert!(proves(k, none.clone()), "{k}");
        }
        assert!(!proves(
            "http.check",
            serde_json::json!({"expect_failure": true})
        ));
        assert!(!proves(
            "http.check",
            serde_json::json!({"expect_failure": "${params.x}"})
        ));
        assert!(proves(
            "http.check",
            serde_json::json!({"expect_failure": false})
        ));
        for k in [
            "wait",
            "approval",
            "exec",
            "notify",
            "postgres.promote",
            "postgres.verify_backup",
            "dns.switch",
            "kube.scale",
        ] {
            assert!(!proves(k, none.clone()), "{k}");
        }
    }

    #[test]
    fn a_duplicate_kind_is_refused() {
        let kinds: Vec<Box<dyn Action>> = vec![
            Box::new(crate::actions::wait::Wait),
            Box::new(crate::actions::wait::Wait),
        ];
        assert_eq!(
            Registry::new(kinds).err().map(|e| e.to_string()),
            Some("action kind `wait` is registered twice".to_string())
        );
    }
}
