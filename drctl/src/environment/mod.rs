//! The environment file: regions and their component endpoints, which
//! region is active, notification targets and the state backend.
//!
//! Decoding is strict at every level: unknown keys (with "did you mean"),
//! types and ranges of every component ([`components`]), paths relative to
//! the file ([`paths`]), and, before anything runs, every secret reference
//! resolvable ([`refs`]). Secrets are references only, checked over the
//! whole document by [`crate::secretscan`].

pub mod components;
pub mod paths;
pub mod refs;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::decode::{Ctx, MapReader};
use crate::diag::Diagnostics;
use crate::runbook::parse::is_identifier;
use crate::yaml::{self, Node, SourceFile};

pub const ENV_FIELDS: &[&str] = &[
    "name",
    "description",
    "active_region",
    "regions",
    "dns",
    "notify",
    "state",
    "failover_runbook",
    "lab",
];

#[derive(Debug, Clone)]
pub struct NotifyTarget {
    /// `slack` (any Slack-compatible incoming webhook) or `pagerduty`.
    pub kind: String,
    pub name: String,
    /// JSON form of the target; secret fields hold references.
    pub config: Value,
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub active_region: String,
    pub regions: BTreeMap<String, Value>,
    pub notify: Vec<NotifyTarget>,
    /// Absolute: a relative path in the file is relative to the file.
    pub failover_runbook: Option<String>,
    /// The `state:` section: where drctl's own state lives for this
    /// environment (see [`crate::store::locate`]).
    pub state: Option<crate::store::locate::EnvState>,
    /// Control endpoint of a `drctl lab` (drills inject failures through it).
    pub lab_control: Option<String>,
    /// The whole document as JSON, for `${...}` lookups.
    pub doc: Value,
    pub file: Arc<SourceFile>,
    pub root: Node,
    pub content_hash: String,
}

impl Environment {
    pub fn region(&self, name: &str) -> Option<&Value> {
        self.regions.get(name)
    }

    /// Looks up `region.component` (e.g. `dr`, `postgres`).
    pub fn component(&self, region: &str, component: &str) -> Option<&Value> {
        self.regions.get(region)?.get(component)
    }

    pub fn region_names(&self) -> Vec<&str> {
        self.regions.keys().map(String::as_str).collect()
    }

    /// The other region when there are exactly two: the usual failover target.
    pub fn default_target(&self) -> Option<&str> {
        let others: Vec<&str> = self
            .regions
            .keys()
            .map(String::as_str)
            .filter(|r| *r != self.active_region)
            .collect();
        (others.len() == 1).then(|| others[0])
    }
}

pub fn load_environment(path: &Path) -> Result<(Environment, Diagnostics), Diagnostics> {
    let (file, hash) = yaml::load_source(
        path,
        "environment file",
        "pass an existing file with --env; `drctl lab up` writes one for the lab",
    )?;
    parse_environment(&file, hash)
}

pub fn parse_environment(
    file: &Arc<SourceFile>,
    content_hash: String,
) -> Result<(Environment, Diagnostics), Diagnostics> {
    let mut diags = Diagnostics::default();
    let Some(mut root) = yaml::parse(file, &mut diags) else {
        return Err(diags);
    };
    paths::rebase(&mut root, &paths::base_dir(&file.path), None);
    let mut ctx = Ctx::new(file, &mut diags);
    // Literal secrets anywhere in the file, first: the decoders of the
    // sections below then report nothing twice (see `diag::Diagnostics::push`).
    crate::secretscan::check_document(&mut ctx, &root);
    let Some(mut r) = MapReader::new(&mut ctx, &root, "environment") else {
        return Err(diags);
    };
    let name = r
        .req(&mut ctx, "name")
        .and_then(|n| ctx.string(n, "environment name"))
        .unwrap_or_default();
    r.opt("description")
        .and_then(|n| ctx.string(n, "description"));
    let active_node = r.req(&mut ctx, "active_region");
    let active_region = active_node
        .and_then(|n| ctx.string(n, "active_region"))
        .unwrap_or_default();
    let mut regions = BTreeMap::new();
    if let Some(n) = r.req(&mut ctx, "regions") {
        match n.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    let rname = k.key_text();
                    if !is_identifier(&rname) {
                        ctx.error(
                            "E-NAME",
                            k,
                            format!("region name `{rname}` is not an identifier"),
                            None,
                        );
                    }
                    if v.as_map().is_none() {
                        ctx.expected(v, "a mapping of components", &format!("region `{rname}`"));
                        continue;
                    }
                    components::decode_region(&mut ctx, v, &rname);
                    regions.insert(rname, v.to_json());
                }
            }
            None => ctx.expected(n, "a mapping of regions", "regions"),
        }
    }
    if let Some(n) = active_node {
        if !active_region.is_empty() && !regions.is_empty() && !regions.contains_key(&active_region)
        {
            let names: Vec<&str> = regions.keys().map(String::as_str).collect();
            ctx.error(
                "E-UNKNOWN-REGION",
                n,
                format!("active_region `{active_region}` is not one of the regions"),
                Some(format!("regions: {}", names.join(", "))),
            );
        }
    }
    if let Some(d) = r.opt("dns") {
        if d.as_map().is_none() {
            ctx.expected(d, "a mapping", "dns");
        } else {
            let names: Vec<String> = regions.keys().cloned().collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            crate::dns::config::decode(&mut ctx, d, Some(&refs));
        }
    }
    let notify = r
        .opt("notify")
        .map(|n| decode_notify(&mut ctx, n))
        .unwrap_or_default();
    let mut state = None;
    if let Some(s) = r.opt("state") {
        if let Some(mut sr) = MapReader::new(&mut ctx, s, "state") {
            let backend = sr
                .opt("backend")
                .and_then(|b| ctx.one_of(b, &["local", "postgres"], "state.backend"));
            let dir = sr.opt("dir").and_then(|n| ctx.string(n, "state.dir"));
            let url_node = sr.opt("url");
            let url = url_node.and_then(|n| ctx.string(n, "state.url"));
            let password = sr
                .opt("password")
                .and_then(|n| ctx.secret_ref(n, "state.password"));
            if let (Some(u), Some(n)) = (&url, url_node) {
                if let Err(e) = crate::store::StateLocation::parse(u, None) {
                    ctx.error(
                        "E-VALUE",
                        n,
                        format!("state.url: {e}"),
                        Some("write `url: postgresql://USER@HOST:PORT/DB?sslmode=verify-full` and the password as `password: env:NAME`".into()),
                    );
                }
            }
            if dir.is_some() && url.is_some() {
                ctx.error(
                    "E-VALUE",
                    s,
                    "state: give either `dir:` or `url:`, not both".to_string(),
                    None,
                );
            }
            if backend == Some("postgres") && url.is_none() {
                ctx.error(
                    "E-VALUE",
                    s,
                    "state: backend postgres needs `url:`".to_string(),
                    None,
                );
            }
            sr.finish(&mut ctx);
            state = Some(crate::store::locate::EnvState {
                url,
                dir,
                password,
                base: Path::new(&file.path)
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            });
        }
    }
    let mut lab_control = None;
    if let Some(l) = r.opt("lab") {
        if let Some(mut lr) = MapReader::new(&mut ctx, l, "lab") {
            lab_control = lr
                .req(&mut ctx, "control")
                .and_then(|n| ctx.string(n, "lab.control"));
            lr.opt("dir").and_then(|n| ctx.string(n, "lab.dir"));
            lr.finish(&mut ctx);
        }
    }
    let failover_runbook = r
        .opt("failover_runbook")
        .and_then(|n| ctx.string(n, "failover_runbook"));
    r.finish(&mut ctx);
    let env = Environment {
        name,
        active_region,
        regions,
        notify,
        failover_runbook,
        state,
        lab_control,
        doc: root.to_json(),
        file: file.clone(),
        root,
        content_hash,
    };
    Ok((env, diags))
}

fn decode_notify(ctx: &mut Ctx<'_>, node: &Node) -> Vec<NotifyTarget> {
    let Some(items) = node.as_seq() else {
        ctx.expected(node, "a list of notification targets", "notify");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let what = format!("notify[{i}]");
        let Some(mut r) = MapReader::new(ctx, it, what.clone()) else {
            continue;
        };
        let kind = r
            .req(ctx, "type")
            .and_then(|n| ctx.one_of(n, &["slack", "pagerduty"], &format!("{what}.type")));
        let name = r
            .opt("name")
            .and_then(|n| ctx.string(n, "name"))
            .unwrap_or_else(|| kind.unwrap_or("notify").to_string());
        match kind {
            Some("slack") => {
                r.req(ctx, "webhook_url");
                r.allow(&["channel"]);
            }
            Some("pagerduty") => {
                r.req(ctx, "routing_key");
                r.allow(&["url", "severity"]);
            }
            _ => r.allow(&["webhook_url", "channel", "routing_key", "url", "severity"]),
        }
        r.finish(ctx);
        if let Some(k) = kind {
            out.push(NotifyTarget {
                kind: k.to_string(),
                name,
                config: it.to_json(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_secret_is_rejected() {
        let f = SourceFile::new(
            "env.yaml",
            "name: e\nactive_region: a\nregions:\n  a:\n    postgres: {host: h, password: hunter2}\n  b: {}\n",
        );
        let (_e, d) = parse_environment(&f, String::new()).unwrap();
        assert_eq!(d.error_count(), 1, "{}", d.render());
        assert!(d.render().contains("env.yaml:5:35"), "{}", d.render());
    }

    #[test]
    fn paths_resolve_against_the_file_not_the_working_directory() {
        let f = SourceFile::new(
            "/etc/drctl/envs/prod.yaml",
            "name: e\nactive_region: a\nfailover_runbook: ../runbooks/failover.yaml\nregions:\n  a:\n    postgres: {host: h, password: \"file:pg.pw\"}\n  b: {}\n",
        );
        let (e, d) = parse_environment(&f, String::new()).unwrap();
        assert!(!d.has_errors(), "{}", d.render());
        assert_eq!(
            e.failover_runbook.as_deref(),
            Some("/etc/drctl/runbooks/failover.yaml")
        );
        assert_eq!(
            e.component("a", "postgres").unwrap()["password"],
            "file:/etc/drctl/envs/pg.pw"
        );
    }

    #[test]
    fn unknown_active_region() {
        let f = SourceFile::new(
            "env.yaml",
            "name: e\nactive_region: c\nregions:\n  a: {}\n  b: {}\n",
        );
        let (e, d) = parse_environment(&f, String::new()).unwrap();
        assert!(d.render().contains("E-UNKNOWN-REGION"));
        assert_eq!(e.default_target(), None);
    }
}
