//! Drill definitions (`drills/*.yaml`): what to rehearse, where, how the
//! failure is injected, the targets, and when the drill is due.
//!
//! Every field is decoded with its location, so a wrong schedule or time
//! zone is an error at `file:line:column` with a hint, like a runbook's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::decode::{Ctx, MapReader};
use crate::diag::{Diagnostic, Diagnostics};
use crate::schedule::{MissedPolicy, Schedule};
use crate::yaml::Node;

/// How much of production a drill touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillMode {
    /// The runbook runs for real against the environment (the lab, or a
    /// staging environment): the primary region is failed.
    Full,
    /// Production is never touched: the runbook clones the DR standby into
    /// a scratch instance, promotes the clone, points a drill-only DNS name
    /// at it, checks it, tears it down and re-asserts production
    /// (`runbooks/isolated-drill.yaml`). No failure is injected, and every
    /// DNS-changing step refuses a record not declared `drill: true`.
    Isolated,
}

impl DrillMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillMode::Full => "full",
            DrillMode::Isolated => "isolated",
        }
    }
}

/// When a drill is due, as the scheduler and the generated CronJobs read it.
#[derive(Debug, Clone)]
pub struct DrillSchedule {
    pub cron: Schedule,
    pub missed: MissedPolicy,
    /// A suspended drill keeps its definition and history but is not run
    /// by `drctl daemon`, and its CronJob is generated with `suspend: true`.
    pub suspend: bool,
    /// How long past its period a drill may go without a successful run
    /// before `drctl drills list` (and the alert) call it overdue.
    pub grace: Duration,
}

/// When a drill tells people, through the environment's `notify` targets.
#[derive(Debug, Clone)]
pub struct DrillNotify {
    pub started: bool,
    pub finished: bool,
    pub target_missed: bool,
    /// Environment notify target names; empty: all of them.
    pub targets: Vec<String>,
}

/// Default grace before a drill counts as overdue.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A drill definition.
#[derive(Debug, Clone)]
pub struct DrillDef {
    pub name: String,
    /// The definition file itself.
    pub file: PathBuf,
    pub description: Option<String>,
    pub runbook: PathBuf,
    pub environment: Option<PathBuf>,
    pub mode: DrillMode,
    pub inject_lag: Option<Duration>,
    pub params: Vec<String>,
    /// Targets that override the runbook's `rto:`/`rpo:`.
    pub rto_target: Option<Duration>,
    pub rpo_target: Option<Duration>,
    pub schedule: Option<DrillSchedule>,
    /// The drill's time budget: the daemon interrupts (resumably) a drill
    /// still running after it, and a CronJob's `activeDeadlineSeconds`.
    pub max_runtime: Option<Duration>,
    pub notify: Option<DrillNotify>,
    /// Whether `drctl manifests cronjobs` makes a CronJob of it (`false`
    /// for drills of the local lab, which only a local daemon can reach).
    pub kubernetes: bool,
}

/// Whether a file is a drill definition rather than a runbook.
pub fn is_definition(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("runbook:"))
}

pub fn load_definition(path: &Path) -> Result<DrillDef, Diagnostics> {
    let (file, _) = crate::yaml::load_source(path, "drill definition", "see drills/ for examples")?;
    let mut diags = Diagnostics::default();
    let Some(root) = crate::yaml::parse(&file, &mut diags) else {
        return Err(diags);
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut ctx = Ctx::new(&file, &mut diags);
    let Some(mut r) = MapReader::new(&mut ctx, &root, "drill definition") else {
        return Err(diags);
    };
    let name = r.req(&mut ctx, "name").and_then(|n| ctx.string(n, "name"));
    let description = r
        .opt("description")
        .and_then(|n| ctx.string(n, "description"));
    let runbook = r
        .req(&mut ctx, "runbook")
        .and_then(|n| ctx.string(n, "runbook"))
        .map(|p| base.join(p));
    let environment = r
        .opt("environment")
        .and_then(|n| ctx.string(n, "environment"))
        .map(|p| base.join(p));
    let mode = match r.opt("mode") {
        None => Some(DrillMode::Full),
        Some(n) => mode(&mut ctx, n),
    };
    let lag_node = r.opt("inject_lag");
    let inject_lag = lag_node.and_then(|n| ctx.duration(n, "inject_lag"));
    if let (Some(DrillMode::Isolated), Some(n)) = (mode, lag_node) {
        ctx.error(
            "E-VALUE",
            n,
            "inject_lag: an isolated drill injects nothing (production replication is never touched)",
            Some("remove inject_lag, or use `mode: full` on the lab".into()),
        );
    }
    let mut params = Vec::new();
    if let Some(p) = r.opt("params") {
        match p.as_map() {
            Some(entries) => {
                params = entries
                    .iter()
                    .map(|(k, v)| format!("{}={}", k.key_text(), v))
                    .collect()
            }
            None => ctx.expected(p, "a mapping of parameter values", "params"),
        }
    }
    let (mut rto_target, mut rpo_target) = (None, None);
    if let Some(t) = r.opt("targets") {
        if let Some(mut tr) = MapReader::new(&mut ctx, t, "targets") {
            rto_target = tr.opt("rto").and_then(|n| ctx.duration(n, "targets.rto"));
            rpo_target = tr.opt("rpo").and_then(|n| ctx.duration(n, "targets.rpo"));
            tr.finish(&mut ctx);
        }
    }
    let schedule = r.opt("schedule").and_then(|n| schedule(&mut ctx, n));
    let max_runtime = r
        .opt("max_runtime")
        .and_then(|n| ctx.duration(n, "max_runtime"));
    let notify = r.opt("notify").and_then(|n| notify(&mut ctx, n));
    let kubernetes = r
        .opt("kubernetes")
        .and_then(|n| ctx.boolean(n, "kubernetes"))
        .unwrap_or(true);
    r.finish(&mut ctx);
    if diags.has_errors() {
        return Err(diags);
    }
    match (name, runbook, mode) {
        (Some(name), Some(runbook), Some(mode)) => Ok(DrillDef {
            name,
            file: path.to_path_buf(),
            description,
            runbook,
            environment,
            mode,
            inject_lag,
            params,
            rto_target,
            rpo_target,
            schedule,
            max_runtime,
            notify,
            kubernetes,
        }),
        _ => Err(diags),
    }
}

fn mode(ctx: &mut Ctx<'_>, n: &Node) -> Option<DrillMode> {
    match ctx.one_of(n, &["full", "isolated"], "mode")? {
        "full" => Some(DrillMode::Full),
        _ => Some(DrillMode::Isolated),
    }
}

/// `notify: {on: [started, finished, target_missed], targets: [NAME, …]}`;
/// `on` defaults to all three.
fn notify(ctx: &mut Ctx<'_>, n: &Node) -> Option<DrillNotify> {
    let mut r = MapReader::new(ctx, n, "notify")?;
    let mut out = DrillNotify {
        started: true,
        finished: true,
        target_missed: true,
        targets: Vec::new(),
    };
    if let Some(on) = r.opt("on") {
        if let Some(items) = on.as_seq() {
            out.started = false;
            out.finished = false;
            out.target_missed = false;
            for i in items {
                match ctx.one_of(i, &["started", "finished", "target_missed"], "notify.on") {
                    Some("started") => out.started = true,
                    Some("finished") => out.finished = true,
                    Some(_) => out.target_missed = true,
                    None => {}
                }
            }
        } else {
            ctx.expected(
                on,
                "a list of events (started, finished, target_missed)",
                "notify.on",
            );
        }
    }
    if let Some(t) = r.opt("targets") {
        out.targets = ctx
            .string_list(t, "notify.targets")
            .map(|v| v.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
    }
    r.finish(ctx);
    Some(out)
}

/// `schedule: "0 3 * * 1"` (UTC, defaults) or a mapping with `cron`,
/// `timezone`, `missed`, `suspend`, `grace`.
fn schedule(ctx: &mut Ctx<'_>, n: &Node) -> Option<DrillSchedule> {
    let (expr_node, mut tz, mut missed, mut suspend, mut grace) =
        (n, None, MissedPolicy::RunOnce, false, DEFAULT_GRACE);
    let mut tz_node = None;
    let expr_node = if n.as_map().is_some() {
        let mut r = MapReader::new(ctx, n, "schedule")?;
        let cron = r.req(ctx, "cron");
        if let Some(t) = r.opt("timezone") {
            tz = ctx.string(t, "schedule.timezone");
            tz_node = Some(t);
        }
        if let Some(m) = r.opt("missed") {
            missed = ctx
                .one_of(m, &["run-once", "skip"], "schedule.missed")
                .and_then(MissedPolicy::parse)
                .unwrap_or(missed);
        }
        if let Some(s) = r.opt("suspend") {
            suspend = ctx.boolean(s, "schedule.suspend").unwrap_or(false);
        }
        if let Some(g) = r.opt("grace") {
            grace = ctx.duration(g, "schedule.grace").unwrap_or(grace);
        }
        r.finish(ctx);
        cron?
    } else {
        expr_node
    };
    let expr = ctx.string(expr_node, "schedule")?;
    match Schedule::parse(&expr, tz.as_deref()) {
        Ok(cron) => Some(DrillSchedule {
            cron,
            missed,
            suspend,
            grace,
        }),
        Err(e) => {
            let (node, hint) = match &e {
                crate::schedule::ScheduleError::TimeZone(_) => (
                    tz_node.unwrap_or(expr_node),
                    "an IANA name such as `UTC`, `Europe/Berlin` or `America/New_York`",
                ),
                _ => (
                    expr_node,
                    "five fields: minute hour day-of-month month day-of-week, e.g. \"0 3 1 * *\" (03:00 on the 1st of each month)",
                ),
            };
            ctx.error("E-VALUE", node, format!("schedule: {e}"), Some(hint.into()));
            None
        }
    }
}

/// Every drill definition in `dir` (`*.yaml`, `*.yml`), by name. Two
/// definitions with one name would share a history and a schedule slot:
/// that is an error naming both files.
pub fn load_dir(dir: &Path) -> Result<Vec<DrillDef>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            let file = crate::yaml::SourceFile::new(dir.display().to_string(), "");
            diags.push(
                Diagnostic::error(
                    "E-IO",
                    &file,
                    Default::default(),
                    format!("cannot read the drills directory: {e}"),
                )
                .with_hint("pass --drills DIR (the shipped definitions are in drills/)"),
            );
            return Err(diags);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    let mut defs: Vec<DrillDef> = Vec::new();
    for p in paths {
        match load_definition(&p) {
            Ok(d) => {
                if let Some(other) = defs.iter().find(|o| o.name == d.name) {
                    let file = crate::yaml::SourceFile::new(p.display().to_string(), "");
                    diags.push(
                        Diagnostic::error(
                            "E-DUPLICATE",
                            &file,
                            Default::default(),
                            format!(
                                "drill `{}` is also defined in {}",
                                d.name,
                                other.file.display()
                            ),
                        )
                        .with_hint(
                            "each drill needs its own name: it keys the history and the schedule",
                        ),
                    );
                } else {
                    defs.push(d);
                }
            }
            Err(d) => diags.extend(d),
        }
    }
    if diags.has_errors() {
        return Err(diags);
    }
    Ok(defs)
}
