//! The journal head anchored in the environment's immudb ledger.
//!
//! A hash chain proves a journal consistent with itself, and a signature
//! who vouched for a head; neither stops someone with write access to the
//! state store from rewriting the journal, re-chaining it and rendering
//! the report again. An anchor does: `drctl report --anchor` writes key
//! [`key`] = the head and record count ([`AnchoredHead`]) to the ledger
//! with immudb's `VerifiableSet`, and verifies the returned tx against the
//! trusted state drctl keeps of that ledger ([`crate::immudb::custody`]).
//! `drctl report verify` reads the value back at the anchored tx with
//! `VerifiableGet`, proves it the same way, and compares it with the
//! journal's current head: a later edit is a mismatch that the ledger,
//! which drctl cannot rewrite, proves.
//!
//! Key and value follow immudb's encoding (`pkg/database` `EncodeKey` and
//! `EncodeEntrySpec`): in the tx the key carries the prefix byte 0x00 (a
//! plain key) and the hashed value the prefix 0x00 (a plain value).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::immudb::action::ImmudbServer;
use crate::immudb::custody::TrustError;
use crate::immudb::gateway::VerifiableTx;
use crate::immudb::hash::{digest_from_hex, digest_from_slice, sha256, Digest};
use crate::immudb::htree::verify_htree_inclusion;
use crate::immudb::proofs::verify_dual_proof;
use crate::immudb::signature::verify_signature_over;
use crate::immudb::tx::{entry_digest, TxHeader};
use crate::immudb::verdict::verify_entries;
use crate::immudb::{
    verify_transition, ClientError, ImmudbClient, ImmutableState, TrustedState, Verdict,
    VerifyError,
};

/// immudb's prefix of a plain key (`SetKeyPrefix`) and a plain value
/// (`PlainValuePrefix`).
const PLAIN: u8 = 0x00;

/// The ledger key of a run's journal head.
pub fn key(run_id: &str) -> String {
    format!("drctl/journal/{run_id}/head")
}

/// What the anchor's value says (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnchoredHead {
    pub run_id: String,
    pub records: usize,
    pub head: String,
}

/// Where and in which tx a report's journal head was anchored (part of
/// the evidence block, so verify knows what to read back).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Anchor {
    pub ledger: String,
    pub environment: String,
    pub region: String,
    pub database: String,
    pub key: String,
    pub tx: u64,
    /// Hex Alh of that tx, as proven when it was written.
    pub alh: String,
    /// The trusted tx the write was proven from.
    pub proven_from_tx: u64,
}

/// What the ledger holds against what the journal has now.
#[derive(Debug)]
pub struct JournalChange {
    pub tx: u64,
    pub env: String,
    pub region: String,
    pub db: String,
    pub key: String,
    pub anchored_head: String,
    pub anchored_records: usize,
    pub head: String,
    pub records: usize,
}

#[derive(Debug, Error)]
pub enum AnchorError {
    #[error("environment {env} has no immudb ledger in region {region}")]
    NoLedger { env: String, region: String },
    #[error("the report was anchored in environment {anchored}, the environment file is {given}")]
    OtherEnvironment { anchored: String, given: String },
    #[error("{0}")]
    Config(String),
    #[error("no trusted immudb state for `{db}` of region {region} of {env}: the anchor could not be proven")]
    NoTrust {
        env: String,
        region: String,
        db: String,
    },
    #[error("cannot read the trusted immudb state")]
    Trust(#[source] TrustError),
    #[error("immudb ledger unavailable, nothing anchored or checked")]
    Unavailable(#[source] ClientError),
    #[error("immudb's answer does not prove the anchor")]
    Rejected(#[source] ClientError),
    #[error("immudb tx {tx} does not hold the anchor: {reason}")]
    NotStored { tx: u64, reason: String },
    #[error(
        "the journal changed after it was anchored: immudb tx {} ({}/{}/{}, key {}) holds head {} of {} records; the journal now has {} records, head {}",
        .0.tx, .0.env, .0.region, .0.db, .0.key, .0.anchored_head, .0.anchored_records, .0.records, .0.head
    )]
    JournalChanged(Box<JournalChange>),
}

impl AnchorError {
    fn client(e: ClientError) -> AnchorError {
        match e {
            e if e.is_unavailable() => AnchorError::Unavailable(e),
            ClientError::Config(m) => AnchorError::Config(m),
            e => AnchorError::Rejected(e),
        }
    }
}

fn rejected(e: VerifyError) -> AnchorError {
    AnchorError::Rejected(ClientError::Verify(e))
}

fn plain(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(PLAIN);
    v.extend_from_slice(bytes);
    v
}

fn hex(d: &Digest) -> String {
    ::hex::encode(d)
}

fn header_of(vtx: &VerifiableTx) -> Result<TxHeader, AnchorError> {
    vtx.tx
        .as_ref()
        .and_then(|t| t.header.as_ref())
        .ok_or_else(|| rejected(VerifyError::ProofMissing))?
        .to_header("tx.header")
        .map_err(rejected)
}

/// A logged-in client; the caller closes it.
async fn session(server: &ImmudbServer) -> Result<(ImmudbClient, Option<String>), AnchorError> {
    let pem = server
        .pinned_pem()
        .map_err(|e| AnchorError::Config(e.to_string()))?;
    let mut client = server
        .client()
        .map_err(|e| AnchorError::Config(e.to_string()))?;
    client.login().await.map_err(AnchorError::client)?;
    Ok((client, pem))
}

/// Writes the head of `run_id`'s journal to the ledger and proves the tx
/// immudb committed: a dual proof from `trusted` (the newest trusted state
/// of that ledger) to the new tx, the tx's entries hashing to its `Eh`,
/// one of them the anchor, and with a pinned key the server's signature.
pub async fn write(
    server: &ImmudbServer,
    env: &str,
    region: &str,
    trusted: &TrustedState,
    head: &AnchoredHead,
) -> Result<Anchor, AnchorError> {
    let key = key(&head.run_id);
    let value = serde_json::to_vec(head).map_err(|e| AnchorError::Config(e.to_string()))?;
    let (mut client, pem) = session(server).await?;
    let r = client
        .verifiable_set(key.as_bytes(), &value, trusted.tx_id)
        .await;
    if let Err(e) = client.close().await {
        tracing::debug!(error = %e, "closing immudb session failed");
    }
    let vtx = r.map_err(AnchorError::client)?;
    let hdr = header_of(&vtx)?;
    let alh = hdr.alh().map_err(rejected)?;
    let state = ImmutableState {
        db: server.database.clone(),
        tx_id: hdr.id,
        tx_hash: alh.to_vec(),
        signature: vtx.signature.clone(),
        ..Default::default()
    };
    match verify_transition(trusted, &state, Some(&vtx), pem.as_deref()).map_err(rejected)? {
        Verdict::Ahead { .. } => {}
        v => {
            return Err(AnchorError::NotStored {
                tx: hdr.id,
                reason: format!(
                    "a new tx must follow the trusted tx {}, got {v:?}",
                    trusted.tx_id
                ),
            })
        }
    }
    let entries = vtx.tx.as_ref().map(|t| t.entries.as_slice()).unwrap_or(&[]);
    if entries.len() as u64 != hdr.nentries {
        return Err(AnchorError::NotStored {
            tx: hdr.id,
            reason: format!(
                "the answer lists {} of its {} entries",
                entries.len(),
                hdr.nentries
            ),
        });
    }
    verify_entries(entries, hdr.version, &hdr.eh).map_err(rejected)?;
    let (want_key, want_hv) = (plain(key.as_bytes()), sha256(&plain(&value)));
    let held = entries.iter().any(|e| {
        e.key == want_key
            && e.h_value == want_hv
            && e.metadata
                .as_ref()
                .is_none_or(|m| m.to_metadata().to_bytes().is_empty())
    });
    if !held {
        return Err(AnchorError::NotStored {
            tx: hdr.id,
            reason: format!("no entry sets {key} to this journal head"),
        });
    }
    Ok(Anchor {
        ledger: "immudb".into(),
        environment: env.into(),
        region: region.into(),
        database: server.database.clone(),
        key,
        tx: hdr.id,
        alh: hex(&alh),
        proven_from_tx: trusted.tx_id,
    })
}

/// Reads the anchored value back exactly at the anchored tx and proves
/// it: the entry's inclusion in that tx, the tx's Alh as anchored, and a
/// dual proof between it and the newest trusted state (`trusted`, when
/// drctl holds one; else the anchor's own Alh is all there is). Returns
/// what the ledger holds and the trusted tx it was proven against.
pub async fn read(
    server: &ImmudbServer,
    trusted: Option<&TrustedState>,
    anchor: &Anchor,
) -> Result<(AnchoredHead, u64), AnchorError> {
    let anchored_alh = digest_from_hex("anchor.alh", &anchor.alh).map_err(rejected)?;
    let (t_tx, t_alh) = match trusted {
        Some(t) if t.tx_id > 0 => (t.tx_id, t.tx_hash),
        _ => (anchor.tx, anchored_alh),
    };
    let (mut client, pem) = session(server).await?;
    let r = client
        .verifiable_get(anchor.key.as_bytes(), anchor.tx, t_tx)
        .await;
    if let Err(e) = client.close().await {
        tracing::debug!(error = %e, "closing immudb session failed");
    }
    let ve = r.map_err(AnchorError::client)?;
    let not_stored = |reason: String| AnchorError::NotStored {
        tx: anchor.tx,
        reason,
    };
    let entry = ve
        .entry
        .ok_or_else(|| not_stored("the answer has no entry".into()))?;
    let vtx = ve
        .verifiable_tx
        .ok_or_else(|| rejected(VerifyError::ProofMissing))?;
    let hdr = header_of(&vtx)?;
    if entry.tx != anchor.tx || hdr.id != anchor.tx || entry.key != anchor.key.as_bytes() {
        return Err(not_stored(format!(
            "asked for {} at tx {}, got the entry of tx {} in tx {}",
            anchor.key, anchor.tx, entry.tx, hdr.id
        )));
    }
    let alh = hdr.alh().map_err(rejected)?;
    if alh != anchored_alh {
        return Err(rejected(VerifyError::AlhMismatch { tx: anchor.tx }));
    }
    // The value is in that tx: its entry digest is a leaf of the tx's Eh.
    let ip = ve
        .inclusion_proof
        .ok_or_else(|| rejected(VerifyError::ProofMissing))?;
    let hv = sha256(&plain(&entry.value));
    let md = entry.metadata.as_ref().map(|m| m.to_metadata());
    let digest =
        entry_digest(hdr.version, &plain(&entry.key), &hv, md.as_ref()).map_err(rejected)?;
    let terms = ip
        .terms
        .iter()
        .enumerate()
        .map(|(i, t)| digest_from_slice(&format!("inclusionProof.terms[{i}]"), t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(rejected)?;
    let (leaf, width) = (ip.leaf.max(0) as u64, ip.width.max(0) as u64);
    if width != hdr.nentries || !verify_htree_inclusion(leaf, width, &terms, &digest, &hdr.eh) {
        return Err(rejected(VerifyError::EntriesProofFailed {
            reason: format!("the entry of {} is not in tx {}", anchor.key, anchor.tx),
        }));
    }
    // That tx is in the trusted history.
    let (target, target_alh) = if t_tx == anchor.tx {
        if t_alh != alh {
            return Err(rejected(VerifyError::AlhMismatch { tx: t_tx }));
        }
        (anchor.tx, alh)
    } else {
        let proof = vtx
            .dual_proof
            .as_ref()
            .ok_or_else(|| rejected(VerifyError::ProofMissing))?
            .to_proof()
            .map_err(rejected)?;
        if t_tx > anchor.tx {
            verify_dual_proof(&proof, anchor.tx, t_tx, &alh, &t_alh).map_err(rejected)?;
            (t_tx, t_alh)
        } else {
            verify_dual_proof(&proof, t_tx, anchor.tx, &t_alh, &alh).map_err(rejected)?;
            (anchor.tx, alh)
        }
    };
    if let Some(pem) = pem.as_deref() {
        let sig = vtx
            .signature
            .as_ref()
            .map(|s| (s.public_key.as_slice(), s.signature.as_slice()));
        verify_signature_over(&server.database, target, &target_alh, sig, Some(pem))
            .map_err(rejected)?;
    }
    let held: AnchoredHead = serde_json::from_slice(&entry.value)
        .map_err(|e| not_stored(format!("its value is not a drctl journal head: {e}")))?;
    Ok((held, t_tx))
}

/// The ledger's value against the journal as it is now.
pub fn compare(
    anchor: &Anchor,
    held: &AnchoredHead,
    run_id: &str,
    records: usize,
    head: &str,
) -> Result<(), AnchorError> {
    if held.run_id == run_id && held.records == records && held.head == head {
        return Ok(());
    }
    Err(AnchorError::JournalChanged(Box::new(JournalChange {
        tx: anchor.tx,
        env: anchor.environment.clone(),
        region: anchor.region.clone(),
        db: anchor.database.clone(),
        key: anchor.key.clone(),
        anchored_head: held.head.clone(),
        anchored_records: held.records,
        head: head.into(),
        records,
    })))
}
