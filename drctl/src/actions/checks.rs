//! `checks.run`: run a check set file (`checks/*.yaml`) as one step, all
//! checks concurrently; the step passes when every check passes.
//!
//! A check set is reusable across runbooks and environments: it refers only
//! to `${vars.NAME}`, and the step passes the values
//! (`vars: {app_url: "${target.app.url}"}`). Check files are validated with
//! locations in the check file itself.
//!
//! ```yaml
//! name: smoke
//! checks:
//!   - id: app-health
//!     action: http.check
//!     with: {url: "${vars.app_url}/health", json_pointer: /role, equals: primary}
//! ```

use std::path::{Path, PathBuf};

use std::time::Instant;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use crate::action::{ActionError, ActionKind, Outputs, Preflight, Registry, StepContext};
use crate::decode::{Ctx, MapReader};
use crate::diag::{did_you_mean, Diagnostics};
use crate::expr::Scope;
use crate::yaml::{self, Kind, Node, SourceFile};

#[derive(Clone, Copy)]
pub struct ChecksRun;

pub struct Check {
    pub id: String,
    pub action: String,
    pub with: Node,
}

/// The step's `with:`, decoded.
pub struct Params {
    file: String,
    vars: Map<String, Value>,
}

/// Resolves a check file path relative to the runbook's directory.
pub fn resolve_path(base: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Loads and validates a check set against the kinds in `kinds`; `vars`
/// are the names the step passes (`None` when validating the file on its
/// own: any `vars.NAME` is allowed).
pub fn load(
    path: &Path,
    vars: Option<&[String]>,
    kinds: &Registry,
    diags: &mut Diagnostics,
) -> Option<Vec<Check>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let f = SourceFile::new(path.display().to_string(), "");
            diags.push(crate::diag::Diagnostic::error(
                "E-IO",
                &f,
                Default::default(),
                format!("cannot read check set: {e}"),
            ));
            return None;
        }
    };
    let file = SourceFile::new(path.display().to_string(), text);
    let root = yaml::parse(&file, diags)?;
    let mut ctx = Ctx::new(&file, diags);
    ctx.defer_refs = true;
    crate::secretscan::check_document(&mut ctx, &root);
    let mut r = MapReader::new(&mut ctx, &root, "check set")?;
    r.opt("name").and_then(|n| ctx.string(n, "name"));
    r.opt("description")
        .and_then(|n| ctx.string(n, "description"));
    let mut out = Vec::new();
    if let Some(items) = r.req(&mut ctx, "checks") {
        for it in items.as_seq().unwrap_or(&[]) {
            let Some(mut cr) = MapReader::new(&mut ctx, it, "check") else {
                continue;
            };
            let id = cr
                .req(&mut ctx, "id")
                .and_then(|n| ctx.string(n, "check id"));
            let action_node = cr.req(&mut ctx, "action");
            let action = action_node.and_then(|n| ctx.string(n, "action"));
            let with = cr
                .opt("with")
                .cloned()
                .unwrap_or_else(|| Node::new(Kind::Map(Vec::new()), it.span));
            cr.opt("description");
            cr.finish(&mut ctx);
            let (Some(id), Some(action), Some(an)) = (id, action, action_node) else {
                continue;
            };
            match kinds.get(&action).filter(|a| a.kind() != "checks.run") {
                Some(a) => a.validate(&mut ctx, &with, kinds),
                None => ctx.error(
                    "E-UNKNOWN-ACTION",
                    an,
                    format!("unknown check action `{action}`"),
                    Some("checks use http.check, postgres.query, exec, wait, ...".into()),
                ),
            }
            check_vars(&mut ctx, &with, vars);
            out.push(Check { id, action, with });
        }
    }
    r.finish(&mut ctx);
    Some(out)
}

fn check_vars(ctx: &mut Ctx<'_>, node: &Node, vars: Option<&[String]>) {
    match &node.kind {
        Kind::Str(s) => {
            let refs = match crate::expr::refs_in(s) {
                Ok(r) => r,
                Err(e) => {
                    ctx.error("E-EXPR", node, e.to_string(), None);
                    return;
                }
            };
            for (path, _) in refs {
                let ok = path[0] == "vars"
                    && path
                        .get(1)
                        .is_some_and(|v| vars.is_none_or(|vs| vs.contains(v)));
                let vars = vars.unwrap_or(&[]);
                if !ok {
                    let hint = match path
                        .get(1)
                        .and_then(|v| did_you_mean(v, vars.iter().map(String::as_str)))
                    {
                        Some(c) => format!("did you mean `vars.{c}`?"),
                        None => format!(
                            "check sets see only the step's vars: {}",
                            if vars.is_empty() {
                                "(none)".into()
                            } else {
                                vars.join(", ")
                            }
                        ),
                    };
                    ctx.error(
                        "E-REF",
                        node,
                        format!("unknown reference `${{{}}}` in check set", path.join(".")),
                        Some(hint),
                    );
                }
            }
        }
        Kind::Seq(items) => items.iter().for_each(|i| check_vars(ctx, i, vars)),
        Kind::Map(entries) => entries.iter().for_each(|(_, v)| check_vars(ctx, v, vars)),
        _ => {}
    }
}

async fn run_all(p: &Params, ctx: &StepContext) -> Result<(Vec<Value>, bool), ActionError> {
    let path = resolve_path(&ctx.runbook_dir, &p.file);
    let names: Vec<String> = p.vars.keys().cloned().collect();
    let mut diags = Diagnostics::default();
    let checks = load(&path, Some(&names), &ctx.registry, &mut diags);
    if diags.has_errors() {
        return Err(ActionError::InvalidParams(diags.render()));
    }
    let mut root = Map::new();
    root.insert("vars".into(), Value::Object(p.vars.clone()));
    let scope = Scope { root };
    let mut set = tokio::task::JoinSet::new();
    for c in checks.unwrap_or_default() {
        let params = scope
            .resolve_value(&c.with.to_json())
            .map_err(|e| ActionError::failed(format!("check `{}`: {e}", c.id)))?;
        let Some(action) = ctx.registry.get(&c.action) else {
            continue;
        };
        // Decoded once, like a step's parameters; a check that does not
        // decode fails on its own, the others still run.
        let step = action.prepare(&params);
        let sub = ctx.clone();
        set.spawn(async move {
            let t = Instant::now();
            let r = match step {
                Ok(step) => step.execute(&sub).await,
                Err(e) => Err(e),
            };
            (c.id, r, t.elapsed())
        });
    }
    let (mut results, mut ok) = (Vec::new(), true);
    while let Some(j) = set.join_next().await {
        let Ok((id, r, took)) = j else { continue };
        let ms = took.as_secs_f64() * 1000.0;
        match r {
            Ok(_) => results.push(json!({"id": id, "ok": true, "ms": ms})),
            Err(e) => {
                ok = false;
                results.push(json!({"id": id, "ok": false, "ms": ms, "error": e.to_string()}));
            }
        }
    }
    results.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok((results, ok))
}

#[async_trait]
impl ActionKind for ChecksRun {
    type Params = Params;

    fn kind(&self) -> &'static str {
        "checks.run"
    }
    fn summary(&self) -> &'static str {
        "Run a check set file (smoke or verification checks) concurrently"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["passed", "failed", "results", "summary"]
    }
    /// A passing check set is the runbook's smoke test: it shows the service works.
    fn proves_recovery(&self, _params: &Value) -> bool {
        true
    }
    fn decode(ctx: &mut Ctx<'_>, with: &Node) -> Option<Self::Params> {
        let mut r = MapReader::new(ctx, with, "checks.run")?;
        let file = r.req(ctx, "file").and_then(|n| ctx.string(n, "file"));
        let vars = match r.opt("vars") {
            Some(v) if v.as_map().is_some() => v.to_json().as_object().cloned().unwrap_or_default(),
            Some(v) => {
                ctx.expected(v, "a mapping of variables", "vars");
                Map::new()
            }
            None => Map::new(),
        };
        r.finish(ctx);
        Some(Params { file: file?, vars })
    }
    fn validate(&self, ctx: &mut Ctx<'_>, with: &Node, kinds: &Registry) {
        let Some(p) = Self::decode(ctx, with) else {
            return;
        };
        let base = Path::new(&ctx.file.path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = resolve_path(&base, &p.file);
        let names: Vec<String> = p.vars.keys().cloned().collect();
        let mut d = Diagnostics::default();
        load(&path, Some(&names), kinds, &mut d);
        ctx.diags.extend(d);
    }
    fn describe(&self, params: &Value) -> String {
        format!("run checks {}", params["file"].as_str().unwrap_or(""))
    }
    async fn preflight(
        &self,
        p: &Self::Params,
        _raw: &Value,
        ctx: &StepContext,
    ) -> Result<Preflight, ActionError> {
        let (results, ok) = run_all(p, ctx).await?;
        let failing: Vec<&str> = results
            .iter()
            .filter(|r| r["ok"] == false)
            .filter_map(|r| r["id"].as_str())
            .collect();
        Ok(Preflight {
            lines: vec![if ok {
                format!("{} checks pass now", results.len())
            } else {
                format!(
                    "failing now (expected before failover): {}",
                    failing.join(", ")
                )
            }],
            ok: true,
        })
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let (results, ok) = run_all(p, ctx).await?;
        let passed = results.iter().filter(|r| r["ok"] == true).count();
        if !ok {
            let fails: Vec<String> = results
                .iter()
                .filter(|r| r["ok"] == false)
                .map(|r| {
                    format!(
                        "{}: {}",
                        r["id"].as_str().unwrap_or(""),
                        r["error"]
                            .as_str()
                            .unwrap_or("")
                            .lines()
                            .next()
                            .unwrap_or("")
                    )
                })
                .collect();
            return Err(ActionError::failed(format!(
                "{} of {} checks failed: {}",
                fails.len(),
                results.len(),
                fails.join("; ")
            )));
        }
        let mut o = Outputs::new();
        o.insert("passed".into(), json!(passed));
        o.insert("failed".into(), json!(0));
        o.insert("summary".into(), json!(format!("{passed} checks passed")));
        o.insert("results".into(), Value::Array(results));
        Ok(o)
    }
}
