//! The supervisor's control endpoint on loopback: `drctl lab break|down`
//! and drills ask it to break the primary, report roles, restore the
//! initial state, point the heartbeat at a new primary, or measure the
//! truth. Separate from the lifecycle code (bring-up, reaping, shutdown)
//! because each request is one operation on the running lab.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::super::http::{json, Handler};
use super::super::pg;
use super::super::truth::{self, Broken};
use super::{refresh, save, Lab, LabState};
use crate::postgres::heartbeat::HeartbeatStatus;

pub(super) fn control_handler(lab: Arc<Lab>) -> Handler {
    Arc::new(move |method, path, _body| {
        let lab = lab.clone();
        Box::pin(async move {
            match (method.as_str(), path.split('?').next().unwrap_or("")) {
                ("GET", "/status") => {
                    // Fresh, not the last tick's: right after a break (or a
                    // drill) the killed primary must not be shown up.
                    let mut st = lab.state.lock().await;
                    refresh(&lab, &mut st).await;
                    save(&lab.dir, &st);
                    json(200, serde_json::to_value(&*st).unwrap_or(Value::Null))
                }
                ("POST", "/break/primary") => break_primary(&lab).await,
                ("POST", "/lag/primary") => {
                    let st = lab.state.lock().await.clone();
                    match pg::pause_walsender(st.ports["pg-primary"], &st.spec, true).await {
                        Ok(pids) => json(200, json!({"paused_walsenders": pids})),
                        Err(e) => json(500, json!({"error": e.to_string()})),
                    }
                }
                ("GET", "/roles") => json(200, roles(&lab).await),
                ("POST", "/restore") => restore(&lab).await,
                ("POST", "/app/primary/start") => match start_app_primary(&lab).await {
                    Ok(started) => json(200, json!({"started": started})),
                    Err(e) => json(500, json!({"error": e})),
                },
                (m, route) if route.starts_with("/node/") => {
                    let Some(name) = super::super::nodes::query_name(&path) else {
                        return json(400, json!({"error": "name= is required"}));
                    };
                    let st = lab.state.lock().await.clone();
                    match (m, route) {
                        ("GET", "/node/info") => {
                            super::super::nodes::info(&st, &lab.servers, &name).await
                        }
                        ("POST", "/node/stop") => {
                            super::super::nodes::stop(&lab.servers, &name).await
                        }
                        ("POST", "/node/start") => {
                            super::super::nodes::start(&st, &lab.servers, &name).await
                        }
                        ("POST", "/node/isolated/start") => {
                            super::super::nodes::start_isolated(&st, &lab.servers, &name).await
                        }
                        ("POST", "/node/isolated/stop") => {
                            super::super::nodes::stop_isolated(&lab.servers, &name).await
                        }
                        ("POST", "/node/heartbeat") => follow_heartbeat(&lab, &st, &name).await,
                        _ => json(404, json!({"error": "unknown control route"})),
                    }
                }
                ("POST", "/truth") => {
                    // Its own task: a drill that disconnects or dies does
                    // not cancel it half-way (the isolated server is always
                    // stopped by the task that started it).
                    let l = lab.clone();
                    match tokio::spawn(async move { measure_truth(&l).await }).await {
                        Ok(r) => r,
                        Err(e) => json(500, json!({"error": format!("truth task: {e}")})),
                    }
                }
                ("POST", "/stop") => {
                    lab.stop.notify_one();
                    json(200, json!({"stopping": true}))
                }
                _ => json(404, json!({"error": "unknown control route"})),
            }
        })
    })
}

/// Points the heartbeat writer at `name`, the server a switchover made
/// primary: the lab's heartbeat follows the active region (ids continue
/// after the highest one the writer knows of).
async fn follow_heartbeat(lab: &Lab, st: &LabState, name: &str) -> super::super::http::Reply {
    let (Some(port), true) = (
        st.ports.get(name).copied(),
        matches!(name, "pg-primary" | "pg-dr"),
    ) else {
        return json(404, json!({"error": format!("no lab server `{name}`")}));
    };
    let Some(store) = lab.store.lock().await.clone() else {
        return json(409, json!({"error": "the heartbeat has no store yet"}));
    };
    let _ = stop_heartbeat(lab).await;
    *lab.heartbeat.lock().await = Some(super::super::nodes::start_heartbeat(port, &st.spec, store));
    json(200, json!({"heartbeat": name, "port": port}))
}

/// Stops the heartbeat writer and returns its last word: `None` when it
/// was not running or did not stop in time (then a write may have been in
/// flight, and the writer's acknowledgements are not a reference).
async fn stop_heartbeat(lab: &Lab) -> Option<HeartbeatStatus> {
    let (mut h, stop) = lab.heartbeat.lock().await.take()?;
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(3), &mut h).await {
        Ok(Ok(status)) => Some(status),
        _ => {
            h.abort();
            None
        }
    }
}

/// The disaster: stop the heartbeat writer (so the truth is not the
/// writer's own doing: nothing writes heartbeats after this), then kill -9
/// the primary's postmaster with all its backends, and stop the primary
/// region's app.
async fn break_primary(lab: &Lab) -> super::super::http::Reply {
    let mut broken = lab.broken.lock().await;
    if broken.is_some() {
        return json(
            409,
            json!({"error": "the primary was already broken: `drctl lab down && drctl lab up` resets the lab"}),
        );
    }
    let writer = stop_heartbeat(lab).await;
    let failed_at_ms = crate::journal::now_ms();
    if let Some(s) = lab.servers.lock().await.get_mut("pg-primary") {
        s.kill9().await;
    }
    // From the kill on, any start of the old primary's data (the truth's,
    // or anyone's by hand) comes up a read-only standby.
    let data_root = lab.state.lock().await.data_root.clone();
    let marked = truth::mark_standby(&data_root.join("primary"));
    if let Some(h) = lab.apps.lock().await.remove("app-primary") {
        h.abort();
    }
    let reply = json!({
        "broken": "primary",
        "failed_at_ms": failed_at_ms,
        "heartbeat_last_acked_id": writer.as_ref().and_then(|w| w.last_acked_id),
        "heartbeat_last_acked_at_ms": writer.as_ref().and_then(|w| w.last_acked_at_ms),
        "old_primary_marked_standby": marked.is_ok(),
        "mark_error": marked.err().map(|e| e.to_string()),
    });
    *broken = Some(Broken {
        failed_at_ms,
        writer,
    });
    json(200, reply)
}

/// Each Postgres server's role as the server itself says it (a drill
/// refuses a lab that is not in its initial state).
async fn roles(lab: &Lab) -> Value {
    let st = lab.state.lock().await.clone();
    let mut out = Vec::new();
    for name in ["pg-primary", "pg-dr"] {
        let server = pg::lab_server(st.ports[name], &st.spec.superuser, &st.spec);
        let limit = Duration::from_secs(3);
        let status = async {
            let c = server.connect(limit).await.map_err(|e| e.to_string())?;
            crate::postgres::ops::status(&c, &server.addr(), limit)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        out.push(match status {
            Ok(s) => json!({"name": name, "addr": server.addr(), "reachable": true, "in_recovery": s.is_standby(), "receiver_status": s.receiver_status, "timeline": s.timeline}),
            Err(e) => json!({"name": name, "addr": server.addr(), "reachable": false, "error": e}),
        });
    }
    let broken = lab.broken.lock().await.is_some();
    json!({"servers": out, "primary_broken": broken})
}

/// Starts the primary region's demo app again (a break stopped it); it
/// answers from whatever role its server has. Returns whether it started.
async fn start_app_primary(lab: &Lab) -> Result<bool, String> {
    let st = lab.state.lock().await.clone();
    let mut apps = lab.apps.lock().await;
    if apps.get("app-primary").is_some_and(|h| !h.is_finished()) {
        return Ok(false);
    }
    let l = tokio::net::TcpListener::bind(("127.0.0.1", st.ports["app"]))
        .await
        .map_err(|e| format!("bind app-primary: {e}"))?;
    let db = pg::lab_server(st.ports["pg-primary"], &st.spec.app_user, &st.spec);
    apps.insert(
        "app-primary".into(),
        tokio::spawn(super::super::app::run(l, "primary".into(), db)),
    );
    Ok(true)
}

/// After a failback: once the servers are back in the initial topology
/// (pg-primary a primary, pg-dr streaming from it), the lab forgets the
/// break and restarts what the break stopped (the primary region's app and
/// the heartbeat writer), so the next drill passes its initial-state check.
/// Refused (409, nothing changed) while the topology is not initial.
async fn restore(lab: &Lab) -> super::super::http::Reply {
    let r = roles(lab).await;
    if let Err(e) = super::super::nodes::initial(&r) {
        return json(
            409,
            json!({"error": format!("the lab is not back in its initial topology: {e}")}),
        );
    }
    let _one = lab.truth_lock.lock().await;
    let was_broken = lab.broken.lock().await.take().is_some();
    let st = lab.state.lock().await.clone();
    let app_restarted = match start_app_primary(lab).await {
        Ok(b) => b,
        Err(e) => return json(500, json!({"error": e})),
    };
    let mut hb = lab.heartbeat.lock().await;
    let mut heartbeat_restarted = false;
    if hb.as_ref().is_none_or(|(h, _)| h.is_finished()) {
        if let Some(store) = lab.store.lock().await.clone() {
            *hb = Some(super::super::nodes::start_heartbeat(
                st.ports["pg-primary"],
                &st.spec,
                store,
            ));
            heartbeat_restarted = true;
        }
    }
    json(
        200,
        json!({"restored": true, "was_broken": was_broken, "app_restarted": app_restarted, "heartbeat_restarted": heartbeat_restarted}),
    )
}

/// The truth (see [`truth`]): restarts the killed old primary isolated,
/// reads what it holds beyond the promoted server, and stops it again, so
/// the lab stays in its failed-over state and the old primary is never
/// writable.
async fn measure_truth(lab: &Lab) -> super::super::http::Reply {
    let _one = lab.truth_lock.lock().await;
    let Some(broken) = lab.broken.lock().await.clone() else {
        return json(
            409,
            json!({"error": "the primary was not broken by this lab (`/break/primary`): there is no truth to measure"}),
        );
    };
    let st = lab.state.lock().await.clone();
    {
        let mut servers = lab.servers.lock().await;
        let alive = servers
            .get_mut("pg-primary")
            .is_some_and(|s| matches!(s.child.try_wait(), Ok(None)));
        if alive {
            return json(
                409,
                json!({"error": "the old primary is running: refusing to start a second server on its data"}),
            );
        }
    }
    let surv = match truth::survivor(&st).await {
        Ok(s) => s,
        Err(e) => return json(500, json!({"error": format!("promoted server: {e}")})),
    };
    if !surv.promoted {
        return json(
            409,
            json!({"error": "pg-dr was not promoted (it is still a standby): no failover happened, so there is no loss to measure; the old primary stays down"}),
        );
    }
    let server = match truth::start_isolated(&st).await {
        Ok(s) => s,
        Err(e) => {
            return json(
                500,
                json!({"error": format!("restart old primary isolated: {e}")}),
            )
        }
    };
    let port = server.port;
    lab.servers
        .lock()
        .await
        .insert(truth::ISOLATED.into(), server);
    let after = surv.newest.map(|b| b.id).unwrap_or(0);
    let read = truth::read_isolated(&st, port, after).await;
    if let Some(mut s) = lab.servers.lock().await.remove(truth::ISOLATED) {
        s.stop(Duration::from_secs(10)).await;
    }
    match read {
        Ok((count, last, end)) => json(200, truth::truth_value(&broken, &surv, count, last, end)),
        Err(e) => json(500, json!({"error": format!("old primary: {e}")})),
    }
}
