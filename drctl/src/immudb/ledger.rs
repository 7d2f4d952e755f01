//! The server side of the proofs: a ledger's transaction headers and the
//! dual proofs an immudb server computes from them (`ImmuStore.DualProof`,
//! `LinearProof` and `LinearAdvanceProof` in `embedded/store/immustore.go`;
//! SPEC §4).
//!
//! drctl itself only verifies. This exists so that tests and benchmarks can
//! serve *synthesized* proofs for any pair of txs of a history whose headers
//! were produced by immudb's own code (`testdata/immudb/immudb_vectors.json`):
//! the test suite checks that it reproduces every genuine dual proof in those
//! vectors byte for byte, so a fake gateway built on it answers as immudb would.

use serde_json::Value;

use crate::immudb::ahtree::MemAhTree;
use crate::immudb::error::VerifyError;
use crate::immudb::hash::{Digest, SHA256_EMPTY};
use crate::immudb::proofs::{DualProof, LinearAdvanceProof, LinearProof};
use crate::immudb::tx::TxHeader;

/// One database's committed history: headers 1..=n, their Alhs and the
/// append-only tree over those Alhs.
#[derive(Debug, Clone)]
pub struct Ledger {
    headers: Vec<TxHeader>,
    alhs: Vec<Digest>,
    tree: MemAhTree,
}

impl Ledger {
    /// Checks that the headers are dense from tx 1 and hash-chained.
    pub fn new(headers: Vec<TxHeader>) -> Result<Self, VerifyError> {
        let mut alhs = Vec::with_capacity(headers.len());
        let mut prev = SHA256_EMPTY;
        for (i, h) in headers.iter().enumerate() {
            if h.id != i as u64 + 1 || h.prev_alh != prev || h.bl_tx_id >= h.id {
                return Err(VerifyError::malformed(
                    format!("ledger.headers[{i}]"),
                    "not a dense, chained history",
                ));
            }
            prev = h.alh()?;
            alhs.push(prev);
        }
        let tree = MemAhTree::from_alhs(&alhs);
        Ok(Ledger {
            headers,
            alhs,
            tree,
        })
    }

    /// The first `upto` txs of `stores.{name}` in immudb's vector file.
    pub fn from_vectors(vectors: &Value, name: &str, upto: u64) -> Result<Self, VerifyError> {
        let txs = vectors["stores"][name]["txs"]
            .as_array()
            .ok_or_else(|| VerifyError::malformed("stores", format!("no store {name}")))?;
        let headers = txs
            .iter()
            .take(upto as usize)
            .map(|t| crate::immudb::vectors::header_of(&t["header"]))
            .collect::<Result<Vec<_>, _>>()?;
        Ledger::new(headers)
    }

    /// Commits a new tx of `entry_digests` as a current immudb does
    /// (`performPrecommit`, SPEC §1.1): a v1 header with no tx metadata,
    /// linked synchronously (BlTxID = ID − 1, BlRoot the ahtree root over
    /// every earlier Alh), `Eh` the entries tree root. Returns its header.
    /// For fakes that accept writes; the proofs over it then come from the
    /// same code as for the vectors' histories.
    pub fn commit(&mut self, ts: i64, entry_digests: &[Digest]) -> Result<TxHeader, VerifyError> {
        let n = self.len();
        let header = TxHeader {
            id: n + 1,
            ts,
            bl_tx_id: n,
            bl_root: self.tree.root(n).unwrap_or([0u8; 32]),
            prev_alh: self.alh(n).unwrap_or(SHA256_EMPTY),
            version: 1,
            metadata: Default::default(),
            nentries: entry_digests.len() as u64,
            eh: crate::immudb::htree::entries_root(entry_digests),
        };
        let alh = header.alh()?;
        self.headers.push(header.clone());
        self.alhs.push(alh);
        self.tree.append(&alh);
        Ok(header)
    }

    /// The last committed tx id (0 for an empty database).
    pub fn len(&self) -> u64 {
        self.headers.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    pub fn header(&self, tx: u64) -> Option<&TxHeader> {
        tx.checked_sub(1).and_then(|i| self.headers.get(i as usize))
    }

    /// Alh of `tx`; tx 0 is the empty history, `H("")`.
    pub fn alh(&self, tx: u64) -> Option<Digest> {
        if tx == 0 {
            return Some(SHA256_EMPTY);
        }
        self.alhs.get(tx as usize - 1).copied()
    }

    fn inner(&self, tx: u64) -> Option<Digest> {
        self.header(tx)?.inner_hash().ok()
    }

    /// `ImmuStore.LinearProof(s, t)`: Alh(s), then the inner hashes up to t.
    pub fn linear_proof(&self, s: u64, t: u64) -> Option<LinearProof> {
        if s == 0 || s > t || t > self.len() {
            return None;
        }
        let mut terms = vec![self.alh(s)?];
        for tx in s + 1..=t {
            terms.push(self.inner(tx)?);
        }
        Some(LinearProof {
            source_tx_id: s,
            target_tx_id: t,
            terms,
        })
    }

    /// `ImmuStore.LinearAdvanceProof(start, end, tree_size)`; `None` when
    /// there is nothing to prove (`end <= start + 1`), as the server sends null.
    pub fn linear_advance_proof(
        &self,
        start: u64,
        end: u64,
        tree_size: u64,
    ) -> Option<LinearAdvanceProof> {
        if end <= start + 1 {
            return None;
        }
        let mut linear_proof_terms = vec![self.alh(start + 1)?];
        let mut inclusion_proofs = Vec::new();
        for tx in start + 1..end {
            inclusion_proofs.push(self.tree.inclusion_proof(tx, tree_size)?);
            linear_proof_terms.push(self.inner(tx + 1)?);
        }
        Some(LinearAdvanceProof {
            linear_proof_terms,
            inclusion_proofs,
        })
    }

    /// `ImmuStore.DualProof(source, target)`: what `VerifiableTxById(tx=t,
    /// proveSinceTx=s)` returns as `dualProof`, for 1 <= s <= t <= len.
    pub fn dual_proof(&self, s: u64, t: u64) -> Option<DualProof> {
        if s == 0 || s > t || t > self.len() {
            return None;
        }
        let sh = self.header(s)?.clone();
        let th = self.header(t)?.clone();
        let inclusion_proof = if s < th.bl_tx_id {
            self.tree.inclusion_proof(s, th.bl_tx_id)?
        } else {
            Vec::new()
        };
        let consistency_proof = if sh.bl_tx_id > 0 {
            self.tree.consistency_proof(sh.bl_tx_id, th.bl_tx_id)?
        } else {
            Vec::new()
        };
        let (target_bl_tx_alh, last_inclusion_proof) = if th.bl_tx_id > 0 {
            (
                self.alh(th.bl_tx_id)?,
                self.tree.inclusion_proof(th.bl_tx_id, th.bl_tx_id)?,
            )
        } else {
            ([0u8; 32], Vec::new())
        };
        let linear_proof = self.linear_proof(s.max(th.bl_tx_id), t);
        let linear_advance_proof =
            self.linear_advance_proof(sh.bl_tx_id, s.min(th.bl_tx_id), th.bl_tx_id);
        Some(DualProof {
            source_tx_header: sh,
            target_tx_header: th,
            inclusion_proof,
            consistency_proof,
            target_bl_tx_alh,
            last_inclusion_proof,
            linear_proof,
            linear_advance_proof,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immudb::proofs::verify_dual_proof;

    fn vectors() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/immudb/immudb_vectors.json"
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The prover is faithful: for every genuine dual proof immudb's Go code
    /// produced, it computes exactly the same proof from the same headers.
    #[test]
    fn reproduces_every_genuine_dual_proof_of_immudbs_vectors() {
        let v = vectors();
        let mut n = 0;
        for c in v["dual_proofs"].as_array().unwrap() {
            if c["verify"] != true || c.get("tamper").is_some() {
                continue;
            }
            let store = c["store"].as_str().unwrap();
            let (want, s, t, _, _) = crate::immudb::vectors::dual_case(c).unwrap();
            let ledger = Ledger::from_vectors(&v, store, u64::MAX).unwrap();
            let got = ledger.dual_proof(s, t).unwrap();
            assert_eq!(got, want, "{}", c["name"]);
            n += 1;
        }
        assert!(n >= 99, "{n} genuine dual proofs compared");
    }

    #[test]
    fn forks_share_a_prefix_and_nothing_after() {
        let v = vectors();
        let sync = Ledger::from_vectors(&v, "sync_v1", 20).unwrap();
        let fork = Ledger::from_vectors(&v, "fork_v1", 20).unwrap();
        assert_eq!(sync.alh(10), fork.alh(10));
        assert_ne!(sync.alh(11), fork.alh(11));
        let p = fork.dual_proof(7, 15).unwrap();
        let (a7, a15) = (sync.alh(7).unwrap(), fork.alh(15).unwrap());
        assert!(verify_dual_proof(&p, 7, 15, &a7, &a15).is_ok());
        let p = fork.dual_proof(12, 15).unwrap();
        let a12 = sync.alh(12).unwrap();
        assert!(verify_dual_proof(&p, 12, 15, &a12, &a15).is_err());
        assert!(fork.dual_proof(0, 3).is_none() && fork.dual_proof(4, 3).is_none());
        assert!(Ledger::from_vectors(&v, "nope", 3).is_err());
    }

    /// A committed tx continues the chain as immudb links it (a history of
    /// it re-read by `Ledger::new` is valid), and dual proofs into and out
    /// of it verify from the vectors' txs, also across a lagging history.
    #[test]
    fn committed_txs_extend_the_history_and_prove_both_ways() {
        let v = vectors();
        for store in ["sync_v1", "lagging_v1", "sync_v0"] {
            let mut l = Ledger::from_vectors(&v, store, 12).unwrap();
            let d = [
                crate::immudb::hash::sha256(b"a"),
                crate::immudb::hash::sha256(b"b"),
            ];
            let n = l.len();
            assert!(n >= 5, "{store}: {n} txs");
            let h = l.commit(1_700_000_000, &d).unwrap();
            assert_eq!((h.id, h.bl_tx_id, h.nentries), (n + 1, n, 2));
            assert_eq!(h.eh, crate::immudb::htree::entries_root(&d));
            l.commit(1_700_000_001, &d[..1]).unwrap();
            let again = Ledger::new(l.headers.clone()).unwrap();
            assert_eq!(again.alh(n + 2), l.alh(n + 2));
            for (s, t) in [(n - 3, n + 1), (n, n + 1), (n + 1, n + 2), (1, n + 2)] {
                let p = l.dual_proof(s, t).unwrap();
                let (a, b) = (l.alh(s).unwrap(), l.alh(t).unwrap());
                assert!(
                    verify_dual_proof(&p, s, t, &a, &b).is_ok(),
                    "{store} {s}->{t}"
                );
                let wrong = crate::immudb::hash::sha256(b"not it");
                assert!(verify_dual_proof(&p, s, t, &a, &wrong).is_err());
            }
        }
    }

    /// The gateway rendering of a synthesized proof reads back unchanged.
    #[test]
    fn wire_rendering_round_trips() {
        use crate::immudb::gateway::{parse_verifiable_tx, VerifiableTx, WireDualProof};
        let v = vectors();
        for store in ["sync_v1", "sync_v0", "lagging_v1"] {
            let l = Ledger::from_vectors(&v, store, u64::MAX).unwrap();
            for (s, t) in [(1, l.len()), (2, l.len() - 1), (l.len(), l.len())] {
                let p = l.dual_proof(s, t).unwrap();
                let vtx = VerifiableTx {
                    dual_proof: Some(WireDualProof::from_proof(&p)),
                    ..Default::default()
                };
                let body = serde_json::to_vec(&vtx).unwrap();
                let back = parse_verifiable_tx(&body).unwrap();
                assert_eq!(
                    back.dual_proof.unwrap().to_proof().unwrap(),
                    p,
                    "{store} {s}->{t}"
                );
            }
        }
    }
}
