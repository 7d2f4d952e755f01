//! The components a region may hold, each decoded by the module that uses
//! it, so a typo (`postgress:`), a port of `"abc"` or `99999`, or a
//! duration without a unit is found by `validate` and `plan`, not by the
//! step that first touches the component in the middle of an incident.

use crate::decode::{Ctx, MapReader};
use crate::diag::did_you_mean;
use crate::yaml::Node;

/// Every component a region may name. A region holds any subset.
pub const COMPONENTS: &[&str] = &["postgres", "app", "immudb", "kube", "backups", "node"];

/// Decodes each component of region `rname` strictly, reporting all problems.
pub fn decode_region(ctx: &mut Ctx<'_>, region: &Node, rname: &str) {
    let Some(entries) = region.as_map() else {
        return;
    };
    for (k, v) in entries {
        let key = k.key_text();
        let what = format!("regions.{rname}.{key}");
        match key.as_str() {
            "postgres" => {
                crate::pgconn::PgServer::decode(ctx, v, &what);
            }
            "app" => decode_app(ctx, v, &what),
            "immudb" => {
                crate::immudb::action::ImmudbServer::decode(ctx, v, &what);
            }
            "kube" => {
                crate::kube::config::decode(ctx, v, &what);
            }
            "backups" => {
                crate::backup::source::decode_backups(ctx, v, &what);
            }
            "node" => crate::postgres::pgctl::decode(ctx, v, &what),
            _ => {
                let hint = match did_you_mean(&key, COMPONENTS.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("a region holds: {}", COMPONENTS.join(", ")),
                };
                ctx.error(
                    "E-UNKNOWN-FIELD",
                    k,
                    format!("region `{rname}`: unknown component `{key}`"),
                    Some(hint),
                );
            }
        }
    }
}

/// `app`: where the service answers (`url`, used by health checks) and the
/// name users reach it by (`public_url`, through DNS).
fn decode_app(ctx: &mut Ctx<'_>, node: &Node, what: &str) {
    let Some(mut r) = MapReader::new(ctx, node, what.to_string()) else {
        return;
    };
    for (key, required) in [("url", true), ("public_url", false)] {
        let n = if required {
            r.req(ctx, key)
        } else {
            r.opt(key)
        };
        let Some(n) = n else { continue };
        let Some(s) = ctx.string(n, &format!("{what}.{key}")) else {
            continue;
        };
        if let Err(e) = reqwest::Url::parse(&s) {
            ctx.error(
                "E-VALUE",
                n,
                format!("{what}.{key}: `{s}` is not a URL ({e})"),
                Some("write it with a scheme: https://app.example.com".into()),
            );
        } else if !(s.starts_with("http://") || s.starts_with("https://")) {
            ctx.error(
                "E-VALUE",
                n,
                format!("{what}.{key}: `{s}` is not an http(s) URL"),
                Some("write it with a scheme: https://app.example.com".into()),
            );
        }
    }
    r.opt("description")
        .and_then(|n| ctx.string(n, &format!("{what}.description")));
    r.finish(ctx);
}
