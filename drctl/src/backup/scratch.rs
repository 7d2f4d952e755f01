//! The scratch area where backups are restored: one directory per run
//! (`<scratch>/verify-<run id>`), holding a marker file that says whose it
//! is (run id, drctl's pid and that process's start time, the port), so a
//! later run or `drctl verify-backup --cleanup` removes only leftovers it
//! can prove are its own: a marker whose process is gone, and a server
//! whose `postmaster.pid` points at a process running from that very
//! directory.
//!
//! The scratch server is stopped on every path: the guard's `Drop` kills
//! it (a Ctrl-C that cancels the step drops the future), the normal path
//! stops it cleanly first (pg_checksums needs a clean shutdown).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BackupError;

pub const MARKER: &str = "drctl-scratch.json";
const PREFIX: &str = "verify-";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    pub run_id: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat`
    /// field 22): a recycled pid has another.
    pub pid_start: Option<u64>,
    pub port: u16,
    pub created_ms: u64,
}

/// Field 22 of `/proc/PID/stat`: when the process started.
pub fn proc_start(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn alive(pid: u32, start: Option<u64>) -> bool {
    match (proc_start(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The process a data directory's `postmaster.pid` names, when it is
/// running from that directory (its command line names it).
fn postmaster_of(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
    cmd.contains(&data.display().to_string()).then_some(pid)
}

/// SIGKILL to a server and every process it started, then waits
/// (bounded) until they are gone. Its backends are not in its process
/// group (PostgreSQL puts each child in a session of its own), so they are
/// found by parent pid. A scratch copy has nothing worth a clean shutdown.
fn kill_server(pid: u32) {
    let children = crate::lab::pg::children_of(pid);
    // SAFETY: signalling a postmaster proven to run from our scratch
    // directory, its process group and its children.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
        libc::kill(pid as i32, libc::SIGKILL);
        for c in &children {
            libc::kill(*c as i32, libc::SIGKILL);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let alive = |p: u32| proc_start(p).is_some() && !crate::lab::pg::is_zombie(p);
    while (alive(pid) || children.iter().any(|c| alive(*c))) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a sweep of the scratch area found and did.
#[derive(Debug, Default, Serialize)]
pub struct Sweep {
    /// Leftover directories removed (their servers killed first).
    pub removed: Vec<String>,
    /// Servers killed.
    pub killed: Vec<u32>,
    /// Directories left alone, with the reason (alive, not ours).
    pub kept: Vec<String>,
}

/// Removes leftovers of dead verifications under `root` (created if
/// missing). Only `verify-*` directories whose marker names a dead drctl
/// process are touched.
pub fn sweep(root: &Path) -> Result<Sweep, BackupError> {
    sweep_prefixed(root, PREFIX)
}

/// [`sweep`] of the directories named `<prefix><run id>` (isolated drills'
/// clones are `drill-<run id>`).
pub fn sweep_prefixed(root: &Path, prefix: &str) -> Result<Sweep, BackupError> {
    // Absolute: a postmaster is recognised by the data directory on its
    // command line, which is absolute.
    let root = &crate::environment::paths::absolute(root);
    let mut out = Sweep::default();
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let dir = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        let Some(run) = name.strip_prefix(prefix) else {
            continue;
        };
        let marker: Option<Marker> = std::fs::read(dir.join(MARKER))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(m) = marker else {
            out.kept.push(format!(
                "{}: no readable marker, not provably drctl's",
                dir.display()
            ));
            continue;
        };
        if m.run_id != run {
            out.kept
                .push(format!("{}: marker names run {}", dir.display(), m.run_id));
            continue;
        }
        if alive(m.pid, m.pid_start) {
            out.kept.push(format!(
                "{}: its drctl (pid {}) is still running",
                dir.display(),
                m.pid
            ));
            continue;
        }
        let data = dir.join("data");
        if let Some(pid) = postmaster_of(&data) {
            kill_server(pid);
            out.killed.push(pid);
        }
        std::fs::remove_dir_all(&dir).map_err(|source| BackupError::Io {
            what: format!("remove leftover {}", dir.display()),
            source,
        })?;
        out.removed.push(dir.display().to_string());
    }
    Ok(out)
}

/// Removes `<root>/<prefix><run>` whatever its marker says, its server
/// (proven to run from that directory) killed first; returns the killed
/// pid. For a run's own cleanup (`drctl drills cleanup RUN`, teardown).
pub fn remove_run(root: &Path, prefix: &str, run_id: &str) -> Result<Option<u32>, BackupError> {
    let root = &crate::environment::paths::absolute(root);
    let dir = root.join(format!("{prefix}{run_id}"));
    let killed = postmaster_of(&dir.join("data"));
    if let Some(pid) = killed {
        kill_server(pid);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|source| BackupError::Io {
            what: format!("remove {}", dir.display()),
            source,
        })?;
    }
    Ok(killed)
}

/// The pid of a postmaster running from `data` (its `postmaster.pid`, and
/// its command line names the directory).
pub fn running_postmaster(data: &Path) -> Option<u32> {
    postmaster_of(data)
}

/// This run's scratch directory. Dropping it kills a server still running
/// there and removes the directory.
pub struct Scratch {
    pub dir: PathBuf,
    pub port: u16,
    pub server: Option<crate::lab::pg::Server>,
    /// Set by [`Self::keep`]: the directory and its server outlive this
    /// value (an isolated drill's clone serves later steps; its teardown
    /// or `drctl drills cleanup` removes it).
    keep: bool,
}

impl Scratch {
    /// Creates `<root>/verify-<run>` with its marker, owned by the server
    /// user. A directory of this run left by an earlier attempt is
    /// replaced (the marker proves it is this run's).
    pub fn create(root: &Path, run_id: &str, port: u16) -> Result<Scratch, BackupError> {
        Self::create_prefixed(root, PREFIX, run_id, port)
    }

    /// [`Self::create`] as `<root>/<prefix><run>`.
    pub fn create_prefixed(
        root: &Path,
        prefix: &str,
        run_id: &str,
        port: u16,
    ) -> Result<Scratch, BackupError> {
        let io = |what: String| move |source| BackupError::Io { what, source };
        let root = &crate::environment::paths::absolute(root);
        std::fs::create_dir_all(root).map_err(io(format!("create {}", root.display())))?;
        let dir = root.join(format!("{prefix}{run_id}"));
        if dir.exists() {
            if let Some(pid) = postmaster_of(&dir.join("data")) {
                kill_server(pid);
            }
            std::fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))?;
        }
        std::fs::create_dir(&dir).map_err(io(format!("create {}", dir.display())))?;
        let pid = std::process::id();
        let marker = Marker {
            run_id: run_id.to_string(),
            pid,
            pid_start: proc_start(pid),
            port,
            created_ms: crate::journal::now_ms(),
        };
        let bytes = serde_json::to_vec_pretty(&marker).map_err(|e| BackupError::Io {
            what: "encode the scratch marker".into(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(dir.join(MARKER), bytes)
            .map_err(io(format!("write {}", dir.join(MARKER).display())))?;
        let who = crate::lab::pg::run_as().map_err(BackupError::lab)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("chmod {}", dir.display())))?;
        crate::lab::pg::chown(&dir, who).map_err(BackupError::lab)?;
        Ok(Scratch {
            dir,
            port,
            server: None,
            keep: false,
        })
    }

    /// Leaves the directory and its running server in place when this
    /// value is dropped; returns the postmaster's pid.
    pub fn keep(mut self) -> Option<u32> {
        self.keep = true;
        self.server.take().and_then(|s| s.pid())
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Directory of the server's Unix socket (inside the 0700 scratch
    /// directory: only the server user and root can connect).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("s")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Fast shutdown, bounded; reports whether it was clean (exit 0).
    pub async fn stop(&mut self, limit: Duration) -> bool {
        let Some(mut s) = self.server.take() else {
            return false;
        };
        let Some(pid) = s.pid() else { return false };
        // SAFETY: signalling the server we started.
        unsafe {
            libc::kill(pid as i32, libc::SIGINT);
        }
        match tokio::time::timeout(limit, s.child.wait()).await {
            Ok(Ok(st)) => st.success(),
            _ => {
                s.kill9().await;
                false
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Some(s) = self.server.take() {
            if let Some(pid) = s.pid() {
                kill_server(pid);
            }
        }
        if let Some(pid) = postmaster_of(&self.data()) {
            kill_server(pid);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Bytes free for an unprivileged writer at `path` (statvfs).
pub fn free_bytes(path: &Path) -> Result<u64, BackupError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| BackupError::Io {
        what: format!("path {}", path.display()),
        source: std::io::Error::other(e),
    })?;
    // SAFETY: statvfs writes into the zeroed struct we own; c is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(BackupError::Io {
            what: format!("statvfs {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leftover_of_a_dead_process_is_removed_and_a_live_one_kept() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let live = root.join("verify-live");
        std::fs::create_dir(&live).unwrap();
        let me = std::process::id();
        let m = Marker {
            run_id: "live".into(),
            pid: me,
            pid_start: proc_start(me),
            port: 1,
            created_ms: 0,
        };
        std::fs::write(live.join(MARKER), serde_json::to_vec(&m).unwrap()).unwrap();
        let dead = root.join("verify-dead");
        std::fs::create_dir(&dead).unwrap();
        // Our pid with another start time: a recycled pid.
        let m = Marker {
            run_id: "dead".into(),
            pid: me,
            pid_start: Some(1),
            port: 1,
            created_ms: 0,
        };
        std::fs::write(dead.join(MARKER), serde_json::to_vec(&m).unwrap()).unwrap();
        let foreign = root.join("verify-foreign");
        std::fs::create_dir(&foreign).unwrap();
        let s = sweep(root).unwrap();
        assert_eq!(s.removed, vec![dead.display().to_string()]);
        assert!(live.exists() && foreign.exists() && !dead.exists());
        assert_eq!(s.kept.len(), 2, "{:?}", s.kept);
    }
}
