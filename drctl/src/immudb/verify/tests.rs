//! Every vector produced by immudb's own Go code must get immudb's verdict.

use serde_json::Value;

use super::*;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/immudb/immudb_vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json")
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap_or("")).expect("hex")
}

fn hash(v: &Value) -> Hash {
    let b = bytes(v);
    let mut out = [0u8; 32];
    out.copy_from_slice(&b);
    out
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .map(|a| a.iter().map(hash).collect())
        .unwrap_or_default()
}

fn header(v: &Value) -> TxHeader {
    let md = match &v["metadata"] {
        Value::Null => Vec::new(),
        m => {
            let built = tx_metadata_bytes(
                m["truncated_tx_id"].as_u64().unwrap_or(0),
                &bytes(&m["extra"]),
            )
            .unwrap();
            assert_eq!(
                hex::encode(&built),
                m["bytes"].as_str().unwrap(),
                "tx metadata encoding"
            );
            built
        }
    };
    TxHeader {
        id: v["id"].as_u64().unwrap(),
        ts: v["ts"].as_i64().unwrap(),
        bl_tx_id: v["bl_tx_id"].as_u64().unwrap(),
        bl_root: hash(&v["bl_root"]),
        prev_alh: hash(&v["prev_alh"]),
        version: v["version"].as_u64().unwrap() as u16,
        metadata: md,
        nentries: v["nentries"].as_u64().unwrap() as u32,
        eh: hash(&v["eh"]),
    }
}

fn linear(v: &Value) -> Option<LinearProof> {
    (!v.is_null()).then(|| LinearProof {
        source_tx_id: v["source_tx_id"].as_u64().unwrap(),
        target_tx_id: v["target_tx_id"].as_u64().unwrap(),
        terms: hashes(&v["terms"]),
    })
}

fn advance_proof(v: &Value) -> Option<LinearAdvanceProof> {
    (!v.is_null()).then(|| LinearAdvanceProof {
        linear_proof_terms: hashes(&v["linear_proof_terms"]),
        inclusion_proofs: v["inclusion_proofs"]
            .as_array()
            .unwrap()
            .iter()
            .map(hashes)
            .collect(),
    })
}

fn dual(v: &Value) -> DualProof {
    DualProof {
        source_tx_header: header(&v["source_tx_header"]),
        target_tx_header: header(&v["target_tx_header"]),
        inclusion_proof: hashes(&v["inclusion_proof"]),
        consistency_proof: hashes(&v["consistency_proof"]),
        target_bl_tx_alh: hash(&v["target_bl_tx_alh"]),
        last_inclusion_proof: hashes(&v["last_inclusion_proof"]),
        linear_proof: linear(&v["linear_proof"]),
        linear_advance_proof: advance_proof(&v["linear_advance_proof"]),
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

#[test]
fn headers_alh_and_entries_of_every_store() {
    let v = vectors();
    let mut n = 0;
    for (name, store) in v["stores"].as_object().unwrap() {
        for tx in store["txs"].as_array().unwrap() {
            let hd = header(&tx["header"]);
            hd.check().unwrap();
            assert_eq!(
                hex::encode(hd.bytes().unwrap()),
                tx["header_bytes"].as_str().unwrap(),
                "{name} tx {} bytes",
                hd.id
            );
            assert_eq!(
                hd.inner_hash().unwrap(),
                hash(&tx["inner_hash"]),
                "{name} tx {} inner",
                hd.id
            );
            assert_eq!(
                hd.alh().unwrap(),
                hash(&tx["alh"]),
                "{name} tx {} alh",
                hd.id
            );
            for e in tx["entries"].as_array().unwrap() {
                let md = match &e["metadata"] {
                    Value::Null => Vec::new(),
                    m => {
                        let b = kv_metadata_bytes(
                            m["deleted"].as_bool().unwrap_or(false),
                            m["expires_at"].as_u64(),
                            m["non_indexable"].as_bool().unwrap_or(false),
                        );
                        assert_eq!(
                            hex::encode(&b),
                            m["bytes"].as_str().unwrap(),
                            "kv metadata encoding"
                        );
                        b
                    }
                };
                let hv = hash(&e["hvalue"]);
                assert_eq!(h(&[&bytes(&e["value"])]), hv);
                let d = entry_digest(hd.version, &bytes(&e["key"]), &md, &hv).unwrap();
                assert_eq!(
                    d,
                    hash(&e["entry_digest"]),
                    "{name} tx {} entry digest",
                    hd.id
                );
                assert!(
                    verify_htree_inclusion(
                        u(&e["inclusion_leaf"]),
                        u(&e["inclusion_width"]),
                        &hashes(&e["inclusion_terms"]),
                        &d,
                        &hd.eh
                    ),
                    "{name} tx {} entry inclusion",
                    hd.id
                );
                n += 1;
            }
        }
    }
    assert!(n > 50, "only {n} entries");
    println!("{n} entries verified");
}

#[test]
fn entry_digests() {
    for c in vectors()["entry_digests"].as_array().unwrap() {
        let md = if c["metadata"].is_null() {
            Vec::new()
        } else {
            bytes(&c["metadata"]["bytes"])
        };
        let d = entry_digest(
            c["version"].as_u64().unwrap() as u16,
            &bytes(&c["key"]),
            &md,
            &hash(&c["hvalue"]),
        )
        .unwrap();
        assert_eq!(d, hash(&c["digest"]), "{}", c["name"]);
    }
}

#[test]
fn htree_inclusion_cases() {
    let cases = vectors()["htree_inclusion"]["cases"]
        .as_array()
        .unwrap()
        .clone();
    let (mut yes, mut no) = (0, 0);
    for c in &cases {
        let got = verify_htree_inclusion(
            u(&c["leaf"]),
            u(&c["width"]),
            &hashes(&c["terms"]),
            &hash(&c["digest"]),
            &hash(&c["root"]),
        );
        assert_eq!(got, c["verify"].as_bool().unwrap(), "{c}");
        if got {
            yes += 1
        } else {
            no += 1
        }
    }
    assert!(yes > 0 && no > 0, "{yes} pass, {no} fail");
}

#[test]
fn ahtree_inclusion_consistency_and_last_inclusion() {
    let v = vectors();
    let a = &v["ahtree"];
    let mut counts = [0usize; 3];
    for c in a["inclusion"].as_array().unwrap() {
        let got = verify_aht_inclusion(
            &hashes(&c["proof"]),
            u(&c["i"]),
            u(&c["j"]),
            &hash(&c["leaf"]),
            &hash(&c["root_j"]),
        );
        assert_eq!(got, c["verify"].as_bool().unwrap(), "inclusion {c}");
        counts[0] += 1;
    }
    for c in a["consistency"].as_array().unwrap() {
        let got = verify_aht_consistency(
            &hashes(&c["proof"]),
            u(&c["i"]),
            u(&c["j"]),
            &hash(&c["root_i"]),
            &hash(&c["root_j"]),
        );
        assert_eq!(got, c["verify"].as_bool().unwrap(), "consistency {c}");
        counts[1] += 1;
    }
    for c in a["last_inclusion"].as_array().unwrap() {
        let got = verify_last_inclusion(
            &hashes(&c["proof"]),
            u(&c["i"]),
            &hash(&c["leaf"]),
            &hash(&c["root"]),
        );
        assert_eq!(got, c["verify"].as_bool().unwrap(), "last inclusion {c}");
        counts[2] += 1;
    }
    // Leaf hashes are leafFor(data).
    for (d, l) in a["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(a["leaf_hashes"].as_array().unwrap())
    {
        assert_eq!(leaf_for(&hash(d)), hash(l));
    }
    println!("ahtree cases: {counts:?}");
}

#[test]
fn linear_and_linear_advance_proofs() {
    let v = vectors();
    for c in v["linear_proofs"].as_array().unwrap() {
        let p = linear(&c["proof"]);
        let got = verify_linear(
            p.as_ref(),
            u(&c["source_tx_id"]),
            u(&c["target_tx_id"]),
            &hash(&c["source_alh"]),
            &hash(&c["target_alh"]),
        );
        assert_eq!(got, c["verify"].as_bool().unwrap(), "linear {c}");
    }
    for c in v["linear_advance_proofs"].as_array().unwrap() {
        let p = advance_proof(&c["proof"]);
        let got = verify_linear_advance(
            p.as_ref(),
            u(&c["start_tx_id"]),
            u(&c["end_tx_id"]),
            &hash(&c["end_alh"]),
            &hash(&c["tree_root"]),
            u(&c["tree_size"]),
        );
        assert_eq!(got, c["verify"].as_bool().unwrap(), "linear advance {c}");
    }
}

#[test]
fn every_dual_proof_gets_immudbs_verdict() {
    let v = vectors();
    let (mut yes, mut no) = (0, 0);
    for c in v["dual_proofs"].as_array().unwrap() {
        let p = dual(&c["proof"]);
        let got = verify_dual(
            &p,
            u(&c["source_tx_id"]),
            u(&c["target_tx_id"]),
            &hash(&c["source_alh"]),
            &hash(&c["target_alh"]),
        );
        assert_eq!(
            got.is_ok(),
            c["verify"].as_bool().unwrap(),
            "{} ({:?}): {:?}",
            c["name"],
            c.get("tamper"),
            got
        );
        if got.is_ok() {
            yes += 1
        } else {
            no += 1
        }
    }
    println!("dual proofs: {yes} verified, {no} rejected");
    assert!(yes > 0 && no > 0);
    for c in v["dual_proofs_v2"].as_array().unwrap() {
        let pv = &c["proof"];
        let p = DualProofV2 {
            source_tx_header: header(&pv["source_tx_header"]),
            target_tx_header: header(&pv["target_tx_header"]),
            inclusion_proof: hashes(&pv["inclusion_proof"]),
            consistency_proof: hashes(&pv["consistency_proof"]),
        };
        let got = verify_dual_v2(
            &p,
            u(&c["source_tx_id"]),
            u(&c["target_tx_id"]),
            &hash(&c["source_alh"]),
            &hash(&c["target_alh"]),
        );
        assert_eq!(
            got.is_ok(),
            c["verify"].as_bool().unwrap(),
            "v2 {:?}: {:?}",
            c.get("name"),
            got
        );
    }
}

#[test]
fn state_signatures_high_and_low_s_with_the_pinned_key() {
    let v = vectors();
    let s = &v["state_signatures"];
    let pem = s["public_key_pem"].as_str().unwrap();
    let (mut yes, mut no) = (0, 0);
    for c in s["cases"].as_array().unwrap() {
        let db = c["db"].as_str().unwrap();
        let tx_hash = hash(&c["tx_hash"]);
        assert_eq!(
            hex::encode(state_signed_bytes(db, u(&c["tx_id"]), &tx_hash)),
            c["signed_bytes"].as_str().unwrap()
        );
        let got =
            verify_state_signature(pem, db, u(&c["tx_id"]), &tx_hash, &bytes(&c["signature"]));
        assert_eq!(got.is_ok(), c["verify"].as_bool().unwrap(), "{c}");
        if got.is_ok() {
            yes += 1
        } else {
            no += 1
        }
    }
    assert!(yes > 0 && no > 0, "{yes}/{no}");
}

#[test]
fn flipped_bytes_in_genuine_dual_proofs_never_verify() {
    let v = vectors();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut tried = 0;
    for c in v["dual_proofs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verify"] == true)
    {
        let (s, t) = (u(&c["source_tx_id"]), u(&c["target_tx_id"]));
        let (alh_s, alh_t) = (hash(&c["source_alh"]), hash(&c["target_alh"]));
        let base = dual(&c["proof"]);
        for _ in 0..20 {
            let mut p = base.clone();
            // Pick a hash somewhere in the proof and flip one bit of it.
            let mut slots: Vec<&mut Hash> = Vec::new();
            slots.push(&mut p.source_tx_header.eh);
            slots.push(&mut p.target_tx_header.bl_root);
            slots.push(&mut p.target_tx_header.prev_alh);
            slots.extend(p.inclusion_proof.iter_mut());
            slots.extend(p.consistency_proof.iter_mut());
            slots.extend(p.last_inclusion_proof.iter_mut());
            if let Some(l) = p.linear_proof.as_mut() {
                slots.extend(l.terms.iter_mut());
            }
            let n = slots.len();
            let slot = rng.usize(..n);
            let byte = rng.usize(..32);
            slots[slot][byte] ^= 1 << rng.u8(..8);
            if verify_dual(&p, s, t, &alh_s, &alh_t).is_ok() {
                panic!(
                    "mutated proof verified: {} slot {slot} byte {byte}",
                    c["name"]
                );
            }
            tried += 1;
        }
    }
    assert!(tried > 1000, "{tried}");
}
