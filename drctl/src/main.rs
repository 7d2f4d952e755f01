//! The `drctl` binary: parse arguments, set up logging, run one command,
//! exit with a documented code.

use std::io::Write;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use drctl::cli::{self, Cli, CliError, Command, LogFormat, OutputFormat};
use drctl::engine::ResumeOptions;
use drctl::exit;
use drctl::store::locate::{self, OpenMode};
use drctl::store::Store;

/// Log writer that masks secrets before anything reaches stderr.
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(drctl::secret::redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_target(false);
    let _ = match cli.log_format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// Opens the store this command uses: `--state`, then `DRCTL_STATE`, then
/// the environment file's `state:` section, then `./state`.
async fn open_store(
    cli: &Cli,
    env_file: Option<&std::path::Path>,
    mode: OpenMode,
    writes: bool,
) -> Result<Arc<dyn Store>, CliError> {
    let (loc, source) = cli::statecmd::resolve(cli, env_file)?;
    let store = locate::open(&loc, mode).await.map_err(CliError::from)?;
    cli::ui::set_state_arg(cli::statecmd::follow_up_arg(&loc, source, store.as_ref()));
    // Commands that write an environment's state (runs, the heartbeat,
    // trusted states) say when that state is only as wide as the current
    // directory: another directory would not see it, nor its lease.
    if writes {
        cli::statecmd::warn_if_implicit(source);
    }
    Ok(store)
}

/// `--now` for tests, else the wall clock.
fn clock(now: Option<&str>) -> Result<chrono::DateTime<chrono::Utc>, CliError> {
    match now {
        None => Ok(chrono::Utc::now()),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| {
                CliError::new(exit::USAGE, format!("--now `{s}`: {e}"))
                    .hint("use RFC 3339, e.g. 2026-12-01T03:00:00Z")
            }),
    }
}

/// The daemon keeps one state store for every drill it runs (leases,
/// slots, history): the drills' environments must agree on it. Returns an
/// environment file to locate it by (`--state` wins over all of them).
fn daemon_env(
    cli: &Cli,
    defs: &[drctl::drill::DrillDef],
) -> Result<Option<std::path::PathBuf>, CliError> {
    let mut seen: Option<(String, std::path::PathBuf)> = None;
    for d in defs {
        let Some(env) = &d.environment else { continue };
        let (loc, _) = cli::statecmd::resolve(cli, Some(env))?;
        let key = format!("{loc:?}");
        match &seen {
            None => seen = Some((key, env.clone())),
            Some((k, first)) if *k != key => {
                return Err(CliError::new(
                    exit::INVALID_INPUT,
                    format!(
                        "the drills' environments use different state stores ({} and {})",
                        first.display(),
                        env.display()
                    ),
                )
                .hint("one daemon schedules drills that share a state store: pass --state, or run one daemon per store"));
            }
            Some(_) => {}
        }
    }
    Ok(seen.map(|(_, e)| e))
}

/// A run whose runbook or environment file is not there stops before it
/// creates any state (exit 17); everything else about the files is
/// validated later, in full.
fn files_exist(runbook: &std::path::Path, env: Option<&std::path::Path>) -> Result<(), CliError> {
    let mut diags = drctl::diag::Diagnostics::default();
    for (path, what) in
        std::iter::once((runbook, "runbook")).chain(env.map(|e| (e, "environment file")))
    {
        if let Err(d) = drctl::yaml::load_source(path, what, "check the path") {
            if d.iter().all(|x| x.code == drctl::diag::NOT_FOUND) {
                diags.extend(d);
            }
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(CliError::invalid(diags))
    }
}

/// An empty state directory for one read-only command, removed after it.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The store for a command that only reads state (`plan`): it never
/// creates the state location. A state directory that does not exist yet
/// (a first run, or a typo) is said on stderr, and the command reads an
/// empty scratch store instead, removed when it ends.
async fn open_store_to_read(
    cli: &Cli,
    env_file: Option<&std::path::Path>,
) -> Result<(Arc<dyn Store>, Option<Scratch>), CliError> {
    let (loc, source) = cli::statecmd::resolve(cli, env_file)?;
    match locate::open(&loc, OpenMode::Existing).await {
        Ok(store) => {
            cli::ui::set_state_arg(cli::statecmd::follow_up_arg(&loc, source, store.as_ref()));
            Ok((store, None))
        }
        Err(drctl::store::StoreError::NotInitialised { url })
            if matches!(loc, drctl::store::StateLocation::Dir(_)) =>
        {
            cli::ui::err(&format!(
                "note: no drctl state at {url} (nothing created): preflights see no capacity snapshots, trusted states or heartbeat data"
            ));
            let dir = std::env::temp_dir().join(format!(
                "drctl-read-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            let store = drctl::store::DirStore::open(&dir).map_err(CliError::from)?;
            Ok((Arc::new(store), Some(Scratch(dir))))
        }
        Err(e) => Err(CliError::from(e)),
    }
}

/// A PostgreSQL URL for a benchmark (password from DRCTL_STATE_PASSWORD).
fn bench_pg(url: &str) -> Result<(String, drctl::postgres::PgServer), CliError> {
    match drctl::store::StateLocation::parse(url, None).map_err(CliError::from)? {
        drctl::store::StateLocation::Postgres { url, server } => Ok((url, server)),
        drctl::store::StateLocation::Dir(_) => Err(CliError::new(
            exit::USAGE,
            format!("--pg wants a postgresql:// URL, not `{url}`"),
        )),
    }
}

async fn dispatch(cli: Cli) -> Result<i32, CliError> {
    let output = cli.output;
    // The composition root: every command sees the same action kinds.
    let registry = Arc::new(drctl::registry::standard());
    match &cli.command {
        Command::Validate { files, env } => {
            cli::plan::cmd_validate(files, env.as_deref(), output, &registry)
        }
        Command::Schema => Ok(cli::plan::cmd_schema(&registry)),
        Command::Completions { shell } => {
            // Generated into memory, then written ignoring a closed pipe
            // (`drctl completions bash | head` must not panic).
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "drctl", &mut buf);
            let _ = std::io::stdout().lock().write_all(&buf);
            Ok(exit::OK)
        }
        Command::ExitCodes => {
            if output == OutputFormat::Json {
                let codes: Vec<_> = exit::TABLE
                    .iter()
                    .map(|(code, name, what)| serde_json::json!({"code": code, "name": name, "meaning": what}))
                    .collect();
                cli::ui::out(&serde_json::Value::Array(codes).to_string());
                return Ok(exit::OK);
            }
            for (code, name, what) in exit::TABLE {
                cli::ui::out(&format!("{code:>3}  {name:<18} {what}"));
            }
            Ok(exit::OK)
        }
        Command::Plan {
            runbook,
            env,
            region,
            check,
            mode,
            params,
        } => {
            let (store, _scratch) = open_store_to_read(&cli, env.as_deref()).await?;
            let args = cli::plan::PlanArgs {
                runbook,
                env: env.as_deref(),
                region: region.as_deref(),
                check: *check,
                mode: (*mode).into(),
                params,
            };
            cli::plan::cmd_plan(args, store, output, &registry).await
        }
        Command::Run {
            runbook,
            mode,
            region,
            args,
        } => {
            files_exist(runbook, args.env.as_deref())?;
            let store = open_store(&cli, args.env.as_deref(), OpenMode::Create, true).await?;
            cli::runs::cmd_run(
                runbook,
                region.as_deref(),
                (*mode).into(),
                args,
                store,
                output,
                false,
                &registry,
            )
            .await
        }
        Command::Failover {
            region,
            runbook,
            args,
        } => {
            let rb = cli::runs::failover_runbook(runbook.as_deref(), args.env.as_deref());
            files_exist(&rb, args.env.as_deref())?;
            let store = open_store(&cli, args.env.as_deref(), OpenMode::Create, true).await?;
            cli::runs::cmd_run(
                &rb,
                Some(region),
                drctl::runbook::Mode::Incident,
                args,
                store,
                output,
                true,
                &registry,
            )
            .await
        }
        Command::Switchover { to, runbook, args } => {
            let store = open_store(&cli, args.env.as_deref(), OpenMode::Create, true).await?;
            cli::failback::cmd_switchover(to, runbook.as_deref(), args, store, output, &registry)
                .await
        }
        Command::Failback {
            run_id,
            runbook,
            args,
        } => {
            let store = open_store(&cli, args.env.as_deref(), OpenMode::Existing, false).await?;
            cli::failback::cmd_failback(run_id, runbook.as_deref(), args, store, output, &registry)
                .await
        }
        Command::Resume {
            run_id,
            runbook,
            env,
            allow_runbook_change,
            allow_env_change,
            rerun,
            mark_done,
            params,
            accept_data_loss,
            force,
            yes,
            parallelism,
        } => {
            let store = open_store(&cli, env.as_deref(), OpenMode::Existing, false).await?;
            let opts = ResumeOptions {
                allow_runbook_change: *allow_runbook_change,
                allow_env_change: *allow_env_change,
                rerun: rerun.clone(),
                mark_done: mark_done.clone(),
                operator: cli::operator(),
                parallelism: *parallelism,
                interactive: true,
                params: Default::default(),
                accept_data_loss: *accept_data_loss,
                force: *force,
                yes: *yes,
                hooks: Default::default(),
                // Read from the journal by `cmd_resume`.
                isolated: false,
            };
            cli::runs::cmd_resume(
                run_id,
                runbook.as_deref(),
                env.as_deref(),
                params,
                opts,
                store,
                output,
                &registry,
            )
            .await
        }
        Command::Bench(cli::BenchCmd::Engine {
            steps,
            rounds,
            dir,
            pg,
        }) => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| cli::statecmd::local_dir(&cli).join("bench"));
            let pg = pg.as_deref().map(bench_pg).transpose()?;
            let (text, json) = drctl::bench::engine_bench(&dir, *steps, *rounds, pg)
                .await
                .map_err(|e| CliError::new(exit::INTERNAL, format!("benchmark failed: {e}")))?;
            Ok(bench_out(output, text, &json))
        }
        Command::Bench(cli::BenchCmd::Follow {
            records,
            polls,
            dir,
            pg,
        }) => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| cli::statecmd::local_dir(&cli).join("bench-follow"));
            let target = match pg.as_deref().map(bench_pg).transpose()? {
                Some((url, server)) => drctl::store::bench::Target::Pg { url, server },
                None => drctl::store::bench::Target::Dir(&dir),
            };
            let (text, json) = drctl::store::bench::follow_bench(target, *records, *polls)
                .await
                .map_err(CliError::from)?;
            Ok(bench_out(output, text, &json))
        }
        Command::Drill {
            runbook,
            inject_lag,
            region,
            args,
        } => {
            files_exist(runbook, args.env.as_deref())?;
            let store = open_store(&cli, args.env.as_deref(), OpenMode::Create, true).await?;
            cli::labcmd::cmd_drill(
                runbook,
                region.as_deref(),
                *inject_lag,
                args,
                store,
                output,
                &registry,
            )
            .await
        }
        Command::VerifyBackup(a) => {
            let scratch = a
                .scratch
                .clone()
                .unwrap_or_else(|| cli::statecmd::local_dir(&cli).join("scratch"));
            if a.cleanup {
                return cli::backupcmd::cmd_cleanup(&scratch, output);
            }
            files_exist(&a.runbook, a.env.as_deref())?;
            let store = open_store(&cli, a.env.as_deref(), OpenMode::Create, true).await?;
            cli::backupcmd::cmd_verify_backup(a, scratch, store, output, &registry).await
        }
        Command::Immudb(cli::ImmudbCmd::Trust { env, region }) => {
            let store = open_store(&cli, Some(env), OpenMode::Create, true).await?;
            cli::immudbcmd::cmd_trust(env, region, store, output).await
        }
        Command::Immudb(cli::ImmudbCmd::VerifyProof {
            bundle,
            trusted_tx,
            trusted_alh,
            pubkey,
        }) => cli::immudbcmd::cmd_verify_proof(
            bundle,
            *trusted_tx,
            trusted_alh,
            pubkey.as_deref(),
            output,
        ),
        Command::Drills(cli::DrillsCmd::List { drills, now }) => {
            let now = clock(now.as_deref())?;
            let (store, _scratch) = open_store_to_read(&cli, None).await?;
            cli::drillscmd::cmd_list(drills, store, now, output).await
        }
        Command::Drills(cli::DrillsCmd::History { name, window }) => {
            let (store, _scratch) = open_store_to_read(&cli, None).await?;
            cli::drillscmd::cmd_history(name.as_deref(), *window, store, output).await
        }
        Command::Drills(cli::DrillsCmd::Cleanup { run }) => {
            let (store, _scratch) = open_store_to_read(&cli, None).await?;
            cli::drillcleanup::cmd_cleanup(run, store, output).await
        }
        Command::Daemon {
            drills,
            once,
            now,
            metrics,
            metrics_listen,
        } => {
            let now = now.as_deref().map(|n| clock(Some(n))).transpose()?;
            let defs = cli::drillscmd::load_defs(drills)?;
            let env = daemon_env(&cli, &defs)?;
            let store = open_store(&cli, env.as_deref(), OpenMode::Create, true).await?;
            let m = cli::drillscmd::MetricsOut {
                push: metrics.push.clone(),
                textfile: metrics.textfile.clone(),
            };
            cli::drillscmd::cmd_daemon(
                drills,
                *once,
                now,
                &m,
                metrics_listen.as_deref(),
                store,
                &registry,
                output,
            )
            .await
        }
        Command::Drills(cli::DrillsCmd::Metrics {
            drills,
            metrics,
            now,
        }) => {
            let now = clock(now.as_deref())?;
            let (store, _scratch) = open_store_to_read(&cli, None).await?;
            let m = cli::drillscmd::MetricsOut {
                push: metrics.push.clone(),
                textfile: metrics.textfile.clone(),
            };
            cli::drillscmd::cmd_metrics(drills, &m, store, now).await
        }
        Command::Manifests(cli::ManifestsCmd::Cronjobs {
            drills,
            namespace,
            image,
            env_dir,
        }) => {
            let defs = cli::drillscmd::load_defs(drills)?;
            let o = cli::manifests::CronJobOptions {
                namespace,
                image,
                env_dir,
            };
            cli::ui::out(cli::manifests::render(&defs, drills, &o).trim_end());
            Ok(exit::OK)
        }
        Command::Lab(cmd) => {
            cli::labcmd::cmd_lab(cmd, &cli::statecmd::local_dir(&cli), output).await
        }
        Command::State(cmd) => cli::statecmd::cmd_state(&cli, cmd, output).await,
        Command::Heartbeat {
            env,
            region,
            interval,
        } => {
            let store = open_store(&cli, Some(env), OpenMode::Create, true).await?;
            cli::labcmd::cmd_heartbeat(env, region, *interval, store).await
        }
        Command::Bench(cli::BenchCmd::Scale { steps, records }) => {
            let (steps, records) = (steps.clone(), records.clone());
            // CPU-bound and synchronous: off the async workers.
            let (text, json) = tokio::task::spawn_blocking(move || {
                drctl::bench::scale::scale_bench(&steps, &records)
            })
            .await
            .map_err(|e| CliError::new(exit::INTERNAL, format!("benchmark task: {e}")))?
            .map_err(|e| CliError::new(exit::INTERNAL, format!("benchmark failed: {e}")))?;
            Ok(bench_out(output, text, &json))
        }
        Command::Bench(cli::BenchCmd::Report { records, dir }) => {
            let records = *records;
            let dir = dir
                .clone()
                .unwrap_or_else(|| cli::statecmd::local_dir(&cli).join("bench-report"));
            // Synchronous (it waits for child processes): off the async workers.
            let (text, json) = tokio::task::spawn_blocking(move || {
                drctl::bench::report::report_bench(records, &dir)
            })
            .await
            .map_err(|e| CliError::new(exit::INTERNAL, format!("benchmark task: {e}")))?
            .map_err(|e| CliError::new(exit::INTERNAL, format!("benchmark failed: {e}")))?;
            Ok(bench_out(output, text, &json))
        }
        Command::Bench(cli::BenchCmd::Immudb) => {
            let rows = drctl::immudb::bench::bench_workloads();
            let sha = rows
                .iter()
                .find(|(n, _)| n.starts_with("sha256"))
                .map(|(_, v)| *v)
                .unwrap_or(0.0);
            let mut text = String::from("immudb verification benchmark (fixed workloads; raw SHA-256 measured in the same run)\n");
            for (name, v) in &rows {
                text.push_str(&format!("  {name:<58} {v:>16.0}\n"));
            }
            text.push_str(&format!("  raw SHA-256: {:.2} GB/s\n", sha / 1e9));
            Ok(bench_out(output, text, &serde_json::json!(rows)))
        }
        Command::Approve { run_id, step, by } => {
            let store = open_store(&cli, None, OpenMode::Existing, false).await?;
            cli::runs::cmd_approve(run_id, step, by.clone(), store.as_ref(), output).await
        }
        Command::Abort { run_id } => {
            let store = open_store(&cli, None, OpenMode::Existing, false).await?;
            cli::runs::cmd_abort(run_id, store, output).await
        }
        Command::Runs => {
            let store = open_store(&cli, None, OpenMode::Existing, false).await?;
            cli::inspect::cmd_runs(store.as_ref(), output).await
        }
        Command::Status { run_id, follow } => {
            let store = open_store(&cli, None, OpenMode::Existing, false).await?;
            cli::inspect::cmd_status(store.as_ref(), run_id, *follow, output).await
        }
        Command::Report(args) => {
            let store = open_store(&cli, None, OpenMode::Existing, false).await?;
            let format: drctl::report::Format = args
                .format
                .unwrap_or(if output == OutputFormat::Json {
                    cli::ReportFormat::Json
                } else {
                    cli::ReportFormat::Md
                })
                .into();
            match (&args.cmd, &args.compare, &args.run_id) {
                (
                    Some(cli::ReportCmd::Verify {
                        report,
                        run,
                        public_key,
                        env,
                    }),
                    _,
                    _,
                ) => {
                    cli::reportcmd::cmd_verify(
                        store.as_ref(),
                        report,
                        run,
                        public_key.as_deref(),
                        env.as_deref(),
                        output,
                    )
                    .await
                }
                (None, Some(pair), _) if pair.len() == 2 => {
                    cli::reportcmd::cmd_compare(store.as_ref(), &pair[0], &pair[1], format).await
                }
                (None, _, Some(run_id)) => {
                    cli::reportcmd::cmd_report(
                        store.as_ref(),
                        cli::reportcmd::ReportRequest {
                            run_id,
                            format,
                            postmortem: args.postmortem,
                            trend_window: args.trend,
                            sign_key: args.sign_key.as_deref(),
                            anchor: args.anchor,
                            env: args.env.as_deref(),
                        },
                    )
                    .await
                }
                _ => Err(CliError::new(
                    exit::USAGE,
                    "give a run id, --compare RUN_A RUN_B, or `verify`",
                )),
            }
        }
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_logging(&cli);
    let output = cli.output;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::INTERNAL);
        }
    };
    // The command runs as a task on a worker, not on this thread: the tasks
    // it spawns (steps, database connections) then wake on the worker that
    // woke them instead of bouncing every message across threads.
    let joined = rt.block_on(async { tokio::spawn(dispatch(cli)).await });
    let code = match joined {
        Ok(Ok(code)) => code,
        Err(e) => {
            eprintln!("error: internal: the command's task ended abnormally: {e}");
            exit::INTERNAL
        }
        Ok(Err(e)) => {
            if output == OutputFormat::Json {
                cli::ui::out(&e.to_json().to_string());
            } else {
                cli::ui::err(&e.render());
            }
            e.code
        }
    };
    // Do not wait for stray blocking tasks (a TTY prompt thread) at exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}

/// Prints a benchmark's figures: the table, or its JSON with `--output json`.
fn bench_out(output: OutputFormat, text: String, json: &serde_json::Value) -> i32 {
    cli::ui::out(&if output == OutputFormat::Json {
        json.to_string()
    } else {
        text
    });
    exit::OK
}
