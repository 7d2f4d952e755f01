//! A bounded mutation fuzzer for the parsers that read untrusted files:
//! runbooks, environment files, check sets, drill definitions, and the
//! journal reader. It runs in CI for a fixed time (not a wall-clock limit
//! on the code: a budget for how long to search) and fails on any panic,
//! or on any input whose parse allocates more than 100 MB at once.
//!
//! Inputs are the shipped definitions and the test fixtures, mutated by
//! byte edits, YAML-token insertions, splices between seeds, truncation,
//! and generated shapes (alias bombs, deep nesting, long lines). Every
//! input is derived from `DRCTL_FUZZ_SEED` (printed), so a failure is
//! reproduced by running again with that seed; the failing input is also
//! written to `target/fuzz-failures/`.
//!
//! Knobs: `DRCTL_FUZZ_SECS` (default 20), `DRCTL_FUZZ_SEED` (default: from
//! the clock). This is an equivalent of cargo-fuzz that runs on stable
//! Rust without instrumentation: it searches by mutation, not by coverage.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes so a parse that balloons is caught (the alias
/// bomb once took 23.7 GB): the peak above the level before each input is
/// checked after it, and past a hard cap the process stops at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
const SOFT_LIMIT: usize = 100 << 20;
const HARD_LIMIT: usize = 1 << 30;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
            if now > HARD_LIMIT {
                // No allocation from here: write a fixed message and stop.
                let msg = b"fuzz: an input drove the heap past 1 GiB; see the last input in target/fuzz-failures/current\n";
                unsafe {
                    libc::write(2, msg.as_ptr().cast(), msg.len());
                    libc::abort();
                }
            }
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What a seed is, so its mutants go to the matching parser.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Runbook,
    Environment,
    CheckSet,
    Drill,
    Journal,
}

fn seeds() -> Vec<(Kind, Vec<u8>)> {
    let root = drctl_tests::repo_root();
    let mut out = Vec::new();
    let mut add = |kind, p: PathBuf| {
        if let Ok(b) = std::fs::read(&p) {
            out.push((kind, b));
        }
    };
    for f in [
        "runbooks/failover.yaml",
        "runbooks/kube-snapshot.yaml",
        "runbooks/verify-backups.yaml",
    ] {
        add(Kind::Runbook, root.join(f));
    }
    for e in std::fs::read_dir(root.join("tests/fixtures/broken"))
        .into_iter()
        .flatten()
        .flatten()
    {
        add(Kind::Runbook, e.path());
    }
    for e in std::fs::read_dir(root.join("runbooks/environments"))
        .into_iter()
        .flatten()
        .flatten()
    {
        add(Kind::Environment, e.path());
    }
    add(
        Kind::Environment,
        root.join("tests/fixtures/broken/env-bad.yaml"),
    );
    add(Kind::CheckSet, root.join("checks/smoke.yaml"));
    add(Kind::Drill, root.join("drills/lab-failover.yaml"));
    out.push((Kind::Journal, journal_seed()));
    out
}

/// A valid journal of a few records, built with the library's encoder.
fn journal_seed() -> Vec<u8> {
    use drctl::journal::{encode, Event, GENESIS};
    let mut prev = GENESIS.to_string();
    let mut bytes = Vec::new();
    for seq in 0..6u64 {
        let ev = Event::Note {
            step: Some(format!("s{seq}")),
            message: "fuzz seed".into(),
            data: serde_json::json!({"seq": seq, "nested": {"a": [1, 2, 3]}}),
        };
        let (rec, line) = encode(seq, &prev, ev).expect("encode");
        prev = rec.hash;
        bytes.extend_from_slice(&line);
        bytes.push(b'\n');
    }
    bytes
}

const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a\n",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n  ",
    "\n",
    "\t",
    "\"",
    "'",
    "${",
    "${target.postgres}",
    "${params.x}",
    "${steps.a.outputs.b}",
    "!!binary ",
    "!tag ",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "? ",
    "|\n",
    ">-\n",
    "#",
    "\u{feff}",
    "é",
    "\u{0}",
    "\u{202e}",
    "99999999999999999999999",
    "-1",
    "1e309",
    ".nan",
    "~",
    "null",
    "needs: [",
    "id: ",
    "action: ",
    "env:",
    "file:/nonexistent",
    "password: ",
    "with: ",
    "steps:\n",
    "regions:\n",
    "timeout: ",
    "retry: {attempts: ",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "{\"seq\":",
    "\"prev\":",
    "\"hash\":",
];

/// One mutation of `base`, or a splice with `other`.
fn mutate(base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    let rounds = 1 + fastrand::usize(..6);
    for _ in 0..rounds {
        let at = if v.is_empty() {
            0
        } else {
            fastrand::usize(..=v.len())
        };
        match fastrand::u8(..9) {
            0 if !v.is_empty() => {
                let i = fastrand::usize(..v.len());
                v[i] ^= 1 << fastrand::u8(..8);
            }
            1 => v.insert(at, fastrand::u8(..)),
            2 if !v.is_empty() => {
                let end = (at + fastrand::usize(..64)).min(v.len());
                v.drain(at.min(end)..end);
            }
            3 => {
                let t = TOKENS[fastrand::usize(..TOKENS.len())];
                v.splice(at..at, t.bytes());
            }
            4 if !other.is_empty() => {
                let s = fastrand::usize(..other.len());
                let e = (s + fastrand::usize(..256)).min(other.len());
                v.splice(at..at, other[s..e].iter().copied());
            }
            5 => v.truncate(at),
            6 if !v.is_empty() => {
                let end = (at + fastrand::usize(..128)).min(v.len());
                let piece: Vec<u8> = v[at.min(end)..end].to_vec();
                v.splice(at..at, piece);
            }
            7 => {
                // A line from elsewhere in the file, re-indented.
                let depth = fastrand::usize(..12);
                let mut ins = b"\n".to_vec();
                ins.extend(std::iter::repeat_n(b' ', depth));
                ins.extend_from_slice(TOKENS[fastrand::usize(..TOKENS.len())].as_bytes());
                v.splice(at..at, ins);
            }
            _ => {}
        }
    }
    v
}

/// Shapes mutation rarely reaches by chance.
fn generated() -> Vec<u8> {
    match fastrand::u8(..4) {
        0 => {
            // An alias bomb of random width and depth.
            let (w, d) = (2 + fastrand::usize(..9), 2 + fastrand::usize(..12));
            let mut s = String::from("name: bomb\na0: &a0 [x]\n");
            for i in 1..=d {
                let refs: Vec<String> = (0..w).map(|_| format!("*a{}", i - 1)).collect();
                s.push_str(&format!("a{i}: &a{i} [{}]\n", refs.join(", ")));
            }
            s.push_str(&format!("steps: *a{d}\n"));
            s.into_bytes()
        }
        1 => {
            let n = fastrand::usize(..50_000);
            let open = if fastrand::bool() { "[" } else { "{a: " };
            let close = if open == "[" { "]" } else { "}" };
            format!("name: deep\nsteps: {}{}\n", open.repeat(n), close.repeat(n)).into_bytes()
        }
        2 => {
            // A long chain of `needs` (validation walks the graph).
            let n = fastrand::usize(..5_000);
            let mut s = String::from("name: chain\nsteps:\n");
            for i in 0..n {
                s.push_str(&format!(
                    "  - id: s{i}\n    action: wait\n    with: {{duration: 0ms}}\n"
                ));
                if i > 0 {
                    s.push_str(&format!("    needs: [s{}]\n", i - 1));
                }
            }
            s.into_bytes()
        }
        _ => {
            let n = fastrand::usize(..1_000_000);
            format!("name: \"{}\"\nsteps: []\n", "x".repeat(n)).into_bytes()
        }
    }
}

/// Parses `bytes` as `kind` the way the CLI does, rendering every
/// diagnostic (rendering slices source lines: a classic panic site).
fn parse(kind: Kind, bytes: &[u8], file: &Path, registry: &drctl::action::Registry) {
    if let Kind::Journal = kind {
        let _ = drctl::journal::verify(bytes);
        let mut v = drctl::journal::Verifier::default();
        let mid = bytes.len() / 2;
        let _ = v.feed(&bytes[..mid]).and_then(|_| v.feed(&bytes[mid..]));
        return;
    }
    std::fs::write(file, bytes).expect("write fuzz input");
    match kind {
        Kind::Runbook => match drctl::runbook::load_runbook(file) {
            Ok((rb, d)) => {
                let _ = d.render();
                let (d, _) = drctl::runbook::validate_runbook(&rb, None, registry);
                let _ = d.render();
            }
            Err(d) => {
                let _ = d.render();
            }
        },
        Kind::Environment => match drctl::environment::load_environment(file) {
            Ok((_, d)) | Err(d) => {
                let _ = d.render();
            }
        },
        Kind::CheckSet => {
            let mut d = drctl::diag::Diagnostics::default();
            let _ = drctl::actions::checks::load(file, None, registry, &mut d);
            let _ = d.render();
        }
        Kind::Drill => match drctl::drill::load_definition(file) {
            Ok(_) => {}
            Err(d) => {
                let _ = d.render();
            }
        },
        Kind::Journal => unreachable!("handled above"),
    }
}

#[test]
fn parsers_survive_mutated_and_generated_inputs() {
    let secs: u64 = std::env::var("DRCTL_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("DRCTL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("fuzz: DRCTL_FUZZ_SEED={seed} for {secs}s");
    fastrand::seed(seed);
    let seeds = seeds();
    assert!(seeds.len() >= 8, "seed corpus missing: {}", seeds.len());
    let registry = drctl::registry::standard();
    let failures = drctl_tests::repo_root().join("target/fuzz-failures");
    std::fs::create_dir_all(&failures).expect("failures dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("input.yaml");
    // Panics are the finding: keep their messages, not the default hook's
    // backtrace per input.
    std::panic::set_hook(Box::new(|info| eprintln!("fuzz: panic: {info}")));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut by_kind) = (0u64, [0u64; 5]);
    while Instant::now() < deadline {
        let (kind, base) = &seeds[fastrand::usize(..seeds.len())];
        let (_, other) = &seeds[fastrand::usize(..seeds.len())];
        let input = if matches!(kind, Kind::Runbook | Kind::Environment) && fastrand::u8(..10) == 0
        {
            generated()
        } else {
            mutate(base, other)
        };
        let _ = std::fs::write(failures.join("current"), &input);
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| parse(*kind, &input, &file, &registry)));
        let grew = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        if outcome.is_err() || grew > SOFT_LIMIT {
            let name = format!("{kind:?}-{seed}-{runs}.yaml");
            std::fs::write(failures.join(&name), &input).expect("save failing input");
            panic!(
                "fuzz: {kind:?} input #{runs} (seed {seed}) {}; saved as target/fuzz-failures/{name}",
                if outcome.is_err() {
                    "panicked".to_string()
                } else {
                    format!("allocated {} MB at once", grew >> 20)
                }
            );
        }
        runs += 1;
        by_kind[*kind as usize] += 1;
    }
    let _ = std::fs::remove_file(failures.join("current"));
    println!("fuzz: {runs} inputs (runbook, environment, check set, drill, journal: {by_kind:?})");
    assert!(runs > 0, "the time budget ran out before any input");
}
