//! When a drill is due: cron expressions evaluated in a named time zone.
//!
//! A schedule is a five-field cron expression (parsed by `croner`) and an
//! IANA time zone (`chrono-tz`), the pair a Kubernetes CronJob carries as
//! `spec.schedule` and `spec.timeZone`, so the in-process scheduler and the
//! generated CronJobs agree on every run time. All arithmetic is on UTC
//! instants; the time zone only decides which instants match.
//!
//! Nothing here reads the clock: callers pass `now`, so the scheduler is
//! tested with a controllable clock and no sleeps.
//!
//! # Caveats
//! Across a DST change a local time can occur twice (autumn) or not at all
//! (spring). `croner` runs a job at the first of two ambiguous instants and
//! moves a job inside a spring gap to the first instant after the gap; the
//! tests in this module pin that behaviour down. Other cron implementations
//! (a Kubernetes CronJob's controller among them) may treat those instants
//! differently, so the drills README advises against local times inside
//! a DST change.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use thiserror::Error;

/// Why a schedule is invalid; the definition loader locates it.
#[derive(Debug, Error)]
pub enum ScheduleError {
    #[error("`{expr}` is not a valid cron expression: {source}")]
    Cron {
        expr: String,
        #[source]
        source: croner::errors::CronError,
    },
    #[error("`{expr}` has {fields} fields; a drill schedule has five (minute hour day-of-month month day-of-week)")]
    Fields { expr: String, fields: usize },
    #[error("`{0}` is not an IANA time zone name")]
    TimeZone(String),
    #[error("`{0}` never matches a date")]
    Never(String),
}

/// What to do when the scheduler was not running at a due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedPolicy {
    /// Run once, late, for however many slots were missed (like a CronJob
    /// with `startingDeadlineSeconds` unset); the others are recorded as
    /// missed.
    RunOnce,
    /// Record every missed slot and wait for the next one.
    Skip,
}

impl MissedPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MissedPolicy::RunOnce => "run-once",
            MissedPolicy::Skip => "skip",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "run-once" => Some(MissedPolicy::RunOnce),
            "skip" => Some(MissedPolicy::Skip),
            _ => None,
        }
    }
}

/// A cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    tz: Tz,
    cron: croner::Cron,
}

impl Schedule {
    /// Parses `expr` (five fields) in time zone `tz` (`UTC` when absent).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, ScheduleError> {
        let fields = expr.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError::Fields {
                expr: expr.to_string(),
                fields,
            });
        }
        let tz = match tz {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| ScheduleError::TimeZone(name.into()))?,
        };
        let cron = croner::Cron::new(expr)
            .parse()
            .map_err(|source| ScheduleError::Cron {
                expr: expr.to_string(),
                source,
            })?;
        let s = Schedule {
            expr: expr.to_string(),
            tz,
            cron,
        };
        // An expression such as `0 0 31 2 *` parses but never fires.
        if s.next_after(Utc.timestamp_opt(0, 0).single().unwrap_or_default())
            .is_none()
        {
            return Err(ScheduleError::Never(expr.to_string()));
        }
        Ok(s)
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The IANA name, as a CronJob's `spec.timeZone` takes it.
    pub fn tz_name(&self) -> &'static str {
        self.tz.name()
    }

    /// The first due instant strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Due instants in `(after, until]`, oldest first, at most `limit`
    /// (a scheduler down for a year must not build a list of 500 000
    /// minutes); the second value says whether more were left out.
    pub fn due_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let mut out = Vec::new();
        let mut t = after;
        while let Some(n) = self.next_after(t) {
            if n > until {
                return (out, false);
            }
            if out.len() == limit {
                return (out, true);
            }
            out.push(n);
            t = n;
        }
        (out, false)
    }

    /// The longest gap between two consecutive due instants over the
    /// `samples` slots after `from`: what "overdue" is measured against (a
    /// monthly drill is overdue after the longest month, not after 28 days).
    pub fn period_after(&self, from: DateTime<Utc>, samples: usize) -> Option<chrono::Duration> {
        let mut prev = self.next_after(from)?;
        let mut longest = chrono::Duration::zero();
        for _ in 0..samples.max(1) {
            let n = self.next_after(prev)?;
            longest = longest.max(n - prev);
            prev = n;
        }
        Some(longest)
    }
}

/// What the scheduler does for one drill at `now`, given the last slot it
/// already handled (ran or recorded as missed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The slot to run now, if any (the newest due one).
    pub run: Option<DateTime<Utc>>,
    /// Due slots that will not run (older ones, or all under `Skip`).
    pub missed: Vec<DateTime<Utc>>,
    /// Whether more missed slots than listed were left out.
    pub missed_truncated: bool,
    /// The slot the scheduler has handled after this decision (to store).
    pub handled: Option<DateTime<Utc>>,
}

/// How late a slot may start and still count as on time: within this of
/// its due instant a slot runs under either policy.
pub const ON_TIME: chrono::Duration = chrono::Duration::minutes(5);

/// Decides what is due. `last_handled` is `None` for a drill the scheduler
/// never saw: it starts from `now` (no run for slots before it existed).
pub fn decide(
    s: &Schedule,
    policy: MissedPolicy,
    last_handled: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Decision {
    let Some(after) = last_handled else {
        return Decision {
            run: None,
            missed: Vec::new(),
            missed_truncated: false,
            handled: Some(now),
        };
    };
    let (mut due, truncated) = s.due_between(after, now, 1000);
    let Some(newest) = due.pop() else {
        return Decision {
            run: None,
            missed: Vec::new(),
            missed_truncated: false,
            handled: Some(after),
        };
    };
    let on_time = now - newest <= ON_TIME;
    let run = (on_time || policy == MissedPolicy::RunOnce).then_some(newest);
    if run.is_none() {
        due.push(newest);
    }
    Decision {
        run,
        missed: due,
        missed_truncated: truncated,
        handled: Some(newest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn rejects_bad_expressions_and_zones() {
        assert!(matches!(
            Schedule::parse("every monday", None),
            Err(ScheduleError::Fields { fields: 2, .. })
        ));
        assert!(matches!(
            Schedule::parse("0 25 * * *", None),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            Schedule::parse("0 3 * * 1", Some("Mars/Olympus")),
            Err(ScheduleError::TimeZone(_))
        ));
        assert!(matches!(
            Schedule::parse("0 0 31 2 *", None),
            Err(ScheduleError::Never(_))
        ));
    }

    #[test]
    fn next_run_in_a_named_zone_across_spring_forward() {
        // Europe/Berlin goes from 02:00 CET to 03:00 CEST on 2026-03-29.
        let s = Schedule::parse("30 1 * * *", Some("Europe/Berlin")).unwrap();
        // 01:30 CET on the 29th is 00:30 UTC; the day after, 01:30 CEST is 23:30 UTC.
        assert_eq!(
            s.next_after(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T00:30:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-03-29T00:30:00Z")),
            Some(utc("2026-03-29T23:30:00Z"))
        );
        // 02:30 does not exist on the 29th: croner runs at the first instant
        // after the gap (03:00 CEST = 01:00 UTC), once.
        let gap = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let (due, _) =
            gap.due_between(utc("2026-03-28T12:00:00Z"), utc("2026-03-30T12:00:00Z"), 10);
        assert_eq!(
            due,
            vec![utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")]
        );
    }

    #[test]
    fn ambiguous_autumn_time_runs_once() {
        // 2026-10-25: Berlin falls back from 03:00 CEST to 02:00 CET, so
        // 02:30 happens twice (00:30 and 01:30 UTC); the drill runs once.
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let (due, _) = s.due_between(utc("2026-10-24T12:00:00Z"), utc("2026-10-26T12:00:00Z"), 10);
        assert_eq!(
            due,
            vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
    }

    #[test]
    fn period_is_the_longest_gap() {
        let monthly = Schedule::parse("0 3 1 * *", None).unwrap();
        let p = monthly
            .period_after(utc("2026-01-15T00:00:00Z"), 12)
            .unwrap();
        assert_eq!(p, chrono::Duration::days(31));
    }

    #[test]
    fn missed_runs_follow_the_policy() {
        let s = Schedule::parse("0 3 * * *", None).unwrap();
        let last = utc("2026-12-01T03:00:00Z");
        // Down for three days, back at noon: three slots missed.
        let now = utc("2026-12-04T12:00:00Z");
        let once = decide(&s, MissedPolicy::RunOnce, Some(last), now);
        assert_eq!(once.run, Some(utc("2026-12-04T03:00:00Z")));
        assert_eq!(
            once.missed,
            vec![utc("2026-12-02T03:00:00Z"), utc("2026-12-03T03:00:00Z")]
        );
        assert_eq!(once.handled, Some(utc("2026-12-04T03:00:00Z")));
        let skip = decide(&s, MissedPolicy::Skip, Some(last), now);
        assert_eq!(skip.run, None);
        assert_eq!(skip.missed.len(), 3);
        assert_eq!(skip.handled, once.handled);
        // On time (within ON_TIME of the slot) both policies run it.
        let just = utc("2026-12-02T03:01:00Z");
        assert_eq!(
            decide(&s, MissedPolicy::Skip, Some(last), just).run,
            Some(utc("2026-12-02T03:00:00Z"))
        );
        // Nothing due: nothing changes.
        let d = decide(
            &s,
            MissedPolicy::RunOnce,
            Some(last),
            utc("2026-12-01T04:00:00Z"),
        );
        assert_eq!((d.run, d.missed.len(), d.handled), (None, 0, Some(last)));
        // A drill seen for the first time starts from now.
        let first = decide(&s, MissedPolicy::RunOnce, None, now);
        assert_eq!((first.run, first.handled), (None, Some(now)));
    }

    #[test]
    fn a_long_outage_is_bounded() {
        let s = Schedule::parse("* * * * *", None).unwrap();
        let (due, more) = s.due_between(
            utc("2026-01-01T00:00:00Z"),
            utc("2026-12-01T00:00:00Z"),
            1000,
        );
        assert_eq!(due.len(), 1000);
        assert!(more);
    }
}
