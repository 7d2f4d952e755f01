//! `postgres.query`: a read-only SQL check with an assertion, for smoke
//! checks and integrity validation (row counts, a table checksum). Runs in
//! a READ ONLY transaction, so a check can never write.
//!
//! A READ ONLY transaction stops writes to the database, not everything
//! else: `COPY … TO PROGRAM` runs a command on the database host and
//! functions such as `pg_promote()` or `pg_terminate_backend()` act on the
//! server. The kind declares itself read-only (it may sit in check sets,
//! whose preflights `plan --check` runs at any time), so the decoder takes
//! only a query (`SELECT`, `WITH`, `VALUES`, `TABLE`, `SHOW`) and refuses
//! the server functions known to act despite READ ONLY ([`ACTING_FUNCTIONS`]).

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio_postgres::SimpleQueryMessage;

use super::{server_field, PgServer};
use crate::action::{ActionError, ActionKind, Outputs, Preflight, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct PgQuery;

/// The step's `with:`, decoded.
pub struct Params {
    server: PgServer,
    sql: String,
    expect_rows: Option<u64>,
    min_rows: Option<u64>,
    equals: Option<Value>,
}

/// Statements a check may be: queries only (`COPY … TO` would be allowed
/// by READ ONLY and can write files or run programs on the server).
const QUERY_KEYWORDS: &[&str] = &["select", "with", "values", "table", "show"];

/// Server functions that act (on the server, its sessions, files or
/// replication) although the transaction is READ ONLY.
pub const ACTING_FUNCTIONS: &[&str] = &[
    "pg_promote",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_logical_slot_get_changes",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_slru",
    "pg_stat_reset_replication_slot",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "lo_export",
    "dblink",
    "dblink_exec",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_import_system_collations",
];

/// `sql` with its comments (`-- …` to the end of the line, `/* … */`,
/// nested as the server nests them) replaced by a space. String literals
/// are not parsed: a comment marker inside one only makes the scan more
/// conservative.
fn without_comments(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let (mut i, mut depth) = (0, 0usize);
    let mut line = false;
    while i < b.len() {
        let two = &b[i..(i + 2).min(b.len())];
        if line {
            if b[i] == b'\n' {
                line = false;
                out.push(' ');
            }
            i += 1;
        } else if two == b"/*" {
            depth += 1;
            i += 2;
        } else if depth > 0 && two == b"*/" {
            depth -= 1;
            i += 2;
            if depth == 0 {
                out.push(' ');
            }
        } else if depth > 0 {
            i += 1;
        } else if two == b"--" {
            line = true;
            i += 2;
        } else {
            let ch = sql[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Why `sql`, as it will be sent, may not run as a check: not a query, a
/// call that acts, or more than one statement.
fn refused_sql(sql: &str) -> Option<String> {
    not_a_check(sql).or_else(|| {
        let s = without_comments(sql);
        (s.trim_end().trim_end_matches(';').contains(';'))
            .then(|| "postgres.query takes one statement".to_string())
    })
}

/// Why `sql` is not a query a check may run, if it is not.
fn not_a_check(sql: &str) -> Option<String> {
    // Comments are whitespace to the server (`pg_promote/**/()` calls it).
    let lower = without_comments(&sql.to_ascii_lowercase());
    if lower.contains("u&\"") {
        // A Unicode-escaped identifier can spell any function name.
        return Some(
            "postgres.query refuses Unicode-escaped identifiers (U&\"...\"): they can name a function that acts".into(),
        );
    }
    let first: String = lower
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    if !QUERY_KEYWORDS.contains(&first.as_str()) {
        return Some(format!(
            "postgres.query runs only queries ({}), not `{}`",
            QUERY_KEYWORDS
                .iter()
                .map(|k| k.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join(", "),
            if first.is_empty() { sql.trim() } else { &first }
        ));
    }
    // A function name as a whole word followed by `(`: `pg_promote (`,
    // `pg_catalog.pg_promote(`, `"pg_promote"(`. String literals are not
    // parsed: one that mentions such a call is refused too (conservative).
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut start = None;
    for (i, c) in lower
        .char_indices()
        .chain(std::iter::once((lower.len(), ' ')))
    {
        match (start, is_word(c)) {
            (None, true) => start = Some(i),
            (Some(b), false) => {
                start = None;
                let w = &lower[b..i];
                let rest = lower[i..].trim_start_matches(|c: char| c.is_whitespace() || c == '"');
                if ACTING_FUNCTIONS.contains(&w) && rest.starts_with('(') {
                    return Some(format!(
                        "postgres.query refuses `{w}()`: it acts on the server even in a READ ONLY transaction"
                    ));
                }
            }
            _ => {}
        }
    }
    None
}

fn same(got: &str, want: &Value) -> bool {
    match want {
        Value::String(s) => got == s,
        Value::Number(n) => got.parse::<f64>().ok() == n.as_f64(),
        Value::Bool(b) => matches!((got, b), ("t" | "true", true) | ("f" | "false", false)),
        Value::Null => false,
        other => *got == *other.to_string(),
    }
}

async fn run(p: &Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
    // Again on the SQL as resolved: one built from `${...}` was not seen
    // by the decoder's check.
    if let Some(why) = refused_sql(&p.sql) {
        return Err(ActionError::Refused {
            message: why,
            hint: "a check only reads: do what changes the server in a runbook step (postgres.promote, postgres.fence, exec)".into(),
        });
    }
    let limit = ctx.remaining();
    let client = p.server.connect(limit).await?;
    let sql = format!(
        "BEGIN READ ONLY; {}; COMMIT",
        p.sql.trim().trim_end_matches(';')
    );
    let msgs = tokio::time::timeout(limit, client.simple_query(&sql))
        .await
        .map_err(|_| ActionError::failed(format!("postgres {}: query timed out", p.server.addr())))?
        .map_err(|e| {
            ActionError::failed(format!(
                "postgres {}: {}",
                p.server.addr(),
                crate::diag::error_chain(&e)
            ))
        })?;
    let mut rows = Vec::new();
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            let cols: Vec<Value> = (0..r.len()).map(|i| json!(r.get(i))).collect();
            rows.push(Value::Array(cols));
        }
    }
    let n = rows.len() as u64;
    if let Some(e) = p.expect_rows {
        if n != e {
            return Err(ActionError::failed(format!(
                "`{}` returned {n} rows, expected {e}",
                p.sql
            )));
        }
    }
    if let Some(m) = p.min_rows {
        if n < m {
            return Err(ActionError::failed(format!(
                "`{}` returned {n} rows, expected at least {m}",
                p.sql
            )));
        }
    }
    let first = rows
        .first()
        .and_then(|r| r.get(0))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(want) = &p.equals {
        match &first {
            Some(got) if same(got, want) => {}
            other => {
                return Err(ActionError::failed(format!(
                    "`{}` returned {:?}, expected {want}",
                    p.sql, other
                )))
            }
        }
    }
    let mut o = Outputs::new();
    o.insert("row_count".into(), json!(n));
    o.insert("value".into(), json!(first));
    rows.truncate(100);
    o.insert("rows".into(), Value::Array(rows));
    Ok(o)
}

#[async_trait]
impl ActionKind for PgQuery {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "postgres.query"
    }
    fn read_only(&self, _params: &Value) -> bool {
        // Runs inside a READ ONLY transaction.
        true
    }
    fn summary(&self) -> &'static str {
        "Run a read-only SQL check and assert on its result"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["row_count", "value", "rows"]
    }
    /// A query that returns what it expects shows the database serves.
    fn proves_recovery(&self, _params: &Value) -> bool {
        true
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "postgres.query")?;
        let server = server_field(ctx, &mut r, "server", true);
        let sql_node = r.req(ctx, "sql");
        let sql = sql_node.and_then(|n| ctx.string(n, "sql"));
        if let (Some(s), Some(n)) = (&sql, sql_node) {
            if let Some(why) = (!crate::expr::has_refs(s))
                .then(|| not_a_check(s))
                .flatten()
            {
                ctx.error(
                    "E-VALUE",
                    n,
                    why,
                    Some("a check only reads: do what changes the server in a runbook step (postgres.promote, postgres.fence, exec)".into()),
                );
            }
            if s.contains(';') && s.trim_end().trim_end_matches(';').contains(';') {
                ctx.error(
                    "E-VALUE",
                    n,
                    "postgres.query takes one statement",
                    Some("split it into several steps".into()),
                );
            }
        }
        let expect_rows = r
            .opt("expect_rows")
            .and_then(|n| ctx.uint(n, "expect_rows"));
        let min_rows = r.opt("min_rows").and_then(|n| ctx.uint(n, "min_rows"));
        let equals = r.opt("equals").map(Node::to_json);
        r.finish(ctx);
        Some(Params {
            server: server?,
            sql: sql?,
            expect_rows,
            min_rows,
            equals,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "query {}: {}",
            super::addr_of(params, "server"),
            params["sql"].as_str().unwrap_or("")
        )
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        Ok(match run(p, ctx).await {
            Ok(o) => Preflight::ok(format!("query passes now ({} rows)", o["row_count"])),
            // The plan decides whether failing now is expected (a check
            // after the promotion) or a problem.
            Err(e) => Preflight::fails_now(format!("query fails now: {e}")),
        })
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        run(p, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::{not_a_check, refused_sql};

    /// The check the step makes again on its SQL as resolved (a `${...}`
    /// the decoder could not see through).
    #[test]
    fn resolved_sql_is_checked_too() {
        assert_eq!(refused_sql("select 1 -- one;"), None);
        assert_eq!(refused_sql("/* lead */ select 1;"), None);
        assert!(refused_sql("select 1; commit; select pg_promote()").is_some());
        assert!(refused_sql("select 1; commit; create table t (x int)").is_some());
        assert!(refused_sql("select pg_promote/**/()").is_some());
    }

    #[test]
    fn only_queries_that_act_on_nothing_are_checks() {
        for ok in [
            "select pg_is_in_recovery()",
            "  (select 1)",
            "WITH x AS (select 1) select * from x",
            "show server_version",
            "select count(*) > 0 from drctl_heartbeat",
            "select pg_promoted from t",
        ] {
            assert_eq!(not_a_check(ok), None, "{ok}");
        }
        for bad in [
            "copy (select 1) to program 'touch /tmp/x'",
            "COPY t TO '/tmp/t'",
            "explain analyze delete from t",
            "select pg_promote()",
            "SELECT pg_catalog.PG_TERMINATE_BACKEND (42)",
            "select \"pg_reload_conf\"()",
            // Comments are whitespace to the server.
            "select pg_promote/**/()",
            "select pg_promote /* a /* nested */ comment */ ()",
            "select pg_promote -- x\n ()",
            "select U&\"pg\\005fpromote\"()",
            // Conservative: the scan does not parse string literals.
            "select 'pg_promote()'::text is not null",
            "",
        ] {
            assert!(not_a_check(bad).is_some(), "{bad}");
        }
    }
}
