//! `immudb.verify` (the runbook step after failover) and trusted-state
//! custody shared with `drctl immudb trust`.
//!
//! The trusted state lives in drctl's state store, outside the primary
//! region, and only ever advances through a verified proof.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use thiserror::Error;

use super::{ImmudbClient, TrustedState, Verdict};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::diag::error_chain;
use crate::secret::SecretRef;
use crate::store::{Store, StoreError};
use crate::yaml::Node;

pub const COLLECTION: &str = "immudb-trusted";

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

/// The trusted state could not be read or saved.
#[derive(Debug, Error)]
pub enum TrustError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored trusted state is unreadable")]
    Unreadable(#[source] serde_json::Error),
}

/// A trusted state as stored: the state, when it was taken, and the
/// document version a compare-and-set must quote.
#[derive(Debug, Clone)]
pub struct StoredTrust {
    pub state: TrustedState,
    /// `None` when the document does not say (never read as 1970).
    pub at_ms: Option<u64>,
    pub version: u64,
}

/// The trusted state for an environment's database, with when it was taken.
pub async fn load_trusted(
    store: &dyn Store,
    env: &str,
    db: &str,
) -> Result<Option<StoredTrust>, TrustError> {
    let Some(doc) = store.get_doc(COLLECTION, &format!("{env}-{db}")).await? else {
        return Ok(None);
    };
    let at = doc.doc.get("at_ms").and_then(Value::as_u64);
    let st: TrustedState =
        serde_json::from_value(doc.doc.get("state").cloned().unwrap_or(Value::Null))
            .map_err(TrustError::Unreadable)?;
    Ok(Some(StoredTrust {
        state: st,
        at_ms: at,
        version: doc.version,
    }))
}

/// Advances the trusted state with compare-and-set against the version
/// that was verified: two custodians (the CronJob and a failover) cannot
/// silently overwrite each other's verified state.
pub async fn save_trusted(
    store: &dyn Store,
    env: &str,
    st: &TrustedState,
    source: &str,
    previous: Option<u64>,
) -> Result<(), TrustError> {
    let doc = json!({"state": st, "at_ms": crate::journal::now_ms(), "source": source});
    let expect = previous.map_or(crate::store::Expect::Absent, crate::store::Expect::Version);
    store
        .put_doc(COLLECTION, &format!("{env}-{}", st.db), &doc, expect)
        .await
        .map(|_| ())
        .map_err(TrustError::from)
}

#[derive(Clone, Copy)]
pub struct ImmudbVerify;

/// The step's `with:`, decoded.
pub struct Params {
    server: ImmudbServer,
    max_lost_txs: u64,
}

#[async_trait]
impl ActionKind for ImmudbVerify {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "immudb.verify"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Reads the ledger; writes only drctl's own trusted-state document.
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
        r.finish(ctx);
        Some(Params {
            server: server?,
            max_lost_txs,
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
        Ok(
            match load_trusted(ctx.store.as_ref(), &env.name, &p.server.database)
                .await
                .map_err(|e| ActionError::failed(error_chain(&e)))?
                .map(|s| (s.state, s.at_ms))
            {
                Some((t, at)) => Preflight::ok(format!(
                    "trusted state: {} tx {} (taken {})",
                    t.db,
                    t.tx_id,
                    at.map_or_else(
                        || "at an unrecorded time".to_string(),
                        crate::journal::format_ms
                    )
                )),
                None => Preflight::problem(format!(
                    "no trusted immudb state for `{}`: run `drctl immudb trust` on a schedule",
                    p.server.database
                )),
            },
        )
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let env = ctx.env()?;
        let stored = load_trusted(ctx.store.as_ref(), &env.name, &p.server.database)
            .await
            .map_err(|e| ActionError::failed(error_chain(&e)))?
            .ok_or_else(|| ActionError::Config {
                message: format!("no trusted immudb state for `{}` in {}", p.server.database, ctx.store.describe()),
                hint: "run `drctl immudb trust --env FILE --region PRIMARY` regularly (a CronJob) before you need it".into(),
            })?;
        let (trusted, at, version) = (stored.state, stored.at_ms, stored.version);
        let pem = p.server.pinned_pem()?;
        let mut client = p.server.client()?;
        let (verdict, state) = client
            .check_against(&trusted, pem.as_deref())
            .await
            .map_err(|e| ActionError::failed_hint(format!("immudb verification failed: {e}"), "the DR ledger does not prove it extends the trusted history; treat it as untrusted"))?;
        let mut o = Outputs::new();
        o.insert("trusted_tx".into(), json!(trusted.tx_id));
        o.insert("replica_tx".into(), json!(state.tx_id));
        // Unknown when the stored state has no time: null, never "55 years".
        let since = at.map(|a| crate::journal::now_ms().saturating_sub(a));
        match verdict {
            Verdict::Behind { txs_lost, .. } => {
                o.insert("verdict".into(), json!("behind"));
                o.insert("txs_lost".into(), json!(txs_lost));
                o.insert("rpo".into(), json!({"txs_lost": txs_lost, "trusted_state_age_ms": since, "method": "immudb: trusted tx id minus the DR server's current tx id"}));
                if txs_lost > p.max_lost_txs {
                    return Err(ActionError::failed_hint(
                        format!("DR immudb is behind the trusted state by {txs_lost} transaction(s) (trusted tx {}, DR tx {}); allowed: {}", trusted.tx_id, state.tx_id, p.max_lost_txs),
                        "data loss in the audit ledger: raise max_lost_txs only if the loss is accepted",
                    ));
                }
                o.insert(
                    "summary".into(),
                    json!(format!("behind by {txs_lost} tx (tolerated)")),
                );
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
                o.insert(
                    "rpo".into(),
                    json!({"txs_lost": 0, "method": "immudb: dual proof from the trusted state"}),
                );
                o.insert("summary".into(), json!(summary));
                // The trusted state advances only through a verified proof.
                if let Ok(new) = TrustedState::from_state(&state) {
                    save_trusted(
                        ctx.store.as_ref(),
                        &env.name,
                        &new,
                        ctx.target_region.as_deref().unwrap_or("dr"),
                        Some(version),
                    )
                    .await
                    .map_err(|e| ActionError::failed(error_chain(&e)))?;
                }
            }
        }
        Ok(o)
    }
}
