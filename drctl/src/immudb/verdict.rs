//! The DR decision (SPEC §7): given the state trusted from the primary and what
//! a replica reports, decide whether the replica is the same history, a proven
//! extension of it, or behind it (data loss, reported as a verdict rather than an
//! error because it is an expected failover outcome that needs a human decision).

use serde::{Deserialize, Serialize};

use crate::immudb::error::VerifyError;
use crate::immudb::gateway::{ImmutableState, VerifiableTx, WireSignature};
use crate::immudb::hash::{digest_from_slice, hex32, hex_bytes, Digest, SHA256_EMPTY};
use crate::immudb::htree::entries_root;
use crate::immudb::proofs::verify_dual_proof;
use crate::immudb::signature::{verify_signature_over, verify_state_signature};
use crate::immudb::tx::entry_digest;

/// Signature persisted with a trusted state (raw bytes, hex in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSignature {
    #[serde(with = "hex_bytes")]
    pub public_key: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

/// The last state drctl trusts for one database; persisted by drctl's state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedState {
    pub db: String,
    pub tx_id: u64,
    #[serde(with = "hex32")]
    pub tx_hash: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<StoredSignature>,
}

impl TrustedState {
    /// The trusted state of an empty database.
    pub fn empty(db: impl Into<String>) -> Self {
        TrustedState {
            db: db.into(),
            tx_id: 0,
            tx_hash: SHA256_EMPTY,
            signature: None,
        }
    }

    /// Adopts a gateway state. Only call this after `verify_transition`
    /// accepted it (or for trust-on-first-use on the primary).
    pub fn from_state(state: &ImmutableState) -> Result<Self, VerifyError> {
        Ok(TrustedState {
            db: state.db.clone(),
            tx_id: state.tx_id,
            tx_hash: state.tx_hash_digest()?,
            signature: state
                .signature
                .as_ref()
                .filter(|s| !s.signature.is_empty())
                .map(|s: &WireSignature| StoredSignature {
                    public_key: s.public_key.clone(),
                    signature: s.signature.clone(),
                }),
        })
    }
}

/// Outcome of comparing a replica to the trusted state. Any *failed* check is a
/// `VerifyError`, never a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Same tx id and same Alh.
    Same { tx: u64 },
    /// The replica extends the trusted history; the dual proof `from_tx -> to_tx` verified.
    Ahead { from_tx: u64, to_tx: u64 },
    /// The replica stops before the trusted tx: `txs_lost` committed txs are missing.
    Behind {
        trusted_tx: u64,
        replica_tx: u64,
        txs_lost: u64,
    },
}

/// Decides how `new_state` (from the replica) relates to `trusted`.
///
/// `new_state`'s signature is checked first (see `verify_state_signature`). When
/// the replica is ahead, `verifiable_tx` must be the answer to
/// `GET /api/db/verifiable/tx/{new.txId}?proveSinceTx={trusted.txId}` and its dual
/// proof is verified against the *trusted* Alh. If the response also carries the
/// target tx's entries, `Eh` is recomputed from them; if it carries a signature
/// and a key is pinned, that signature is verified too.
pub fn verify_transition(
    trusted: &TrustedState,
    new_state: &ImmutableState,
    verifiable_tx: Option<&VerifiableTx>,
    pinned_pubkey_pem: Option<&str>,
) -> Result<Verdict, VerifyError> {
    if new_state.db != trusted.db {
        return Err(VerifyError::DatabaseMismatch {
            trusted: trusted.db.clone(),
            got: new_state.db.clone(),
        });
    }
    verify_state_signature(new_state, pinned_pubkey_pem)?;
    let n = trusted.tx_id;
    let m = new_state.tx_id;
    let a_m = new_state.tx_hash_digest()?;

    if m == n {
        if a_m != trusted.tx_hash {
            return Err(VerifyError::AlhMismatch { tx: n });
        }
        return Ok(Verdict::Same { tx: n });
    }
    if m < n {
        return Ok(Verdict::Behind {
            trusted_tx: n,
            replica_tx: m,
            txs_lost: n - m,
        });
    }
    if n == 0 {
        // The empty history is a prefix of every history: nothing to prove.
        return Ok(Verdict::Ahead {
            from_tx: 0,
            to_tx: m,
        });
    }
    let vtx = verifiable_tx.ok_or(VerifyError::ProofMissing)?;
    let proof = vtx
        .dual_proof
        .as_ref()
        .ok_or(VerifyError::ProofMissing)?
        .to_proof()?;
    verify_dual_proof(&proof, n, m, &trusted.tx_hash, &a_m)?;
    check_verifiable_tx_extras(vtx, &new_state.db, m, &a_m, pinned_pubkey_pem)?;
    Ok(Verdict::Ahead {
        from_tx: n,
        to_tx: m,
    })
}

/// Optional checks on the parts of a `VerifiableTx` outside the dual proof.
fn check_verifiable_tx_extras(
    vtx: &VerifiableTx,
    db: &str,
    target: u64,
    target_alh: &Digest,
    pinned_pubkey_pem: Option<&str>,
) -> Result<(), VerifyError> {
    if let Some(tx) = &vtx.tx {
        if let Some(h) = &tx.header {
            let hdr = h.to_header("tx.header")?;
            // The tx shown must be the proven target (the dual proof covered its Alh).
            if hdr.id == target && &hdr.alh()? != target_alh {
                return Err(VerifyError::AlhMismatch { tx: target });
            }
            if hdr.id == target && !tx.entries.is_empty() && tx.entries.len() as u64 == hdr.nentries
            {
                verify_entries(&tx.entries, hdr.version, &hdr.eh)?;
            }
        }
    }
    if let (Some(pem), Some(sig)) = (pinned_pubkey_pem, vtx.signature.as_ref()) {
        verify_signature_over(
            db,
            target,
            target_alh,
            Some((&sig.public_key, &sig.signature)),
            Some(pem),
        )?;
    }
    Ok(())
}

/// Recomputes `Eh` from a complete entry list (hashes only, values not needed).
pub fn verify_entries(
    entries: &[crate::immudb::gateway::WireTxEntry],
    version: i64,
    eh: &Digest,
) -> Result<(), VerifyError> {
    let mut ds = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let hv = digest_from_slice(&format!("tx.entries[{i}].hValue"), &e.h_value)?;
        let md = e.metadata.as_ref().map(|m| m.to_metadata());
        ds.push(entry_digest(version, &e.key, &hv, md.as_ref())?);
    }
    if &entries_root(&ds) != eh {
        return Err(VerifyError::EntriesProofFailed {
            reason: "entries do not hash to eH".into(),
        });
    }
    Ok(())
}
