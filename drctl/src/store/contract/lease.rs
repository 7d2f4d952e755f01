//! The lease part of the [`Store`] contract: exclusive excludes exclusive,
//! shared coexists with it, an expired or provably dead holder is taken
//! over with a higher epoch, and from then on the old holder is fenced
//! (none of its appends lands after the takeover).

use std::time::Duration;

use super::{exclusive, unique, LONG};
use crate::store::{HolderId, LeaseMode, Store, StoreError};

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
