//! `drctl immudb trust` (trusted-state custody, for a CronJob) and
//! `drctl immudb verify-proof` (offline audit of a saved bundle).

use std::path::Path;
use std::sync::Arc;

use base64::Engine;

use super::{ui, CliError, OutputFormat};
use crate::exit;
use crate::immudb::action::ImmudbServer;
use crate::immudb::custody::{advance, load_checkpoints, load_trusted, TrustError};
use crate::immudb::{
    gateway, verify_state_signature, verify_transition, ClientError, TrustedState, Verdict,
};
use crate::store::{LeaseMode, Store};

fn verdict_text(v: &Verdict) -> String {
    format!("{v:?}")
}

/// How a failed exchange with immudb exits: an outage (21) is not a
/// rejected proof (13), so a CronJob alert can tell them apart.
fn client_failure(e: ClientError, context: &str) -> CliError {
    let code = match &e {
        e if e.is_unavailable() => exit::IMMUDB_UNAVAILABLE,
        ClientError::Config(_) => exit::INVALID_INPUT,
        _ => exit::VERIFY_REJECTED,
    };
    let c = CliError::new(code, format!("{context}: {e}"));
    if code == exit::IMMUDB_UNAVAILABLE {
        c.hint("immudb could not be asked, so nothing was verified: an outage or a configuration problem (URL, credentials, TLS), not evidence of tampering")
    } else {
        c
    }
}

pub async fn cmd_trust(
    env_path: &Path,
    region: &str,
    store: Arc<dyn Store>,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let (mut env, d) = crate::environment::load_environment(env_path).map_err(CliError::invalid)?;
    if d.has_errors() {
        return Err(CliError::invalid(d));
    }
    // Where the last failover, switchover or failback put the primary.
    if let Some(a) = super::plan::recorded_active(store.as_ref(), Some(env_path)).await {
        if env.regions.contains_key(&a) {
            env.active_region = a;
        }
    }
    // The primary's custody advances only from the primary: the DR ledger is
    // checked against it (`immudb.verify`), never adopted as its trusted state.
    if region != env.active_region {
        return Err(CliError::new(
            exit::INVALID_INPUT,
            format!(
                "`{region}` is not the active region of {} (`{}` is): trusted states are taken from the active region only",
                env.name, env.active_region
            ),
        )
        .hint("verify other regions with a runbook step `immudb.verify`; the active region is the one the last failover, switchover or failback recorded (`drctl status`), else the file's `active_region`"));
    }
    let comp = env.component(region, "immudb").ok_or_else(|| {
        CliError::new(
            exit::INVALID_INPUT,
            format!(
                "region `{region}` has no immudb section in {}",
                env_path.display()
            ),
        )
    })?;
    let server =
        crate::action::decode_resolved("immudb", comp, |c, n| ImmudbServer::decode(c, n, "immudb"))
            .map_err(|e| CliError::new(exit::INVALID_INPUT, e.to_string()))?;
    // Outside a failover only: while a mutating run (a failover or a drill)
    // holds the environment, the old primary may be fenced, half-dead or
    // about to be demoted, and its ledger is no longer the one to follow.
    let lock = crate::engine::lock_name(Some(&env));
    if let Some(h) = store
        .leases(&lock)
        .await?
        .into_iter()
        .find(|l| l.mode == LeaseMode::Exclusive)
    {
        return Err(CliError::new(
            exit::LOCK_HELD,
            format!("not advancing the trusted state while {h} holds `{lock}`"),
        )
        .hint("a failover or drill is in progress; the trusted state advances again once it has finished"));
    }
    let pem = server
        .pinned_pem()
        .map_err(|e| CliError::new(exit::INVALID_INPUT, e.to_string()))?;
    let mut client = server
        .client()
        .map_err(|e| CliError::new(exit::INVALID_INPUT, e.to_string()))?;
    let db = server.database.clone();
    let checkpoints = load_checkpoints(store.as_ref(), &env.name, region, &db)
        .await
        .map_err(trust_error)?;
    let previous = load_trusted(store.as_ref(), &env.name, region, &db)
        .await
        .map_err(trust_error)?
        .map(|s| s.version);
    let (new, how) = if checkpoints.is_empty() {
        // First use: the signature check with the pinned key is all
        // there is (trust on first use without one).
        client
            .login()
            .await
            .map_err(|e| client_failure(e, "cannot read the first trusted state"))?;
        let st = client.state().await;
        let _ = client.close().await;
        let st = st.map_err(|e| client_failure(e, "cannot read the first trusted state"))?;
        verify_state_signature(&st, pem.as_deref())
            .map_err(|e| CliError::new(exit::VERIFY_REJECTED, e.to_string()))?;
        (
            TrustedState::from_state(&st)
                .map_err(|e| CliError::new(exit::VERIFY_REJECTED, e.to_string()))?,
            "first trusted state".to_string(),
        )
    } else {
        let (v, st) = client
            .check_against(&checkpoints, pem.as_deref())
            .await
            .map_err(|e| client_failure(e, "not advancing"))?;
        if let Verdict::Behind { .. } = v {
            return Err(CliError::new(
                exit::VERIFY_BEHIND,
                format!(
                    "the primary's immudb is behind the trusted state: {}",
                    verdict_text(&v)
                ),
            )
            .hint(
                "the ledger lost transactions or was reset; investigate before trusting it again",
            ));
        }
        (
            TrustedState::from_state(&st)
                .map_err(|e| CliError::new(exit::VERIFY_REJECTED, e.to_string()))?,
            format!("advanced by verified proof: {}", verdict_text(&v)),
        )
    };
    advance(store.as_ref(), &env.name, region, &new, &how, previous)
        .await
        .map_err(trust_error)?;
    let line = format!(
        "trusted {} tx {} of {region} ({how}); stored in {}",
        new.db,
        new.tx_id,
        store.describe()
    );
    if output == OutputFormat::Json {
        ui::out(
            &serde_json::json!({"db": new.db, "tx_id": new.tx_id, "region": region, "how": how})
                .to_string(),
        );
    } else {
        ui::out(&line);
    }
    Ok(exit::OK)
}

fn trust_error(e: TrustError) -> CliError {
    match e {
        TrustError::Store(s) => CliError::from(s),
        e => CliError::from_error(exit::INTERNAL, &e),
    }
}

pub fn cmd_verify_proof(
    bundle: &Path,
    trusted_tx: u64,
    trusted_alh: &str,
    pubkey: Option<&Path>,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let body = std::fs::read(bundle).map_err(|e| {
        CliError::new(
            exit::NOT_FOUND,
            format!("cannot read {}: {e}", bundle.display()),
        )
    })?;
    let b = gateway::parse_bundle(&body)
        .map_err(|e| CliError::new(exit::VERIFY_REJECTED, format!("[malformed bundle] {e}")))?;
    let alh = base64::engine::general_purpose::STANDARD
        .decode(trusted_alh.trim())
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
        .ok_or_else(|| {
            CliError::new(exit::USAGE, "--trusted-alh must be 32 bytes in base64")
                .hint("as in the state's txHash field")
        })?;
    let pem = match pubkey {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            CliError::new(exit::NOT_FOUND, format!("cannot read {}: {e}", p.display()))
        })?),
        None => None,
    };
    let trusted = TrustedState {
        db: b.state.db.clone(),
        tx_id: trusted_tx,
        tx_hash: alh,
        signature: None,
    };
    let result = verify_transition(&trusted, &b.state, b.verifiable_tx.as_ref(), pem.as_deref());
    let (code, text) = match &result {
        Ok(Verdict::Behind { trusted_tx, replica_tx, txs_lost, .. }) => (exit::VERIFY_BEHIND, format!("behind: the bundle's state is tx {replica_tx}, {txs_lost} transaction(s) before the trusted tx {trusted_tx}")),
        Ok(v) => (exit::OK, format!("verified: {}", verdict_text(v))),
        Err(e) => (exit::VERIFY_REJECTED, format!("rejected: {e}")),
    };
    if output == OutputFormat::Json {
        ui::out(
            &serde_json::json!({"ok": code == exit::OK, "exit_code": code, "result": text})
                .to_string(),
        );
    } else if code == exit::OK {
        ui::out(&text);
    } else {
        ui::err(&format!("{text}\n  (exit code {code})"));
    }
    Ok(code)
}
