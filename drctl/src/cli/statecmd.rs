//! `drctl state …` and where every command's state lives.
//!
//! `init` creates a store (PostgreSQL: applies the schema migrations; no
//! other command ever does), `check` says whether it is usable, `migrate`
//! copies a state directory into another store verifying every journal
//! chain, `prune` deletes old housekeeping runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ui, Cli, CliError, OutputFormat, StateCmd};
use crate::exit;
use crate::journal;
use crate::store::locate::{self, OpenMode, Source, StateLocation};
use crate::store::{DirStore, Expect, HolderId, LeaseMode, Store, StoreError};

/// The environment file's `state:` section, if the file can be read. A
/// file with errors yields `None`: the command itself reports them.
fn env_state(env_file: Option<&Path>) -> Option<locate::EnvState> {
    let (env, _) = crate::environment::load_environment(env_file?).ok()?;
    env.state
}

/// The state location for a command, in the documented order.
pub fn location(cli: &Cli, env_file: Option<&Path>) -> Result<StateLocation, CliError> {
    resolve(cli, env_file).map(|(l, _)| l)
}

/// The state location and where it came from (the environment file, if
/// any, is read once here).
pub fn resolve(cli: &Cli, env_file: Option<&Path>) -> Result<(StateLocation, Source), CliError> {
    let es = env_state(env_file);
    locate::locate(cli.state.as_deref(), es.as_ref()).map_err(CliError::from)
}

/// Warns when a run that may change something uses the implicit `./state`:
/// its lease only excludes runs started from the same directory.
pub fn warn_if_implicit(source: Source) {
    if source == Source::Default {
        ui::err(
            "note: drctl's state is ./state in the current directory (no --state, DRCTL_STATE or `state:` \
             in the environment file); the lease only excludes runs that use this same directory. \
             Teams share one store: set `state: {url: postgresql://…}` in the environment file.",
        );
    }
}

/// The `--state …` a printed follow-up command needs (empty when the
/// default `./state` would find the same store from here).
pub fn follow_up_arg(loc: &StateLocation, source: Source, store: &dyn Store) -> String {
    match (loc, source) {
        (_, Source::Default) => String::new(),
        (StateLocation::Dir(p), _) => {
            let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            format!("--state {}", shell_word(&abs.display().to_string()))
        }
        _ => format!("--state {}", shell_word(&store.location())),
    }
}

fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:@=?&%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A local directory for things that are always local (the lab's data,
/// benchmarks): the state directory when state is a directory, else
/// `./state`.
pub fn local_dir(cli: &Cli) -> PathBuf {
    match locate::locate(cli.state.as_deref(), None) {
        Ok((StateLocation::Dir(p), _)) => p,
        _ => PathBuf::from("state"),
    }
}

fn print(output: OutputFormat, text: &str, json: serde_json::Value) {
    if output == OutputFormat::Json {
        ui::out(&json.to_string());
    } else {
        ui::out(text);
    }
}

pub async fn cmd_state(cli: &Cli, cmd: &StateCmd, output: OutputFormat) -> Result<i32, CliError> {
    match cmd {
        StateCmd::Init => {
            let loc = location(cli, None)?;
            let applied = match &loc {
                StateLocation::Dir(p) => {
                    DirStore::open(p)?;
                    Vec::new()
                }
                StateLocation::Postgres { url, server } => {
                    crate::store::postgres::init(url, server.clone()).await?.1
                }
            };
            print(
                output,
                &format!(
                    "state store {} ready (schema version {}){}",
                    loc.arg(),
                    crate::store::SCHEMA_VERSION,
                    if applied.is_empty() {
                        String::new()
                    } else {
                        format!("; applied: {}", applied.join(", "))
                    }
                ),
                serde_json::json!({"location": loc.arg(), "schema_version": crate::store::SCHEMA_VERSION, "applied": applied}),
            );
            Ok(exit::OK)
        }
        StateCmd::Check => {
            let loc = location(cli, None)?;
            let store = locate::open(&loc, OpenMode::Existing).await?;
            let h = store.health().await?;
            let skew_note = if h.clock_skew_ms.abs() > 2000 {
                "  (more than 2s: lease expiry is decided by the store's clock, but journal times come from this machine)"
            } else {
                ""
            };
            print(
                output,
                &format!(
                    "state store: {}\n  schema version: {} (this drctl: {})\n  clock skew: {} ms{skew_note}\n  runs: {}",
                    store.describe(),
                    h.schema_version,
                    crate::store::SCHEMA_VERSION,
                    h.clock_skew_ms,
                    h.runs
                ),
                serde_json::to_value(&h).unwrap_or_default(),
            );
            Ok(if h.schema_version == crate::store::SCHEMA_VERSION {
                exit::OK
            } else {
                exit::STATE_UNAVAILABLE
            })
        }
        StateCmd::Migrate { from, to } => migrate(from, to, output).await,
        StateCmd::Prune {
            older_than,
            include_mutating,
            include_drills,
            dry_run,
        } => {
            let loc = location(cli, None)?;
            let store = locate::open(&loc, OpenMode::Existing).await?;
            prune(
                store.as_ref(),
                *older_than,
                *include_mutating,
                *include_drills,
                *dry_run,
                output,
            )
            .await
        }
    }
}

/// Copies everything from a state directory into another store. Safe to
/// run again: journals already copied are skipped, a partly copied one is
/// completed, a different one is reported.
async fn migrate(from: &Path, to: &str, output: OutputFormat) -> Result<i32, CliError> {
    let src = DirStore::open_existing(from)?;
    let dst_loc = StateLocation::parse(to, None)?;
    let dst = locate::open(&dst_loc, OpenMode::Create).await?;
    let holder = HolderId::this_process("state-migrate");
    let grant = dst
        .acquire_lease(
            "state-migrate",
            LeaseMode::Exclusive,
            &holder,
            Duration::from_secs(300),
        )
        .await?;
    let lease = grant.lease;
    let mut copied = 0usize;
    let mut skipped = 0usize;
    let mut problems = Vec::new();
    for run in src.list_runs().await? {
        let bytes = src.read_journal(&run).await?;
        let v = match journal::verify(&bytes) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!(
                    "run {run}: not copied, its journal does not verify: {e}"
                ));
                continue;
            }
        };
        let lines: Vec<&[u8]> = bytes[..v.complete_len]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let have = match dst.read_journal(&run).await {
            Ok(b) => Some(b),
            Err(StoreError::RunNotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let start = match &have {
            None => 0,
            Some(b) if bytes[..v.complete_len].starts_with(b) => {
                b.iter().filter(|c| **c == b'\n').count()
            }
            Some(_) => {
                problems.push(format!(
                    "run {run}: not copied, the target holds a different journal"
                ));
                continue;
            }
        };
        if start == lines.len() {
            skipped += 1;
        } else {
            for (seq, line) in lines.iter().enumerate().skip(start) {
                if seq == 0 {
                    dst.create_journal(&run, &lease, line).await?;
                } else {
                    dst.append_journal(&run, &lease, seq as u64, line).await?;
                }
            }
            copied += 1;
        }
        copy_run_files(&src, dst.as_ref(), &run).await?;
    }
    let (docs, histories) = copy_docs(&src, dst.as_ref(), &mut problems).await?;
    let _ = dst.release_lease(&lease).await;
    let text = format!(
        "migrated {} -> {}: {copied} journals copied (each chain verified), {skipped} already there, {docs} documents, {histories} history records{}",
        from.display(),
        dst.describe(),
        problems
            .iter()
            .map(|p| format!("\n  problem: {p}"))
            .collect::<String>()
    );
    print(
        output,
        &text,
        serde_json::json!({"copied": copied, "skipped": skipped, "documents": docs, "history_records": histories, "problems": problems}),
    );
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::JOURNAL_CORRUPT
    })
}

/// Approvals, abort requests and artifacts of one run.
async fn copy_run_files(src: &DirStore, dst: &dyn Store, run: &str) -> Result<(), CliError> {
    let dir = src.root().join("runs").join(run);
    let approvals = dir.join("approvals");
    if let Ok(rd) = std::fs::read_dir(&approvals) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(step) = name.strip_suffix(".json") {
                if let Some(a) = src.get_approval(run, step).await? {
                    dst.put_approval(run, step, &a).await?;
                }
            }
        }
    }
    if let Some(by) = src.abort_requested(run).await? {
        dst.request_abort(run, &by).await?;
    }
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().is_file() && name != "journal.jsonl" && name != "abort" {
                if let Some(b) = src.get_artifact(run, &name).await? {
                    dst.put_artifact(run, &name, &b).await?;
                }
            }
        }
    }
    Ok(())
}

/// Documents (kept only where the target has none) and histories.
async fn copy_docs(
    src: &DirStore,
    dst: &dyn Store,
    problems: &mut Vec<String>,
) -> Result<(usize, usize), CliError> {
    let mut docs = 0;
    let root = src.root().to_path_buf();
    for coll in subdirs(&root.join("docs")) {
        for e in std::fs::read_dir(root.join("docs").join(&coll))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            let Some(d) = src.get_doc(&coll, key).await? else {
                continue;
            };
            match dst.put_doc(&coll, key, &d.doc, Expect::Absent).await {
                Ok(_) => docs += 1,
                Err(StoreError::Conflict { .. }) => problems.push(format!(
                    "document {coll}/{key}: the target has one already; kept the target's"
                )),
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut records = 0;
    for e in std::fs::read_dir(root.join("history"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(coll) = name.strip_suffix(".jsonl") else {
            continue;
        };
        let have = dst.read_history(coll).await?.len();
        for r in src.read_history(coll).await?.iter().skip(have) {
            dst.append_history(coll, r).await?;
            records += 1;
        }
    }
    Ok((docs, records))
}

fn subdirs(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

async fn prune(
    store: &dyn Store,
    older_than: Duration,
    include_mutating: bool,
    include_drills: bool,
    dry_run: bool,
    output: OutputFormat,
) -> Result<i32, CliError> {
    use crate::journal::RunStatus;
    let cutoff = journal::now_ms().saturating_sub(older_than.as_millis() as u64);
    let mut deleted = Vec::new();
    let mut kept = 0usize;
    for s in store.run_summaries().await? {
        if s.last_write_ms >= cutoff {
            continue;
        }
        let view = match crate::engine::run::load_view_only(store, &s.run_id).await {
            Ok(v) => v,
            // An unreadable journal is evidence: never deleted by prune.
            Err(_) => {
                kept += 1;
                continue;
            }
        };
        let finished = matches!(
            view.status,
            Some(RunStatus::Succeeded | RunStatus::Failed | RunStatus::Aborted)
        );
        let mutating = view.lease_mode != Some(LeaseMode::Shared);
        let drill = view.mode == crate::runbook::Mode::Drill;
        if !finished || (mutating && !include_mutating) || (drill && !include_drills) {
            kept += 1;
            continue;
        }
        if !dry_run {
            store.delete_run(&s.run_id).await?;
        }
        deleted.push(s.run_id);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    print(
        output,
        &format!(
            "{verb} {} runs older than {}; kept {kept} (unfinished, changed something, drills, or unreadable){}",
            deleted.len(),
            crate::duration::format_duration(older_than),
            if include_mutating || include_drills { "" } else { "; drill and backup histories are never pruned" }
        ),
        serde_json::json!({"deleted": deleted, "kept": kept, "dry_run": dry_run}),
    );
    Ok(exit::OK)
}
