//! Fixed-workload benchmarks of the state store, each reported as a ratio
//! against a baseline measured in the same run on the same store:
//!
//! - the floor a durable record costs: one `INSERT … ; COMMIT` round trip
//!   on the same PostgreSQL server (autocommit, a 300-byte line), beside
//!   which `drctl bench engine --pg URL` puts the engine's per-step cost;
//! - `status --follow`: the cost of one poll (read the new records, verify
//!   them against the chain, fold them into the view) on a journal of a
//!   hundred records and on one of a hundred thousand.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{DirStore, HolderId, LeaseMode, Store, StoreError};
use crate::engine::view::RunView;
use crate::journal::{self, Event, Verifier};
use crate::pgconn::PgServer;

/// Median of a sample.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A direct connection to the benchmark's server (beside the store's own).
async fn connect(server: &PgServer) -> Result<tokio_postgres::Client, StoreError> {
    server
        .connect(Duration::from_secs(10))
        .await
        .map_err(|e| StoreError::Connect {
            url: server.addr(),
            reason: e.to_string(),
        })
}

/// A bare `INSERT` of a journal-sized line, committed (autocommit), `n`
/// times on one connection: what one durable record costs on this server.
/// The table is an ordinary (WAL-logged) one: a temporary or unlogged
/// table commits without flushing WAL and would make the floor a round
/// trip that persists nothing.
pub async fn bare_insert_commit(server: &PgServer, n: usize) -> Result<f64, StoreError> {
    let db = |op: &'static str| move |source| StoreError::Database { op, source };
    let client = connect(server).await?;
    let table = format!("drctl_bench_bare_{:08x}", fastrand::u32(..));
    client
        .batch_execute(&format!(
            "create table public.{table} (id bigint primary key, line text not null)"
        ))
        .await
        .map_err(db("create bench table"))?;
    let stmt = client
        .prepare(&format!(
            "insert into public.{table} (id, line) values ($1, $2)"
        ))
        .await
        .map_err(db("prepare bench insert"))?;
    let line = "x".repeat(300);
    let start = Instant::now();
    let mut res = Ok(());
    for i in 0..n {
        if let Err(e) = client.execute(&stmt, &[&(i as i64), &line]).await {
            res = Err(db("bench insert")(e));
            break;
        }
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    client
        .batch_execute(&format!("drop table public.{table}"))
        .await
        .map_err(db("drop bench table"))?;
    res.map(|()| per)
}

/// An exclusive lease of the benchmark's own name, for one run.
async fn bench_lease(store: &Arc<dyn Store>, run_id: &str) -> Result<super::Lease, StoreError> {
    Ok(store
        .acquire_lease(
            &format!("bench-{run_id}"),
            LeaseMode::Exclusive,
            &HolderId::this_process(run_id),
            Duration::from_secs(300),
        )
        .await?
        .lease)
}

/// `n` group commits of two journal-sized records straight through the
/// store (no engine): what a step's durable writes cost by themselves,
/// so the engine's own share of a step is the difference.
pub async fn store_appends(store: &Arc<dyn Store>, n: usize) -> Result<f64, StoreError> {
    let run_id = format!("bench-append-{:08x}", fastrand::u32(..));
    let lease = bench_lease(store, &run_id).await?;
    let line = vec![b'x'; 300];
    store.create_journal(&run_id, &lease, &line).await?;
    let start = Instant::now();
    for i in 0..n {
        let seq = 1 + 2 * i as u64;
        store
            .append_records(&run_id, &lease, seq, &[&line, &line])
            .await?;
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let _ = store.release_lease(&lease).await;
    let _ = store.delete_run(&run_id).await;
    Ok(per)
}

/// A valid, hash-chained journal of `n` records (a start record and
/// notes), as bytes: lines and the chain head.
fn synthetic_journal(run_id: &str, n: usize) -> Result<(Vec<Vec<u8>>, String), StoreError> {
    let bad = |e: journal::JournalError| StoreError::Corrupt {
        path: run_id.to_string(),
        reason: e.to_string(),
    };
    let mut lines = Vec::with_capacity(n);
    let mut prev = journal::GENESIS.to_string();
    for seq in 0..n as u64 {
        let ev = if seq == 0 {
            Event::RunStarted {
                run_id: run_id.to_string(),
                runbook: journal::FileRef {
                    name: "bench".into(),
                    path: "bench.yaml".into(),
                    sha256: "00".into(),
                },
                environment: None,
                mode: crate::runbook::Mode::Drill,
                operator: "bench".into(),
                host: journal::hostname(),
                pid: std::process::id(),
                params: Default::default(),
                target_region: None,
                source_region: None,
                options: Default::default(),
                failed_at_ms: None,
                rto_target_ms: None,
                rpo_target_ms: None,
                drctl_version: env!("CARGO_PKG_VERSION").into(),
                lease_mode: Some(LeaseMode::Shared),
                proofs: None,
            }
        } else {
            note(seq)
        };
        let (rec, line) = journal::encode(seq, &prev, ev).map_err(bad)?;
        prev = rec.hash;
        lines.push(line);
    }
    Ok((lines, prev))
}

fn note(seq: u64) -> Event {
    Event::Note {
        step: Some(format!("s{}", seq % 1000)),
        message: "benchmark record".into(),
        data: json!({"seq": seq}),
    }
}

/// Where a follow benchmark writes its journals.
pub enum Target<'a> {
    Dir(&'a std::path::Path),
    Pg { url: String, server: PgServer },
}

/// Writes a synthetic journal straight into the store's files or tables
/// (a fixture: the write path is measured elsewhere).
async fn seed(target: &Target<'_>, run_id: &str, lines: &[Vec<u8>]) -> Result<(), StoreError> {
    match target {
        Target::Dir(root) => {
            let dir = root.join("runs").join(run_id);
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
                op: "create bench run",
                path: dir.clone(),
                source,
            })?;
            let mut bytes = Vec::new();
            for l in lines {
                bytes.extend_from_slice(l);
                bytes.push(b'\n');
            }
            super::write_atomic(&dir.join("journal.jsonl"), &bytes)
        }
        Target::Pg { server, .. } => {
            let db = |op: &'static str| move |source| StoreError::Database { op, source };
            let client = connect(server).await?;
            let text: Vec<String> = lines
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            client
                .execute(
                    "insert into drctl.runs (run_id, next_seq) values ($1, $2)",
                    &[&run_id, &(lines.len() as i64)],
                )
                .await
                .map_err(db("seed bench run"))?;
            for (i, chunk) in text.chunks(5000).enumerate() {
                let seqs: Vec<i64> = (0..chunk.len()).map(|k| (i * 5000 + k) as i64).collect();
                client
                    .execute(
                        "insert into drctl.journal (run_id, seq, line) \
                         select $1, s, l from unnest($2::bigint[], $3::text[]) as t(s, l)",
                        &[&run_id, &seqs, &chunk],
                    )
                    .await
                    .map_err(db("seed bench journal"))?;
            }
            Ok(())
        }
    }
}

/// Per-poll cost of following a journal of `records` records: the poll
/// reads the records after its cursor, verifies and folds them. Between
/// polls one record is appended (not timed), as a live run would.
async fn follow_cost(
    target: &Target<'_>,
    store: &Arc<dyn Store>,
    records: usize,
    polls: usize,
) -> Result<(f64, f64), StoreError> {
    let run_id = format!("bench-follow-{records}-{:08x}", fastrand::u32(..));
    let (lines, head) = synthetic_journal(&run_id, records)?;
    seed(target, &run_id, &lines).await?;
    let lease = bench_lease(store, &run_id).await?;
    let corrupt = |e: journal::JournalError| StoreError::Corrupt {
        path: run_id.clone(),
        reason: e.to_string(),
    };
    // The initial load (linear in the journal, once per `status --follow`).
    let t0 = Instant::now();
    let mut verifier = Verifier::default();
    let chunk = store.read_journal_from(&run_id, 0).await?;
    let (recs, _) = verifier.feed(&chunk.bytes).map_err(corrupt)?;
    let mut cursor = chunk.next;
    let mut view = recs
        .first()
        .and_then(RunView::start)
        .ok_or_else(|| StoreError::Corrupt {
            path: run_id.clone(),
            reason: "no start record".into(),
        })?;
    for r in &recs[1..] {
        view.apply(r);
    }
    let initial_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut prev = head;
    let mut per_poll = Vec::with_capacity(polls);
    for i in 0..polls {
        let seq = (records + i) as u64;
        let (rec, line) = journal::encode(seq, &prev, note(seq)).map_err(corrupt)?;
        prev = rec.hash;
        store.append_journal(&run_id, &lease, seq, &line).await?;
        let t = Instant::now();
        let chunk = store.read_journal_from(&run_id, cursor).await?;
        let (recs, _) = verifier.feed(&chunk.bytes).map_err(corrupt)?;
        cursor = chunk.next;
        for r in &recs {
            view.apply(r);
        }
        per_poll.push(t.elapsed().as_secs_f64() * 1e6);
        if recs.len() != 1 {
            return Err(StoreError::Corrupt {
                path: run_id,
                reason: format!("a poll saw {} new records, expected 1", recs.len()),
            });
        }
    }
    let _ = store.release_lease(&lease).await;
    let _ = store.delete_run(&run_id).await;
    Ok((median(per_poll), initial_ms))
}

/// `drctl bench follow`: a small and a large journal, same store.
pub async fn follow_bench(
    target: Target<'_>,
    large: usize,
    polls: usize,
) -> Result<(String, Value), StoreError> {
    let store: Arc<dyn Store> = match &target {
        Target::Dir(p) => Arc::new(DirStore::open(p)?),
        Target::Pg { url, server } => Arc::new(super::postgres::init(url, server.clone()).await?.0),
    };
    let small = 100;
    let (s_poll, s_init) = follow_cost(&target, &store, small, polls).await?;
    let (l_poll, l_init) = follow_cost(&target, &store, large, polls).await?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "status --follow benchmark on {}: median of {polls} polls, one new record each",
        store.describe()
    );
    let _ = writeln!(
        t,
        "  {small:>7} records: {s_poll:>9.1} µs per poll (baseline, 1.00x); initial load {s_init:.1} ms"
    );
    let _ = writeln!(
        t,
        "  {large:>7} records: {l_poll:>9.1} µs per poll ({:.2}x); initial load {l_init:.1} ms",
        l_poll / s_poll
    );
    let v = json!({
        "store": store.describe(), "polls": polls,
        "small_records": small, "small_poll_us": s_poll, "small_initial_ms": s_init,
        "large_records": large, "large_poll_us": l_poll, "large_initial_ms": l_init,
        "poll_ratio": l_poll / s_poll,
    });
    Ok((t, v))
}
