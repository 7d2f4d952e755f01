//! PowerDNS Authoritative HTTP API: read a zone's rrsets, replace several
//! rrsets in one PATCH (PowerDNS applies a PATCH atomically: all or none).

use std::time::Duration;

use serde_json::{json, Value};

use super::config::DnsConfig;
use super::{DnsError, RecordSet};

pub struct PowerDns<'a> {
    cfg: &'a DnsConfig,
    client: reqwest::Client,
    key: Option<String>,
}

impl<'a> PowerDns<'a> {
    pub fn new(cfg: &'a DnsConfig, timeout: Duration) -> Result<Self, DnsError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| DnsError::Api {
                provider: "powerdns",
                url: cfg.api_url.clone(),
                reason: e.to_string(),
            })?;
        let key = match &cfg.api_key {
            Some(r) => Some(r.resolve()?.expose().to_string()),
            None => None,
        };
        Ok(PowerDns { cfg, client, key })
    }

    fn zone_url(&self) -> String {
        format!(
            "{}/api/v1/servers/{}/zones/{}",
            self.cfg.api_url.trim_end_matches('/'),
            self.cfg.server_id,
            self.cfg.zone
        )
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
            reason: crate::actions::http_check::error_chain(&e),
        }
    }

    /// Current rrsets of the zone that `want` names.
    pub async fn current(&self, want: &[RecordSet]) -> Result<Vec<Option<RecordSet>>, DnsError> {
        let url = self.zone_url();
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
                    .map(|r| RecordSet {
                        name: w.name.clone(),
                        rtype: w.rtype.clone(),
                        ttl: r["ttl"].as_u64().unwrap_or(0) as u32,
                        values: super::normalize(
                            &r["records"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default()
                                .iter()
                                .filter(|x| x["disabled"] != true)
                                .filter_map(|x| x["content"].as_str().map(str::to_string))
                                .collect::<Vec<_>>(),
                        ),
                    })
            })
            .collect())
    }

    /// Replaces all `sets` in one atomic PATCH.
    pub async fn replace(&self, sets: &[RecordSet]) -> Result<(), DnsError> {
        let url = self.zone_url();
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
        Ok(())
    }
}
