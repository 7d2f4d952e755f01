//! The drill scheduler behind `drctl daemon`: which drills are due, who
//! runs them, and what happened to the slots nobody ran.
//!
//! # Guarantees
//! - **One leader.** A daemon schedules only while it holds the exclusive
//!   store lease [`LEADER_LEASE`]; others wait. The lease is fenced like a
//!   run's, so a paused leader that lost it cannot act on its stale view.
//! - **Each slot once.** Before a drill runs, its slot is claimed in the
//!   store (`drill-schedule/NAME`) by compare-and-set, with the run id
//!   chosen up front. Two daemons that both believe they lead (a lease
//!   expiring under a paused process) cannot both claim one slot.
//! - **Nothing forgotten.** Missed slots are appended to the
//!   [`EVENTS`] history (run once late or skip, per the definition), and a
//!   slot whose run was left unfinished by a killed daemon is resumed by the
//!   next leader (`drctl resume` semantics, journaled as a resume). A
//!   slot whose run had ended when its daemon died is closed with that
//!   run's result (event `closed`); one whose journal cannot be read stays
//!   claimed until it can ([`RunState`]).
//!
//! # Caveats
//! The clock is the caller's (`now`); tests drive it by hand. A drill that
//! runs longer than its `max_runtime` is aborted through the store
//! (`drctl abort` semantics), which the engine journals with the reason.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::definition::DrillDef;
use crate::schedule::{self, MissedPolicy};
use crate::store::{Expect, Store, StoreError};

/// The store lease that elects the scheduling daemon.
pub const LEADER_LEASE: &str = "drill-scheduler";
/// Documents: the last slot each drill's scheduler handled.
pub const SLOTS: &str = "drill-schedule";
/// History: started, missed and resumed slots, for `drills list` and audits.
pub const EVENTS: &str = "drill-schedule-events";

/// What actually runs a drill (the CLI's drill command, in-process).
#[async_trait]
pub trait DrillRunner: Send + Sync {
    /// Runs `def` as run `run_id`; returns drctl's exit code for it.
    async fn run(&self, def: &DrillDef, run_id: &str) -> i32;
    /// Resumes an unfinished run; returns the exit code.
    async fn resume(&self, run_id: &str) -> i32;
    /// What the journal says of a claimed slot's run.
    async fn run_state(&self, run_id: &str) -> RunState;
}

/// The run of a slot still marked `running`, as its journal tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// No journal: the claiming daemon stopped before starting the run.
    Missing,
    /// Interrupted, or no closing record (killed): a run to resume. A
    /// run still alive elsewhere refuses the resume by its lease.
    Unfinished,
    /// It ended (succeeded, failed, aborted) with this exit code, but the
    /// daemon stopped before recording it on the slot.
    Ended(i32),
    /// The journal cannot be read now (the store failed, or the journal is
    /// damaged): the slot stays claimed; never taken for "not started".
    Unreadable(String),
}

/// What one tick did, per drill (for logs and `--once` output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// First sight of the drill: its schedule starts now.
    Registered,
    /// The claimed slot's run could not be read; the slot stays claimed.
    Unreadable {
        run_id: String,
        error: String,
    },
    Ran {
        slot: String,
        run_id: String,
        exit: i32,
    },
    Resumed {
        run_id: String,
        exit: i32,
    },
    Missed {
        slots: Vec<String>,
        more: bool,
    },
    /// Another daemon handled the slot first.
    LostRace,
    /// A claimed run could not be resumed now (still held, or interrupted
    /// again); it stays claimed.
    Busy {
        run_id: String,
        exit: i32,
    },
    Suspended,
    Unscheduled,
    NotDue {
        next: Option<String>,
    },
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// One pass over the definitions at `now`. Call it only while leading.
pub async fn tick(
    store: &Arc<dyn Store>,
    defs: &[DrillDef],
    now: DateTime<Utc>,
    runner: &dyn DrillRunner,
) -> Result<Vec<(String, Action)>, StoreError> {
    let mut out = Vec::with_capacity(defs.len());
    for def in defs {
        let a = tick_one(store, def, now, runner).await?;
        out.push((def.name.clone(), a));
    }
    Ok(out)
}

async fn event(store: &Arc<dyn Store>, e: Value) -> Result<(), StoreError> {
    store.append_history(EVENTS, &e).await
}

async fn tick_one(
    store: &Arc<dyn Store>,
    def: &DrillDef,
    now: DateTime<Utc>,
    runner: &dyn DrillRunner,
) -> Result<Action, StoreError> {
    let Some(sched) = &def.schedule else {
        return Ok(Action::Unscheduled);
    };
    let mut current = store.get_doc(SLOTS, &def.name).await?;
    // A slot claimed by a daemon that died before its run ended.
    let mut rewritten = false;
    if let Some(cur) = &current {
        if cur.doc.get("state").and_then(Value::as_str) == Some("running") {
            if let Some(run_id) = cur.doc.get("run_id").and_then(Value::as_str) {
                let run_id = run_id.to_string();
                match runner.run_state(&run_id).await {
                    RunState::Unfinished => {
                        let exit = runner.resume(&run_id).await;
                        // Still running elsewhere (its lease is live), or
                        // interrupted again: it stays claimed for later.
                        if exit == crate::exit::LOCK_HELD || exit == crate::exit::RUN_INTERRUPTED {
                            return Ok(Action::Busy { run_id, exit });
                        }
                        finish(store, def, cur.version, &cur.doc, exit).await?;
                        event(store, json!({"drill": def.name, "event": "resumed", "run_id": run_id, "exit": exit, "at": ts(now)})).await?;
                        return Ok(Action::Resumed { run_id, exit });
                    }
                    // Never started: the slot was claimed, nothing ran.
                    RunState::Missing => {
                        finish(store, def, cur.version, &cur.doc, -1).await?;
                        rewritten = true;
                        event(store, json!({"drill": def.name, "event": "missed", "slot": cur.doc.get("slot"), "reason": "the daemon that claimed it stopped before starting the run", "at": ts(now)})).await?;
                    }
                    // It ran to its end; only the slot's record is missing.
                    RunState::Ended(exit) => {
                        finish(store, def, cur.version, &cur.doc, exit).await?;
                        rewritten = true;
                        event(store, json!({"drill": def.name, "event": "closed", "run_id": run_id, "exit": exit, "reason": "the run had ended, but the daemon that ran it stopped before recording it", "at": ts(now)})).await?;
                    }
                    RunState::Unreadable(error) => {
                        tracing::warn!(drill = %def.name, run = %run_id, %error, "cannot read the claimed slot's run; it stays claimed");
                        return Ok(Action::Unreadable { run_id, error });
                    }
                }
            }
        }
    }
    if sched.suspend {
        return Ok(Action::Suspended);
    }
    if rewritten {
        current = store.get_doc(SLOTS, &def.name).await?;
    }
    let last = current.as_ref().and_then(|c| parse_ts(&c.doc, "handled"));
    let d = schedule::decide(&sched.cron, sched.missed, last, now);
    let (expect, base) = match &current {
        Some(c) => (Expect::Version(c.version), c.doc.clone()),
        None => (Expect::Absent, json!({})),
    };
    if current.is_none() {
        let doc = json!({"handled": d.handled.map(ts), "state": "idle"});
        return match store.put_doc(SLOTS, &def.name, &doc, expect).await {
            Ok(_) => Ok(Action::Registered),
            Err(StoreError::Conflict { .. }) => Ok(Action::LostRace),
            Err(e) => Err(e),
        };
    }
    if d.run.is_none() && d.missed.is_empty() {
        return Ok(Action::NotDue {
            next: sched.cron.next_after(now).map(ts),
        });
    }
    let run_id = d.run.map(|_| crate::engine::new_run_id());
    let mut doc = base;
    doc["handled"] = json!(d.handled.map(ts));
    doc["state"] = json!(if run_id.is_some() { "running" } else { "idle" });
    doc["run_id"] = json!(run_id);
    doc["slot"] = json!(d.run.map(ts));
    doc["claimed_at"] = json!(ts(now));
    let version = match store.put_doc(SLOTS, &def.name, &doc, expect).await {
        Ok(v) => v,
        Err(StoreError::Conflict { .. }) => return Ok(Action::LostRace),
        Err(e) => return Err(e),
    };
    let missed: Vec<String> = d.missed.iter().map(|t| ts(*t)).collect();
    if !missed.is_empty() {
        let policy = sched.missed.as_str();
        event(store, json!({"drill": def.name, "event": "missed", "slots": missed, "more": d.missed_truncated, "policy": policy, "at": ts(now)})).await?;
    }
    let (Some(slot), Some(run_id)) = (d.run, run_id) else {
        return Ok(Action::Missed {
            slots: missed,
            more: d.missed_truncated,
        });
    };
    event(store, json!({"drill": def.name, "event": "started", "slot": ts(slot), "run_id": run_id, "late_ms": (now - slot).num_milliseconds(), "at": ts(now)})).await?;
    let exit = run_bounded(store, def, &run_id, runner).await;
    crate::journal::test_crash_at("daemon-ran");
    // An interrupted drill (a signal, a lost lease) stays claimed: the next
    // leader resumes it.
    if exit != crate::exit::RUN_INTERRUPTED {
        finish(store, def, version, &doc, exit).await?;
    }
    Ok(Action::Ran {
        slot: ts(slot),
        run_id,
        exit,
    })
}

/// Runs the drill; past `max_runtime` asks the engine to abort it.
async fn run_bounded(
    store: &Arc<dyn Store>,
    def: &DrillDef,
    run_id: &str,
    runner: &dyn DrillRunner,
) -> i32 {
    let Some(limit) = def.max_runtime else {
        return runner.run(def, run_id).await;
    };
    let run = runner.run(def, run_id);
    tokio::pin!(run);
    tokio::select! {
        exit = &mut run => exit,
        _ = tokio::time::sleep(limit) => {
            let by = format!("drctl daemon: drill `{}` exceeded its max_runtime of {}", def.name, crate::duration::format_duration(limit));
            if let Err(e) = store.request_abort(run_id, &by).await {
                tracing::warn!(error = %e, run = run_id, "could not request the abort of an overrunning drill");
            }
            run.await
        }
    }
}

async fn finish(
    store: &Arc<dyn Store>,
    def: &DrillDef,
    version: u64,
    doc: &Value,
    exit: i32,
) -> Result<(), StoreError> {
    let mut done = doc.clone();
    done["state"] = json!("idle");
    done["last_exit"] = json!(exit);
    match store
        .put_doc(SLOTS, &def.name, &done, Expect::Version(version))
        .await
    {
        Ok(_) => Ok(()),
        // Another leader moved on meanwhile (it saw our run and left it).
        Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The next due instant over all active definitions (the daemon sleeps
/// until then, at most `cap`).
pub fn next_wake(defs: &[DrillDef], now: DateTime<Utc>, cap: Duration) -> Duration {
    defs.iter()
        .filter_map(|d| d.schedule.as_ref())
        .filter(|s| !s.suspend)
        .filter_map(|s| s.cron.next_after(now))
        .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
        .min()
        .unwrap_or(cap)
        .min(cap)
}

/// Whether a missed-run policy would run a slot this late (for `list`).
pub fn policy_text(p: MissedPolicy) -> &'static str {
    match p {
        MissedPolicy::RunOnce => "a missed run runs once, late",
        MissedPolicy::Skip => "a missed run is skipped and recorded",
    }
}
