//! The environment's `dns` section, decoded with located diagnostics (so
//! `drctl validate --env` reports its problems like a runbook's).

use std::collections::BTreeMap;
use std::time::Duration;

use super::RecordSet;
use crate::decode::{Ctx, MapReader};
use crate::secret::SecretRef;
use crate::yaml::Node;

#[derive(Debug, Clone)]
pub struct DnsRecord {
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    pub values: BTreeMap<String, Vec<String>>,
    /// A drill-only name (`drill: true`): the one kind of record an
    /// isolated drill may change (it points it at its clone). Region
    /// switches leave it alone, and it needs no per-region values.
    pub drill: bool,
}

impl DnsRecord {
    /// `name type`, the same key as [`super::RecordSet::key`].
    pub fn key(&self) -> String {
        format!("{} {}", self.name, self.rtype)
    }
}

/// Provider-specific settings. Secrets are references.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    PowerDns {
        api_url: String,
        api_key: Option<SecretRef>,
        server_id: String,
    },
    /// RFC 2136 dynamic update signed with TSIG, sent to `server`.
    Rfc2136 {
        server: String,
        key_name: String,
        algorithm: String,
        secret: SecretRef,
    },
    /// AWS Route 53; credentials come from the standard AWS environment
    /// variables or shared credentials file, never from this file.
    Route53 {
        hosted_zone_id: String,
        endpoint: String,
        region: String,
    },
    /// Google Cloud DNS; a service-account key file (`credentials`) or,
    /// without one, the GCE metadata server.
    CloudDns {
        project: String,
        managed_zone: String,
        endpoint: String,
        credentials: Option<SecretRef>,
        token_uri: Option<String>,
        metadata_url: String,
    },
}

impl ProviderConfig {
    pub fn name(&self) -> &'static str {
        match self {
            ProviderConfig::PowerDns { .. } => "powerdns",
            ProviderConfig::Rfc2136 { .. } => "rfc2136",
            ProviderConfig::Route53 { .. } => "route53",
            ProviderConfig::CloudDns { .. } => "clouddns",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub provider: ProviderConfig,
    pub zone: String,
    /// Authoritative servers queried directly to verify a switch.
    pub nameservers: Vec<String>,
    pub records: Vec<DnsRecord>,
    pub timeout: Duration,
}

impl DnsConfig {
    /// The record sets a region should have.
    pub fn desired(&self, region: &str) -> Vec<RecordSet> {
        self.records
            .iter()
            .filter(|r| !r.drill)
            .filter_map(|r| {
                r.values.get(region).map(|v| RecordSet {
                    name: r.name.clone(),
                    rtype: r.rtype.clone(),
                    ttl: r.ttl,
                    values: crate::dnsquery::normalize(v),
                })
            })
            .collect()
    }
}

/// Refuses, in an isolated drill, a change to any record that is not a
/// declared drill record: called by every DNS-changing action before it
/// changes anything. `keys` are `name type` as [`super::RecordSet::key`].
pub fn guard_isolated(
    cfg: &DnsConfig,
    isolated: bool,
    keys: &[String],
) -> Result<(), crate::action::ActionError> {
    if !isolated {
        return Ok(());
    }
    let production: Vec<&String> = keys
        .iter()
        .filter(|k| !cfg.records.iter().any(|r| r.drill && r.key() == **k))
        .collect();
    if production.is_empty() {
        return Ok(());
    }
    Err(crate::action::ActionError::Refused {
        message: format!(
            "an isolated drill changes only drill records; {} {} not declared `drill: true`",
            production
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if production.len() == 1 { "is" } else { "are" }
        ),
        hint: "production DNS is never changed by an isolated drill: declare a drill-only name (dns.records[] with `drill: true`) and point that one".into(),
    })
}

pub fn fqdn(s: &str) -> String {
    if s.ends_with('.') {
        s.to_ascii_lowercase()
    } else {
        format!("{}.", s.to_ascii_lowercase())
    }
}

fn req_str(ctx: &mut Ctx<'_>, r: &mut MapReader<'_>, key: &'static str) -> Option<String> {
    r.req(ctx, key).and_then(|n| ctx.string(n, key))
}

fn opt_str(ctx: &mut Ctx<'_>, r: &mut MapReader<'_>, key: &'static str) -> Option<String> {
    r.opt(key).and_then(|n| ctx.string(n, key))
}

pub fn decode(ctx: &mut Ctx<'_>, node: &Node, regions: Option<&[&str]>) -> Option<DnsConfig> {
    let mut r = MapReader::new(ctx, node, "dns")?;
    let kind = r.req(ctx, "provider").and_then(|n| {
        ctx.one_of(
            n,
            &["powerdns", "rfc2136", "route53", "clouddns"],
            "dns.provider",
        )
    });
    let provider = match kind {
        Some("powerdns") => {
            let api_url = req_str(ctx, &mut r, "api_url");
            let api_key = r
                .opt("api_key")
                .and_then(|n| ctx.secret_ref(n, "dns.api_key"));
            let server_id = opt_str(ctx, &mut r, "server_id").unwrap_or_else(|| "localhost".into());
            api_url.map(|api_url| ProviderConfig::PowerDns {
                api_url,
                api_key,
                server_id,
            })
        }
        Some("rfc2136") => {
            let server = req_str(ctx, &mut r, "server");
            let key_name = req_str(ctx, &mut r, "tsig_key_name");
            let algorithm = r
                .opt("tsig_algorithm")
                .and_then(|n| {
                    ctx.one_of(
                        n,
                        &["hmac-sha256", "hmac-sha384", "hmac-sha512"],
                        "dns.tsig_algorithm",
                    )
                })
                .unwrap_or("hmac-sha256")
                .to_string();
            let secret = r
                .req(ctx, "tsig_secret")
                .and_then(|n| ctx.secret_ref(n, "dns.tsig_secret"));
            match (server, key_name, secret) {
                (Some(server), Some(key_name), Some(secret)) => Some(ProviderConfig::Rfc2136 {
                    server,
                    key_name,
                    algorithm,
                    secret,
                }),
                _ => None,
            }
        }
        Some("route53") => {
            let hosted_zone_id = req_str(ctx, &mut r, "hosted_zone_id");
            let endpoint = opt_str(ctx, &mut r, "endpoint")
                .unwrap_or_else(|| "https://route53.amazonaws.com".into());
            let region = opt_str(ctx, &mut r, "region").unwrap_or_else(|| "us-east-1".into());
            hosted_zone_id.map(|hosted_zone_id| ProviderConfig::Route53 {
                hosted_zone_id,
                endpoint,
                region,
            })
        }
        Some("clouddns") => {
            let project = req_str(ctx, &mut r, "project");
            let managed_zone = req_str(ctx, &mut r, "managed_zone");
            let endpoint = opt_str(ctx, &mut r, "endpoint")
                .unwrap_or_else(|| "https://dns.googleapis.com".into());
            let credentials = r
                .opt("credentials")
                .and_then(|n| ctx.secret_ref(n, "dns.credentials"));
            let token_uri = opt_str(ctx, &mut r, "token_uri");
            let metadata_url = opt_str(ctx, &mut r, "metadata_url")
                .unwrap_or_else(|| "http://metadata.google.internal".into());
            match (project, managed_zone) {
                (Some(project), Some(managed_zone)) => Some(ProviderConfig::CloudDns {
                    project,
                    managed_zone,
                    endpoint,
                    credentials,
                    token_uri,
                    metadata_url,
                }),
                _ => None,
            }
        }
        _ => {
            r.allow(&[
                "api_url",
                "api_key",
                "server_id",
                "server",
                "tsig_key_name",
                "tsig_algorithm",
                "tsig_secret",
                "hosted_zone_id",
                "endpoint",
                "region",
                "project",
                "managed_zone",
                "credentials",
                "token_uri",
                "metadata_url",
            ]);
            None
        }
    };
    let zone = req_str(ctx, &mut r, "zone").map(|z| fqdn(&z));
    // Self-hosted servers are verified by asking them; for cloud providers
    // the list is optional (their change status and a read-back verify).
    let ns_node = if matches!(kind, Some("powerdns" | "rfc2136")) {
        r.req(ctx, "nameservers")
    } else {
        r.opt("nameservers")
    };
    let nameservers: Vec<String> = ns_node
        .and_then(|n| ctx.string_list(n, "dns.nameservers"))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(s, n)| {
            let ok = s.parse::<std::net::SocketAddr>().is_ok();
            if !ok {
                ctx.error(
                    "E-VALUE",
                    &n,
                    format!("nameserver `{s}` is not IP:PORT"),
                    Some("e.g. 10.0.0.53:53".into()),
                );
            }
            ok.then_some(s)
        })
        .collect();
    let timeout = r
        .opt("timeout")
        .and_then(|n| ctx.duration(n, "dns.timeout"))
        .unwrap_or(Duration::from_secs(2));
    let mut records = Vec::new();
    if let Some(list) = r.req(ctx, "records") {
        for it in list.as_seq().unwrap_or(&[]) {
            let Some(mut rr) = MapReader::new(ctx, it, "dns record") else {
                continue;
            };
            let name = rr
                .req(ctx, "name")
                .and_then(|n| ctx.string(n, "name"))
                .map(|n| fqdn(&n));
            let rtype = rr
                .req(ctx, "type")
                .and_then(|n| ctx.one_of(n, &["A", "AAAA", "CNAME"], "type"));
            let ttl = rr.opt("ttl").and_then(|n| ctx.uint(n, "ttl")).unwrap_or(60) as u32;
            let drill = rr
                .opt("drill")
                .and_then(|n| ctx.boolean(n, "drill"))
                .unwrap_or(false);
            let mut values = BTreeMap::new();
            let values_node = if drill {
                rr.opt("values")
            } else {
                rr.req(ctx, "values")
            };
            if let Some(vn) = values_node {
                for (k, v) in vn.as_map().unwrap_or(&[]) {
                    let region = k.key_text();
                    if let Some(rs) = regions {
                        if !rs.contains(&region.as_str()) {
                            ctx.error(
                                "E-UNKNOWN-REGION",
                                k,
                                format!("dns record values for unknown region `{region}`"),
                                Some(format!("regions: {}", rs.join(", "))),
                            );
                        }
                    }
                    let vals: Vec<String> = ctx
                        .string_list(v, "values")
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(s, _)| s)
                        .collect();
                    for val in &vals {
                        let bad = match rtype {
                            Some("A") => val.parse::<std::net::Ipv4Addr>().is_err(),
                            Some("AAAA") => val.parse::<std::net::Ipv6Addr>().is_err(),
                            _ => false,
                        };
                        if bad {
                            ctx.error(
                                "E-VALUE",
                                v,
                                format!("`{val}` is not a valid {} value", rtype.unwrap_or("")),
                                None,
                            );
                        }
                    }
                    values.insert(region, vals);
                }
            }
            rr.finish(ctx);
            if let (Some(name), Some(rtype)) = (name, rtype) {
                records.push(DnsRecord {
                    name,
                    rtype: rtype.to_string(),
                    ttl,
                    values,
                    drill,
                });
            }
        }
    }
    r.finish(ctx);
    Some(DnsConfig {
        provider: provider?,
        zone: zone?,
        nameservers,
        records,
        timeout,
    })
}
