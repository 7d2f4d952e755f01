//! The lab's node control routes: stop, start and isolated start of one of
//! its PostgreSQL servers by name, for the `postgres.switchover`,
//! `postgres.rewind` and `postgres.rejoin` actions (`lab:NAME` nodes). The
//! supervisor stays the parent of every postmaster (it reaps them), so
//! actions ask it instead of starting servers themselves; the actions do
//! everything else (pg_rewind, pg_controldata, configuration) on the data
//! directory, which this route names.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::http::{json, Reply};
use super::pg::{self, Server};
use super::supervisor::LabState;

/// The heartbeat writer against the server on `port` (the initial
/// primary, or the one a switchover promoted).
pub fn start_heartbeat(
    port: u16,
    spec: &pg::ClusterSpec,
    store: std::sync::Arc<dyn crate::store::Store>,
) -> super::supervisor::Writer {
    let hb_server = pg::lab_server(port, &spec.app_user, spec);
    let (stop_hb, stopped) = tokio::sync::oneshot::channel::<()>();
    let hb = tokio::spawn(crate::postgres::heartbeat::run_writer(
        hb_server,
        super::supervisor::HEARTBEAT_INTERVAL,
        store,
        super::supervisor::ENV_NAME.to_string(),
        async move {
            let _ = stopped.await;
        },
    ));
    (hb, stop_hb)
}

/// `name=` of a route's query string.
pub fn query_name(path: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix("name="))
        .map(str::to_string)
}

/// The data directory of a lab server (`pg-primary`, `pg-dr`).
fn data_of(st: &LabState, name: &str) -> Option<std::path::PathBuf> {
    match name {
        "pg-primary" => Some(st.data_root.join("primary")),
        "pg-dr" => Some(st.data_root.join("dr")),
        _ => None,
    }
}

fn isolated_name(name: &str) -> String {
    format!("{name}-isolated")
}

fn unknown(name: &str) -> Reply {
    json(
        404,
        json!({"error": format!("no lab server `{name}` (pg-primary or pg-dr)")}),
    )
}

fn running(servers: &mut HashMap<String, Server>, name: &str) -> bool {
    servers
        .get_mut(name)
        .is_some_and(|s| matches!(s.child.try_wait(), Ok(None)))
}

/// What an action needs to act on the node's files.
pub async fn info(st: &LabState, servers: &Mutex<HashMap<String, Server>>, name: &str) -> Reply {
    let Some(data) = data_of(st, name) else {
        return unknown(name);
    };
    let mut servers = servers.lock().await;
    let up = running(&mut servers, name);
    let isolated = running(&mut servers, &isolated_name(name));
    json(
        200,
        json!({"name": name, "data_dir": data, "port": st.ports.get(name), "running": up, "isolated_running": isolated}),
    )
}

/// Fast shutdown of the server (and of its isolated twin, if any).
pub async fn stop(servers: &Mutex<HashMap<String, Server>>, name: &str) -> Reply {
    let mut servers = servers.lock().await;
    let mut was_running = false;
    for n in [name.to_string(), isolated_name(name)] {
        if let Some(mut s) = servers.remove(&n) {
            if matches!(s.child.try_wait(), Ok(None)) {
                was_running = true;
                s.stop(Duration::from_secs(60)).await;
            }
        }
    }
    json(200, json!({"was_running": was_running}))
}

/// Starts the server on its own data directory, port and configuration.
pub async fn start(st: &LabState, servers: &Mutex<HashMap<String, Server>>, name: &str) -> Reply {
    let Some(data) = data_of(st, name) else {
        return unknown(name);
    };
    let mut servers = servers.lock().await;
    if running(&mut servers, name) {
        return json(200, json!({"already_running": true}));
    }
    if running(&mut servers, &isolated_name(name)) {
        return json(
            409,
            json!({"error": format!("{name} runs isolated: stop it first")}),
        );
    }
    let port = st.ports.get(name).copied().unwrap_or(0);
    let log = st.dir.join(format!("logs/{name}.log"));
    match pg::start(name, &data, port, &log).await {
        Ok(s) => {
            servers.insert(name.to_string(), s);
            json(200, json!({"already_running": false, "port": port}))
        }
        Err(e) => json(500, json!({"error": e.to_string()})),
    }
}

/// Starts the server isolated: a standby without upstream (it replays its
/// own WAL and writes nothing), on a fresh port, admitting only the lab's
/// superuser: what the old primary holds can be read before it is
/// rewound, and no client of the region reaches it.
pub async fn start_isolated(
    st: &LabState,
    servers: &Mutex<HashMap<String, Server>>,
    name: &str,
) -> Reply {
    let Some(data) = data_of(st, name) else {
        return unknown(name);
    };
    let iso = isolated_name(name);
    let mut servers = servers.lock().await;
    if running(&mut servers, name) {
        return json(
            409,
            json!({"error": format!("{name} is running: refusing a second server on its data")}),
        );
    }
    if let Some(s) = servers.get_mut(&iso) {
        if matches!(s.child.try_wait(), Ok(None)) {
            return json(200, json!({"port": s.port, "already_running": true}));
        }
    }
    let started = super::truth::start_isolated_dir(st, &data, &iso).await;
    match started {
        Ok(s) => {
            let port = s.port;
            servers.insert(iso, s);
            json(200, json!({"port": port, "already_running": false}))
        }
        Err(e) => json(500, json!({"error": e.to_string()})),
    }
}

/// Stops the isolated twin only.
pub async fn stop_isolated(servers: &Mutex<HashMap<String, Server>>, name: &str) -> Reply {
    let mut servers = servers.lock().await;
    let mut was_running = false;
    if let Some(mut s) = servers.remove(&isolated_name(name)) {
        if matches!(s.child.try_wait(), Ok(None)) {
            was_running = true;
            s.stop(Duration::from_secs(60)).await;
        }
    }
    json(200, json!({"was_running": was_running}))
}

/// Whether the `/roles` answer shows the lab's initial topology.
pub fn initial(roles: &Value) -> Result<(), String> {
    let servers = roles["servers"].as_array().cloned().unwrap_or_default();
    let find = |n: &str| servers.iter().find(|s| s["name"] == n).cloned();
    let (Some(p), Some(d)) = (find("pg-primary"), find("pg-dr")) else {
        return Err("the lab's servers are not listed".into());
    };
    if !(p["reachable"] == true && p["in_recovery"] == false) {
        return Err("pg-primary is not a reachable primary".into());
    }
    if !(d["reachable"] == true && d["in_recovery"] == true && d["receiver_status"] == "streaming")
    {
        return Err("pg-dr is not a standby streaming from pg-primary".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_query_string() {
        assert_eq!(
            query_name("/node/stop?name=pg-dr").as_deref(),
            Some("pg-dr")
        );
        assert_eq!(
            query_name("/node/stop?x=1&name=pg-primary").as_deref(),
            Some("pg-primary")
        );
        assert_eq!(query_name("/node/stop"), None);
    }

    #[test]
    fn the_initial_topology_is_recognised() {
        let ok = json!({"servers": [
            {"name": "pg-primary", "reachable": true, "in_recovery": false},
            {"name": "pg-dr", "reachable": true, "in_recovery": true, "receiver_status": "streaming"}]});
        assert!(initial(&ok).is_ok());
        let swapped = json!({"servers": [
            {"name": "pg-primary", "reachable": true, "in_recovery": true, "receiver_status": "streaming"},
            {"name": "pg-dr", "reachable": true, "in_recovery": false}]});
        assert!(initial(&swapped).is_err());
    }
}
