//! immudb proof verification and HTTP/JSON client for drctl.
//!
//! Purpose: after a failover, prove that the immudb database served by the DR
//! region is identical to, or an append-only extension of, the last state trusted
//! from the primary, using only the HTTP gateway and local hashing. The rules
//! follow `shared/immudb/SPEC.md` (immudb commit b654b269) and are checked against
//! vectors produced by immudb's own Go code (`testdata/immudb/`).
//!
//! # Public API
//!
//! High level (what drctl calls):
//! - [`verdict::verify_against_checkpoints`]`(&[TrustedState], &ImmutableState, Option<&VerifiableTx>, pinned_pem: Option<&str>) -> Result<Verdict, VerifyError>`
//!   with [`Verdict`] = `Same{tx}` | `Ahead{from_tx, to_tx}` | `Behind{trusted_tx, replica_tx, txs_lost, proof}`
//!   ([`BehindProof`] = `AtCheckpoint` | `Consistent` (both name the checkpoint) | `Unproven`);
//!   [`verdict::proof_source`] says which `proveSinceTx` to ask for; `verify_transition` is the
//!   single-trusted-state form (offline audits).
//! - [`signature::verify_state_signature`]`(&ImmutableState, Option<&str>) -> Result<(), VerifyError>`:
//!   with a pinned PEM key a state without a valid signature by that key is rejected.
//! - [`TrustedState`] (serde; `tx_hash` persisted as hex) with `empty(db)` / `from_state(&ImmutableState)`.
//! - [`client::ImmudbClient`]: `new(base_url, user, password, db, timeout)`, `login()` (session,
//!   legacy-token fallback), `open_session()`, `login_legacy()`, `keep_alive()`, `close()`, `state()`,
//!   `verifiable_tx(tx, prove_since)`, `fetch_bundle(&checkpoints)`, `check_against(&checkpoints, pinned)`.
//! - Gateway bodies ([`gateway`]): `ImmutableState`, `VerifiableTx`, `Bundle{state, verifiable_tx}`,
//!   `parse_state/parse_verifiable_tx/parse_bundle(&[u8])`; `WireDualProof::to_proof()`.
//! - Errors: [`VerifyError`] (one variant per failed check), [`ClientError`] (HTTP; wraps `VerifyError`;
//!   `is_unavailable()` = nothing was verified: exit 21, not 13).
//!
//! Low level (tests, benchmarks, offline audits):
//! - [`tx`]: `TxHeader::{inner_input, inner_hash, alh, to_bytes}`, `TxMetadata`, `KvMetadata`,
//!   `entry_digest_v0/v1`, `verify_alh_chain`.
//! - [`htree`]: `entries_root`, `verify_htree_inclusion`, `htree_inclusion_proof`.
//! - [`ahtree`]: `verify_inclusion`, `verify_last_inclusion`, `verify_consistency`, `MemAhTree` (prover).
//! - [`proofs`]: `verify_linear_proof`, `verify_linear_advance_proof`, `verify_dual_proof`,
//!   `verify_dual_proof_v2`.
//! - [`hash`]: `sha256`, `leaf_for`, `node_hash`, `advance`, `SHA256_EMPTY`.
//! - [`ledger`]: `Ledger` (headers -> the dual proofs a server computes; for tests and fakes).
//! - [`custody`]: trusted states and checkpoints per (environment, region, database).
//! - [`bench`]: `bench_workloads() -> Vec<(String, f64)>` (throughput; unit in the name).
//!
//! Lagging histories (pre-1.4.1 servers) are verified when the server sends the
//! `LinearAdvanceProof`; if it is needed and absent the check fails closed
//! (`LinearAdvanceProofFailed`) instead of issuing the Go client's extra calls.

pub mod action;
pub mod ahtree;
pub mod bench;
pub mod client;
pub mod custody;
pub mod error;
pub mod gateway;
pub mod hash;
pub mod htree;
pub mod ledger;
pub mod proofs;
pub mod signature;
pub mod tx;
pub mod vectors;
pub mod verdict;

pub use client::ImmudbClient;
pub use error::{ClientError, VerifyError};
pub use gateway::{Bundle, ImmutableState, VerifiableTx};
pub use signature::verify_state_signature;
pub use verdict::{
    verify_against_checkpoints, verify_transition, BehindProof, TrustedState, Verdict,
};

#[cfg(test)]
mod tests;
