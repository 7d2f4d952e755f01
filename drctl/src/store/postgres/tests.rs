//! Tests of the PostgreSQL store against real servers: the shared
//! contract, migrations and version checks, reconnection after a restart or
//! crash, fencing of an append racing a takeover, and statement bounds.
//! In their own file because each starts a server and they outweigh the
//! code they test.

use tokio_postgres::Client;

use super::*;
use crate::secret::SecretRef;
use crate::store::contract::{self, with_postgres, PgTarget, TestPostgres};

async fn raw(t: &PgTarget) -> Client {
    t.server
        .connect(Duration::from_secs(5))
        .await
        .expect("raw connection")
}

#[tokio::test]
async fn contract_holds_on_postgres() {
    with_postgres(|t| async move {
        assert!(matches!(
            PgStore::connect(&t.url, t.server.clone()).await,
            Err(StoreError::NotInitialised { .. })
        ));
        let (store, applied) = PgStore::init(&t.url, t.server.clone()).await.expect("init");
        assert_eq!(applied.len(), SCHEMA_VERSION as usize, "{applied:?}");
        let (_, again) = PgStore::init(&t.url, t.server.clone())
            .await
            .expect("init again");
        assert!(again.is_empty(), "{again:?}");
        contract::run_all(&store).await;
        // A second client (another drctl process) sees the same state.
        let other = PgStore::connect(&t.url, t.server.clone())
            .await
            .expect("connect");
        contract::run_all(&other).await;
        contract::takeover_is_a_cut(&store, &other).await;

        assert_eq!(
            store.describe(),
            format!(
                "PostgreSQL state store postgres://127.0.0.1:{}/postgres",
                t.server.port
            )
        );
        assert_eq!(store.location(), t.url);
        assert_eq!(
            store.journal_location("R1"),
            format!("postgres://127.0.0.1:{}/postgres run R1", t.server.port)
        );
        let Some(SecretRef::File(pw)) = &t.server.password else {
            panic!("the fixture uses a password file")
        };
        let pw = std::fs::read_to_string(pw).expect("password");
        assert!(!store.describe().contains(&pw) && !store.location().contains(&pw));

        // A record must be one line of UTF-8 text.
        let run = "bytes-run";
        let lease = store
            .acquire_lease(
                "bytes",
                LeaseMode::Exclusive,
                &HolderId::this_process(run),
                Duration::from_secs(60),
            )
            .await
            .expect("lease")
            .lease;
        for bad in [&b"a\nb"[..], b"\xff", b"a\0"] {
            assert!(matches!(
                store.create_journal(run, &lease, bad).await,
                Err(StoreError::Corrupt { .. })
            ));
        }

        // The hot path: one prepared statement per append.
        store
            .create_journal(run, &lease, b"{}")
            .await
            .expect("create");
        let started = std::time::Instant::now();
        for seq in 1..=200u64 {
            store
                .append_journal(run, &lease, seq, format!("{{\"seq\":{seq}}}").as_bytes())
                .await
                .expect("append");
        }
        eprintln!("200 appends in {:?}", started.elapsed());
        let rows = raw(&t)
            .await
            .query_one(
                "select count(*), max(seq) from drctl.journal where run_id = $1",
                &[&run],
            )
            .await
            .expect("count");
        assert_eq!((rows.get::<_, i64>(0), rows.get::<_, i64>(1)), (201, 200));
    })
    .await;
}

#[tokio::test]
async fn concurrent_inits_and_version_checks() {
    with_postgres(|t| async move {
        let (a, b) = tokio::join!(
            PgStore::init(&t.url, t.server.clone()),
            PgStore::init(&t.url, t.server.clone())
        );
        let (a, b) = (a.expect("init a").1, b.expect("init b").1);
        assert_eq!(a.len() + b.len(), SCHEMA_VERSION as usize, "{a:?} {b:?}");
        PgStore::connect(&t.url, t.server.clone())
            .await
            .expect("connect");
        // A newer drctl migrated the schema: this one refuses it.
        raw(&t)
            .await
            .batch_execute("insert into drctl.schema_version (version, name) values (99, 'future')")
            .await
            .expect("bump version");
        for r in [
            PgStore::connect(&t.url, t.server.clone()).await.map(|_| ()),
            PgStore::init(&t.url, t.server.clone()).await.map(|_| ()),
        ] {
            assert!(
                matches!(
                    r,
                    Err(StoreError::Schema {
                        found: 99,
                        wanted: SCHEMA_VERSION
                    })
                ),
                "{r:?}"
            );
        }
        // Unreachable and unauthenticated servers are reported as such.
        let mut wrong = t.server.clone();
        wrong.port = crate::lab::pg::free_port().expect("port");
        let e = PgStore::connect("postgres://x", wrong)
            .await
            .expect_err("no server");
        assert!(e.is_unavailable(), "{e:?}");
        let mut wrong = t.server.clone();
        wrong.password = None;
        let e = PgStore::connect("postgres://x", wrong)
            .await
            .expect_err("no password");
        assert!(matches!(e, StoreError::Connect { .. }), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn reconnects_after_the_database_restarts() {
    let mut pg = TestPostgres::start().await;
    let t = pg.target.clone();
    let (store, _) = PgStore::init(&t.url, t.server.clone()).await.expect("init");
    let lease = store
        .acquire_lease(
            "env",
            LeaseMode::Exclusive,
            &HolderId::this_process("r"),
            Duration::from_secs(60),
        )
        .await
        .expect("lease")
        .lease;
    store
        .create_journal("r", &lease, b"{}")
        .await
        .expect("create");

    pg.stop().await;
    let e = store
        .append_journal("r", &lease, 1, b"{}")
        .await
        .expect_err("down");
    assert!(e.is_unavailable(), "{e:?}");
    pg.restart().await;
    store
        .append_journal("r", &lease, 1, b"{\"n\":1}")
        .await
        .expect("reconnected");

    pg.kill().await;
    let e = store.read_journal("r").await.expect_err("crashed");
    assert!(e.is_unavailable(), "{e:?}");
    let e = store
        .acquire_lease(
            "env",
            LeaseMode::Exclusive,
            &HolderId::this_process("r2"),
            Duration::from_secs(60),
        )
        .await
        .expect_err("still down");
    assert!(e.is_unavailable(), "{e:?}");
    pg.restart().await;
    assert_eq!(
        store.read_journal("r").await.expect("reconnected"),
        b"{}\n{\"n\":1}\n"
    );
    // The lease survived the restart: the database keeps it, not the session.
    store
        .append_journal("r", &lease, 2, b"{}")
        .await
        .expect("append");
    pg.stop().await;
}

/// An append racing an uncommitted takeover waits for it, then is
/// fenced: once a grant commits, no append of the old holder lands.
#[tokio::test]
async fn an_append_racing_a_takeover_waits_and_is_fenced() {
    with_postgres(|t| async move {
        let (store, _) = PgStore::init(&t.url, t.server.clone()).await.expect("init");
        let holder = HolderId::this_process("r");
        let ttl = Duration::from_secs(60);
        let a = store
            .acquire_lease("env", LeaseMode::Exclusive, &holder, ttl)
            .await
            .expect("lease")
            .lease;
        store.create_journal("r", &a, b"{}").await.expect("create");
        let mut taker = raw(&t).await;
        let tx = taker.transaction().await.expect("begin");
        tx.execute("delete from drctl.leases where name = 'env'", &[])
            .await
            .expect("take over");
        let append = store.append_journal("r", &a, 1, b"{}");
        tokio::pin!(append);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut append)
                .await
                .is_err(),
            "the append waits for the takeover to commit or roll back"
        );
        tx.commit().await.expect("commit");
        assert!(matches!(append.await, Err(StoreError::Fenced { .. })));
        assert_eq!(store.read_journal("r").await.expect("read"), b"{}\n");
    })
    .await;
}

/// Two suites at once on one store: statements of concurrent callers
/// share the connection, lease transactions take it to themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_serves_concurrent_callers() {
    contract::with_pg_store(|store| async move {
        tokio::join!(contract::run_all(&*store), contract::run_all(&*store));
    })
    .await;
}

#[tokio::test]
async fn statements_are_bounded() {
    with_postgres(|t| async move {
        let (store, _) = PgStore::init(&t.url, t.server.clone()).await.expect("init");
        let store = store.with_timeout(Duration::from_millis(400));
        // Another session holds the lease name's row.
        let mut blocker = raw(&t).await;
        let tx = blocker.transaction().await.expect("begin");
        tx.batch_execute(
            "insert into drctl.lease_epochs (name) values ('env'); \
             select * from drctl.lease_epochs where name = 'env' for update",
        )
        .await
        .expect("lock");
        let holder = HolderId::this_process("r");
        let ttl = Duration::from_secs(60);
        // First on the old connection (server bound 5 s): the client
        // gives up and drops it; then on a new one, bounded by the server.
        for _ in 0..2 {
            let started = std::time::Instant::now();
            let e = store
                .acquire_lease("env", LeaseMode::Exclusive, &holder, ttl)
                .await
                .expect_err("blocked");
            assert!(matches!(e, StoreError::Timeout { .. }), "{e:?}");
            assert!(e.is_unavailable());
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
        assert!(store
            .list_runs()
            .await
            .expect("other statements work")
            .is_empty());
        tx.rollback().await.expect("rollback");
        store
            .acquire_lease("env", LeaseMode::Exclusive, &holder, ttl)
            .await
            .expect("free again");
    })
    .await;
}
