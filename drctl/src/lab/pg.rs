//! Real PostgreSQL servers for the lab and the tests: initdb, a streaming
//! standby by pg_basebackup, started as child processes of the caller (who
//! must wait() on them: after kill -9 an unreaped postmaster lingers and a
//! restart fails on postmaster.pid).
//!
//! PostgreSQL refuses to run as root, so when drctl is root the servers run
//! as the `postgres` system user (from Debian's package), with data in a
//! directory under /tmp that user owns.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LabError {
    #[error("PostgreSQL binaries not found (looked at `pg_config --bindir` and /usr/lib/postgresql/*/bin)")]
    NoBinaries,
    #[error(
        "the `postgres` system user does not exist (needed to run servers when drctl runs as root)"
    )]
    NoUser,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The running lab's control endpoint did not answer.
    #[error("lab control {url}")]
    Control {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The control endpoint answered with an error of its own.
    #[error("lab control {url}: {message}")]
    Refused { url: String, message: String },
    #[error("{status} (log: {})", log.display())]
    NotReady { status: String, log: PathBuf },
    #[error("lab supervisor exited ({status}): {tail}")]
    SupervisorExited {
        status: std::process::ExitStatus,
        tail: String,
    },
    #[error("lab not ready after {}s; see {}", .waited.as_secs(), .logs.display())]
    NotReadyInTime { waited: Duration, logs: PathBuf },
    #[error("{0}")]
    Other(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// Directory holding initdb, postgres and pg_basebackup.
pub fn bindir() -> Result<PathBuf, LabError> {
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() && p.join("postgres").exists() {
            return Ok(p);
        }
    }
    let mut best: Option<(u32, PathBuf)> = None;
    for e in std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
    {
        let v: u32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
        let b = e.path().join("bin");
        if b.join("initdb").exists() && best.as_ref().is_none_or(|(bv, _)| v > *bv) {
            best = Some((v, b));
        }
    }
    best.map(|(_, p)| p).ok_or(LabError::NoBinaries)
}

/// The uid/gid servers run as: `postgres` when we are root, else ourselves.
#[derive(Debug, Clone, Copy)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub drop: bool,
}

pub fn run_as() -> Result<RunAs, LabError> {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid != 0 {
        return Ok(RunAs {
            uid,
            gid,
            drop: false,
        });
    }
    let name = CString::new("postgres").map_err(|e| LabError::Other(e.to_string()))?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we
    // copy the two integers out immediately and keep nothing.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(LabError::NoUser);
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    let (u, g) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(RunAs {
        uid: u,
        gid: g,
        drop: true,
    })
}

pub fn chown(path: &Path, who: RunAs) -> Result<(), LabError> {
    if who.drop {
        std::os::unix::fs::chown(path, Some(who.uid), Some(who.gid))
            .map_err(io(format!("chown {}", path.display())))?;
    }
    Ok(())
}

pub(crate) fn command(bin: &Path, who: RunAs) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(bin);
    if who.drop {
        c.uid(who.uid).gid(who.gid);
    }
    // The lab's servers and tools take their connection settings from
    // their arguments only: libpq variables of the operator's shell (a
    // `PGSSLROOTCERT` the server user cannot read, another `PGHOST`) must
    // not change what `pg_basebackup` or `initdb` do.
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("PG")) {
            c.env_remove(&k);
        }
    }
    c.stdin(Stdio::null());
    c
}

async fn run(mut c: tokio::process::Command, what: &str, limit: Duration) -> Result<(), LabError> {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, c.output())
        .await
        .map_err(|_| LabError::Command {
            what: what.into(),
            detail: format!("timed out after {limit:?}"),
        })?
        .map_err(io(what.to_string()))?;
    if !out.status.success() {
        return Err(LabError::Command {
            what: what.into(),
            detail: String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .to_string(),
        });
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound then released: small race, fine on
/// a dedicated test machine).
/// A port for a lab server, free now and outside the kernel's ephemeral
/// range: a port from that range (what binding port 0 gives) can be taken
/// by any process's outgoing connection before the server binds it, which
/// made `lab up` fail under load. Never the same port twice per process.
pub fn free_port() -> Result<u16, LabError> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..500 {
        let p = fastrand::u16(20_000..32_000);
        if given.contains(&p) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            given.push(p);
            return Ok(p);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("find a free port"))?;
    Ok(l.local_addr().map_err(io("find a free port"))?.port())
}

/// Credentials and layout of a lab cluster.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterSpec {
    pub root: PathBuf,
    pub superuser: String,
    pub app_user: String,
    /// File holding the password (mode 0600), referenced as `file:...`.
    pub password_file: PathBuf,
    /// The lab's private CA (PEM); its key sits beside it as `ca.key`.
    /// Every server certificate is signed by it for 127.0.0.1, so clients
    /// use `sslmode: verify-full` with `sslrootcert: file:<this>`.
    #[serde(default)]
    pub ca_cert: PathBuf,
}

async fn openssl(args: &[&str], what: &str) -> Result<(), LabError> {
    let mut c = tokio::process::Command::new("openssl");
    c.args(args);
    run(
        c,
        &format!("openssl {what} (apt-get install openssl)"),
        Duration::from_secs(60),
    )
    .await
}

/// Creates the lab's private CA in `dir` (`ca.crt`, `ca.key`): a real
/// certificate authority, so the lab exercises what production should
/// run, `verify-full` against a private CA.
pub async fn create_ca(dir: &Path) -> Result<PathBuf, LabError> {
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=drctl lab CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &key.to_string_lossy(),
            "-out",
            &crt.to_string_lossy(),
        ],
        "CA",
    )
    .await?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod CA key"))?;
    Ok(crt)
}

/// A server key and certificate in `data`, signed by the lab CA, valid for
/// 127.0.0.1 only (so a client naming the server otherwise is refused).
async fn server_cert(ca_cert: &Path, data: &Path, who: RunAs) -> Result<(), LabError> {
    let ca_key = ca_cert.with_file_name("ca.key");
    let (key, csr, crt) = (
        data.join("server.key"),
        data.join("server.csr"),
        data.join("server.crt"),
    );
    let ext = data.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(io("write server.ext"))?;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=drctl-lab",
            "-keyout",
            &s(&key),
            "-out",
            &s(&csr),
        ],
        "server key",
    )
    .await?;
    let serial = format!("{}", fastrand::u64(1..u64::MAX / 2));
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(ca_cert),
            "-CAkey",
            &s(&ca_key),
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-extfile",
            &s(&ext),
            "-out",
            &s(&crt),
        ],
        "sign server certificate",
    )
    .await?;
    let _ = std::fs::remove_file(&csr);
    let _ = std::fs::remove_file(&ext);
    for p in [&key, &crt] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod tls file"))?;
        chown(p, who)?;
    }
    Ok(())
}

pub(crate) fn write_file(path: &Path, text: &str, mode: u32, who: RunAs) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(io(format!("write {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", path.display())))?;
    chown(path, who)
}

/// Creates the primary's data directory and configuration.
pub async fn init_primary(
    spec: &ClusterSpec,
    data: &Path,
    port: u16,
    password: &str,
) -> Result<(), LabError> {
    let bin = bindir()?;
    let who = run_as()?;
    let pwfile = spec.root.join("initdb.pw");
    write_file(&pwfile, password, 0o600, who)?;
    let mut c = command(&bin.join("initdb"), who);
    c.arg("-D")
        .arg(data)
        .args([
            "--data-checksums",
            "-A",
            "scram-sha-256",
            "-U",
            &spec.superuser,
            "--pwfile",
        ])
        .arg(&pwfile)
        .args(["-E", "UTF8", "--no-instructions"]);
    run(c, "initdb", Duration::from_secs(60)).await?;
    let _ = std::fs::remove_file(&pwfile);
    let sock = socket_dir(spec);
    std::fs::create_dir_all(&sock).map_err(io(format!("create {}", sock.display())))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("chmod {}", sock.display())))?;
    chown(&sock, who)?;
    let conf = format!(
        "\n# drctl lab\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sock}'\nwal_level = replica\nmax_wal_senders = 10\n\
         wal_log_hints = on\nhot_standby = on\nshared_buffers = 32MB\nmax_connections = 50\nwal_keep_size = 256MB\nlog_destination = 'stderr'\n",
        sock = sock.display()
    );
    append(&data.join("postgresql.conf"), &conf)?;
    // TLS with a certificate from the lab CA (the standby inherits the
    // files through pg_basebackup; both listen on 127.0.0.1).
    server_cert(&spec.ca_cert, data, who).await?;
    append(&data.join("postgresql.conf"), "ssl = on\n")?;
    append(&data.join("pg_hba.conf"), "host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n")?;
    Ok(())
}

/// The lab servers' Unix socket directory (mode 0700, the server user's:
/// only it and root connect there). pgBackRest reaches the primary through
/// it; every other client uses TCP with TLS.
pub fn socket_dir(spec: &ClusterSpec) -> PathBuf {
    spec.root.join("sock")
}

/// The lab primary's WAL archive (what `archive_command` copies), beside
/// its data directories under the server user's root.
pub fn wal_archive(spec: &ClusterSpec) -> PathBuf {
    spec.root.join("wal-archive")
}

/// Where `drctl lab backup` puts base backups, one directory each.
pub fn backups_dir(spec: &ClusterSpec) -> PathBuf {
    spec.root.join("backups")
}

/// Turns on WAL archiving into [`wal_archive`] for the primary in `data`
/// (a standby only archives with `always`, so the DR server archives once
/// promoted, on its own timeline).
pub fn enable_archiving(spec: &ClusterSpec, data: &Path) -> Result<(), LabError> {
    let who = run_as()?;
    let dir = wal_archive(spec);
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    chown(&dir, who)?;
    append(
        &data.join("postgresql.conf"),
        &format!(
            "archive_mode = on\narchive_command = 'test ! -f {a}/%f && cp %p {a}/%f'\n",
            a = dir.display()
        ),
    )
}

/// A base backup of the server on `port` (tar, WAL streamed, with its
/// manifest) into a new directory under [`backups_dir`]; returns it.
pub async fn base_backup(spec: &ClusterSpec, port: u16) -> Result<PathBuf, LabError> {
    let bin = bindir()?;
    let who = run_as()?;
    let root = backups_dir(spec);
    std::fs::create_dir_all(&root).map_err(io(format!("create {}", root.display())))?;
    chown(&root, who)?;
    let stamp = crate::journal::format_ms(crate::journal::now_ms())
        .replace([':', '-'], "")
        .replace('.', "");
    let dest = root.join(stamp);
    let passfile = spec.root.join("standby.pgpass");
    let mut c = command(&bin.join("pg_basebackup"), who);
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        &spec.superuser,
        "-D",
    ])
    .arg(&dest)
    .args([
        "-F",
        "t",
        "-X",
        "stream",
        "-c",
        "fast",
        "-l",
        "drctl lab backup",
    ]);
    c.env("PGPASSFILE", &passfile);
    run(c, "pg_basebackup", Duration::from_secs(600)).await?;
    Ok(dest)
}

fn append(path: &Path, text: &str) -> Result<(), LabError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io(format!("open {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(io(format!("write {}", path.display())))
}

/// A running server that the owner must reap.
pub struct Server {
    pub name: String,
    pub data: PathBuf,
    pub port: u16,
    pub child: tokio::process::Child,
}

impl Server {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the postmaster and all its backends at once (a dead machine).
    /// Backends are found by parent pid as well as by process group, since
    /// a server may put its children in groups of their own.
    pub async fn kill9(&mut self) {
        if let Some(pid) = self.child.id() {
            let children = children_of(pid);
            // SAFETY: signalling processes we started (and their children).
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
                libc::kill(pid as i32, libc::SIGKILL);
                for c in &children {
                    libc::kill(*c as i32, libc::SIGKILL);
                }
            }
            let _ = self.child.wait().await;
            // Orphaned backends are reaped by init; wait until they are gone
            // so the data directory can be restarted.
            let deadline = Instant::now() + Duration::from_secs(5);
            while children
                .iter()
                .any(|c| std::path::Path::new(&format!("/proc/{c}")).exists() && !is_zombie(*c))
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } else {
            let _ = self.child.wait().await;
        }
    }

    /// Fast shutdown (SIGINT), waiting at most `limit`, then SIGKILL.
    pub async fn stop(&mut self, limit: Duration) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGINT);
            }
            if tokio::time::timeout(limit, self.child.wait())
                .await
                .is_err()
            {
                self.kill9().await;
            }
        }
    }
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

pub(crate) fn is_zombie(pid: u32) -> bool {
    stat_fields(pid).is_none_or(|f| f.first().is_some_and(|s| s == "Z"))
}

/// Pids whose parent is `pid`.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if stat_fields(p).and_then(|f| f.get(1).and_then(|x| x.parse::<u32>().ok())) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Starts `postgres -D data` as a child in its own process group and waits
/// until it says it is ready (an open port is not enough: during startup
/// and crash recovery it answers "the database system is starting up").
pub async fn start(name: &str, data: &Path, port: u16, log: &Path) -> Result<Server, LabError> {
    start_with(name, data, port, log, &[]).await
}

/// [`start`] with extra server arguments (`-c name=value` overrides of
/// the data directory's configuration; `port` must match what they say).
pub async fn start_with(
    name: &str,
    data: &Path,
    port: u16,
    log: &Path,
    args: &[String],
) -> Result<Server, LabError> {
    let bin = bindir()?;
    let who = run_as()?;
    let log_start = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0) as usize;
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(format!("open {}", log.display())))?;
    let log2 = logf.try_clone().map_err(io("dup log"))?;
    let mut c = command(&bin.join("postgres"), who);
    c.arg("-D")
        .arg(data)
        .args(args)
        .stdout(Stdio::from(logf))
        .stderr(Stdio::from(log2))
        .process_group(0);
    let child = c.spawn().map_err(io(format!("start postgres {name}")))?;
    let mut s = Server {
        name: name.into(),
        data: data.to_path_buf(),
        port,
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        let fresh = String::from_utf8_lossy(text.get(log_start..).unwrap_or(&[]));
        if fresh.contains("ready to accept")
            && tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        {
            return Ok(s);
        }
        if let Ok(Some(st)) = s.child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let last: Vec<&str> = tail.lines().rev().take(3).collect();
            return Err(LabError::Command {
                what: format!("postgres {name}"),
                detail: format!("exited with {st}: {}", last.join(" | ")),
            });
        }
        if Instant::now() > deadline {
            s.kill9().await;
            return Err(LabError::Command {
                what: format!("postgres {name}"),
                detail: "not accepting connections after 30s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Clones a running primary into a streaming standby listening on `port`.
pub async fn init_standby(
    spec: &ClusterSpec,
    primary_port: u16,
    data: &Path,
    port: u16,
    password: &str,
) -> Result<(), LabError> {
    let bin = bindir()?;
    let who = run_as()?;
    // libpq password file, readable only by the server user: keeps the
    // password off command lines and out of primary_conninfo.
    let passfile = spec.root.join("standby.pgpass");
    write_file(
        &passfile,
        &format!("127.0.0.1:{primary_port}:*:{}:{password}\n", spec.superuser),
        0o600,
        who,
    )?;
    let mut c = command(&bin.join("pg_basebackup"), who);
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &primary_port.to_string(),
        "-U",
        &spec.superuser,
        "-D",
    ])
    .arg(data)
    .args(["-X", "stream", "-c", "fast", "-R"]);
    c.env("PGPASSFILE", &passfile);
    run(c, "pg_basebackup", Duration::from_secs(120)).await?;
    append(
        &data.join("postgresql.auto.conf"),
        &format!(
            "port = {port}\nprimary_conninfo = 'host=127.0.0.1 port={primary_port} user={} passfile={} application_name=dr'\n",
            spec.superuser,
            passfile.display()
        ),
    )?;
    Ok(())
}

/// Creates the non-superuser application role the heartbeat and demo apps
/// use (so fencing's session cut applies to them, as to real apps).
pub async fn create_app_role(
    host_port: u16,
    spec: &ClusterSpec,
    password: &str,
) -> Result<(), LabError> {
    let server = lab_server(host_port, &spec.superuser, spec);
    let client = server
        .connect(Duration::from_secs(5))
        .await
        .map_err(|e| LabError::Other(e.to_string()))?;
    let sql = format!(
        "do $$ begin if not exists (select 1 from pg_roles where rolname = '{u}') then create role {u} login password '{p}'; end if; end $$; \
         grant create on schema public to {u}; {ddl}; alter table drctl_heartbeat owner to {u};",
        u = spec.app_user,
        p = password.replace('\'', "''"),
        ddl = crate::postgres::heartbeat::TABLE_DDL
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| LabError::Other(format!("create app role: {e}")))
}

pub fn lab_server(port: u16, user: &str, spec: &ClusterSpec) -> crate::postgres::PgServer {
    crate::postgres::PgServer {
        host: "127.0.0.1".into(),
        port,
        dbname: "postgres".into(),
        user: user.into(),
        password: Some(crate::secret::SecretRef::File(spec.password_file.clone())),
        sslmode: crate::postgres::conn::SslMode::VerifyFull,
        sslrootcert: Some(crate::secret::SecretRef::File(spec.ca_cert.clone())),
        connect_timeout: Duration::from_secs(2),
    }
}

/// A fresh directory the server user can use, under /tmp when dropping
/// privileges (the checkout may sit where that user cannot traverse).
pub fn data_root(preferred: &Path) -> Result<PathBuf, LabError> {
    let who = run_as()?;
    let root = if who.drop {
        let p = std::env::temp_dir().join(format!(
            "drctl-lab-{}-{:06x}",
            std::process::id(),
            fastrand::u32(..0x0100_0000)
        ));
        std::fs::create_dir_all(&p).map_err(io(format!("create {}", p.display())))?;
        p
    } else {
        let p = preferred.join("data");
        std::fs::create_dir_all(&p).map_err(io(format!("create {}", p.display())))?;
        p
    };
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
        .map_err(io("chmod data root"))?;
    chown(&root, who)?;
    Ok(root)
}

/// Pauses (or resumes) the primary's WAL sender to the standby, the way to
/// create replication lag (pausing the receiver does not).
pub async fn pause_walsender(
    primary_port: u16,
    spec: &ClusterSpec,
    pause: bool,
) -> Result<Vec<i32>, LabError> {
    let server = lab_server(primary_port, &spec.superuser, spec);
    let client = server
        .connect(Duration::from_secs(3))
        .await
        .map_err(|e| LabError::Other(e.to_string()))?;
    let rows = client
        .query("select pid from pg_stat_replication", &[])
        .await
        .map_err(|e| LabError::Other(e.to_string()))?;
    let pids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    for p in &pids {
        // SAFETY: signalling a server process we started (same user or root).
        unsafe {
            libc::kill(*p, if pause { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }
    Ok(pids)
}
