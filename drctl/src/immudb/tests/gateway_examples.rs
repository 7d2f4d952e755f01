//! Every body of gateway_json_examples.json parses, round-trips through the
//! wire types unchanged, and reaches the documented verdict, both through the
//! low-level dual-proof verifier and through `verify_transition`.

use serde_json::Value;

use crate::immudb::error::VerifyError;
use crate::immudb::gateway::{
    parse_bundle, parse_state, parse_verifiable_tx, ImmutableState, VerifiableTx,
};
use crate::immudb::hash::digest_from_hex;
use crate::immudb::proofs::verify_dual_proof;
use crate::immudb::signature::{verify_signature_over, verify_state_signature};
use crate::immudb::verdict::{verify_transition, BehindProof, TrustedState, Verdict};

pub(crate) fn examples() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/immudb/gateway_json_examples.json"
    );
    serde_json::from_slice(&std::fs::read(path).expect("examples file")).expect("examples json")
}

pub(crate) fn pem() -> String {
    examples()["public_key_pem"].as_str().unwrap().to_string()
}

/// A syntactically valid P-256 key that did not sign anything in the vectors.
pub(crate) fn other_pem() -> String {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    let sk = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
    sk.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

fn trusted_of(e: &Value) -> TrustedState {
    let t = &e["trusted_state"];
    TrustedState {
        db: t["db"].as_str().unwrap().to_string(),
        tx_id: t["txId"].as_u64().unwrap(),
        tx_hash: digest_from_hex("txHash_hex", t["txHash_hex"].as_str().unwrap()).unwrap(),
        signature: None,
    }
}

/// The replica's `CurrentState` that would accompany this proof response.
fn replica_state(db: &str, vtx: &VerifiableTx, tx_id: u64) -> ImmutableState {
    let dp = vtx.dual_proof.as_ref().unwrap().to_proof().unwrap();
    let h = [&dp.source_tx_header, &dp.target_tx_header]
        .into_iter()
        .find(|h| h.id == tx_id)
        .unwrap();
    ImmutableState {
        db: db.to_string(),
        tx_id,
        tx_hash: h.alh().unwrap().to_vec(),
        // The response signature covers the proof's target only.
        signature: if h.id == dp.target_tx_header.id {
            vtx.signature.clone()
        } else {
            None
        },
        ..Default::default()
    }
}

#[test]
fn every_gateway_example_reaches_expected_verdict() {
    let ex = examples();
    let pem = pem();
    let mut counted = (0, 0);
    for e in ex["examples"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let body = serde_json::to_vec(&e["response_json"]).unwrap();
        let path = e["http"]["path"].as_str().unwrap();
        if path == "/api/db/state" {
            let st = parse_state(&body).unwrap();
            assert_eq!(
                serde_json::to_value(&st).unwrap(),
                e["response_json"],
                "round trip {name}"
            );
            let expected = e["expected"]["signature_valid"].as_bool().unwrap();
            assert_eq!(
                verify_state_signature(&st, Some(&pem)).is_ok(),
                expected,
                "{name}"
            );
            assert_eq!(
                verify_state_signature(&st, None).is_ok(),
                expected,
                "{name} (embedded key)"
            );
            // A different pinned key must reject it, whatever key the body embeds.
            assert!(matches!(
                verify_state_signature(&st, Some(&other_pem())),
                Err(VerifyError::SignatureInvalid { .. })
            ));
            let mut unsigned = st.clone();
            unsigned.signature = None;
            assert_eq!(
                verify_state_signature(&unsigned, Some(&pem)),
                Err(VerifyError::SignatureMissing)
            );
            // Same state trusted: Same verdict.
            let trusted = TrustedState::from_state(&st).unwrap();
            assert_eq!(
                verify_transition(&trusted, &st, None, Some(&pem)).unwrap(),
                Verdict::Same { tx: st.tx_id }
            );
            let round: TrustedState =
                serde_json::from_str(&serde_json::to_string(&trusted).unwrap()).unwrap();
            assert_eq!(round, trusted);
            counted.0 += 1;
            continue;
        }
        let vtx = parse_verifiable_tx(&body).unwrap();
        assert_eq!(
            serde_json::to_value(&vtx).unwrap(),
            e["response_json"],
            "round trip {name}"
        );
        let trusted = trusted_of(e);
        let exp = &e["expected"];
        let (s, t) = (
            exp["source_tx_id"].as_u64().unwrap(),
            exp["target_tx_id"].as_u64().unwrap(),
        );
        let expected = exp["verify"].as_bool().unwrap();
        let dp = vtx.dual_proof.as_ref().unwrap().to_proof().unwrap();
        // The trusted Alh is used for whichever end the trusted state is; the other
        // end's Alh comes from the proof's own header.
        let alh_s = if s == trusted.tx_id {
            trusted.tx_hash
        } else {
            dp.source_tx_header.alh().unwrap()
        };
        let alh_t = if t == trusted.tx_id {
            trusted.tx_hash
        } else {
            dp.target_tx_header.alh().unwrap()
        };
        let r = verify_dual_proof(&dp, s, t, &alh_s, &alh_t);
        assert_eq!(r.is_ok(), expected, "{name}: {r:?}");

        // The VerifiableTx signature covers (db, target id, Alh(target header)).
        let sig = vtx.signature.as_ref().unwrap();
        let th_alh = dp.target_tx_header.alh().unwrap();
        verify_signature_over(
            &trusted.db,
            t,
            &th_alh,
            Some((&sig.public_key, &sig.signature)),
            Some(&pem),
        )
        .unwrap();
        // ...and not the source's.
        let sh_alh = dp.source_tx_header.alh().unwrap();
        assert!(
            verify_signature_over(
                &trusted.db,
                s,
                &sh_alh,
                Some((&sig.public_key, &sig.signature)),
                Some(&pem)
            )
            .is_err()
                || s == t
        );

        // End to end: the replica reports the requested tx as its current state.
        let requested: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
        let replica = replica_state(&trusted.db, &vtx, requested);
        let pin = replica.signature.is_some().then_some(pem.as_str());
        let verdict = verify_transition(&trusted, &replica, Some(&vtx), pin);
        match (requested.cmp(&trusted.tx_id), expected) {
            (std::cmp::Ordering::Greater, true) => {
                assert_eq!(
                    verdict.unwrap(),
                    Verdict::Ahead {
                        from_tx: trusted.tx_id,
                        to_tx: requested
                    },
                    "{name}"
                )
            }
            (std::cmp::Ordering::Greater, false) => {
                assert!(verdict.is_err(), "{name}: {verdict:?}")
            }
            (std::cmp::Ordering::Equal, _) => {
                assert_eq!(verdict.unwrap(), Verdict::Same { tx: requested })
            }
            (std::cmp::Ordering::Less, _) => assert_eq!(
                verdict.unwrap(),
                Verdict::Behind {
                    trusted_tx: trusted.tx_id,
                    replica_tx: requested,
                    txs_lost: trusted.tx_id - requested,
                    proof: BehindProof::Unproven,
                }
            ),
        }
        if requested > trusted.tx_id && expected {
            // Without the proof, or with a proof against another trusted tx, it must fail.
            assert_eq!(
                verify_transition(&trusted, &replica, None, Some(&pem)),
                Err(VerifyError::ProofMissing)
            );
            let mut wrong = trusted.clone();
            wrong.tx_hash[0] ^= 1;
            assert!(verify_transition(&wrong, &replica, Some(&vtx), Some(&pem)).is_err());
            // A bundle with the same content parses to the same thing.
            let bundle = serde_json::json!({"state": serde_json::to_value(&replica).unwrap(), "verifiableTx": e["response_json"]});
            let b = parse_bundle(&serde_json::to_vec(&bundle).unwrap()).unwrap();
            assert_eq!(b.verifiable_tx.as_ref(), Some(&vtx));
            assert_eq!(b.state, replica);
        }
        counted.1 += 1;
    }
    println!(
        "gateway examples: {} state bodies, {} verifiable-tx bodies",
        counted.0, counted.1
    );
    assert!(counted.0 >= 1 && counted.1 >= 6);
}

#[test]
fn bundle_with_null_verifiable_tx() {
    let ex = examples();
    let state = &ex["examples"][0]["response_json"];
    let body = serde_json::json!({"state": state, "verifiableTx": null});
    let b = parse_bundle(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert!(b.verifiable_tx.is_none());
    assert_eq!(b.state.tx_id, 20);
}

#[test]
fn transition_edge_cases() {
    let pem = pem();
    let st = parse_state(&serde_json::to_vec(&examples()["examples"][0]["response_json"]).unwrap())
        .unwrap();
    // Empty trusted history: anything is an extension, no proof needed.
    let empty = TrustedState::empty("defaultdb");
    assert_eq!(
        verify_transition(&empty, &st, None, Some(&pem)).unwrap(),
        Verdict::Ahead {
            from_tx: 0,
            to_tx: 20
        }
    );
    // Replica reset to empty: reported as total loss.
    let trusted = TrustedState::from_state(&st).unwrap();
    let blank = ImmutableState {
        db: "defaultdb".into(),
        ..Default::default()
    };
    assert_eq!(
        verify_transition(&trusted, &blank, None, None).unwrap(),
        Verdict::Behind {
            trusted_tx: 20,
            replica_tx: 0,
            txs_lost: 20,
            proof: BehindProof::Unproven,
        }
    );
    // Unsigned replica with a pinned key is rejected.
    assert_eq!(
        verify_transition(&trusted, &blank, None, Some(&pem)),
        Err(VerifyError::SignatureMissing)
    );
    // Same tx, different hash: divergence.
    let mut forged = st.clone();
    forged.tx_hash[3] ^= 0x10;
    let mut forged_unsigned = forged.clone();
    forged_unsigned.signature = None;
    assert_eq!(
        verify_transition(&trusted, &forged_unsigned, None, None),
        Err(VerifyError::AlhMismatch { tx: 20 })
    );
    // Without a pin the embedded key still detects that the signature does not match.
    assert!(matches!(
        verify_transition(&trusted, &forged, None, None),
        Err(VerifyError::SignatureInvalid { .. })
    ));
    // Signature by the pinned key over the original hash does not cover the forged one.
    assert!(matches!(
        verify_transition(&trusted, &forged, None, Some(&pem)),
        Err(VerifyError::SignatureInvalid { .. })
    ));
    // Other database.
    let mut other = st.clone();
    other.db = "otherdb".into();
    assert!(matches!(
        verify_transition(&trusted, &other, None, None),
        Err(VerifyError::DatabaseMismatch { .. })
    ));
    // A garbage pinned key is a configuration error, not a pass.
    assert!(matches!(
        verify_state_signature(&st, Some("not a pem")),
        Err(VerifyError::PublicKeyInvalid { .. })
    ));
}
