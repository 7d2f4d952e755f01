//! Transaction headers, the accumulated linear hash (Alh) and entry digests
//! (SPEC §1–§2). Encodings follow immudb's `embedded/store` byte for byte because
//! a single differing byte changes every later Alh.

use crate::immudb::error::VerifyError;
use crate::immudb::hash::{advance, sha256, Digest};

/// Upper bound immudb enforces on `TxMetadata.extra`.
pub const MAX_TX_METADATA_EXTRA_LEN: usize = 256;

/// Transaction-level metadata; only hashed by version-1 headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxMetadata {
    /// Present iff > 0 (written by database truncation).
    pub truncated_tx_id: u64,
    pub extra: Vec<u8>,
}

impl TxMetadata {
    pub fn is_empty(&self) -> bool {
        self.truncated_tx_id == 0 && self.extra.is_empty()
    }

    /// `md_bytes` of SPEC §1.2: attributes in fixed order, absent ones omitted.
    pub fn to_bytes(&self) -> Result<Vec<u8>, VerifyError> {
        if self.extra.len() > MAX_TX_METADATA_EXTRA_LEN {
            return Err(VerifyError::malformed(
                "metadata.extra",
                format!(
                    "{} bytes exceeds {}",
                    self.extra.len(),
                    MAX_TX_METADATA_EXTRA_LEN
                ),
            ));
        }
        let mut out = Vec::with_capacity(12 + self.extra.len());
        if self.truncated_tx_id > 0 {
            out.push(0x00);
            out.extend_from_slice(&self.truncated_tx_id.to_be_bytes());
        }
        if !self.extra.is_empty() {
            out.push(0x01);
            // Cannot truncate: length was bounded to 256 above.
            out.extend_from_slice(&(self.extra.len() as u16).to_be_bytes());
            out.extend_from_slice(&self.extra);
        }
        Ok(out)
    }
}

/// Per-entry metadata (SPEC §2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvMetadata {
    pub deleted: bool,
    pub expires_at: Option<i64>,
    pub non_indexable: bool,
}

impl KvMetadata {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(11);
        if self.deleted {
            out.push(0x00);
        }
        if let Some(ts) = self.expires_at {
            out.push(0x01);
            out.extend_from_slice(&(ts as u64).to_be_bytes());
        }
        if self.non_indexable {
            out.push(0x02);
        }
        out
    }
}

/// A transaction header as hashed by immudb. `version` is kept as the wire
/// value so unsupported versions are reported rather than silently mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxHeader {
    pub id: u64,
    pub ts: i64,
    pub bl_tx_id: u64,
    pub bl_root: Digest,
    pub prev_alh: Digest,
    pub version: i64,
    pub metadata: TxMetadata,
    pub nentries: u64,
    pub eh: Digest,
}

impl TxHeader {
    /// The bytes hashed into `InnerHash` (SPEC §1.3).
    pub fn inner_input(&self) -> Result<Vec<u8>, VerifyError> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.ts.to_be_bytes());
        match self.version {
            0 => {
                if !self.metadata.is_empty() {
                    return Err(VerifyError::malformed(
                        format!("tx {} metadata", self.id),
                        "version 0 header cannot carry metadata",
                    ));
                }
                let n = u16::try_from(self.nentries).map_err(|_| {
                    VerifyError::malformed(
                        format!("tx {} nentries", self.id),
                        "exceeds u16 for a version 0 header",
                    )
                })?;
                out.extend_from_slice(&0u16.to_be_bytes());
                out.extend_from_slice(&n.to_be_bytes());
            }
            1 => {
                let md = self.metadata.to_bytes()?;
                let n = u32::try_from(self.nentries).map_err(|_| {
                    VerifyError::malformed(format!("tx {} nentries", self.id), "exceeds u32")
                })?;
                out.extend_from_slice(&1u16.to_be_bytes());
                // md is at most 1 + 8 + 1 + 2 + 256 bytes, so it fits a u16.
                out.extend_from_slice(&(md.len() as u16).to_be_bytes());
                out.extend_from_slice(&md);
                out.extend_from_slice(&n.to_be_bytes());
            }
            v => {
                return Err(VerifyError::UnsupportedHeaderVersion {
                    tx: self.id,
                    version: v,
                })
            }
        }
        out.extend_from_slice(&self.eh);
        out.extend_from_slice(&self.bl_tx_id.to_be_bytes());
        out.extend_from_slice(&self.bl_root);
        Ok(out)
    }

    pub fn inner_hash(&self) -> Result<Digest, VerifyError> {
        Ok(sha256(&self.inner_input()?))
    }

    /// Serialization used by immudb for export/replication (`TxHeader.Bytes`).
    pub fn to_bytes(&self) -> Result<Vec<u8>, VerifyError> {
        let inner = self.inner_input()?;
        let mut out = Vec::with_capacity(40 + inner.len());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.prev_alh);
        out.extend_from_slice(&inner);
        Ok(out)
    }

    /// The accumulated linear hash of this tx.
    pub fn alh(&self) -> Result<Digest, VerifyError> {
        Ok(advance(&self.prev_alh, self.id, &self.inner_hash()?))
    }

    /// Structural constraints immudb enforces when reading a header: ids are
    /// 1-based and the binary-linking tree never includes the tx itself.
    pub fn check_structure(&self) -> Result<(), VerifyError> {
        if self.id == 0 {
            return Err(VerifyError::malformed("header.id", "must be >= 1"));
        }
        if self.bl_tx_id >= self.id {
            return Err(VerifyError::malformed(
                format!("tx {} blTxId", self.id),
                format!("blTxId {} must be < id", self.bl_tx_id),
            ));
        }
        Ok(())
    }
}

/// Entry digest for header version 0: `H(key || hvalue)`; metadata is not allowed.
pub fn entry_digest_v0(
    key: &[u8],
    hvalue: &Digest,
    md: Option<&KvMetadata>,
) -> Result<Digest, VerifyError> {
    if md.is_some_and(|m| !m.to_bytes().is_empty()) {
        return Err(VerifyError::malformed(
            "entry.metadata",
            "version 0 entries cannot carry metadata",
        ));
    }
    let mut buf = Vec::with_capacity(key.len() + 32);
    buf.extend_from_slice(key);
    buf.extend_from_slice(hvalue);
    Ok(sha256(&buf))
}

/// Entry digest for header version 1: `H(u16(len md) || md || u16(len key) || key || hvalue)`.
pub fn entry_digest_v1(
    key: &[u8],
    hvalue: &Digest,
    md: Option<&KvMetadata>,
) -> Result<Digest, VerifyError> {
    let mdb = md.map(KvMetadata::to_bytes).unwrap_or_default();
    let klen = u16::try_from(key.len())
        .map_err(|_| VerifyError::malformed("entry.key", "longer than 65535 bytes"))?;
    let mut buf = Vec::with_capacity(4 + mdb.len() + key.len() + 32);
    // KV metadata is at most 11 bytes.
    buf.extend_from_slice(&(mdb.len() as u16).to_be_bytes());
    buf.extend_from_slice(&mdb);
    buf.extend_from_slice(&klen.to_be_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(hvalue);
    Ok(sha256(&buf))
}

/// Dispatches on the header version the entry belongs to.
pub fn entry_digest(
    version: i64,
    key: &[u8],
    hvalue: &Digest,
    md: Option<&KvMetadata>,
) -> Result<Digest, VerifyError> {
    match version {
        0 => entry_digest_v0(key, hvalue, md),
        1 => entry_digest_v1(key, hvalue, md),
        v => Err(VerifyError::UnsupportedHeaderVersion { tx: 0, version: v }),
    }
}

/// Recomputes the Alh of every header of a contiguous chain starting after
/// `start_alh`, checking each `prev_alh` link. Returns the final Alh. This is the
/// whole-history check a DR tool can run when it has exported headers.
pub fn verify_alh_chain(start_alh: &Digest, headers: &[TxHeader]) -> Result<Digest, VerifyError> {
    let mut alh = *start_alh;
    let mut expected_id = headers.first().map(|h| h.id).unwrap_or(0);
    for h in headers {
        if h.id != expected_id {
            return Err(VerifyError::malformed(
                "headers",
                format!("expected tx {expected_id}, got {}", h.id),
            ));
        }
        if h.prev_alh != alh {
            return Err(VerifyError::AlhMismatch {
                tx: h.id.saturating_sub(1),
            });
        }
        alh = h.alh()?;
        expected_id = expected_id.saturating_add(1);
    }
    Ok(alh)
}
