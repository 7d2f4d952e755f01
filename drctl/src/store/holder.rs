//! Who holds a lease: a run id, the host, the process (pid plus its start
//! time and the host's boot id, since every pod runs as PID 1), and a
//! random instance id that no other process can share.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HolderId {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    /// The process start time in clock ticks since boot (`/proc/PID/stat`
    /// field 22), so a recycled pid is not mistaken for the holder.
    #[serde(default)]
    pub process_start: u64,
    /// `/proc/sys/kernel/random/boot_id`: a pid from before a reboot is
    /// never alive.
    #[serde(default)]
    pub boot_id: String,
    /// 128 random bits: the identity conditional writes compare.
    pub instance: String,
}

impl HolderId {
    /// The identity of this process for `run_id`.
    pub fn this_process(run_id: &str) -> Self {
        let pid = std::process::id();
        HolderId {
            run_id: run_id.to_string(),
            host: crate::journal::hostname(),
            pid,
            process_start: process_start(pid).unwrap_or(0),
            boot_id: boot_id(),
            instance: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        }
    }

    /// True only when the holder certainly no longer runs: it ran on this
    /// host, and either the host rebooted since, or its pid is gone, or the
    /// pid now belongs to a process that started at another time. A holder
    /// on another host is never "provably dead": only its lease expiry,
    /// decided by the store, can free the lease.
    pub fn is_provably_dead(&self) -> bool {
        if self.host != crate::journal::hostname() {
            return false;
        }
        if !self.boot_id.is_empty() && self.boot_id != boot_id() {
            return true;
        }
        match process_start(self.pid) {
            None => true,
            Some(start) => self.process_start != 0 && start != self.process_start,
        }
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat`, or `None` when the process does not exist.
/// A zombie counts as gone: it can no longer act.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: the
    // fields after it start at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_pid_is_not() {
        let me = HolderId::this_process("r");
        assert!(me.process_start > 0);
        assert!(!me.is_provably_dead());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let gone = HolderId { pid, ..me.clone() };
        assert!(gone.is_provably_dead());
        let restarted = HolderId {
            process_start: me.process_start + 1,
            ..me.clone()
        };
        assert!(restarted.is_provably_dead());
        let elsewhere = HolderId {
            host: "another-host".into(),
            pid,
            ..me
        };
        assert!(!elsewhere.is_provably_dead());
    }
}
