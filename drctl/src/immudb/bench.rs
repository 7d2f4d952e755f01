//! Benchmark support without criterion: drctl prints these figures (and ratios
//! between them) so operators can size verification of very long histories.
//! Run in release mode; debug builds are an order of magnitude slower.

use std::time::Instant;

use crate::immudb::ahtree::MemAhTree;
use crate::immudb::hash::{sha256, Digest, SHA256_EMPTY};
use crate::immudb::proofs::{verify_dual_proof, DualProof, LinearProof};
use crate::immudb::tx::{TxHeader, TxMetadata};

/// Sizes of the synthetic workloads.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Headers in the Alh-chain recomputation workload.
    pub chain_headers: u64,
    /// Target tx id of the synthetic dual proof (source is half of it).
    pub dual_proof_tx: u64,
    /// Dual-proof verifications timed.
    pub dual_proof_iterations: u32,
    /// Bytes hashed by the raw SHA-256 workload.
    pub sha256_bytes: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            chain_headers: 1_000_000,
            dual_proof_tx: 1_000_000,
            dual_proof_iterations: 2_000,
            sha256_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Runs every workload with the default sizes. Each entry is
/// `(name, throughput)`; the unit is in the name.
pub fn bench_workloads() -> Vec<(String, f64)> {
    bench_workloads_with(&BenchConfig::default())
}

pub fn bench_workloads_with(cfg: &BenchConfig) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    out.push(("sha256 bytes/s".to_string(), bench_sha256(cfg.sha256_bytes)));
    out.push((
        format!(
            "alh chain recomputation headers/s ({} headers)",
            cfg.chain_headers
        ),
        bench_alh_chain(cfg.chain_headers),
    ));
    if let Some((label, v)) =
        bench_dual_proof_synthetic(cfg.dual_proof_tx, cfg.dual_proof_iterations)
    {
        out.push((label, v));
    }
    if let Some((label, v)) = bench_dual_proof_vectors(cfg.dual_proof_iterations) {
        out.push((label, v));
    }
    out
}

fn per_sec(count: f64, start: Instant) -> f64 {
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    count / secs
}

fn bench_sha256(total: usize) -> f64 {
    let chunk = vec![0xa5u8; 64 * 1024];
    let n = (total / chunk.len()).max(1);
    let start = Instant::now();
    let mut acc = 0u8;
    for _ in 0..n {
        acc ^= sha256(&chunk)[0];
    }
    std::hint::black_box(acc);
    per_sec((n * chunk.len()) as f64, start)
}

/// A synthetic v1 header linked after `prev_alh`; `bl_root` is supplied by the caller.
fn synthetic_header(id: u64, prev_alh: Digest, bl_root: Digest) -> TxHeader {
    TxHeader {
        id,
        ts: 1_700_000_000 + id as i64,
        bl_tx_id: id - 1,
        bl_root,
        prev_alh,
        version: 1,
        metadata: TxMetadata::default(),
        nentries: 1,
        eh: sha256(&id.to_be_bytes()),
    }
}

/// Recomputes the Alh chain of `n` headers (generated in place, as a streaming
/// verifier of exported headers would read them).
fn bench_alh_chain(n: u64) -> f64 {
    let start = Instant::now();
    let mut alh = SHA256_EMPTY;
    let mut h = synthetic_header(1, alh, [0u8; 32]);
    for id in 1..=n {
        h.id = id;
        h.ts = 1_700_000_000 + id as i64;
        h.bl_tx_id = id - 1;
        h.prev_alh = alh;
        h.eh[..8].copy_from_slice(&id.to_be_bytes());
        match h.alh() {
            Ok(a) => alh = a,
            Err(_) => return 0.0,
        }
    }
    std::hint::black_box(alh);
    per_sec(n as f64, start)
}

/// Builds a synchronously linked history of `t` txs and the dual proof `t/2 -> t`
/// exactly as a current immudb server would. Headers other than source and target
/// carry a synthetic BlRoot: the verifier never sees them, only their Alhs.
pub fn synthetic_dual_proof(t: u64) -> Option<(DualProof, u64, Digest, Digest)> {
    if t < 3 {
        return None;
    }
    let s = t / 2;
    let mut tree = MemAhTree::new();
    let mut alh = SHA256_EMPTY;
    let mut source = None;
    let mut target = None;
    for id in 1..=t {
        let bl_root = if id == s || id == t {
            tree.root(id - 1).unwrap_or([0u8; 32])
        } else {
            [0u8; 32]
        };
        let h = synthetic_header(id, alh, bl_root);
        alh = h.alh().ok()?;
        if id == s {
            source = Some((h.clone(), alh));
        }
        if id == t {
            target = Some((h, alh));
        } else {
            tree.append(&alh);
        }
    }
    let (sh, alh_s) = source?;
    let (th, alh_t) = target?;
    let target_bl_tx_alh = th.prev_alh;
    let proof = DualProof {
        inclusion_proof: tree.inclusion_proof(s, t - 1)?,
        consistency_proof: tree.consistency_proof(s - 1, t - 1)?,
        target_bl_tx_alh,
        last_inclusion_proof: tree.inclusion_proof(t - 1, t - 1)?,
        linear_proof: Some(LinearProof {
            source_tx_id: t - 1,
            target_tx_id: t,
            terms: vec![target_bl_tx_alh, th.inner_hash().ok()?],
        }),
        linear_advance_proof: None,
        source_tx_header: sh,
        target_tx_header: th,
    };
    Some((proof, s, alh_s, alh_t))
}

fn time_dual(
    p: &DualProof,
    s: u64,
    t: u64,
    alh_s: &Digest,
    alh_t: &Digest,
    iters: u32,
) -> Option<f64> {
    verify_dual_proof(p, s, t, alh_s, alh_t).ok()?;
    let start = Instant::now();
    for _ in 0..iters {
        if verify_dual_proof(p, s, t, alh_s, alh_t).is_err() {
            return None;
        }
    }
    Some(per_sec(iters as f64, start))
}

fn bench_dual_proof_synthetic(t: u64, iters: u32) -> Option<(String, f64)> {
    let (p, s, alh_s, alh_t) = synthetic_dual_proof(t)?;
    let v = time_dual(&p, s, t, &alh_s, &alh_t, iters)?;
    Some((format!("dual proof verify ops/s (synthetic {s}->{t})"), v))
}

/// Uses the largest-target genuine dual proof from immudb's own vectors when the
/// test data is present next to the crate.
fn bench_dual_proof_vectors(iters: u32) -> Option<(String, f64)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/immudb/immudb_vectors.json"
    );
    let data = std::fs::read(path).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
    let best = v["dual_proofs"]
        .as_array()?
        .iter()
        .filter(|c| c["verify"].as_bool() == Some(true))
        .max_by_key(|c| {
            (
                c["target_tx_id"].as_u64(),
                u64::MAX - c["source_tx_id"].as_u64().unwrap_or(0),
            )
        })?;
    let (p, s, t, alh_s, alh_t) = crate::immudb::vectors::dual_case(best).ok()?;
    let r = time_dual(&p, s, t, &alh_s, &alh_t, iters)?;
    Some((
        format!(
            "dual proof verify ops/s (immudb vector {} {s}->{t})",
            best["store"].as_str().unwrap_or("?")
        ),
        r,
    ))
}
