//! `kube.drill_copies`: copies of the DR region's production workloads in
//! a `drill-<run>` namespace, fenced by a default-deny NetworkPolicy, at
//! the replica counts a real failover's `kube.scale` would choose, with
//! environment variables pointing them at the drill endpoint.
//!
//! Check: resolve the region's `workloads` (read only), decide the counts
//! once and journal them with the namespace name before the first write
//! (so a cleanup of a killed run finds the namespace). Act: namespace
//! (refused when one of that name belongs to anything but this run), the
//! NetworkPolicy BEFORE any workload (no copy ever runs unfenced), then
//! the copies; each create is "already exists" tolerant, so a resumed step
//! carries on. Verify: wait, bounded by the step timeout, until every copy
//! is ready (`ready_ms`, part of the RTO "as if real": the isolated
//! drill's RTO runs from the cut to the end of the smoke step, which needs
//! this step), and that the production objects' spec (generation, replicas)
//! did not move.
//!
//! Tested against the project's fake API server (`tests/fake_kube`), not a
//! real cluster; NetworkPolicy enforcement cannot be observed there.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext, Verdict};
use crate::decode::{Ctx, MapReader};
use crate::kube::api;
use crate::kube::drillcopy::{self, POLICY_NAME};
use crate::kube::scale::{decode_replicas, Replicas};
use crate::kube::snapshot::{self, decode_target, Target};
use crate::kube::workload::{Kind, Workload, WorkloadRef};
use crate::yaml::{Kind as NodeKind, Node};

pub const KUBE_KIND: &str = "kube.drill_copies";

#[derive(Clone, Copy)]
pub struct KubeDrillCopies;

pub struct Params {
    target: Target,
    replicas: Replicas,
    from_region: Option<String>,
    /// Set on every container of every copy.
    env: BTreeMap<String, String>,
    /// The drill database's address (an IP: the policy's ipBlock) and port.
    db_host: IpAddr,
    db_port: u16,
    concurrency: usize,
}

/// What the step journals before its first write; cleanup reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub region: String,
    pub namespace: String,
    /// Copy key (`ns/Kind/name` of the production object) -> replicas.
    pub targets: BTreeMap<String, i32>,
    pub source: String,
    /// Production `generation` and `spec.replicas` before the drill.
    pub production: BTreeMap<String, (i64, i32)>,
}

fn region_of(t: &Target, ctx: &StepContext) -> Result<String, ActionError> {
    t.region
        .clone()
        .or_else(|| ctx.target_region.clone())
        .ok_or_else(|| ActionError::Config {
            message: "kube.drill_copies: no target region".into(),
            hint: "set `region:` or run with --region".into(),
        })
}

fn env_map(ctx: &mut Ctx<'_>, node: &Node) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let NodeKind::Map(entries) = &node.kind else {
        ctx.expected(node, "a mapping of variable names to values", "env");
        return out;
    };
    for (k, v) in entries {
        let Some(name) = ctx.string(k, "env") else {
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            ctx.error(
                "E-VALUE",
                k,
                format!("kube.drill_copies: env: `{name}` is not a valid variable name"),
                Some("letters, digits, `_`, `-` and `.`".into()),
            );
            continue;
        }
        if ctx.deferred(v) {
            out.insert(name, String::new());
            continue;
        }
        match &v.kind {
            NodeKind::Str(s) => {
                out.insert(name, s.clone());
            }
            NodeKind::Int(i) => {
                out.insert(name, i.to_string());
            }
            _ => ctx.expected(v, "a string or a number", &format!("env.{name}")),
        }
    }
    out
}

fn kind_of(key: &str) -> Option<Kind> {
    key.split('/').nth(1).and_then(Kind::parse)
}

#[async_trait]
impl ActionKind for KubeDrillCopies {
    type Params = Params;

    fn kind(&self) -> &'static str {
        KUBE_KIND
    }
    fn summary(&self) -> &'static str {
        "Copy the region's workloads into a fenced drill-<run> namespace (default-deny NetworkPolicy: DNS and the drill database only) and wait until they are ready"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "namespace",
            "network_policy",
            "copies",
            "replicas",
            "capacity_source",
            "create_ms",
            "ready_ms",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, KUBE_KIND)?;
        let target = decode_target(ctx, &mut r, KUBE_KIND);
        let replicas = r.req(ctx, "replicas").and_then(|n| {
            if ctx.deferred(n) {
                return Some(Replicas::Primary { percent: 100 });
            }
            decode_replicas(ctx, n, KUBE_KIND)
        });
        let from_region = r
            .opt("from_region")
            .and_then(|n| ctx.string(n, "from_region"));
        let env = r.opt("env").map(|n| env_map(ctx, n)).unwrap_or_default();
        let db_host = r.req(ctx, "db_host").and_then(|n| {
            if ctx.deferred(n) {
                return Some(IpAddr::from([0, 0, 0, 0]));
            }
            let s = ctx.string(n, "db_host")?;
            match s.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    ctx.error(
                        "E-VALUE",
                        n,
                        format!("{KUBE_KIND}: db_host `{s}` is not an IP address"),
                        Some("the NetworkPolicy allows the drill database by ipBlock: give the clone's advertised address".into()),
                    );
                    None
                }
            }
        });
        let db_port = r.req(ctx, "db_port").and_then(|n| {
            if ctx.deferred(n) {
                Some(1)
            } else {
                ctx.port(n, "db_port")
            }
        });
        let (_, concurrency) = snapshot::decode_pacing(ctx, &mut r, KUBE_KIND);
        r.finish(ctx);
        Some(Params {
            target,
            replicas: replicas?,
            from_region,
            env,
            db_host: db_host?,
            db_port: db_port?,
            concurrency,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "copy region {}'s workloads into a fenced drill namespace at {} replicas",
            crate::action::param_text(params, "region", "(target)"),
            crate::action::param_text(params, "replicas", "?")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let region = region_of(&p.target, ctx)?;
        let (_, ws) = snapshot::connect_and_resolve(&p.target, &region, ctx).await?;
        let mut lines = vec![format!(
            "kube {region}: namespace {} fenced by NetworkPolicy {POLICY_NAME} (DNS and {}:{} only)",
            drillcopy::namespace_name(&ctx.run_id),
            p.db_host,
            p.db_port
        )];
        lines.extend(ws.iter().map(|w| format!("kube {region}: copy {}", w.r)));
        Ok(Preflight::new(lines, Verdict::Passes))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let t0 = Instant::now();
        let region = region_of(&p.target, ctx)?;
        let (cluster, ws) = snapshot::connect_and_resolve(&p.target, &region, ctx).await?;
        let ns = drillcopy::namespace_name(&ctx.run_id);
        let saved: Saved = match ctx.saved::<Saved>()? {
            Some(s) => s,
            None => {
                let (targets, source) = crate::kube::scale::failover_targets(
                    p.replicas,
                    p.from_region.clone(),
                    &region,
                    &ws,
                    ctx,
                )
                .await?;
                let s = Saved {
                    region: region.clone(),
                    namespace: ns.clone(),
                    targets,
                    source,
                    production: ws
                        .iter()
                        .map(|w| (w.r.key(), (w.generation, w.spec_replicas)))
                        .collect(),
                };
                ctx.checkpoint(&s).await?;
                s
            }
        };
        // The namespace: ours, or refused (also when another writer made
        // one of that name between our read and our create).
        let mut created = false;
        loop {
            match drillcopy::namespace(&cluster, &ns).await? {
                Some(st) if st.run.as_deref() != Some(ctx.run_id.as_str()) => {
                    return Err(ActionError::Config {
                        message: format!(
                            "namespace {ns} exists in the `{region}` cluster and is not this run's (its {} annotation: {})",
                            drillcopy::RUN_ANNOTATION,
                            st.run.as_deref().unwrap_or("none")
                        ),
                        hint: format!(
                            "drctl never adopts a namespace it did not create; check what {ns} is (kubectl get ns {ns} -o yaml) and delete it if it is a leftover"
                        ),
                    })
                }
                Some(st) if st.terminating => {
                    return Err(ActionError::failed_hint(
                        format!("namespace {ns} is being terminated"),
                        "wait until it is gone and resume the run",
                    ))
                }
                Some(_) => break,
                None if created => {
                    return Err(ActionError::failed(format!(
                        "namespace {ns} was created but cannot be read back"
                    )))
                }
                None => {
                    let manifest = drillcopy::namespace_manifest(&ns, &ctx.run_id);
                    if drillcopy::create_namespace(&cluster, &manifest).await? {
                        crate::journal::test_crash_at("kube-namespace-created");
                    }
                    created = true;
                }
            }
        }
        // The fence first: no copy ever runs unfenced.
        let policy = drillcopy::network_policy_manifest(&ctx.run_id, p.db_host, p.db_port);
        drillcopy::ensure_policy(&cluster, &ns, &policy).await?;
        let mut want = Vec::new();
        for w in &ws {
            let key = w.r.key();
            let replicas = *saved.targets.get(&key).ok_or_else(|| {
                ActionError::failed(format!(
                    "{key} was not selected when this step first ran; the workload selection changed"
                ))
            })?;
            let prod = drillcopy::get_object(&cluster, &w.r).await?;
            let copy = drillcopy::copy_manifest(&prod, &ns, &ctx.run_id, replicas, &p.env);
            drillcopy::create_copy(&cluster, w.r.kind, &copy).await?;
            want.push((
                WorkloadRef {
                    kind: w.r.kind,
                    namespace: ns.clone(),
                    name: w.r.name.clone(),
                },
                replicas,
            ));
        }
        let create_ms = t0.elapsed().as_millis() as u64;
        let t1 = Instant::now();
        let ready = api::wait_for(
            &cluster,
            &want,
            |w: &Workload, n| w.ready_for(n),
            p.concurrency,
            ctx.deadline,
            ctx,
        )
        .await
        .map_err(|(pending, err)| {
            ActionError::failed(format!(
                "copies not ready in namespace {ns} before the step timeout: {}{}",
                pending.join("; "),
                err.map(|e| format!(" (last API error: {e})"))
                    .unwrap_or_default()
            ))
        })?;
        let ready_ms = t1.elapsed().as_millis() as u64;
        // Production untouched: same spec generation and replicas.
        for (key, (generation, replicas)) in &saved.production {
            let Some(kind) = kind_of(key) else { continue };
            let mut parts = key.splitn(3, '/');
            let (Some(pns), _, Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let now = crate::kube::workload::get(
                &cluster,
                &WorkloadRef {
                    kind,
                    namespace: pns.to_string(),
                    name: name.to_string(),
                },
            )
            .await?;
            if now.generation != *generation || now.spec_replicas != *replicas {
                return Err(ActionError::failed(format!(
                    "production {key} changed during the drill: generation {generation} -> {}, replicas {replicas} -> {}",
                    now.generation, now.spec_replicas
                )));
            }
        }
        let copies: Vec<String> = ready.iter().map(|w| w.r.key()).collect();
        let mut o = Outputs::new();
        o.insert("namespace".into(), json!(ns));
        o.insert("network_policy".into(), json!(POLICY_NAME));
        o.insert("copies".into(), json!(copies));
        o.insert("replicas".into(), json!(saved.targets));
        o.insert("capacity_source".into(), json!(saved.source));
        o.insert("create_ms".into(), json!(create_ms));
        o.insert("ready_ms".into(), json!(ready_ms));
        o.insert(
            "summary".into(),
            json!(format!(
                "{} workload copies ready in namespace {ns} (fenced: DNS and {}:{} only), ready in {ready_ms} ms",
                copies.len(),
                p.db_host,
                p.db_port
            )),
        );
        Ok(o)
    }
}

/// The drill namespaces a run's copy steps journaled, with their region.
pub fn namespaces(view: &crate::engine::view::RunView) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = view
        .steps
        .iter()
        .filter(|s| s.action == KUBE_KIND)
        .filter_map(|s| s.checkpoint.clone())
        .filter_map(|c| serde_json::from_value::<Saved>(c).ok())
        .map(|s| (s.region, s.namespace))
        .collect();
    out.dedup();
    out
}

/// Deletes one drill namespace and waits until it is gone; `false` when
/// it was already gone, or is not `run_id`'s (a foreign namespace of that
/// name, which the copy step refused, is never deleted).
pub async fn remove_namespace(
    env: &crate::environment::Environment,
    region: &str,
    ns: &str,
    run_id: &str,
    limit: std::time::Duration,
) -> Result<bool, ActionError> {
    let node = env
        .component(region, "kube")
        .ok_or_else(|| ActionError::Config {
            message: format!(
                "the run made drill namespace {ns} in region `{region}`, whose kube section is gone from the environment"
            ),
            hint: "run the cleanup with the run's environment file".into(),
        })?;
    let cfg = crate::action::decode_resolved("kube", node, |c, n| {
        crate::kube::config::decode(c, n, &format!("regions.{region}.kube"))
    })?;
    let deadline = Instant::now() + limit;
    let cluster = crate::kube::config::Cluster::connect(&cfg, region, deadline).await?;
    match drillcopy::namespace(&cluster, ns).await? {
        None => return Ok(false),
        Some(st) if st.run.as_deref() != Some(run_id) => {
            tracing::warn!(namespace = ns, "not this run's namespace; left alone");
            return Ok(false);
        }
        Some(_) => {}
    }
    Ok(drillcopy::delete_namespace(&cluster, ns, deadline).await?)
}
