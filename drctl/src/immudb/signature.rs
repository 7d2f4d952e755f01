//! ECDSA P-256 state signatures (SPEC §5).
//!
//! immudb signs with Go's `ecdsa.SignASN1`, which does not normalize S, and Go's
//! verifier accepts both S forms. We normalize S before verifying so a correct
//! high-S signature is never rejected, regardless of the `ecdsa` crate's policy.

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

use crate::immudb::error::VerifyError;
use crate::immudb::gateway::ImmutableState;

/// The bytes immudb signs: `u32(len db) || db || u64(txId) || txHash`.
pub fn signed_bytes(db: &str, tx_id: u64, tx_hash: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let len = u32::try_from(db.len()).map_err(|_| VerifyError::malformed("db", "name too long"))?;
    let mut out = Vec::with_capacity(4 + db.len() + 8 + tx_hash.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(db.as_bytes());
    out.extend_from_slice(&tx_id.to_be_bytes());
    out.extend_from_slice(tx_hash);
    Ok(out)
}

/// Parses a PEM `PUBLIC KEY` (PKIX / SubjectPublicKeyInfo), the format immudb's
/// `--server-signing-pub-key` takes.
pub fn parse_public_key_pem(pem: &str) -> Result<VerifyingKey, VerifyError> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| VerifyError::PublicKeyInvalid {
        reason: e.to_string(),
    })
}

/// Parses the uncompressed SEC1 point immudb embeds in responses.
pub fn parse_public_key_sec1(bytes: &[u8]) -> Result<VerifyingKey, VerifyError> {
    VerifyingKey::from_sec1_bytes(bytes).map_err(|e| VerifyError::SignatureInvalid {
        reason: format!("embedded public key unusable: {e}"),
    })
}

/// Verifies a DER signature over `message` (hashed with SHA-256 by the verifier).
pub fn verify_der(key: &VerifyingKey, message: &[u8], der: &[u8]) -> Result<(), VerifyError> {
    let sig = Signature::from_der(der).map_err(|e| VerifyError::SignatureInvalid {
        reason: format!("bad DER: {e}"),
    })?;
    let sig = sig.normalize_s().unwrap_or(sig);
    key.verify(message, &sig)
        .map_err(|_| VerifyError::SignatureInvalid {
            reason: "ECDSA verification failed".into(),
        })
}

/// Verifies the signature of a gateway `ImmutableState`.
///
/// With a pinned key, the state must carry a signature valid under *that* key;
/// the key embedded in the response is ignored. Without a pinned key, a present
/// signature is checked against the embedded key (this only detects corruption,
/// not forgery, and is logged as such) and an absent one is accepted.
pub fn verify_state_signature(
    state: &ImmutableState,
    pinned_pubkey_pem: Option<&str>,
) -> Result<(), VerifyError> {
    verify_signature_over(
        &state.db,
        state.tx_id,
        &state.tx_hash,
        state
            .signature
            .as_ref()
            .map(|s| (&s.public_key[..], &s.signature[..])),
        pinned_pubkey_pem,
    )
}

/// Shared by state and `VerifiableTx` signatures: `sig` is `(embedded key, DER)`.
pub fn verify_signature_over(
    db: &str,
    tx_id: u64,
    tx_hash: &[u8],
    sig: Option<(&[u8], &[u8])>,
    pinned_pubkey_pem: Option<&str>,
) -> Result<(), VerifyError> {
    let msg = signed_bytes(db, tx_id, tx_hash)?;
    // An empty signature object is what an unsigned server's omitted field decodes to.
    let sig = sig.filter(|(_, der)| !der.is_empty());
    match (pinned_pubkey_pem, sig) {
        (Some(pem), Some((_, der))) => {
            let key = parse_public_key_pem(pem)?;
            verify_der(&key, &msg, der)
        }
        (Some(pem), None) => {
            // Report a bad pinned key before the missing signature: it is a config error.
            parse_public_key_pem(pem)?;
            Err(VerifyError::SignatureMissing)
        }
        (None, Some((embedded, der))) => {
            tracing::warn!(
                db,
                tx_id,
                "no pinned immudb public key: checking the signature against the key the server embedded"
            );
            let key = parse_public_key_sec1(embedded)?;
            verify_der(&key, &msg, der)
        }
        (None, None) => Ok(()),
    }
}
