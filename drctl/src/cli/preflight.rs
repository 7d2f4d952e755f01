//! `plan --check`'s judgement of one step: run its preflight (never its
//! `execute`), then decide whether "would fail now" is a problem or what
//! the run is expected to fix.
//!
//! The rule: a step whose preflight says [`Verdict::Problem`] is a problem
//! (nothing earlier can fix an unreachable target). One that says
//! [`Verdict::FailsNow`] is expected to pass later only when a step it
//! depends on (transitively, through `needs`) changes something, i.e. is
//! not read-only and not skipped; then the plan names those steps. Without
//! one (`confirm-outage` against a healthy primary), nothing in the run can
//! change the answer, so it must pass now or it is a problem.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::action::{ActionError, Preflight, PreparedStep, Registry, StepContext, Verdict};
use crate::runbook::{ExecutionPlan, Runbook};

/// How long one step's preflight may take in all. A probe that hangs (a
/// frozen server accepts TCP connections and never answers) is reported
/// as a problem of that step after this, not waited for.
pub const STEP_PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// The non-read-only steps each step depends on, transitively, in plan
/// order. `skipped` steps do not run, so they change nothing.
pub fn mutating_ancestors(
    rb: &Runbook,
    plan: &ExecutionPlan,
    kinds: &Registry,
    skipped: &BTreeSet<String>,
) -> HashMap<String, Vec<String>> {
    let order: HashMap<&str, usize> = plan
        .waves
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mutates = |id: &str| {
        !skipped.contains(id)
            && rb.step(id).is_some_and(|s| {
                kinds
                    .get(&s.action)
                    .is_none_or(|a| !a.read_only(&s.with.to_json()))
            })
    };
    let mut out = HashMap::new();
    for s in &rb.steps {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = s.needs.iter().map(|(n, _)| n.as_str()).collect();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.to_string()) {
                continue;
            }
            if let Some(dep) = rb.step(id) {
                todo.extend(dep.needs.iter().map(|(n, _)| n.as_str()));
            }
        }
        let mut m: Vec<String> = seen.into_iter().filter(|id| mutates(id)).collect();
        m.sort_by_key(|id| order.get(id.as_str()).copied().unwrap_or(usize::MAX));
        out.insert(s.id.clone(), m);
    }
    out
}

/// The parameters without the values that come from earlier steps'
/// outputs (`${steps.…}`, unknown before the run), and the keys removed.
/// The preflight then probes everything else: a step is not left unprobed
/// because one of its fields is a later value (promote's
/// `old_primary_lsn`).
pub fn without_step_refs(v: &Value) -> (Value, Vec<String>) {
    fn walk(v: &Value, path: &str, removed: &mut Vec<String>) -> Option<Value> {
        match v {
            Value::String(s) if s.contains("${steps.") => {
                removed.push(path.to_string());
                None
            }
            Value::Object(o) => Some(Value::Object(
                o.iter()
                    .filter_map(|(k, x)| {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        walk(x, &p, removed).map(|x| (k.clone(), x))
                    })
                    .collect(),
            )),
            Value::Array(a) => {
                let items: Vec<Value> = a
                    .iter()
                    .enumerate()
                    .filter_map(|(i, x)| walk(x, &format!("{path}.{i}"), removed))
                    .collect();
                // A list that lost an item is not what the run will pass.
                if items.len() == a.len() {
                    Some(Value::Array(items))
                } else {
                    None
                }
            }
            other => Some(other.clone()),
        }
    }
    let mut removed = Vec::new();
    let out = walk(v, "", &mut removed).unwrap_or(Value::Null);
    (out, removed)
}

/// Runs one step's preflight within [`STEP_PREFLIGHT_TIMEOUT`]. An error
/// or a timeout is a problem of the step.
pub async fn run(
    prepared: Result<Box<dyn PreparedStep>, ActionError>,
    ctx: &StepContext,
) -> Preflight {
    let step = match prepared {
        Ok(s) => s,
        Err(e) => return Preflight::problem(e.to_string()),
    };
    let limit = ctx.deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(limit, step.preflight(ctx)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => Preflight::problem(crate::diag::error_chain(&e)),
        Err(_) => Preflight::problem(format!(
            "preflight did not finish within {}",
            crate::duration::format_duration(limit)
        )),
    }
}

/// A judged preflight: its lines as the plan prints them, and whether the
/// step is a problem.
pub struct Judged {
    /// `(marker, text)`, e.g. `("PROBLEM:", "postgres … did not answer")`.
    pub lines: Vec<(&'static str, String)>,
    pub problem: bool,
    pub json: Value,
}

/// Applies the rule of this module to a step's preflight. A step with
/// `on_failure: continue` (`tolerated`) cannot fail the run: what would be
/// a problem is a warning.
pub fn judge(p: &Preflight, after: Earlier<'_>, tolerated: bool) -> Judged {
    let mut j = judge_strict(p, after);
    if j.problem && tolerated {
        for (marker, _) in &mut j.lines {
            if *marker == "PROBLEM:" {
                *marker = "WARNING:";
            }
        }
        j.lines.push((
            "WARNING:",
            "on_failure: continue: the run would go on without it".into(),
        ));
        j.problem = false;
        j.json["problem"] = json!(false);
        j.json["warning"] = json!(true);
    }
    j
}

/// What changes the systems before a step runs, so that a check failing
/// now may pass by then.
#[derive(Clone, Copy)]
pub enum Earlier<'a> {
    /// The changing steps it depends on, in plan order (maybe none).
    Steps(&'a [String]),
    /// No changing step, but a lab drill kills the primary region before
    /// step 1: a check of the outage (`confirm-outage`) fails now and is
    /// expected to pass once the failure is injected.
    Injection,
}

fn judge_strict(p: &Preflight, after: Earlier<'_>) -> Judged {
    let (lines, problem, expected_after) = match p.verdict {
        Verdict::Passes => (
            p.lines.iter().map(|l| ("check:", l.clone())).collect(),
            false,
            None,
        ),
        Verdict::FailsNow if !matches!(after, Earlier::Steps([])) => {
            let (text, names) = match after {
                Earlier::Steps(steps) => (
                    format!(
                        "fails now; expected to pass after {} (it depends on {})",
                        steps
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        if steps.len() == 1 { "it" } else { "them" }
                    ),
                    json!(steps),
                ),
                Earlier::Injection => (
                    "fails now; expected to pass after the drill's injected failure (kill -9 of the primary region)".to_string(),
                    json!([]),
                ),
            };
            let mut v = vec![("expected:", text)];
            v.extend(p.lines.iter().map(|l| ("  now:", l.clone())));
            (v, false, Some(names))
        }
        Verdict::FailsNow => {
            let mut v: Vec<_> = p.lines.iter().map(|l| ("PROBLEM:", l.clone())).collect();
            v.push((
                "PROBLEM:",
                "it must pass now: no step before it changes anything".into(),
            ));
            (v, true, None)
        }
        Verdict::Problem => (
            p.lines.iter().map(|l| ("PROBLEM:", l.clone())).collect(),
            true,
            None,
        ),
    };
    let json = json!({
        "verdict": p.verdict,
        "lines": p.lines,
        "problem": problem,
        "expected_after": expected_after,
        "expected_after_injection": matches!(after, Earlier::Injection) && expected_after.is_some(),
    });
    Judged {
        lines,
        problem,
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_output_references_are_left_out_and_named() {
        let v = json!({
            "server": {"host": "h", "port": 5432},
            "old_primary_lsn": "${steps.fence.outputs.final_lsn}",
            "list": ["a", "${steps.x.outputs.y}"],
        });
        let (out, removed) = without_step_refs(&v);
        assert_eq!(out, json!({"server": {"host": "h", "port": 5432}}));
        assert_eq!(removed, vec!["list.1", "old_primary_lsn"]);
    }

    #[test]
    fn expected_after_names_the_running_mutating_steps_before_a_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rb.yaml");
        std::fs::write(
            &path,
            "name: x\nsteps:\n  - {id: look, action: wait, with: {duration: 1ms}}\n  - {id: act, action: exec, needs: [look], with: {argv: [\"true\"], idempotent: true}}\n  - {id: act2, action: exec, needs: [act], with: {argv: [\"true\"], idempotent: true}}\n  - {id: after, action: wait, needs: [act2], with: {duration: 1ms}}\n  - {id: beside, action: wait, needs: [look], with: {duration: 1ms}}\n",
        )
        .expect("write runbook");
        let kinds = crate::registry::standard();
        let (rb, _) = crate::runbook::load_runbook(&path).expect("parses");
        let (d, plan) = crate::runbook::validate_runbook(&rb, None, &kinds);
        assert!(!d.has_errors(), "{}", d.render());
        let plan = plan.expect("a plan");
        let m = mutating_ancestors(&rb, &plan, &kinds, &BTreeSet::new());
        assert_eq!(m["after"], ["act", "act2"], "transitive, in plan order");
        assert!(m["beside"].is_empty(), "only a read-only step before it");
        assert!(m["look"].is_empty());
        let skipped: BTreeSet<String> = ["act".to_string()].into();
        let m = mutating_ancestors(&rb, &plan, &kinds, &skipped);
        assert_eq!(m["after"], ["act2"], "a skipped step changes nothing");
    }

    #[test]
    fn failing_now_is_expected_only_after_a_mutating_step() {
        let p = Preflight::fails_now("GET x -> fails now: 503");
        let first = judge(&p, Earlier::Steps(&[]), false);
        assert!(first.problem, "nothing before it can change the answer");
        let later = judge(&p, Earlier::Steps(&["promote".into(), "dns".into()]), false);
        assert!(!later.problem);
        assert_eq!(
            later.lines[0].1,
            "fails now; expected to pass after `promote`, `dns` (it depends on them)"
        );
        let blocked = judge(
            &Preflight::problem("unreachable"),
            Earlier::Steps(&["fence".into()]),
            false,
        );
        assert!(blocked.problem, "a problem stays one whatever came before");
        assert!(!judge(&Preflight::ok("fine"), Earlier::Steps(&[]), false).problem);
        let injected = judge(&p, Earlier::Injection, false);
        assert!(!injected.problem);
        assert!(
            injected.lines[0].1
                == "fails now; expected to pass after the drill's injected failure (kill -9 of the primary region)",
            "{:?}",
            injected.lines
        );
        let tolerated = judge(
            &Preflight::problem("unreachable"),
            Earlier::Steps(&[]),
            true,
        );
        assert!(
            !tolerated.problem,
            "on_failure: continue cannot fail the run"
        );
        assert_eq!(tolerated.lines[0], ("WARNING:", "unreachable".to_string()));
    }
}
