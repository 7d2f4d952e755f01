//! DNS: moving traffic to the target region and proving it moved.
//!
//! The environment's `dns` section names the provider, the zone, the
//! authoritative servers to verify at, and each record's values per region:
//!
//! ```yaml
//! dns:
//!   provider: powerdns
//!   api_url: http://127.0.0.1:8081
//!   api_key: env:PDNS_API_KEY
//!   zone: example.com.
//!   nameservers: ["10.0.0.53:53"]      # authoritative servers, queried directly
//!   records:
//!     - {name: app.example.com., type: A, ttl: 30, values: {primary: [10.0.0.1], dr: [10.1.0.1]}}
//! ```
//!
//! Providers: PowerDNS (HTTP API), RFC 2136 with TSIG (BIND, Knot, …),
//! AWS Route 53, Google Cloud DNS.

pub mod check;
pub mod clouddns;
pub mod config;
pub mod lower_ttl;
pub mod powerdns;
pub mod provider;
pub mod restore;
pub mod rfc2136;
pub mod route53;
pub mod switch;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordSet {
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    /// Sorted, so sets compare regardless of the order a server returns.
    pub values: Vec<String>,
}

impl RecordSet {
    pub fn key(&self) -> String {
        format!("{} {}", self.name, self.rtype)
    }
}

#[derive(Debug, Error)]
pub enum DnsError {
    #[error("{provider} API {url}: {reason}")]
    Api {
        provider: &'static str,
        url: String,
        reason: String,
    },
    #[error("{provider} API {url} rejected the change ({status}): {body}")]
    Rejected {
        provider: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error(transparent)]
    Query(#[from] crate::dnsquery::QueryError),
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
}
