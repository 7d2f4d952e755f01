//! A region's `kube:` section and the client built from it.
//!
//! ```yaml
//! regions:
//!   dr:
//!     kube:
//!       kubeconfig: /etc/drctl/dr.kubeconfig   # or in_cluster: true
//!       context: dr-admin                      # default: current-context
//!       timeout: 10s                           # per API request
//!       workloads:                             # what fence/scale/snapshot/check act on
//!         - namespaces: [shop]
//!           selector: dr.example.com/tier=critical
//! ```
//!
//! Credentials stay in the kubeconfig (a file reference), never in the
//! environment file, the journal or logs. TLS is always verified: a
//! kubeconfig with `insecure-skip-tls-verify` or a plain-http server is
//! refused, because fencing the wrong cluster is worse than not fencing.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::error::{KubeError, Op};
use super::workload::{decode_selections, Selection};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub in_cluster: bool,
    pub timeout: Duration,
    pub workloads: Vec<Selection>,
}

pub fn decode(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Option<ClusterConfig> {
    let mut r = MapReader::new(ctx, node, what.to_string())?;
    let kubeconfig = r
        .opt("kubeconfig")
        .and_then(|n| ctx.string(n, &format!("{what}.kubeconfig")));
    let context = r
        .opt("context")
        .and_then(|n| ctx.string(n, &format!("{what}.context")));
    let in_cluster_node = r.opt("in_cluster");
    let in_cluster = in_cluster_node
        .and_then(|n| ctx.boolean(n, &format!("{what}.in_cluster")))
        .unwrap_or(false);
    if let (true, Some(n)) = (in_cluster && kubeconfig.is_some(), in_cluster_node) {
        ctx.error(
            "E-KUBE-CONFIG",
            n,
            format!("{what}: `in_cluster: true` and `kubeconfig` exclude each other"),
            Some(
                "use in_cluster inside the cluster being managed, a kubeconfig anywhere else"
                    .into(),
            ),
        );
    }
    let timeout = r
        .opt("timeout")
        .and_then(|n| ctx.duration(n, &format!("{what}.timeout")))
        .unwrap_or(DEFAULT_TIMEOUT);
    let workloads = r
        .opt("workloads")
        .and_then(|n| decode_selections(ctx, n, &format!("{what}.workloads")))
        .unwrap_or_default();
    r.finish(ctx);
    Some(ClusterConfig {
        kubeconfig,
        context,
        in_cluster,
        timeout,
        workloads,
    })
}

/// A connected cluster: every request is bounded by `timeout` and by the
/// step's deadline, and its errors name the region.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub region: String,
    pub server: String,
    pub timeout: Duration,
    pub deadline: Instant,
}

impl Cluster {
    pub async fn connect(
        cfg: &ClusterConfig,
        region: &str,
        deadline: Instant,
    ) -> Result<Cluster, KubeError> {
        let mut config = if cfg.in_cluster {
            kube::Config::incluster().map_err(|e| KubeError::Config {
                message: format!("region `{region}`: in-cluster config unavailable: {e}"),
                hint: "in_cluster works only in a pod with a ServiceAccount token mounted; elsewhere set `kubeconfig`".into(),
            })?
        } else {
            let path = kubeconfig_path(cfg)?;
            let kc = Kubeconfig::read_from(&path).map_err(|e| KubeError::Config {
                message: format!(
                    "region `{region}`: cannot read kubeconfig {}: {e}",
                    path.display()
                ),
                hint: "point `kubeconfig:` at a readable kubeconfig file".into(),
            })?;
            let opts = KubeConfigOptions {
                context: cfg.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| KubeError::Config {
                    message: format!(
                        "region `{region}`: kubeconfig {} is unusable: {e}",
                        path.display()
                    ),
                    hint: "check the context name and that it names a cluster and a user".into(),
                })?
        };
        if config.accept_invalid_certs {
            return Err(KubeError::Config {
                message: format!(
                    "region `{region}`: the kubeconfig disables TLS verification (insecure-skip-tls-verify)"
                ),
                hint: "put the cluster's CA in certificate-authority(-data); drctl does not talk to an unverified API server".into(),
            });
        }
        if config.cluster_url.scheme_str() != Some("https") {
            return Err(KubeError::Config {
                message: format!(
                    "region `{region}`: API server {} is not https",
                    config.cluster_url
                ),
                hint: "use the cluster's https endpoint".into(),
            });
        }
        config.connect_timeout = Some(cfg.timeout.min(Duration::from_secs(5)));
        config.read_timeout = Some(cfg.timeout);
        config.write_timeout = Some(cfg.timeout);
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| KubeError::Config {
            message: format!("region `{region}`: cannot build a client for {server}: {e}"),
            hint: "check the CA and client certificate in the kubeconfig".into(),
        })?;
        Ok(Cluster {
            client,
            region: region.to_string(),
            server,
            timeout: cfg.timeout,
            deadline,
        })
    }

    /// Runs one API request, bounded in time, mapping its error for `op`.
    pub async fn call<T>(
        &self,
        op: Op,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, KubeError> {
        let limit = self
            .timeout
            .min(self.deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(KubeError::from_kube(&self.region, &self.server, &op, e)),
            Err(_) => Err(KubeError::Unreachable {
                region: self.region.clone(),
                server: self.server.clone(),
                reason: format!(
                    "no answer to `{} {}` within {}",
                    op.verb,
                    op.resource,
                    crate::duration::format_duration(limit)
                ),
            }),
        }
    }

    /// A copy whose requests end by `deadline` (fencing is bounded).
    pub fn until(&self, deadline: Instant) -> Cluster {
        Cluster {
            deadline: deadline.min(self.deadline),
            ..self.clone()
        }
    }
}

fn kubeconfig_path(cfg: &ClusterConfig) -> Result<PathBuf, KubeError> {
    if let Some(p) = &cfg.kubeconfig {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        // Only the first file: merging several kubeconfigs is kubectl's
        // convenience and a source of "which cluster was that?" at 3 a.m.
        if let Some(first) = std::env::split_paths(&p).next() {
            return Ok(first);
        }
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".kube/config")),
        None => Err(KubeError::Config {
            message: "no kubeconfig given and HOME is unset".into(),
            hint: "set `kubeconfig:` or `in_cluster: true` in the region's kube section".into(),
        }),
    }
}
