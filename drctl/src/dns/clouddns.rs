//! Google Cloud DNS: `changes.create` (additions + exact deletions of the
//! current rrsets, applied atomically by the API), then `changes.get` until
//! `done`. The OAuth token comes from a service-account key (an RS256 JWT
//! signed with ring and exchanged at the key's token URI) or, without a key,
//! from the GCE metadata server. Endpoint and token URI are configurable.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::config::{DnsConfig, ProviderConfig};
use super::provider::DnsProvider;
use super::{DnsError, RecordSet};

pub const SCOPE: &str = "https://www.googleapis.com/auth/ndev.clouddns.readwrite";

pub struct CloudDns {
    base: String,
    credentials: Option<crate::secret::SecretRef>,
    token_uri: Option<String>,
    metadata_url: String,
    client: reqwest::Client,
    token: Mutex<Option<String>>,
}

fn err(url: &str, reason: impl Into<String>) -> DnsError {
    DnsError::Api {
        provider: "clouddns",
        url: url.to_string(),
        reason: reason.into(),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A service-account key that cannot sign a token request.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("service-account key is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("service-account key has no {0}")]
    Missing(&'static str),
    #[error("private_key PEM")]
    Pem(#[source] base64::DecodeError),
    #[error("private_key is not a PKCS#8 RSA key")]
    NotRsa(#[source] ring::error::KeyRejected),
    #[error("RSA signing failed")]
    Sign,
}

/// Signs a JWT assertion for a service-account key (JSON text).
pub fn service_account_jwt(
    key_json: &str,
    token_uri_override: Option<&str>,
    now: u64,
) -> Result<(String, String), KeyError> {
    let key: Value = serde_json::from_str(key_json).map_err(KeyError::NotJson)?;
    let email = key["client_email"]
        .as_str()
        .ok_or(KeyError::Missing("client_email"))?;
    let pem = key["private_key"]
        .as_str()
        .ok_or(KeyError::Missing("private_key"))?;
    let token_uri = token_uri_override
        .or(key["token_uri"].as_str())
        .unwrap_or("https://oauth2.googleapis.com/token")
        .to_string();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der_b64.trim())
        .map_err(KeyError::Pem)?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(KeyError::NotRsa)?;
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64(
        json!({"iss": email, "scope": SCOPE, "aud": token_uri, "iat": now, "exp": now + 3600})
            .to_string()
            .as_bytes(),
    );
    let input = format!("{header}.{claims}");
    let mut sig = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| KeyError::Sign)?;
    Ok((format!("{input}.{}", b64(&sig)), token_uri))
}

impl CloudDns {
    pub fn new(cfg: &DnsConfig, timeout: Duration) -> Result<Self, DnsError> {
        let ProviderConfig::CloudDns {
            project,
            managed_zone,
            endpoint,
            credentials,
            token_uri,
            metadata_url,
        } = &cfg.provider
        else {
            return Err(err("", "not a Cloud DNS config"));
        };
        Ok(CloudDns {
            base: format!(
                "{}/dns/v1/projects/{project}/managedZones/{managed_zone}",
                endpoint.trim_end_matches('/')
            ),
            credentials: credentials.clone(),
            token_uri: token_uri.clone(),
            metadata_url: metadata_url.trim_end_matches('/').to_string(),
            client: super::provider::http_client(timeout, "clouddns")?,
            token: Mutex::new(None),
        })
    }

    async fn token(&self) -> Result<String, DnsError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            return Ok(t.clone());
        }
        let token = match &self.credentials {
            Some(r) => {
                let key = r.resolve()?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let (jwt, uri) = service_account_jwt(key.expose(), self.token_uri.as_deref(), now)
                    .map_err(|e| err("service-account key", crate::diag::error_chain(&e)))?;
                let resp = self
                    .client
                    .post(&uri)
                    .form(&[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                        ("assertion", jwt.as_str()),
                    ])
                    .send()
                    .await
                    .map_err(|e| err(&uri, crate::diag::error_chain(&e)))?;
                let status = resp.status().as_u16();
                let v: Value = resp.json().await.map_err(|e| err(&uri, e.to_string()))?;
                if status != 200 {
                    return Err(DnsError::Rejected {
                        provider: "clouddns",
                        url: uri,
                        status,
                        body: v.to_string(),
                    });
                }
                v["access_token"]
                    .as_str()
                    .ok_or_else(|| err(&uri, "no access_token in the token response"))?
                    .to_string()
            }
            None => {
                let url = format!(
                    "{}/computeMetadata/v1/instance/service-accounts/default/token",
                    self.metadata_url
                );
                let v: Value = self
                    .client
                    .get(&url)
                    .header("Metadata-Flavor", "Google")
                    .send()
                    .await
                    .map_err(|e| err(&url, crate::diag::error_chain(&e)))?
                    .json()
                    .await
                    .map_err(|e| err(&url, e.to_string()))?;
                v["access_token"]
                    .as_str()
                    .ok_or_else(|| err(&url, "no access_token from the metadata server"))?
                    .to_string()
            }
        };
        crate::secret::register(&token);
        *cached = Some(token.clone());
        Ok(token)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, DnsError> {
        let token = self.token().await?;
        let mut req = self.client.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| err(url, crate::diag::error_chain(&e)))?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            return Err(DnsError::Rejected {
                provider: "clouddns",
                url: url.to_string(),
                status,
                body: msg,
            });
        }
        Ok(v)
    }
}

fn rrset_json(s: &RecordSet) -> Value {
    json!({"name": s.name, "type": s.rtype, "ttl": s.ttl, "rrdatas": s.values, "kind": "dns#resourceRecordSet"})
}

#[async_trait]
impl DnsProvider for CloudDns {
    async fn current(&self, want: &[RecordSet]) -> Result<Vec<Option<RecordSet>>, DnsError> {
        let mut out = Vec::new();
        for w in want {
            let url = format!("{}/rrsets?name={}&type={}", self.base, w.name, w.rtype);
            let v = self.call(reqwest::Method::GET, &url, None).await?;
            let found = v["rrsets"].as_array().and_then(|a| {
                a.iter()
                    .find(|r| r["name"] == w.name.as_str() && r["type"] == w.rtype.as_str())
                    .cloned()
            });
            out.push(found.map(|r| {
                RecordSet {
                    name: w.name.clone(),
                    rtype: w.rtype.clone(),
                    ttl: r["ttl"].as_u64().unwrap_or(0) as u32,
                    values: crate::dnsquery::normalize(
                        &r["rrdatas"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect::<Vec<_>>(),
                    ),
                }
            }));
        }
        Ok(out)
    }

    async fn replace(
        &self,
        sets: &[RecordSet],
        current: &[Option<RecordSet>],
    ) -> Result<Option<String>, DnsError> {
        // Cloud DNS deletes only an exact match of the existing rrset.
        let deletions: Vec<Value> = sets
            .iter()
            .filter_map(|s| {
                current
                    .iter()
                    .flatten()
                    .find(|c| c.name == s.name && c.rtype == s.rtype)
                    .map(rrset_json)
            })
            .collect();
        let additions: Vec<Value> = sets.iter().map(rrset_json).collect();
        let url = format!("{}/changes", self.base);
        let v = self
            .call(
                reqwest::Method::POST,
                &url,
                Some(json!({"additions": additions, "deletions": deletions})),
            )
            .await?;
        Ok(v["id"].as_str().map(str::to_string))
    }

    async fn wait(&self, change: &str, deadline: Instant) -> Result<(), DnsError> {
        let url = format!("{}/changes/{change}", self.base);
        loop {
            let v = self.call(reqwest::Method::GET, &url, None).await?;
            if v["status"] == "done" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(err(&url, "change still pending at the deadline"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
