//! Benchmarks with fixed workloads, reported as ratios against a baseline
//! measured in the same run on the same machine (never wall-clock limits in
//! tests). `drctl bench engine` compares the engine's per-step overhead with
//! journaling to bare append+fsync on the same disk.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use thiserror::Error;

use crate::diag::Diagnostics;
use crate::engine::{self, EngineError, RunSpec};
use crate::runbook::Mode;
use crate::store::{DirStore, Store, StoreError};

pub mod report;
pub mod scale;

/// Why a benchmark could not produce figures.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{}", .0.render())]
    Runbook(Diagnostics),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("bench run ended {0}")]
    RunEnded(&'static str),
}

/// Writes a benchmark's synthetic journal one record at a time: each
/// event encoded as drctl's writer would (canonical line, hash chained
/// to the one before), so readers verify it like a real journal.
pub(crate) struct Chained {
    prev: String,
    records: usize,
}

impl Chained {
    pub(crate) fn new() -> Self {
        Chained {
            prev: crate::journal::GENESIS.to_string(),
            records: 0,
        }
    }

    pub(crate) fn push(
        &mut self,
        event: crate::journal::Event,
        out: &mut dyn std::io::Write,
    ) -> Result<(), BenchError> {
        let (rec, mut line) = crate::journal::encode(self.records as u64, &self.prev, event)?;
        line.push(b'\n');
        out.write_all(&line)?;
        self.prev = rec.hash;
        self.records += 1;
        Ok(())
    }

    /// Records written so far.
    pub(crate) fn records(&self) -> usize {
        self.records
    }
}

/// Median of a sample, in microseconds.
fn median_us(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// 1 append of a journal-sized line + fdatasync, `n` times: the floor any
/// durable journal pays per record.
pub fn bare_fsync(dir: &Path, n: usize) -> std::io::Result<f64> {
    let path = dir.join("bare-fsync.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let line = vec![b'x'; 300];
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&line)?;
        f.sync_data()?;
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let _ = std::fs::remove_file(&path);
    Ok(per)
}

fn noop_runbook(
    dir: &Path,
    steps: usize,
    chained: bool,
) -> Result<Arc<crate::runbook::Runbook>, BenchError> {
    let mut y = String::from("name: bench\nsteps:\n");
    for i in 0..steps {
        let _ = write!(
            y,
            "  - id: s{i}\n    action: wait\n    with: {{duration: 0ms}}\n"
        );
        if chained && i > 0 {
            let _ = writeln!(y, "    needs: [s{}]", i - 1);
        }
    }
    let p = dir.join(format!("bench-{steps}-{chained}.yaml"));
    std::fs::write(&p, y)?;
    let (rb, _) = crate::runbook::load_runbook(&p).map_err(BenchError::Runbook)?;
    Ok(Arc::new(rb))
}

async fn engine_run(
    store: Arc<dyn Store>,
    rb: Arc<crate::runbook::Runbook>,
    parallelism: usize,
) -> Result<Duration, BenchError> {
    let spec = RunSpec {
        runbook: rb,
        registry: Arc::new(crate::registry::standard()),
        env: None,
        mode: Mode::Drill,
        params: Default::default(),
        target_region: None,
        operator: "bench".into(),
        options: Default::default(),
        failed_at_ms: None,
        parallelism,
        run_id: None,
        hooks: None,
    };
    let start = Instant::now();
    let out = engine::start(store, spec, engine::silent_ui()).await?;
    if out.status != crate::journal::RunStatus::Succeeded {
        return Err(BenchError::RunEnded(out.status.as_str()));
    }
    Ok(start.elapsed())
}

/// Runs the engine benchmark; returns a human table and the JSON figures.
/// With `pg` (a state database URL), the store is PostgreSQL and the
/// baseline is a bare `INSERT`+`COMMIT` round trip to the same server;
/// otherwise a state directory under `dir` and a bare append+fdatasync.
pub async fn engine_bench(
    dir: &Path,
    steps: usize,
    rounds: usize,
    pg: Option<(String, crate::postgres::PgServer)>,
) -> Result<(String, Value), BenchError> {
    std::fs::create_dir_all(dir)?;
    let store: Arc<dyn Store> = match &pg {
        None => Arc::new(DirStore::open(dir.join("state"))?),
        Some((url, server)) => Arc::new(crate::store::postgres::init(url, server.clone()).await?.0),
    };
    let mut fsync = Vec::new();
    let mut appends = Vec::new();
    let mut chained = Vec::new();
    let mut parallel = Vec::new();
    let rb_chain = noop_runbook(dir, steps, true)?;
    let rb_par = noop_runbook(dir, steps, false)?;
    // Interleave rounds so drift in disk speed hits both sides alike.
    for _ in 0..rounds {
        fsync.push(match &pg {
            None => bare_fsync(dir, steps)?,
            Some((_, server)) => crate::store::bench::bare_insert_commit(server, steps).await?,
        });
        appends.push(crate::store::bench::store_appends(&store, steps).await?);
        chained.push(
            engine_run(store.clone(), rb_chain.clone(), 1)
                .await?
                .as_secs_f64()
                * 1e6
                / steps as f64,
        );
        parallel.push(
            engine_run(store.clone(), rb_par.clone(), 16)
                .await?
                .as_secs_f64()
                * 1e6
                / steps as f64,
        );
    }
    let (f, a, c, p) = (
        median_us(fsync),
        median_us(appends),
        median_us(chained),
        median_us(parallel),
    );
    let mut t = String::new();
    let _ = writeln!(
        t,
        "engine benchmark: {steps} no-op steps, median of {rounds} rounds, state in {}",
        store.describe()
    );
    let base = if pg.is_some() {
        "bare INSERT+COMMIT round trip "
    } else {
        "bare append+fdatasync         "
    };
    let _ = writeln!(t, "  {base} {f:>10.1} µs per record   (baseline, 1.00x)");
    let _ = writeln!(
        t,
        "  store alone, 2-record append  {a:>10.1} µs per append   ({:.2}x baseline; what a step's writes cost without the engine)",
        a / f
    );
    let _ = writeln!(t, "  engine, sequential chain       {c:>10.1} µs per step     ({:.2}x baseline; 2 records per step in one durable write)", c / f);
    let _ = writeln!(
        t,
        "  engine, independent (16 wide)  {p:>10.1} µs per step     ({:.2}x baseline)",
        p / f
    );
    let _ = writeln!(
        t,
        "  target: ≤ 3.00x per step -> {}",
        if c / f <= 3.0 { "met" } else { "NOT met" }
    );
    let v = json!({
        "steps": steps, "rounds": rounds, "store": store.describe(),
        "baseline": if pg.is_some() { "insert_commit_round_trip" } else { "append_fdatasync" },
        "bare_fsync_us": f, "store_append2_us": a, "engine_chain_us_per_step": c, "engine_parallel_us_per_step": p,
        "chain_ratio": c / f, "parallel_ratio": p / f,
    });
    Ok((t, v))
}
