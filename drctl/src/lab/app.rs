//! The lab's demo application, one per region. `/health` answers from its
//! region's Postgres: 200 only when that server is a writable primary, so
//! a smoke check against the DR app proves the failover, not just a port.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::http::{json, serve, Handler};
use crate::postgres::PgServer;

pub async fn run(listener: tokio::net::TcpListener, region: String, db: PgServer) {
    let db = Arc::new(db);
    let handler: Handler = Arc::new(move |_method, path, _body| {
        let (db, region) = (db.clone(), region.clone());
        Box::pin(async move {
            if path != "/health" && !path.starts_with("/health?") {
                return json(200, json!({"app": "drctl-lab-demo", "region": region}));
            }
            let limit = Duration::from_secs(1);
            match crate::postgres::ops::status_of(&db, limit).await {
                Ok(st) if !st.is_standby() && !st.read_only => json(
                    200,
                    json!({"status": "ok", "region": region, "role": "primary", "timeline": st.timeline}),
                ),
                Ok(st) => json(
                    503,
                    json!({"status": "not-writable", "region": region, "role": st.role, "read_only": st.read_only}),
                ),
                Err(e) => json(
                    503,
                    json!({"status": "down", "region": region, "error": e.to_string()}),
                ),
            }
        })
    });
    serve(listener, handler).await;
}
