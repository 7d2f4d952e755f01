//! HTTP/JSON bodies as immudb's grpc-gateway v1 renders them (SPEC §6.2):
//! proto field names, 64-bit integers as JSON strings, bytes as padded standard
//! base64, zero values omitted, metadata often `{}`.
//!
//! These wire types are deliberately lenient on *encoding* (numbers or strings,
//! null for defaults, padded or unpadded base64, unknown fields ignored) because
//! protobuf JSON parsers are; all *semantic* checks (digest lengths, versions)
//! happen in the `to_*` conversions, which return `VerifyError::Malformed`.

use serde::{Deserialize, Serialize};

use crate::immudb::error::VerifyError;
use crate::immudb::hash::{digest_from_slice, Digest};
use crate::immudb::proofs::{DualProof, DualProofV2, LinearAdvanceProof, LinearProof};
use crate::immudb::tx::{KvMetadata, TxHeader, TxMetadata};

/// Serde adapters for the proto3 JSON scalar mappings.
pub mod codec {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        U(u64),
        I(i64),
        S(String),
    }

    fn to_i128<E: Error>(v: Option<NumOrStr>) -> Result<i128, E> {
        match v {
            None => Ok(0),
            Some(NumOrStr::U(u)) => Ok(u as i128),
            Some(NumOrStr::I(i)) => Ok(i as i128),
            Some(NumOrStr::S(s)) => s
                .trim()
                .parse::<i128>()
                .map_err(|_| E::custom(format!("not an integer: {s:?}"))),
        }
    }

    pub mod u64s {
        use super::*;
        pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&v.to_string())
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
            let v = to_i128::<D::Error>(Option::<NumOrStr>::deserialize(d)?)?;
            u64::try_from(v).map_err(|_| D::Error::custom(format!("{v} out of range for uint64")))
        }
    }

    pub mod i64s {
        use super::*;
        pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&v.to_string())
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
            let v = to_i128::<D::Error>(Option::<NumOrStr>::deserialize(d)?)?;
            i64::try_from(v).map_err(|_| D::Error::custom(format!("{v} out of range for int64")))
        }
    }

    /// int32 fields are JSON numbers; kept as i64 so range errors surface later.
    pub mod i32n {
        use super::*;
        pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_i64(*v)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
            let v = to_i128::<D::Error>(Option::<NumOrStr>::deserialize(d)?)?;
            if v < i32::MIN as i128 || v > u32::MAX as i128 {
                return Err(D::Error::custom(format!("{v} out of range for int32")));
            }
            Ok(v as i64)
        }
    }

    /// A field that is base64 in none of the alphabets immudb's gateway
    /// has been seen to use; the length helps spot a truncated value.
    #[derive(Debug, thiserror::Error)]
    #[error("invalid base64 ({len} chars)")]
    pub struct InvalidBase64 {
        pub len: usize,
    }

    pub(crate) fn decode_b64(s: &str) -> Result<Vec<u8>, InvalidBase64> {
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            if let Ok(v) = engine.decode(s) {
                return Ok(v);
            }
        }
        Err(InvalidBase64 { len: s.len() })
    }

    pub mod b64 {
        use super::*;
        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&STANDARD.encode(v))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(Vec::new()),
                Some(s) => decode_b64(&s).map_err(D::Error::custom),
            }
        }
    }

    pub mod b64_vec {
        use super::*;
        use serde::ser::SerializeSeq;
        pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for item in v {
                seq.serialize_element(&STANDARD.encode(item))?;
            }
            seq.end()
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
            Option::<Vec<String>>::deserialize(d)?
                .unwrap_or_default()
                .iter()
                .map(|s| decode_b64(s).map_err(D::Error::custom))
                .collect()
        }
    }

    pub fn is_zero_u64(v: &u64) -> bool {
        *v == 0
    }
    pub fn is_zero_i64(v: &i64) -> bool {
        *v == 0
    }
}

use codec::{b64, b64_vec, i32n, i64s, is_zero_i64, is_zero_u64, u64s};

/// `ImmutableState.signature` / `VerifiableTx.signature`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireSignature {
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub public_key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub signature: Vec<u8>,
}

/// Body of `GET /api/db/state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ImmutableState {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub db: String,
    #[serde(with = "u64s", skip_serializing_if = "is_zero_u64")]
    pub tx_id: u64,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub tx_hash: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<WireSignature>,
    #[serde(with = "u64s", skip_serializing_if = "is_zero_u64")]
    pub precommitted_tx_id: u64,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub precommitted_tx_hash: Vec<u8>,
}

impl ImmutableState {
    /// `txHash` as a digest. An empty database (txId 0) may omit it; its Alh is `H("")`.
    pub fn tx_hash_digest(&self) -> Result<Digest, VerifyError> {
        if self.tx_id == 0 && self.tx_hash.is_empty() {
            return Ok(crate::immudb::hash::SHA256_EMPTY);
        }
        digest_from_slice("txHash", &self.tx_hash)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WireTxMetadata {
    #[serde(
        rename = "truncatedTxID",
        alias = "truncatedTxId",
        with = "u64s",
        skip_serializing_if = "is_zero_u64"
    )]
    pub truncated_tx_id: u64,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireTxHeader {
    #[serde(with = "u64s", skip_serializing_if = "is_zero_u64")]
    pub id: u64,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub prev_alh: Vec<u8>,
    #[serde(with = "i64s", skip_serializing_if = "is_zero_i64")]
    pub ts: i64,
    #[serde(with = "i32n", skip_serializing_if = "is_zero_i64")]
    pub nentries: i64,
    #[serde(rename = "eH", with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub eh: Vec<u8>,
    #[serde(with = "u64s", skip_serializing_if = "is_zero_u64")]
    pub bl_tx_id: u64,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub bl_root: Vec<u8>,
    #[serde(with = "i32n", skip_serializing_if = "is_zero_i64")]
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WireTxMetadata>,
}

/// Omitted zero-valued digests (e.g. `blRoot` of tx 1) decode to 32 zero bytes,
/// exactly what the proto default means; any other length is malformed.
fn digest_or_zero(field: &str, b: &[u8]) -> Result<Digest, VerifyError> {
    if b.is_empty() {
        Ok([0u8; 32])
    } else {
        digest_from_slice(field, b)
    }
}

impl WireTxHeader {
    pub fn to_header(&self, field: &str) -> Result<TxHeader, VerifyError> {
        if self.nentries < 0 {
            return Err(VerifyError::malformed(
                format!("{field}.nentries"),
                "negative",
            ));
        }
        let md = self.metadata.clone().unwrap_or_default();
        Ok(TxHeader {
            id: self.id,
            ts: self.ts,
            bl_tx_id: self.bl_tx_id,
            bl_root: digest_or_zero(&format!("{field}.blRoot"), &self.bl_root)?,
            prev_alh: digest_or_zero(&format!("{field}.prevAlh"), &self.prev_alh)?,
            version: self.version,
            metadata: TxMetadata {
                truncated_tx_id: md.truncated_tx_id,
                extra: md.extra,
            },
            nentries: self.nentries as u64,
            eh: digest_or_zero(&format!("{field}.eH"), &self.eh)?,
        })
    }

    pub fn from_header(h: &TxHeader) -> Self {
        let md = (!h.metadata.is_empty()).then(|| WireTxMetadata {
            truncated_tx_id: h.metadata.truncated_tx_id,
            extra: h.metadata.extra.clone(),
        });
        WireTxHeader {
            id: h.id,
            prev_alh: h.prev_alh.to_vec(),
            ts: h.ts,
            nentries: h.nentries as i64,
            eh: h.eh.to_vec(),
            bl_tx_id: h.bl_tx_id,
            bl_root: if h.bl_root == [0u8; 32] {
                Vec::new()
            } else {
                h.bl_root.to_vec()
            },
            version: h.version,
            metadata: md,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireExpiration {
    #[serde(with = "i64s", skip_serializing_if = "is_zero_i64")]
    pub expires_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireKvMetadata {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<WireExpiration>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub non_indexable: bool,
}

impl WireKvMetadata {
    pub fn to_metadata(&self) -> KvMetadata {
        KvMetadata {
            deleted: self.deleted,
            expires_at: self.expiration.as_ref().map(|e| e.expires_at),
            non_indexable: self.non_indexable,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireTxEntry {
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WireKvMetadata>,
    #[serde(rename = "hValue", with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub h_value: Vec<u8>,
    #[serde(rename = "vLen", with = "i32n", skip_serializing_if = "is_zero_i64")]
    pub v_len: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireTx {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<WireTxHeader>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<WireTxEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WireLinearProof {
    #[serde(
        rename = "sourceTxId",
        with = "u64s",
        skip_serializing_if = "is_zero_u64"
    )]
    pub source_tx_id: u64,
    #[serde(
        rename = "TargetTxId",
        alias = "targetTxId",
        with = "u64s",
        skip_serializing_if = "is_zero_u64"
    )]
    pub target_tx_id: u64,
    #[serde(with = "b64_vec", skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WireInclusionProof {
    #[serde(with = "i32n", skip_serializing_if = "is_zero_i64")]
    pub leaf: i64,
    #[serde(with = "i32n", skip_serializing_if = "is_zero_i64")]
    pub width: i64,
    #[serde(with = "b64_vec", skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireLinearAdvanceProof {
    #[serde(with = "b64_vec", skip_serializing_if = "Vec::is_empty")]
    pub linear_proof_terms: Vec<Vec<u8>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inclusion_proofs: Vec<WireInclusionProof>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireDualProof {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_tx_header: Option<WireTxHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_tx_header: Option<WireTxHeader>,
    #[serde(with = "b64_vec", skip_serializing_if = "Vec::is_empty")]
    pub inclusion_proof: Vec<Vec<u8>>,
    #[serde(with = "b64_vec", skip_serializing_if = "Vec::is_empty")]
    pub consistency_proof: Vec<Vec<u8>>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub target_bl_tx_alh: Vec<u8>,
    #[serde(with = "b64_vec", skip_serializing_if = "Vec::is_empty")]
    pub last_inclusion_proof: Vec<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear_proof: Option<WireLinearProof>,
    #[serde(
        rename = "LinearAdvanceProof",
        alias = "linearAdvanceProof",
        skip_serializing_if = "Option::is_none"
    )]
    pub linear_advance_proof: Option<WireLinearAdvanceProof>,
}

fn digests(field: &str, v: &[Vec<u8>]) -> Result<Vec<Digest>, VerifyError> {
    v.iter()
        .enumerate()
        .map(|(i, b)| digest_from_slice(&format!("{field}[{i}]"), b))
        .collect()
}

fn required_header(h: &Option<WireTxHeader>, field: &str) -> Result<TxHeader, VerifyError> {
    h.as_ref()
        .ok_or_else(|| VerifyError::malformed(field, "missing"))?
        .to_header(field)
}

impl WireDualProof {
    pub fn to_proof(&self) -> Result<DualProof, VerifyError> {
        let linear_proof = self
            .linear_proof
            .as_ref()
            .map(|lp| {
                Ok::<_, VerifyError>(LinearProof {
                    source_tx_id: lp.source_tx_id,
                    target_tx_id: lp.target_tx_id,
                    terms: digests("dualProof.linearProof.terms", &lp.terms)?,
                })
            })
            .transpose()?;
        let linear_advance_proof = self
            .linear_advance_proof
            .as_ref()
            .map(|ap| {
                Ok::<_, VerifyError>(LinearAdvanceProof {
                    linear_proof_terms: digests(
                        "dualProof.LinearAdvanceProof.linearProofTerms",
                        &ap.linear_proof_terms,
                    )?,
                    inclusion_proofs: ap
                        .inclusion_proofs
                        .iter()
                        .map(|ip| {
                            digests(
                                "dualProof.LinearAdvanceProof.inclusionProofs.terms",
                                &ip.terms,
                            )
                        })
                        .collect::<Result<_, _>>()?,
                })
            })
            .transpose()?;
        Ok(DualProof {
            source_tx_header: required_header(&self.source_tx_header, "dualProof.sourceTxHeader")?,
            target_tx_header: required_header(&self.target_tx_header, "dualProof.targetTxHeader")?,
            inclusion_proof: digests("dualProof.inclusionProof", &self.inclusion_proof)?,
            consistency_proof: digests("dualProof.consistencyProof", &self.consistency_proof)?,
            target_bl_tx_alh: digest_or_zero("dualProof.targetBlTxAlh", &self.target_bl_tx_alh)?,
            last_inclusion_proof: digests(
                "dualProof.lastInclusionProof",
                &self.last_inclusion_proof,
            )?,
            linear_proof,
            linear_advance_proof,
        })
    }
}

impl WireDualProof {
    /// The gateway rendering of a proof (what `to_proof` reads back): the
    /// proto3 JSON mapping, zero values omitted, `targetBlTxAlh` always sent.
    pub fn from_proof(p: &DualProof) -> Self {
        let list = |v: &[Digest]| v.iter().map(|d| d.to_vec()).collect::<Vec<_>>();
        WireDualProof {
            source_tx_header: Some(WireTxHeader::from_header(&p.source_tx_header)),
            target_tx_header: Some(WireTxHeader::from_header(&p.target_tx_header)),
            inclusion_proof: list(&p.inclusion_proof),
            consistency_proof: list(&p.consistency_proof),
            target_bl_tx_alh: p.target_bl_tx_alh.to_vec(),
            last_inclusion_proof: list(&p.last_inclusion_proof),
            linear_proof: p.linear_proof.as_ref().map(|lp| WireLinearProof {
                source_tx_id: lp.source_tx_id,
                target_tx_id: lp.target_tx_id,
                terms: list(&lp.terms),
            }),
            linear_advance_proof: p.linear_advance_proof.as_ref().map(|ap| {
                WireLinearAdvanceProof {
                    linear_proof_terms: list(&ap.linear_proof_terms),
                    inclusion_proofs: ap
                        .inclusion_proofs
                        .iter()
                        .map(|ip| WireInclusionProof {
                            terms: list(ip),
                            ..Default::default()
                        })
                        .collect(),
                }
            }),
        }
    }
}

/// `VerifiableTxV2.dualProof` of the document API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireDualProofV2 {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_tx_header: Option<WireTxHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_tx_header: Option<WireTxHeader>,
    #[serde(with = "b64_vec", skip_serializing_if = "Vec::is_empty")]
    pub inclusion_proof: Vec<Vec<u8>>,
    #[serde(with = "b64_vec", skip_serializing_if = "Vec::is_empty")]
    pub consistency_proof: Vec<Vec<u8>>,
}

impl WireDualProofV2 {
    pub fn to_proof(&self) -> Result<DualProofV2, VerifyError> {
        Ok(DualProofV2 {
            source_tx_header: required_header(&self.source_tx_header, "dualProof.sourceTxHeader")?,
            target_tx_header: required_header(&self.target_tx_header, "dualProof.targetTxHeader")?,
            inclusion_proof: digests("dualProof.inclusionProof", &self.inclusion_proof)?,
            consistency_proof: digests("dualProof.consistencyProof", &self.consistency_proof)?,
        })
    }
}

/// Body of `GET /api/db/verifiable/tx/{tx}?proveSinceTx=N`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VerifiableTx {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx: Option<WireTx>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dual_proof: Option<WireDualProof>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<WireSignature>,
}

/// `Entry` of `POST /api/db/verifiable/get`: the key and value as the
/// client set them (the server strips its key and value prefixes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireEntry {
    #[serde(with = "u64s", skip_serializing_if = "is_zero_u64")]
    pub tx: u64,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub value: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WireKvMetadata>,
}

/// Body of `POST /api/db/verifiable/get` (`VerifiableEntry`): the entry, the
/// tx it was set in with a dual proof, and the entry's inclusion proof in
/// that tx's entries tree (`leaf`, `width`, `terms`, as `InclusionProof`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VerifiableEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<WireEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifiable_tx: Option<VerifiableTx>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inclusion_proof: Option<WireInclusionProof>,
}

/// What drctl fetches from a replica in one go: `{"state": ..., "verifiableTx": ... | null}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub state: ImmutableState,
    #[serde(default)]
    pub verifiable_tx: Option<VerifiableTx>,
}

/// Gateway error body (swagger `runtimeError`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RuntimeError {
    pub error: String,
    pub code: i64,
    pub message: String,
}

fn parse<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T, VerifyError> {
    serde_json::from_slice(body).map_err(|e| VerifyError::malformed(what, e.to_string()))
}

pub fn parse_state(body: &[u8]) -> Result<ImmutableState, VerifyError> {
    parse("ImmutableState", body)
}

pub fn parse_verifiable_tx(body: &[u8]) -> Result<VerifiableTx, VerifyError> {
    parse("VerifiableTx", body)
}

pub fn parse_bundle(body: &[u8]) -> Result<Bundle, VerifyError> {
    parse("Bundle", body)
}
