//! The local lab: a real two-region setup on loopback for drills and demos.
//!
//! `drctl lab up` starts a supervisor process (see [`supervisor`]) that owns
//! a PostgreSQL 15 primary (region `primary`) and streaming standby (region
//! `dr`), a demo app per region and the heartbeat writer, and writes a ready
//! environment file. `lab status`, `lab break primary` and `lab down` talk
//! to it over a loopback control endpoint.

pub mod app;
pub mod http;
pub mod pdns;
pub mod pg;
pub mod supervisor;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use supervisor::{LabState, STATE_FILE};

pub fn read_state(dir: &Path) -> Option<LabState> {
    let b = std::fs::read(dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&b).ok()
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

pub fn running(dir: &Path) -> Option<LabState> {
    read_state(dir).filter(|s| s.status == "ready" && pid_alive(s.supervisor_pid))
}

/// Calls a control route of a running lab.
pub async fn control(base: &str, method: &str, route: &str) -> Result<Value, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}{route}", base.trim_end_matches('/'));
    let req = if method == "POST" {
        client.post(&url)
    } else {
        client.get(&url)
    };
    let resp = req
        .send()
        .await
        .map_err(|e| format!("lab control {url}: {}", crate::diag::error_chain(&e)))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|e| format!("lab control {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "lab control {url}: {}",
            v["error"].as_str().unwrap_or("failed")
        ));
    }
    Ok(v)
}

/// Starts the supervisor as a detached process and waits until the lab is
/// ready (or reports why not).
pub async fn up(dir: &Path, state_dir: &Path, backend: StateBackend) -> Result<LabState, String> {
    if let Some(st) = running(dir) {
        return Ok(st);
    }
    std::fs::create_dir_all(dir.join("logs"))
        .map_err(|e| format!("create {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("logs/supervisor.log")).map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
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
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start lab supervisor: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = read_state(dir) {
            if st.status == "ready" {
                return Ok(st);
            }
            if st.status.starts_with("error") {
                return Err(format!(
                    "{} (log: {})",
                    st.status,
                    dir.join("logs").display()
                ));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("logs/supervisor.log")).unwrap_or_default();
            return Err(format!(
                "lab supervisor exited ({status}): {}",
                log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "lab not ready after 120s; see {}",
                dir.join("logs").display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops exactly what `up` started: asks the supervisor, then makes sure.
pub async fn down(dir: &Path) -> Result<bool, String> {
    let Some(st) = read_state(dir) else {
        return Ok(false);
    };
    if !pid_alive(st.supervisor_pid) {
        let _ = std::fs::remove_dir_all(&st.data_root);
        let _ = std::fs::remove_dir_all(format!("{}-pdns", st.data_root.display()));
        return Ok(false);
    }
    let _ = control(&st.control, "POST", "/stop").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while pid_alive(st.supervisor_pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if pid_alive(st.supervisor_pid) {
        // SAFETY: signalling the supervisor we started (its pid is ours).
        unsafe { libc::kill(st.supervisor_pid as i32, libc::SIGKILL) };
        for s in &st.services {
            if let (Some(pid), true) = (s.pid, s.name.starts_with("pg-")) {
                // SAFETY: the postmaster process groups the lab created.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&st.data_root);
    }
    Ok(true)
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
