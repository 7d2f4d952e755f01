//! AWS Route 53: ChangeResourceRecordSets (UPSERT, one batch: atomic),
//! then GetChange until INSYNC. Requests are signed with SigV4 by the
//! `aws-sigv4` crate; credentials come from AWS_ACCESS_KEY_ID /
//! AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE` or ~/.aws/credentials, profile
//! `AWS_PROFILE` or `default`). The endpoint is configurable (moto in tests,
//! other partitions).

use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use super::config::{DnsConfig, ProviderConfig};
use super::provider::DnsProvider;
use super::{DnsError, RecordSet};

pub struct Route53 {
    endpoint: String,
    zone_id: String,
    region: String,
    creds: Credentials,
    client: reqwest::Client,
}

fn err(url: &str, reason: impl Into<String>) -> DnsError {
    DnsError::Api {
        provider: "route53",
        url: url.to_string(),
        reason: reason.into(),
    }
}

/// Reads credentials the way the AWS CLI does (environment first).
pub fn load_credentials() -> Result<Credentials, DnsError> {
    if let (Ok(id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        crate::secret::register(&secret);
        return Ok(Credentials::new(
            id,
            secret,
            std::env::var("AWS_SESSION_TOKEN").ok(),
            None,
            "environment",
        ));
    }
    let path = std::env::var("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".aws/credentials")
        });
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let text = std::fs::read_to_string(&path).map_err(|_| {
        err(
            "",
            format!(
                "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or create {}",
                path.display()
            ),
        )
    })?;
    let (mut id, mut secret, mut token, mut inside) = (None, None, None, false);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line.trim_matches(['[', ']']).trim() == profile;
            continue;
        }
        if let (true, Some((k, v))) = (inside, line.split_once('=')) {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                "aws_session_token" => token = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(i), Some(s)) => {
            crate::secret::register(&s);
            Ok(Credentials::new(
                i,
                s,
                token,
                None,
                "shared-credentials-file",
            ))
        }
        _ => Err(err(
            "",
            format!("profile `{profile}` in {} has no keys", path.display()),
        )),
    }
}

/// Inner texts of every `<tag>…</tag>` (Route 53's XML is flat enough).
pub fn tags<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Why a request could not be signed (never a network problem).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Params(#[from] v4::signing_params::BuildError),
    #[error(transparent)]
    Request(#[from] aws_sigv4::http_request::SigningError),
}

/// SigV4 headers for one request (also used by the test-suite vector test).
/// The arguments are exactly SigV4's inputs, so they stay flat.
#[allow(clippy::too_many_arguments)]
pub fn sign_headers(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, SignError> {
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let req = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )?;
    let (instructions, _sig) = sign(req, &params)?.into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

impl Route53 {
    pub fn new(cfg: &DnsConfig, timeout: Duration) -> Result<Self, DnsError> {
        let ProviderConfig::Route53 {
            hosted_zone_id,
            endpoint,
            region,
        } = &cfg.provider
        else {
            return Err(err("", "not a Route 53 config"));
        };
        Ok(Route53 {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            zone_id: hosted_zone_id
                .trim_start_matches("/hostedzone/")
                .to_string(),
            region: region.clone(),
            creds: load_credentials()?,
            client: super::provider::http_client(timeout, "route53")?,
        })
    }

    async fn call(&self, method: &str, url: &str, body: Vec<u8>) -> Result<String, DnsError> {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .unwrap_or_default();
        let mut headers = vec![("host", host.as_str())];
        if !body.is_empty() {
            headers.push(("content-type", "application/xml"));
        }
        let signed = sign_headers(
            method,
            url,
            &headers,
            &body,
            &self.creds,
            &self.region,
            "route53",
            SystemTime::now(),
        )
        .map_err(|e| err(url, format!("SigV4: {e}")))?;
        let m =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| err(url, e.to_string()))?;
        let mut req = self.client.request(m, url);
        if !body.is_empty() {
            req = req.header("content-type", "application/xml").body(body);
        }
        for (k, v) in signed {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| err(url, crate::diag::error_chain(&e)))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| err(url, e.to_string()))?;
        if !(200..300).contains(&status) {
            let msg = tags(&text, "Message")
                .first()
                .map(|s| s.to_string())
                .unwrap_or(text.clone());
            return Err(DnsError::Rejected {
                provider: "route53",
                url: url.to_string(),
                status,
                body: msg,
            });
        }
        Ok(text)
    }
}

#[async_trait]
impl DnsProvider for Route53 {
    async fn current(&self, want: &[RecordSet]) -> Result<Vec<Option<RecordSet>>, DnsError> {
        let mut out = Vec::new();
        for w in want {
            let url = format!(
                "{}/2013-04-01/hostedzone/{}/rrset?name={}&type={}&maxitems=1",
                self.endpoint, self.zone_id, w.name, w.rtype
            );
            let xml = self.call("GET", &url, Vec::new()).await?;
            let found = tags(&xml, "ResourceRecordSet").into_iter().find(|r| {
                tags(r, "Name").first().map(|n| super::config::fqdn(n)) == Some(w.name.clone())
                    && tags(r, "Type").first() == Some(&w.rtype.as_str())
            });
            out.push(found.map(|r| {
                RecordSet {
                    name: w.name.clone(),
                    rtype: w.rtype.clone(),
                    ttl: tags(r, "TTL")
                        .first()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0),
                    values: crate::dnsquery::normalize(
                        &tags(r, "Value")
                            .iter()
                            .map(|v| v.to_string())
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
        _current: &[Option<RecordSet>],
    ) -> Result<Option<String>, DnsError> {
        let mut changes = String::new();
        for s in sets {
            let values: String = s
                .values
                .iter()
                .map(|v| {
                    format!(
                        "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                        xml_escape(v)
                    )
                })
                .collect();
            changes.push_str(&format!(
                "<Change><Action>UPSERT</Action><ResourceRecordSet><Name>{}</Name><Type>{}</Type><TTL>{}</TTL><ResourceRecords>{values}</ResourceRecords></ResourceRecordSet></Change>",
                xml_escape(&s.name), s.rtype, s.ttl
            ));
        }
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeBatch><Comment>drctl dns.switch</Comment><Changes>{changes}</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
        );
        let url = format!(
            "{}/2013-04-01/hostedzone/{}/rrset",
            self.endpoint, self.zone_id
        );
        let xml = self.call("POST", &url, body.into_bytes()).await?;
        let id = tags(&xml, "Id")
            .first()
            .map(|s| s.trim_start_matches("/change/").to_string());
        Ok(id)
    }

    async fn wait(&self, change: &str, deadline: Instant) -> Result<(), DnsError> {
        let url = format!("{}/2013-04-01/change/{change}", self.endpoint);
        loop {
            let xml = self.call("GET", &url, Vec::new()).await?;
            if tags(&xml, "Status").first() == Some(&"INSYNC") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(err(&url, "change still PENDING at the deadline"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS SigV4 test suite, `get-vanilla`: the published signature for
    /// GET / on example.amazonaws.com with the suite's example keys.
    #[test]
    fn sigv4_matches_the_aws_test_suite() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let h = sign_headers(
            "GET",
            "https://example.amazonaws.com/",
            &[("host", "example.amazonaws.com")],
            b"",
            &creds,
            "us-east-1",
            "service",
            t,
        )
        .unwrap();
        let auth = h
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// `post-vanilla` from the same suite.
    #[test]
    fn sigv4_post_vanilla() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let h = sign_headers(
            "POST",
            "https://example.amazonaws.com/",
            &[("host", "example.amazonaws.com")],
            b"",
            &creds,
            "us-east-1",
            "service",
            t,
        )
        .unwrap();
        let auth = h
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.clone())
            .unwrap();
        assert!(
            auth.ends_with(
                "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            ),
            "{auth}"
        );
    }
}
