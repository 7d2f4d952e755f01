//! Hostile-input tests: malformed JSON, truncations and thousands of seeded
//! random mutations of valid bodies and proofs must never panic, and must never
//! make us accept a state other than the genuine one.

use serde_json::Value;

use crate::immudb::ahtree::{verify_consistency, verify_inclusion, verify_last_inclusion};
use crate::immudb::gateway::{
    parse_bundle, parse_state, parse_verifiable_tx, Bundle, ImmutableState,
};
use crate::immudb::hash::{digest_from_hex, Digest};
use crate::immudb::htree::verify_htree_inclusion;
use crate::immudb::proofs::{
    verify_dual_proof, verify_linear_advance_proof, verify_linear_proof, DualProof, LinearProof,
};
use crate::immudb::tests::gateway_examples::{examples, other_pem, pem};
use crate::immudb::tests::vector_suite::vectors;
use crate::immudb::vectors::dual_case;
use crate::immudb::verdict::{verify_transition, TrustedState, Verdict};

/// Forward examples as (trusted state, bundle text, genuine verdict).
fn forward_bundles() -> Vec<(TrustedState, Vec<u8>, Result<Verdict, ()>)> {
    let ex = examples();
    let pem = pem();
    let mut out = Vec::new();
    for e in ex["examples"].as_array().unwrap() {
        let Some(t) = e.get("trusted_state") else {
            continue;
        };
        let trusted = TrustedState {
            db: t["db"].as_str().unwrap().into(),
            tx_id: t["txId"].as_u64().unwrap(),
            tx_hash: digest_from_hex("h", t["txHash_hex"].as_str().unwrap()).unwrap(),
            signature: None,
        };
        let vtx = parse_verifiable_tx(&serde_json::to_vec(&e["response_json"]).unwrap()).unwrap();
        let th = vtx
            .dual_proof
            .as_ref()
            .unwrap()
            .target_tx_header
            .as_ref()
            .unwrap()
            .to_header("t")
            .unwrap();
        if th.id <= trusted.tx_id {
            continue;
        }
        let state = ImmutableState {
            db: trusted.db.clone(),
            tx_id: th.id,
            tx_hash: th.alh().unwrap().to_vec(),
            signature: vtx.signature.clone(),
            precommitted_tx_id: th.id,
            precommitted_tx_hash: th.alh().unwrap().to_vec(),
        };
        let verdict = verify_transition(&trusted, &state, Some(&vtx), Some(&pem)).map_err(|_| ());
        let bundle = Bundle {
            state,
            verifiable_tx: Some(vtx),
        };
        out.push((
            trusted,
            serde_json::to_vec_pretty(&bundle).unwrap(),
            verdict,
        ));
    }
    assert!(out.len() >= 4);
    out
}

fn mutate(rng: &mut fastrand::Rng, body: &[u8]) -> Vec<u8> {
    const JSONISH: &[u8] = b"{}[]\":,0123456789-+eE.ntfrua/=AQZz \\";
    let mut b = body.to_vec();
    let edits = if rng.u8(0..4) == 0 {
        rng.usize(2..6)
    } else {
        1
    };
    for _ in 0..edits {
        if b.is_empty() {
            break;
        }
        let i = rng.usize(0..b.len());
        match rng.u8(0..6) {
            0 => b[i] ^= 1 << rng.u8(0..8),
            1 => b[i] = JSONISH[rng.usize(0..JSONISH.len())],
            2 => {
                b.remove(i);
            }
            3 => b.insert(i, JSONISH[rng.usize(0..JSONISH.len())]),
            4 => b.truncate(i),
            _ => b[i] = rng.u8(..),
        }
    }
    b
}

/// The only acceptable success on mutated input is the genuine verdict about the
/// genuine state (the mutation hit something the verdict does not depend on).
fn check_outcome(
    b: &Bundle,
    genuine: &Bundle,
    got: Result<Verdict, crate::immudb::VerifyError>,
    want: &Result<Verdict, ()>,
) -> bool {
    match got {
        Ok(v) => {
            assert_eq!(
                Ok(v),
                want.clone(),
                "mutated input produced a different accepted verdict"
            );
            assert_eq!(
                (&b.state.db, b.state.tx_id, &b.state.tx_hash),
                (
                    &genuine.state.db,
                    genuine.state.tx_id,
                    &genuine.state.tx_hash
                ),
                "mutated state accepted"
            );
            true
        }
        Err(_) => false,
    }
}

#[test]
fn mutated_bundles_never_verify_a_different_state() {
    let pem = pem();
    let mut rng = fastrand::Rng::with_seed(0x1_aaab_u64);
    let (mut total, mut parsed, mut accepted) = (0usize, 0usize, 0usize);
    for (trusted, body, want) in forward_bundles() {
        let genuine = parse_bundle(&body).unwrap();
        for round in 0..1500 {
            let m = mutate(&mut rng, &body);
            total += 1;
            let Ok(b) = parse_bundle(&m) else { continue };
            parsed += 1;
            let pin = if round % 2 == 0 {
                Some(pem.as_str())
            } else {
                None
            };
            let r = verify_transition(&trusted, &b.state, b.verifiable_tx.as_ref(), pin);
            if check_outcome(&b, &genuine, r, &want) {
                accepted += 1;
            }
        }
    }
    println!("bundle mutations: {total} tried, {parsed} still parsed, {accepted} accepted (all with the genuine verdict/state)");
    assert!(total >= 5000 && parsed > 500);
}

#[test]
fn malformed_and_truncated_bodies_are_errors() {
    for body in [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"\"x\"",
        b"{\"txId\": -1}",
        b"{\"txId\": \"1e3\"}",
        b"{\"txId\": \"18446744073709551616\"}",
        b"{\"txHash\": \"!!!\"}",
        b"{\"signature\": 5}",
        b"{\"db\": 1}",
        b"\xff\xfe",
        b"{\"state\": null}",
    ] {
        let _ = parse_state(body);
        let _ = parse_verifiable_tx(body);
        assert!(
            parse_bundle(body).is_err(),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let deep = "[".repeat(100_000);
    assert!(parse_state(deep.as_bytes()).is_err());
    for (trusted, body, _) in forward_bundles() {
        for cut in (0..body.len()).step_by(7) {
            if let Ok(b) = parse_bundle(&body[..cut]) {
                panic!("truncated bundle parsed: {cut} {:?}", b.state.tx_id);
            }
        }
        // Valid JSON, wrong digest lengths: decoded, then rejected as malformed.
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["verifiableTx"]["dualProof"]["inclusionProof"][0] = Value::String("AAAA".into());
        let b = parse_bundle(&serde_json::to_vec(&v).unwrap()).unwrap();
        let r = verify_transition(&trusted, &b.state, b.verifiable_tx.as_ref(), None);
        assert!(r.is_err());
        // A response re-signed key is irrelevant when another key is pinned.
        let g = parse_bundle(&body).unwrap();
        assert!(verify_transition(
            &trusted,
            &g.state,
            g.verifiable_tx.as_ref(),
            Some(&other_pem())
        )
        .is_err());
    }
}

/// Digest slots of a dual proof that immudb's verifier actually consumes for
/// this (s, t); flipping any of them must break the proof.
fn used_slots(p: &DualProof, s: u64) -> Vec<(&'static str, usize)> {
    let (sh, th) = (&p.source_tx_header, &p.target_tx_header);
    let mut v = vec![
        ("sh.prev_alh", 0),
        ("sh.eh", 0),
        ("th.prev_alh", 0),
        ("th.eh", 0),
    ];
    if sh.bl_tx_id > 0 {
        v.push(("sh.bl_root", 0));
        v.extend((0..p.consistency_proof.len()).map(|i| ("cons", i)));
    }
    if th.bl_tx_id > 0 {
        v.push(("th.bl_root", 0));
        v.push(("bl_alh", 0));
        v.extend((0..p.last_inclusion_proof.len()).map(|i| ("last", i)));
    }
    if s < th.bl_tx_id {
        v.extend((0..p.inclusion_proof.len()).map(|i| ("incl", i)));
    }
    if let Some(lp) = &p.linear_proof {
        v.extend((0..lp.terms.len()).map(|i| ("lin", i)));
    }
    if let Some(ap) = &p.linear_advance_proof {
        v.extend((0..ap.linear_proof_terms.len()).map(|i| ("adv", i)));
    }
    v
}

fn slot<'a>(p: &'a mut DualProof, name: &str, i: usize) -> &'a mut Digest {
    match name {
        "sh.prev_alh" => &mut p.source_tx_header.prev_alh,
        "sh.eh" => &mut p.source_tx_header.eh,
        "sh.bl_root" => &mut p.source_tx_header.bl_root,
        "th.prev_alh" => &mut p.target_tx_header.prev_alh,
        "th.eh" => &mut p.target_tx_header.eh,
        "th.bl_root" => &mut p.target_tx_header.bl_root,
        "bl_alh" => &mut p.target_bl_tx_alh,
        "cons" => &mut p.consistency_proof[i],
        "last" => &mut p.last_inclusion_proof[i],
        "incl" => &mut p.inclusion_proof[i],
        "lin" => &mut p.linear_proof.as_mut().unwrap().terms[i],
        "adv" => &mut p.linear_advance_proof.as_mut().unwrap().linear_proof_terms[i],
        _ => unreachable!(),
    }
}

#[test]
fn mutated_dual_proofs_never_verify() {
    let v = vectors();
    let mut rng = fastrand::Rng::with_seed(42);
    let genuine: Vec<_> = v["dual_proofs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verify"] == true)
        .collect();
    let mut n = 0;
    for _ in 0..4000 {
        let c = genuine[rng.usize(0..genuine.len())];
        let (orig, s, t, a, b) = dual_case(c).unwrap();
        let mut p = orig.clone();
        let (sa, sb) = (a, b);
        match rng.u8(0..5) {
            0 | 1 => {
                let slots = used_slots(&p, s);
                let (name, i) = slots[rng.usize(0..slots.len())];
                slot(&mut p, name, i)[rng.usize(0..32)] ^= 1 << rng.u8(0..8);
            }
            2 => {
                // Header scalars.
                let h = if rng.bool() {
                    &mut p.source_tx_header
                } else {
                    &mut p.target_tx_header
                };
                match rng.u8(0..5) {
                    0 => h.ts ^= 1 << rng.u8(0..40),
                    1 => h.nentries ^= 1 << rng.u8(0..8),
                    2 => h.version = [0, 1, 2, -1][rng.usize(0..4)],
                    3 => h.metadata.extra.push(rng.u8(..)),
                    _ => h.bl_tx_id = h.bl_tx_id.wrapping_add(rng.u64(1..3)),
                }
            }
            3 => {
                // Structural: drop or add a term in a list the verifier consumes.
                let (sb, tb) = (p.source_tx_header.bl_tx_id, p.target_tx_header.bl_tx_id);
                let l: &mut Vec<Digest> = match rng.u8(0..3) {
                    0 if sb > 0 => &mut p.consistency_proof,
                    1 if tb > 0 => &mut p.last_inclusion_proof,
                    _ => {
                        &mut p
                            .linear_proof
                            .get_or_insert(LinearProof {
                                source_tx_id: 0,
                                target_tx_id: 0,
                                terms: vec![],
                            })
                            .terms
                    }
                };
                if l.is_empty() || rng.bool() {
                    l.push([rng.u8(..); 32]);
                } else {
                    l.pop();
                }
            }
            _ => {
                // Wrong ids passed by the caller.
                let (s2, t2) = (s.wrapping_add(rng.u64(0..3)), t.wrapping_sub(rng.u64(1..3)));
                assert!(verify_dual_proof(&p, s2, t2, &sa, &sb).is_err() || (s2 == s && t2 == t));
                n += 1;
                continue;
            }
        }
        if p == orig {
            continue;
        }
        let r = verify_dual_proof(&p, s, t, &sa, &sb);
        assert!(r.is_err(), "mutation accepted for {}: {:?}", c["name"], p);
        n += 1;
    }
    println!("dual-proof mutations rejected: {n}");
    assert!(n > 3000);
}

#[test]
fn extreme_ids_never_panic() {
    let d = [7u8; 32];
    let terms = vec![d; 70];
    for &(i, j) in &[
        (0, 0),
        (1, u64::MAX),
        (u64::MAX, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (1 << 63, u64::MAX),
    ] {
        let _ = verify_inclusion(&terms, i, j, &d, &d);
        let _ = verify_consistency(&terms, i, j, &d, &d);
        let _ = verify_last_inclusion(&terms, j, &d, &d);
        let _ = verify_htree_inclusion(i, j, &terms, &d, &d);
        let lp = LinearProof {
            source_tx_id: i,
            target_tx_id: j,
            terms: terms.clone(),
        };
        assert!(verify_linear_proof(Some(&lp), i, j, &d, &d).is_err());
        assert!(verify_linear_advance_proof(None, i, j, &d, &d, j).is_err() || j - i <= 1);
    }
}
