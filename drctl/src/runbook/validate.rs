//! Whole-runbook checks, all reported at once: duplicate ids, `needs` that
//! name no step, dependency cycles (printed as a path `a -> b -> a`),
//! unknown action kinds, each action's own parameter validation, and
//! references that cannot resolve.

use std::collections::{HashMap, HashSet};

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
    let reach = Reach::new(rb);
    for s in &rb.steps {
        let c = Checker {
            rb,
            env,
            kinds,
            dir,
            step: s,
            anc: &reach,
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
    anc: &'a Reach<'a>,
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
            if !anc.depends_on(&step.id, id) {
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

/// Answers "does step A depend on step B, transitively?" on demand.
///
/// A table of every step's ancestors is quadratic in a long chain (a
/// 2,357-step chain took 130 MB), while questions are asked only for
/// `${steps.…}` references: each is a bounded walk that stops when it
/// finds its answer, with memory linear in the runbook.
pub struct Reach<'a> {
    rb: &'a Runbook,
}

impl<'a> Reach<'a> {
    pub fn new(rb: &'a Runbook) -> Self {
        Reach { rb }
    }

    /// Whether `step` needs `on`, directly or through other steps.
    pub fn depends_on(&self, step: &str, on: &str) -> bool {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = match self.rb.step(step) {
            Some(s) => s.needs.iter().map(|(n, _)| n.as_str()).collect(),
            None => return false,
        };
        while let Some(n) = stack.pop() {
            if n == on {
                return true;
            }
            if seen.insert(n) {
                if let Some(st) = self.rb.step(n) {
                    stack.extend(st.needs.iter().map(|(x, _)| x.as_str()));
                }
            }
        }
        false
    }
}

/// Finds one cycle as a path that returns to its start. Iterative (an
/// explicit stack): a 100,000-step chain must not overflow the stack.
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
    for start in &rb.steps {
        if marks.get(start.id.as_str()) != Some(&Mark::New) {
            continue;
        }
        // Each frame: a step on the current path and how many of its
        // needs were looked at.
        let mut path: Vec<(&str, usize)> = vec![(start.id.as_str(), 0)];
        marks.insert(&start.id, Mark::Active);
        while let Some(&mut (id, ref mut next)) = path.last_mut() {
            let needs = rb.step(id).map(|s| s.needs.as_slice()).unwrap_or(&[]);
            let Some((n, _)) = needs.get(*next) else {
                marks.insert(id, Mark::Done);
                path.pop();
                continue;
            };
            *next += 1;
            if n == id {
                continue; // a self-need is reported on its own
            }
            match marks.get(n.as_str()) {
                Some(Mark::Active) => {
                    let from = path.iter().position(|(p, _)| *p == n).unwrap_or(0);
                    let mut cyc: Vec<String> =
                        path[from..].iter().map(|(p, _)| p.to_string()).collect();
                    cyc.push(n.clone());
                    return Some(cyc);
                }
                Some(Mark::New) => {
                    marks.insert(n, Mark::Active);
                    path.push((n.as_str(), 0));
                }
                Some(Mark::Done) | None => {}
            }
        }
    }
    None
}

/// Groups steps into waves (a step's wave is one after its latest need),
/// in time linear in steps plus needs: a topological walk, not repeated
/// passes (which were quadratic for a chain written bottom-up).
fn waves(rb: &Runbook) -> ExecutionPlan {
    let index: HashMap<&str, usize> = rb
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let n = rb.steps.len();
    let mut waiting = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, s) in rb.steps.iter().enumerate() {
        for (need, _) in &s.needs {
            if let Some(&j) = index.get(need.as_str()) {
                waiting[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut level: Vec<Option<usize>> = vec![None; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    for &i in &ready {
        level[i] = Some(0);
    }
    while let Some(j) = ready.pop() {
        let lj = level[j].unwrap_or(0);
        for &i in &dependents[j] {
            level[i] = Some(level[i].map_or(lj + 1, |l| l.max(lj + 1)));
            waiting[i] -= 1;
            if waiting[i] == 0 {
                ready.push(i);
            }
        }
    }
    // Steps on a cycle never become ready and get no wave (validation
    // reports the cycle).
    let max = level.iter().flatten().copied().max().unwrap_or(0);
    let mut waves = vec![Vec::new(); max + 1];
    for (i, s) in rb.steps.iter().enumerate() {
        if waiting[i] == 0 {
            if let Some(l) = level[i] {
                waves[l].push(s.id.clone());
            }
        }
    }
    ExecutionPlan { waves }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::SourceFile;

    fn chain(n: usize, reversed: bool, cycle: bool) -> Runbook {
        let mut y = String::from("name: chain\nsteps:\n");
        let ids: Vec<usize> = if reversed {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        for i in ids {
            y.push_str(&format!(
                "  - id: s{i}\n    action: wait\n    with: {{duration: 0ms}}\n"
            ));
            if i > 0 {
                y.push_str(&format!("    needs: [s{}]\n", i - 1));
            } else if cycle {
                y.push_str(&format!("    needs: [s{}]\n", n - 1));
            }
        }
        let f = SourceFile::new("chain.yaml", y);
        crate::runbook::parse::parse_runbook(&f, String::new())
            .map(|(rb, _)| rb)
            .unwrap_or_else(|d| panic!("{}", d.render()))
    }

    /// Linear work and an explicit stack: a long chain written bottom-up
    /// is planned in one wave per step, and a cycle through all of it is
    /// found whole, without overflowing the stack.
    #[test]
    fn long_chains_plan_and_cycles_are_found_without_recursion() {
        let n = 20_000;
        let plan = waves(&chain(n, true, false));
        assert_eq!(plan.waves.len(), n);
        assert_eq!(plan.waves[n - 1], vec![format!("s{}", n - 1)]);
        let cyc = find_cycle(&chain(n, false, true)).expect("a cycle");
        assert_eq!(cyc.len(), n + 1);
        assert_eq!(cyc.first(), cyc.last());
        let rb = chain(200, false, false);
        let reach = Reach::new(&rb);
        assert!(reach.depends_on("s199", "s0"));
        assert!(!reach.depends_on("s0", "s199"));
        assert!(!reach.depends_on("s5", "s5"));
    }
}
