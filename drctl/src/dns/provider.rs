//! The provider interface: read the current rrsets, replace several at
//! once (atomically where the API allows), and wait for the provider to
//! report the change applied.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::config::{DnsConfig, ProviderConfig};
use super::{DnsError, RecordSet};

#[async_trait]
pub trait DnsProvider: Send + Sync {
    /// Current rrsets for each wanted (name, type), `None` when absent.
    async fn current(&self, want: &[RecordSet]) -> Result<Vec<Option<RecordSet>>, DnsError>;
    /// Replaces `sets` in one change; returns the provider's change id, if any.
    async fn replace(
        &self,
        sets: &[RecordSet],
        current: &[Option<RecordSet>],
    ) -> Result<Option<String>, DnsError>;
    /// Waits until the provider reports the change applied (INSYNC, done).
    async fn wait(&self, _change: &str, _deadline: Instant) -> Result<(), DnsError> {
        Ok(())
    }
}

pub fn build<'a>(
    cfg: &'a DnsConfig,
    timeout: Duration,
) -> Result<Box<dyn DnsProvider + 'a>, DnsError> {
    Ok(match &cfg.provider {
        ProviderConfig::PowerDns { .. } => Box::new(super::powerdns::PowerDns::new(cfg, timeout)?),
        ProviderConfig::Rfc2136 { .. } => Box::new(super::rfc2136::Rfc2136::new(cfg, timeout)?),
        ProviderConfig::Route53 { .. } => Box::new(super::route53::Route53::new(cfg, timeout)?),
        ProviderConfig::CloudDns { .. } => Box::new(super::clouddns::CloudDns::new(cfg, timeout)?),
    })
}

pub fn http_client(timeout: Duration, provider: &'static str) -> Result<reqwest::Client, DnsError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| DnsError::Api {
            provider,
            url: String::new(),
            reason: e.to_string(),
        })
}

/// How a DNS failure reaches the engine, with what to do about it. (Here,
/// not in `mod.rs`, so the config decoder the environment uses stays free
/// of the action contract.)
impl From<DnsError> for crate::action::ActionError {
    fn from(e: DnsError) -> Self {
        let hint = match &e {
            DnsError::Rejected { .. } => {
                "the provider applied nothing (the change is atomic); fix the record and resume"
            }
            DnsError::Query(_) => {
                "is the authoritative server reachable from here? check dns.nameservers"
            }
            _ => "check the dns section of the environment file and the provider's availability",
        };
        crate::action::ActionError::failed_hint(e.to_string(), hint)
    }
}
