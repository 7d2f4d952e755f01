//! Leases and the journal's write path, driven through the real binary:
//! exclusive runs exclude each other (exit 6 naming the holder), read-only
//! runs never lock out a mutating one, a holder paused past its lease is
//! taken over with a higher epoch and cannot write afterwards, and a torn
//! final record at any byte offset is repaired on resume.

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::Duration;

use drctl_tests::{wait_until, Out, Work};

const ENV: &str = "name: shop\nactive_region: primary\nregions:\n  primary: {}\n  dr: {}\n";

fn mutating(w: &Work, name: &str, seconds: &str) -> String {
    w.write(
        &format!("{name}.yaml"),
        &format!("name: {name}\nsteps:\n  - id: work\n    action: exec\n    with: {{argv: [sleep, '{seconds}'], idempotent: true}}\n  - id: after\n    action: exec\n    needs: [work]\n    with: {{argv: [sh, -c, 'echo {name} >> after'], idempotent: true}}\n"),
    )
    .display()
    .to_string()
}

fn spawn(w: &Work, args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut c = w.cmd(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn holders(w: &Work) -> Vec<drctl::store::LeaseRecord> {
    w.leases("env-shop")
}

#[test]
fn mutating_runs_exclude_each_other_and_name_the_holder() {
    let w = Work::new();
    let env = w.write("env.yaml", ENV).display().to_string();
    let rb = mutating(&w, "slow", "1.5");
    let mut first = spawn(&w, &["run", &rb, "--env", &env, "--yes"], &[]);
    assert!(wait_until(Duration::from_secs(5), || !w.runs().is_empty()));
    let holder = w.runs()[0].clone();
    let second = w.run(&["run", &rb, "--env", &env, "--yes"]);
    assert_eq!(second.code, 6, "{second:?}");
    for part in [
        holder.as_str(),
        "exclusive lease",
        "since",
        &drctl::journal::hostname(),
    ] {
        assert!(
            second.stderr.contains(part),
            "exit 6 must name {part:?}: {second:?}"
        );
    }
    assert!(first.wait().unwrap().success());
    assert_eq!(w.runs().len(), 1, "the refused run must leave no journal");
}

#[test]
fn a_hanging_read_only_run_does_not_block_a_failover() {
    let w = Work::new();
    let env = w.write("env.yaml", ENV).display().to_string();
    // An endpoint that accepts connections and never answers, like an API
    // server whose region is dying.
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/healthz", hang.local_addr().unwrap());
    let ro = w.write(
        "snapshot.yaml",
        &format!("name: housekeeping\nsteps:\n  - id: probe\n    action: http.check\n    timeout: 20s\n    with: {{url: '{url}'}}\n"),
    );
    let mut housekeeping = spawn(
        &w,
        &["run", ro.to_str().unwrap(), "--env", &env, "--yes"],
        &[],
    );
    assert!(wait_until(Duration::from_secs(5), || !holders(&w).is_empty()));
    let h = holders(&w);
    assert_eq!(h[0].mode, drctl::store::LeaseMode::Shared, "{h:?}");
    let rb = mutating(&w, "failover", "0.1");
    let o = w.run(&["run", &rb, "--env", &env, "--yes"]);
    assert_eq!(
        o.code, 0,
        "a read-only holder must not lock out a mutating run: {o:?}"
    );
    assert_eq!(w.read("after"), "failover\n");
    housekeeping.kill().unwrap();
    let _ = housekeeping.wait();
    drop(hang);
}

#[test]
fn ten_concurrent_failovers_exactly_one_runs() {
    let w = Work::new();
    let env = w.write("env.yaml", ENV).display().to_string();
    let rb = mutating(&w, "fo", "1");
    let children: Vec<Child> = (0..10)
        .map(|_| spawn(&w, &["run", &rb, "--env", &env, "--yes"], &[]))
        .collect();
    let outs: Vec<Out> = children
        .into_iter()
        .map(|c| Out::from(c.wait_with_output().unwrap()))
        .collect();
    let ok: Vec<&Out> = outs.iter().filter(|o| o.code == 0).collect();
    let refused: Vec<&Out> = outs.iter().filter(|o| o.code == 6).collect();
    assert_eq!(ok.len(), 1, "exactly one run: {outs:?}");
    assert_eq!(refused.len(), 9, "the others exit 6: {outs:?}");
    let runs = w.runs();
    assert_eq!(runs.len(), 1, "only the winner has a journal");
    for r in refused {
        assert!(r.stderr.contains(&runs[0]), "must name the winner: {r:?}");
    }
    assert_eq!(w.read("after"), "fo\n");
}

#[test]
fn a_holder_paused_past_its_lease_is_taken_over_and_cannot_write() {
    let w = Work::new();
    let env = w.write("env.yaml", ENV).display().to_string();
    let rb = mutating(&w, "old", "1.5");
    let ttl = [("DRCTL_LEASE_TTL", "1s")];
    let old = spawn(&w, &["run", &rb, "--env", &env, "--yes"], &ttl);
    assert!(wait_until(Duration::from_secs(5), || !w.runs().is_empty()));
    let old_run = w.runs()[0].clone();
    let epoch_before = holders(&w)[0].epoch;
    // SAFETY: stopping our own child process.
    unsafe { libc::kill(old.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(1600));
    let rb2 = mutating(&w, "new", "2");
    let new = spawn(&w, &["run", &rb2, "--env", &env, "--yes"], &ttl);
    assert!(wait_until(Duration::from_secs(5), || w.runs().len() == 2));
    assert!(wait_until(Duration::from_secs(5), || holders(&w)
        .iter()
        .any(|h| h.holder.run_id == w.runs()[1])));
    let epoch_after = holders(&w)
        .iter()
        .find(|h| h.holder.run_id == w.runs()[1])
        .map(|h| h.epoch)
        .unwrap();
    assert!(epoch_after > epoch_before, "takeover must raise the epoch");
    // SAFETY: continuing our own child process.
    unsafe { libc::kill(old.id() as i32, libc::SIGCONT) };
    let o = Out::from(old.wait_with_output().unwrap());
    assert_eq!(
        o.code, 18,
        "the paused holder must stop with lease-lost: {o:?}"
    );
    let n = Out::from(new.wait_with_output().unwrap());
    assert_eq!(n.code, 0, "{n:?}");
    assert_eq!(
        w.read("after"),
        "new\n",
        "the fenced run did no further step"
    );
    // Its journal still verifies; it ends where the fence stopped it.
    let st = w.run(&["status", &old_run]);
    assert_eq!(st.code, 0, "{st:?}");
    assert!(
        !w.journal(&old_run).iter().any(|r| r["step"] == "after"),
        "no record after the takeover"
    );
}

/// Writes `bytes[..k]` of a record after a crashed journal and resumes:
/// every `k` leaves a journal that resumes, verifies and reports.
#[test]
fn a_torn_tail_at_every_byte_offset_is_repaired_on_resume() {
    // Records in the PostgreSQL store are rows, never torn: this is the
    // directory backend's failure mode.
    let w = Work::dir_store();
    let rb = w.write("rb.yaml", "name: t\nsteps:\n  - id: a\n    action: exec\n    with: {argv: ['true'], idempotent: true}\n  - id: b\n    action: exec\n    needs: [a]\n    with: {argv: ['true'], idempotent: true}\n");
    let mut c = w.cmd(&["run", rb.to_str().unwrap(), "--yes"]);
    c.env("DRCTL_TEST_CRASH_AFTER_SEQ", "2");
    assert_eq!(Out::from(c.output().unwrap()).code, -1);
    let run = w.runs()[0].clone();
    let crashed = std::fs::read(w.journal_path(&run)).unwrap();
    // A complete record as the crashed writer would have written next.
    let clean = Work::dir_store();
    let rb2 = clean.write("rb.yaml", &std::fs::read_to_string(&rb).unwrap());
    assert_eq!(clean.run(&["run", rb2.to_str().unwrap(), "--yes"]).code, 0);
    let full = std::fs::read(clean.journal_path(&clean.runs()[0])).unwrap();
    let next_line: Vec<u8> = full.split(|b| *b == b'\n').nth(3).unwrap().to_vec();
    assert!(next_line.len() > 50);
    let state0 = w.state();
    for k in 1..=next_line.len() {
        let t = Work::dir_store();
        copy_dir(&state0, &t.state());
        let jp = t.journal_path(&run);
        std::fs::write(&jp, &crashed).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&jp).unwrap();
        f.write_all(&next_line[..k]).unwrap();
        drop(f);
        let r = t.run(&["resume", &run, "--runbook", rb.to_str().unwrap()]);
        assert_eq!(r.code, 0, "torn at byte {k}: {r:?}");
        for cmd in [["status", run.as_str()], ["report", run.as_str()]] {
            let o = t.run(&cmd);
            assert_eq!(o.code, 0, "torn at byte {k}: {cmd:?} {o:?}");
        }
        let resumed = t
            .journal(&run)
            .into_iter()
            .find(|r| r["type"] == "run_resumed")
            .unwrap();
        assert_eq!(resumed["repaired_tail_bytes"], k as u64, "torn at byte {k}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
