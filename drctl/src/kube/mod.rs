//! Kubernetes: bring the DR region to production capacity, stop the old
//! primary region's workloads, record capacity while the primary API is
//! still there, and check rollouts.
//!
//! Why these four: the DR region runs warm (low replica counts), so
//! recovery means scaling it to what production ran (`kube.scale`), which
//! must be known even when the primary API is gone (`kube.snapshot`, on a
//! schedule). Two regions must never serve writes at once, so the primary's
//! workloads are scaled to zero when its API still answers (`kube.fence`,
//! best effort and bounded). `kube.check` is the smoke test.
//!
//! Every write goes through the `/scale` subresource or an HPA merge patch,
//! each carrying the `resourceVersion` just read: a concurrent writer makes
//! the API answer 409 and drctl re-reads and decides again instead of
//! clobbering. Waiting polls (no watch), so a lost connection costs one poll.

pub mod api;
pub mod check;
pub mod config;
pub mod drillcopy;
pub mod error;
pub mod fence;
pub mod restore;
pub mod scale;
pub mod snapshot;
pub mod workload;

pub use error::KubeError;

/// `prefix` + `name` as a DNS-1123 label of at most `max` bytes: every
/// character outside `[a-z0-9]` (after lowercasing) becomes `-`, and no
/// `-` is left at the joins or the end. Object names drctl makes from run
/// ids and drill names (namespaces, CronJobs) all pass through here.
pub fn dns_label(prefix: &str, name: &str, max: usize) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut s = format!("{prefix}{}", name.trim_matches('-'));
    s.truncate(max);
    s.trim_end_matches('-').to_string()
}

/// Every API request drctl makes, as RBAC rules `(apiGroup, resource,
/// verbs)`. `deploy/kubernetes/rbac.yaml` grants exactly these; a test keeps
/// the two in step, so least privilege is checked rather than hoped for.
pub const PERMISSIONS: &[(&str, &str, &[&str])] = &[
    ("apps", "deployments", &["get", "list"]),
    ("apps", "statefulsets", &["get", "list"]),
    ("apps", "deployments/scale", &["get", "patch"]),
    ("apps", "statefulsets/scale", &["get", "patch"]),
    (
        "autoscaling",
        "horizontalpodautoscalers",
        &["get", "list", "patch"],
    ),
    ("", "pods", &["list"]),
];

/// Store collection of capacity snapshots, keyed `<env>-<region>`.
pub const CAPACITY: &str = "kube-capacity";
/// Append-only history of snapshots (one summary line each).
pub const CAPACITY_HISTORY: &str = "kube-capacity-history";
/// How a Kubernetes failure reaches the engine: configuration problems
/// keep their hint, everything else is a retryable failure with the
/// error's own hint. (Here, not in `error.rs`, so the config decoders the
/// environment uses stay free of the action contract.)
impl From<KubeError> for crate::action::ActionError {
    fn from(e: KubeError) -> Self {
        match e {
            KubeError::Config { message, hint } => {
                crate::action::ActionError::Config { message, hint }
            }
            other => crate::action::ActionError::Failed {
                hint: Some(other.hint()),
                message: other.to_string(),
            },
        }
    }
}
