//! Whole-runbook checks, all reported at once: duplicate ids, `needs` that
//! name no step, dependency cycles (printed as a path `a -> b -> a`),
//! unknown action kinds, each action's own parameter validation, and
//! references that cannot resolve.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::model::{Runbook, Step};
use crate::action::Registry;
use crate::decode::Ctx;
use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::environment::Environment;
use crate::expr;
use crate::yaml::{Kind, Node, Span};

/// Steps grouped in waves: every step of a wave can run in parallel once
/// the previous waves are done. Used by `plan`; the engine schedules
/// dynamically (a step starts as soon as its own needs are met).
#[derive(Debug, Clone)]
pub struct ExecutionPlan {
    pub waves: Vec<Vec<String>>,
}

/// The regions a run moves between. `${source.…}` and `${target.…}` are
/// checked against exactly these regions, not against "some region", so a
/// component the target lacks is found before the run, not at the step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direction<'a> {
    /// Default: the environment's `active_region`.
    pub source: Option<&'a str>,
    /// Default: the only other region; with several, any of them.
    pub target: Option<&'a str>,
}

/// Validates `rb` (with `env`, when given) against the kinds in `kinds`,
/// for the environment's default direction (active region to the other).
pub fn validate_runbook(
    rb: &Runbook,
    env: Option<&Environment>,
    kinds: &Registry,
) -> (Diagnostics, Option<ExecutionPlan>) {
    validate_runbook_for(rb, env, kinds, Direction::default())
}

/// [`validate_runbook`] for a run from `dir.source` to `dir.target`.
pub fn validate_runbook_for(
    rb: &Runbook,
    env: Option<&Environment>,
    kinds: &Registry,
    dir: Direction<'_>,
) -> (Diagnostics, Option<ExecutionPlan>) {
    let mut diags = Diagnostics::default();
    let file = rb.file.clone();
    let mut ctx = Ctx::new(&file, &mut diags);
    ctx.defer_refs = true;

    // Ids.
    let mut first_seen: HashMap<&str, Span> = HashMap::new();
    for s in &rb.steps {
        if let Some(prev) = first_seen.get(s.id.as_str()) {
            ctx.diags.push(
                Diagnostic::error(
                    "E-DUPLICATE-ID",
                    &file,
                    s.id_span,
                    format!("duplicate step id `{}`", s.id),
                )
                .with_hint(format!(
                    "first defined at line {}; step ids must be unique",
                    prev.start.line
                )),
            );
        } else {
            first_seen.insert(&s.id, s.id_span);
        }
    }
    let ids: Vec<&str> = rb.steps.iter().map(|s| s.id.as_str()).collect();

    // Needs.
    for s in &rb.steps {
        for (need, span) in &s.needs {
            if need == &s.id {
                ctx.diags.push(Diagnostic::error(
                    "E-CYCLE",
                    &file,
                    *span,
                    format!("step `{}` needs itself", s.id),
                ));
            } else if !first_seen.contains_key(need.as_str()) {
                let hint = match did_you_mean(need, ids.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("steps are: {}", ids.join(", ")),
                };
                ctx.diags.push(
                    Diagnostic::error(
                        "E-UNKNOWN-STEP",
                        &file,
                        *span,
                        format!("step `{}` needs unknown step `{need}`", s.id),
                    )
                    .with_hint(hint),
                );
            }
        }
    }

    // Cycles.
    let cycle = find_cycle(rb);
    if let Some(path) = &cycle {
        let span = rb.step(&path[0]).map(|s| s.id_span).unwrap_or_default();
        ctx.diags.push(
            Diagnostic::error(
                "E-CYCLE",
                &file,
                span,
                format!("dependency cycle: {}", path.join(" -> ")),
            )
            .with_hint("remove one of these `needs` so the steps form a DAG"),
        );
    }

    // Actions.
    for s in &rb.steps {
        match kinds.get(&s.action) {
            Some(a) => {
                if s.with.as_map().is_some() {
                    a.validate(&mut ctx, &s.with, kinds);
                }
            }
            None => {
                let names = kinds.kinds();
                let hint = match did_you_mean(&s.action, names.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("known actions: {}", names.join(", ")),
                };
                ctx.diags.push(
                    Diagnostic::error(
                        "E-UNKNOWN-ACTION",
                        &file,
                        s.action_span,
                        format!("unknown action `{}`", s.action),
                    )
                    .with_hint(hint),
                );
            }
        }
    }

    // References.
    let ancestors = ancestors(rb);
    for s in &rb.steps {
        let anc = ancestors.get(s.id.as_str()).cloned().unwrap_or_default();
        let c = Checker {
            rb,
            env,
            kinds,
            dir,
            step: s,
            anc: &anc,
        };
        c.check_refs(&mut ctx, &s.with);
    }

    let plan = if cycle.is_none() {
        Some(waves(rb))
    } else {
        None
    };
    (diags, plan)
}

/// What a reference is checked against, for one step.
struct Checker<'a> {
    rb: &'a Runbook,
    env: Option<&'a Environment>,
    kinds: &'a Registry,
    dir: Direction<'a>,
    step: &'a Step,
    anc: &'a BTreeSet<String>,
}

impl Checker<'_> {
    fn check_refs(&self, ctx: &mut Ctx<'_>, node: &Node) {
        match &node.kind {
            Kind::Str(s) => match expr::refs_in(s) {
                Err(e) => ctx.error(
                    "E-EXPR",
                    node,
                    e.to_string(),
                    Some("write references as ${params.NAME} or ${steps.ID.outputs.KEY}".into()),
                ),
                Ok(refs) => {
                    for (path, offset) in refs {
                        if let Err((msg, hint)) = check_ref(self, &path) {
                            let at = node_at_offset(ctx, node, s, offset);
                            ctx.error("E-REF", &at, msg, hint);
                        }
                    }
                }
            },
            Kind::Seq(items) => items.iter().for_each(|i| self.check_refs(ctx, i)),
            Kind::Map(entries) => entries.iter().for_each(|(_, v)| self.check_refs(ctx, v)),
            _ => {}
        }
    }
}

type RefProblem = (String, Option<String>);

/// Points inside a one-line string at the `${` that is wrong, so a long
/// argv or URL shows exactly which reference failed.
fn node_at_offset(ctx: &Ctx<'_>, node: &Node, text: &str, offset: usize) -> Node {
    let mut at = node.clone();
    if node.span.start.line != node.span.end.line || text.contains('\\') {
        return at;
    }
    let quoted = ctx
        .file
        .line_text(node.span.start.line)
        .and_then(|l| l.chars().nth(node.span.start.col as usize - 1))
        .is_some_and(|c| c == '"' || c == '\'');
    let chars = text[..offset.min(text.len())].chars().count() as u32;
    let width = text[offset.min(text.len())..]
        .find('}')
        .map_or(2, |e| e + 1) as u32;
    at.span.start.col += chars + u32::from(quoted);
    at.span.end = at.span.start;
    at.span.end.col += width;
    at
}

fn check_ref(c: &Checker<'_>, path: &[String]) -> Result<(), RefProblem> {
    let (rb, env, kinds, step, anc) = (c.rb, c.env, c.kinds, c.step, c.anc);
    let full = path.join(".");
    let root = path[0].as_str();
    match root {
        "params" => {
            let name = path
                .get(1)
                .ok_or_else(|| (format!("`${{{full}}}` names no parameter"), None))?;
            if rb.param(name).is_none() {
                let names: Vec<&str> = rb.params.iter().map(|p| p.name.as_str()).collect();
                let hint = did_you_mean(name, names.iter().copied())
                    .map(|c| format!("did you mean `params.{c}`?"))
                    .unwrap_or_else(|| "declare it under `params:`".into());
                return Err((
                    format!("unknown reference `${{{full}}}`: no parameter `{name}`"),
                    Some(hint),
                ));
            }
            Ok(())
        }
        "steps" => {
            let id = path
                .get(1)
                .ok_or_else(|| (format!("`${{{full}}}` names no step"), None))?;
            let Some(target) = rb.step(id) else {
                let ids: Vec<&str> = rb.steps.iter().map(|s| s.id.as_str()).collect();
                let hint = did_you_mean(id, ids.iter().copied())
                    .map(|c| format!("did you mean `steps.{c}`?"));
                return Err((
                    format!("unknown reference `${{{full}}}`: no step `{id}`"),
                    hint,
                ));
            };
            if path.get(2).map(String::as_str) != Some("outputs") || path.len() < 4 {
                return Err((
                    format!("invalid reference `${{{full}}}`"),
                    Some(format!("write `${{steps.{id}.outputs.KEY}}`")),
                ));
            }
            if !anc.contains(id.as_str()) {
                return Err((
                    format!(
                        "step `{}` uses outputs of `{id}` but does not depend on it",
                        step.id
                    ),
                    Some(format!(
                        "add `{id}` to this step's `needs`, so it runs first"
                    )),
                ));
            }
            if let Some(a) = kinds.get(&target.action) {
                let key = path[3].as_str();
                if !a.outputs().contains(&key) {
                    let hint = match did_you_mean(key, a.outputs().iter().copied()) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!("`{}` outputs: {}", a.kind(), a.outputs().join(", ")),
                    };
                    return Err((
                        format!(
                            "unknown reference `${{{full}}}`: `{}` has no output `{key}`",
                            a.kind()
                        ),
                        Some(hint),
                    ));
                }
            }
            Ok(())
        }
        "run" => {
            let ok = ["id", "mode", "target_region", "source_region", "operator"];
            match path.get(1) {
                Some(k) if ok.contains(&k.as_str()) && path.len() == 2 => Ok(()),
                _ => Err((
                    format!("unknown reference `${{{full}}}`"),
                    Some(format!("run fields: {}", ok.join(", "))),
                )),
            }
        }
        "env" => match path.get(1).map(String::as_str) {
            Some("name" | "active_region") if path.len() == 2 => Ok(()),
            _ => Err((
                format!("unknown reference `${{{full}}}`"),
                Some("env fields: name, active_region".into()),
            )),
        },
        "dns" => {
            let Some(env) = env else { return Ok(()) };
            if lookup(env.doc.get("dns"), &path[1..]).is_none() {
                return Err((
                    format!(
                        "unknown reference `${{{full}}}`: not in the environment's dns section"
                    ),
                    Some(format!("check dns in {}", env.file.path)),
                ));
            }
            Ok(())
        }
        "regions" | "target" | "source" => {
            let Some(env) = env else { return Ok(()) };
            let regions: Vec<&str> = env.region_names();
            let (candidates, rest): (Vec<&str>, &[String]) = match root {
                "regions" => {
                    let r = path
                        .get(1)
                        .ok_or_else(|| (format!("`${{{full}}}` names no region"), None))?;
                    if env.region(r).is_none() {
                        return Err((
                            format!("unknown reference `${{{full}}}`: no region `{r}`"),
                            Some(format!("regions: {}", regions.join(", "))),
                        ));
                    }
                    (vec![r.as_str()], &path[2..])
                }
                "source" => (
                    vec![c.dir.source.unwrap_or(env.active_region.as_str())],
                    &path[1..],
                ),
                _ => match c.dir.target.or(env.default_target()) {
                    Some(t) => (vec![t], &path[1..]),
                    // Several possible targets and none chosen: the path
                    // must exist in one of them, else it is surely a typo.
                    None => (
                        regions
                            .iter()
                            .copied()
                            .filter(|r| *r != env.active_region)
                            .collect(),
                        &path[1..],
                    ),
                },
            };
            if candidates
                .iter()
                .any(|r| lookup(env.region(r), rest).is_some())
            {
                return Ok(());
            }
            // A step guarded by `skip_unless` is skipped when the component
            // is absent: that is its purpose, not a typo.
            let guarded = step
                .skip_unless
                .iter()
                .any(|(g, _)| full == *g || full.starts_with(&format!("{g}.")));
            if guarded {
                return Ok(());
            }
            let present_elsewhere = root != "regions"
                && regions
                    .iter()
                    .any(|r| lookup(env.region(r), rest).is_some());
            let which = match (root, candidates.as_slice()) {
                ("regions", _) => "the environment".to_string(),
                (_, [r]) => format!("region `{r}` (the {root} of this run)"),
                _ => format!("the possible targets ({})", candidates.join(", ")),
            };
            let region = candidates.first().copied().unwrap_or("REGION");
            Err((
                format!("unknown reference `${{{full}}}`: not present in {which}"),
                Some(if present_elsewhere {
                    format!(
                        "only another region has `{}`: add regions.{region}.{} to {}, or guard the step with `skip_unless: [{root}.{}]`",
                        rest.join("."),
                        rest.join("."),
                        env.file.path,
                        rest.first().map(String::as_str).unwrap_or("")
                    )
                } else {
                    format!("check {} in {}", rest.join("."), env.file.path)
                }),
            ))
        }
        other => {
            let hint = match did_you_mean(other, expr::ROOTS.iter().copied()) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("references start with one of: {}", expr::ROOTS.join(", ")),
            };
            Err((format!("unknown reference `${{{full}}}`"), Some(hint)))
        }
    }
}

fn lookup<'a>(v: Option<&'a serde_json::Value>, path: &[String]) -> Option<&'a serde_json::Value> {
    let mut cur = v?;
    for p in path {
        cur = match cur {
            serde_json::Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            other => other.get(p)?,
        };
    }
    Some(cur)
}

/// The transitive `needs` of every step.
pub fn ancestors(rb: &Runbook) -> BTreeMap<&str, BTreeSet<String>> {
    let mut out: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for s in &rb.steps {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = s.needs.iter().map(|(n, _)| n.as_str()).collect();
        while let Some(n) = stack.pop() {
            if seen.insert(n.to_string()) {
                if let Some(st) = rb.step(n) {
                    stack.extend(st.needs.iter().map(|(x, _)| x.as_str()));
                }
            }
        }
        out.insert(&s.id, seen);
    }
    out
}

/// Finds one cycle as a path that returns to its start.
fn find_cycle(rb: &Runbook) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = rb
        .steps
        .iter()
        .map(|s| (s.id.as_str(), Mark::New))
        .collect();
    fn visit<'a>(
        rb: &'a Runbook,
        id: &'a str,
        marks: &mut HashMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(id) {
            Some(Mark::Done) | None => return None,
            Some(Mark::Active) => {
                let start = path.iter().position(|p| *p == id).unwrap_or(0);
                let mut cyc: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cyc.push(id.to_string());
                return Some(cyc);
            }
            Some(Mark::New) => {}
        }
        marks.insert(id, Mark::Active);
        path.push(id);
        if let Some(s) = rb.step(id) {
            for (n, _) in &s.needs {
                if n != id {
                    if let Some(c) = visit(rb, n, marks, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        marks.insert(id, Mark::Done);
        None
    }
    for s in &rb.steps {
        let mut path = Vec::new();
        if let Some(c) = visit(rb, &s.id, &mut marks, &mut path) {
            return Some(c);
        }
    }
    None
}

fn waves(rb: &Runbook) -> ExecutionPlan {
    let mut level: HashMap<&str, usize> = HashMap::new();
    let mut remaining: Vec<&Step> = rb.steps.iter().collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|s| {
            let deps: Option<Vec<usize>> = s
                .needs
                .iter()
                .filter(|(n, _)| rb.step(n).is_some())
                .map(|(n, _)| level.get(n.as_str()).copied())
                .collect();
            match deps {
                Some(d) => {
                    level.insert(&s.id, d.into_iter().map(|l| l + 1).max().unwrap_or(0));
                    false
                }
                None => true,
            }
        });
        if remaining.len() == before {
            break;
        }
    }
    let max = level.values().copied().max().unwrap_or(0);
    let mut waves = vec![Vec::new(); max + 1];
    for s in &rb.steps {
        if let Some(l) = level.get(s.id.as_str()) {
            waves[*l].push(s.id.clone());
        }
    }
    ExecutionPlan { waves }
}
