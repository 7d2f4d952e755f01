//! A PostgreSQL node: a server drctl can stop, start and run the server
//! tools (`pg_controldata`, `pg_rewind`, `pg_basebackup`) against, for the
//! actions that change a server's role (`postgres.switchover`,
//! `postgres.rewind`, `postgres.rejoin`). A SQL connection cannot do these:
//! they need the data directory.
//!
//! A node is named by a string so it can be a runbook parameter:
//! `lab:NAME` is a server of the local lab (`pg-primary`, `pg-dr`), started
//! and stopped through the lab's control endpoint (the lab supervisor is the
//! parent of its postmasters and must reap them); drctl runs the tools on
//! its data directory itself, as the directory's owner. `region:NAME` is
//! the node the environment declares as `regions.NAME.node` (drctl on the
//! database host driving a local cluster with `pg_ctl`, see
//! [`super::pgctl`]).

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::ops::Lsn;
use crate::action::{ActionError, StepContext};
use crate::decode::{Ctx, MapReader};

/// How a node is reached (the parsed form of its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSpec {
    Lab {
        name: String,
    },
    /// The environment's `regions.NAME.node`.
    Region {
        region: String,
    },
}

impl NodeSpec {
    pub fn parse(s: &str) -> Result<NodeSpec, String> {
        match s.split_once(':') {
            Some(("lab", name)) if !name.is_empty() => Ok(NodeSpec::Lab {
                name: name.to_string(),
            }),
            Some(("region", region)) if !region.is_empty() => Ok(NodeSpec::Region {
                region: region.to_string(),
            }),
            _ => Err(format!(
                "node `{s}`: expected `lab:NAME` (a server of the local lab, e.g. lab:pg-primary) or `region:NAME` (the node the environment declares in regions.NAME.node)"
            )),
        }
    }
}

impl std::fmt::Display for NodeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeSpec::Lab { name } => write!(f, "lab:{name}"),
            NodeSpec::Region { region } => write!(f, "region:{region}"),
        }
    }
}

/// Reads a node field (a string, or a deferred `${...}`).
pub fn node_field(ctx: &mut Ctx<'_>, r: &mut MapReader<'_>, key: &'static str) -> Option<NodeSpec> {
    let node = r.req(ctx, key)?;
    if ctx.deferred(node) {
        return None;
    }
    let s = ctx.string(node, key)?;
    match NodeSpec::parse(&s) {
        Ok(n) => Some(n),
        Err(e) => {
            ctx.error(
                "E-NODE",
                node,
                e,
                Some("name a lab server (lab:pg-primary) or a region whose environment entry has a `node:` (region:primary)".into()),
            );
            None
        }
    }
}

/// A node opened for an action: where its data lives and how to start it.
#[derive(Debug, Clone)]
pub struct Node {
    pub spec: NodeSpec,
    control: Control,
    pub data_dir: PathBuf,
}

/// Who starts and stops the node's server.
#[derive(Debug, Clone)]
enum Control {
    /// The lab supervisor's endpoint, and the server's name there.
    Lab {
        url: String,
        name: String,
    },
    PgCtl(super::pgctl::PgCtl),
}

/// `pg_controldata`'s fields the actions decide on.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ControlData {
    pub system_identifier: String,
    /// `shut down`, `shut down in recovery`, `in production`, ...
    pub state: String,
    pub checkpoint_lsn: Option<Lsn>,
    pub checkpoint_timeline: Option<u32>,
    pub min_recovery_end_lsn: Option<Lsn>,
    pub min_recovery_end_timeline: Option<u32>,
    /// `Bytes per WAL segment` (16 MiB unless initdb chose otherwise).
    pub wal_segment_bytes: Option<u64>,
}

fn unreachable(node: &str, e: impl std::fmt::Display) -> ActionError {
    ActionError::failed_hint(
        format!("node {node} cannot be controlled: {e}"),
        "is the lab up (`drctl lab status`)?",
    )
}

impl Node {
    pub async fn open(spec: &NodeSpec, ctx: &StepContext) -> Result<Node, ActionError> {
        Self::open_in(spec, ctx.env()?).await
    }

    /// The node as the environment declares it.
    pub async fn open_in(
        spec: &NodeSpec,
        env: &crate::environment::Environment,
    ) -> Result<Node, ActionError> {
        let name = match spec {
            NodeSpec::Lab { name } => name,
            NodeSpec::Region { region } => {
                let v = env.component(region, "node").ok_or_else(|| ActionError::Config {
                    message: format!("node {spec}: region `{region}` of environment `{}` declares no `node:`", env.name),
                    hint: format!("add regions.{region}.node: {{kind: pg_ctl, data_dir: ...}}"),
                })?;
                let c = super::pgctl::PgCtl::from_value(region, v)?;
                return Ok(Node {
                    spec: spec.clone(),
                    data_dir: c.data_dir.clone(),
                    control: Control::PgCtl(c),
                });
            }
        };
        let control = env.lab_control.clone().ok_or_else(|| ActionError::Config {
            message: format!("node {spec} is a lab server but the environment is not a lab"),
            hint: "use the environment file `drctl lab up` wrote (it has a `lab:` section)".into(),
        })?;
        let info = crate::lab::control(&control, "GET", &format!("/node/info?name={name}"))
            .await
            .map_err(|e| unreachable(&spec.to_string(), crate::diag::error_chain(&e)))?;
        let data_dir = info["data_dir"]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| unreachable(&spec.to_string(), "the lab named no data directory"))?;
        Ok(Node {
            spec: spec.clone(),
            control: Control::Lab {
                url: control,
                name: name.clone(),
            },
            data_dir,
        })
    }

    async fn call(&self, route: &str) -> Result<Value, ActionError> {
        let Control::Lab { url, name } = &self.control else {
            return Err(ActionError::failed(format!(
                "node {}: not a lab node",
                self.spec
            )));
        };
        crate::lab::control(url, "POST", &format!("{route}?name={name}"))
            .await
            .map_err(|e| {
                ActionError::failed(format!(
                    "node {}: {}",
                    self.spec,
                    crate::diag::error_chain(&e)
                ))
            })
    }

    /// Whether the node's server (or its isolated twin) runs now.
    pub async fn running(&self) -> Result<(bool, bool), ActionError> {
        let (url, name) = match &self.control {
            Control::PgCtl(c) => return c.running(self.owner()?).await,
            Control::Lab { url, name } => (url, name),
        };
        let v = crate::lab::control(url, "GET", &format!("/node/info?name={name}"))
            .await
            .map_err(|e| unreachable(&self.spec.to_string(), crate::diag::error_chain(&e)))?;
        Ok((v["running"] == true, v["isolated_running"] == true))
    }

    /// Fast shutdown (clients cut, a shutdown checkpoint written); returns
    /// whether it was running.
    pub async fn stop(&self) -> Result<bool, ActionError> {
        if let Control::PgCtl(c) = &self.control {
            return c.stop(self.owner()?).await;
        }
        Ok(self.call("/node/stop").await?["was_running"] == true)
    }

    /// Starts the server with its own configuration.
    pub async fn start(&self) -> Result<(), ActionError> {
        if let Control::PgCtl(c) = &self.control {
            return c.start(self.owner()?).await;
        }
        self.call("/node/start").await.map(|_| ())
    }

    /// Starts it isolated (a read-only standby without upstream on a fresh
    /// port, admitting only `user`, the lab: its superuser); returns the port.
    pub async fn start_isolated(&self, user: &str) -> Result<u16, ActionError> {
        if let Control::PgCtl(c) = &self.control {
            return c
                .start_isolated(self.owner()?, user, |p, t, m| self.write_owned(p, t, m))
                .await;
        }
        let v = self.call("/node/isolated/start").await?;
        v["port"]
            .as_u64()
            .map(|p| p as u16)
            .ok_or_else(|| ActionError::failed(format!("node {}: no isolated port", self.spec)))
    }

    pub async fn stop_isolated(&self) -> Result<(), ActionError> {
        if let Control::PgCtl(c) = &self.control {
            return c.stop_isolated(self.owner()?).await;
        }
        self.call("/node/isolated/stop").await.map(|_| ())
    }

    /// The data directory's owner: the tools run as it (PostgreSQL refuses
    /// root, and files they create must stay the server's).
    fn owner(&self) -> Result<(u32, u32), ActionError> {
        let m = std::fs::metadata(&self.data_dir).map_err(|e| {
            ActionError::failed(format!(
                "node {}: {}: {e}",
                self.spec,
                self.data_dir.display()
            ))
        })?;
        Ok((m.uid(), m.gid()))
    }

    /// Writes a file the server owns (mode `mode`).
    pub fn write_owned(&self, path: &Path, text: &str, mode: u32) -> Result<(), ActionError> {
        use std::os::unix::fs::PermissionsExt;
        let (uid, gid) = self.owner()?;
        let fail = |e: std::io::Error| {
            ActionError::failed(format!("node {}: write {}: {e}", self.spec, path.display()))
        };
        std::fs::write(path, text).map_err(fail)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
        // SAFETY-free: chown as root to the data directory's owner; a
        // non-root drctl already is the owner (chown to oneself is a no-op).
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(fail)?;
        Ok(())
    }

    /// Runs a server tool from PostgreSQL's bindir as the data directory's
    /// owner, with no libpq variables of drctl's environment but `env`.
    pub async fn tool(
        &self,
        bin: &str,
        args: &[OsString],
        env: &[(&str, &Path)],
        limit: Duration,
    ) -> Result<String, ActionError> {
        let dir = match &self.control {
            Control::PgCtl(c) => c.bin_dir()?,
            Control::Lab { .. } => {
                crate::lab::pg::bindir().map_err(|e| ActionError::failed(e.to_string()))?
            }
        };
        let (uid, gid) = self.owner()?;
        let mut c = tokio::process::Command::new(dir.join(bin));
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            c.uid(uid).gid(gid);
        }
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("PG")) {
                c.env_remove(&k);
            }
        }
        // HOME of the tool's user, not drctl's (libpq reads ~/.postgresql).
        c.env("HOME", self.data_dir.parent().unwrap_or(Path::new("/")));
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args)
            .current_dir(self.data_dir.parent().unwrap_or(Path::new("/")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(limit, c.output())
            .await
            .map_err(|_| ActionError::failed(format!("{bin} timed out after {limit:?}")))?
            .map_err(|e| ActionError::failed(format!("{bin}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(ActionError::failed(format!(
                "{bin} failed ({}): {}",
                out.status,
                err.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
            )));
        }
        Ok(stdout + &String::from_utf8_lossy(&out.stderr))
    }

    /// `pg_controldata` of the data directory: the quick way to read the
    /// final checkpoint of a stopped server (`pg_waldump` can stall).
    pub async fn controldata(&self) -> Result<ControlData, ActionError> {
        let out = self
            .tool(
                "pg_controldata",
                &[self.data_dir.clone().into_os_string()],
                &[],
                Duration::from_secs(10),
            )
            .await?;
        parse_controldata(&out).ok_or_else(|| {
            ActionError::failed(format!(
                "node {}: pg_controldata output not understood",
                self.spec
            ))
        })
    }
}

pub fn parse_controldata(text: &str) -> Option<ControlData> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    Some(ControlData {
        system_identifier: field("Database system identifier:")?,
        state: field("Database cluster state:")?,
        checkpoint_lsn: field("Latest checkpoint location:").and_then(|v| Lsn::parse(&v)),
        checkpoint_timeline: field("Latest checkpoint's TimeLineID:").and_then(|v| v.parse().ok()),
        min_recovery_end_lsn: field("Minimum recovery ending location:")
            .and_then(|v| Lsn::parse(&v)),
        min_recovery_end_timeline: field("Min recovery ending loc's timeline:")
            .and_then(|v| v.parse().ok()),
        wal_segment_bytes: field("Bytes per WAL segment:").and_then(|v| v.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_parse() {
        assert_eq!(
            NodeSpec::parse("lab:pg-dr"),
            Ok(NodeSpec::Lab {
                name: "pg-dr".into()
            })
        );
        assert!(NodeSpec::parse("lab:").is_err());
        assert_eq!(
            NodeSpec::parse("region:primary"),
            Ok(NodeSpec::Region {
                region: "primary".into()
            })
        );
        assert!(NodeSpec::parse("region:").is_err());
        assert!(NodeSpec::parse("/var/lib/postgresql").is_err());
    }

    #[test]
    fn controldata_fields() {
        let t = "pg_control version number:            1300\nDatabase system identifier:           7442\nDatabase cluster state:               shut down\nLatest checkpoint location:           0/3000060\nLatest checkpoint's TimeLineID:       2\nMinimum recovery ending location:     0/0\nMin recovery ending loc's timeline:   0\nBytes per WAL segment:                16777216\n";
        let c = parse_controldata(t).expect("parses");
        assert_eq!(c.system_identifier, "7442");
        assert_eq!(c.state, "shut down");
        assert_eq!(c.checkpoint_lsn, Lsn::parse("0/3000060"));
        assert_eq!(c.checkpoint_timeline, Some(2));
        assert_eq!(c.wal_segment_bytes, Some(16 * 1024 * 1024));
        assert!(parse_controldata("nothing").is_none());
    }
}
