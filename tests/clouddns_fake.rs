//! A FAKE Google Cloud DNS API for tests (no Google service can run here).
//! It follows the real API's request and response shapes for what drctl
//! uses: the OAuth token endpoint (JWT bearer grant, RS256 signature checked
//! against the test key), `rrsets.list` filtered by name and type,
//! `changes.create` (deletions must match the existing rrset exactly, as the
//! real API requires, else 412), and `changes.get` (pending, then done).

use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};

pub struct FakeCloudDns {
    pub port: u16,
    pub rrsets: Arc<Mutex<Vec<Value>>>,
}

fn respond(s: &mut std::net::TcpStream, status: u16, body: &Value) {
    let b = body.to_string();
    let _ = s.write_all(format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}", b.len()).as_bytes());
}

fn read_request(s: &mut std::net::TcpStream) -> (String, String, String, String) {
    let t = drctl_tests::read_http_request(s);
    let (head, body) = t.split_once("\r\n\r\n").unwrap_or((&t, ""));
    let first = head.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (m, p) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let auth = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("authorization: ")
                .or(l.strip_prefix("Authorization: "))
        })
        .unwrap_or("")
        .to_string();
    (m, p, auth, body.to_string())
}

fn verify_jwt(jwt: &str, public_der: &[u8]) -> bool {
    let mut it = jwt.rsplitn(2, '.');
    let (Some(sig), Some(input)) = (it.next(), it.next()) else {
        return false;
    };
    let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_der,
    );
    key.verify(input.as_bytes(), &sig).is_ok()
}

impl FakeCloudDns {
    pub fn start(public_der: Vec<u8>, initial: Vec<Value>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let rrsets = Arc::new(Mutex::new(initial));
        let state = rrsets.clone();
        std::thread::spawn(move || {
            let mut polls = 0;
            for mut s in l.incoming().flatten() {
                let (method, path, auth, body) = read_request(&mut s);
                if path == "/token" {
                    let assertion = body
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("assertion="))
                        .unwrap_or("");
                    let ok = body.contains(
                        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
                    ) && verify_jwt(assertion, &public_der);
                    if ok {
                        respond(
                            &mut s,
                            200,
                            &json!({"access_token": "fake-token-123", "token_type": "Bearer", "expires_in": 3600}),
                        );
                    } else {
                        respond(&mut s, 400, &json!({"error": "invalid_grant"}));
                    }
                    continue;
                }
                if auth != "Bearer fake-token-123" {
                    respond(
                        &mut s,
                        401,
                        &json!({"error": {"code": 401, "message": "Request had invalid authentication credentials."}}),
                    );
                    continue;
                }
                let base = "/dns/v1/projects/proj/managedZones/zone";
                if method == "GET" && path.starts_with(&format!("{base}/rrsets")) {
                    let q = path.split('?').nth(1).unwrap_or("");
                    let get = |k: &str| {
                        q.split('&')
                            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                            .unwrap_or("")
                            .to_string()
                    };
                    let (name, ty) = (get("name"), get("type"));
                    let list: Vec<Value> = state
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|r| r["name"] == name.as_str() && r["type"] == ty.as_str())
                        .cloned()
                        .collect();
                    respond(
                        &mut s,
                        200,
                        &json!({"kind": "dns#resourceRecordSetsListResponse", "rrsets": list}),
                    );
                } else if method == "POST" && path == format!("{base}/changes") {
                    let change: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let mut st = state.lock().unwrap();
                    let strip = |v: &Value| json!({"name": v["name"], "type": v["type"], "ttl": v["ttl"], "rrdatas": v["rrdatas"]});
                    for d in change["deletions"].as_array().cloned().unwrap_or_default() {
                        match st.iter().position(|r| strip(r) == strip(&d)) {
                            Some(i) => {
                                st.remove(i);
                            }
                            None => {
                                respond(
                                    &mut s,
                                    412,
                                    &json!({"error": {"code": 412, "message": "conditionNotMet: deletion does not match the existing rrset"}}),
                                );
                                continue;
                            }
                        }
                    }
                    for a in change["additions"].as_array().cloned().unwrap_or_default() {
                        if st
                            .iter()
                            .any(|r| r["name"] == a["name"] && r["type"] == a["type"])
                        {
                            respond(
                                &mut s,
                                409,
                                &json!({"error": {"code": 409, "message": "alreadyExists"}}),
                            );
                            continue;
                        }
                        st.push(strip(&a));
                    }
                    polls = 0;
                    respond(
                        &mut s,
                        200,
                        &json!({"kind": "dns#change", "id": "7", "status": "pending", "additions": change["additions"], "deletions": change["deletions"]}),
                    );
                } else if method == "GET" && path == format!("{base}/changes/7") {
                    polls += 1;
                    respond(
                        &mut s,
                        200,
                        &json!({"kind": "dns#change", "id": "7", "status": if polls > 1 { "done" } else { "pending" }}),
                    );
                } else {
                    respond(
                        &mut s,
                        404,
                        &json!({"error": {"code": 404, "message": format!("no route {method} {path}")}}),
                    );
                }
            }
        });
        FakeCloudDns { port, rrsets }
    }
}
