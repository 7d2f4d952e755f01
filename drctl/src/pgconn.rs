//! Connecting to PostgreSQL: where a server is, how to reach it in bounded
//! time, and TLS (rustls) when the server entry asks for it.
//!
//! A server is written as a mapping, usually taken whole from the
//! environment (`server: ${target.postgres}`): `host`, `port`, `dbname`,
//! `user`, `password` (a secret reference), `sslmode`
//! (`disable` | `require` | `verify-full`), `connect_timeout`.

use std::fmt;
use std::sync::Arc;
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
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl PgError {
    /// Whether the server could not be reached at all (as opposed to
    /// answering with an error): fence and split-brain checks branch on it.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            PgError::Connect { .. } | PgError::Timeout { op: "connect", .. }
        )
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Require,
    VerifyFull,
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

    /// Decodes a server mapping (validation and execution share this).
    /// Parses a DSN (`postgresql://user@host:5432/db?sslmode=require` or
    /// `host=... port=... dbname=...`). A password inside the DSN is refused:
    /// secrets come by reference, in a separate `password:` field.
    pub fn from_dsn(dsn: &str) -> Result<PgServer, DsnError> {
        use std::str::FromStr;
        // tokio-postgres knows only disable/prefer/require; libpq's
        // `verify-full` is ours to implement (see `tls_config`), so it is
        // read here and handed to the parser as `require`.
        let verify_full = dsn.contains("sslmode=verify-full");
        let parsable = dsn.replace("sslmode=verify-full", "sslmode=require");
        let c = Config::from_str(&parsable).map_err(|source| DsnError::Invalid { source })?;
        if c.get_password().is_some() {
            return Err(DsnError::Password);
        }
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => return Err(DsnError::NoTcpHost),
        };
        let sslmode = match c.get_ssl_mode() {
            _ if verify_full => SslMode::VerifyFull,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Disable,
        };
        Ok(PgServer {
            host,
            port: c.get_ports().first().copied().unwrap_or(5432),
            dbname: c.get_dbname().unwrap_or("postgres").to_string(),
            user: c.get_user().unwrap_or("postgres").to_string(),
            password: None,
            sslmode,
            connect_timeout: c
                .get_connect_timeout()
                .copied()
                .unwrap_or(Duration::from_secs(3)),
        })
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
                        Some("write the server as a mapping with `dsn:` (no password) and `password: env:NAME`".into()),
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
        let sslmode = match r.opt("sslmode").and_then(|n| {
            ctx.one_of(
                n,
                &["disable", "prefer", "require", "verify-full"],
                "sslmode",
            )
        }) {
            Some("require") => SslMode::Require,
            Some("verify-full") => SslMode::VerifyFull,
            _ => SslMode::Disable,
        };
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
            sslmode,
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
            .connect_timeout(self.connect_timeout);
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
                    let (client, conn) =
                        cfg.connect(NoTls).await.map_err(|e| PgError::Connect {
                            addr: addr.clone(),
                            source: e,
                        })?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    Ok(client)
                }
                mode => {
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(mode)?);
                    let (client, conn) = cfg.connect(tls).await.map_err(|e| PgError::Connect {
                        addr: addr.clone(),
                        source: e,
                    })?;
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

/// `require` encrypts without checking the certificate (libpq's meaning);
/// `verify-full` checks chain and host name against the web PKI roots.
fn tls_config(mode: SslMode) -> Result<rustls::ClientConfig, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?;
    if mode == SslMode::VerifyFull {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth())
}

/// libpq's `sslmode=require`: encryption without authentication.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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
    match tokio::time::timeout(limit, client.query(sql, &[])).await {
        Ok(Ok(rows)) => Ok(rows),
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

/// Like [`query`] for statements whose rows we don't need.
pub async fn execute(
    client: &Client,
    addr: &str,
    op: &'static str,
    sql: &str,
    limit: Duration,
) -> Result<(), PgError> {
    match tokio::time::timeout(limit, client.batch_execute(sql)).await {
        Ok(Ok(())) => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns_keep_their_tls_mode() {
        let s = PgServer::from_dsn("postgresql://drctl@db.example:5433/st?sslmode=verify-full")
            .unwrap();
        assert_eq!(s.sslmode, SslMode::VerifyFull);
        assert_eq!(
            (s.host.as_str(), s.port, s.dbname.as_str()),
            ("db.example", 5433, "st")
        );
        let s = PgServer::from_dsn("host=h port=1 dbname=d user=u sslmode=verify-full").unwrap();
        assert_eq!(s.sslmode, SslMode::VerifyFull);
        let s = PgServer::from_dsn("postgresql://u@h/d?sslmode=require").unwrap();
        assert_eq!(s.sslmode, SslMode::Require);
        assert!(PgServer::from_dsn("postgresql://u:pw@h/d").is_err());
    }
}
