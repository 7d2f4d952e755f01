//! Every case of immudb_vectors.json, iterated generically. Each `verify` value
//! is what immudb's Go verifier returned, so we must agree on every one.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::immudb::ahtree::{
    verify_consistency, verify_inclusion, verify_last_inclusion, MemAhTree,
};
use crate::immudb::hash::{leaf_for, sha256, SHA256_EMPTY};
use crate::immudb::htree::{entries_root, htree_inclusion_proof, verify_htree_inclusion};
use crate::immudb::proofs::{
    verify_dual_proof, verify_dual_proof_v2, verify_linear_advance_proof, verify_linear_proof,
};
use crate::immudb::signature::{
    parse_public_key_pem, parse_public_key_sec1, signed_bytes, verify_der, verify_signature_over,
};
use crate::immudb::tx::{entry_digest, verify_alh_chain};
use crate::immudb::vectors::*;

pub(crate) fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/immudb/immudb_vectors.json"
    );
    serde_json::from_slice(&std::fs::read(path).expect("vector file")).expect("vector json")
}

fn arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not an array"))
}

/// Tallies (kind, expected verdict) and asserts agreement.
#[derive(Default)]
struct Tally(BTreeMap<String, (usize, usize)>);

impl Tally {
    fn check(&mut self, kind: &str, name: &str, expected: bool, got: bool) {
        assert_eq!(
            got, expected,
            "{kind} `{name}`: expected verify={expected}, got {got}"
        );
        let e = self.0.entry(kind.to_string()).or_default();
        if expected {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    fn print(&self) {
        for (k, (ok, bad)) in &self.0 {
            println!("{k:<28} {ok:>4} verify=true passed, {bad:>4} verify=false rejected");
        }
    }
}

#[test]
fn all_vectors() {
    let v = vectors();
    let mut t = Tally::default();
    assert_eq!(digest_of(&v["meta"], "sha256_empty").unwrap(), SHA256_EMPTY);

    for c in arr(&v["entry_digests"], "entry_digests") {
        let key = bytes_of(c, "key").unwrap();
        let hv = digest_of(c, "hvalue").unwrap();
        assert_eq!(
            sha256(&bytes_of(c, "value").unwrap()),
            hv,
            "hvalue {}",
            c["name"]
        );
        let md = kv_metadata_of(&c["metadata"]);
        if let Some(m) = &md {
            assert_eq!(
                hex::encode(m.to_bytes()),
                c["metadata"]["bytes"].as_str().unwrap()
            );
        }
        let d = entry_digest(c["version"].as_i64().unwrap(), &key, &hv, md.as_ref()).unwrap();
        t.check(
            "entry_digest",
            c["name"].as_str().unwrap(),
            true,
            d == digest_of(c, "digest").unwrap(),
        );
    }

    for c in arr(&v["htree_inclusion"]["cases"], "htree") {
        let (leaf, width) = (u64_of(c, "leaf").unwrap(), u64_of(c, "width").unwrap());
        let (digest, root) = (
            digest_of(c, "digest").unwrap(),
            digest_of(c, "root").unwrap(),
        );
        let terms = digests_of(c, "terms").unwrap();
        let expected = c["verify"].as_bool().unwrap();
        let got = verify_htree_inclusion(leaf, width, &terms, &digest, &root);
        t.check(
            "htree_inclusion",
            &format!("{leaf}/{width} {:?}", c.get("tamper")),
            expected,
            got,
        );
        if expected {
            let leaves: Vec<_> = (0..width).map(|i| sha256(&i.to_be_bytes())).collect();
            assert_eq!(entries_root(&leaves), root, "htree root width {width}");
            assert_eq!(
                htree_inclusion_proof(&leaves, leaf as usize).unwrap(),
                terms
            );
        }
    }

    let aht = &v["ahtree"];
    let data: Vec<_> = arr(&aht["data"], "data").iter().map(digest_from).collect();
    let tree = MemAhTree::from_alhs(&data);
    for (i, lh) in arr(&aht["leaf_hashes"], "leaf_hashes").iter().enumerate() {
        assert_eq!(leaf_for(&data[i]), digest_from(lh));
    }
    for (n, r) in aht["roots"].as_object().unwrap() {
        let n: u64 = n.parse().unwrap();
        t.check(
            "ahtree_root",
            &n.to_string(),
            true,
            tree.root(n) == Some(digest_from(r)),
        );
    }
    for c in arr(&aht["inclusion"], "inclusion") {
        let (i, j) = (u64_of(c, "i").unwrap(), u64_of(c, "j").unwrap());
        let proof = digests_of(c, "proof").unwrap();
        let expected = c["verify"].as_bool().unwrap();
        let got = verify_inclusion(
            &proof,
            i,
            j,
            &digest_of(c, "leaf").unwrap(),
            &digest_of(c, "root_j").unwrap(),
        );
        t.check("ahtree_inclusion", &format!("{i}->{j}"), expected, got);
        if expected {
            assert_eq!(
                tree.inclusion_proof(i, j).unwrap(),
                proof,
                "prover inclusion {i} {j}"
            );
        }
    }
    for c in arr(&aht["consistency"], "consistency") {
        let (i, j) = (u64_of(c, "i").unwrap(), u64_of(c, "j").unwrap());
        let proof = digests_of(c, "proof").unwrap();
        let expected = c["verify"].as_bool().unwrap();
        let (ri, rj) = (
            digest_of(c, "root_i").unwrap(),
            digest_of(c, "root_j").unwrap(),
        );
        t.check(
            "ahtree_consistency",
            &format!("{i}->{j}"),
            expected,
            verify_consistency(&proof, i, j, &ri, &rj),
        );
        if expected {
            assert_eq!(
                tree.consistency_proof(i, j).unwrap(),
                proof,
                "prover consistency {i} {j}"
            );
        }
    }
    for c in arr(&aht["last_inclusion"], "last_inclusion") {
        let i = u64_of(c, "i").unwrap();
        let got = verify_last_inclusion(
            &digests_of(c, "proof").unwrap(),
            i,
            &digest_of(c, "leaf").unwrap(),
            &digest_of(c, "root").unwrap(),
        );
        t.check(
            "ahtree_last_inclusion",
            &i.to_string(),
            c["verify"].as_bool().unwrap(),
            got,
        );
    }

    for (name, store) in v["stores"].as_object().unwrap() {
        let mut headers = Vec::new();
        for tx in arr(&store["txs"], "txs") {
            let h = header_of(&tx["header"]).unwrap();
            assert_eq!(
                hex::encode(h.to_bytes().unwrap()),
                tx["header_bytes"].as_str().unwrap(),
                "{name} bytes {}",
                h.id
            );
            assert_eq!(
                h.inner_hash().unwrap(),
                digest_of(tx, "inner_hash").unwrap(),
                "{name} inner {}",
                h.id
            );
            let alh_ok = h.alh().unwrap() == digest_of(tx, "alh").unwrap();
            t.check(
                "store_header_alh",
                &format!("{name}/{}", h.id),
                true,
                alh_ok,
            );
            let mut ds = Vec::new();
            for e in arr(&tx["entries"], "entries") {
                let hv = digest_of(e, "hvalue").unwrap();
                assert_eq!(sha256(&bytes_of(e, "value").unwrap()), hv);
                let md = kv_metadata_of(&e["metadata"]);
                let d = entry_digest(h.version, &bytes_of(e, "key").unwrap(), &hv, md.as_ref())
                    .unwrap();
                assert_eq!(
                    d,
                    digest_of(e, "entry_digest").unwrap(),
                    "{name} tx {} entry digest",
                    h.id
                );
                let ok = verify_htree_inclusion(
                    u64_of(e, "inclusion_leaf").unwrap(),
                    u64_of(e, "inclusion_width").unwrap(),
                    &digests_of(e, "inclusion_terms").unwrap(),
                    &d,
                    &h.eh,
                );
                t.check("store_entry_inclusion", name, true, ok);
                ds.push(d);
            }
            assert_eq!(entries_root(&ds), h.eh, "{name} tx {} eh", h.id);
            headers.push(h);
        }
        let last = digest_of(arr(&store["txs"], "txs").last().unwrap(), "alh").unwrap();
        assert_eq!(
            verify_alh_chain(&SHA256_EMPTY, &headers).unwrap(),
            last,
            "{name} chain"
        );
    }

    for c in arr(&v["dual_proofs"], "dual_proofs") {
        let (p, s, tt, a, b) = dual_case(c).unwrap();
        let r = verify_dual_proof(&p, s, tt, &a, &b);
        let name = format!("{} {:?} -> {:?}", c["name"], c.get("tamper"), r);
        t.check(
            &format!("dual/{}", c["store"].as_str().unwrap()),
            &name,
            c["verify"].as_bool().unwrap(),
            r.is_ok(),
        );
    }
    for c in arr(&v["dual_proofs_v2"], "dual_proofs_v2") {
        let (p, s, tt, a, b) = dual_v2_case(c).unwrap();
        let r = verify_dual_proof_v2(&p, s, tt, &a, &b);
        t.check(
            "dual_v2",
            &format!("{s}->{tt} {r:?}"),
            c["verify"].as_bool().unwrap(),
            r.is_ok(),
        );
    }
    for c in arr(&v["linear_proofs"], "linear_proofs") {
        let (p, s, tt, a, b) = linear_case(c).unwrap();
        let r = verify_linear_proof(p.as_ref(), s, tt, &a, &b);
        t.check(
            "linear",
            &format!("{s}->{tt} {r:?}"),
            c["verify"].as_bool().unwrap(),
            r.is_ok(),
        );
    }
    for c in arr(&v["linear_advance_proofs"], "linear_advance_proofs") {
        let p = linear_advance_of(&c["proof"]).unwrap();
        let (s, e) = (
            u64_of(c, "start_tx_id").unwrap(),
            u64_of(c, "end_tx_id").unwrap(),
        );
        let r = verify_linear_advance_proof(
            p.as_ref(),
            s,
            e,
            &digest_of(c, "end_alh").unwrap(),
            &digest_of(c, "tree_root").unwrap(),
            u64_of(c, "tree_size").unwrap(),
        );
        t.check(
            "linear_advance",
            &format!("{s}->{e} {r:?}"),
            c["verify"].as_bool().unwrap(),
            r.is_ok(),
        );
    }

    let sig = &v["state_signatures"];
    let pem = sig["public_key_pem"].as_str().unwrap();
    let pinned = parse_public_key_pem(pem).unwrap();
    let sec1 = bytes_of(sig, "public_key_uncompressed").unwrap();
    let embedded = parse_public_key_sec1(&sec1).unwrap();
    for c in arr(&sig["cases"], "signature cases") {
        let db = c["db"].as_str().unwrap();
        let (id, hash) = (u64_of(c, "tx_id").unwrap(), bytes_of(c, "tx_hash").unwrap());
        let msg = signed_bytes(db, id, &hash).unwrap();
        assert_eq!(hex::encode(&msg), c["signed_bytes"].as_str().unwrap());
        let der = bytes_of(c, "signature").unwrap();
        let expected = c["verify"].as_bool().unwrap();
        let name = format!("{:?}/{:?}", c.get("s_form"), c.get("tamper"));
        t.check(
            "signature(pinned pem)",
            &name,
            expected,
            verify_der(&pinned, &msg, &der).is_ok(),
        );
        t.check(
            "signature(embedded sec1)",
            &name,
            expected,
            verify_der(&embedded, &msg, &der).is_ok(),
        );
        let full = verify_signature_over(db, id, &hash, Some((&sec1, &der)), Some(pem));
        t.check("signature(state api)", &name, expected, full.is_ok());
    }

    t.print();
    // Sanity: the SPEC announces 211 dual proofs (99 verify) and 153 genuine tree proofs each.
    let duals: usize =
        t.0.iter()
            .filter(|(k, _)| k.starts_with("dual/"))
            .map(|(_, (a, b))| a + b)
            .sum();
    assert!(duals >= 200, "expected ~211 dual proofs, saw {duals}");
    assert!(t.0["ahtree_inclusion"].0 >= 150 && t.0["ahtree_consistency"].0 >= 150);
    let total: usize = t.0.values().map(|(a, b)| a + b).sum();
    println!("total vector checks: {total}");
}

fn digest_from(v: &Value) -> crate::immudb::hash::Digest {
    crate::immudb::hash::digest_from_hex("v", v.as_str().unwrap()).unwrap()
}

/// The prover and verifiers agree far beyond the 17 leaves of the vectors.
#[test]
fn prover_verifier_agree_on_random_sizes() {
    let alhs: Vec<_> = (0u64..600).map(|i| sha256(&i.to_be_bytes())).collect();
    let tree = MemAhTree::from_alhs(&alhs);
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..400 {
        let j = rng.u64(1..=600);
        let i = rng.u64(1..=j);
        let (ri, rj) = (tree.root(i).unwrap(), tree.root(j).unwrap());
        let inc = tree.inclusion_proof(i, j).unwrap();
        assert!(
            verify_inclusion(&inc, i, j, &leaf_for(&alhs[i as usize - 1]), &rj),
            "incl {i} {j}"
        );
        assert!(!verify_inclusion(
            &inc,
            i,
            j,
            &leaf_for(&alhs[(i as usize) % 600]),
            &rj
        ));
        let cons = tree.consistency_proof(i, j).unwrap();
        assert!(verify_consistency(&cons, i, j, &ri, &rj), "cons {i} {j}");
        if i < j {
            let mut bad = cons.clone();
            let k = rng.usize(0..bad.len());
            bad[k][0] ^= 1;
            assert!(
                !verify_consistency(&bad, i, j, &ri, &rj),
                "tampered cons {i} {j}"
            );
        }
        let last = tree.inclusion_proof(j, j).unwrap();
        assert!(verify_last_inclusion(
            &last,
            j,
            &leaf_for(&alhs[j as usize - 1]),
            &rj
        ));
    }
}

#[test]
fn synthetic_large_dual_proof_verifies_and_tamper_fails() {
    let (mut p, s, a, b) = crate::immudb::bench::synthetic_dual_proof(5000).unwrap();
    verify_dual_proof(&p, s, 5000, &a, &b).unwrap();
    p.consistency_proof[1][5] ^= 0x40;
    assert!(verify_dual_proof(&p, s, 5000, &a, &b).is_err());
}

#[test]
fn bench_workloads_small_runs() {
    let cfg = crate::immudb::bench::BenchConfig {
        chain_headers: 2_000,
        dual_proof_tx: 2_000,
        dual_proof_iterations: 20,
        sha256_bytes: 1 << 20,
    };
    let r = crate::immudb::bench::bench_workloads_with(&cfg);
    assert_eq!(r.len(), 4, "{r:?}");
    assert!(r.iter().all(|(_, v)| *v > 0.0), "{r:?}");
}

/// Full-size figures; run with `cargo test --release -- --ignored --nocapture bench_print`.
#[test]
#[ignore]
fn bench_print() {
    for (name, v) in crate::immudb::bench::bench_workloads() {
        println!("{name:<70} {v:>16.1}");
    }
}
