//! `immudb.verify` (the runbook step after failover, and the scheduled
//! backup check) and the immudb server entry shared with `drctl immudb trust`.
//!
//! The step proves the target region's ledger against the *source* region's
//! trusted checkpoints ([`super::custody`]) and never writes them: only
//! `drctl immudb trust` on the active region advances the primary's custody.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::custody::{advance, load_checkpoints, load_trusted};
use super::verdict::BehindProof;
use super::{ImmudbClient, TrustedState, Verdict};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::diag::error_chain;
use crate::runbook::model::Mode;
use crate::secret::SecretRef;
use crate::yaml::Node;

/// Where an immudb server is (`regions.R.immudb` in the environment).
#[derive(Debug, Clone)]
pub struct ImmudbServer {
    pub url: String,
    pub username: String,
    pub password: Option<SecretRef>,
    pub database: String,
    /// PEM `PUBLIC KEY` file of the server's state-signing key, pinned.
    pub pubkey_file: Option<String>,
    pub timeout: Duration,
}

impl ImmudbServer {
    pub fn decode(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Option<ImmudbServer> {
        let mut r = MapReader::new(ctx, node, what.to_string())?;
        let url = r.req(ctx, "url").and_then(|n| ctx.string(n, "url"));
        let username = r
            .opt("username")
            .and_then(|n| ctx.string(n, "username"))
            .unwrap_or_else(|| "immudb".into());
        let password = r
            .opt("password")
            .and_then(|n| ctx.secret_ref(n, "password"));
        let database = r
            .opt("database")
            .and_then(|n| ctx.string(n, "database"))
            .unwrap_or_else(|| "defaultdb".into());
        let pubkey_file = r
            .opt("pubkey_file")
            .and_then(|n| ctx.string(n, "pubkey_file"));
        let timeout = r
            .opt("timeout")
            .and_then(|n| ctx.duration(n, "timeout"))
            .unwrap_or(Duration::from_secs(10));
        r.finish(ctx);
        Some(ImmudbServer {
            url: url?,
            username,
            password,
            database,
            pubkey_file,
            timeout,
        })
    }

    pub fn client(&self) -> Result<ImmudbClient, ActionError> {
        let pw = match &self.password {
            Some(r) => r.resolve()?.expose().to_string(),
            None => String::new(),
        };
        ImmudbClient::new(&self.url, &self.username, &pw, &self.database, self.timeout)
            .map_err(|e| ActionError::failed(e.to_string()))
    }

    pub fn pinned_pem(&self) -> Result<Option<String>, ActionError> {
        match &self.pubkey_file {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(p)
                .map(Some)
                .map_err(|e| ActionError::Config {
                    message: format!("cannot read pubkey_file {p}: {e}"),
                    hint: "point it at the server's PEM PUBLIC KEY".into(),
                }),
        }
    }
}

#[derive(Clone, Copy)]
pub struct ImmudbVerify;

/// The step's `with:`, decoded.
pub struct Params {
    server: ImmudbServer,
    max_lost_txs: u64,
    /// Accept a replica behind the trusted state even when no trusted
    /// checkpoint at or below its tx proves its history is a prefix of the
    /// trusted one (the decision is in the step's journaled parameters).
    allow_unproven_behind: bool,
}

#[async_trait]
impl ActionKind for ImmudbVerify {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "immudb.verify"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Reads the ledger; writes only drctl's own custody of the target
        // region (incident runs), never the source's.
        true
    }
    fn summary(&self) -> &'static str {
        "Prove the DR immudb extends the trusted primary state (dual proof); measure loss"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            "verdict",
            "trusted_tx",
            "replica_tx",
            "txs_lost",
            "checkpoint_tx",
            "behind_proof",
            "custody",
            "rpo",
            "summary",
        ]
    }
    /// A verified ledger proves the DR copy's integrity, which the service needs to be trusted.
    fn proves_recovery(&self, _params: &Value) -> bool {
        true
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "immudb.verify")?;
        let node = r.req(ctx, "server");
        let server = node
            .filter(|n| !ctx.deferred(n))
            .and_then(|n| ImmudbServer::decode(ctx, n, "server"));
        let max_lost_txs = r
            .opt("max_lost_txs")
            .and_then(|n| ctx.uint(n, "max_lost_txs"))
            .unwrap_or(0);
        let allow_unproven_behind = r
            .opt("allow_unproven_behind")
            .and_then(|n| ctx.boolean(n, "allow_unproven_behind"))
            .unwrap_or(false);
        r.finish(ctx);
        Some(Params {
            server: server?,
            max_lost_txs,
            allow_unproven_behind,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "verify immudb {} against the trusted state",
            params["server"]["url"].as_str().unwrap_or("?")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let env = ctx.env()?;
        let source = &env.active_region;
        let db = &p.server.database;
        let cps = load_checkpoints(ctx.store.as_ref(), &env.name, source, db)
            .await
            .map_err(|e| ActionError::failed(error_chain(&e)))?;
        Ok(match cps.last() {
            Some(t) => Preflight::ok(format!(
                "trusted state of {source}: {} tx {} ({} checkpoint(s))",
                t.db,
                t.tx_id,
                cps.len()
            )),
            None => Preflight::problem(format!(
                "no trusted immudb state for `{db}` of region {source}: run `drctl immudb trust --region {source}` on a schedule"
            )),
        })
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let env = ctx.env()?;
        let source = env.active_region.clone();
        let db = &p.server.database;
        let store = ctx.store.as_ref();
        let failed = |e: &dyn std::error::Error| ActionError::failed(error_chain(e));
        let checkpoints = load_checkpoints(store, &env.name, &source, db)
            .await
            .map_err(|e| failed(&e))?;
        let Some(trusted) = checkpoints.last().cloned() else {
            return Err(ActionError::Config {
                message: format!("no trusted immudb state for `{db}` of region {source} in {}", store.describe()),
                hint: format!("run `drctl immudb trust --env FILE --region {source}` regularly (a CronJob) before you need it"),
            });
        };
        // When the newest trusted state was taken (unknown for a document
        // of an earlier drctl: then no age is printed rather than a made-up one).
        let at = load_trusted(store, &env.name, &source, db)
            .await
            .map_err(|e| failed(&e))?
            .map(|s| s.at_ms)
            .filter(|&ms| ms > 0);
        let pem = p.server.pinned_pem()?;
        let mut client = p.server.client()?;
        let (verdict, state) = client
            .check_against(&checkpoints, pem.as_deref())
            .await
            .map_err(|e| match e {
                e if e.is_unavailable() => ActionError::failed_hint(
                    format!("immudb unavailable, nothing verified: {e}"),
                    "an outage or a configuration problem (URL, credentials, TLS), not evidence of tampering; retry when the server answers",
                ),
                e => ActionError::failed_hint(
                    format!("immudb verification failed: {e}"),
                    "the DR ledger does not prove it extends the trusted history; treat it as untrusted",
                ),
            })?;
        let mut o = Outputs::new();
        o.insert("trusted_tx".into(), json!(trusted.tx_id));
        o.insert("replica_tx".into(), json!(state.tx_id));
        let since = at.map(|at| crate::journal::now_ms().saturating_sub(at));
        let summary = match verdict {
            Verdict::Behind {
                txs_lost, proof, ..
            } => {
                o.insert("verdict".into(), json!("behind"));
                o.insert("txs_lost".into(), json!(txs_lost));
                o.insert("behind_proof".into(), json!(proof));
                o.insert("checkpoint_tx".into(), json!(proof.checkpoint_tx()));
                o.insert("rpo".into(), json!({"txs_lost": txs_lost, "trusted_state_age_ms": since, "method": "immudb: trusted tx id minus the DR server's current tx id"}));
                let how = match proof {
                    BehindProof::AtCheckpoint { checkpoint_tx } => {
                        format!("its state equals trusted checkpoint tx {checkpoint_tx}")
                    }
                    BehindProof::Consistent { checkpoint_tx } => {
                        format!("dual proof from trusted checkpoint tx {checkpoint_tx} verified")
                    }
                    BehindProof::Unproven => {
                        if !p.allow_unproven_behind {
                            return Err(ActionError::failed_hint(
                                format!("DR immudb is behind the trusted state (trusted tx {}, DR tx {}) and unproven: no trusted checkpoint of {source} at or below tx {} shows its history is a prefix of the trusted one", trusted.tx_id, state.tx_id, state.tx_id),
                                "it may be another history (a fork); set `allow_unproven_behind: true` on the step only if you accept a ledger drctl cannot check",
                            ));
                        }
                        "unproven (allow_unproven_behind)".to_string()
                    }
                };
                if txs_lost > p.max_lost_txs {
                    return Err(ActionError::failed_hint(
                        format!("DR immudb is behind the trusted state by {txs_lost} transaction(s) (trusted tx {}, DR tx {}; {how}); allowed: {}", trusted.tx_id, state.tx_id, p.max_lost_txs),
                        "data loss in the audit ledger: raise max_lost_txs only if the loss is accepted",
                    ));
                }
                let proven = !matches!(proof, BehindProof::Unproven);
                let custody = self.keep_target_state(ctx, &state, proven, db).await?;
                o.insert("custody".into(), json!(custody));
                format!("behind by {txs_lost} tx (tolerated; {how})")
            }
            v => {
                let (name, summary) = match v {
                    Verdict::Same { .. } => ("same", format!("DR at trusted tx {}", trusted.tx_id)),
                    _ => (
                        "ahead",
                        format!("dual proof {} -> {} verified", trusted.tx_id, state.tx_id),
                    ),
                };
                o.insert("verdict".into(), json!(name));
                o.insert("txs_lost".into(), json!(0));
                o.insert("checkpoint_tx".into(), json!(trusted.tx_id));
                o.insert(
                    "rpo".into(),
                    json!({"txs_lost": 0, "method": "immudb: dual proof from the trusted state"}),
                );
                let custody = self.keep_target_state(ctx, &state, true, db).await?;
                o.insert("custody".into(), json!(custody));
                summary
            }
        };
        o.insert("summary".into(), json!(summary));
        Ok(o)
    }
}

impl ImmudbVerify {
    /// What happens to the verified target state. It belongs to the target
    /// region, so it may only ever seed or advance *that* region's custody
    /// (the one `drctl immudb trust` continues once the target is the active
    /// region), never the source's. Only an incident run keeps it (a drill
    /// rehearses and leaves custody alone), only a proven state, and never
    /// one older than what that custody already holds.
    async fn keep_target_state(
        &self,
        ctx: &StepContext,
        state: &super::ImmutableState,
        proven: bool,
        db: &str,
    ) -> Result<String, ActionError> {
        let env = ctx.env()?;
        let Some(target) = ctx.target_region.as_deref() else {
            return Ok("not kept: the run has no target region".into());
        };
        if target == env.active_region {
            return Ok("not kept: the target is the active region".into());
        }
        if ctx.mode == Mode::Drill {
            return Ok("not kept: drill mode leaves custody alone".into());
        }
        if !proven {
            return Ok("not kept: unproven".into());
        }
        let new = TrustedState::from_state(state)
            .map_err(|e| ActionError::failed(format!("immudb state: {e}")))?;
        let failed = |e: &dyn std::error::Error| ActionError::failed(error_chain(e));
        let current = load_trusted(ctx.store.as_ref(), &env.name, target, db)
            .await
            .map_err(|e| failed(&e))?;
        if let Some(c) = &current {
            if c.state.tx_id >= new.tx_id {
                return Ok(format!(
                    "not kept: {target}'s custody already holds tx {}",
                    c.state.tx_id
                ));
            }
        }
        let how = format!(
            "verified against {}'s checkpoints by run {}",
            env.active_region, ctx.run_id
        );
        advance(
            ctx.store.as_ref(),
            &env.name,
            target,
            &new,
            &how,
            current.map(|c| c.version),
        )
        .await
        .map_err(|e| failed(&e))?;
        Ok(format!("kept as {target}'s checkpoint tx {}", new.tx_id))
    }
}
