//! `drill.smoke`: the drill endpoint works, reached the way an
//! application would reach it: the drill DNS name resolved at every
//! authoritative server (they must agree), then a session on the clone at
//! that address: not in recovery, a write and its read-back, the newest
//! heartbeat readable. A proof of recovery: the isolated drill's RTO ends
//! here.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::action::{ActionError, ActionKind, Outputs, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::pgconn::{PgServer, SslMode};
use crate::yaml::Node;

#[derive(Clone, Copy)]
pub struct DrillSmoke;

pub struct Params {
    name: String,
    port: u16,
    /// Credentials and database (its host and port are replaced).
    server: PgServer,
}

#[async_trait]
impl ActionKind for DrillSmoke {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "drill.smoke"
    }
    fn summary(&self) -> &'static str {
        "Write and read the drill endpoint through the drill DNS name (resolved at every authoritative server)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["address", "rows", "newest_heartbeat_id", "summary"]
    }
    fn proves_recovery(&self, _params: &Value) -> bool {
        true
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "drill.smoke")?;
        let name = r.req(ctx, "name").and_then(|n| ctx.string(n, "name"));
        let port = r.req(ctx, "port").and_then(|n| {
            if ctx.deferred(n) {
                Some(1)
            } else {
                ctx.uint(n, "port")
            }
        });
        let server = crate::postgres::server_field(ctx, &mut r, "server", true);
        r.finish(ctx);
        let port = match port {
            Some(p) if (1..=65535).contains(&p) => p as u16,
            _ => return None,
        };
        Some(Params {
            name: name?,
            port,
            server: server?,
        })
    }
    fn describe(&self, params: &Value) -> String {
        format!(
            "write and read the drill endpoint through {}",
            params["name"].as_str().unwrap_or("the drill name")
        )
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let cfg = super::dns::env_config(ctx.env()?)?;
        let name = crate::dns::config::fqdn(&p.name);
        let rtype = cfg
            .records
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.rtype.clone())
            .unwrap_or_else(|| "A".into());
        let mut seen: Option<Vec<String>> = None;
        for ns in &cfg.nameservers {
            let v = crate::dnsquery::answers(ns, &name, &rtype, cfg.timeout)
                .await
                .map_err(|e| ActionError::failed(e.to_string()))?;
            if v.is_empty() {
                return Err(ActionError::failed(format!(
                    "{ns} has no {rtype} for {name}"
                )));
            }
            match &seen {
                Some(s) if s != &v => {
                    return Err(ActionError::failed(format!(
                        "the authoritative servers disagree on {name}: {s:?} and {v:?} ({ns})"
                    )))
                }
                _ => seen = Some(v),
            }
        }
        let addrs = seen.ok_or_else(|| ActionError::Config {
            message: "the environment names no authoritative DNS server".into(),
            hint: "set dns.nameservers".into(),
        })?;
        let server = PgServer {
            host: addrs[0].clone(),
            port: p.port,
            // The clone serves loopback only, TLS off (its certificate
            // names production hosts, not the drill name).
            sslmode: SslMode::Disable,
            sslrootcert: None,
            ..p.server.clone()
        };
        let limit = ctx.remaining().min(Duration::from_secs(10));
        let c = server.connect(limit).await?;
        let addr = server.addr();
        let rows = crate::pgconn::query(
            &c,
            &addr,
            "drill smoke",
            "select pg_is_in_recovery()",
            limit,
        )
        .await?;
        if rows.first().map(|r| r.get::<_, bool>(0)) != Some(false) {
            return Err(ActionError::failed(format!(
                "{addr} ({name}) is in recovery: not promoted"
            )));
        }
        let run = ctx.run_id.replace('\'', "");
        crate::pgconn::execute(
            &c,
            &addr,
            "drill smoke write",
            &format!("create table if not exists drctl_drill_smoke (id bigserial primary key, run text not null, at timestamptz not null default now()); insert into drctl_drill_smoke (run) values ('{run}')"),
            limit,
        )
        .await?;
        let n: i64 = crate::pgconn::query(
            &c,
            &addr,
            "drill smoke read",
            &format!("select count(*) from drctl_drill_smoke where run = '{run}'"),
            limit,
        )
        .await?
        .first()
        .map(|r| r.get(0))
        .unwrap_or(0);
        if n < 1 {
            return Err(ActionError::failed(
                "the smoke row written to the clone was not read back",
            ));
        }
        let beat = crate::postgres::ops::newest_beat(&c, &addr, limit).await?;
        let mut o = Outputs::new();
        o.insert("address".into(), json!(addr));
        o.insert("rows".into(), json!(n));
        o.insert("newest_heartbeat_id".into(), json!(beat.map(|b| b.id)));
        o.insert(
            "summary".into(),
            json!(format!(
                "{name} -> {addr}: promoted, write and read-back ok"
            )),
        );
        Ok(o)
    }
}
