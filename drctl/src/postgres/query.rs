//! `postgres.query`: a read-only SQL check with an assertion, for smoke
//! checks and integrity validation (row counts, a table checksum). Runs in
//! a READ ONLY transaction, so a check can never write.

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
            Err(e) => Preflight {
                lines: vec![format!("query fails now: {e}")],
                ok: true,
            },
        })
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        run(p, ctx).await
    }
}
