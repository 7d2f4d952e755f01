//! Decoders for `testdata/immudb/immudb_vectors.json` (lowercase hex, JSON
//! numbers), the vector file produced by immudb's own Go code. Shared by the tests
//! and the benchmarks; kept out of the gateway types because the format differs.

use serde_json::Value;

use crate::immudb::error::VerifyError;
use crate::immudb::hash::{digest_from_hex, Digest};
use crate::immudb::proofs::{DualProof, DualProofV2, LinearAdvanceProof, LinearProof};
use crate::immudb::tx::{KvMetadata, TxHeader, TxMetadata};

fn m(field: &str) -> VerifyError {
    VerifyError::malformed(field, "missing or wrong type in vector")
}

pub fn u64_of(v: &Value, field: &str) -> Result<u64, VerifyError> {
    v[field].as_u64().ok_or_else(|| m(field))
}

pub fn digest_of(v: &Value, field: &str) -> Result<Digest, VerifyError> {
    digest_from_hex(field, v[field].as_str().ok_or_else(|| m(field))?)
}

pub fn bytes_of(v: &Value, field: &str) -> Result<Vec<u8>, VerifyError> {
    hex::decode(v[field].as_str().ok_or_else(|| m(field))?)
        .map_err(|e| VerifyError::malformed(field, e.to_string()))
}

pub fn digests_of(v: &Value, field: &str) -> Result<Vec<Digest>, VerifyError> {
    digest_list(&v[field], field)
}

fn digest_list(v: &Value, field: &str) -> Result<Vec<Digest>, VerifyError> {
    v.as_array()
        .ok_or_else(|| m(field))?
        .iter()
        .map(|x| digest_from_hex(field, x.as_str().ok_or_else(|| m(field))?))
        .collect()
}

pub fn header_of(v: &Value) -> Result<TxHeader, VerifyError> {
    let md = &v["metadata"];
    let metadata = if md.is_null() {
        TxMetadata::default()
    } else {
        TxMetadata {
            truncated_tx_id: md["truncated_tx_id"].as_u64().unwrap_or(0),
            extra: match md["extra"].as_str() {
                Some(s) => {
                    hex::decode(s).map_err(|e| VerifyError::malformed("extra", e.to_string()))?
                }
                None => Vec::new(),
            },
        }
    };
    Ok(TxHeader {
        id: u64_of(v, "id")?,
        ts: v["ts"].as_i64().ok_or_else(|| m("ts"))?,
        bl_tx_id: u64_of(v, "bl_tx_id")?,
        bl_root: digest_of(v, "bl_root")?,
        prev_alh: digest_of(v, "prev_alh")?,
        version: v["version"].as_i64().ok_or_else(|| m("version"))?,
        metadata,
        nentries: u64_of(v, "nentries")?,
        eh: digest_of(v, "eh")?,
    })
}

pub fn kv_metadata_of(v: &Value) -> Option<KvMetadata> {
    if v.is_null() {
        return None;
    }
    Some(KvMetadata {
        deleted: v["deleted"].as_bool().unwrap_or(false),
        expires_at: v["expires_at"].as_i64(),
        non_indexable: v["non_indexable"].as_bool().unwrap_or(false),
    })
}

fn linear_of(v: &Value) -> Result<Option<LinearProof>, VerifyError> {
    if v.is_null() {
        return Ok(None);
    }
    Ok(Some(LinearProof {
        source_tx_id: u64_of(v, "source_tx_id")?,
        target_tx_id: u64_of(v, "target_tx_id")?,
        terms: digests_of(v, "terms")?,
    }))
}

pub fn linear_advance_of(v: &Value) -> Result<Option<LinearAdvanceProof>, VerifyError> {
    if v.is_null() {
        return Ok(None);
    }
    Ok(Some(LinearAdvanceProof {
        linear_proof_terms: digests_of(v, "linear_proof_terms")?,
        inclusion_proofs: v["inclusion_proofs"]
            .as_array()
            .ok_or_else(|| m("inclusion_proofs"))?
            .iter()
            .map(|p| digest_list(p, "inclusion_proofs[]"))
            .collect::<Result<_, _>>()?,
    }))
}

/// A `dual_proofs[]` case: `(proof, source, target, source_alh, target_alh)`.
pub fn dual_case(c: &Value) -> Result<(DualProof, u64, u64, Digest, Digest), VerifyError> {
    let p = &c["proof"];
    let proof = DualProof {
        source_tx_header: header_of(&p["source_tx_header"])?,
        target_tx_header: header_of(&p["target_tx_header"])?,
        inclusion_proof: digests_of(p, "inclusion_proof")?,
        consistency_proof: digests_of(p, "consistency_proof")?,
        target_bl_tx_alh: digest_of(p, "target_bl_tx_alh")?,
        last_inclusion_proof: digests_of(p, "last_inclusion_proof")?,
        linear_proof: linear_of(&p["linear_proof"])?,
        linear_advance_proof: linear_advance_of(&p["linear_advance_proof"])?,
    };
    Ok((
        proof,
        u64_of(c, "source_tx_id")?,
        u64_of(c, "target_tx_id")?,
        digest_of(c, "source_alh")?,
        digest_of(c, "target_alh")?,
    ))
}

/// A `dual_proofs_v2[]` case.
pub fn dual_v2_case(c: &Value) -> Result<(DualProofV2, u64, u64, Digest, Digest), VerifyError> {
    let p = &c["proof"];
    let proof = DualProofV2 {
        source_tx_header: header_of(&p["source_tx_header"])?,
        target_tx_header: header_of(&p["target_tx_header"])?,
        inclusion_proof: digests_of(p, "inclusion_proof")?,
        consistency_proof: digests_of(p, "consistency_proof")?,
    };
    Ok((
        proof,
        u64_of(c, "source_tx_id")?,
        u64_of(c, "target_tx_id")?,
        digest_of(c, "source_alh")?,
        digest_of(c, "target_alh")?,
    ))
}

/// A `linear_proofs[]` case.
pub fn linear_case(
    c: &Value,
) -> Result<(Option<LinearProof>, u64, u64, Digest, Digest), VerifyError> {
    Ok((
        linear_of(&c["proof"])?,
        u64_of(c, "source_tx_id")?,
        u64_of(c, "target_tx_id")?,
        digest_of(c, "source_alh")?,
        digest_of(c, "target_alh")?,
    ))
}
