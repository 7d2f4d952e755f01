//! `drctl immudb trust` (trusted-state custody, for a CronJob) and
//! `drctl immudb verify-proof` (offline audit of a saved bundle).

use std::path::Path;
use std::sync::Arc;

use base64::Engine;

use super::{ui, CliError, OutputFormat};
use crate::exit;
use crate::immudb::action::{load_trusted, save_trusted, ImmudbServer};
use crate::immudb::{gateway, verify_state_signature, verify_transition, TrustedState, Verdict};
use crate::store::Store;

fn verdict_text(v: &Verdict) -> String {
    format!("{v:?}")
}

pub async fn cmd_trust(
    env_path: &Path,
    region: &str,
    store: Arc<dyn Store>,
    output: OutputFormat,
) -> Result<i32, CliError> {
    let (env, d) = crate::environment::load_environment(env_path).map_err(CliError::invalid)?;
    if d.has_errors() {
        return Err(CliError::invalid(d));
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
    let fail = |e: String| CliError::new(exit::VERIFY_REJECTED, e);
    let pem = server
        .pinned_pem()
        .map_err(|e| CliError::new(exit::INVALID_INPUT, e.to_string()))?;
    let mut client = server.client().map_err(|e| fail(e.to_string()))?;
    let previous = load_trusted(store.as_ref(), &env.name, &server.database)
        .await
        .map_err(|e| CliError::from_error(exit::VERIFY_REJECTED, &e))?
        .map(|s| (s.state, s.version));
    let (new, how) = match &previous {
        None => {
            // First use: the signature check with the pinned key is all
            // there is (trust on first use without one).
            client.login().await.map_err(|e| fail(e.to_string()))?;
            let st = client.state().await.map_err(|e| fail(e.to_string()));
            let _ = client.close().await;
            let st = st?;
            verify_state_signature(&st, pem.as_deref()).map_err(|e| fail(e.to_string()))?;
            (
                TrustedState::from_state(&st).map_err(|e| fail(e.to_string()))?,
                "first trusted state".to_string(),
            )
        }
        Some((t, _)) => {
            let (v, st) = client
                .check_against(t, pem.as_deref())
                .await
                .map_err(|e| fail(format!("not advancing: {e}")))?;
            if let Verdict::Behind { .. } = v {
                return Err(CliError::new(exit::VERIFY_BEHIND, format!("the primary's immudb is behind the trusted state: {}", verdict_text(&v)))
                    .hint("the ledger lost transactions or was reset; investigate before trusting it again"));
            }
            (
                TrustedState::from_state(&st).map_err(|e| fail(e.to_string()))?,
                format!("advanced by verified proof: {}", verdict_text(&v)),
            )
        }
    };
    save_trusted(
        store.as_ref(),
        &env.name,
        &new,
        region,
        previous.as_ref().map(|(_, v)| *v),
    )
    .await
    .map_err(|e| CliError::from_error(exit::INTERNAL, &e))?;
    let line = format!(
        "trusted {} tx {} ({how}); stored in {}",
        new.db,
        new.tx_id,
        store.describe()
    );
    if output == OutputFormat::Json {
        ui::out(&serde_json::json!({"db": new.db, "tx_id": new.tx_id, "how": how}).to_string());
    } else {
        ui::out(&line);
    }
    Ok(exit::OK)
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
        Ok(Verdict::Behind { trusted_tx, replica_tx, txs_lost }) => (exit::VERIFY_BEHIND, format!("behind: the bundle's state is tx {replica_tx}, {txs_lost} transaction(s) before the trusted tx {trusted_tx}")),
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
