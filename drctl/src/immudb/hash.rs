//! Hash primitives shared by every proof kind. immudb uses plain SHA-256 with
//! one-byte domain prefixes (0x00 leaf, 0x01 node) for both of its trees.

use sha2::{Digest as _, Sha256};

use crate::immudb::error::VerifyError;

/// A SHA-256 output. immudb never uses any other digest size.
pub type Digest = [u8; 32];

/// `H("")`: the Alh of "tx 0", PrevAlh of tx 1 and the root of an empty entries tree.
pub const SHA256_EMPTY: Digest = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

pub const LEAF_PREFIX: u8 = 0x00;
pub const NODE_PREFIX: u8 = 0x01;

pub fn sha256(data: &[u8]) -> Digest {
    Sha256::digest(data).into()
}

/// Leaf hash for both trees: `H(0x00 || payload)`.
pub fn leaf_hash(payload: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(payload);
    h.finalize().into()
}

/// `leafFor(alh)` in immudb's store: the ahtree leaf for an Alh.
pub fn leaf_for(alh: &Digest) -> Digest {
    leaf_hash(alh)
}

/// Interior node: `H(0x01 || left || right)`.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

/// One step of the Alh chain: `H(u64(tx_id) || alh_prev || inner_hash)`; the
/// result is the Alh of `tx_id`.
pub fn advance(alh_prev: &Digest, tx_id: u64, inner_hash: &Digest) -> Digest {
    let mut buf = [0u8; 72];
    buf[..8].copy_from_slice(&tx_id.to_be_bytes());
    buf[8..40].copy_from_slice(alh_prev);
    buf[40..].copy_from_slice(inner_hash);
    sha256(&buf)
}

/// Converts a byte slice from the wire into a digest, naming the field on error.
pub fn digest_from_slice(field: &str, bytes: &[u8]) -> Result<Digest, VerifyError> {
    bytes.try_into().map_err(|_| {
        VerifyError::malformed(field, format!("expected 32 bytes, got {}", bytes.len()))
    })
}

/// Parses a 64-char hex digest (used for persisted state and test vectors).
pub fn digest_from_hex(field: &str, s: &str) -> Result<Digest, VerifyError> {
    let v = hex::decode(s).map_err(|e| VerifyError::malformed(field, e.to_string()))?;
    digest_from_slice(field, &v)
}

/// Serde adapter: a digest persisted as lowercase hex, readable by humans
/// inspecting drctl's state store.
pub mod hex32 {
    use super::Digest;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        super::digest_from_hex("digest", &s).map_err(D::Error::custom)
    }
}

/// Serde adapter for optional byte strings persisted as hex.
pub mod hex_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_constant_matches_sha256() {
        assert_eq!(sha256(b""), SHA256_EMPTY);
    }
}
