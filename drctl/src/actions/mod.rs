//! The generic action kinds: waiting, human approval, HTTP checks, running
//! a program, notifications and check sets. They know nothing of DNS,
//! Kubernetes or databases; those kinds live in their domain modules. All
//! of them implement [`crate::action::Action`].

pub mod approval;
pub mod checks;
pub mod exec;
pub mod http_check;
pub mod notify;
pub mod wait;

use crate::action::Action;

static ACTIONS: &[&dyn Action] = &[
    &wait::Wait,
    &approval::Approval,
    &http_check::HttpCheck,
    &exec::Exec,
    &notify::Notify,
    &checks::ChecksRun,
    &crate::dns::switch::DnsSwitch,
    &crate::dns::check::DnsCheck,
    &crate::dns::lower_ttl::DnsLowerTtl,
    &crate::immudb::action::ImmudbVerify,
    &crate::kube::snapshot::KubeSnapshot,
    &crate::kube::fence::KubeFence,
    &crate::kube::scale::KubeScale,
    &crate::kube::check::KubeCheck,
    &crate::postgres::status::PgStatus,
    &crate::postgres::fence::PgFence,
    &crate::postgres::promote::PgPromote,
    &crate::postgres::query::PgQuery,
];

pub fn all() -> &'static [&'static dyn Action] {
    ACTIONS
}

pub fn lookup(kind: &str) -> Option<&'static dyn Action> {
    ACTIONS.iter().copied().find(|a| a.kind() == kind)
}
