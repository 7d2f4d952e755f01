//! The [`Store`] contract as a backend-agnostic test suite, and a fixture
//! that runs a real PostgreSQL server for tests.
//!
//! Every check uses fresh names (runs, leases, collections), so the suite
//! can run again against the same store and beside other tests.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Approval, Expect, HolderId, Lease, LeaseMode, Store, StoreError, SCHEMA_VERSION};
use crate::lab::pg as lab;
use crate::pgconn::PgServer;
use crate::pgconn::SslMode;
use crate::secret::SecretRef;

/// Runs every check in order.
pub async fn run_all(store: &dyn Store) {
    basics(store).await;
    conditional_append(store).await;
    group_commit(store).await;
    concurrent_appends(store).await;
    read_from_cursor(store).await;
    read_in_bounded_chunks(store).await;
    fencing(store).await;
    takeover_is_a_cut(store, store).await;
    exclusive_excludes_exclusive(store).await;
    shared_coexists_with_exclusive(store).await;
    dead_holder_taken_over(store).await;
    release_then_reacquire(store).await;
    documents_cas(store).await;
    active_region(store).await;
    histories_in_order(store).await;
    approvals_and_aborts(store).await;
    artifacts(store).await;
    delete_run(store).await;
    listing(store).await;
}

fn unique(what: &str) -> String {
    format!(
        "{}-{what}-{:08x}",
        humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .replace([':', '.'], ""),
        fastrand::u32(..)
    )
}

/// A batch of records is appended under one set of conditions: all of it
/// or none of it, in order, and the next batch follows its last record.
async fn group_commit(store: &dyn Store) {
    let run = unique("group");
    let name = unique("group-lease");
    let lease = exclusive(store, &name, &run, Duration::from_secs(60)).await;
    store
        .create_journal(&run, &lease, b"{\"r\":0}")
        .await
        .expect("create journal");
    let batch: [&[u8]; 3] = [b"{\"r\":1}", b"{\"r\":2}", b"{\"r\":3}"];
    store
        .append_records(&run, &lease, 1, &batch)
        .await
        .expect("append a batch of 3");
    // A batch that expects the wrong length writes none of its records.
    for seq in [1, 3, 5] {
        assert!(
            matches!(
                store
                    .append_records(&run, &lease, seq, &[b"{\"bad\":1}", b"{\"bad\":2}"])
                    .await,
                Err(StoreError::SeqConflict { expected, found: 4, .. }) if expected == seq
            ),
            "batch at seq {seq} of 4 records"
        );
    }
    store
        .append_records(&run, &lease, 4, &[b"{\"r\":4}"])
        .await
        .expect("append after the batch");
    let text = String::from_utf8(store.read_journal(&run).await.expect("read")).expect("utf8");
    let want: String = (0..5).map(|i| format!("{{\"r\":{i}}}\n")).collect();
    assert_eq!(text, want);
    // A fenced writer's batch writes nothing either.
    store.release_lease(&lease).await.expect("release");
    let taker = exclusive(store, &name, &unique("group-b"), Duration::from_secs(60)).await;
    assert!(matches!(
        store
            .append_records(&run, &lease, 5, &[b"{\"late\":1}", b"{\"late\":2}"])
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        store.read_journal(&run).await.expect("read").len(),
        want.len()
    );
    store.release_lease(&taker).await.expect("release");
}

async fn exclusive(store: &dyn Store, name: &str, run_id: &str, ttl: Duration) -> Lease {
    store
        .acquire_lease(
            name,
            LeaseMode::Exclusive,
            &HolderId::this_process(run_id),
            ttl,
        )
        .await
        .expect("acquire exclusive lease")
        .lease
}

const LONG: Duration = Duration::from_secs(60);

pub async fn basics(store: &dyn Store) {
    assert!(!store.describe().is_empty());
    assert!(!store.location().is_empty());
    let h = store.health().await.expect("health");
    assert_eq!(h.schema_version, SCHEMA_VERSION);
    assert!(
        h.clock_skew_ms.abs() < 60_000,
        "clock skew {}",
        h.clock_skew_ms
    );
}

pub async fn conditional_append(store: &dyn Store) {
    let run = unique("append");
    let lease = exclusive(store, &unique("env"), &run, LONG).await;
    store
        .create_journal(&run, &lease, br#"{"seq":0}"#)
        .await
        .expect("create journal");
    assert!(matches!(
        store.create_journal(&run, &lease, b"again").await,
        Err(StoreError::RunExists(r)) if r == run
    ));
    store
        .append_journal(&run, &lease, 1, br#"{"seq":1}"#)
        .await
        .expect("append 1");
    // A duplicate and a gap are refused and write nothing.
    for seq in [0, 1, 3, 7] {
        match store
            .append_journal(&run, &lease, seq, b"{\"bad\":1}")
            .await
        {
            Err(StoreError::SeqConflict {
                run_id,
                expected,
                found,
            }) => {
                assert_eq!((run_id.as_str(), expected, found), (run.as_str(), seq, 2));
            }
            other => panic!("append seq {seq} to 2 records: {other:?}"),
        }
    }
    assert_eq!(
        store.read_journal(&run).await.expect("read"),
        b"{\"seq\":0}\n{\"seq\":1}\n".to_vec()
    );
    store
        .append_journal(&run, &lease, 2, "{\"seq\":2,\"s\":\"é ✓\"}".as_bytes())
        .await
        .expect("append 2");
    assert_eq!(
        store.read_journal(&run).await.expect("read"),
        "{\"seq\":0}\n{\"seq\":1}\n{\"seq\":2,\"s\":\"é ✓\"}\n".as_bytes()
    );
    // Records are whole: nothing to repair.
    let len = store.read_journal(&run).await.expect("read").len() as u64;
    assert_eq!(
        store
            .repair_torn_tail(&run, &lease, len)
            .await
            .expect("repair"),
        0
    );
    let missing = unique("missing");
    assert!(matches!(
        store.append_journal(&missing, &lease, 0, b"{}").await,
        Err(StoreError::RunNotFound(_))
    ));
    assert!(matches!(
        store.read_journal(&missing).await,
        Err(StoreError::RunNotFound(_))
    ));
    assert!(matches!(
        store.read_journal_from(&missing, 0).await,
        Err(StoreError::RunNotFound(_))
    ));
    store.release_lease(&lease).await.expect("release");
}

/// Writers racing for the same sequence number: exactly one wins.
pub async fn concurrent_appends(store: &dyn Store) {
    let run = unique("race");
    let lease = exclusive(store, &unique("env"), &run, LONG).await;
    store
        .create_journal(&run, &lease, b"{}")
        .await
        .expect("create journal");
    for seq in 1..4u64 {
        let lines: Vec<String> = (0..8)
            .map(|i| format!("{{\"seq\":{seq},\"w\":{i}}}"))
            .collect();
        let results = futures::future::join_all(
            lines
                .iter()
                .map(|l| store.append_journal(&run, &lease, seq, l.as_bytes())),
        )
        .await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "seq {seq}: {results:?}");
        assert!(results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(StoreError::SeqConflict { .. }))));
    }
    let text = store.read_journal(&run).await.expect("read");
    assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 4);
    store.release_lease(&lease).await.expect("release");
}

/// Cursors are opaque: only `next` is passed back.
pub async fn read_from_cursor(store: &dyn Store) {
    let run = unique("follow");
    let lease = exclusive(store, &unique("env"), &run, LONG).await;
    store
        .create_journal(&run, &lease, b"{\"r\":0}")
        .await
        .expect("create");
    let c0 = store.read_journal_from(&run, 0).await.expect("read 0");
    assert_eq!(c0.bytes, b"{\"r\":0}\n");
    let empty = store.read_journal_from(&run, c0.next).await.expect("read");
    assert!(empty.bytes.is_empty());
    assert_eq!(empty.next, c0.next);
    for seq in 1..=3u64 {
        store
            .append_journal(&run, &lease, seq, format!("{{\"r\":{seq}}}").as_bytes())
            .await
            .expect("append");
    }
    let c1 = store.read_journal_from(&run, c0.next).await.expect("read");
    assert_eq!(c1.bytes, b"{\"r\":1}\n{\"r\":2}\n{\"r\":3}\n");
    assert!(c1.next > c0.next);
    store
        .append_journal(&run, &lease, 4, b"{\"r\":4}")
        .await
        .expect("append");
    let c2 = store.read_journal_from(&run, c1.next).await.expect("read");
    assert_eq!(c2.bytes, b"{\"r\":4}\n");
    assert!(c2.next > c1.next);
    let all = store.read_journal_from(&run, 0).await.expect("read");
    assert_eq!(all.bytes, store.read_journal(&run).await.expect("read"));
    assert_eq!(all.next, c2.next);
    store.release_lease(&lease).await.expect("release");
}

/// Bounded chunks: complete records only, at most the bound unless one
/// record alone is larger (then exactly that record), together the whole
/// journal; empty at the end, and records appended later follow.
pub async fn read_in_bounded_chunks(store: &dyn Store) {
    let run = unique("chunks");
    let lease = exclusive(store, &unique("env"), &run, LONG).await;
    let line = |seq: usize| format!("{{\"r\":{seq},\"pad\":\"{}\"}}", "x".repeat(seq * 37 % 150));
    store
        .create_journal(&run, &lease, line(0).as_bytes())
        .await
        .expect("create");
    for seq in 1..40u64 {
        store
            .append_journal(&run, &lease, seq, line(seq as usize).as_bytes())
            .await
            .expect("append");
    }
    assert!(matches!(
        store.read_journal_chunk(&unique("missing"), 0, 64).await,
        Err(StoreError::RunNotFound(_))
    ));
    let whole = store.read_journal(&run).await.expect("read");
    for bound in [0usize, 64, 100, 1000, 1 << 20] {
        let (mut got, mut cursor, mut chunks) = (Vec::new(), 0, 0);
        loop {
            let c = store
                .read_journal_chunk(&run, cursor, bound)
                .await
                .expect("chunk");
            if c.bytes.is_empty() {
                assert_eq!(c.next, cursor, "an empty chunk does not move");
                break;
            }
            let lines = c.bytes.iter().filter(|b| **b == b'\n').count();
            assert!(c.bytes.ends_with(b"\n"), "complete records only");
            assert!(
                c.bytes.len() <= bound || lines == 1,
                "bound {bound}: {} bytes in {lines} records",
                c.bytes.len()
            );
            assert!(c.next > cursor);
            got.extend_from_slice(&c.bytes);
            cursor = c.next;
            chunks += 1;
        }
        assert_eq!(got, whole, "bound {bound}");
        if bound == 64 {
            assert!(chunks > 20, "{chunks} chunks");
        }
        if bound == 1 << 20 {
            assert_eq!(chunks, 1);
            store
                .append_journal(&run, &lease, 40, b"{\"r\":40}")
                .await
                .expect("append");
            let c = store
                .read_journal_chunk(&run, cursor, bound)
                .await
                .expect("chunk");
            assert_eq!(c.bytes, b"{\"r\":40}\n");
        }
    }
    store.release_lease(&lease).await.expect("release");
}

/// A's lease expires, B takes it over with a higher epoch: A is fenced.
pub async fn fencing(store: &dyn Store) {
    let name = unique("env");
    let run = unique("fenced");
    let a = exclusive(store, &name, &run, Duration::from_secs(1)).await;
    store
        .create_journal(&run, &a, b"{\"by\":\"a\"}")
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        store.leases(&name).await.expect("leases").is_empty(),
        "an expired lease is not live"
    );
    let b_holder = HolderId::this_process(&run);
    let b = store
        .acquire_lease(&name, LeaseMode::Exclusive, &b_holder, LONG)
        .await
        .expect("B takes over the expired lease");
    assert!(b.lease.epoch > a.epoch);
    let prev = b.took_over.expect("took_over reports A");
    assert_eq!(prev.holder.instance, a.holder.instance);
    assert_eq!(prev.epoch, a.epoch);
    let b = b.lease;
    assert!(matches!(
        store.append_journal(&run, &a, 1, b"{\"by\":\"a\"}").await,
        Err(StoreError::Fenced { name: n, epoch, .. }) if n == name && epoch == a.epoch
    ));
    assert!(matches!(
        store.renew_lease(&a, LONG).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        store.repair_torn_tail(&run, &a, 0).await,
        Err(StoreError::Fenced { .. })
    ));
    store
        .append_journal(&run, &b, 1, b"{\"by\":\"b\"}")
        .await
        .expect("B appends");
    let renewed = store.renew_lease(&b, LONG).await.expect("B renews");
    assert_eq!(renewed.epoch, b.epoch);
    assert!(renewed.expires_at_ms >= b.expires_at_ms);
    // A releasing its lost lease is harmless and leaves B's alone.
    store.release_lease(&a).await.expect("release a lost lease");
    let live = store.leases(&name).await.expect("leases");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].holder.instance, b.holder.instance);
    assert_eq!(
        store.read_journal(&run).await.expect("read"),
        b"{\"by\":\"a\"}\n{\"by\":\"b\"}\n"
    );
    store.release_lease(&b).await.expect("release");
    assert!(store.leases(&name).await.expect("leases").is_empty());
    assert!(matches!(
        store.renew_lease(&b, LONG).await,
        Err(StoreError::Fenced { .. })
    ));
}

/// While A appends as fast as it can, B takes the expired lease over: once
/// B's grant returns, no append of A's succeeds any more (none in flight
/// lands after it). `a` and `b` may be two clients of the same store.
pub async fn takeover_is_a_cut(store: &dyn Store, other: &dyn Store) {
    let name = unique("env");
    let run = unique("cut");
    let a = exclusive(store, &name, &run, Duration::from_secs(1)).await;
    store.create_journal(&run, &a, b"{}").await.expect("create");
    let writer = async {
        let mut seq = 1u64;
        loop {
            match store.append_journal(&run, &a, seq, b"{\"by\":\"a\"}").await {
                Ok(()) => seq += 1,
                Err(StoreError::Fenced { .. }) => return seq,
                Err(e) => panic!("A's append {seq}: {e:?}"),
            }
        }
    };
    let taker = async {
        let b = HolderId::this_process(&run);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match other
                .acquire_lease(&name, LeaseMode::Exclusive, &b, LONG)
                .await
            {
                Ok(g) => {
                    let text = other.read_journal(&run).await.expect("read");
                    return (g.lease, text.iter().filter(|c| **c == b'\n').count() as u64);
                }
                Err(StoreError::LeaseHeld { .. }) => continue,
                Err(e) => panic!("B's acquisition: {e:?}"),
            }
        }
    };
    let (fenced_at, (b, at_grant)) = tokio::join!(writer, taker);
    assert_eq!(fenced_at, at_grant, "A's appends stop at B's grant");
    let text = store.read_journal(&run).await.expect("read");
    assert_eq!(
        text.iter().filter(|c| **c == b'\n').count() as u64,
        at_grant
    );
    store
        .append_journal(&run, &b, at_grant, b"{\"by\":\"b\"}")
        .await
        .expect("B continues the journal");
    store.release_lease(&b).await.expect("release");
}

pub async fn exclusive_excludes_exclusive(store: &dyn Store) {
    let name = unique("env");
    let a = exclusive(store, &name, "run-a", LONG).await;
    let b = HolderId::this_process("run-b");
    match store
        .acquire_lease(&name, LeaseMode::Exclusive, &b, LONG)
        .await
    {
        Err(StoreError::LeaseHeld { name: n, holder }) => {
            assert_eq!(n, name);
            assert_eq!(holder.holder.instance, a.holder.instance);
            assert_eq!(holder.epoch, a.epoch);
            assert_eq!(holder.mode, LeaseMode::Exclusive);
        }
        other => panic!("second exclusive lease: {other:?}"),
    }
    // The refused attempt changed nothing.
    let live = store.leases(&name).await.expect("leases");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].holder, a.holder);
    assert_eq!(live[0].expires_at_ms, a.expires_at_ms);
    store.release_lease(&a).await.expect("release");
}

pub async fn shared_coexists_with_exclusive(store: &dyn Store) {
    // Exclusive first, then shared.
    let name = unique("env");
    let x = exclusive(store, &name, "run-x", LONG).await;
    let g = store
        .acquire_lease(
            &name,
            LeaseMode::Shared,
            &HolderId::this_process("run-s"),
            LONG,
        )
        .await
        .expect("shared beside exclusive");
    assert!(g.took_over.is_none());
    let s = g.lease;
    let s2 = store
        .acquire_lease(
            &name,
            LeaseMode::Shared,
            &HolderId::this_process("run-s2"),
            LONG,
        )
        .await
        .expect("shared beside shared")
        .lease;
    assert_eq!(s.epoch, x.epoch, "a shared lease takes the current epoch");
    assert_eq!(store.leases(&name).await.expect("leases").len(), 3);
    for l in [&x, &s, &s2] {
        store.release_lease(l).await.expect("release");
    }
    // Shared first, then exclusive; the shared holder keeps writing.
    let name = unique("env");
    let run = unique("shared-run");
    let s = store
        .acquire_lease(
            &name,
            LeaseMode::Shared,
            &HolderId::this_process(&run),
            LONG,
        )
        .await
        .expect("shared")
        .lease;
    store
        .create_journal(&run, &s, b"{\"s\":0}")
        .await
        .expect("shared holder creates a journal");
    let x = exclusive(store, &name, "run-x", LONG).await;
    assert!(x.epoch > s.epoch);
    store
        .append_journal(&run, &s, 1, b"{\"s\":1}")
        .await
        .expect("a shared holder is not fenced by an exclusive grant");
    let modes: Vec<LeaseMode> = store
        .leases(&name)
        .await
        .expect("leases")
        .iter()
        .map(|l| l.mode)
        .collect();
    assert_eq!(modes.len(), 2);
    assert!(modes.contains(&LeaseMode::Shared) && modes.contains(&LeaseMode::Exclusive));
    store.release_lease(&s).await.expect("release");
    store.release_lease(&x).await.expect("release");
}

/// A holder on this host whose process is gone is taken over at once.
pub async fn dead_holder_taken_over(store: &dyn Store) {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait for true");
    let dead = HolderId {
        pid,
        ..HolderId::this_process("run-dead")
    };
    assert!(dead.is_provably_dead());
    let name = unique("env");
    let d = store
        .acquire_lease(&name, LeaseMode::Exclusive, &dead, LONG)
        .await
        .expect("acquire for the dead holder")
        .lease;
    let g = store
        .acquire_lease(
            &name,
            LeaseMode::Exclusive,
            &HolderId::this_process("run-alive"),
            LONG,
        )
        .await
        .expect("a dead holder's unexpired lease is taken over at once");
    assert!(g.lease.epoch > d.epoch);
    assert_eq!(
        g.took_over.expect("took_over").holder.instance,
        dead.instance
    );
    // A holder on another host is never provably dead.
    let elsewhere = HolderId {
        host: format!("other-{}", unique("host")),
        ..dead
    };
    let name2 = unique("env");
    let e = store
        .acquire_lease(&name2, LeaseMode::Exclusive, &elsewhere, LONG)
        .await
        .expect("acquire")
        .lease;
    assert!(matches!(
        store
            .acquire_lease(
                &name2,
                LeaseMode::Exclusive,
                &HolderId::this_process("run-alive"),
                LONG
            )
            .await,
        Err(StoreError::LeaseHeld { .. })
    ));
    store.release_lease(&g.lease).await.expect("release");
    store.release_lease(&e).await.expect("release");
}

pub async fn release_then_reacquire(store: &dyn Store) {
    let name = unique("env");
    let mut last = 0;
    for i in 0..3 {
        let l = exclusive(store, &name, &format!("run-{i}"), LONG).await;
        assert!(l.epoch > last, "epoch {} after {last}", l.epoch);
        last = l.epoch;
        store.release_lease(&l).await.expect("release");
        store.release_lease(&l).await.expect("release twice");
        assert!(matches!(
            store.renew_lease(&l, LONG).await,
            Err(StoreError::Fenced { .. })
        ));
    }
}

pub async fn documents_cas(store: &dyn Store) {
    let coll = unique("docs");
    assert!(store.get_doc(&coll, "k").await.expect("get").is_none());
    assert_eq!(
        store
            .put_doc(&coll, "k", &json!({"a": 1}), Expect::Absent)
            .await
            .expect("put absent"),
        1
    );
    assert!(matches!(
        store
            .put_doc(&coll, "k", &json!({"a": 2}), Expect::Absent)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store
            .put_doc(&coll, "k", &json!({"a": 2}), Expect::Version(1))
            .await
            .expect("put v1"),
        2
    );
    assert!(matches!(
        store
            .put_doc(&coll, "k", &json!({"a": 3}), Expect::Version(1))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store
            .put_doc(&coll, "missing", &json!(1), Expect::Version(1))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let doc = json!({"a": [1, 2.5, "x"], "b": {"c": null, "big": 18446744073709551615u64}});
    assert_eq!(
        store
            .put_doc(&coll, "k", &doc, Expect::Any)
            .await
            .expect("put any"),
        3
    );
    let v = store.get_doc(&coll, "k").await.expect("get").expect("doc");
    assert_eq!((v.version, &v.doc), (3, &doc));
    assert_eq!(
        store
            .put_doc(&coll, "fresh", &json!("s"), Expect::Any)
            .await
            .expect("put any absent"),
        1
    );
    assert!(store
        .get_doc(&coll, "missing")
        .await
        .expect("get")
        .is_none());
}

/// The active region per environment: none until recorded, then the
/// newest record, each write a new version.
pub async fn active_region(store: &dyn Store) {
    use super::active::{self, ActiveRegion};
    let env = unique("env");
    assert_eq!(active::load(store, &env).await.expect("load"), None);
    let rec = |region: &str, run: &str| ActiveRegion {
        region: region.into(),
        run_id: run.into(),
        by: "failover".into(),
        at_ms: 1,
    };
    let v1 = active::record(store, &env, &rec("dr", "r1"))
        .await
        .expect("record");
    assert_eq!(
        active::load(store, &env).await.expect("load"),
        Some(rec("dr", "r1"))
    );
    let v2 = active::record(store, &env, &rec("primary", "r2"))
        .await
        .expect("record again");
    assert!(v2 > v1, "each record is a new version");
    assert_eq!(
        active::load(store, &env)
            .await
            .expect("load")
            .map(|a| a.region),
        Some("primary".to_string())
    );
    let other = unique("env");
    assert_eq!(
        active::load(store, &other).await.expect("load"),
        None,
        "per environment"
    );
}

pub async fn histories_in_order(store: &dyn Store) {
    let coll = unique("drills");
    assert!(store.read_history(&coll).await.expect("read").is_empty());
    for i in 0..5 {
        store
            .append_history(&coll, &json!({"i": i}))
            .await
            .expect("append");
    }
    let h = store.read_history(&coll).await.expect("read");
    assert_eq!(h, (0..5).map(|i| json!({"i": i})).collect::<Vec<_>>());
}

pub async fn approvals_and_aborts(store: &dyn Store) {
    let run = unique("approve");
    let lease = exclusive(store, &unique("env"), &run, LONG).await;
    store
        .create_journal(&run, &lease, b"{}")
        .await
        .expect("create");
    assert!(store
        .get_approval(&run, "promote")
        .await
        .expect("get")
        .is_none());
    store
        .put_approval(&run, "promote", &Approval::now("alice", "cli"))
        .await
        .expect("approve");
    let a = store
        .get_approval(&run, "promote")
        .await
        .expect("get")
        .expect("approval");
    assert_eq!((a.by.as_str(), a.via.as_str()), ("alice", "cli"));
    assert!(store.abort_requested(&run).await.expect("abort?").is_none());
    store.request_abort(&run, "bob").await.expect("abort");
    assert_eq!(
        store
            .abort_requested(&run)
            .await
            .expect("abort?")
            .as_deref(),
        Some("bob")
    );
    let missing = unique("missing");
    assert!(matches!(
        store
            .put_approval(&missing, "promote", &Approval::now("alice", "cli"))
            .await,
        Err(StoreError::RunNotFound(_))
    ));
    assert!(matches!(
        store.request_abort(&missing, "bob").await,
        Err(StoreError::RunNotFound(_))
    ));
    store.release_lease(&lease).await.expect("release");
}

pub async fn artifacts(store: &dyn Store) {
    let run = unique("artifacts");
    let lease = exclusive(store, &unique("env"), &run, LONG).await;
    store
        .create_journal(&run, &lease, b"{}")
        .await
        .expect("create");
    let bytes: Vec<u8> = (0..=255u8).collect();
    let at = store
        .put_artifact(&run, "report.html", &bytes)
        .await
        .expect("put");
    assert!(!at.is_empty());
    assert_eq!(
        store.get_artifact(&run, "report.html").await.expect("get"),
        Some(bytes)
    );
    store
        .put_artifact(&run, "report.html", b"v2")
        .await
        .expect("overwrite");
    assert_eq!(
        store.get_artifact(&run, "report.html").await.expect("get"),
        Some(b"v2".to_vec())
    );
    assert!(store
        .get_artifact(&run, "other.md")
        .await
        .expect("get")
        .is_none());
    store.release_lease(&lease).await.expect("release");
}

pub async fn delete_run(store: &dyn Store) {
    let run = unique("doomed");
    let lease = exclusive(store, &unique("env"), &run, LONG).await;
    store
        .create_journal(&run, &lease, b"{}")
        .await
        .expect("create");
    store
        .put_approval(&run, "s", &Approval::now("a", "cli"))
        .await
        .expect("approve");
    store.request_abort(&run, "b").await.expect("abort");
    store
        .put_artifact(&run, "report.md", b"# r")
        .await
        .expect("artifact");
    store.delete_run(&run).await.expect("delete");
    assert!(!store.list_runs().await.expect("list").contains(&run));
    assert!(matches!(
        store.read_journal(&run).await,
        Err(StoreError::RunNotFound(_))
    ));
    assert!(store.get_approval(&run, "s").await.expect("get").is_none());
    assert!(store.abort_requested(&run).await.expect("get").is_none());
    assert!(store
        .get_artifact(&run, "report.md")
        .await
        .expect("get")
        .is_none());
    assert!(matches!(
        store.delete_run(&run).await,
        Err(StoreError::RunNotFound(_))
    ));
    // The id can be used again.
    store
        .create_journal(&run, &lease, b"{\"again\":true}")
        .await
        .expect("create again");
    assert_eq!(
        store.read_journal(&run).await.expect("read"),
        b"{\"again\":true}\n"
    );
    store.delete_run(&run).await.expect("delete");
    store.release_lease(&lease).await.expect("release");
}

pub async fn listing(store: &dyn Store) {
    let lease = exclusive(store, &unique("env"), "lister", LONG).await;
    let base = unique("list");
    let ids: Vec<String> = ["b", "a", "c"]
        .iter()
        .map(|s| format!("{base}-{s}"))
        .collect();
    for id in &ids {
        store
            .create_journal(id, &lease, b"{}")
            .await
            .expect("create");
    }
    let runs = store.list_runs().await.expect("list");
    let mine: Vec<&String> = runs.iter().filter(|r| r.starts_with(&base)).collect();
    assert_eq!(
        mine,
        vec![
            &format!("{base}-a"),
            &format!("{base}-b"),
            &format!("{base}-c")
        ]
    );
    let mut sorted = runs.clone();
    sorted.sort();
    assert_eq!(runs, sorted, "oldest (lowest id) first");
    // Other runs may come and go meanwhile: compare ours only.
    let summaries = store.run_summaries().await.expect("summaries");
    let ids_of = |v: Vec<&String>| v.into_iter().cloned().collect::<Vec<String>>();
    let summarised: Vec<&String> = summaries.iter().map(|s| &s.run_id).collect();
    let mut sorted = summarised.clone();
    sorted.sort();
    assert_eq!(summarised, sorted, "oldest (lowest id) first");
    assert_eq!(
        ids_of(
            summarised
                .into_iter()
                .filter(|r| r.starts_with(&base))
                .collect()
        ),
        ids_of(mine)
    );
    let now = crate::journal::now_ms();
    for s in summaries.iter().filter(|s| s.run_id.starts_with(&base)) {
        assert!(
            s.last_write_ms.abs_diff(now) < 120_000,
            "{}: last write {} vs now {now}",
            s.run_id,
            s.last_write_ms
        );
    }
    assert!(store.health().await.expect("health").runs >= 3);
    for id in &ids {
        assert!(store.journal_location(id).contains(id.as_str()));
        store.delete_run(id).await.expect("delete");
    }
    store.release_lease(&lease).await.expect("release");
}

// ---------------------------------------------------------------------------
// A real PostgreSQL server for tests.

/// How to reach a test server.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// `postgres://postgres@127.0.0.1:PORT/postgres` (no password).
    pub url: String,
    /// With the password as a `file:` reference.
    pub server: PgServer,
}

/// A PostgreSQL server in a fresh data directory on 127.0.0.1, run as the
/// `postgres` user when the tests run as root. Stopped and removed on drop
/// (SIGKILL); [`TestPostgres::stop`] shuts it down cleanly.
pub struct TestPostgres {
    pub target: PgTarget,
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    server: Option<lab::Server>,
}

impl TestPostgres {
    pub async fn start() -> TestPostgres {
        let who = lab::run_as().expect("a user to run postgres as");
        let bin = lab::bindir().expect("PostgreSQL binaries");
        let root = std::env::temp_dir().join(format!(
            "drctl-pgtest-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&root).expect("create test root");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        lab::chown(&root, who).expect("chown test root");
        let pwfile = root.join("password");
        let password = format!("pw-{:016x}", fastrand::u64(..));
        std::fs::write(&pwfile, &password).expect("write password");
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        lab::chown(&pwfile, who).expect("chown password");
        let data = root.join("data");
        let mut initdb = tokio::process::Command::new(bin.join("initdb"));
        if who.drop {
            initdb.uid(who.uid).gid(who.gid);
        }
        initdb
            .current_dir(&root)
            .env_remove("PGPASSWORD")
            .arg("-D")
            .arg(&data)
            .args(["-A", "scram-sha-256", "-U", "postgres", "--pwfile"])
            .arg(&pwfile)
            .args(["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), initdb.output())
            .await
            .expect("initdb in time")
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = lab::free_port().expect("a free port");
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
             fsync = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 40\n"
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("configure postgres");
        let log = root.join("postgres.log");
        let server = PgServer {
            host: "127.0.0.1".into(),
            port,
            dbname: "postgres".into(),
            user: "postgres".into(),
            password: Some(SecretRef::File(pwfile)),
            sslmode: SslMode::Disable,
            sslrootcert: None,
            connect_timeout: Duration::from_secs(5),
        };
        let mut pg = TestPostgres {
            target: PgTarget {
                url: format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
                server,
            },
            root,
            data,
            log,
            server: None,
        };
        pg.restart().await;
        pg
    }

    /// Starts the server again (after [`TestPostgres::stop`] or
    /// [`TestPostgres::kill`]) on the same port and data.
    pub async fn restart(&mut self) {
        assert!(self.server.is_none(), "already running");
        let s = lab::start("state", &self.data, self.target.server.port, &self.log)
            .await
            .expect("start postgres");
        self.server = Some(s);
    }

    /// Fast shutdown.
    pub async fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop(Duration::from_secs(10)).await;
        }
    }

    /// A crash: SIGKILL to the postmaster and its backends.
    pub async fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill9().await;
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(pid) = self.server.as_ref().and_then(|s| s.pid()) {
            // SAFETY: signalling the process group of a server we started.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `f` against a fresh, uninitialised server and stops it afterwards,
/// also when `f` panics (the panic is then propagated).
pub async fn with_postgres<F, Fut>(f: F)
where
    F: FnOnce(PgTarget) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut pg = TestPostgres::start().await;
    let outcome = tokio::spawn(f(pg.target.clone())).await;
    pg.stop().await;
    drop(pg);
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test task failed: {e}");
    }
}

/// Like [`with_postgres`], with an initialised [`super::postgres::PgStore`].
pub async fn with_pg_store<F, Fut>(f: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_postgres(|t| async move {
        let (store, _) = super::postgres::PgStore::init(&t.url, t.server)
            .await
            .expect("init the state database");
        f(Arc::new(store)).await;
    })
    .await;
}
