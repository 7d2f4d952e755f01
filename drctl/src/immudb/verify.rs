//! Pure proof verification, ported from immudb's Go verifiers (see the
//! specification each function cites). No I/O, no panics on any input:
//! every check answers with a verdict or names the exact check that failed.

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256};
use thiserror::Error;

pub type Hash = [u8; 32];

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("malformed {field}: {reason}")]
    Malformed { field: &'static str, reason: String },
    #[error("unsupported transaction header version {0}")]
    UnsupportedVersion(u16),
    #[error("version 0 header with metadata")]
    MetadataOnV0,
    #[error("dual proof: {0}")]
    DualProof(&'static str),
    #[error("state signature does not verify with the pinned key")]
    SignatureInvalid,
    #[error("state is not signed, but a key is pinned")]
    SignatureMissing,
}

pub fn h(parts: &[&[u8]]) -> Hash {
    let mut d = Sha256::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().into()
}

/// Alh of "transaction 0" (empty database): H("").
pub fn empty_hash() -> Hash {
    h(&[])
}

/// TxMetadata bytes: truncated-up-to `0x00||u64`, extra `0x01||u16||bytes`.
pub fn tx_metadata_bytes(truncated_tx_id: u64, extra: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let mut out = Vec::new();
    if truncated_tx_id > 0 {
        out.push(0x00);
        out.extend_from_slice(&truncated_tx_id.to_be_bytes());
    }
    if !extra.is_empty() {
        if extra.len() > 256 {
            return Err(VerifyError::Malformed {
                field: "tx metadata",
                reason: "extra longer than 256 bytes".into(),
            });
        }
        out.push(0x01);
        out.extend_from_slice(&(extra.len() as u16).to_be_bytes());
        out.extend_from_slice(extra);
    }
    Ok(out)
}

/// KV metadata bytes: deleted `0x00`, expiresAt `0x01||u64`, nonIndexable `0x02`.
pub fn kv_metadata_bytes(deleted: bool, expires_at: Option<u64>, non_indexable: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if deleted {
        out.push(0x00);
    }
    if let Some(t) = expires_at {
        out.push(0x01);
        out.extend_from_slice(&t.to_be_bytes());
    }
    if non_indexable {
        out.push(0x02);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxHeader {
    pub id: u64,
    pub ts: i64,
    pub bl_tx_id: u64,
    pub bl_root: Hash,
    pub prev_alh: Hash,
    pub version: u16,
    /// Encoded TxMetadata (hashed for version 1 only).
    pub metadata: Vec<u8>,
    pub nentries: u32,
    pub eh: Hash,
}

impl TxHeader {
    fn inner_input(&self) -> Result<Vec<u8>, VerifyError> {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(&self.ts.to_be_bytes());
        b.extend_from_slice(&self.version.to_be_bytes());
        match self.version {
            0 => {
                if !self.metadata.is_empty() {
                    return Err(VerifyError::MetadataOnV0);
                }
                let n = u16::try_from(self.nentries).map_err(|_| VerifyError::Malformed {
                    field: "nentries",
                    reason: "over u16 for a v0 header".into(),
                })?;
                b.extend_from_slice(&n.to_be_bytes());
            }
            1 => {
                b.extend_from_slice(&(self.metadata.len() as u16).to_be_bytes());
                b.extend_from_slice(&self.metadata);
                b.extend_from_slice(&self.nentries.to_be_bytes());
            }
            v => return Err(VerifyError::UnsupportedVersion(v)),
        }
        b.extend_from_slice(&self.eh);
        b.extend_from_slice(&self.bl_tx_id.to_be_bytes());
        b.extend_from_slice(&self.bl_root);
        Ok(b)
    }

    pub fn inner_hash(&self) -> Result<Hash, VerifyError> {
        Ok(h(&[&self.inner_input()?]))
    }

    /// The accumulated linear hash: commits to this header and, through
    /// PrevAlh, to every earlier one.
    pub fn alh(&self) -> Result<Hash, VerifyError> {
        Ok(advance(&self.prev_alh, self.id, &self.inner_hash()?))
    }

    /// `TxHeader.Bytes()`: `u64(ID) || PrevAlh || inner_input`.
    pub fn bytes(&self) -> Result<Vec<u8>, VerifyError> {
        let mut b = self.id.to_be_bytes().to_vec();
        b.extend_from_slice(&self.prev_alh);
        b.extend_from_slice(&self.inner_input()?);
        Ok(b)
    }

    /// Parsing constraints of `TxHeader.ReadFrom`: ID >= 1, BlTxID < ID.
    pub fn check(&self) -> Result<(), VerifyError> {
        if self.id == 0 || self.bl_tx_id >= self.id {
            return Err(VerifyError::Malformed {
                field: "tx header",
                reason: format!("id {} with blTxId {}", self.id, self.bl_tx_id),
            });
        }
        Ok(())
    }
}

pub fn advance(alh_prev: &Hash, tx_id: u64, inner: &Hash) -> Hash {
    h(&[&tx_id.to_be_bytes(), alh_prev, inner])
}

/// Entry digest for the header version the entry belongs to.
pub fn entry_digest(
    version: u16,
    key: &[u8],
    metadata: &[u8],
    hvalue: &Hash,
) -> Result<Hash, VerifyError> {
    match version {
        0 => {
            if !metadata.is_empty() {
                return Err(VerifyError::MetadataOnV0);
            }
            Ok(h(&[key, hvalue]))
        }
        1 => {
            let klen = u16::try_from(key.len()).map_err(|_| VerifyError::Malformed {
                field: "key",
                reason: "longer than 65535 bytes".into(),
            })?;
            Ok(h(&[
                &(metadata.len() as u16).to_be_bytes(),
                metadata,
                &klen.to_be_bytes(),
                key,
                hvalue,
            ]))
        }
        v => Err(VerifyError::UnsupportedVersion(v)),
    }
}

fn node(l: &Hash, r: &Hash) -> Hash {
    h(&[&[0x01], l, r])
}

/// Entries-tree inclusion (`htree.VerifyInclusion`).
pub fn verify_htree_inclusion(
    leaf: u64,
    width: u64,
    terms: &[Hash],
    digest: &Hash,
    root: &Hash,
) -> bool {
    if width == 0 || leaf >= width {
        return false;
    }
    let mut c = h(&[&[0x00], digest]);
    let (mut i, mut r) = (leaf, width - 1);
    for t in terms {
        c = if i % 2 == 0 && i != r {
            node(&c, t)
        } else {
            node(t, &c)
        };
        i /= 2;
        r /= 2;
    }
    i == r && c == *root
}

pub fn leaf_for(alh: &Hash) -> Hash {
    h(&[&[0x00], alh])
}

/// Append-only tree inclusion of leaf `i` in the tree of size `j`.
pub fn verify_aht_inclusion(
    proof: &[Hash],
    i: u64,
    j: u64,
    leaf_hash: &Hash,
    root_j: &Hash,
) -> bool {
    if i > j || i == 0 || (i < j && proof.is_empty()) {
        return false;
    }
    let (mut a, mut b, mut c) = (i - 1, j - 1, *leaf_hash);
    for p in proof {
        c = if a % 2 == 0 && a != b {
            node(&c, p)
        } else {
            node(p, &c)
        };
        a >>= 1;
        b >>= 1;
    }
    c == *root_j
}

/// Leaf `j` is the last leaf of the tree of size `j`.
pub fn verify_last_inclusion(proof: &[Hash], j: u64, leaf_hash: &Hash, root: &Hash) -> bool {
    if j == 0 {
        return false;
    }
    let mut c = *leaf_hash;
    for p in proof {
        c = node(p, &c);
    }
    c == *root
}

/// Consistency between tree sizes `i <= j` (immudb's variant of RFC 6962:
/// when `i` is a power of two the old root is the proof's first term).
pub fn verify_aht_consistency(
    proof: &[Hash],
    i: u64,
    j: u64,
    root_i: &Hash,
    root_j: &Hash,
) -> bool {
    if i > j || i == 0 || (i < j && proof.is_empty()) {
        return false;
    }
    if i == j && proof.is_empty() {
        return root_i == root_j;
    }
    let (mut fn_, mut sn) = (i - 1, j - 1);
    while fn_ % 2 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut ci, mut cj) = (proof[0], proof[0]);
    for p in &proof[1..] {
        if fn_ % 2 == 1 || fn_ == sn {
            ci = node(p, &ci);
            cj = node(p, &cj);
            while fn_ % 2 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            cj = node(&cj, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    ci == *root_i && cj == *root_j
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearProof {
    pub source_tx_id: u64,
    pub target_tx_id: u64,
    pub terms: Vec<Hash>,
}

pub fn verify_linear(p: Option<&LinearProof>, s: u64, t: u64, alh_s: &Hash, alh_t: &Hash) -> bool {
    let Some(p) = p else { return false };
    if p.source_tx_id != s || p.target_tx_id != t || s == 0 || s > t {
        return false;
    }
    if p.terms.len() as u64 != t - s + 1 || p.terms[0] != *alh_s {
        return false;
    }
    let mut c = p.terms[0];
    for (k, term) in p.terms.iter().enumerate().skip(1) {
        c = advance(&c, s + k as u64, term);
    }
    c == *alh_t
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearAdvanceProof {
    pub linear_proof_terms: Vec<Hash>,
    pub inclusion_proofs: Vec<Vec<Hash>>,
}

pub fn verify_linear_advance(
    p: Option<&LinearAdvanceProof>,
    start: u64,
    end: u64,
    end_alh: &Hash,
    tree_root: &Hash,
    tree_size: u64,
) -> bool {
    if end < start {
        return false;
    }
    if end <= start + 1 {
        return true;
    }
    let Some(p) = p else { return false };
    if p.linear_proof_terms.len() as u64 != end - start
        || p.inclusion_proofs.len() as u64 != end - start - 1
    {
        return false;
    }
    let mut c = p.linear_proof_terms[0];
    for tx in start + 1..end {
        let k = (tx - start) as usize;
        if !verify_aht_inclusion(
            &p.inclusion_proofs[k - 1],
            tx,
            tree_size,
            &leaf_for(&c),
            tree_root,
        ) {
            return false;
        }
        c = advance(&c, tx + 1, &p.linear_proof_terms[k]);
    }
    c == *end_alh
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualProof {
    pub source_tx_header: TxHeader,
    pub target_tx_header: TxHeader,
    pub inclusion_proof: Vec<Hash>,
    pub consistency_proof: Vec<Hash>,
    pub target_bl_tx_alh: Hash,
    pub last_inclusion_proof: Vec<Hash>,
    pub linear_proof: Option<LinearProof>,
    pub linear_advance_proof: Option<LinearAdvanceProof>,
}

fn require(ok: bool, what: &'static str) -> Result<(), VerifyError> {
    if ok {
        Ok(())
    } else {
        Err(VerifyError::DualProof(what))
    }
}

/// `VerifyDualProof`: Alh(s) (trusted) is in the history committed by Alh(t).
pub fn verify_dual(
    p: &DualProof,
    s: u64,
    t: u64,
    alh_s: &Hash,
    alh_t: &Hash,
) -> Result<(), VerifyError> {
    let (sh, th) = (&p.source_tx_header, &p.target_tx_header);
    require(
        sh.id == s && th.id == t,
        "header ids do not match the requested transactions",
    )?;
    require(s != 0 && s <= t, "source must be 1..=target")?;
    require(
        sh.alh()? == *alh_s,
        "source header does not hash to the trusted Alh",
    )?;
    require(
        th.alh()? == *alh_t,
        "target header does not hash to the target Alh",
    )?;
    if s < th.bl_tx_id {
        require(
            verify_aht_inclusion(
                &p.inclusion_proof,
                s,
                th.bl_tx_id,
                &leaf_for(alh_s),
                &th.bl_root,
            ),
            "inclusion proof of the source in the target's tree",
        )?;
    }
    if sh.bl_tx_id > 0 {
        require(
            verify_aht_consistency(
                &p.consistency_proof,
                sh.bl_tx_id,
                th.bl_tx_id,
                &sh.bl_root,
                &th.bl_root,
            ),
            "consistency proof between the trees",
        )?;
    }
    if th.bl_tx_id > 0 {
        require(
            verify_last_inclusion(
                &p.last_inclusion_proof,
                th.bl_tx_id,
                &leaf_for(&p.target_bl_tx_alh),
                &th.bl_root,
            ),
            "last-inclusion proof of targetBlTxAlh",
        )?;
    }
    if s < th.bl_tx_id {
        require(
            verify_linear(
                p.linear_proof.as_ref(),
                th.bl_tx_id,
                t,
                &p.target_bl_tx_alh,
                alh_t,
            ),
            "linear proof from targetBlTx to target",
        )?;
        require(
            verify_linear_advance(
                p.linear_advance_proof.as_ref(),
                sh.bl_tx_id,
                s,
                alh_s,
                &th.bl_root,
                th.bl_tx_id,
            ),
            "linear-advance proof (lagging tree links)",
        )?;
    } else {
        require(
            verify_linear(p.linear_proof.as_ref(), s, t, alh_s, alh_t),
            "linear proof from source to target",
        )?;
        require(
            verify_linear_advance(
                p.linear_advance_proof.as_ref(),
                sh.bl_tx_id,
                th.bl_tx_id,
                &p.target_bl_tx_alh,
                &th.bl_root,
                th.bl_tx_id,
            ),
            "linear-advance proof (lagging tree links)",
        )?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualProofV2 {
    pub source_tx_header: TxHeader,
    pub target_tx_header: TxHeader,
    pub inclusion_proof: Vec<Hash>,
    pub consistency_proof: Vec<Hash>,
}

/// `VerifyDualProofV2` (document API): synchronous linking only.
pub fn verify_dual_v2(
    p: &DualProofV2,
    s: u64,
    t: u64,
    alh_s: &Hash,
    alh_t: &Hash,
) -> Result<(), VerifyError> {
    let (sh, th) = (&p.source_tx_header, &p.target_tx_header);
    require(
        sh.id == s && th.id == t,
        "header ids do not match the requested transactions",
    )?;
    require(s != 0 && s <= t, "source must be 1..=target")?;
    require(
        sh.bl_tx_id + 1 == sh.id && th.bl_tx_id + 1 == th.id,
        "v2 proofs need BlTxID = ID - 1",
    )?;
    require(
        sh.alh()? == *alh_s,
        "source header does not hash to the trusted Alh",
    )?;
    require(
        th.alh()? == *alh_t,
        "target header does not hash to the target Alh",
    )?;
    if s == t {
        return Ok(());
    }
    require(
        verify_aht_inclusion(
            &p.inclusion_proof,
            s,
            th.bl_tx_id,
            &leaf_for(alh_s),
            &th.bl_root,
        ),
        "inclusion proof of the source in the target's tree",
    )?;
    if s == 1 {
        require(
            verify_aht_consistency(
                &p.consistency_proof,
                1,
                th.bl_tx_id,
                &leaf_for(alh_s),
                &th.bl_root,
            ),
            "consistency proof from size 1",
        )?;
    } else {
        require(
            verify_aht_consistency(
                &p.consistency_proof,
                sh.bl_tx_id,
                th.bl_tx_id,
                &sh.bl_root,
                &th.bl_root,
            ),
            "consistency proof between the trees",
        )?;
    }
    Ok(())
}

/// Bytes a state signature covers: `u32(len(db)) || db || u64(txId) || txHash`.
pub fn state_signed_bytes(db: &str, tx_id: u64, tx_hash: &Hash) -> Vec<u8> {
    let mut b = (db.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(db.as_bytes());
    b.extend_from_slice(&tx_id.to_be_bytes());
    b.extend_from_slice(tx_hash);
    b
}

/// Checks an ECDSA P-256 DER signature of H(signed bytes) with the pinned
/// key (PEM `PUBLIC KEY`). immudb does not normalise S, so high-S
/// signatures are accepted by normalising before verification.
pub fn verify_state_signature(
    pinned_pem: &str,
    db: &str,
    tx_id: u64,
    tx_hash: &Hash,
    der: &[u8],
) -> Result<(), VerifyError> {
    use p256::pkcs8::DecodePublicKey;
    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(pinned_pem).map_err(|e| {
        VerifyError::Malformed {
            field: "pinned public key",
            reason: e.to_string(),
        }
    })?;
    let sig = p256::ecdsa::Signature::from_der(der).map_err(|_| VerifyError::SignatureInvalid)?;
    let sig = sig.normalize_s().unwrap_or(sig);
    let digest = h(&[&state_signed_bytes(db, tx_id, tx_hash)]);
    key.verify_prehash(&digest, &sig)
        .map_err(|_| VerifyError::SignatureInvalid)
}

#[cfg(test)]
mod tests;
