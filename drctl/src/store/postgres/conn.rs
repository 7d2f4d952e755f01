//! The PostgreSQL store's one shared connection and the helpers every
//! statement goes through: lazy reconnect, a prepared-statement cache, the
//! client-side bound on every statement (a timed-out connection is dropped,
//! its answer may still arrive), and the mapping of driver errors to
//! [`StoreError`]. Separate so that the store's operations read as SQL and
//! results, with the connection handling in one place.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::RwLockReadGuard;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row, Statement};

use super::{schema, Params, PgStore, StoreError, GRACE, SCHEMA_VERSION};
use crate::pgconn::PgError;

/// The connection and the statements prepared on it.
pub(super) struct Conn {
    pub(super) client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
    /// Set when a statement timed out: its answer may still arrive, so the
    /// connection is replaced before the next operation.
    broken: AtomicBool,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.client.is_closed()
    }

    pub(super) async fn prepared(
        &self,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        let cached = {
            let g = self.statements.lock().unwrap_or_else(|p| p.into_inner());
            g.get(sql).cloned()
        };
        if let Some(s) = cached {
            return Ok(s);
        }
        let s = self.client.prepare(sql).await?;
        self.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql, s.clone());
        Ok(s)
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn ttl_ms(ttl: Duration) -> f64 {
    ttl.as_secs_f64() * 1000.0
}

pub(super) fn has_code(e: &StoreError, code: &SqlState) -> bool {
    matches!(e, StoreError::Database { source, .. } if source.code() == Some(code))
}

impl PgStore {
    pub(super) fn base_url(&self) -> String {
        let s = &self.server;
        if s.host.contains(':') {
            format!("postgres://[{}]:{}/{}", s.host, s.port, s.dbname)
        } else {
            format!("postgres://{}:{}/{}", s.host, s.port, s.dbname)
        }
    }

    pub(super) fn connect_error(&self, e: PgError) -> StoreError {
        match e {
            PgError::Timeout { .. } => StoreError::Timeout {
                op: "connect",
                limit: self.timeout.min(self.server.connect_timeout),
            },
            e => StoreError::Connect {
                url: self.url.clone(),
                reason: chain(&e),
            },
        }
    }

    pub(super) fn db_error(&self, op: &'static str, source: tokio_postgres::Error) -> StoreError {
        if source.code() == Some(&SqlState::QUERY_CANCELED) {
            StoreError::Timeout {
                op,
                limit: self.timeout,
            }
        } else {
            StoreError::Database { op, source }
        }
    }

    pub(super) fn corrupt(&self, what: String, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: format!("{} {what}", self.base_url()),
            reason: reason.to_string(),
        }
    }

    pub(super) fn to_json(
        &self,
        what: String,
        v: &impl serde::Serialize,
    ) -> Result<String, StoreError> {
        serde_json::to_string(v).map_err(|e| self.corrupt(what, e))
    }

    /// Opens a connection, bounds its statements on the server side, and
    /// checks the schema version, in one round trip after the handshake.
    pub(super) async fn open(&self) -> Result<Conn, StoreError> {
        let client = self
            .server
            .connect(self.timeout)
            .await
            .map_err(|e| self.connect_error(e))?;
        let found = match tokio::time::timeout(
            self.timeout + GRACE,
            schema::start_session(&client, self.timeout),
        )
        .await
        {
            Err(_) => {
                return Err(StoreError::Timeout {
                    op: "check the schema version",
                    limit: self.timeout,
                })
            }
            Ok(r) => r.map_err(|e| self.db_error("check the schema version", e))?,
        };
        match found {
            None => Err(StoreError::NotInitialised {
                url: self.url.clone(),
            }),
            Some(v) if v != SCHEMA_VERSION => Err(StoreError::Schema {
                found: v,
                wanted: SCHEMA_VERSION,
            }),
            Some(_) => Ok(Conn {
                client,
                statements: Mutex::new(HashMap::new()),
                broken: AtomicBool::new(false),
            }),
        }
    }

    pub(super) async fn ensure(&self, slot: &mut Option<Conn>) -> Result<(), StoreError> {
        if !slot.as_ref().is_some_and(Conn::usable) {
            *slot = None;
            *slot = Some(self.open().await?);
        }
        Ok(())
    }

    /// The connection for one statement (statements of concurrent callers
    /// are pipelined on it); reconnects when it was lost.
    pub(super) async fn shared(&self) -> Result<RwLockReadGuard<'_, Conn>, StoreError> {
        let g = self.conn.read().await;
        if let Ok(c) = RwLockReadGuard::try_map(g, |o| o.as_ref().filter(|c| c.usable())) {
            return Ok(c);
        }
        let mut w = self.conn.write().await;
        self.ensure(&mut w).await?;
        RwLockReadGuard::try_map(w.downgrade(), |o| o.as_ref()).map_err(|_| StoreError::Connect {
            url: self.url.clone(),
            reason: "connection lost".into(),
        })
    }

    pub(super) async fn bounded<T>(
        &self,
        op: &'static str,
        c: &Conn,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout + GRACE, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.db_error(op, e)),
            Err(_) => {
                c.broken.store(true, Ordering::Relaxed);
                Err(StoreError::Timeout {
                    op,
                    limit: self.timeout,
                })
            }
        }
    }

    pub(super) async fn query(
        &self,
        op: &'static str,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        let c = self.shared().await?;
        let fut = async {
            let st = c.prepared(sql).await?;
            c.client.query(&st, params).await
        };
        self.bounded(op, &c, fut).await
    }

    pub(super) async fn execute(
        &self,
        op: &'static str,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, StoreError> {
        let c = self.shared().await?;
        let fut = async {
            let st = c.prepared(sql).await?;
            c.client.execute(&st, params).await
        };
        self.bounded(op, &c, fut).await
    }

    pub(super) async fn query_opt(
        &self,
        op: &'static str,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(op, sql, params).await?.into_iter().next())
    }

    pub(super) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        &self,
        op: &'static str,
        row: &'a Row,
        i: usize,
    ) -> Result<T, StoreError> {
        row.try_get(i).map_err(|e| self.db_error(op, e))
    }

    pub(super) fn record<'a>(&self, run_id: &str, line: &'a [u8]) -> Result<&'a str, StoreError> {
        let s = std::str::from_utf8(line).map_err(|e| {
            self.corrupt(format!("run {run_id}"), format!("record is not UTF-8: {e}"))
        })?;
        if s.contains(['\n', '\0']) {
            return Err(self.corrupt(
                format!("run {run_id}"),
                "a record is one line of text (no newline or NUL byte)",
            ));
        }
        Ok(s)
    }
}
