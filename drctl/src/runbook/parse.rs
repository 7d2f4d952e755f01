//! Located YAML -> [`Runbook`], reporting every problem in one pass.

use std::path::Path;
use std::sync::Arc;

use super::model::*;
use crate::decode::{Ctx, MapReader};
use crate::diag::Diagnostics;
use crate::yaml::{self, Kind, Node, SourceFile, Span};

/// Field names the decoder accepts; a unit test keeps them in step with the
/// schema types so `drctl schema` never disagrees with `drctl validate`.
pub const RUNBOOK_FIELDS: &[&str] = &["name", "description", "targets", "params", "steps"];
pub const STEP_FIELDS: &[&str] = &[
    "id",
    "action",
    "with",
    "needs",
    "timeout",
    "retry",
    "on_failure",
    "when",
    "skip_unless",
    "description",
    "proves_recovery",
];

/// Reads and decodes a runbook file. `Err` carries diagnostics (an I/O
/// failure is reported as a diagnostic at 1:1 so output stays uniform).
pub fn load_runbook(path: &Path) -> Result<(Runbook, Diagnostics), Diagnostics> {
    let (file, hash) = yaml::load_source(
        path,
        "runbook",
        "check the path; runbooks live in runbooks/ by default",
    )?;
    parse_runbook(&file, hash)
}

pub fn parse_runbook(
    file: &Arc<SourceFile>,
    content_hash: String,
) -> Result<(Runbook, Diagnostics), Diagnostics> {
    let mut diags = Diagnostics::default();
    let Some(root) = yaml::parse(file, &mut diags) else {
        return Err(diags);
    };
    let mut ctx = Ctx::new(file, &mut diags);
    // Literal secrets anywhere in the file (step parameters, headers, DSNs,
    // parameter defaults), before anything else reads them.
    crate::secretscan::check_document(&mut ctx, &root);
    let Some(mut r) = MapReader::new(&mut ctx, &root, "runbook") else {
        return Err(diags);
    };
    let name = r
        .req(&mut ctx, "name")
        .and_then(|n| ctx.string(n, "runbook name"))
        .unwrap_or_default();
    let description = r
        .opt("description")
        .and_then(|n| ctx.string(n, "description"));
    let (rto, rpo) = match r.opt("targets") {
        Some(t) => decode_targets(&mut ctx, t),
        None => (None, None),
    };
    let params = match r.opt("params") {
        Some(p) => super::params::decode_params(&mut ctx, p),
        None => Vec::new(),
    };
    let steps = match r.req(&mut ctx, "steps") {
        Some(n) => match n.as_seq() {
            Some(items) => {
                if items.is_empty() {
                    ctx.error(
                        "E-EMPTY",
                        n,
                        "runbook has no steps",
                        Some("add at least one step".into()),
                    );
                }
                items
                    .iter()
                    .filter_map(|s| decode_step(&mut ctx, s))
                    .collect()
            }
            None => {
                ctx.expected(n, "a list of steps", "steps");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    r.finish(&mut ctx);
    let rb = Runbook {
        name,
        description,
        rto,
        rpo,
        params,
        index: Runbook::index_steps(&steps),
        steps,
        file: file.clone(),
        content_hash,
    };
    Ok((rb, diags))
}

fn decode_targets(
    ctx: &mut Ctx<'_>,
    node: &Node,
) -> (Option<std::time::Duration>, Option<std::time::Duration>) {
    let Some(mut r) = MapReader::new(ctx, node, "targets") else {
        return (None, None);
    };
    let rto = r.opt("rto").and_then(|n| ctx.duration(n, "targets.rto"));
    let rpo = r.opt("rpo").and_then(|n| ctx.duration(n, "targets.rpo"));
    r.finish(ctx);
    (rto, rpo)
}

pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn decode_step(ctx: &mut Ctx<'_>, node: &Node) -> Option<Step> {
    let mut r = MapReader::new(ctx, node, "step")?;
    let id_node = r.req(ctx, "id");
    let id = id_node.and_then(|n| ctx.string(n, "step id"));
    if let (Some(id), Some(n)) = (&id, id_node) {
        if !is_identifier(id) {
            ctx.error(
                "E-NAME",
                n,
                format!("step id `{id}` is not an identifier"),
                Some("use letters, digits, `_` and `-`, starting with a letter".into()),
            );
        }
    }
    let what = match &id {
        Some(id) => format!("step `{id}`"),
        None => "step".to_string(),
    };
    let action_node = r.req(ctx, "action");
    let action = action_node.and_then(|n| ctx.string(n, &format!("{what}: action")));
    let with = r
        .opt("with")
        .cloned()
        .unwrap_or_else(|| Node::new(Kind::Map(Vec::new()), node.span));
    if with.as_map().is_none() {
        ctx.expected(&with, "a mapping of parameters", &format!("{what}: with"));
    }
    let needs = match r.opt("needs") {
        Some(n) => match &n.kind {
            // A single dependency written as a plain string is common enough
            // to accept; it is unambiguous.
            Kind::Str(s) => vec![(s.clone(), n.span)],
            _ => ctx
                .string_list(n, &format!("{what}: needs"))
                .unwrap_or_default()
                .into_iter()
                .map(|(s, n)| (s, n.span))
                .collect(),
        },
        None => Vec::new(),
    };
    let timeout = r
        .opt("timeout")
        .and_then(|n| ctx.duration(n, &format!("{what}: timeout")));
    let retry = match r.opt("retry") {
        Some(n) => decode_retry(ctx, n, &what),
        None => Retry::default(),
    };
    let on_failure = r
        .opt("on_failure")
        .and_then(|n| ctx.one_of(n, &["abort", "continue"], &format!("{what}: on_failure")))
        .map(|s| {
            if s == "continue" {
                OnFailure::Continue
            } else {
                OnFailure::Abort
            }
        })
        .unwrap_or(OnFailure::Abort);
    let when = r
        .opt("when")
        .and_then(|n| {
            ctx.one_of(
                n,
                &["incident", "drill", "always"],
                &format!("{what}: when"),
            )
        })
        .map(|s| match s {
            "incident" => When::Incident,
            "drill" => When::Drill,
            _ => When::Always,
        })
        .unwrap_or(When::Always);
    let skip_unless = r
        .opt("skip_unless")
        .map(|n| decode_skip_unless(ctx, n, &what))
        .unwrap_or_default();
    let description = r
        .opt("description")
        .and_then(|n| ctx.string(n, "description"));
    // A literal: the decision is journaled when the run starts, before any
    // `${...}` is resolved.
    let proves_recovery = r.opt("proves_recovery").and_then(|n| match n.kind {
        Kind::Bool(b) => Some(b),
        _ => {
            ctx.expected(n, "true or false", &format!("{what}: proves_recovery"));
            None
        }
    });
    r.finish(ctx);
    Some(Step {
        id: id?,
        action: action?,
        with,
        needs,
        timeout,
        retry,
        on_failure,
        when,
        skip_unless,
        description,
        proves_recovery,
        span: node.span,
        id_span: id_node.map(|n| n.span).unwrap_or(node.span),
        action_span: action_node.map(|n| n.span).unwrap_or(node.span),
    })
}

fn decode_retry(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Retry {
    let mut out = Retry::default();
    let Some(mut r) = MapReader::new(ctx, node, format!("{what}: retry")) else {
        return out;
    };
    if let Some(n) = r.req(ctx, "attempts") {
        if let Some(a) = ctx.uint(n, "retry.attempts") {
            if a == 0 || a > 1000 {
                ctx.error(
                    "E-VALUE",
                    n,
                    format!("retry.attempts must be between 1 and 1000, got {a}"),
                    Some("attempts counts the first try: 3 means two retries".into()),
                );
            } else {
                out.attempts = a as u32;
            }
        }
    }
    if let Some(d) = r
        .opt("initial")
        .and_then(|n| ctx.duration(n, "retry.initial"))
    {
        out.initial = d;
    }
    if let Some(d) = r.opt("max").and_then(|n| ctx.duration(n, "retry.max")) {
        out.max = d;
    }
    if let Some(n) = r.opt("factor") {
        if let Some(f) = ctx.float(n, "retry.factor") {
            if !(1.0..=10.0).contains(&f) {
                ctx.error(
                    "E-VALUE",
                    n,
                    format!("retry.factor must be between 1 and 10, got {f}"),
                    None,
                );
            } else {
                out.factor = f;
            }
        }
    }
    r.finish(ctx);
    out
}

/// Roots `skip_unless` may name: only what the environment provides is
/// known before the run starts, so a plan can say which steps will run.
const SKIP_UNLESS_ROOTS: &[&str] = &["regions", "target", "source", "env", "dns"];

fn decode_skip_unless(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Vec<(String, Span)> {
    let context = format!("{what}: skip_unless");
    let items = match &node.kind {
        Kind::Str(s) => vec![(s.clone(), node.clone())],
        _ => ctx.string_list(node, &context).unwrap_or_default(),
    };
    let mut out = Vec::new();
    for (s, n) in items {
        let root = s.split('.').next().unwrap_or("");
        let well_formed = !s.is_empty()
            && s.split('.').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !well_formed || !SKIP_UNLESS_ROOTS.contains(&root) {
            ctx.error(
                "E-SKIP-UNLESS",
                &n,
                format!("{context}: `{s}` is not an environment reference"),
                Some(format!(
                    "write a dotted path without `${{}}`, starting with one of: {} (e.g. target.kube)",
                    SKIP_UNLESS_ROOTS.join(", ")
                )),
            );
            continue;
        }
        out.push((s, n.span));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of<T: schemars::JsonSchema>() -> Vec<String> {
        let schema = schemars::schema_for!(T);
        let v = serde_json::to_value(&schema).unwrap();
        let mut keys: Vec<String> = v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn decoder_and_schema_agree() {
        let mut a: Vec<String> = STEP_FIELDS.iter().map(|s| s.to_string()).collect();
        a.sort();
        assert_eq!(a, fields_of::<StepDoc>());
        let mut b: Vec<String> = RUNBOOK_FIELDS.iter().map(|s| s.to_string()).collect();
        b.sort();
        assert_eq!(b, fields_of::<RunbookDoc>());
    }

    #[test]
    fn collects_every_error() {
        let f = SourceFile::new(
            "rb.yaml",
            "name: x\nsteps:\n  - id: a\n    action: wait\n    timout: 3s\n  - id: b\n    action: wait\n    timeout: 30\n    retry: {attempts: 0}\n",
        );
        let (_rb, d) = parse_runbook(&f, String::new()).unwrap();
        let text = d.render();
        assert!(text.contains("rb.yaml:5:5"), "{text}");
        assert!(text.contains("did you mean `timeout`"), "{text}");
        assert!(text.contains("rb.yaml:8:14"), "{text}");
        assert!(text.contains("rb.yaml:9:23"), "{text}");
        assert_eq!(d.error_count(), 3, "{text}");
    }

    #[test]
    fn proves_recovery_is_a_located_literal_boolean() {
        let f = SourceFile::new(
            "rb.yaml",
            "name: x\nsteps:\n  - id: a\n    action: wait\n    proves_recovery: yes please\n  - id: b\n    action: wait\n    proves_recovery: \"${params.p}\"\n  - id: c\n    action: wait\n    proves_recovery: true\n",
        );
        let res = parse_runbook(&f, String::new());
        let (rb, d) = match res {
            Ok(x) => x,
            Err(d) => panic!("{}", d.render()),
        };
        let text = d.render();
        assert!(text.contains("rb.yaml:5:22"), "{text}");
        assert!(text.contains("rb.yaml:8:22"), "{text}");
        assert!(text.contains("proves_recovery"), "{text}");
        assert_eq!(d.error_count(), 2, "{text}");
        assert_eq!(rb.step("c").and_then(|s| s.proves_recovery), Some(true));
        assert_eq!(rb.step("a").and_then(|s| s.proves_recovery), None);
    }
}
