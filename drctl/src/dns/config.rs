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
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub provider: String,
    pub api_url: String,
    pub api_key: Option<SecretRef>,
    pub server_id: String,
    pub zone: String,
    pub nameservers: Vec<String>,
    pub records: Vec<DnsRecord>,
    pub timeout: Duration,
}

impl DnsConfig {
    /// The record sets a region should have.
    pub fn desired(&self, region: &str) -> Vec<RecordSet> {
        self.records
            .iter()
            .filter_map(|r| {
                r.values.get(region).map(|v| RecordSet {
                    name: r.name.clone(),
                    rtype: r.rtype.clone(),
                    ttl: r.ttl,
                    values: super::normalize(v),
                })
            })
            .collect()
    }
}

fn fqdn(s: &str) -> String {
    if s.ends_with('.') {
        s.to_ascii_lowercase()
    } else {
        format!("{}.", s.to_ascii_lowercase())
    }
}

pub fn decode(ctx: &mut Ctx<'_>, node: &Node, regions: Option<&[&str]>) -> Option<DnsConfig> {
    let mut r = MapReader::new(ctx, node, "dns")?;
    let provider = r
        .req(ctx, "provider")
        .and_then(|n| ctx.one_of(n, &["powerdns"], "dns.provider"));
    let api_url = r
        .req(ctx, "api_url")
        .and_then(|n| ctx.string(n, "dns.api_url"));
    let api_key = r
        .opt("api_key")
        .and_then(|n| ctx.secret_ref(n, "dns.api_key"));
    let server_id = r
        .opt("server_id")
        .and_then(|n| ctx.string(n, "dns.server_id"))
        .unwrap_or_else(|| "localhost".into());
    let zone = r
        .req(ctx, "zone")
        .and_then(|n| ctx.string(n, "dns.zone"))
        .map(|z| fqdn(&z));
    let nameservers: Vec<String> = r
        .req(ctx, "nameservers")
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
            let mut values = BTreeMap::new();
            if let Some(vn) = rr.req(ctx, "values") {
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
                });
            }
        }
    }
    r.finish(ctx);
    Some(DnsConfig {
        provider: provider?.to_string(),
        api_url: api_url?,
        api_key,
        server_id,
        zone: zone?,
        nameservers,
        records,
        timeout,
    })
}
