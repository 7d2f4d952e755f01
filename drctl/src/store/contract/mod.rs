//! The [`Store`] contract as a backend-agnostic test suite, and a fixture
//! that runs a real PostgreSQL server for tests.
//!
//! Every check uses fresh names (runs, leases, collections), so the suite
//! can run again against the same store and beside other tests.
//!
//! The checks are grouped by the kind of state they cover: [`journal`]
//! (conditional appends, cursors, chunks, deletion and listing), [`lease`]
//! (exclusion, fencing, takeover) and [`docs`] (documents, histories,
//! approvals, artifacts); [`pg_fixture`] is the PostgreSQL server the
//! PostgreSQL backend's tests run against.

use std::time::Duration;

use super::{HolderId, Lease, LeaseMode, Store, SCHEMA_VERSION};

mod docs;
mod journal;
mod lease;
mod pg_fixture;

use docs::{active_region, approvals_and_aborts, artifacts, documents_cas, histories_in_order};
use journal::{
    concurrent_appends, conditional_append, delete_run, group_commit, listing, read_from_cursor,
    read_in_bounded_chunks,
};
pub use lease::takeover_is_a_cut;
use lease::{
    dead_holder_taken_over, exclusive_excludes_exclusive, fencing, release_then_reacquire,
    shared_coexists_with_exclusive,
};
pub use pg_fixture::{with_pg_store, with_postgres, PgTarget, TestPostgres};

/// Runs every check in order.
pub async fn run_all(store: &dyn Store) {
    basics(store).await;
    conditional_append(store).await;
    group_commit(store).await;
    concurrent_appends(store).await;
    read_from_cursor(store).await;
    read_in_bounded_chunks(store).await;
    fencing(store).await;
    takeover_is_a_cut(store, store).await;
    exclusive_excludes_exclusive(store).await;
    shared_coexists_with_exclusive(store).await;
    dead_holder_taken_over(store).await;
    release_then_reacquire(store).await;
    documents_cas(store).await;
    active_region(store).await;
    histories_in_order(store).await;
    approvals_and_aborts(store).await;
    artifacts(store).await;
    delete_run(store).await;
    listing(store).await;
}

pub(super) fn unique(what: &str) -> String {
    format!(
        "{}-{what}-{:08x}",
        humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .replace([':', '.'], ""),
        fastrand::u32(..)
    )
}

pub(super) async fn exclusive(store: &dyn Store, name: &str, run_id: &str, ttl: Duration) -> Lease {
    store
        .acquire_lease(
            name,
            LeaseMode::Exclusive,
            &HolderId::this_process(run_id),
            ttl,
        )
        .await
        .expect("acquire exclusive lease")
        .lease
}

pub(super) const LONG: Duration = Duration::from_secs(60);

pub async fn basics(store: &dyn Store) {
    assert!(!store.describe().is_empty());
    assert!(!store.location().is_empty());
    let h = store.health().await.expect("health");
    assert_eq!(h.schema_version, SCHEMA_VERSION);
    assert!(
        h.clock_skew_ms.abs() < 60_000,
        "clock skew {}",
        h.clock_skew_ms
    );
}
