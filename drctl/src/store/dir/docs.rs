//! Versioned documents (`docs/COLLECTION/KEY.json`, compare-and-set on a
//! version kept beside the document) and append-only histories
//! (`history/COLLECTION.jsonl`) in the directory backend. Separate from
//! journals and leases: no lease guards them, only a per-collection `flock`.

use std::fs::OpenOptions;
use std::io::Write;

use serde_json::Value;

use super::files::{io, read_json, read_opt, write_atomic, Flock};
use super::{Expect, Inner, StoreError, Versioned};

const DOC_VERSION_KEY: &str = "drctl_doc_version";

impl Inner {
    pub(super) fn get_doc(
        &self,
        collection: &str,
        key: &str,
    ) -> Result<Option<Versioned>, StoreError> {
        Ok(
            read_json::<Value>(&self.doc_path(collection, key))?.map(|v| match v {
                Value::Object(mut m) if m.contains_key(DOC_VERSION_KEY) => Versioned {
                    version: m.get(DOC_VERSION_KEY).and_then(Value::as_u64).unwrap_or(0),
                    doc: m.remove("doc").unwrap_or(Value::Null),
                },
                // Written by an earlier drctl, before documents had versions.
                other => Versioned {
                    version: 0,
                    doc: other,
                },
            }),
        )
    }

    pub(super) fn put_doc(
        &self,
        collection: &str,
        key: &str,
        doc: &Value,
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let _lock = Flock::take(&self.lock_path(&format!("doc-{collection}")), true)?;
        let cur = self.get_doc(collection, key)?;
        let conflict = |expected: String, found: String| StoreError::Conflict {
            collection: collection.to_string(),
            key: key.to_string(),
            expected,
            found,
        };
        let found = cur
            .as_ref()
            .map_or("absent".to_string(), |c| format!("version {}", c.version));
        let next = match (expect, &cur) {
            (Expect::Absent, None) => 1,
            (Expect::Absent, Some(_)) => return Err(conflict("absent".into(), found)),
            (Expect::Version(v), Some(c)) if c.version == v => v + 1,
            (Expect::Version(v), _) => return Err(conflict(format!("version {v}"), found)),
            (Expect::Any, c) => c.as_ref().map_or(1, |c| c.version + 1),
        };
        let bytes = serde_json::to_vec_pretty(&serde_json::json!({
            DOC_VERSION_KEY: next,
            "doc": doc,
        }))
        .unwrap_or_default();
        write_atomic(&self.doc_path(collection, key), &bytes)?;
        Ok(next)
    }

    pub(super) fn append_history(
        &self,
        collection: &str,
        record: &Value,
    ) -> Result<(), StoreError> {
        let path = self.history_path(collection);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open history", &path))?;
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        f.write_all(&line).map_err(io("append history", &path))?;
        f.sync_data().map_err(io("fsync history", &path))
    }

    pub(super) fn read_history(&self, collection: &str) -> Result<Vec<Value>, StoreError> {
        let path = self.history_path(collection);
        let Some(bytes) = read_opt(&path, "read history")? else {
            return Ok(Vec::new());
        };
        let text = String::from_utf8_lossy(&bytes);
        // A torn last line (crash mid-append) was never acknowledged.
        let complete = text.rfind('\n').map_or("", |p| &text[..p]);
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| StoreError::Corrupt {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}
