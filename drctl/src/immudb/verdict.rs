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
    /// The replica stops before the newest trusted tx: `txs_lost` committed txs
    /// are missing. `proof` says whether what it *does* hold was proven to be a
    /// prefix of the trusted history, and against which checkpoint.
    Behind {
        trusted_tx: u64,
        replica_tx: u64,
        txs_lost: u64,
        proof: BehindProof,
    },
}

/// How a replica behind the newest trusted state was checked. Being behind
/// loses data; being behind *on another history* (a fork) is a different
/// ledger, so "behind" is only accepted with one of the first two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum BehindProof {
    /// The replica is exactly at trusted checkpoint `checkpoint_tx` and its
    /// Alh equals the checkpoint's.
    AtCheckpoint { checkpoint_tx: u64 },
    /// A dual proof from trusted checkpoint `checkpoint_tx` (the newest at or
    /// below the replica's tx) to the replica's state verified.
    Consistent { checkpoint_tx: u64 },
    /// No trusted checkpoint at or below the replica's tx: nothing proves the
    /// replica's history is a prefix of the trusted one.
    Unproven,
}

impl BehindProof {
    pub fn checkpoint_tx(&self) -> Option<u64> {
        match self {
            BehindProof::AtCheckpoint { checkpoint_tx }
            | BehindProof::Consistent { checkpoint_tx } => Some(*checkpoint_tx),
            BehindProof::Unproven => None,
        }
    }
}

/// The newest checkpoint at or below `tx` that can anchor a proof (tx 0, the
/// empty history, proves nothing and is never used). `checkpoints` in any order.
pub fn checkpoint_at_or_below(checkpoints: &[TrustedState], tx: u64) -> Option<&TrustedState> {
    checkpoints
        .iter()
        .filter(|c| c.tx_id >= 1 && c.tx_id <= tx)
        .max_by_key(|c| c.tx_id)
}

/// Which tx the replica must prove its state `replica_tx` from, given the
/// trusted checkpoints: the newest trusted tx when the replica is ahead of it,
/// the newest checkpoint strictly below when it is behind (at a checkpoint,
/// the Alh is compared instead). `None`: no proof to ask for.
pub fn proof_source(checkpoints: &[TrustedState], replica_tx: u64) -> Option<u64> {
    let newest = checkpoints.iter().map(|c| c.tx_id).max()?;
    if replica_tx > newest {
        return (newest > 0).then_some(newest);
    }
    if replica_tx == newest {
        return None;
    }
    checkpoint_at_or_below(checkpoints, replica_tx)
        .map(|c| c.tx_id)
        .filter(|&k| k < replica_tx)
}

/// Decides how `new_state` (from the replica) relates to `trusted`, a single
/// trusted state (offline audits). See [`verify_against_checkpoints`].
pub fn verify_transition(
    trusted: &TrustedState,
    new_state: &ImmutableState,
    verifiable_tx: Option<&VerifiableTx>,
    pinned_pubkey_pem: Option<&str>,
) -> Result<Verdict, VerifyError> {
    verify_against_checkpoints(
        std::slice::from_ref(trusted),
        new_state,
        verifiable_tx,
        pinned_pubkey_pem,
    )
}

/// Decides how `new_state` (from the replica) relates to the trusted history,
/// given as its checkpoints (each a state drctl verified at the time; the
/// newest is the trusted state).
///
/// `new_state`'s signature is checked first (see `verify_state_signature`).
/// `verifiable_tx` must be the answer to
/// `GET /api/db/verifiable/tx/{new.txId}?proveSinceTx={proof_source(..)}`; its
/// dual proof is verified against the *trusted* Alh of that checkpoint, never
/// against a value the replica sent. If the response also carries the target
/// tx's entries, `Eh` is recomputed from them; if it carries a signature and a
/// key is pinned, that signature is verified too.
pub fn verify_against_checkpoints(
    checkpoints: &[TrustedState],
    new_state: &ImmutableState,
    verifiable_tx: Option<&VerifiableTx>,
    pinned_pubkey_pem: Option<&str>,
) -> Result<Verdict, VerifyError> {
    let trusted = checkpoints
        .iter()
        .max_by_key(|c| c.tx_id)
        .ok_or_else(|| VerifyError::malformed("trusted", "no trusted checkpoint"))?;
    if let Some(other) = checkpoints.iter().find(|c| c.db != trusted.db) {
        return Err(VerifyError::DatabaseMismatch {
            trusted: trusted.db.clone(),
            got: other.db.clone(),
        });
    }
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
        let behind = |proof| Verdict::Behind {
            trusted_tx: n,
            replica_tx: m,
            txs_lost: n - m,
            proof,
        };
        let Some(cp) = checkpoint_at_or_below(checkpoints, m) else {
            return Ok(behind(BehindProof::Unproven));
        };
        if cp.tx_id == m {
            if a_m != cp.tx_hash {
                return Err(VerifyError::AlhMismatch { tx: m });
            }
            return Ok(behind(BehindProof::AtCheckpoint { checkpoint_tx: m }));
        }
        prove(verifiable_tx, cp, &new_state.db, m, &a_m, pinned_pubkey_pem)?;
        return Ok(behind(BehindProof::Consistent {
            checkpoint_tx: cp.tx_id,
        }));
    }
    if n == 0 {
        // The empty history is a prefix of every history: nothing to prove.
        return Ok(Verdict::Ahead {
            from_tx: 0,
            to_tx: m,
        });
    }
    prove(
        verifiable_tx,
        trusted,
        &new_state.db,
        m,
        &a_m,
        pinned_pubkey_pem,
    )?;
    Ok(Verdict::Ahead {
        from_tx: n,
        to_tx: m,
    })
}

/// Verifies the dual proof `from.tx_id -> m` (and the response's extras).
fn prove(
    verifiable_tx: Option<&VerifiableTx>,
    from: &TrustedState,
    db: &str,
    m: u64,
    a_m: &Digest,
    pinned_pubkey_pem: Option<&str>,
) -> Result<(), VerifyError> {
    let vtx = verifiable_tx.ok_or(VerifyError::ProofMissing)?;
    let proof = vtx
        .dual_proof
        .as_ref()
        .ok_or(VerifyError::ProofMissing)?
        .to_proof()?;
    verify_dual_proof(&proof, from.tx_id, m, &from.tx_hash, a_m)?;
    check_verifiable_tx_extras(vtx, db, m, a_m, pinned_pubkey_pem)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immudb::gateway::WireDualProof;
    use crate::immudb::ledger::Ledger;

    fn vectors() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/immudb/immudb_vectors.json"
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn checkpoint(l: &Ledger, tx: u64) -> TrustedState {
        TrustedState {
            db: "defaultdb".into(),
            tx_id: tx,
            tx_hash: l.alh(tx).unwrap(),
            signature: None,
        }
    }

    fn state(l: &Ledger, tx: u64) -> ImmutableState {
        ImmutableState {
            db: "defaultdb".into(),
            tx_id: tx,
            tx_hash: l.alh(tx).unwrap().to_vec(),
            ..Default::default()
        }
    }

    /// What the replica `l` answers to `verifiable/tx/{tx}?proveSinceTx={since}`.
    fn answer(l: &Ledger, since: u64, tx: u64) -> VerifiableTx {
        VerifiableTx {
            dual_proof: Some(WireDualProof::from_proof(&l.dual_proof(since, tx).unwrap())),
            ..Default::default()
        }
    }

    /// Checks `replica` at `tx` as the client does: ask for the proof
    /// `proof_source` names, then verify.
    fn check(cps: &[TrustedState], replica: &Ledger, tx: u64) -> Result<Verdict, VerifyError> {
        let vtx = proof_source(cps, tx).map(|since| answer(replica, since, tx));
        verify_against_checkpoints(cps, &state(replica, tx), vtx.as_ref(), None)
    }

    #[test]
    fn behind_is_proven_against_the_newest_checkpoint_at_or_below() {
        let v = vectors();
        let primary = Ledger::from_vectors(&v, "sync_v1", 20).unwrap();
        // fork_v1 shares txs 1..=10 with sync_v1 and differs from tx 11 on.
        let fork = Ledger::from_vectors(&v, "fork_v1", 20).unwrap();
        let cps: Vec<_> = [7, 12, 20]
            .iter()
            .map(|&t| checkpoint(&primary, t))
            .collect();

        // Behind and consistent: proven from checkpoint 12, which is named.
        assert_eq!(proof_source(&cps, 15), Some(12));
        assert_eq!(
            check(&cps, &primary, 15).unwrap(),
            Verdict::Behind {
                trusted_tx: 20,
                replica_tx: 15,
                txs_lost: 5,
                proof: BehindProof::Consistent { checkpoint_tx: 12 },
            }
        );
        // Exactly at a checkpoint: the Alh is compared, no proof asked for.
        assert_eq!(proof_source(&cps, 12), None);
        assert_eq!(
            check(&cps, &primary, 12).unwrap(),
            Verdict::Behind {
                trusted_tx: 20,
                replica_tx: 12,
                txs_lost: 8,
                proof: BehindProof::AtCheckpoint { checkpoint_tx: 12 },
            }
        );

        // Forked and behind: rejected, at a checkpoint or past one.
        let r = check(&cps, &fork, 17);
        assert!(r.is_err(), "{r:?}");
        assert_eq!(
            check(&cps, &fork, 12),
            Err(VerifyError::AlhMismatch { tx: 12 })
        );
        // A forked replica cannot borrow the trusted Alh either: its own
        // proof against the trusted checkpoint is what is checked.
        let vtx = answer(&fork, 12, 17);
        assert!(verify_against_checkpoints(&cps, &state(&fork, 17), Some(&vtx), None).is_err());
        // The fork below its divergence point is indistinguishable from the
        // primary's history, and is accepted as such.
        assert!(matches!(
            check(&cps, &fork, 9).unwrap(),
            Verdict::Behind {
                proof: BehindProof::Consistent { checkpoint_tx: 7 },
                ..
            }
        ));
        // No proof sent where one is needed: rejected, not "behind".
        assert_eq!(
            verify_against_checkpoints(&cps, &state(&primary, 15), None, None),
            Err(VerifyError::ProofMissing)
        );
    }

    #[test]
    fn behind_without_a_checkpoint_at_or_below_is_unproven() {
        let v = vectors();
        let primary = Ledger::from_vectors(&v, "sync_v1", 20).unwrap();
        let fork = Ledger::from_vectors(&v, "fork_v1", 20).unwrap();
        let cps: Vec<_> = [12, 20].iter().map(|&t| checkpoint(&primary, t)).collect();
        for replica in [&primary, &fork] {
            assert_eq!(proof_source(&cps, 11), None);
            assert_eq!(
                check(&cps, replica, 11).unwrap(),
                Verdict::Behind {
                    trusted_tx: 20,
                    replica_tx: 11,
                    txs_lost: 9,
                    proof: BehindProof::Unproven,
                }
            );
        }
        // Ahead of the newest checkpoint: the dual proof from it, as before.
        let longer = Ledger::from_vectors(&v, "sync_v1", 20).unwrap();
        let cps: Vec<_> = [12, 15].iter().map(|&t| checkpoint(&primary, t)).collect();
        assert_eq!(proof_source(&cps, 20), Some(15));
        assert_eq!(
            check(&cps, &longer, 20).unwrap(),
            Verdict::Ahead {
                from_tx: 15,
                to_tx: 20
            }
        );
        assert!(check(&cps, &fork, 20).is_err());
    }
}
