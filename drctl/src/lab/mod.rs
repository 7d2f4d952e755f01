//! The local lab: a real two-region setup on loopback for drills and demos.
//!
//! `drctl lab up` starts a supervisor process (see [`supervisor`]) that owns
//! a PostgreSQL 15 primary (region `primary`) and streaming standby (region
//! `dr`), a demo app per region and the heartbeat writer, and writes a ready
//! environment file. `lab status`, `lab break primary` and `lab down` talk
//! to it over a loopback control endpoint.

pub mod app;
pub mod http;
pub mod nodes;
pub mod pdns;
pub mod pg;
pub mod pgbackrest;
pub mod supervisor;
pub mod truth;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use pg::LabError;
use supervisor::{LabState, STATE_FILE};

pub fn read_state(dir: &Path) -> Option<LabState> {
    let b = std::fs::read(dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Whether a process runs: a zombie does not (a supervisor killed with -9
/// stays one where nothing reaps orphans, e.g. in a container).
fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid as i32, 0) == 0 && !pg::is_zombie(pid) }
}

pub fn running(dir: &Path) -> Option<LabState> {
    read_state(dir).filter(|s| s.status == "ready" && pid_alive(s.supervisor_pid))
}

/// Calls a control route of a running lab.
pub async fn control(base: &str, method: &str, route: &str) -> Result<Value, LabError> {
    let url = format!("{}{route}", base.trim_end_matches('/'));
    let failed = |source| LabError::Control {
        url: url.clone(),
        source,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(failed)?;
    let req = if method == "POST" {
        client.post(&url)
    } else {
        client.get(&url)
    };
    let resp = req.send().await.map_err(failed)?;
    let status = resp.status();
    let v: Value = resp.json().await.map_err(failed)?;
    if !status.is_success() {
        return Err(LabError::Refused {
            url,
            message: v["error"].as_str().unwrap_or("failed").to_string(),
        });
    }
    Ok(v)
}

/// Starts the supervisor as a detached process and waits until the lab is
/// ready (or reports why not).
pub async fn up(dir: &Path, state_dir: &Path, backend: StateBackend) -> Result<LabState, LabError> {
    if let Some(st) = running(dir) {
        return Ok(st);
    }
    let io = |what: String| move |source| LabError::Io { what, source };
    std::fs::create_dir_all(dir.join("logs")).map_err(io(format!("create {}", dir.display())))?;
    // A lab whose supervisor died (kill -9, a crash) left its servers
    // running; stop them before starting afresh.
    if let Some(stale) = read_state(dir).filter(|s| !pid_alive(s.supervisor_pid)) {
        reap(&stale);
    }
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    let exe = std::env::current_exe().map_err(io("find the drctl executable".into()))?;
    let log_path = dir.join("logs/supervisor.log");
    let log =
        std::fs::File::create(&log_path).map_err(io(format!("create {}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(io(format!("open {}", log_path.display())))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--state-dir")
        .arg(state_dir)
        .args(["lab", "supervise", "--dir"])
        .arg(dir)
        .args(["--state-backend", backend.as_str()]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid in the child before exec; detaches the supervisor from
    // our terminal so it outlives this command and ignores our Ctrl-C.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(io("start lab supervisor".into()))?;
    let waited = Duration::from_secs(120);
    let deadline = Instant::now() + waited;
    loop {
        if let Some(st) = read_state(dir) {
            if st.status == "ready" {
                return Ok(st);
            }
            if st.status.starts_with("error") {
                return Err(LabError::NotReady {
                    status: st.status,
                    log: dir.join("logs"),
                });
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(LabError::SupervisorExited {
                status,
                tail: log.lines().rev().take(5).collect::<Vec<_>>().join(" | "),
            });
        }
        if Instant::now() > deadline {
            return Err(LabError::NotReadyInTime {
                waited,
                logs: dir.join("logs"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops exactly what `up` started: asks the supervisor, then makes sure.
/// Returns whether a lab was running; stopping itself cannot fail (what
/// does not stop in time is killed).
pub async fn down(dir: &Path) -> bool {
    let Some(st) = read_state(dir) else {
        return false;
    };
    if !pid_alive(st.supervisor_pid) {
        reap(&st);
        return false;
    }
    let _ = control(&st.control, "POST", "/stop").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while pid_alive(st.supervisor_pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if pid_alive(st.supervisor_pid) {
        // SAFETY: signalling the supervisor we started (its pid is ours).
        unsafe { libc::kill(st.supervisor_pid as i32, libc::SIGKILL) };
    }
    // Whatever a supervisor that died on its way down left (nothing after
    // a clean shutdown: its data directory is gone).
    reap(&st);
    true
}

/// Stops what a dead supervisor left behind: every postmaster found by the
/// `postmaster.pid` files under the data root (an isolated truth server
/// included, which `lab.json` may never have listed) and PowerDNS, then
/// removes the data. Pids are checked against their command line first, so
/// a reused pid is never signalled.
fn reap(st: &LabState) {
    let killed = truth::kill_strays(&st.data_root);
    if !killed.is_empty() {
        tracing::warn!(pids = ?killed, "stopped lab servers left by a dead supervisor");
    }
    for s in st.services.iter().filter(|s| s.name == "pdns") {
        let is_pdns = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("pdns"))
        };
        if let Some(pid) = s.pid.filter(|p| is_pdns(*p)) {
            // SAFETY: the PowerDNS process the lab started (checked above).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_dir_all(&st.data_root);
    let _ = std::fs::remove_dir_all(format!("{}-pdns", st.data_root.display()));
}

/// Where the lab keeps drctl's state.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum StateBackend {
    /// The state directory.
    Dir,
    /// A third PostgreSQL instance on loopback (`pg-state`).
    Postgres,
}

impl StateBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            StateBackend::Dir => "dir",
            StateBackend::Postgres => "postgres",
        }
    }
}

pub fn render(st: &LabState) -> String {
    let mut o = format!(
        "lab {} (supervisor pid {}, control {})\n",
        st.status, st.supervisor_pid, st.control
    );
    for s in &st.services {
        o.push_str(&format!(
            "  {:<12} {:<8} {:<26} {:<28} {}\n",
            s.name,
            s.region,
            s.kind,
            s.addr,
            match (s.alive, s.pid) {
                (true, Some(p)) => format!("up (pid {p})"),
                _ => "down".into(),
            }
        ));
    }
    o.push_str(&format!("  environment file: {}\n", st.env_file.display()));
    o.push_str(&format!(
        "  state store: {}\n",
        st.state_url
            .clone()
            .unwrap_or_else(|| st.state_dir.display().to_string())
    ));
    o
}

pub fn default_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("lab")
}
