//! A real PostgreSQL server for tests: a fresh data directory on
//! 127.0.0.1 with a password, started, restarted, stopped or killed on
//! demand. Separate from the contract because only the PostgreSQL
//! backend's tests need it.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::lab::pg as lab;
use crate::pgconn::PgServer;
use crate::pgconn::SslMode;
use crate::secret::SecretRef;
use crate::store::Store;

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

/// Like [`with_postgres`], with an initialised [`crate::store::postgres::PgStore`].
pub async fn with_pg_store<F, Fut>(f: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_postgres(|t| async move {
        let (store, _) = crate::store::postgres::PgStore::init(&t.url, t.server)
            .await
            .expect("init the state database");
        f(Arc::new(store)).await;
    })
    .await;
}
