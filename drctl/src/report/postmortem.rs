//! A postmortem skeleton in Markdown (`drctl report RUN --postmortem`):
//! the headings an incident review fills in, with every fact the journal
//! holds already written (impact, detection, the timeline, failed
//! attempts, retries, slow steps against the previous drill) and prompts
//! in italics where only people know the answer.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{cell, dur_ms, facts, md_evidence, status_word, Report};
use crate::engine::view::{SpanKind, StepView};
use crate::journal::{format_ms, StepStatus};
use crate::measure::Verdict;

/// A step counts as slower than in the previous drill from this much
/// more time and this ratio on (smaller differences are noise).
const SLOWER_MS: u64 = 50;
const SLOWER_RATIO: f64 = 1.2;

/// A step slower than in the previous drill: id, now, then.
type Slow = (String, u64, u64);

fn slow_steps(r: &Report<'_>) -> Vec<Slow> {
    let Some(p) = &r.inputs.previous else {
        return Vec::new();
    };
    let before: HashMap<&str, u64> = p.steps.iter().map(|(s, d)| (s.as_str(), *d)).collect();
    r.view
        .steps
        .iter()
        .filter_map(|s| {
            let now = s.duration_ms?;
            let then = *before.get(s.id.as_str())?;
            (now >= then + SLOWER_MS && now as f64 >= then as f64 * SLOWER_RATIO)
                .then(|| (s.id.clone(), now, then))
        })
        .collect()
}

pub fn markdown(r: &Report<'_>) -> String {
    let view = r.view;
    let m = r.m.as_ref();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Postmortem: `{}` {} ({})",
        view.runbook.name,
        view.mode.as_str(),
        view.run_id
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "> Skeleton prefilled from the journal of run {}; the facts are drctl's, the _italic prompts_ are for the review to answer.",
        view.run_id
    );
    let _ = writeln!(o);

    let _ = writeln!(o, "## Impact");
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "- Outcome: the run {}{}.",
        view.status_text(),
        view.reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    if let (Some(s), Some(t)) = (&view.source_region, &view.target_region) {
        let _ = writeln!(o, "- Regions: {s} -> {t}.");
    }
    match m {
        Some(m) => {
            let _ = writeln!(o, "- Recovery: {}.", crate::measure::rto_line(m));
            let _ = writeln!(o, "- Data loss: {}.", crate::measure::rpo_line(m));
        }
        None => {
            let _ = writeln!(
                o,
                "- Recovery and data loss: not measured (no declared failure time in the journal)."
            );
        }
    }
    for d in facts::discarded(view) {
        let _ = writeln!(o, "- Failback: {}.", d.sentence());
    }
    let _ = writeln!(
        o,
        "- _Who and what was affected (users, services, revenue), and for how long?_"
    );
    let _ = writeln!(o);

    let _ = writeln!(o, "## Detection");
    let _ = writeln!(o);
    match (m, view.failed_at_ms) {
        (Some(m), Some(fa)) => {
            let _ = writeln!(
                o,
                "- Failure declared at {} ({}).",
                format_ms(fa),
                m.failure_time_source
            );
            if view.started_ms >= fa {
                let _ = writeln!(
                    o,
                    "- drctl started {} after it, at {}, by {}.",
                    dur_ms(view.started_ms - fa),
                    format_ms(view.started_ms),
                    view.operator
                );
            } else {
                let _ = writeln!(
                    o,
                    "- drctl started at {} by {} (before the declared failure time).",
                    format_ms(view.started_ms),
                    view.operator
                );
            }
        }
        _ => {
            let _ = writeln!(
                o,
                "- No failure time was declared (`--failed-at`); drctl started at {} by {}.",
                format_ms(view.started_ms),
                view.operator
            );
        }
    }
    let _ = writeln!(
        o,
        "- _How was the failure noticed (alert, customer, drill), and could it have been sooner?_"
    );
    let _ = writeln!(o);

    timeline(&mut o, r);

    let slow = slow_steps(r);
    let _ = writeln!(o, "## What went well");
    let _ = writeln!(o);
    let first_try = view
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Succeeded && s.attempt_failures.is_empty())
        .count();
    let _ = writeln!(
        o,
        "- {first_try} of {} steps succeeded at the first attempt.",
        view.steps.len()
    );
    if let Some(m) = m {
        if m.rto_verdict == Verdict::Met {
            let _ = writeln!(o, "- The RTO target was met.");
        }
        if m.rpo_verdict == Verdict::Met {
            let _ = writeln!(o, "- The RPO target was met.");
        }
    }
    let _ = writeln!(o, "- _What else helped (people, tooling, preparation)?_");
    let _ = writeln!(o);

    let _ = writeln!(o, "## What went wrong");
    let _ = writeln!(o);
    let mut wrong = 0;
    for s in &view.steps {
        for (n, e) in &s.attempt_failures {
            wrong += 1;
            let _ = writeln!(
                o,
                "- `{}` attempt {n} failed and was retried: {}",
                s.id,
                super::one_line(&e.message)
            );
        }
        if let (StepStatus::Failed, Some(e)) = (s.status, &s.error) {
            wrong += 1;
            let _ = writeln!(
                o,
                "- `{}` failed ({}): {}{}",
                s.id,
                e.kind,
                super::one_line(&e.message),
                e.hint
                    .as_ref()
                    .map(|h| format!(" (hint: {h})"))
                    .unwrap_or_default()
            );
        }
        if s.status == StepStatus::Running {
            wrong += 1;
            let _ = writeln!(o, "- `{}` was interrupted and never finished.", s.id);
        }
    }
    if let Some(p) = &r.inputs.previous {
        for (id, now, then) in &slow {
            wrong += 1;
            let _ = writeln!(
                o,
                "- `{id}` took {} against {} in the previous drill ({}).",
                dur_ms(*now),
                dur_ms(*then),
                p.run_id
            );
        }
    }
    if let Some(m) = m {
        for (what, v) in [("RTO", &m.rto_verdict), ("RPO", &m.rpo_verdict)] {
            if matches!(
                v,
                Verdict::Missed | Verdict::NotMet(_) | Verdict::Unknown(_)
            ) {
                wrong += 1;
                let _ = writeln!(o, "- {what} target: {}.", v.text());
            }
        }
    }
    if wrong == 0 {
        let _ = writeln!(
            o,
            "- The journal shows no failed attempt, failure or slow step."
        );
    }
    let _ = writeln!(o, "- _What else went wrong, and why (root cause)?_");
    let _ = writeln!(o);

    let _ = writeln!(o, "## Action items");
    let _ = writeln!(o);
    let _ = writeln!(o, "| # | Action | Owner | Due |");
    let _ = writeln!(o, "|---|---|---|---|");
    let mut n = 0;
    for s in view.steps.iter().filter(|s| s.status == StepStatus::Failed) {
        n += 1;
        let _ = writeln!(
            o,
            "| {n} | Fix the cause of the `{}` failure: {} | _owner_ | _date_ |",
            s.id,
            cell(
                &s.error
                    .as_ref()
                    .map(|e| super::one_line(&e.message))
                    .unwrap_or_default()
            )
        );
    }
    let _ = writeln!(o, "| {} | _action_ | _owner_ | _date_ |", n + 1);
    let _ = writeln!(o);

    let _ = writeln!(o, "## Runbook changes to consider");
    let _ = writeln!(o);
    let mut any = false;
    for s in view.steps.iter().filter(|s| !s.attempt_failures.is_empty()) {
        any = true;
        let _ = writeln!(
            o,
            "- `{}` needed {} attempts: fix what made it fail, or give it a longer `timeout` or `retries`.",
            s.id,
            s.attempt_failures.len() + 1
        );
    }
    for r in &view.resumes {
        for (step, d) in &r.decisions {
            if d.starts_with("marked done") {
                any = true;
                let _ = writeln!(
                    o,
                    "- `{step}` was marked done by hand on resume: make it idempotent or add a check that proves it."
                );
            }
        }
    }
    for (id, now, then) in &slow {
        any = true;
        let _ = writeln!(
            o,
            "- `{id}` got slower ({} from {}): check its dependencies or its timeout.",
            dur_ms(*now),
            dur_ms(*then)
        );
    }
    if let Some(m) = m {
        if m.proof_steps.is_empty() {
            any = true;
            let _ = writeln!(
                o,
                "- No step proves recovery: add a check (`http.check`, `checks.run`) so an RTO can be measured."
            );
        }
    }
    if !any {
        let _ = writeln!(o, "- The journal suggests none.");
    }
    let _ = writeln!(
        o,
        "- _What should the runbook or the playbook say differently?_"
    );
    let _ = writeln!(o);
    md_evidence(&mut o, r);
    o
}

/// The timeline prefilled from the journal: failure, start, each step's
/// attempts and end, decisions, end of the run; times since the failure.
fn timeline(o: &mut String, r: &Report<'_>) {
    let view = r.view;
    let zero = view.failed_at_ms.unwrap_or(view.started_ms);
    let since = |t: u64| {
        if t >= zero {
            format!("+{}", dur_ms(t - zero))
        } else {
            format!("-{}", dur_ms(zero - t))
        }
    };
    // A row per event of every step: kept as references into the view
    // and formatted as written, so 100,000 records cost no String each.
    let mut rows: Vec<(u64, Row<'_>)> = Vec::new();
    if let Some(fa) = view.failed_at_ms {
        rows.push((fa, Row::Text("failure declared".into())));
    }
    rows.push((
        view.started_ms,
        Row::Text(format!("run started by {}", view.operator)),
    ));
    // Decisions before the steps: at equal times (an approval given in the
    // millisecond its gate ends) the decision reads first.
    for d in facts::decisions(view) {
        rows.push((
            d.ts_ms,
            Row::Text(format!("{} by {}: {}", d.what, d.who, d.detail)),
        ));
    }
    for s in &view.steps {
        for sp in &s.spans {
            match sp.kind {
                SpanKind::FailedAttempt => {
                    if let Some(e) = sp.end_ms {
                        rows.push((e, Row::Retried(s)));
                    }
                }
                SpanKind::Interrupted => rows.push((sp.start_ms, Row::Interrupted(s))),
                SpanKind::RetryWait | SpanKind::Attempt => {}
            }
        }
        if let Some(t) = s.started_ms {
            rows.push((t, Row::Started(s)));
        }
        if let Some(t) = s.finished_ms {
            rows.push((t, Row::Ended(s)));
        }
    }
    // Recovery before the run's end: at equal times it reads first.
    if let Some(m) = r.m.as_ref() {
        if let (Some(at), Some(rto)) = (m.recovered_at_ms, m.rto_ms) {
            rows.push((
                at,
                Row::Text(format!("recovery shown (RTO {})", dur_ms(rto))),
            ));
        }
    }
    if let Some(f) = view.finished_ms {
        rows.push((f, Row::Text(format!("run ended {}", view.status_text()))));
    }
    // Stable: equal times keep the order above.
    rows.sort_by_key(|(t, _)| *t);
    let _ = writeln!(o, "## Timeline");
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| Time | Since {} | Event |",
        if view.failed_at_ms.is_some() {
            "failure"
        } else {
            "start"
        }
    );
    let _ = writeln!(o, "|---|---|---|");
    for (t, e) in rows {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            format_ms(t),
            since(t),
            cell(&e.text())
        );
    }
    let _ = writeln!(
        o,
        "| _time_ | | _events outside drctl (alerts, calls, decisions)_ |"
    );
    let _ = writeln!(o);
}

/// One timeline row's event.
enum Row<'a> {
    Text(String),
    Retried(&'a StepView),
    Interrupted(&'a StepView),
    Started(&'a StepView),
    Ended(&'a StepView),
}

impl Row<'_> {
    fn text(&self) -> std::borrow::Cow<'_, str> {
        let s = match self {
            Row::Text(t) => return t.as_str().into(),
            Row::Retried(s) => format!("`{}` attempt failed; retrying", s.id),
            Row::Interrupted(s) => format!("`{}` started; interrupted", s.id),
            Row::Started(s) => format!("`{}` ({}) started", s.id, s.action),
            Row::Ended(s) => match s.status {
                StepStatus::Skipped => format!(
                    "`{}` skipped: {}",
                    s.id,
                    s.skip_reason.as_deref().unwrap_or("")
                ),
                st => format!(
                    "`{}` {}{}",
                    s.id,
                    status_word(st),
                    s.duration_ms
                        .map(|d| format!(" after {}", dur_ms(d)))
                        .unwrap_or_default()
                ),
            },
        };
        s.into()
    }
}
