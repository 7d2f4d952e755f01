//! Connecting to PostgreSQL: where a server is, how to reach it in bounded
//! time, and TLS (rustls) when the server entry asks for it.
//!
//! A server is written as a mapping, usually taken whole from the
//! environment (`server: ${target.postgres}`): `host`, `port`, `dbname`,
//! `user`, `password` (a secret reference), `sslmode`
//! (`disable` | `require` | `verify-full`, default `verify-full`),
//! `sslrootcert` (a `file:` reference to the CA bundle `verify-full`
//! trusts), `connect_timeout`. `prefer` and `allow` are refused: they fall
//! back to plaintext without saying so.

mod dsn;
mod tls;

use std::fmt;
use std::time::Duration;

use thiserror::Error;
use tokio_postgres::{Client, Config, NoTls};

use crate::decode::{Ctx, MapReader};
use crate::secret::SecretRef;
use crate::yaml::Node;

#[derive(Debug, Error)]
pub enum PgError {
    #[error("cannot connect to postgres at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("postgres at {addr} did not answer within {ms} ms ({op})")]
    Timeout {
        addr: String,
        op: &'static str,
        ms: u64,
    },
    #[error("postgres at {addr}: {op} failed")]
    Query {
        addr: String,
        op: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("postgres at {addr}: unexpected answer to {op}: {detail}")]
    Unexpected {
        addr: String,
        op: &'static str,
        detail: String,
    },
    /// The server answered but its pg_hba.conf turned this connection
    /// away (a `reject` rule, e.g. drctl's own `hba` fence).
    #[error("postgres at {addr} rejects new connections (pg_hba.conf)")]
    Rejected {
        addr: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// `verify-full` refused the server's certificate.
    #[error("postgres at {addr}: TLS certificate refused ({mode}{trust}): {problem}")]
    Certificate {
        addr: String,
        mode: &'static str,
        trust: String,
        problem: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("sslrootcert {reference}: {detail}")]
    RootCert { reference: String, detail: String },
}

impl PgError {
    /// Whether the server could not be reached at all (as opposed to
    /// answering with an error): fence and split-brain checks branch on it.
    ///
    /// A server that answers with an error of its own (authentication,
    /// a TLS certificate refused, pg_hba.conf) is reachable: fencing must
    /// not mistake it for a dead one. "Shutting down / starting up"
    /// (57P03) counts as unreachable: it takes no sessions at all.
    pub fn is_unreachable(&self) -> bool {
        match self {
            PgError::Connect { source, .. } => match source.as_db_error() {
                None => true,
                Some(db) => db.code() == &tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW,
            },
            PgError::Timeout { op, .. } => *op == "connect",
            _ => false,
        }
    }

    /// The hint an operator needs for this error, if there is a specific one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            PgError::Certificate { .. } | PgError::RootCert { .. } => Some(
                "verify-full trusts exactly `sslrootcert` (a PEM bundle of the CA that signed the server's certificate) or, without it, the web PKI roots; `host` must be a name or IP address in the certificate",
            ),
            PgError::Rejected { .. } => Some(
                "the server's pg_hba.conf rejects this connection; if drctl fenced it (method hba), remove the `# drctl fence` block and reload on the database host to unfence",
            ),
            _ => None,
        }
    }

    fn connect_error(server: &PgServer, source: tokio_postgres::Error) -> PgError {
        let addr = server.addr();
        if let Some(problem) = tls::certificate_problem(&source, &server.host) {
            return PgError::Certificate {
                addr,
                mode: "verify-full",
                trust: match &server.sslrootcert {
                    Some(r) => format!(", sslrootcert {r}"),
                    None => ", web PKI roots".into(),
                },
                problem,
                source,
            };
        }
        if let Some(db) = source.as_db_error() {
            if db.code() == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().starts_with("pg_hba.conf rejects connection")
            {
                return PgError::Rejected { addr, source };
            }
        }
        PgError::Connect { addr, source }
    }
}

/// Why a DSN cannot name a server.
#[derive(Debug, Error)]
pub enum DsnError {
    #[error("not a valid DSN")]
    Invalid {
        #[source]
        source: tokio_postgres::Error,
    },
    /// Secrets come by reference, never inside a connection string.
    #[error("the DSN contains a password")]
    Password,
    #[error("the DSN names no TCP host")]
    NoTcpHost,
    /// Without `sslmode`, clients fall back to plaintext silently.
    #[error("the DSN has no `sslmode`")]
    NoSslMode,
    #[error(transparent)]
    SslMode(SslModeError),
    #[error("`sslrootcert` is used only with `sslmode=verify-full`")]
    RootCertNeedsVerifyFull,
}

impl DsnError {
    /// Whether the TLS parameters are what is wrong (the hint lists the modes).
    pub fn is_tls(&self) -> bool {
        matches!(
            self,
            DsnError::NoSslMode | DsnError::SslMode(_) | DsnError::RootCertNeedsVerifyFull
        )
    }
}

/// An `sslmode` drctl does not accept.
#[derive(Debug, Error)]
pub enum SslModeError {
    #[error("sslmode `{0}` is refused: it falls back to plaintext without saying so")]
    Weak(String),
    #[error("sslmode `verify-ca` is not supported: it checks the CA but not the host name")]
    VerifyCa,
    #[error("unknown sslmode `{0}`")]
    Unknown(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Require,
    VerifyFull,
}

impl SslMode {
    /// What each mode authenticates: the hint of every sslmode error.
    pub const HINT: &'static str = "sslmode is one of: `verify-full` (encrypted; the server's certificate must chain to `sslrootcert: file:CA.pem` or, without it, to the web PKI roots, and name the host: authenticates the server), `require` (encrypted, but any certificate is accepted: authenticates nothing, an attacker on the path can impersonate the server), `disable` (plaintext: nothing encrypted, nothing authenticated; say it explicitly)";

    /// The modes drctl accepts. `prefer` and `allow` are refused: both
    /// silently settle for plaintext when the server (or an attacker in
    /// the middle) declines TLS.
    pub fn parse(s: &str) -> Result<SslMode, SslModeError> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "require" => Ok(SslMode::Require),
            "verify-full" => Ok(SslMode::VerifyFull),
            "prefer" | "allow" => Err(SslModeError::Weak(s.to_string())),
            "verify-ca" => Err(SslModeError::VerifyCa),
            other => Err(SslModeError::Unknown(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where a server is. Holds a reference to the password, never its value.
#[derive(Clone)]
pub struct PgServer {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: Option<SecretRef>,
    pub sslmode: SslMode,
    /// The CA bundle `verify-full` trusts instead of the web PKI roots.
    pub sslrootcert: Option<SecretRef>,
    pub connect_timeout: Duration,
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgServer({})", self.addr())
    }
}

impl PgServer {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Parses a DSN (`postgresql://user@host:5432/db?sslmode=verify-full`
    /// or `host=... port=... dbname=... sslmode=...`), see [`dsn`].
    pub fn from_dsn(dsn: &str) -> Result<PgServer, DsnError> {
        dsn::parse(dsn)
    }

    /// Decodes a server: a mapping (`host`, `port`, … or `dsn`), or a DSN
    /// string. Validation and execution share this.
    pub fn decode(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Option<PgServer> {
        if let Some(dsn) = node.as_str() {
            return match PgServer::from_dsn(dsn) {
                Ok(s) => Some(s),
                Err(e) => {
                    ctx.error(
                        if matches!(e, DsnError::Password) { "E-SECRET-LITERAL" } else { "E-VALUE" },
                        node,
                        format!("{what}: {}", crate::diag::error_chain(&e)),
                        Some(if e.is_tls() {
                            format!("write `sslmode=verify-full` (or another mode below) in the DSN; {}", SslMode::HINT)
                        } else {
                            "write the server as a mapping with `dsn:` (no password) and `password: env:NAME`".into()
                        }),
                    );
                    None
                }
            };
        }
        if node.get("dsn").is_some() {
            let mut r = MapReader::new(ctx, node, what.to_string())?;
            let dsn_node = r.opt("dsn")?;
            let password = r
                .opt("password")
                .and_then(|n| ctx.secret_ref(n, "password"));
            r.allow(&["region", "name"]);
            r.finish(ctx);
            let mut s = PgServer::decode(ctx, dsn_node, &format!("{what}.dsn"))?;
            s.password = password;
            return Some(s);
        }
        let mut r = MapReader::new(ctx, node, what.to_string())?;
        let host = r.req(ctx, "host").and_then(|n| ctx.string(n, "host"));
        let port_node = r.opt("port");
        let port = port_node.and_then(|n| ctx.port(n, &format!("{what}.port")));
        let dbname = r
            .opt("dbname")
            .and_then(|n| ctx.string(n, "dbname"))
            .unwrap_or_else(|| "postgres".into());
        let user = r
            .opt("user")
            .and_then(|n| ctx.string(n, "user"))
            .unwrap_or_else(|| "postgres".into());
        let password = r
            .opt("password")
            .and_then(|n| ctx.secret_ref(n, "password"));
        // Default verify-full: a mapping that says nothing gets the mode
        // that authenticates the server, never plaintext.
        let sslmode = match r.opt("sslmode") {
            None => Some(SslMode::VerifyFull),
            Some(n) => match n.as_str().map(SslMode::parse) {
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => {
                    ctx.error(
                        "E-VALUE",
                        n,
                        format!("{what}.sslmode: {e}"),
                        Some(SslMode::HINT.into()),
                    );
                    None
                }
                None => {
                    ctx.error(
                        "E-TYPE",
                        n,
                        format!("{what}.sslmode must be a string"),
                        Some(SslMode::HINT.into()),
                    );
                    None
                }
            },
        };
        let rootcert_node = r.opt("sslrootcert");
        let sslrootcert = rootcert_node.and_then(|n| ctx.secret_ref(n, "sslrootcert"));
        if let (Some(n), Some(m)) = (rootcert_node, sslmode) {
            if m != SslMode::VerifyFull {
                ctx.error(
                    "E-VALUE",
                    n,
                    format!("{what}.sslrootcert is used only with `sslmode: verify-full` (this entry has `{}`)", m.as_str()),
                    Some("drop sslrootcert, or use `sslmode: verify-full` to authenticate the server against that CA".into()),
                );
            }
        }
        let connect_timeout = r
            .opt("connect_timeout")
            .and_then(|n| ctx.duration(n, "connect_timeout"))
            .unwrap_or(Duration::from_secs(3));
        // Components in environment files may carry fields for other tools
        // (e.g. `data_dir` for the lab); accept them without complaint.
        r.allow(&["data_dir", "region", "name", "replication_user"]);
        r.finish(ctx);
        // A `${...}` port is checked once resolved; a wrong one is reported.
        if port_node.is_some_and(|n| !ctx.deferred(n)) && port.is_none() {
            return None;
        }
        Some(PgServer {
            host: host?,
            port: port.unwrap_or(5432),
            dbname,
            user,
            password,
            sslmode: sslmode?,
            sslrootcert,
            connect_timeout,
        })
    }

    fn config(&self) -> Result<Config, PgError> {
        let mut c = Config::new();
        c.host(&self.host)
            .port(self.port)
            .dbname(&self.dbname)
            .user(&self.user)
            .application_name("drctl")
            .connect_timeout(self.connect_timeout)
            // tokio-postgres defaults to `prefer`, which would take a
            // server's (or an attacker's) "no TLS" for an answer.
            .ssl_mode(match self.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
            });
        if let Some(p) = &self.password {
            c.password(p.resolve()?.expose());
        }
        Ok(c)
    }

    /// Connects within `limit` (and the server's own connect timeout).
    pub async fn connect(&self, limit: Duration) -> Result<Client, PgError> {
        let cfg = self.config()?;
        let limit = limit
            .min(self.connect_timeout)
            .max(Duration::from_millis(50));
        let addr = self.addr();
        let fut = async {
            match self.sslmode {
                SslMode::Disable => {
                    let (client, conn) = cfg
                        .connect(NoTls)
                        .await
                        .map_err(|e| PgError::connect_error(self, e))?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(client)
                }
                mode => {
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls::config(
                        mode,
                        self.sslrootcert.as_ref(),
                    )?);
                    let (client, conn) = cfg
                        .connect(tls)
                        .await
                        .map_err(|e| PgError::connect_error(self, e))?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(client)
                }
            }
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(PgError::Timeout {
                addr,
                op: "connect",
                ms: limit.as_millis() as u64,
            }),
        }
    }
}

/// Runs one query within `limit`, mapping errors with context.
pub async fn query(
    client: &Client,
    addr: &str,
    op: &'static str,
    sql: &str,
    limit: Duration,
) -> Result<Vec<tokio_postgres::Row>, PgError> {
    bounded(addr, op, limit, client.query(sql, &[])).await
}

/// Like [`query`] for statements whose rows we don't need.
pub async fn execute(
    client: &Client,
    addr: &str,
    op: &'static str,
    sql: &str,
    limit: Duration,
) -> Result<(), PgError> {
    bounded(addr, op, limit, client.batch_execute(sql)).await
}

/// Runs `fut` within `limit`, naming the server and the operation in
/// either failure.
async fn bounded<T>(
    addr: &str,
    op: &'static str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(PgError::Query {
            addr: addr.to_string(),
            op,
            source: e,
        }),
        Err(_) => Err(PgError::Timeout {
            addr: addr.to_string(),
            op,
            ms: limit.as_millis() as u64,
        }),
    }
}
