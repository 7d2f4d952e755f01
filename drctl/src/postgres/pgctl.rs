//! A node outside the lab: a local cluster driven with `pg_ctl`, declared
//! in the environment as the region's `node:`
//!
//! ```yaml
//! regions:
//!   primary:
//!     postgres: {host: 10.0.0.5, port: 5432, ...}
//!     node:
//!       kind: pg_ctl
//!       data_dir: /var/lib/postgresql/15/main
//!       bin_dir: /usr/lib/postgresql/15/bin   # default: pg_config --bindir
//!       log_file: /var/log/postgresql/drctl.log # default: beside data_dir
//! ```
//!
//! and named `region:NAME` in a runbook (`drctl switchover` and
//! `drctl failback` fill that in for a region with a `node:`). drctl then
//! runs on the database host: every command is an argv (no shell), bounded
//! by a timeout, run as the data directory's owner when drctl is root.
//! No secret is involved: `pg_ctl` works on the data directory.
//!
//! The isolated start (the old primary read before a rewind) is the same
//! as the lab's: a standby without upstream on a fresh loopback port, with
//! an hba file admitting only the given user; a marker file beside the
//! data directory says it runs isolated.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::action::ActionError;
use crate::decode::{Ctx, MapReader};
use crate::yaml::Node as YamlNode;

/// How long `pg_ctl` may take to start or stop a server.
const PG_CTL_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgCtl {
    pub data_dir: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
}

/// Validates a region's `node:` section (`validate`, `plan`).
pub fn decode(ctx: &mut Ctx<'_>, node: &YamlNode, what: &str) {
    let Some(mut r) = MapReader::new(ctx, node, what.to_string()) else {
        return;
    };
    if let Some(k) = r.req(ctx, "kind") {
        ctx.one_of(k, &["pg_ctl"], &format!("{what}.kind"));
    }
    for (key, required) in [("data_dir", true), ("bin_dir", false), ("log_file", false)] {
        let n = if required {
            r.req(ctx, key)
        } else {
            r.opt(key)
        };
        if let Some(n) = n {
            if let Some(s) = ctx.string(n, &format!("{what}.{key}")) {
                if !Path::new(&s).is_absolute() {
                    ctx.error(
                        "E-VALUE",
                        n,
                        format!("{what}.{key}: `{s}` is not an absolute path"),
                        Some("name the directory on the database host absolutely".into()),
                    );
                }
            }
        }
    }
    r.finish(ctx);
}

impl PgCtl {
    /// From the environment's (already validated) JSON form.
    pub fn from_value(region: &str, v: &Value) -> Result<PgCtl, ActionError> {
        let bad = |m: String| ActionError::Config {
            message: format!("regions.{region}.node: {m}"),
            hint: "node: {kind: pg_ctl, data_dir: /var/lib/postgresql/15/main}".into(),
        };
        if v.get("kind").and_then(Value::as_str) != Some("pg_ctl") {
            return Err(bad("only `kind: pg_ctl` is supported".into()));
        }
        let path = |k: &str| v.get(k).and_then(Value::as_str).map(PathBuf::from);
        Ok(PgCtl {
            data_dir: path("data_dir").ok_or_else(|| bad("`data_dir` is required".into()))?,
            bin_dir: path("bin_dir"),
            log_file: path("log_file"),
        })
    }

    pub fn bin_dir(&self) -> Result<PathBuf, ActionError> {
        match &self.bin_dir {
            Some(b) => Ok(b.clone()),
            None => crate::lab::pg::bindir().map_err(|e| ActionError::failed(e.to_string())),
        }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self
            .data_dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(suffix);
        self.data_dir.with_file_name(name)
    }

    fn log(&self) -> PathBuf {
        self.log_file
            .clone()
            .unwrap_or_else(|| self.sibling(".drctl.log"))
    }

    /// Marker of an isolated run (its port), beside the data directory.
    fn marker(&self) -> PathBuf {
        self.sibling(".drctl-isolated")
    }

    /// Runs `pg_ctl` as the data directory's owner; returns the exit code
    /// and the output.
    async fn pg_ctl(
        &self,
        args: &[OsString],
        owner: (u32, u32),
    ) -> Result<(i32, String), ActionError> {
        let bin = self.bin_dir()?.join("pg_ctl");
        let mut c = tokio::process::Command::new(&bin);
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            c.uid(owner.0).gid(owner.1);
        }
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("PG")) {
                c.env_remove(&k);
            }
        }
        c.arg("-D")
            .arg(&self.data_dir)
            .args(args)
            .current_dir(self.data_dir.parent().unwrap_or(Path::new("/")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(PG_CTL_WAIT + Duration::from_secs(10), c.output())
            .await
            .map_err(|_| ActionError::failed(format!("pg_ctl timed out after {PG_CTL_WAIT:?}")))?
            .map_err(|e| ActionError::failed(format!("{}: {e}", bin.display())))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.code().unwrap_or(-1), text))
    }

    async fn must(&self, args: &[&str], owner: (u32, u32)) -> Result<String, ActionError> {
        let a: Vec<OsString> = args.iter().map(OsString::from).collect();
        let (code, text) = self.pg_ctl(&a, owner).await?;
        if code != 0 {
            return Err(ActionError::failed(format!(
                "pg_ctl {} -D {} failed ({code}): {}",
                args.first().copied().unwrap_or_default(),
                self.data_dir.display(),
                text.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
            )));
        }
        Ok(text)
    }

    /// `(running, isolated)`: `pg_ctl status` exits 0 when a postmaster
    /// runs on the directory, 3 when none does.
    pub async fn running(&self, owner: (u32, u32)) -> Result<(bool, bool), ActionError> {
        let (code, text) = self.pg_ctl(&["status".into()], owner).await?;
        let up = match code {
            0 => true,
            3 => false,
            _ => {
                return Err(ActionError::failed(format!(
                    "pg_ctl status -D {}: {}",
                    self.data_dir.display(),
                    text.trim()
                )))
            }
        };
        let iso = up && self.marker().exists();
        Ok((up && !iso, iso))
    }

    /// Fast shutdown, waited for; returns whether it was running.
    pub async fn stop(&self, owner: (u32, u32)) -> Result<bool, ActionError> {
        let (up, iso) = self.running(owner).await?;
        if !up && !iso {
            let _ = std::fs::remove_file(self.marker());
            return Ok(false);
        }
        let t = PG_CTL_WAIT.as_secs().to_string();
        self.must(&["stop", "-m", "fast", "-w", "-t", &t], owner)
            .await?;
        let _ = std::fs::remove_file(self.marker());
        Ok(true)
    }

    pub async fn start(&self, owner: (u32, u32)) -> Result<(), ActionError> {
        if self.running(owner).await?.0 {
            return Ok(());
        }
        let t = PG_CTL_WAIT.as_secs().to_string();
        let log = self.log().display().to_string();
        self.must(&["start", "-w", "-t", &t, "-l", &log], owner)
            .await
            .map(|_| ())
    }

    /// Starts it as a standby without upstream on a fresh loopback port,
    /// admitting only `user`; returns the port. `write` writes a file as
    /// the server's owner.
    pub async fn start_isolated(
        &self,
        owner: (u32, u32),
        user: &str,
        write: impl Fn(&Path, &str, u32) -> Result<(), ActionError>,
    ) -> Result<u16, ActionError> {
        let (up, iso) = self.running(owner).await?;
        if up {
            return Err(ActionError::failed(format!(
                "{} runs normally: stop it before an isolated start",
                self.data_dir.display()
            )));
        }
        if iso {
            if let Some(p) = std::fs::read_to_string(self.marker())
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return Ok(p);
            }
        }
        write(&self.data_dir.join("standby.signal"), "", 0o600)?;
        let hba = self.sibling(".drctl-isolated-hba.conf");
        write(
            &hba,
            &format!("# drctl: an isolated server admits only {user}\nhost postgres {user} 127.0.0.1/32 scram-sha-256\nhostssl postgres {user} 127.0.0.1/32 scram-sha-256\n"),
            0o600,
        )?;
        let port = crate::lab::pg::free_port().map_err(|e| ActionError::failed(e.to_string()))?;
        write(&self.marker(), &port.to_string(), 0o600)?;
        // pg_ctl hands `-o` to the server's command line through a shell;
        // every value here is drctl's own (a port, a path it chose).
        let opts = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c hba_file='{}' -c primary_conninfo='' -c primary_slot_name='' -c restore_command='' -c archive_mode=off -c hot_standby=on",
            hba.display()
        );
        let t = PG_CTL_WAIT.as_secs().to_string();
        let log = self.log().display().to_string();
        if let Err(e) = self
            .must(&["start", "-w", "-t", &t, "-l", &log, "-o", &opts], owner)
            .await
        {
            let _ = std::fs::remove_file(self.marker());
            return Err(e);
        }
        Ok(port)
    }

    pub async fn stop_isolated(&self, owner: (u32, u32)) -> Result<(), ActionError> {
        if self.running(owner).await?.1 {
            self.stop(owner).await?;
        }
        let _ = std::fs::remove_file(self.marker());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_the_environment() {
        let c = PgCtl::from_value(
            "primary",
            &json!({"kind": "pg_ctl", "data_dir": "/srv/pg/main", "bin_dir": "/opt/pg/bin"}),
        )
        .expect("node");
        assert_eq!(c.data_dir, PathBuf::from("/srv/pg/main"));
        assert_eq!(c.bin_dir().expect("bin"), PathBuf::from("/opt/pg/bin"));
        assert_eq!(c.log(), PathBuf::from("/srv/pg/main.drctl.log"));
        assert_eq!(c.marker(), PathBuf::from("/srv/pg/main.drctl-isolated"));
        assert!(PgCtl::from_value("primary", &json!({"kind": "ssh"})).is_err());
        assert!(PgCtl::from_value("primary", &json!({"kind": "pg_ctl"})).is_err());
    }
}
