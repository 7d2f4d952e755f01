//! Direction and identity: before a directional run (failover, drill)
//! acts, the target must be a real other region and its components must be
//! other servers than the source's.
//!
//! Two mistakes hurt a healthy system here. `--region primary` while
//! `primary` is active would fence the only live primary and "promote" it
//! as a no-op; an environment whose `dr.postgres` names the same server as
//! `primary.postgres` (another host name, an IP, a copy-paste) would fence
//! and promote one server. Both are refused before step 1.
//!
//! Identity is decided in three ways, cheapest first:
//! - the same `host:port` written in both regions (after lower-casing);
//! - host names that resolve to a common address with the same port;
//! - for PostgreSQL, when both servers answer: the same system identifier
//!   *and* the same postmaster start time. A streaming standby shares its
//!   primary's system identifier, so that alone would be wrong; the start
//!   time tells two processes apart.
//!
//! # Caveats
//! A server that does not answer (the dead primary of a real incident) is
//! compared by address only; that is the case failover exists for.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::environment::Environment;

/// How long one name lookup or one identity query may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Components whose servers must differ between source and target.
const COMPONENTS: &[&str] = &["postgres", "immudb", "app"];

#[derive(Debug, Error)]
pub enum TopologyError {
    #[error("`{target}` is already the active region of environment `{env}`: a failover moves service away from the active region, not onto it")]
    TargetIsActive {
        env: String,
        target: String,
        others: Vec<String>,
    },
    #[error("`{component}` of region `{source_region}` and of region `{target}` are the same server ({why})")]
    SameServer {
        component: String,
        source_region: String,
        target: String,
        why: String,
    },
}

impl TopologyError {
    /// What to do next.
    pub fn hint(&self) -> String {
        match self {
            TopologyError::TargetIsActive { others, .. } if others.len() == 1 => {
                format!("did you mean `--region {}`?", others[0])
            }
            TopologyError::TargetIsActive { others, .. } => {
                format!("other regions: {}", others.join(", "))
            }
            TopologyError::SameServer { component, .. } => format!(
                "fix `regions.*.{component}` in the environment file: each region must name its own server"
            ),
        }
    }
}

/// The target must differ from the active (source) region.
pub fn check_direction(env: &Environment, target: &str) -> Result<(), TopologyError> {
    if target != env.active_region {
        return Ok(());
    }
    Err(TopologyError::TargetIsActive {
        env: env.name.clone(),
        target: target.to_string(),
        others: env
            .region_names()
            .into_iter()
            .filter(|r| *r != env.active_region)
            .map(str::to_string)
            .collect(),
    })
}

/// `host` and `port` of a component entry: a mapping with `host`/`port`
/// (PostgreSQL) or one with a `url`.
fn endpoint(component: &str, v: &Value) -> Option<(String, u16)> {
    if let Some(host) = v.get("host").and_then(Value::as_str) {
        let port = v
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(default_port(component));
        return Some((host.to_ascii_lowercase(), port));
    }
    let url = reqwest::Url::parse(v.get("url").and_then(Value::as_str)?).ok()?;
    let host = url
        .host_str()?
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    Some((host, url.port_or_known_default()?))
}

fn default_port(component: &str) -> u16 {
    match component {
        "postgres" => 5432,
        "immudb" => 8080,
        _ => 443,
    }
}

async fn resolve(host: &str, port: u16) -> BTreeSet<SocketAddr> {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => addrs.collect(),
        _ => BTreeSet::new(),
    }
}

/// Refuses a target whose components are the source's servers.
pub async fn check_identity(
    env: &Environment,
    source: &str,
    target: &str,
) -> Result<(), TopologyError> {
    for component in COMPONENTS {
        let (Some(s), Some(t)) = (
            env.component(source, component),
            env.component(target, component),
        ) else {
            continue;
        };
        let (Some(se), Some(te)) = (endpoint(component, s), endpoint(component, t)) else {
            continue;
        };
        let same = |why: String| TopologyError::SameServer {
            component: component.to_string(),
            source_region: source.to_string(),
            target: target.to_string(),
            why,
        };
        if se == te {
            return Err(same(format!("both are {}:{}", se.0, se.1)));
        }
        if se.1 == te.1 {
            let (sa, ta) = (resolve(&se.0, se.1).await, resolve(&te.0, te.1).await);
            if let Some(a) = sa.intersection(&ta).next() {
                return Err(same(format!(
                    "{}:{} and {}:{} both resolve to {a}",
                    se.0, se.1, te.0, te.1
                )));
            }
        }
        if *component == "postgres" {
            postgres_identity(env, source, target).await?;
        }
    }
    Ok(())
}

/// System identifier and postmaster start time of a reachable server.
async fn pg_fingerprint(server: &crate::pgconn::PgServer) -> Option<(String, String)> {
    let client = server.connect(PROBE_TIMEOUT).await.ok()?;
    let q = client.query_one(
        "select system_identifier::text, pg_postmaster_start_time()::text \
         from pg_control_system()",
        &[],
    );
    let row = tokio::time::timeout(PROBE_TIMEOUT, q).await.ok()?.ok()?;
    Some((row.try_get(0).ok()?, row.try_get(1).ok()?))
}

async fn postgres_identity(
    env: &Environment,
    source: &str,
    target: &str,
) -> Result<(), TopologyError> {
    let (Some(s), Some(t)) = (server_of(env, source), server_of(env, target)) else {
        return Ok(());
    };
    let (fs, ft) = tokio::join!(pg_fingerprint(&s), pg_fingerprint(&t));
    match (fs, ft) {
        (Some(a), Some(b)) if a == b => Err(TopologyError::SameServer {
            component: "postgres".into(),
            source_region: source.into(),
            target: target.into(),
            why: format!(
                "{} and {} answer as one server: system identifier {}, started {}",
                s.addr(),
                t.addr(),
                a.0,
                a.1
            ),
        }),
        _ => Ok(()),
    }
}

/// The region's `postgres` entry as a server, decoded from the file.
pub fn server_of(env: &Environment, region: &str) -> Option<crate::pgconn::PgServer> {
    let node = env.root.get("regions")?.get(region)?.get("postgres")?;
    let mut diags = crate::diag::Diagnostics::default();
    let mut ctx = crate::decode::Ctx::new(&env.file, &mut diags);
    crate::pgconn::PgServer::decode(&mut ctx, node, "postgres")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> Environment {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env.yaml");
        std::fs::write(&p, text).unwrap();
        crate::environment::load_environment(&p)
            .map(|(e, _)| e)
            .unwrap_or_else(|d| panic!("{d:?}"))
    }

    const TWO: &str = "name: e\nactive_region: primary\nregions:\n  primary:\n    postgres: {host: db1.internal, port: 5432, user: u, password: env:PGPASSWORD}\n  dr:\n    postgres: {host: DB1.internal, port: 5432, user: u, password: env:PGPASSWORD}\n";

    #[test]
    fn the_active_region_is_not_a_target() {
        let e = env(TWO);
        let err = check_direction(&e, "primary").unwrap_err();
        assert_eq!(err.hint(), "did you mean `--region dr`?");
        assert!(check_direction(&e, "dr").is_ok());
    }

    #[tokio::test]
    async fn the_same_host_in_two_regions_is_one_server() {
        let e = env(TWO);
        let err = check_identity(&e, "primary", "dr").await.unwrap_err();
        assert!(
            err.to_string().contains("both are db1.internal:5432"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn names_that_resolve_alike_are_one_server() {
        let text = TWO
            .replace("DB1.internal", "127.0.0.1")
            .replace("db1.internal", "localhost");
        let err = check_identity(&env(&text), "primary", "dr")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("both resolve to 127.0.0.1:5432"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn different_servers_pass() {
        let text = TWO.replace("DB1.internal", "db2.internal");
        // Neither name resolves here: compared by address only.
        assert!(check_identity(&env(&text), "primary", "dr").await.is_ok());
    }
}
