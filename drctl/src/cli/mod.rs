//! The command-line edge: argument parsing, human/JSON output, and the
//! mapping of library errors to documented exit codes ([`crate::exit`]).

pub mod backupcmd;
pub mod drillcleanup;
pub mod drillscmd;
pub mod error;
pub mod failback;
pub mod immudbcmd;
pub mod inspect;
pub mod labcmd;
pub mod manifests;
pub mod plan;
pub mod preflight;
pub mod reportcmd;
pub mod runs;
pub mod statecmd;
pub mod ui;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use error::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "drctl", version, about = "Disaster-recovery orchestrator and runbook executor", long_about = None)]
pub struct Cli {
    /// Where drctl's state lives: a directory, or a PostgreSQL URL
    /// (`postgresql://USER@HOST:PORT/DB?sslmode=verify-full`; password from
    /// DRCTL_STATE_PASSWORD). Default: DRCTL_STATE, then the environment
    /// file's `state:`, then ./state.
    #[arg(
        long = "state",
        visible_alias = "state-dir",
        global = true,
        value_name = "DIR|URL"
    )]
    pub state: Option<String>,
    /// Output for humans or machines.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level filter (e.g. info, debug, drctl=trace).
    #[arg(long, global = true, env = "DRCTL_LOG", default_value = "warn")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Environment file (regions, endpoints, secrets by reference).
    #[arg(long)]
    pub env: Option<PathBuf>,
    /// Set a runbook parameter (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Do not ask for confirmation (required without a TTY).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Promote even when the standby lags more than allowed (journaled).
    #[arg(long)]
    pub accept_data_loss: bool,
    /// Override safety guards such as the split-brain check (journaled).
    #[arg(long)]
    pub force: bool,
    /// When the failure happened (RFC 3339), for RTO; default: now.
    #[arg(long)]
    pub failed_at: Option<String>,
    /// Steps run at most this many at a time.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a runbook.
    Run {
        /// Runbook file (YAML).
        runbook: PathBuf,
        /// incident (acts on production) or drill (steps marked `when: incident` are skipped).
        #[arg(long, value_enum, default_value = "incident")]
        mode: ModeArg,
        /// Target region (`${target...}`); default: the other region.
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Fail over to a region with the environment's failover runbook.
    Failover {
        /// Region to move service to; must not be the environment's
        /// `active_region`, and its servers must not be the active region's
        #[arg(long)]
        region: String,
        /// Runbook to use (default: the environment's `failover_runbook`, else runbooks/failover.yaml).
        #[arg(long)]
        runbook: Option<PathBuf>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Planned move of the primary to a region with zero data loss (runbooks/switchover.yaml).
    Switchover {
        /// Region to move the primary to (a streaming standby there).
        #[arg(long)]
        to: String,
        /// Runbook to use (default: switchover.yaml beside the failover runbook).
        #[arg(long)]
        runbook: Option<PathBuf>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Return to the region a failover left: plan built from its journal (runbooks/failback.yaml).
    Failback {
        /// The failover's run id, or `latest` (the newest run that promoted).
        run_id: String,
        /// Runbook to use (default: failback.yaml beside the failover runbook).
        #[arg(long)]
        runbook: Option<PathBuf>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Continue an interrupted or failed run where its journal stopped.
    Resume {
        /// Run id (or `latest`).
        run_id: String,
        /// Runbook path (default: the one recorded in the journal).
        #[arg(long)]
        runbook: Option<PathBuf>,
        /// Environment path (default: the one recorded in the journal).
        #[arg(long)]
        env: Option<PathBuf>,
        /// Resume even though the runbook file changed since the run started.
        #[arg(long)]
        allow_runbook_change: bool,
        /// Resume even though the environment file changed since the run
        /// started (same name and regions; the change is shown and journaled).
        #[arg(long)]
        allow_env_change: bool,
        /// Re-execute this interrupted step although it may not be idempotent.
        #[arg(long, value_name = "STEP")]
        rerun: Vec<String>,
        /// Record this interrupted step as done (you verified it by hand).
        #[arg(long, value_name = "STEP")]
        mark_done: Vec<String>,
        /// Change a runbook parameter for the rest of the run (repeatable; journaled).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Promote even when the standby lags more than allowed (journaled).
        #[arg(long)]
        accept_data_loss: bool,
        /// Override safety guards such as the split-brain check (journaled).
        #[arg(long)]
        force: bool,
        /// Do not ask (journaled).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Steps run at most this many at a time.
        #[arg(long, default_value_t = 8)]
        parallelism: usize,
    },
    /// Approve a waiting approval step (from any terminal).
    Approve {
        /// Run id (or `latest`).
        run_id: String,
        /// The approval step's id.
        step: String,
        /// Who approves (default: $USER).
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// End a run for good: at once when no process drives it, else after its in-flight steps.
    Abort {
        /// Run id (or `latest`).
        run_id: String,
    },
    /// List runs.
    Runs,
    /// Show a run's state from its journal.
    Status {
        /// Run id or `latest`.
        run_id: String,
        /// Keep printing until the run ends.
        #[arg(long)]
        follow: bool,
    },
    /// Render a run's report from its journal (or compare two runs, or verify a report).
    Report(ReportArgs),
    /// Validate runbooks, environment files and check sets; report every problem.
    Validate {
        /// Runbooks, environment files, check sets and drill definitions.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Environment file to check the runbooks against (references, regions).
        #[arg(long)]
        env: Option<PathBuf>,
    },
    /// Show what a runbook would do; with --check, probe live systems read-only.
    Plan {
        /// Runbook file (YAML).
        runbook: PathBuf,
        /// Environment file (regions, endpoints, secrets by reference).
        #[arg(long)]
        env: Option<PathBuf>,
        /// Target region (`${target...}`); default: the other region.
        #[arg(long)]
        region: Option<String>,
        /// Run every step's read-only preflight against the live systems (changes nothing).
        #[arg(long)]
        check: bool,
        /// incident or drill: which steps the plan includes.
        #[arg(long, value_enum, default_value = "incident")]
        mode: ModeArg,
        /// Set a runbook parameter (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// Print the JSON Schema of runbooks (for editors).
    Schema,
    /// Print shell completions.
    Completions {
        /// Shell to write completions for.
        shell: clap_complete::Shell,
    },
    /// Rehearse: inject the failure, run the runbook in drill mode, measure RTO/RPO.
    Drill {
        /// A runbook (with --env) or a drill definition (drills/).
        runbook: PathBuf,
        /// On the lab: pause WAL shipping this long before the failure (creates data loss).
        #[arg(long, value_parser = parse_dur)]
        inject_lag: Option<std::time::Duration>,
        /// Target region; default: the other region.
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Drill definitions: schedules, next runs, overdue drills, results over time.
    #[command(subcommand)]
    Drills(DrillsCmd),
    /// Run scheduled drills (leader-elected through the state store's lease).
    Daemon {
        /// Directory of drill definitions.
        #[arg(long, default_value = "drills")]
        drills: PathBuf,
        /// One scheduling pass, then exit (tests, cron).
        #[arg(long)]
        once: bool,
        /// Pretend it is this time (RFC 3339): tests drive the clock.
        #[arg(long, hide = true)]
        now: Option<String>,
        #[command(flatten)]
        metrics: MetricsArgs,
        /// Serve the drill gauges on http://ADDR/metrics (e.g. 127.0.0.1:9187).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Generate Kubernetes manifests from drctl's definitions.
    #[command(subcommand)]
    Manifests(ManifestsCmd),
    /// The local two-region lab (real Postgres primary/standby, demo apps).
    #[command(subcommand)]
    Lab(LabCmd),
    /// Write heartbeats to a region's primary: drctl's RPO probe (long-running).
    Heartbeat {
        /// Environment file.
        #[arg(long)]
        env: PathBuf,
        /// Region whose primary gets the heartbeat writes (the active one).
        #[arg(long)]
        region: String,
        /// How often to write a heartbeat (its period bounds the RPO estimate).
        #[arg(long, default_value = "1s", value_parser = parse_dur)]
        interval: std::time::Duration,
    },
    /// immudb audit ledger: trusted-state custody and offline proof checks.
    #[command(subcommand)]
    Immudb(ImmudbCmd),
    /// Restore the active region's backups into a scratch instance and prove
    /// them (runs runbooks/verify-backups.yaml; exit codes 30-34 say what failed).
    VerifyBackup(backupcmd::VerifyBackupArgs),
    /// The state store: initialise, check, migrate, prune.
    #[command(subcommand)]
    State(StateCmd),
    /// Print the exit codes and what they mean.
    ExitCodes,
    /// Run a benchmark with a fixed workload (figures are ratios to a baseline measured in the same run).
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Subcommand)]
pub enum DrillsCmd {
    /// Each definition's schedule, next run, last result and whether it is overdue.
    List {
        /// Directory of drill definitions.
        #[arg(long, default_value = "drills")]
        drills: PathBuf,
        /// Pretend it is this time (RFC 3339): tests drive the clock.
        #[arg(long, hide = true)]
        now: Option<String>,
    },
    /// The drill gauges (Prometheus text), computed from the history; or pushed / written.
    Metrics {
        /// Directory of drill definitions (for overdue allowances).
        #[arg(long, default_value = "drills")]
        drills: PathBuf,
        #[command(flatten)]
        metrics: MetricsArgs,
        /// Pretend it is this time (RFC 3339): tests drive the clock.
        #[arg(long, hide = true)]
        now: Option<String>,
    },
    /// Past drills with RTO/RPO, targets, the change against the previous drill and the median.
    History {
        /// Only this drill (a definition's name).
        name: Option<String>,
        /// How many earlier drills the median covers.
        #[arg(long, default_value_t = 5)]
        window: usize,
    },
    /// Undo what an isolated drill killed half-way left: stop and remove its clone, set its drill DNS record back.
    Cleanup {
        /// The drill's run id.
        run: String,
    },
}

/// Where drill metrics go.
#[derive(Debug, Args, Clone)]
pub struct MetricsArgs {
    /// Push-add the drill gauges to this Pushgateway (job `drctl_drill`).
    #[arg(long, value_name = "URL")]
    pub push: Option<String>,
    /// Write the drill gauges to this node_exporter textfile (atomically).
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ManifestsCmd {
    /// One Kubernetes CronJob per scheduled drill definition (YAML on stdout).
    Cronjobs {
        /// Directory of drill definitions (as the image holds it, relative to its working directory).
        #[arg(long, default_value = "drills")]
        drills: PathBuf,
        /// Namespace of the CronJobs.
        #[arg(long, default_value = "drctl")]
        namespace: String,
        /// drctl's container image.
        #[arg(long, default_value = "registry.example.com/drctl:0.1.0")]
        image: String,
        /// Where the pods mount the environment files (ConfigMap `drctl-env`).
        #[arg(long, default_value = "/etc/drctl/env")]
        env_dir: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCmd {
    /// Create the state store, or apply missing schema migrations (PostgreSQL).
    Init,
    /// Check the state store: reachable, schema version, clock skew against this machine.
    Check,
    /// Copy journals (each chain verified), documents and histories from a directory to another store.
    Migrate {
        /// The state directory to copy from.
        #[arg(long)]
        from: PathBuf,
        /// The store to copy to (directory or PostgreSQL URL).
        #[arg(long)]
        to: String,
    },
    /// Delete finished runs older than a duration. Failover runs (incident
    /// mode), drills and backup verifications are kept unless asked.
    Prune {
        /// e.g. 90d
        #[arg(long, value_parser = parse_dur)]
        older_than: std::time::Duration,
        /// Also delete runs that changed something (failovers, switchovers:
        /// runs that held the exclusive lease).
        #[arg(long)]
        include_mutating: bool,
        /// Also delete drill-mode runs.
        #[arg(long)]
        include_drills: bool,
        /// Show what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Per-step engine overhead with journaling vs bare append+fsync.
    Engine {
        /// Steps per run (no-op steps).
        #[arg(long, default_value_t = 1000)]
        steps: usize,
        /// Rounds; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Where to write (the disk under test); default: a temp dir under the state dir.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Benchmark on a PostgreSQL state store instead (password from
        /// DRCTL_STATE_PASSWORD); the baseline is a bare INSERT+COMMIT there.
        #[arg(long, value_name = "URL")]
        pg: Option<String>,
    },
    /// `status --follow` per-poll cost on a 100-record and a large journal.
    Follow {
        /// Records in the large journal.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// Polls measured (one new record each).
        #[arg(long, default_value_t = 200)]
        polls: usize,
        /// Directory for the state (default: a temp dir under the state dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Benchmark on a PostgreSQL state store instead.
        #[arg(long, value_name = "URL")]
        pg: Option<String>,
    },
    /// Validation and journal-fold cost as runbooks and journals grow, beside parse-only baselines.
    Scale {
        /// Runbook sizes (steps in one chain, each reading the previous step's output).
        #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000, 100_000])]
        steps: Vec<usize>,
        /// Journal sizes (records).
        #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000, 1_000_000])]
        records: Vec<usize>,
    },
    /// immudb verification: dual proofs at large tx ids and Alh-chain recomputation, beside raw SHA-256.
    Immudb,
    /// Report rendering (md, postmortem, json, html) from a large journal, beside verifying and folding it.
    Report {
        /// Records in the journal.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// Directory for the benchmark's state (default: a temp dir under the state dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImmudbCmd {
    /// Fetch the region's signed state and advance the trusted state through a verified proof (run often, e.g. a CronJob).
    Trust {
        /// Environment file.
        #[arg(long)]
        env: PathBuf,
        /// Region whose immudb is trusted forward.
        #[arg(long)]
        region: String,
    },
    /// Verify a saved bundle {"state": ..., "verifiableTx": ...} offline against a trusted state.
    VerifyProof {
        /// JSON file: {"state": ..., "verifiableTx": ...} as immudb's gateway returns them.
        bundle: PathBuf,
        /// Transaction id of the trusted state.
        #[arg(long)]
        trusted_tx: u64,
        /// The trusted state's txHash (base64, as immudb's JSON gives it).
        #[arg(long)]
        trusted_alh: String,
        /// PEM public key the state must be signed with.
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Start the lab and write its environment file.
    Up {
        /// Lab directory (default: STATE/lab).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where the lab's drctl state lives: the state directory, or a third
        /// PostgreSQL instance on loopback (the production topology: a
        /// witness store outside both regions).
        #[arg(long, value_enum, default_value = "dir")]
        state_backend: crate::lab::StateBackend,
    },
    /// Show every lab service with its address, pid and state.
    Status {
        /// Lab directory (default: STATE/lab).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Stop exactly what `lab up` started.
    Down {
        /// Lab directory (default: STATE/lab).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The disaster: kill -9 the primary region's Postgres and app.
    Break {
        /// What to break: `primary` (its Postgres and app, kill -9).
        #[arg(value_parser = ["primary"])]
        what: String,
        /// Lab directory (default: STATE/lab).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Take a backup of the lab's primary (its WAL is archived since `lab up`),
    /// for `drctl verify-backup --env STATE/lab/env.yaml`.
    Backup {
        /// Backup kind: `basebackup` (pg_basebackup, tar, with its manifest) or
        /// `pgbackrest` (stanza `lab`, a full backup; adds the source
        /// `lab-pgbackrest` to the environment file).
        #[arg(long, value_parser = ["basebackup", "pgbackrest"], default_value = "basebackup")]
        kind: String,
        /// Lab directory (default: STATE/lab).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// (internal) The supervisor process `lab up` starts.
    #[command(hide = true)]
    Supervise {
        /// Lab directory.
        #[arg(long)]
        dir: PathBuf,
        /// Where the lab's drctl state lives.
        #[arg(long, value_enum, default_value = "dir")]
        state_backend: crate::lab::StateBackend,
    },
}

/// clap value parser: clap prints the typed error after the flag.
fn parse_dur(s: &str) -> Result<std::time::Duration, crate::duration::DurationError> {
    crate::duration::parse_duration(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Incident,
    Drill,
}

impl From<ModeArg> for crate::runbook::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Incident => crate::runbook::Mode::Incident,
            ModeArg::Drill => crate::runbook::Mode::Drill,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
    /// One self-contained page (no external anything) with SVG pictures.
    Html,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub cmd: Option<ReportCmd>,
    /// Run id or `latest`.
    #[arg(required_unless_present = "compare")]
    pub run_id: Option<String>,
    /// Report format [default: md; json with `--output json`]
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,
    /// A postmortem skeleton prefilled from the journal (Markdown).
    #[arg(long)]
    pub postmortem: bool,
    /// Compare two runs: step durations, RTO/RPO, targets, what changed.
    #[arg(long, num_args = 2, value_names = ["RUN_A", "RUN_B"], conflicts_with_all = ["run_id", "postmortem", "sign_key", "anchor"])]
    pub compare: Option<Vec<String>>,
    /// Drills of the same runbook and environment in a drill's trend (0: none).
    #[arg(long, default_value_t = crate::report::trend::WINDOW)]
    pub trend: usize,
    /// Sign the journal head with this Ed25519 key (PKCS#8), by secret reference (env:NAME, file:PATH).
    #[arg(long, value_name = "REF")]
    pub sign_key: Option<String>,
    /// Write the journal head to the environment's immudb ledger (verified) and name the tx in the evidence.
    #[arg(long)]
    pub anchor: bool,
    /// Environment file whose immudb ledger takes the anchor [default: the one the run used].
    #[arg(long, value_name = "FILE", requires = "anchor")]
    pub env: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    /// Check that a report matches its run's journal (rendered again and compared), and its signature.
    Verify {
        /// The report file (md, html or json).
        report: PathBuf,
        /// The run the report is of (or `latest`).
        #[arg(long)]
        run: String,
        /// Ed25519 public key (PEM, or base64 of the 32 raw bytes) to check the signature with.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Environment file of the ledger an anchored report names [default: the one the run used].
        #[arg(long, value_name = "FILE")]
        env: Option<PathBuf>,
    },
}

/// Who is acting, for journals and approvals: `DRCTL_OPERATOR`, else the
/// login name (`$USER`, `$LOGNAME`, then the account of our uid).
pub fn operator() -> String {
    if let Ok(v) = std::env::var("DRCTL_OPERATOR")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
    {
        return v;
    }
    // SAFETY: getpwuid returns static storage or null; the name is copied
    // out at once.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    "unknown".into()
}
