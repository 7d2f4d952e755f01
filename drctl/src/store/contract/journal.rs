//! The journal part of the [`Store`] contract: records are appended only
//! at the sequence number the writer expects and under its live lease, in
//! whole batches; cursors and bounded chunks read them back exactly; runs
//! are listed and deleted whole.

use std::time::Duration;

use super::{exclusive, unique, LONG};
use crate::store::{Approval, Store, StoreError};

/// A batch of records is appended under one set of conditions: all of it
/// or none of it, in order, and the next batch follows its last record.
pub(super) async fn group_commit(store: &dyn Store) {
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
