//! What a diverged old primary holds that the new primary does not: the
//! transactions it committed after the fork (split-brain or unreplicated
//! writes), read from it started isolated before anything rewinds it, and
//! kept as `COPY` text files. Rows are compared as whole rows (`COPY` text
//! lines, as multisets), so no key is needed and a row changed on either
//! side counts as discarded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::PgServer;
use crate::action::ActionError;

/// One table's discarded rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableRows {
    pub table: String,
    pub rows: u64,
    pub file: String,
}

/// The extraction, as journaled (the `failback_discarded` note's fields).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Discarded {
    pub fork_lsn: String,
    pub old_primary_end_lsn: Option<String>,
    /// The new primary's timeline.
    pub timeline: u32,
    /// `None`: the heartbeat table could not be read on both servers.
    pub heartbeat_rows: Option<u64>,
    pub first_heartbeat_id: Option<i64>,
    pub last_heartbeat_id: Option<i64>,
    pub extract_file: String,
    pub tables: Vec<TableRows>,
}

pub const HEARTBEAT_TABLE: &str = "drctl_heartbeat";

/// A table name as written (`schema.table` or `table`), quoted for SQL.
pub fn quote_table(name: &str) -> Result<String, String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 2 {
        return Err(format!(
            "table `{name}`: expected `table` or `schema.table`"
        ));
    }
    let mut out = Vec::new();
    for p in parts {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "table `{name}`: only letters, digits and `_` in each part"
            ));
        }
        out.push(format!("\"{p}\""));
    }
    Ok(out.join("."))
}

/// The table's rows as `COPY` text lines; `Ok(None)` when it does not exist.
pub async fn copy_rows(
    c: &Client,
    server: &PgServer,
    table: &str,
    limit: Duration,
) -> Result<Option<Vec<String>>, ActionError> {
    let q = quote_table(table).map_err(ActionError::failed)?;
    let sql = format!("COPY (SELECT * FROM {q}) TO STDOUT");
    let read = async {
        let stream = match c.copy_out(&sql).await {
            Ok(s) => s,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        tokio::pin!(stream);
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(Some(buf))
    };
    let bytes = tokio::time::timeout(limit, read)
        .await
        .map_err(|_| ActionError::failed(format!("{}: COPY {table} timed out", server.addr())))?
        .map_err(|e| ActionError::failed(format!("{}: COPY {table}: {e}", server.addr())))?;
    Ok(bytes.map(|b| {
        String::from_utf8_lossy(&b)
            .lines()
            .map(str::to_string)
            .collect()
    }))
}

/// Lines of `old` not matched by a line of `new` (multiset difference),
/// in `old`'s order.
pub fn only_in(old: &[String], new: &[String]) -> Vec<String> {
    let mut have: HashMap<&str, usize> = HashMap::new();
    for l in new {
        *have.entry(l.as_str()).or_default() += 1;
    }
    let mut out = Vec::new();
    for l in old {
        match have.get_mut(l.as_str()) {
            Some(n) if *n > 0 => *n -= 1,
            _ => out.push(l.clone()),
        }
    }
    out
}

/// File name of a table's extract.
pub fn file_for(dir: &Path, table: &str) -> PathBuf {
    dir.join(format!("{}.copy", table.replace('.', "_")))
}

/// Writes `lines` as a COPY text file (loadable with `\copy t from FILE`).
pub fn write_copy(path: &Path, lines: &[String]) -> Result<(), ActionError> {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    crate::store::write_atomic(path, text.as_bytes())
        .map_err(|e| ActionError::failed(format!("write {}: {e}", path.display())))
}

/// First column of the heartbeat's COPY lines as ids.
pub fn heartbeat_ids(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|l| l.split('\t').next().and_then(|v| v.parse().ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiset_difference_keeps_duplicates_and_order() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            only_in(&s(&["a", "b", "b", "c"]), &s(&["b", "a"])),
            s(&["b", "c"])
        );
        assert!(only_in(&s(&["a"]), &s(&["a", "a"])).is_empty());
    }

    #[test]
    fn table_names_are_quoted_or_refused() {
        assert_eq!(
            quote_table("public.orders").as_deref(),
            Ok("\"public\".\"orders\"")
        );
        assert!(quote_table("x; drop table y").is_err());
        assert!(quote_table("a.b.c").is_err());
    }

    #[test]
    fn heartbeat_ids_from_copy_lines() {
        let l = vec![
            "12\t2026-12-01 10:00:00+00\t0/3000060".to_string(),
            "13\tx\ty".into(),
        ];
        assert_eq!(heartbeat_ids(&l), vec![12, 13]);
    }
}
