//! Kubernetes API failures, named the way an on-call engineer needs them:
//! which object, which cluster, and for RBAC the exact verb and resource
//! to grant.

use thiserror::Error;

use crate::diag::error_chain;

/// What a request was about, so an error can say it precisely.
#[derive(Debug, Clone)]
pub struct Op {
    pub verb: &'static str,
    /// Plural resource, with `/scale` for the subresource.
    pub resource: String,
    pub group: &'static str,
    pub namespace: Option<String>,
    /// Human name of the object, e.g. `Deployment shop/web`.
    pub what: String,
}

/// A 403, with the RBAC rule that is missing.
#[derive(Debug, Error)]
#[error(
    "forbidden (403): drctl may not `{verb}` `{resource}` in API group \"{group}\"{scope} in the `{region}` cluster (server said: {server})"
)]
pub struct Forbidden {
    pub region: String,
    pub verb: String,
    pub resource: String,
    pub group: String,
    pub scope: String,
    pub server: String,
}

#[derive(Debug, Error)]
pub enum KubeError {
    #[error("{what} not found (404) in the `{region}` cluster")]
    NotFound { region: String, what: String },
    #[error("{0}")]
    Forbidden(Box<Forbidden>),
    #[error("unauthorized (401): the `{region}` cluster rejected drctl's credentials")]
    Unauthorized { region: String },
    #[error("{what}: still conflicting (409) after {attempts} fresh reads: {server}")]
    Conflict {
        what: String,
        attempts: u32,
        server: String,
    },
    #[error("TLS verification of the `{region}` cluster's API ({server}) failed: {reason}")]
    Tls {
        region: String,
        server: String,
        reason: String,
    },
    #[error("the `{region}` cluster's API ({server}) is unreachable: {reason}")]
    Unreachable {
        region: String,
        server: String,
        reason: String,
    },
    #[error("{what}: the `{region}` cluster answered {code} {reason}: {message}")]
    Api {
        region: String,
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{message}")]
    Config { message: String, hint: String },
    #[error("{0}")]
    Other(String),
}

impl KubeError {
    /// Maps a kube-rs error for `op` against `region`'s API at `server`.
    pub fn from_kube(region: &str, server: &str, op: &Op, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => match s.code {
                404 => KubeError::NotFound {
                    region: region.into(),
                    what: op.what.clone(),
                },
                403 => KubeError::Forbidden(Box::new(Forbidden {
                    region: region.into(),
                    verb: op.verb.into(),
                    resource: op.resource.clone(),
                    group: op.group.into(),
                    scope: match &op.namespace {
                        Some(ns) => format!(" in namespace `{ns}`"),
                        None => " at the cluster scope".into(),
                    },
                    server: s.message.clone(),
                })),
                401 => KubeError::Unauthorized {
                    region: region.into(),
                },
                409 => KubeError::Conflict {
                    what: op.what.clone(),
                    attempts: 1,
                    server: s.message.clone(),
                },
                code => KubeError::Api {
                    region: region.into(),
                    what: op.what.clone(),
                    code,
                    reason: s.reason.clone(),
                    message: s.message.clone(),
                },
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                let reason = error_chain(&e);
                // A certificate that does not verify is not a dead region:
                // something answered that is not the cluster we trust, and
                // best-effort steps must not treat it as "down".
                if reason.contains("certificate") || reason.contains("tls") {
                    KubeError::Tls {
                        region: region.into(),
                        server: server.into(),
                        reason,
                    }
                } else {
                    KubeError::Unreachable {
                        region: region.into(),
                        server: server.into(),
                        reason,
                    }
                }
            }
            other => KubeError::Other(format!("{}: {}", op.what, error_chain(&other))),
        }
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(self, KubeError::Unreachable { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, KubeError::Conflict { .. })
    }

    pub fn hint(&self) -> String {
        match self {
            KubeError::NotFound { .. } => {
                "check the namespace, kind and name in the step's `workloads` (kubectl get -n NAMESPACE KIND NAME)".into()
            }
            KubeError::Forbidden(f) => format!(
                "grant verb `{}` on resource `{}` (apiGroups: [\"{}\"]) to drctl's ServiceAccount; deploy/kubernetes/rbac.yaml lists exactly what drctl needs",
                f.verb, f.resource, f.group
            ),
            KubeError::Unauthorized { .. } => {
                "the token or client certificate in the kubeconfig is wrong or expired".into()
            }
            KubeError::Conflict { .. } => {
                "another writer keeps changing the object (an operator or controller); retry the step".into()
            }
            KubeError::Tls { .. } => {
                "the kubeconfig's certificate-authority(-data) must be the CA that signed this API server's certificate".into()
            }
            KubeError::Unreachable { .. } => {
                "check the API endpoint and network path from where drctl runs; resume re-checks before acting".into()
            }
            KubeError::Api { .. } | KubeError::Other(_) => {
                "see the API server's message above".into()
            }
            KubeError::Config { hint, .. } => hint.clone(),
        }
    }
}
