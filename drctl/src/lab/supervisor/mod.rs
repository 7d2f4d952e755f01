//! The lab supervisor: one long-lived drctl process that is the parent of
//! every lab server, so it can reap a killed postmaster and restart it, and
//! that serves the demo apps, the heartbeat writer and a control endpoint
//! on loopback (`drctl lab break|down` and drills talk to it).
//!
//! This module brings the lab up, keeps it alive and shuts it down;
//! [`control`] serves the control endpoint and runs what it is asked
//! (break, restore, follow the heartbeat, measure the truth).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Mutex, Notify};
use tokio::task::JoinHandle;

use super::http::serve;
use super::pg::{self, ClusterSpec, LabError, Server};
use super::truth::{self, Broken};
use crate::postgres::heartbeat::HeartbeatStatus;
use crate::store::{DirStore, Store};

mod control;
use control::control_handler;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub region: String,
    pub kind: String,
    pub addr: String,
    pub pid: Option<u32>,
    pub alive: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub status: String,
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    pub data_root: PathBuf,
    pub env_file: PathBuf,
    pub control: String,
    pub supervisor_pid: u32,
    pub ports: HashMap<String, u16>,
    pub services: Vec<Service>,
    pub spec: ClusterSpec,
    /// The PostgreSQL state store (`--state-backend postgres`), else the
    /// state directory holds drctl's state.
    #[serde(default)]
    pub state_url: Option<String>,
}

pub const STATE_FILE: &str = "lab.json";
pub const ENV_NAME: &str = "lab";
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// The heartbeat writer's task and the signal that stops it.
pub(super) type Writer = (JoinHandle<HeartbeatStatus>, oneshot::Sender<()>);

struct Lab {
    state: Mutex<LabState>,
    servers: Mutex<HashMap<String, Server>>,
    apps: Mutex<HashMap<String, JoinHandle<()>>>,
    heartbeat: Mutex<Option<Writer>>,
    /// Set by `/break/primary`: what the truth measures against.
    broken: Mutex<Option<Broken>>,
    /// Held by a truth measurement from the isolated restart to its stop;
    /// shutdown takes it first, so it never races a measurement.
    truth_lock: Mutex<()>,
    pdns: Mutex<Option<tokio::process::Child>>,
    /// The store the heartbeat writer acknowledges to (kept to restart the
    /// writer when a failback returns the lab to its initial state).
    store: Mutex<Option<Arc<dyn Store>>>,
    stop: Notify,
    dir: PathBuf,
}

fn save(dir: &Path, st: &LabState) {
    let _ = crate::store::write_atomic(
        &dir.join(STATE_FILE),
        &serde_json::to_vec_pretty(st).unwrap_or_default(),
    );
}

fn env_yaml(st: &LabState) -> String {
    let p = |k: &str| st.ports.get(k).copied().unwrap_or(0);
    let pw = st.spec.password_file.display();
    let su = &st.spec.superuser;
    let tls = format!(
        "sslmode: verify-full, sslrootcert: \"file:{}\"",
        st.spec.ca_cert.display()
    );
    [
        "# Written by `drctl lab up`: the local two-region lab on loopback.".to_string(),
        format!("name: {ENV_NAME}"),
        "description: drctl local lab (real PostgreSQL 15 primary + streaming standby, demo apps)".into(),
        "active_region: primary".into(),
        // Paths in an environment file are relative to the file, and this
        // one lives in the lab directory: name the runbook absolutely.
        match crate::environment::paths::absolute(Path::new("runbooks/failover.yaml")) {
            p if p.exists() => format!("failover_runbook: \"{}\"", p.display()),
            _ => "# failover_runbook: (runbooks/failover.yaml was not found when the lab started)".into(),
        },
        "regions:".into(),
        "  primary:".into(),
        format!("    postgres: {{host: 127.0.0.1, port: {}, dbname: postgres, user: {su}, password: \"file:{pw}\", {tls}}}", p("pg-primary")),
        format!("    app: {{url: \"http://127.0.0.1:{}\", public_url: \"http://app.lab.example:{}\"}}", p("app"), p("app")),
        // `drctl lab backup` fills backup_dir; `drctl verify-backup` restores the newest.
        format!(
            "    backups:\n      lab: {{kind: basebackup, backup_dir: \"{}\", wal_archive: \"{}\", superuser: {su}, database: postgres, max_age: 26h}}",
            pg::backups_dir(&st.spec).display(),
            pg::wal_archive(&st.spec).display()
        ),
        "  dr:".into(),
        format!("    postgres: {{host: 127.0.0.1, port: {}, dbname: postgres, user: {su}, password: \"file:{pw}\", {tls}}}", p("pg-dr")),
        format!("    app: {{url: \"http://127.0.0.2:{}\", public_url: \"http://app.lab.example:{}\"}}", p("app"), p("app")),
        "dns:".into(),
        "  provider: powerdns".into(),
        format!("  api_url: \"http://127.0.0.1:{}\"", p("dns-api")),
        format!("  api_key: \"file:{}\"", st.dir.join("pdns-api-key").display()),
        "  zone: lab.example.".into(),
        format!("  nameservers: [\"127.0.0.1:{}\"]", p("dns")),
        "  records:".into(),
        "    - {name: app.lab.example., type: A, ttl: 5, values: {primary: [127.0.0.1], dr: [127.0.0.2]}}".into(),
        // The isolated drill's own name (runbooks/isolated-drill.yaml): the
        // only record an isolated drill may change.
        "    - {name: drill.lab.example., type: A, ttl: 1, drill: true}".into(),
        "state:".into(),
        match &st.state_url {
            Some(u) => format!("  url: \"{u}\"\n  password: \"file:{pw}\""),
            None => format!("  dir: \"{}\"", st.state_dir.display()),
        },
        "lab:".into(),
        format!("  control: \"{}\"", st.control),
        format!("  dir: \"{}\"", st.dir.display()),
        String::new(),
    ]
    .join("\n")
}

/// PowerDNS runs as its own user, which cannot enter the Postgres data
/// root; it gets a sibling directory.
fn pdns_dir(spec: &ClusterSpec) -> PathBuf {
    let mut name = spec
        .root
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push("-pdns");
    spec.root.with_file_name(name)
}

fn free_port_on_both() -> Result<u16, LabError> {
    for _ in 0..50 {
        let p = pg::free_port()?;
        if std::net::TcpListener::bind(("127.0.0.2", p)).is_ok() {
            return Ok(p);
        }
    }
    Err(LabError::Other(
        "no port free on both 127.0.0.1 and 127.0.0.2".into(),
    ))
}

fn random_password() -> String {
    (0..24)
        .map(|_| char::from(b"abcdefghijkmnopqrstuvwxyz23456789"[fastrand::usize(..33)]))
        .collect()
}

/// Brings the lab up and serves until stopped. Runs in the supervisor
/// process (`drctl lab supervise`).
pub async fn supervise(
    dir: PathBuf,
    state_dir: PathBuf,
    backend: super::StateBackend,
) -> Result<(), LabError> {
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| LabError::Io {
        what: "create lab dir".into(),
        source: e,
    })?;
    let state_dir = std::fs::canonicalize(&state_dir).unwrap_or(state_dir);
    let password = random_password();
    let pwfile = dir.join("pgpass");
    std::fs::write(&pwfile, &password).map_err(|e| LabError::Io {
        what: "write password file".into(),
        source: e,
    })?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600));
    let keyfile = dir.join("pdns-api-key");
    std::fs::write(&keyfile, random_password()).map_err(|e| LabError::Io {
        what: "write pdns api key".into(),
        source: e,
    })?;
    let _ = std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600));
    let data_root = pg::data_root(&dir)?;
    let ca_cert = pg::create_ca(&dir.join("tls")).await?;
    let spec = ClusterSpec {
        ca_cert,
        root: data_root.clone(),
        superuser: "drctl".into(),
        app_user: "app".into(),
        password_file: pwfile.clone(),
    };
    let mut ports = HashMap::new();
    for k in ["pg-primary", "pg-dr", "control", "dns", "dns-api"] {
        ports.insert(k.to_string(), pg::free_port()?);
    }
    if backend == super::StateBackend::Postgres {
        ports.insert("pg-state".to_string(), pg::free_port()?);
    }
    // Both apps listen on one port, at 127.0.0.1 (primary) and 127.0.0.2
    // (dr), so an A record alone decides which region serves.
    ports.insert("app".to_string(), free_port_on_both()?);
    let control = format!("http://127.0.0.1:{}", ports["control"]);
    let st = LabState {
        status: "starting".into(),
        dir: dir.clone(),
        state_dir: state_dir.clone(),
        data_root: data_root.clone(),
        env_file: dir.join("env.yaml"),
        control: control.clone(),
        supervisor_pid: std::process::id(),
        ports: ports.clone(),
        services: Vec::new(),
        spec: spec.clone(),
        state_url: ports.get("pg-state").map(|p| {
            format!(
                "postgresql://{}@127.0.0.1:{p}/postgres?sslmode=verify-full&sslrootcert={}",
                spec.superuser,
                spec.ca_cert.display()
            )
        }),
    };
    save(&dir, &st);
    let lab = Arc::new(Lab {
        state: Mutex::new(st),
        servers: Mutex::new(HashMap::new()),
        apps: Mutex::new(HashMap::new()),
        heartbeat: Mutex::new(None),
        broken: Mutex::new(None),
        truth_lock: Mutex::new(()),
        pdns: Mutex::new(None),
        store: Mutex::new(None),
        stop: Notify::new(),
        dir: dir.clone(),
    });
    // The control endpoint comes up first so `lab down` works even if the
    // bring-up below fails half-way.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", ports["control"]))
        .await
        .map_err(|e| LabError::Io {
            what: "bind control port".into(),
            source: e,
        })?;
    let control_task = tokio::spawn(serve(listener, control_handler(lab.clone())));
    let state_url = lab.state.lock().await.state_url.clone();
    let result = bring_up(&lab, &spec, &password, &ports, &state_dir, state_url).await;
    match &result {
        Ok(()) => {
            let mut st = lab.state.lock().await;
            st.status = "ready".into();
            std::fs::write(&st.env_file, env_yaml(&st)).map_err(|e| LabError::Io {
                what: "write env.yaml".into(),
                source: e,
            })?;
            refresh(&lab, &mut st).await;
            save(&dir, &st);
        }
        Err(e) => {
            let mut st = lab.state.lock().await;
            st.status = format!("error: {e}");
            save(&dir, &st);
        }
    }
    if result.is_ok() {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| LabError::Other(e.to_string()))?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = lab.stop.notified() => break,
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {
                    let mut st = lab.state.lock().await;
                    refresh(&lab, &mut st).await;
                    save(&dir, &st);
                }
            }
        }
    }
    shutdown(&lab).await;
    control_task.abort();
    result
}

async fn bring_up(
    lab: &Arc<Lab>,
    spec: &ClusterSpec,
    password: &str,
    ports: &HashMap<String, u16>,
    state_dir: &Path,
    state_url: Option<String>,
) -> Result<(), LabError> {
    let logs = lab.dir.join("logs");
    let primary_data = spec.root.join("primary");
    let dr_data = spec.root.join("dr");
    pg::init_primary(spec, &primary_data, ports["pg-primary"], password).await?;
    pg::enable_archiving(spec, &primary_data)?;
    let primary = pg::start(
        "pg-primary",
        &primary_data,
        ports["pg-primary"],
        &logs.join("pg-primary.log"),
    )
    .await?;
    lab.servers
        .lock()
        .await
        .insert("pg-primary".into(), primary);
    pg::create_app_role(ports["pg-primary"], spec, password).await?;
    pg::init_standby(
        spec,
        ports["pg-primary"],
        &dr_data,
        ports["pg-dr"],
        password,
    )
    .await?;
    let dr = pg::start("pg-dr", &dr_data, ports["pg-dr"], &logs.join("pg-dr.log")).await?;
    lab.servers.lock().await.insert("pg-dr".into(), dr);
    for (region, pgk, appk, ip) in [
        ("primary", "pg-primary", "app-primary", "127.0.0.1"),
        ("dr", "pg-dr", "app-dr", "127.0.0.2"),
    ] {
        let l = tokio::net::TcpListener::bind((ip, ports["app"]))
            .await
            .map_err(|e| LabError::Io {
                what: format!("bind {appk}"),
                source: e,
            })?;
        let db = pg::lab_server(ports[pgk], &spec.app_user, spec);
        lab.apps.lock().await.insert(
            appk.to_string(),
            tokio::spawn(super::app::run(l, region.to_string(), db)),
        );
    }
    let store: Arc<dyn Store> = match state_url {
        None => Arc::new(DirStore::open(state_dir).map_err(|e| LabError::Other(e.to_string()))?),
        Some(url) => {
            // The witness store: a third server, in neither region.
            let data = spec.root.join("state");
            pg::init_primary(spec, &data, ports["pg-state"], password).await?;
            let s = pg::start(
                "pg-state",
                &data,
                ports["pg-state"],
                &logs.join("pg-state.log"),
            )
            .await?;
            lab.servers.lock().await.insert("pg-state".into(), s);
            let mut server = crate::postgres::PgServer::from_dsn(&url)
                .map_err(|e| LabError::Other(crate::diag::error_chain(&e)))?;
            server.password = Some(crate::secret::SecretRef::File(spec.password_file.clone()));
            let (store, _) = crate::store::postgres::init(&url, server)
                .await
                .map_err(|e| LabError::Other(format!("state store: {e}")))?;
            Arc::new(store)
        }
    };
    // A fresh lab runs its primary in `primary`, whatever an earlier lab's
    // drills recorded for this environment.
    let fresh = crate::store::active::ActiveRegion {
        region: "primary".into(),
        run_id: String::new(),
        by: "lab up".into(),
        at_ms: crate::journal::now_ms(),
    };
    crate::store::active::record(store.as_ref(), ENV_NAME, &fresh)
        .await
        .map_err(|e| LabError::Other(format!("record the active region: {e}")))?;
    *lab.store.lock().await = Some(store.clone());
    *lab.heartbeat.lock().await = Some(super::nodes::start_heartbeat(
        ports["pg-primary"],
        spec,
        store,
    ));
    let key = std::fs::read_to_string(lab.dir.join("pdns-api-key")).unwrap_or_default();
    let pdns = super::pdns::start(
        &pdns_dir(spec),
        ports["dns"],
        ports["dns-api"],
        key.trim(),
        "127.0.0.1",
        &logs.join("pdns.log"),
    )
    .await?;
    *lab.pdns.lock().await = Some(pdns);
    Ok(())
}

/// Reaps exited servers and refreshes the service list.
async fn refresh(lab: &Lab, st: &mut LabState) {
    let mut servers = lab.servers.lock().await;
    let mut services = Vec::new();
    for (name, region) in [
        ("pg-primary", "primary"),
        ("pg-dr", "dr"),
        ("pg-state", "witness"),
    ] {
        if name == "pg-state" && !st.ports.contains_key(name) {
            continue;
        }
        let (pid, alive) = match servers.get_mut(name) {
            Some(s) => match s.child.try_wait() {
                Ok(None) => (s.pid(), true),
                _ => (None, false),
            },
            None => (None, false),
        };
        let role = match name {
            "pg-primary" => "postgres (initial primary)",
            "pg-state" => "postgres (drctl state store)",
            _ => "postgres (initial standby)",
        };
        services.push(Service {
            name: name.into(),
            region: region.into(),
            kind: role.into(),
            addr: format!("127.0.0.1:{}", st.ports.get(name).copied().unwrap_or(0)),
            pid,
            alive,
        });
    }
    let apps = lab.apps.lock().await;
    for (name, region) in [("app-primary", "primary"), ("app-dr", "dr")] {
        let alive = apps.get(name).is_some_and(|h| !h.is_finished());
        let ip = if region == "dr" {
            "127.0.0.2"
        } else {
            "127.0.0.1"
        };
        services.push(Service {
            name: name.into(),
            region: region.into(),
            kind: "demo app".into(),
            addr: format!("http://{ip}:{}", st.ports.get("app").copied().unwrap_or(0)),
            pid: Some(std::process::id()),
            alive,
        });
    }
    let mut pdns = lab.pdns.lock().await;
    let pdns_pid = pdns.as_mut().and_then(|c| match c.try_wait() {
        Ok(None) => c.id(),
        _ => None,
    });
    services.push(Service {
        name: "pdns".into(),
        region: "global".into(),
        kind: "PowerDNS authoritative".into(),
        addr: format!(
            "127.0.0.1:{} (API :{})",
            st.ports.get("dns").copied().unwrap_or(0),
            st.ports.get("dns-api").copied().unwrap_or(0)
        ),
        pid: pdns_pid,
        alive: pdns_pid.is_some(),
    });
    drop(pdns);
    let hb_alive = lab
        .heartbeat
        .lock()
        .await
        .as_ref()
        .is_some_and(|(h, _)| !h.is_finished());
    services.push(Service {
        name: "heartbeat".into(),
        region: "primary".into(),
        kind: "RPO probe, every 100 ms".into(),
        addr: format!(
            "-> 127.0.0.1:{}",
            st.ports.get("pg-primary").copied().unwrap_or(0)
        ),
        pid: Some(std::process::id()),
        alive: hb_alive,
    });
    st.services = services;
    drop(servers);
}

async fn shutdown(lab: &Lab) {
    // A truth measurement in progress finishes (it is bounded) and stops
    // its isolated server itself; the stray sweep below is the backstop.
    let _measuring = tokio::time::timeout(Duration::from_secs(60), lab.truth_lock.lock()).await;
    if let Some((h, _)) = lab.heartbeat.lock().await.take() {
        h.abort();
    }
    for (_, h) in lab.apps.lock().await.drain() {
        h.abort();
    }
    if let Some(mut p) = lab.pdns.lock().await.take() {
        let _ = p.kill().await;
    }
    for (_, mut s) in lab.servers.lock().await.drain() {
        s.stop(Duration::from_secs(10)).await;
    }
    let mut st = lab.state.lock().await;
    let strays = truth::kill_strays(&st.data_root);
    if !strays.is_empty() {
        tracing::warn!(pids = ?strays, "killed lab postmasters the supervisor no longer tracked");
    }
    let _ = std::fs::remove_dir_all(&st.data_root);
    let _ = std::fs::remove_dir_all(pdns_dir(&st.spec));
    st.status = "stopped".into();
    for s in st.services.iter_mut() {
        s.alive = false;
        s.pid = None;
    }
    save(&lab.dir, &st);
}
