//! Linear, linear-advance and dual proofs (SPEC §4). These tie the Alh hash
//! chain to the ahtree: a dual proof shows that the trusted Alh is a leaf of a
//! tree committed inside the new header, and that the chain continues to the new
//! Alh. Every check returns the precise `VerifyError` so an operator can tell a
//! rollback (trusted Alh not included) from a corrupted proof.

use crate::immudb::ahtree::{verify_consistency, verify_inclusion, verify_last_inclusion};
use crate::immudb::error::VerifyError;
use crate::immudb::hash::{advance, leaf_for, Digest};
use crate::immudb::tx::TxHeader;

/// `terms[0]` = Alh(source), `terms[k]` = InnerHash(source + k).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearProof {
    pub source_tx_id: u64,
    pub target_tx_id: u64,
    pub terms: Vec<Digest>,
}

/// Covers the Alhs a lagging `BlTxID` left outside the older tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearAdvanceProof {
    pub linear_proof_terms: Vec<Digest>,
    pub inclusion_proofs: Vec<Vec<Digest>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualProof {
    pub source_tx_header: TxHeader,
    pub target_tx_header: TxHeader,
    pub inclusion_proof: Vec<Digest>,
    pub consistency_proof: Vec<Digest>,
    pub target_bl_tx_alh: Digest,
    pub last_inclusion_proof: Vec<Digest>,
    pub linear_proof: Option<LinearProof>,
    pub linear_advance_proof: Option<LinearAdvanceProof>,
}

/// The document API's proof, valid only for synchronously linked histories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualProofV2 {
    pub source_tx_header: TxHeader,
    pub target_tx_header: TxHeader,
    pub inclusion_proof: Vec<Digest>,
    pub consistency_proof: Vec<Digest>,
}

fn lin_err(reason: impl Into<String>) -> VerifyError {
    VerifyError::LinearProofFailed {
        reason: reason.into(),
    }
}

/// Verifies that the Alh chain runs from `alh_s` (tx `s`) to `alh_t` (tx `t`).
pub fn verify_linear_proof(
    p: Option<&LinearProof>,
    s: u64,
    t: u64,
    alh_s: &Digest,
    alh_t: &Digest,
) -> Result<(), VerifyError> {
    let p = p.ok_or_else(|| lin_err("proof missing"))?;
    if p.source_tx_id != s || p.target_tx_id != t {
        return Err(lin_err(format!(
            "proof covers {}->{}, expected {s}->{t}",
            p.source_tx_id, p.target_tx_id
        )));
    }
    if s == 0 || s > t {
        return Err(lin_err(format!("invalid range {s}->{t}")));
    }
    let expected_len = (t - s).checked_add(1);
    if expected_len != Some(p.terms.len() as u64) {
        return Err(lin_err(format!(
            "{} terms, expected {}",
            p.terms.len(),
            t - s + 1
        )));
    }
    if &p.terms[0] != alh_s {
        return Err(lin_err("first term is not the source Alh"));
    }
    let mut c = p.terms[0];
    for (k, inner) in p.terms.iter().enumerate().skip(1) {
        c = advance(&c, s + k as u64, inner);
    }
    if &c != alh_t {
        return Err(lin_err("chain does not reach the target Alh"));
    }
    Ok(())
}

fn adv_err(reason: impl Into<String>) -> VerifyError {
    VerifyError::LinearAdvanceProofFailed {
        reason: reason.into(),
    }
}

/// Verifies that every Alh strictly between `start` and `end` is a leaf of the
/// tree (`tree_root`, `tree_size`) and that the chain through them reaches `end_alh`.
pub fn verify_linear_advance_proof(
    p: Option<&LinearAdvanceProof>,
    start: u64,
    end: u64,
    end_alh: &Digest,
    tree_root: &Digest,
    tree_size: u64,
) -> Result<(), VerifyError> {
    if end < start {
        return Err(adv_err(format!("end {end} < start {start}")));
    }
    if end - start <= 1 {
        return Ok(());
    }
    let p = p.ok_or_else(|| adv_err(format!("needed for {start}->{end} but absent")))?;
    let n = end - start;
    if p.linear_proof_terms.len() as u64 != n || p.inclusion_proofs.len() as u64 != n - 1 {
        return Err(adv_err(format!(
            "{} terms / {} inclusion proofs, expected {} / {}",
            p.linear_proof_terms.len(),
            p.inclusion_proofs.len(),
            n,
            n - 1
        )));
    }
    let mut c = p.linear_proof_terms[0];
    for k in 0..(n - 1) as usize {
        let tx = start + 1 + k as u64;
        if !verify_inclusion(
            &p.inclusion_proofs[k],
            tx,
            tree_size,
            &leaf_for(&c),
            tree_root,
        ) {
            return Err(adv_err(format!(
                "Alh of tx {tx} not included in tree of size {tree_size}"
            )));
        }
        c = advance(&c, tx + 1, &p.linear_proof_terms[k + 1]);
    }
    if &c != end_alh {
        return Err(adv_err(format!("chain does not reach Alh of tx {end}")));
    }
    Ok(())
}

fn dual_err(reason: impl Into<String>) -> VerifyError {
    VerifyError::DualProofFailed {
        reason: reason.into(),
    }
}

/// Verifies a dual proof from tx `s` (Alh `alh_s`, the caller's trusted value,
/// never recomputed from the proof) to tx `t` (Alh `alh_t`).
pub fn verify_dual_proof(
    p: &DualProof,
    s: u64,
    t: u64,
    alh_s: &Digest,
    alh_t: &Digest,
) -> Result<(), VerifyError> {
    let sh = &p.source_tx_header;
    let th = &p.target_tx_header;
    if sh.id != s || th.id != t {
        return Err(dual_err(format!(
            "proof headers are {}->{}, expected {s}->{t}",
            sh.id, th.id
        )));
    }
    if s == 0 || s > t {
        return Err(dual_err(format!("invalid range {s}->{t}")));
    }
    sh.check_structure()?;
    th.check_structure()?;
    if &sh.alh()? != alh_s {
        return Err(VerifyError::AlhMismatch { tx: s });
    }
    if &th.alh()? != alh_t {
        return Err(VerifyError::AlhMismatch { tx: t });
    }
    if s < th.bl_tx_id
        && !verify_inclusion(
            &p.inclusion_proof,
            s,
            th.bl_tx_id,
            &leaf_for(alh_s),
            &th.bl_root,
        )
    {
        return Err(VerifyError::InclusionProofFailed {
            leaf: s,
            tree_size: th.bl_tx_id,
        });
    }
    if sh.bl_tx_id > 0
        && !verify_consistency(
            &p.consistency_proof,
            sh.bl_tx_id,
            th.bl_tx_id,
            &sh.bl_root,
            &th.bl_root,
        )
    {
        return Err(VerifyError::ConsistencyProofFailed {
            from_size: sh.bl_tx_id,
            to_size: th.bl_tx_id,
        });
    }
    if th.bl_tx_id > 0
        && !verify_last_inclusion(
            &p.last_inclusion_proof,
            th.bl_tx_id,
            &leaf_for(&p.target_bl_tx_alh),
            &th.bl_root,
        )
    {
        return Err(VerifyError::LastInclusionProofFailed {
            tree_size: th.bl_tx_id,
        });
    }
    let lap = p.linear_advance_proof.as_ref();
    if s < th.bl_tx_id {
        verify_linear_proof(
            p.linear_proof.as_ref(),
            th.bl_tx_id,
            t,
            &p.target_bl_tx_alh,
            alh_t,
        )?;
        verify_linear_advance_proof(lap, sh.bl_tx_id, s, alh_s, &th.bl_root, th.bl_tx_id)?;
    } else {
        verify_linear_proof(p.linear_proof.as_ref(), s, t, alh_s, alh_t)?;
        verify_linear_advance_proof(
            lap,
            sh.bl_tx_id,
            th.bl_tx_id,
            &p.target_bl_tx_alh,
            &th.bl_root,
            th.bl_tx_id,
        )?;
    }
    Ok(())
}

fn v2_err(reason: impl Into<String>) -> VerifyError {
    VerifyError::DualProofV2Failed {
        reason: reason.into(),
    }
}

/// Verifies a `DualProofV2` (document API). Rejects lagging histories, as immudb does.
pub fn verify_dual_proof_v2(
    p: &DualProofV2,
    s: u64,
    t: u64,
    alh_s: &Digest,
    alh_t: &Digest,
) -> Result<(), VerifyError> {
    let sh = &p.source_tx_header;
    let th = &p.target_tx_header;
    if sh.id == 0 || sh.id != s || th.id != t {
        return Err(v2_err(format!(
            "proof headers are {}->{}, expected {s}->{t}",
            sh.id, th.id
        )));
    }
    if s > t {
        return Err(v2_err(format!("source {s} newer than target {t}")));
    }
    if &sh.alh()? != alh_s {
        return Err(VerifyError::AlhMismatch { tx: s });
    }
    if &th.alh()? != alh_t {
        return Err(VerifyError::AlhMismatch { tx: t });
    }
    if sh.bl_tx_id != s - 1 || th.bl_tx_id != t - 1 {
        return Err(v2_err(
            "headers are not synchronously linked (BlTxID != ID-1)",
        ));
    }
    if s == t {
        return Ok(());
    }
    if !verify_inclusion(
        &p.inclusion_proof,
        s,
        th.bl_tx_id,
        &leaf_for(alh_s),
        &th.bl_root,
    ) {
        return Err(VerifyError::InclusionProofFailed {
            leaf: s,
            tree_size: th.bl_tx_id,
        });
    }
    let ok = if s == 1 {
        // The tree of size 1 is the single leaf of tx 1, whose own header has an
        // empty BlRoot, so immudb checks consistency from that leaf instead.
        verify_consistency(
            &p.consistency_proof,
            1,
            th.bl_tx_id,
            &leaf_for(alh_s),
            &th.bl_root,
        )
    } else {
        verify_consistency(
            &p.consistency_proof,
            sh.bl_tx_id,
            th.bl_tx_id,
            &sh.bl_root,
            &th.bl_root,
        )
    };
    if !ok {
        return Err(VerifyError::ConsistencyProofFailed {
            from_size: if s == 1 { 1 } else { sh.bl_tx_id },
            to_size: th.bl_tx_id,
        });
    }
    Ok(())
}
