//! Trusted-state custody: what drctl trusts of each region's immudb ledger,
//! kept in drctl's state store (outside the regions it protects).
//!
//! Per environment, region and database there is
//! - the *trusted state* (a versioned document, collection [`COLLECTION`]):
//!   the newest verified state, written with compare-and-set so two custodians
//!   cannot silently overwrite each other;
//! - the *checkpoints* (an append-only history, [`history_collection`]): every
//!   state that was trusted, newest last. A replica *behind* the trusted state
//!   is proven against the newest checkpoint at or below its tx, so a forked
//!   replica cannot hide behind "it only lost a few transactions".
//!
//! A checkpoint belongs to the region whose ledger it was read from. The
//! primary's custody advances only by `drctl immudb trust` on the active
//! region, outside a failover; verifying the DR ledger (`immudb.verify`)
//! reads the source region's checkpoints and never writes them.

use serde_json::{json, Value};
use thiserror::Error;

use super::TrustedState;
use crate::store::{Expect, Store, StoreError};

/// Documents holding the newest trusted state, keyed by [`custody_key`].
pub const COLLECTION: &str = "immudb-trusted";

/// The trusted state could not be read or saved.
#[derive(Debug, Error)]
pub enum TrustError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored trusted state {what} is unreadable")]
    Unreadable {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// Two checkpoints of one ledger name the same tx with different Alhs:
    /// the custody itself is corrupt, and nothing can be proven from it.
    #[error("trusted checkpoints of {what} disagree about tx {tx}")]
    Inconsistent { what: String, tx: u64 },
}

/// Key of one region's custody of one database.
pub fn custody_key(env: &str, region: &str, db: &str) -> String {
    format!("{env}-{region}-{db}")
}

/// History collection holding the checkpoints of one region's custody.
pub fn history_collection(env: &str, region: &str, db: &str) -> String {
    format!("immudb-checkpoints-{}", custody_key(env, region, db))
}

/// A trusted state as stored: the state, when it was taken, and the
/// document version a compare-and-set must quote.
#[derive(Debug, Clone)]
pub struct StoredTrust {
    pub state: TrustedState,
    pub at_ms: u64,
    pub version: u64,
}

/// The newest trusted state of `region`'s database, with when it was taken.
pub async fn load_trusted(
    store: &dyn Store,
    env: &str,
    region: &str,
    db: &str,
) -> Result<Option<StoredTrust>, TrustError> {
    let key = custody_key(env, region, db);
    let Some(doc) = store.get_doc(COLLECTION, &key).await? else {
        return Ok(None);
    };
    let at = doc.doc.get("at_ms").and_then(Value::as_u64).unwrap_or(0);
    let st = state_of(&doc.doc, &key)?;
    Ok(Some(StoredTrust {
        state: st,
        at_ms: at,
        version: doc.version,
    }))
}

fn state_of(record: &Value, what: &str) -> Result<TrustedState, TrustError> {
    serde_json::from_value(record.get("state").cloned().unwrap_or(Value::Null)).map_err(|e| {
        TrustError::Unreadable {
            what: what.to_string(),
            source: e,
        }
    })
}

/// Every checkpoint of `region`'s database, ascending by tx, the trusted
/// state included (so a lost history append never loses the newest one).
///
/// A store written by an earlier drctl holds one document per environment
/// and database (`{env}-{db}`) and no checkpoints. It is used as the single
/// checkpoint of a region without custody only when that region wrote it
/// (`source`): the earlier `immudb.verify` also wrote the DR state there,
/// which must never become the primary's trusted state.
pub async fn load_checkpoints(
    store: &dyn Store,
    env: &str,
    region: &str,
    db: &str,
) -> Result<Vec<TrustedState>, TrustError> {
    let coll = history_collection(env, region, db);
    let mut all = Vec::new();
    for r in store.read_history(&coll).await? {
        all.push(state_of(&r, &coll)?);
    }
    if let Some(t) = load_trusted(store, env, region, db).await? {
        all.push(t.state);
    }
    if all.is_empty() {
        let legacy = format!("{env}-{db}");
        if let Some(doc) = store.get_doc(COLLECTION, &legacy).await? {
            if doc.doc.get("source").and_then(Value::as_str) == Some(region) {
                all.push(state_of(&doc.doc, &legacy)?);
            }
        }
    }
    all.sort_by_key(|c| c.tx_id);
    let mut out: Vec<TrustedState> = Vec::with_capacity(all.len());
    for c in all {
        match out.last() {
            Some(last) if last.tx_id == c.tx_id => {
                if last.tx_hash != c.tx_hash || last.db != c.db {
                    return Err(TrustError::Inconsistent {
                        what: coll,
                        tx: c.tx_id,
                    });
                }
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Makes `st` the trusted state of `region`'s database and appends it to
/// its checkpoints. The document is written with compare-and-set against
/// the version that was verified (`previous`; `None` = there was none), then
/// the checkpoint appended: a crash between the two loses nothing, since
/// [`load_checkpoints`] includes the trusted state itself.
pub async fn advance(
    store: &dyn Store,
    env: &str,
    region: &str,
    st: &TrustedState,
    how: &str,
    previous: Option<u64>,
) -> Result<(), TrustError> {
    let record = json!({
        "state": st,
        "at_ms": crate::journal::now_ms(),
        "region": region,
        "how": how,
    });
    let expect = previous.map_or(Expect::Absent, Expect::Version);
    store
        .put_doc(
            COLLECTION,
            &custody_key(env, region, &st.db),
            &record,
            expect,
        )
        .await?;
    store
        .append_history(&history_collection(env, region, &st.db), &record)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DirStore;

    fn st(tx: u64, b: u8) -> TrustedState {
        TrustedState {
            db: "defaultdb".into(),
            tx_id: tx,
            tx_hash: [b; 32],
            signature: None,
        }
    }

    #[tokio::test]
    async fn checkpoints_accumulate_per_region_and_disagreement_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        advance(&store, "e", "primary", &st(3, 1), "first", None)
            .await
            .unwrap();
        let v = load_trusted(&store, "e", "primary", "defaultdb")
            .await
            .unwrap()
            .unwrap()
            .version;
        advance(&store, "e", "primary", &st(9, 2), "proof", Some(v))
            .await
            .unwrap();
        // A stale custodian quoting the old version is refused.
        assert!(matches!(
            advance(&store, "e", "primary", &st(12, 3), "proof", Some(v)).await,
            Err(TrustError::Store(StoreError::Conflict { .. }))
        ));
        let cps = load_checkpoints(&store, "e", "primary", "defaultdb")
            .await
            .unwrap();
        assert_eq!(cps.iter().map(|c| c.tx_id).collect::<Vec<_>>(), vec![3, 9]);
        // Another region's custody is separate.
        assert!(load_checkpoints(&store, "e", "dr", "defaultdb")
            .await
            .unwrap()
            .is_empty());
        // Two checkpoints naming tx 9 with different hashes: corrupt custody.
        store
            .append_history(
                &history_collection("e", "primary", "defaultdb"),
                &json!({"state": st(9, 7)}),
            )
            .await
            .unwrap();
        assert!(matches!(
            load_checkpoints(&store, "e", "primary", "defaultdb").await,
            Err(TrustError::Inconsistent { tx: 9, .. })
        ));
    }

    #[tokio::test]
    async fn an_earlier_drctls_document_counts_only_for_the_region_that_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let put = |source: &str, tx| json!({"state": st(tx, 4), "at_ms": 1, "source": source});
        store
            .put_doc(COLLECTION, "old-defaultdb", &put("dr", 30), Expect::Any)
            .await
            .unwrap();
        // Overwritten by a DR verification: not the primary's trusted state.
        assert!(load_checkpoints(&store, "old", "primary", "defaultdb")
            .await
            .unwrap()
            .is_empty());
        store
            .put_doc(
                COLLECTION,
                "old-defaultdb",
                &put("primary", 25),
                Expect::Any,
            )
            .await
            .unwrap();
        let cps = load_checkpoints(&store, "old", "primary", "defaultdb")
            .await
            .unwrap();
        assert_eq!(cps, vec![st(25, 4)]);
        // Once the region has custody of its own, the old document is ignored.
        advance(&store, "old", "primary", &st(26, 5), "proof", None)
            .await
            .unwrap();
        let cps = load_checkpoints(&store, "old", "primary", "defaultdb")
            .await
            .unwrap();
        assert_eq!(cps, vec![st(26, 5)]);
    }
}
