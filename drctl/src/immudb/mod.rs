//! immudb audit-ledger verification.
//!
//! [`verify`] ports immudb's own client-side verification (transaction
//! headers and Alh, entries tree, append-only tree inclusion/consistency,
//! linear, linear-advance and dual proofs, state signatures) exactly as
//! specified in immudb's Go code, and is tested against vectors produced
//! by that code (`drctl/testdata/immudb/`).
//!
//! Not built yet: the HTTP/JSON client, trusted-state custody
//! (`drctl immudb trust`), the `immudb.verify` action and `drctl immudb
//! verify-proof`.

pub mod verify;
