//! The active region (where the primary runs) of each environment, as the
//! last completed failover, switchover or failback left it.
//!
//! An environment file's `active_region` is its initial value only: after
//! a failover the file is stale until someone edits it, and a stale value
//! turns the next command's direction around (a failback would be refused
//! as "target is the active region"). So every run that moves the primary
//! records the new region here, a versioned document per environment
//! written by compare-and-set (two runs cannot silently overwrite each
//! other), and commands read it before the file's value.

use serde::{Deserialize, Serialize};

use super::{Expect, Store, StoreError};

pub const COLLECTION: &str = "active_region";

/// Where the primary runs, and which run put it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRegion {
    pub region: String,
    /// The run that moved the primary (`failover`, `switchover`,
    /// `failback`, `drill`).
    pub run_id: String,
    pub by: String,
    pub at_ms: u64,
}

/// The recorded active region of `env`, `None` when no run recorded one.
pub async fn load(store: &dyn Store, env: &str) -> Result<Option<ActiveRegion>, StoreError> {
    Ok(store
        .get_doc(COLLECTION, env)
        .await?
        .and_then(|d| serde_json::from_value(d.doc).ok()))
}

/// Records `rec` as `env`'s active region: compare-and-set on the version
/// read just before, retried a few times when another writer got there
/// first (the newest completed move wins; each is journaled in its run).
pub async fn record(store: &dyn Store, env: &str, rec: &ActiveRegion) -> Result<u64, StoreError> {
    let doc = serde_json::to_value(rec).map_err(|e| StoreError::Corrupt {
        path: format!("{COLLECTION}/{env}"),
        reason: e.to_string(),
    })?;
    let mut tries = 0;
    loop {
        let expect = match store.get_doc(COLLECTION, env).await? {
            Some(cur) => Expect::Version(cur.version),
            None => Expect::Absent,
        };
        match store.put_doc(COLLECTION, env, &doc, expect).await {
            Ok(v) => return Ok(v),
            Err(StoreError::Conflict { .. }) if tries < 5 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}
