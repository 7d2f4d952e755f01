//! A real PowerDNS Authoritative server for the lab: sqlite3 backend, DNS
//! and HTTP API on loopback, run as the `pdns` user when drctl is root.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use super::pg::LabError;

pub const ZONE: &str = "lab.example.";
pub const APP_NAME: &str = "app.lab.example.";

fn io(what: &str) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        what: what.to_string(),
        source,
    }
}

fn pdns_user() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("pdns").ok()?;
    // SAFETY: getpwnam returns static storage or null; we copy two integers.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Starts pdns_server in `dir` and creates the lab zone with `app` pointing
/// at `app_ip`. The caller owns (and must reap) the returned child.
pub async fn start(
    dir: &Path,
    dns_port: u16,
    api_port: u16,
    api_key: &str,
    app_ip: &str,
    log: &Path,
) -> Result<tokio::process::Child, LabError> {
    std::fs::create_dir_all(dir).map_err(io("create pdns dir"))?;
    let db = dir.join("pdns.sqlite3");
    let schema = std::fs::read_to_string("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")
        .map_err(|_| LabError::Other("PowerDNS sqlite schema not found: apt-get install pdns-server pdns-backend-sqlite3 sqlite3".into()))?;
    let mut sq = tokio::process::Command::new("sqlite3");
    sq.arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = sq.spawn().map_err(|e| LabError::Io {
        what: "run sqlite3 (apt-get install sqlite3)".into(),
        source: e,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(schema.as_bytes())
            .await
            .map_err(io("write schema"))?;
    }
    let out = child.wait_with_output().await.map_err(io("sqlite3"))?;
    if !out.status.success() {
        return Err(LabError::Command {
            what: "sqlite3 schema".into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let conf = format!(
        "launch=gsqlite3\ngsqlite3-database={}\nlocal-address=127.0.0.1\nlocal-port={dns_port}\napi=yes\napi-key={api_key}\n\
webserver=yes\nwebserver-address=127.0.0.1\nwebserver-port={api_port}\nwebserver-allow-from=127.0.0.0/8\nsocket-dir={}\n\
default-soa-content=ns1.{ZONE} hostmaster.{ZONE} 0 10800 3600 604800 3600\ndaemon=no\nguardian=no\ndisable-syslog=yes\nloglevel=4\n",
        db.display(),
        dir.display()
    );
    std::fs::write(dir.join("pdns.conf"), conf).map_err(io("write pdns.conf"))?;
    let who = pdns_user();
    if let Some((u, g)) = who {
        for p in [dir.to_path_buf(), db.clone(), dir.join("pdns.conf")] {
            let _ = std::os::unix::fs::chown(&p, Some(u), Some(g));
        }
    }
    let logf = std::fs::File::create(log).map_err(io("pdns log"))?;
    let log2 = logf.try_clone().map_err(io("pdns log"))?;
    let mut c = tokio::process::Command::new("pdns_server");
    c.arg(format!("--config-dir={}", dir.display()))
        .stdin(Stdio::null())
        .stdout(logf)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(true);
    if let Some((u, g)) = who {
        c.uid(u).gid(g);
    }
    let mut child = c.spawn().map_err(|e| LabError::Io {
        what: "start pdns_server (apt-get install pdns-server pdns-backend-sqlite3)".into(),
        source: e,
    })?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| LabError::Other(e.to_string()))?;
    let base = format!("http://127.0.0.1:{api_port}/api/v1/servers/localhost");
    // Generous: on a loaded 2-core machine (several labs at once, as in the
    // test suite) PowerDNS has taken over 20 s to open its API.
    const API_WAIT: Duration = Duration::from_secs(60);
    let deadline = Instant::now() + API_WAIT;
    loop {
        if let Ok(r) = client.get(&base).header("X-API-Key", api_key).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(LabError::Command {
                what: "pdns_server".into(),
                detail: format!("exited with {st}; see {}", log.display()),
            });
        }
        if Instant::now() > deadline {
            return Err(LabError::Command {
                what: "pdns_server".into(),
                detail: format!("API not up after {}s", API_WAIT.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let zone = json!({
        "name": ZONE, "kind": "Native", "nameservers": [format!("ns1.{ZONE}")],
        "rrsets": [
            {"name": APP_NAME, "type": "A", "ttl": 5, "records": [{"content": app_ip, "disabled": false}]},
            {"name": format!("ns1.{ZONE}"), "type": "A", "ttl": 3600, "records": [{"content": "127.0.0.1", "disabled": false}]},
        ]
    });
    let r = client
        .post(format!("{base}/zones"))
        .header("X-API-Key", api_key)
        .json(&zone)
        .send()
        .await
        .map_err(|e| LabError::Other(format!("create zone: {e}")))?;
    if !r.status().is_success() {
        return Err(LabError::Command {
            what: "create lab zone".into(),
            detail: r.text().await.unwrap_or_default(),
        });
    }
    Ok(child)
}
