//! Connection strings: the URL form (`postgresql://user@host:5432/db?…`)
//! and libpq's `key=value` form.
//!
//! tokio-postgres parses both, but it knows neither `verify-full` nor
//! `sslrootcert`, and it silently accepts `prefer` (plaintext when the
//! server declines TLS). So drctl takes the two TLS parameters out of the
//! string itself, decides them strictly ([`SslMode::parse`]), and hands
//! the rest to tokio-postgres.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::Config;

use super::{DsnError, PgServer, SslMode};
use crate::secret::SecretRef;

/// The TLS parameters found in a DSN, and the DSN without them.
struct Split {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split(dsn: &str) -> Split {
    let mut sslmode = None;
    let mut sslrootcert = None;
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let Some((base, query)) = dsn.split_once('?') else {
            return Split {
                rest: dsn.to_string(),
                sslmode,
                sslrootcert,
            };
        };
        let mut kept = Vec::new();
        for part in query.split('&') {
            match part.split_once('=') {
                Some(("sslmode", v)) => sslmode = Some(percent_decode(v)),
                Some(("sslrootcert", v)) => sslrootcert = Some(percent_decode(v)),
                _ => kept.push(part),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Split {
            rest,
            sslmode,
            sslrootcert,
        };
    }
    let mut kept = Vec::new();
    for token in dsn.split_whitespace() {
        let unquote = |v: &str| v.trim_matches('\'').to_string();
        match token.split_once('=') {
            Some(("sslmode", v)) => sslmode = Some(unquote(v)),
            Some(("sslrootcert", v)) => sslrootcert = Some(unquote(v)),
            _ => kept.push(token),
        }
    }
    Split {
        rest: kept.join(" "),
        sslmode,
        sslrootcert,
    }
}

/// Parses a DSN. A password inside it is refused (secrets come by
/// reference, in a separate `password:` field), and so is a DSN that does
/// not say how to protect the connection: without `sslmode`, libpq and
/// tokio-postgres fall back to plaintext silently.
pub(super) fn parse(dsn: &str) -> Result<PgServer, DsnError> {
    let s = split(dsn);
    let c = Config::from_str(&s.rest).map_err(|source| DsnError::Invalid { source })?;
    if c.get_password().is_some() {
        return Err(DsnError::Password);
    }
    let mode = s.sslmode.ok_or(DsnError::NoSslMode)?;
    let sslmode = SslMode::parse(&mode).map_err(DsnError::SslMode)?;
    let sslrootcert = match s.sslrootcert.as_deref() {
        None | Some("") | Some("system") => None,
        Some(_) if sslmode != SslMode::VerifyFull => return Err(DsnError::RootCertNeedsVerifyFull),
        Some(p) => Some(match SecretRef::parse(p) {
            Some(r @ SecretRef::File(_)) => r,
            _ => SecretRef::File(PathBuf::from(p)),
        }),
    };
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => return Err(DsnError::NoTcpHost),
    };
    Ok(PgServer {
        host,
        port: c.get_ports().first().copied().unwrap_or(5432),
        dbname: c.get_dbname().unwrap_or("postgres").to_string(),
        user: c.get_user().unwrap_or("postgres").to_string(),
        password: None,
        sslmode,
        sslrootcert,
        connect_timeout: c
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(3)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns_keep_their_tls_mode() {
        let s = parse("postgresql://drctl@db.example:5433/st?sslmode=verify-full").unwrap();
        assert_eq!(s.sslmode, SslMode::VerifyFull);
        assert_eq!(
            (s.host.as_str(), s.port, s.dbname.as_str()),
            ("db.example", 5433, "st")
        );
        let s = parse("host=h port=1 dbname=d user=u sslmode=verify-full").unwrap();
        assert_eq!(s.sslmode, SslMode::VerifyFull);
        let s = parse("postgresql://u@h/d?sslmode=require").unwrap();
        assert_eq!(s.sslmode, SslMode::Require);
        // The password is refused first, whatever else is wrong.
        for dsn in [
            "postgresql://u:pw@h/d?sslmode=disable",
            "postgresql://u:pw@h/d",
        ] {
            assert!(matches!(parse(dsn), Err(DsnError::Password)), "{dsn}");
        }
    }

    #[test]
    fn weak_or_missing_modes_are_refused() {
        for dsn in [
            "postgresql://u@h/d",
            "host=h dbname=d user=u",
            "postgresql://u@h/d?connect_timeout=3",
        ] {
            assert!(matches!(parse(dsn), Err(DsnError::NoSslMode)), "{dsn}");
        }
        for dsn in [
            "postgresql://u@h/d?sslmode=prefer",
            "postgresql://u@h/d?sslmode=allow",
            "host=h sslmode=prefer",
            "postgresql://u@h/d?sslmode=verify-ca",
            "postgresql://u@h/d?sslmode=bogus",
        ] {
            assert!(matches!(parse(dsn), Err(DsnError::SslMode(_))), "{dsn}");
        }
    }

    #[test]
    fn root_certificates_come_with_verify_full_only() {
        let s = parse(
            "postgresql://u@h:7/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=2",
        )
        .unwrap();
        assert_eq!(
            s.sslrootcert.map(|r| r.to_string()).as_deref(),
            Some("file:/etc/ca.pem")
        );
        assert_eq!((s.port, s.connect_timeout), (7, Duration::from_secs(2)));
        let s = parse("host=h sslmode=verify-full sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(
            s.sslrootcert.map(|r| r.to_string()).as_deref(),
            Some("file:/etc/ca.pem")
        );
        assert!(matches!(
            parse("postgresql://u@h/d?sslmode=require&sslrootcert=/ca.pem"),
            Err(DsnError::RootCertNeedsVerifyFull)
        ));
    }
}
