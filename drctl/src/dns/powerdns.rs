//! PowerDNS Authoritative HTTP API: read a zone's rrsets, replace several
//! rrsets in one PATCH (PowerDNS applies a PATCH atomically: all or none).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::config::{DnsConfig, ProviderConfig};
use super::provider::DnsProvider;
use super::{DnsError, RecordSet};

pub struct PowerDns {
    zone_url: String,
    client: reqwest::Client,
    key: Option<String>,
}

impl PowerDns {
    pub fn new(cfg: &DnsConfig, timeout: Duration) -> Result<Self, DnsError> {
        let ProviderConfig::PowerDns {
            api_url,
            api_key,
            server_id,
        } = &cfg.provider
        else {
            return Err(DnsError::Api {
                provider: "powerdns",
                url: String::new(),
                reason: "not a PowerDNS config".into(),
            });
        };
        let key = match api_key {
            Some(r) => Some(r.resolve()?.expose().to_string()),
            None => None,
        };
        Ok(PowerDns {
            zone_url: format!(
                "{}/api/v1/servers/{server_id}/zones/{}",
                api_url.trim_end_matches('/'),
                cfg.zone
            ),
            client: super::provider::http_client(timeout, "powerdns")?,
            key,
        })
    }

    fn req(&self, m: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(m, url);
        match &self.key {
            Some(k) => r.header("X-API-Key", k),
            None => r,
        }
    }

    fn api_err(&self, url: &str, e: reqwest::Error) -> DnsError {
        DnsError::Api {
            provider: "powerdns",
            url: url.to_string(),
            reason: crate::diag::error_chain(&e),
        }
    }
}

#[async_trait]
impl DnsProvider for PowerDns {
    async fn current(&self, want: &[RecordSet]) -> Result<Vec<Option<RecordSet>>, DnsError> {
        let url = self.zone_url.clone();
        let resp = self
            .req(reqwest::Method::GET, &url)
            .send()
            .await
            .map_err(|e| self.api_err(&url, e))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.map_err(|e| self.api_err(&url, e))?;
        if status != 200 {
            return Err(DnsError::Rejected {
                provider: "powerdns",
                url,
                status,
                body: body.to_string(),
            });
        }
        let rrsets = body["rrsets"].as_array().cloned().unwrap_or_default();
        Ok(want
            .iter()
            .map(|w| {
                rrsets
                    .iter()
                    .find(|r| {
                        r["name"].as_str() == Some(&w.name) && r["type"].as_str() == Some(&w.rtype)
                    })
                    .map(|r| {
                        let values: Vec<String> = r["records"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .filter(|x| x["disabled"] != true)
                            .filter_map(|x| x["content"].as_str().map(str::to_string))
                            .collect();
                        RecordSet {
                            name: w.name.clone(),
                            rtype: w.rtype.clone(),
                            ttl: r["ttl"].as_u64().unwrap_or(0) as u32,
                            values: crate::dnsquery::normalize(&values),
                        }
                    })
            })
            .collect())
    }

    async fn replace(
        &self,
        sets: &[RecordSet],
        _current: &[Option<RecordSet>],
    ) -> Result<Option<String>, DnsError> {
        let url = self.zone_url.clone();
        let rrsets: Vec<Value> = sets
            .iter()
            .map(|s| {
                json!({
                    "name": s.name, "type": s.rtype, "ttl": s.ttl, "changetype": "REPLACE",
                    "records": s.values.iter().map(|v| json!({"content": v, "disabled": false})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let resp = self
            .req(reqwest::Method::PATCH, &url)
            .json(&json!({ "rrsets": rrsets }))
            .send()
            .await
            .map_err(|e| self.api_err(&url, e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.text().await.unwrap_or_default();
            return Err(DnsError::Rejected {
                provider: "powerdns",
                url,
                status,
                body,
            });
        }
        Ok(None)
    }
}
