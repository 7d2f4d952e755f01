//! The document part of the [`Store`] contract: versioned documents with
//! compare-and-set, the active region built on them, append-only histories
//! in order, approvals and abort requests, and run artifacts.

use serde_json::json;

use super::{exclusive, unique, LONG};
use crate::store::{Approval, Expect, Store, StoreError};

pub async fn documents_cas(store: &dyn Store) {
    let coll = unique("docs");
    assert!(store.get_doc(&coll, "k").await.expect("get").is_none());
    assert_eq!(
        store
            .put_doc(&coll, "k", &json!({"a": 1}), Expect::Absent)
            .await
            .expect("put absent"),
        1
    );
    assert!(matches!(
        store
            .put_doc(&coll, "k", &json!({"a": 2}), Expect::Absent)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store
            .put_doc(&coll, "k", &json!({"a": 2}), Expect::Version(1))
            .await
            .expect("put v1"),
        2
    );
    assert!(matches!(
        store
            .put_doc(&coll, "k", &json!({"a": 3}), Expect::Version(1))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store
            .put_doc(&coll, "missing", &json!(1), Expect::Version(1))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let doc = json!({"a": [1, 2.5, "x"], "b": {"c": null, "big": 18446744073709551615u64}});
    assert_eq!(
        store
            .put_doc(&coll, "k", &doc, Expect::Any)
            .await
            .expect("put any"),
        3
    );
    let v = store.get_doc(&coll, "k").await.expect("get").expect("doc");
    assert_eq!((v.version, &v.doc), (3, &doc));
    assert_eq!(
        store
            .put_doc(&coll, "fresh", &json!("s"), Expect::Any)
            .await
            .expect("put any absent"),
        1
    );
    assert!(store
        .get_doc(&coll, "missing")
        .await
        .expect("get")
        .is_none());
}

/// The active region per environment: none until recorded, then the
/// newest record, each write a new version.
pub async fn active_region(store: &dyn Store) {
    use crate::store::active::{self, ActiveRegion};
    let env = unique("env");
    assert_eq!(active::load(store, &env).await.expect("load"), None);
    let rec = |region: &str, run: &str| ActiveRegion {
        region: region.into(),
        run_id: run.into(),
        by: "failover".into(),
        at_ms: 1,
    };
    let v1 = active::record(store, &env, &rec("dr", "r1"))
        .await
        .expect("record");
    assert_eq!(
        active::load(store, &env).await.expect("load"),
        Some(rec("dr", "r1"))
    );
    let v2 = active::record(store, &env, &rec("primary", "r2"))
        .await
        .expect("record again");
    assert!(v2 > v1, "each record is a new version");
    assert_eq!(
        active::load(store, &env)
            .await
            .expect("load")
            .map(|a| a.region),
        Some("primary".to_string())
    );
    let other = unique("env");
    assert_eq!(
        active::load(store, &other).await.expect("load"),
        None,
        "per environment"
    );
}

pub async fn histories_in_order(store: &dyn Store) {
    let coll = unique("drills");
    assert!(store.read_history(&coll).await.expect("read").is_empty());
    for i in 0..5 {
        store
            .append_history(&coll, &json!({"i": i}))
            .await
            .expect("append");
    }
    let h = store.read_history(&coll).await.expect("read");
    assert_eq!(h, (0..5).map(|i| json!({"i": i})).collect::<Vec<_>>());
}

pub async fn approvals_and_aborts(store: &dyn Store) {
    let run = unique("approve");
    let lease = exclusive(store, &unique("env"), &run, LONG).await;
    store
        .create_journal(&run, &lease, b"{}")
        .await
        .expect("create");
    assert!(store
        .get_approval(&run, "promote")
        .await
        .expect("get")
        .is_none());
    store
        .put_approval(&run, "promote", &Approval::now("alice", "cli"))
        .await
        .expect("approve");
    let a = store
        .get_approval(&run, "promote")
        .await
        .expect("get")
        .expect("approval");
    assert_eq!((a.by.as_str(), a.via.as_str()), ("alice", "cli"));
    assert!(store.abort_requested(&run).await.expect("abort?").is_none());
    store.request_abort(&run, "bob").await.expect("abort");
    assert_eq!(
        store
            .abort_requested(&run)
            .await
            .expect("abort?")
            .as_deref(),
        Some("bob")
    );
    let missing = unique("missing");
    assert!(matches!(
        store
            .put_approval(&missing, "promote", &Approval::now("alice", "cli"))
            .await,
        Err(StoreError::RunNotFound(_))
    ));
    assert!(matches!(
        store.request_abort(&missing, "bob").await,
        Err(StoreError::RunNotFound(_))
    ));
    store.release_lease(&lease).await.expect("release");
}

pub async fn artifacts(store: &dyn Store) {
    let run = unique("artifacts");
    let lease = exclusive(store, &unique("env"), &run, LONG).await;
    store
        .create_journal(&run, &lease, b"{}")
        .await
        .expect("create");
    let bytes: Vec<u8> = (0..=255u8).collect();
    let at = store
        .put_artifact(&run, "report.html", &bytes)
        .await
        .expect("put");
    assert!(!at.is_empty());
    assert_eq!(
        store.get_artifact(&run, "report.html").await.expect("get"),
        Some(bytes)
    );
    store
        .put_artifact(&run, "report.html", b"v2")
        .await
        .expect("overwrite");
    assert_eq!(
        store.get_artifact(&run, "report.html").await.expect("get"),
        Some(b"v2".to_vec())
    );
    assert!(store
        .get_artifact(&run, "other.md")
        .await
        .expect("get")
        .is_none());
    store.release_lease(&lease).await.expect("release");
}
