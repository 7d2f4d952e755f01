//! Leases in the directory backend: `locks/NAME.lease.json` holds every
//! holder with its epoch (the fencing token); changes serialise on a short
//! `flock` of `locks/NAME.lock`. Separate because the rule that a damaged
//! lease file is an error, never a free lease, needs one place to live.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::files::{read_opt, write_atomic, Flock};
use super::{now_ms, HolderId, Inner, Lease, LeaseGrant, LeaseMode, LeaseRecord, StoreError};

/// `locks/NAME.lease.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct LeaseFile {
    epoch: u64,
    pub(super) holders: Vec<LeaseRecord>,
}

impl Inner {
    /// The lease file. A file in the older format (a JSON object without
    /// `holders`) reads as free: its holder held a flock that died with it.
    /// Anything else unreadable is an error, never "free": reading a
    /// damaged file as free would let a second mutating run start beside
    /// a live one.
    pub(super) fn read_leases(&self, name: &str) -> Result<LeaseFile, StoreError> {
        let path = self.lease_path(name);
        let Some(bytes) = read_opt(&path, "read lease")? else {
            return Ok(LeaseFile::default());
        };
        match serde_json::from_slice::<LeaseFile>(&bytes) {
            Ok(f) => Ok(f),
            Err(e) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) if !m.contains_key("holders") => Ok(LeaseFile::default()),
                _ => Err(StoreError::Corrupt {
                    path: path.display().to_string(),
                    reason: format!(
                        "the lease file is damaged ({e}); check that no drctl run of this \
                         environment is active, then remove the file"
                    ),
                }),
            },
        }
    }

    pub(super) fn write_leases(&self, name: &str, f: &LeaseFile) -> Result<(), StoreError> {
        write_atomic(
            &self.lease_path(name),
            &serde_json::to_vec_pretty(f).unwrap_or_default(),
        )
    }

    /// Fails unless `lease` is a live entry of its lease file. Call with
    /// the name's flock held.
    pub(super) fn check_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let f = self.read_leases(&lease.name)?;
        let mine = f
            .holders
            .iter()
            .any(|h| h.holder.instance == lease.holder.instance && h.epoch == lease.epoch);
        if mine {
            return Ok(());
        }
        let reason = match f.holders.iter().find(|h| h.mode == LeaseMode::Exclusive) {
            Some(h) => format!("now held by {h}"),
            None => "the lease record is gone (expired and reassigned)".to_string(),
        };
        Err(StoreError::Fenced {
            name: lease.name.clone(),
            epoch: lease.epoch,
            reason,
        })
    }

    pub(super) fn acquire(
        &self,
        name: &str,
        mode: LeaseMode,
        holder: &HolderId,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let _lock = Flock::take(&self.lock_path(name), true)?;
        let mut f = self.read_leases(name)?;
        let now = now_ms();
        let mut took_over = None;
        f.holders.retain(|h| {
            let gone = h.expires_at_ms <= now || h.holder.is_provably_dead();
            if gone && h.mode == LeaseMode::Exclusive {
                took_over = Some(h.clone());
            }
            !gone
        });
        if mode == LeaseMode::Exclusive {
            if let Some(h) = f.holders.iter().find(|h| h.mode == LeaseMode::Exclusive) {
                return Err(StoreError::LeaseHeld {
                    name: name.to_string(),
                    holder: Box::new(h.clone()),
                });
            }
            f.epoch += 1;
        }
        let rec = LeaseRecord {
            mode,
            epoch: f.epoch,
            holder: holder.clone(),
            since_ms: now,
            expires_at_ms: now + ttl.as_millis() as u64,
        };
        f.holders.push(rec.clone());
        self.write_leases(name, &f)?;
        Ok(LeaseGrant {
            lease: Lease {
                name: name.to_string(),
                mode,
                epoch: rec.epoch,
                holder: holder.clone(),
                expires_at_ms: rec.expires_at_ms,
            },
            took_over,
        })
    }

    pub(super) fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let _lock = Flock::take(&self.lock_path(&lease.name), true)?;
        self.check_lease(lease)?;
        let mut f = self.read_leases(&lease.name)?;
        let expires = now_ms() + ttl.as_millis() as u64;
        for h in &mut f.holders {
            if h.holder.instance == lease.holder.instance && h.epoch == lease.epoch {
                h.expires_at_ms = expires;
            }
        }
        self.write_leases(&lease.name, &f)?;
        Ok(Lease {
            expires_at_ms: expires,
            ..lease.clone()
        })
    }

    pub(super) fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let _lock = Flock::take(&self.lock_path(&lease.name), true)?;
        let mut f = self.read_leases(&lease.name)?;
        let before = f.holders.len();
        f.holders
            .retain(|h| !(h.holder.instance == lease.holder.instance && h.epoch == lease.epoch));
        if f.holders.len() != before {
            self.write_leases(&lease.name, &f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::DirStore;
    use crate::store::{HolderId, LeaseMode, Store, StoreError};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_lease_file_is_an_error_not_a_free_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let holder = HolderId::this_process("r");
        let acquire = || {
            store.acquire_lease(
                "env",
                LeaseMode::Exclusive,
                &holder,
                Duration::from_secs(60),
            )
        };
        let path = dir.path().join("locks/env.lease.json");
        for damaged in [
            &b"{\"epoch\": 3, \"holders\": [{\"run_id\": "[..],
            b"\x00\x01",
            b"[]",
        ] {
            std::fs::write(&path, damaged).unwrap();
            match acquire().await {
                Err(StoreError::Corrupt { path: p, reason }) => {
                    assert!(p.ends_with("env.lease.json"), "{p}");
                    assert!(reason.contains("no drctl run"), "{reason}");
                }
                other => panic!("damaged lease file {damaged:?}: {other:?}"),
            }
        }
        // The older format (no `holders`: a flock was the lease) is free.
        std::fs::write(&path, br#"{"run_id": "old", "pid": 1}"#).unwrap();
        let grant = acquire().await.unwrap();
        assert!(grant.lease.epoch >= 1);
    }
}
