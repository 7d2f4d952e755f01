//! Evidence that a report is what its journal says: the journal's head
//! hash, record count and the drctl versions, embedded in every report as
//! one machine-readable block, an optional Ed25519 signature over the
//! journal head (the private key by secret reference, never printed), and
//! the checks behind `drctl report verify`.
//!
//! Verifying re-renders the report from the journal with the options the
//! block records and compares it byte for byte: any edited figure, row or
//! word differs. The hash chain proves the journal itself unedited; the
//! signature proves who vouched for that head.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Format;
use crate::secret::{SecretError, SecretRef};

/// What opens the block inside an HTML comment (Markdown and HTML).
pub const MARKER: &str = "<!-- drctl-evidence ";

/// The facts a report was rendered from, and how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Evidence {
    pub run_id: String,
    pub records: usize,
    pub head: String,
    /// The drctl that started the run.
    pub run_drctl_version: String,
    /// The drctl that rendered the report: another version may word it
    /// differently, so verify names both when they differ.
    pub rendered_by: String,
    pub format: Format,
    #[serde(default)]
    pub postmortem: bool,
    /// Drills shown in the trend (0: none).
    #[serde(default)]
    pub trend_window: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// The journal head written to the environment's immudb ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<super::anchor::Anchor>,
}

/// An Ed25519 signature over [`signed_message`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signature {
    pub algorithm: String,
    /// `SHA256:` and the hex SHA-256 of the raw 32-byte public key.
    pub key_fingerprint: String,
    /// Base64 of the 64-byte signature.
    pub value: String,
}

#[derive(Debug, Error)]
pub enum EvidenceError {
    #[error("the file has no drctl evidence block (not a drctl report, or the block was removed)")]
    NoEvidence,
    #[error("the evidence block is not valid")]
    BadEvidence(#[source] serde_json::Error),
    #[error("`{0}` is not a secret reference (env:NAME or file:PATH)")]
    KeyRef(String),
    #[error("cannot read the signing key")]
    Secret(#[source] SecretError),
    #[error("the signing key is not an Ed25519 private key (PKCS#8, PEM or base64): {0}")]
    BadKey(String),
    #[error("cannot read the public key {path}")]
    PublicKeyFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} is not an Ed25519 public key (PEM SubjectPublicKeyInfo or base64 of the 32 raw bytes)"
    )]
    BadPublicKey(String),
    #[error("the report is signed with key {found}, not with the given public key ({given})")]
    OtherKey { found: String, given: String },
    #[error("the signature does not verify with the given public key")]
    SignatureInvalid,
    #[error("the report is not signed")]
    Unsigned,
}

/// The bytes signed: a fixed label, then the run, its record count and
/// its head, so a signature cannot be moved to another run or a shorter
/// journal.
pub fn signed_message(run_id: &str, records: usize, head: &str) -> Vec<u8> {
    format!("drctl journal head v1\nrun {run_id}\nrecords {records}\nhead {head}\n").into_bytes()
}

/// The body of a PEM document (or the text itself), base64-decoded.
fn pem_or_base64(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    B64.decode(body.as_bytes()).ok()
}

fn fingerprint(public_key: &[u8]) -> String {
    format!("SHA256:{}", crate::journal::sha256_hex(public_key))
}

/// Signs the journal head with the Ed25519 key behind `key_ref`.
pub fn sign(
    key_ref: &str,
    run_id: &str,
    records: usize,
    head: &str,
) -> Result<Signature, EvidenceError> {
    let r = SecretRef::parse(key_ref).ok_or_else(|| EvidenceError::KeyRef(key_ref.into()))?;
    let secret = r.resolve().map_err(EvidenceError::Secret)?;
    let der = pem_or_base64(secret.expose())
        .ok_or_else(|| EvidenceError::BadKey("not PEM or base64".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| EvidenceError::BadKey(e.to_string()))?;
    let sig = pair.sign(&signed_message(run_id, records, head));
    Ok(Signature {
        algorithm: "ed25519".into(),
        key_fingerprint: fingerprint(pair.public_key().as_ref()),
        value: B64.encode(sig.as_ref()),
    })
}

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Reads a public key file: PEM (`openssl pkey -pubout`) or base64 raw.
pub fn read_public_key(path: &std::path::Path) -> Result<Vec<u8>, EvidenceError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvidenceError::PublicKeyFile {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = || EvidenceError::BadPublicKey(path.display().to_string());
    let der = pem_or_base64(&text).ok_or_else(bad)?;
    match der.len() {
        32 => Ok(der),
        44 if der[..12] == SPKI_PREFIX => Ok(der[12..].to_vec()),
        _ => Err(bad()),
    }
}

/// Checks the report's signature over its evidence with `public_key`.
pub fn check_signature(e: &Evidence, public_key: &[u8]) -> Result<String, EvidenceError> {
    let sig = e.signature.as_ref().ok_or(EvidenceError::Unsigned)?;
    let given = fingerprint(public_key);
    if sig.key_fingerprint != given {
        return Err(EvidenceError::OtherKey {
            found: sig.key_fingerprint.clone(),
            given,
        });
    }
    let value = B64
        .decode(sig.value.as_bytes())
        .map_err(|_| EvidenceError::SignatureInvalid)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&signed_message(&e.run_id, e.records, &e.head), &value)
        .map_err(|_| EvidenceError::SignatureInvalid)?;
    Ok(given)
}

/// The block as an HTML comment (invisible in rendered Markdown and HTML).
pub fn comment(e: &Evidence) -> String {
    let json = serde_json::to_string(e).unwrap_or_default();
    // `--` may not appear inside an HTML comment; in JSON it can only be
    // inside a string, where `\u002d` reads back the same.
    format!("{MARKER}{} -->", json.replace("--", "-\\u002d"))
}

/// Finds the evidence block of a report of any format.
pub fn extract(text: &str) -> Result<Evidence, EvidenceError> {
    if text.trim_start().starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(EvidenceError::BadEvidence)?;
        let e = v.get("evidence").ok_or(EvidenceError::NoEvidence)?;
        return serde_json::from_value(e.clone()).map_err(EvidenceError::BadEvidence);
    }
    let start = text.find(MARKER).ok_or(EvidenceError::NoEvidence)? + MARKER.len();
    let end = text[start..]
        .find(" -->")
        .ok_or(EvidenceError::NoEvidence)?;
    serde_json::from_str(&text[start..start + end]).map_err(EvidenceError::BadEvidence)
}

/// Where two renderings first differ: line number (1-based), expected
/// line, found line.
pub fn first_difference(expected: &str, found: &str) -> Option<(usize, String, String)> {
    let mut e = expected.split('\n');
    let mut f = found.split('\n');
    let mut n = 0;
    loop {
        n += 1;
        match (e.next(), f.next()) {
            (None, None) => return None,
            (a, b) if a == b => continue,
            (a, b) => {
                let cut = |s: Option<&str>| {
                    s.map_or_else(
                        || "(end of file)".to_string(),
                        |s| s.chars().take(160).collect(),
                    )
                };
                return Some((n, cut(a), cut(b)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence() -> Evidence {
        Evidence {
            run_id: "r--1".into(),
            records: 10,
            head: "ab".repeat(32),
            run_drctl_version: "0.1.0".into(),
            rendered_by: "0.1.0".into(),
            format: Format::Md,
            postmortem: false,
            trend_window: 0,
            signature: None,
            anchor: None,
        }
    }

    /// A signature verifies with its key only, and only over its own
    /// run, record count and head.
    #[test]
    fn signatures_bind_key_and_head() {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            B64.encode(der.as_ref())
        );
        std::env::set_var("DRCTL_TEST_EVIDENCE_KEY", &pem);
        let pair = Ed25519KeyPair::from_pkcs8(der.as_ref()).expect("pair");
        let public = pair.public_key().as_ref().to_vec();
        let mut e = evidence();
        e.signature = Some(
            sign("env:DRCTL_TEST_EVIDENCE_KEY", &e.run_id, e.records, &e.head).expect("signs"),
        );
        assert!(check_signature(&e, &public).is_ok());
        let other = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let other = Ed25519KeyPair::from_pkcs8(other.as_ref()).expect("pair");
        assert!(matches!(
            check_signature(&e, other.public_key().as_ref()),
            Err(EvidenceError::OtherKey { .. })
        ));
        let mut moved = e.clone();
        moved.records = 11;
        assert!(matches!(
            check_signature(&moved, &public),
            Err(EvidenceError::SignatureInvalid)
        ));
        // The private key never appears in the block.
        assert!(!comment(&e).contains(&B64.encode(der.as_ref())[..20]));
    }

    /// The block survives an HTML comment (no `--` inside) and reads back.
    #[test]
    fn block_round_trips() {
        let e = evidence();
        let c = comment(&e);
        assert!(!c[4..c.len() - 3].contains("--"), "{c}");
        let doc = format!("# x\n\n{c}\n");
        assert_eq!(extract(&doc).expect("extract"), e);
        assert!(matches!(extract("# x\n"), Err(EvidenceError::NoEvidence)));
        assert_eq!(
            first_difference("a\nb\nc", "a\nB\nc"),
            Some((2, "b".into(), "B".into()))
        );
        assert_eq!(first_difference("a\n", "a\n"), None);
    }
}
