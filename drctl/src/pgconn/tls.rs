//! TLS for PostgreSQL connections (rustls): what each `sslmode` trusts,
//! private CAs (`sslrootcert`), and naming certificate failures so an
//! operator can tell a wrong CA from a wrong host name.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{PgError, SslMode};
use crate::secret::SecretRef;

/// Reads a PEM bundle of CA certificates. Not a secret (a CA certificate
/// is public), so it is not registered for redaction.
fn read_roots(r: &SecretRef) -> Result<rustls::RootCertStore, PgError> {
    let bad = |detail: String| PgError::RootCert {
        reference: r.to_string(),
        detail,
    };
    let pem = match r {
        SecretRef::File(p) => std::fs::read(p).map_err(|e| bad(format!("cannot read: {e}")))?,
        SecretRef::Env(n) => std::env::var(n)
            .map_err(|_| bad("environment variable not set".into()))?
            .into_bytes(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// `require` encrypts without checking the certificate (libpq's meaning);
/// `verify-full` checks chain and host name, against exactly the
/// `sslrootcert` bundle when one is given, else the web PKI roots.
pub(super) fn config(
    mode: SslMode,
    rootcert: Option<&SecretRef>,
) -> Result<rustls::ClientConfig, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?;
    if mode == SslMode::VerifyFull {
        let roots = match rootcert {
            Some(r) => read_roots(r)?,
            None => {
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned())
            }
        };
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth())
}

/// Why the server's certificate was refused, in words, if that is what
/// failed. rustls' error hides inside an `io::Error`, whose `source()`
/// skips it, so each link of the chain is looked into.
pub(super) fn certificate_problem(e: &tokio_postgres::Error, host: &str) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(c)) =
            err.downcast_ref::<rustls::Error>().or(inner)
        {
            use rustls::CertificateError as C;
            return Some(match c {
                C::UnknownIssuer | C::BadSignature => {
                    "it is not signed by a CA this server entry trusts".to_string()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    format!("it is not valid for the host name `{host}`")
                }
                C::Expired | C::ExpiredContext { .. } => "it has expired".to_string(),
                C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_string(),
                C::Revoked => "it has been revoked".to_string(),
                other => format!("{other:?}"),
            });
        }
        cur = err.source();
    }
    None
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
