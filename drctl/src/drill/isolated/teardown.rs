//! `drill.teardown`: delete this run's drill namespace (and so its
//! workload copies; waits until it is gone), stop this run's clone, remove its scratch directory
//! and set its drill records back, from what the run journaled (the clone
//! steps' parameters, the DNS step's checkpoint), so it also undoes a
//! clone or record a killed earlier process left. Then verifies: no
//! server runs from the directory and nothing listens on the clone's port.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::action::{ActionError, ActionKind, Outputs, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct DrillTeardown;

#[async_trait]
impl ActionKind for DrillTeardown {
    type Params = ();

    fn kind(&self) -> &'static str {
        "drill.teardown"
    }
    fn summary(&self) -> &'static str {
        "Delete the isolated drill's namespace, stop its clone, remove its scratch directory, set the drill DNS record back"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "removed",
            "killed",
            "dns_restored",
            "namespaces_deleted",
            "teardown_ms",
            "summary",
        ]
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let r = MapReader::new(ctx, with, "drill.teardown")?;
        r.finish(ctx);
        Some(())
    }
    fn describe(&self, _params: &Value) -> String {
        "delete the drill namespace; stop and remove the drill's clone; set the drill DNS record back".into()
    }
    async fn execute(&self, _p: &(), ctx: &StepContext) -> Result<Outputs, ActionError> {
        let t = std::time::Instant::now();
        let view = crate::engine::run::load_view_only(ctx.store.as_ref(), &ctx.run_id)
            .await
            .map_err(|e| {
                ActionError::failed(format!(
                    "read the run's journal: {}",
                    crate::diag::error_chain(&e)
                ))
            })?;
        let cfg = match ctx.env.as_deref() {
            Some(env) if env.doc.get("dns").is_some() => Some(super::dns::env_config(env)?),
            _ => None,
        };
        let limit = ctx.remaining().min(Duration::from_secs(30));
        let done =
            super::cleanup(&view, &ctx.run_id, ctx.env.as_deref(), cfg.as_ref(), limit).await?;
        let ports: Vec<u16> = view
            .steps
            .iter()
            .filter(|s| s.action == super::CLONE_KIND)
            .filter_map(|s| s.checkpoint.as_ref()?.get("port")?.as_u64())
            .map(|p| p as u16)
            .collect();
        for root in super::scratch_roots(&view) {
            if let Some(pid) = super::clone_running(&root, &ctx.run_id) {
                return Err(ActionError::failed(format!(
                    "the clone (pid {pid}) still runs after the teardown"
                )));
            }
        }
        for port in ports {
            if std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Err(ActionError::failed(format!(
                    "something still listens on the clone's port 127.0.0.1:{port}"
                )));
            }
        }
        let mut o = Outputs::new();
        o.insert("removed".into(), json!(done.removed));
        o.insert("killed".into(), json!(done.killed));
        o.insert("dns_restored".into(), json!(done.dns_restored));
        o.insert("namespaces_deleted".into(), json!(done.namespaces_deleted));
        o.insert("teardown_ms".into(), json!(t.elapsed().as_millis() as u64));
        o.insert(
            "summary".into(),
            json!(format!(
                "removed {} clone(s), {} drill namespace(s), drill record(s) set back: {}",
                done.removed.len(),
                done.namespaces_deleted.len(),
                if done.dns_restored.is_empty() {
                    "none".to_string()
                } else {
                    done.dns_restored.join(", ")
                }
            )),
        );
        Ok(o)
    }
}
