//! `checks.run`: run a check set file (`checks/*.yaml`) as one step, all
//! checks concurrently; the step passes when every check passes.
//!
//! A check set is reusable across runbooks and environments: it refers only
//! to `${vars.NAME}`, and the step passes the values
//! (`vars: {app_url: "${target.app.url}"}`). Check files are validated with
//! locations in the check file itself.
//!
//! A check set only observes: every check's kind must be read-only
//! ([`ActionKind::read_only`] with its parameters as written), and not
//! `notify` or `approval`, so the step is read-only too and `plan --check`
//! can run its preflight, which runs each check's preflight (never its
//! `execute`), against production at any time. An empty or malformed
//! `checks:` list is an error; a check that panics or is cancelled has
//! failed.
//!
//! ```yaml
//! name: smoke
//! checks:
//!   - id: app-health
//!     action: http.check
//!     with: {url: "${vars.app_url}/health", json_pointer: /role, equals: primary}
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use crate::action::{ActionError, ActionKind, Outputs, Preflight, Registry, StepContext, Verdict};
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
        match items.as_seq() {
            // A set that checks nothing would pass every time.
            Some([]) => ctx.error(
                "E-EMPTY",
                items,
                "check set has no checks",
                Some(
                    "add at least one check: an empty set would pass without checking anything"
                        .into(),
                ),
            ),
            Some(list) => {
                for it in list {
                    if let Some(c) = load_check(&mut ctx, it, vars, kinds, &out) {
                        out.push(c);
                    }
                }
            }
            None => ctx.expected(items, "a list of checks", "checks"),
        }
    }
    r.finish(&mut ctx);
    Some(out)
}

/// One entry of `checks:`, validated against `kinds`; `seen` are the
/// checks before it (ids are unique).
fn load_check(
    ctx: &mut Ctx<'_>,
    it: &Node,
    vars: Option<&[String]>,
    kinds: &Registry,
    seen: &[Check],
) -> Option<Check> {
    let mut cr = MapReader::new(ctx, it, "check")?;
    let id_node = cr.req(ctx, "id");
    let id = id_node.and_then(|n| ctx.string(n, "check id"));
    let action_node = cr.req(ctx, "action");
    let action = action_node.and_then(|n| ctx.string(n, "action"));
    let with = cr
        .opt("with")
        .cloned()
        .unwrap_or_else(|| Node::new(Kind::Map(Vec::new()), it.span));
    cr.opt("description");
    cr.finish(ctx);
    let (Some(id), Some(action), Some(an), Some(idn)) = (id, action, action_node, id_node) else {
        return None;
    };
    if seen.iter().any(|c| c.id == id) {
        ctx.error(
            "E-DUPLICATE-ID",
            idn,
            format!("check id `{id}` is used twice in this check set"),
            Some("each check needs its own id: results are reported by id".into()),
        );
    }
    match kinds.get(&action).filter(|a| a.kind() != "checks.run") {
        Some(a) if NOT_CHECKS.contains(&a.kind()) => ctx.error(
            "E-CHECK-KIND",
            an,
            format!("check `{id}` uses `{action}`, which is not a check: it involves people, not systems"),
            Some(format!(
                "a check set only observes: use {}, and put `{action}` in a runbook step",
                read_only_kinds(kinds)
            )),
        ),
        Some(a) if !a.read_only(&with.to_json()) => ctx.error(
            "E-CHECK-NOT-READ-ONLY",
            an,
            format!("check `{id}` uses `{action}`, which is not read-only"),
            Some(format!(
                "a check set may only observe (`plan --check` runs every check's preflight against live systems): use {}, and put `{action}` in a runbook step",
                read_only_kinds(kinds)
            )),
        ),
        Some(a) => a.validate(ctx, &with, kinds),
        None => ctx.error(
            "E-UNKNOWN-ACTION",
            an,
            format!("unknown check action `{action}`"),
            Some(format!("checks use {}", read_only_kinds(kinds))),
        ),
    }
    check_vars(ctx, &with, vars);
    Some(Check { id, action, with })
}

/// Read-only kinds that are still no check: `notify` changes no system
/// of the environment (so its runs need no exclusive lease) but pages
/// people, and `approval` waits for one. A check set only observes.
const NOT_CHECKS: &[&str] = &["notify", "approval"];

/// The kinds a check may use (read-only with their default parameters),
/// for hints.
fn read_only_kinds(kinds: &Registry) -> String {
    kinds
        .iter()
        .filter(|k| {
            k.kind() != "checks.run"
                && !NOT_CHECKS.contains(&k.kind())
                && k.read_only(&Value::Object(Map::new()))
        })
        .map(|k| k.kind())
        .collect::<Vec<_>>()
        .join(", ")
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

/// Which face of each check `run_all` calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Face {
    /// `plan --check`: each check's preflight, never its execute.
    Preflight,
    Execute,
}

/// What one check said.
struct Outcome {
    id: String,
    ms: f64,
    verdict: Verdict,
    /// The check's preflight lines, or its error.
    lines: Vec<String>,
}

impl Outcome {
    fn failed(id: String, ms: f64, verdict: Verdict, why: String) -> Outcome {
        Outcome {
            id,
            ms,
            verdict,
            lines: vec![why],
        }
    }
}

/// How long a preflight leaves each check: the step's own remaining time
/// minus a margin, so a hanging check is reported as such by this step
/// instead of the whole step timing out without saying which.
const PREFLIGHT_MARGIN: Duration = Duration::from_millis(500);

/// Runs every check of the set concurrently, through `face`. Every check
/// has an outcome: one that cannot be resolved, does not decode, panics or
/// is cancelled has failed, it is never dropped or counted as passed.
async fn run_all(p: &Params, ctx: &StepContext, face: Face) -> Result<Vec<Outcome>, ActionError> {
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
    let mut sub = ctx.clone();
    if face == Face::Preflight {
        sub.deadline = ctx
            .deadline
            .checked_sub(PREFLIGHT_MARGIN)
            .unwrap_or(ctx.deadline)
            .max(Instant::now() + PREFLIGHT_MARGIN);
    }
    let mut out = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    let mut tasks = HashMap::new();
    for c in checks.unwrap_or_default() {
        let params = match scope.resolve_value(&c.with.to_json()) {
            Ok(v) => v,
            Err(e) => {
                out.push(Outcome::failed(c.id, 0.0, Verdict::Problem, e.to_string()));
                continue;
            }
        };
        // Decoded once, like a step's parameters; a check that does not
        // decode fails on its own, the others still run.
        let step = match ctx.registry.get(&c.action) {
            Some(action) => action.prepare(&params),
            None => Err(ActionError::failed(format!(
                "unknown check action `{}`",
                c.action
            ))),
        };
        let sub = sub.clone();
        let id = c.id.clone();
        let h = set.spawn(async move {
            let t = Instant::now();
            let (verdict, lines) = match (step, face) {
                (Err(e), _) => (Verdict::Problem, vec![e.to_string()]),
                (Ok(step), Face::Preflight) => {
                    match tokio::time::timeout(sub.remaining(), step.preflight(&sub)).await {
                        Ok(Ok(p)) => (p.verdict, p.lines),
                        Ok(Err(e)) => (Verdict::Problem, vec![e.to_string()]),
                        Err(_) => (
                            Verdict::FailsNow,
                            vec![format!(
                                "no answer within {}",
                                crate::duration::format_duration(sub.remaining())
                            )],
                        ),
                    }
                }
                (Ok(step), Face::Execute) => match step.execute(&sub).await {
                    Ok(_) => (Verdict::Passes, Vec::new()),
                    Err(e) => (Verdict::FailsNow, vec![e.to_string()]),
                },
            };
            Outcome {
                id,
                ms: t.elapsed().as_secs_f64() * 1000.0,
                verdict,
                lines,
            }
        });
        tasks.insert(h.id(), c.id);
    }
    while let Some(j) = set.join_next().await {
        match j {
            Ok(o) => out.push(o),
            Err(e) => {
                // The task's id names the check that panicked or was
                // cancelled: it failed, whatever it had done.
                let id = tasks.get(&e.id()).cloned().unwrap_or_default();
                let why = if e.is_panic() {
                    "the check panicked (a bug in drctl): counted as failed".to_string()
                } else {
                    "the check was cancelled before it finished: counted as failed".to_string()
                };
                out.push(Outcome::failed(id, 0.0, Verdict::Problem, why));
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The outcomes as journaled in the step's `results` output.
fn results_json(outcomes: &[Outcome]) -> Vec<Value> {
    outcomes
        .iter()
        .map(|o| {
            let mut v = json!({"id": o.id, "ok": o.verdict == Verdict::Passes, "ms": o.ms});
            if o.verdict != Verdict::Passes {
                v["error"] = json!(o.lines.join("; "));
            }
            v
        })
        .collect()
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
    fn read_only(&self, _params: &Value) -> bool {
        // Its checks are validated read-only (at `validate` and again
        // when the step loads the set), so the step changes nothing.
        true
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
        let outcomes = run_all(p, ctx, Face::Preflight).await?;
        // The worst check decides: a problem outweighs a check that only
        // fails now.
        let verdict = outcomes
            .iter()
            .map(|o| o.verdict)
            .max_by_key(|v| match v {
                Verdict::Passes => 0,
                Verdict::FailsNow => 1,
                Verdict::Problem => 2,
            })
            .unwrap_or(Verdict::Problem);
        let failing: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.verdict != Verdict::Passes)
            .map(|o| o.id.as_str())
            .collect();
        let mut lines = vec![if failing.is_empty() {
            format!("{} checks pass now", outcomes.len())
        } else {
            format!(
                "{} of {} checks fail now: {}",
                failing.len(),
                outcomes.len(),
                failing.join(", ")
            )
        }];
        for o in &outcomes {
            for l in &o.lines {
                lines.push(format!("{}: {l}", o.id));
            }
        }
        Ok(Preflight::new(lines, verdict))
    }
    async fn execute(&self, p: &Self::Params, ctx: &StepContext) -> Result<Outputs, ActionError> {
        let outcomes = run_all(p, ctx, Face::Execute).await?;
        let passed = outcomes
            .iter()
            .filter(|o| o.verdict == Verdict::Passes)
            .count();
        if passed < outcomes.len() {
            let fails: Vec<String> = outcomes
                .iter()
                .filter(|o| o.verdict != Verdict::Passes)
                .map(|o| {
                    let first = o.lines.first().map(String::as_str).unwrap_or("");
                    format!("{}: {}", o.id, first.lines().next().unwrap_or(""))
                })
                .collect();
            return Err(ActionError::failed(format!(
                "{} of {} checks failed: {}",
                fails.len(),
                outcomes.len(),
                fails.join("; ")
            )));
        }
        let mut o = Outputs::new();
        o.insert("passed".into(), json!(passed));
        o.insert("failed".into(), json!(0));
        o.insert("summary".into(), json!(format!("{passed} checks passed")));
        o.insert("results".into(), Value::Array(results_json(&outcomes)));
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use async_trait::async_trait;
    use serde_json::{json, Value};

    use super::*;
    use crate::action::{self, Action, Registry};
    use crate::journal::RunOptions;
    use crate::runbook::Mode;
    use crate::store::{DirStore, Store};

    /// A read-only kind whose every face panics: a bug in a check.
    #[derive(Clone, Copy)]
    struct Panics;

    #[async_trait]
    impl ActionKind for Panics {
        type Params = ();

        fn kind(&self) -> &'static str {
            "test.panics"
        }
        fn summary(&self) -> &'static str {
            "panics"
        }
        fn outputs(&self) -> &'static [&'static str] {
            &[]
        }
        fn decode(_ctx: &mut Ctx<'_>, _with: &Node) -> Option<()> {
            Some(())
        }
        fn read_only(&self, _params: &Value) -> bool {
            true
        }
        fn describe(&self, _params: &Value) -> String {
            "panic".into()
        }
        async fn preflight(
            &self,
            _p: &(),
            _raw: &Value,
            _ctx: &StepContext,
        ) -> Result<Preflight, ActionError> {
            panic!("preflight of a broken check");
        }
        async fn execute(&self, _p: &(), _ctx: &StepContext) -> Result<Outputs, ActionError> {
            panic!("execute of a broken check");
        }
    }

    fn registry() -> Arc<Registry> {
        let kinds: Vec<Box<dyn Action>> = vec![
            Box::new(crate::actions::wait::Wait),
            Box::new(crate::actions::exec::Exec),
            Box::new(crate::actions::notify::Notify),
            Box::new(Panics),
            Box::new(ChecksRun),
        ];
        Arc::new(Registry::new(kinds).expect("distinct kinds"))
    }

    /// A `checks.run` step over a check set written to a fresh directory,
    /// with its context (keep the directory alive while it runs).
    fn prepared_set(
        set: &str,
    ) -> (
        tempfile::TempDir,
        StepContext,
        Box<dyn crate::action::PreparedStep>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("set.yaml"), set).expect("write check set");
        let registry = registry();
        let ctx = ctx(dir.path(), registry.clone());
        let step = registry
            .get("checks.run")
            .expect("checks.run")
            .prepare(&json!({"file": "set.yaml"}))
            .expect("decodes");
        (dir, ctx, step)
    }

    fn ctx(dir: &Path, registry: Arc<Registry>) -> StepContext {
        let store: Arc<dyn Store> = Arc::new(DirStore::open(dir.join("state")).expect("state dir"));
        StepContext {
            run_id: "test".into(),
            step_id: "smoke".into(),
            mode: Mode::Drill,
            env: None,
            target_region: None,
            store,
            options: RunOptions::default(),
            operator: "test".into(),
            started_by: "test".into(),
            attempt: 1,
            deadline: Instant::now() + Duration::from_secs(10),
            failed_at: None,
            runbook_dir: dir.to_path_buf(),
            progress: action::no_progress(),
            checkpoints: action::Checkpoints::none(),
            registry,
        }
    }

    /// Validates `text` as a check set; returns the rendered diagnostics.
    fn validate(text: &str) -> (Diagnostics, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("set.yaml");
        std::fs::write(&path, text).expect("write check set");
        let mut d = Diagnostics::default();
        load(&path, None, &registry(), &mut d);
        let r = d.render();
        (d, r)
    }

    #[test]
    fn empty_and_malformed_lists_are_located_errors() {
        let (d, r) = validate("name: x\nchecks: []\n");
        assert!(d.has_errors(), "an empty set is an error");
        assert!(
            r.contains("set.yaml:2:9") && r.contains("has no checks"),
            "{r}"
        );
        let (d, r) = validate("name: x\nchecks: {id: a}\n");
        assert!(d.has_errors(), "a mapping is not a list");
        assert!(
            r.contains("set.yaml:2:9") && r.contains("a list of checks"),
            "{r}"
        );
        let (d, r) = validate("name: x\nchecks: [just-a-string]\n");
        assert!(d.has_errors() && r.contains("set.yaml:2:10"), "{r}");
        let (d, r) = validate(
            "checks:\n  - {id: a, action: wait, with: {duration: 1ms}}\n  - {id: a, action: wait, with: {duration: 1ms}}\n",
        );
        assert!(d.has_errors() && r.contains("`a` is used twice"), "{r}");
    }

    #[test]
    fn a_check_that_changes_something_is_a_located_error() {
        let (d, r) =
            validate("checks:\n  - id: touch\n    action: exec\n    with: {argv: [touch, x]}\n");
        assert!(d.has_errors(), "{r}");
        assert!(r.contains("set.yaml:3:13"), "located at the action: {r}");
        assert!(
            r.contains("check `touch` uses `exec`, which is not read-only"),
            "{r}"
        );
        let (d, r) = validate("checks:\n  - id: w\n    action: wait\n    with: {duration: 1ms}\n");
        assert!(!d.has_errors(), "{r}");
        let (d, r) =
            validate("checks:\n  - id: page\n    action: notify\n    with: {message: hi}\n");
        assert!(d.has_errors() && r.contains("set.yaml:3:13"), "{r}");
        assert!(r.contains("`notify`, which is not a check"), "{r}");
    }

    #[tokio::test]
    async fn a_panicking_check_fails_the_set_in_execute_and_preflight() {
        let (_dir, ctx, step) = prepared_set("checks:\n  - {id: boom, action: test.panics}\n  - {id: fine, action: wait, with: {duration: 1ms}}\n");

        let e = step.execute(&ctx).await.expect_err("a panic is a failure");
        let msg = e.to_string();
        assert!(msg.starts_with("1 of 2 checks failed: boom:"), "{msg}");
        assert!(msg.contains("panicked"), "{msg}");

        let p = step.preflight(&ctx).await.expect("preflight reports it");
        assert_eq!(p.verdict, Verdict::Problem, "{:?}", p.lines);
        assert_eq!(p.lines[0], "1 of 2 checks fail now: boom");
        assert!(
            p.lines
                .iter()
                .any(|l| l.starts_with("boom: the check panicked")),
            "{:?}",
            p.lines
        );
    }

    #[tokio::test]
    async fn preflight_calls_each_checks_preflight_not_its_execute() {
        // A check set is validated read-only, but the runner itself must
        // not call execute either: `wait`'s preflight returns at once while
        // its execute would sleep for an hour.
        let (_dir, ctx, step) =
            prepared_set("checks:\n  - {id: slow, action: wait, with: {duration: 1h}}\n");
        let p = tokio::time::timeout(Duration::from_secs(5), step.preflight(&ctx))
            .await
            .expect("the preflight ran the check's execute (it sleeps)")
            .expect("preflight");
        assert_eq!(p.verdict, Verdict::Passes, "{:?}", p.lines);
        assert_eq!(p.lines[0], "1 checks pass now");
    }
}
