//! The HTTP client against a canned gateway on 127.0.0.1 (std threads, bounded
//! number of connections): login/session header, routes, timeouts, status codes,
//! bad JSON, and the end-to-end DR check.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::immudb::client::ImmudbClient;
use crate::immudb::error::ClientError;
use crate::immudb::tests::gateway_examples::{examples, pem};
use crate::immudb::verdict::{TrustedState, Verdict};

/// Reads one HTTP/1.1 request; returns (request line, headers, body).
fn read_request(s: &mut TcpStream) -> Option<(String, String, String)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < pos + 4 + len {
                let n = s.read(&mut tmp).ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let body = String::from_utf8_lossy(&buf[pos + 4..]).to_string();
            let line = head.lines().next().unwrap_or("").to_string();
            return Some((line, head, body));
        }
    }
}

/// Serves up to `max_conns` connections with `route`, one request each.
fn serve(max_conns: usize, route: fn(&str, &str, &str) -> (u16, String, u64)) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming().take(max_conns) {
            let Ok(mut s) = conn else { continue };
            std::thread::spawn(move || {
                let Some((line, head, body)) = read_request(&mut s) else {
                    return;
                };
                let (status, resp, delay_ms) = route(&line, &head, &body);
                std::thread::sleep(Duration::from_millis(delay_ms));
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{resp}",
                    resp.len()
                );
            });
        }
    });
    format!("http://{addr}")
}

fn body(i: usize) -> String {
    serde_json::to_string(&examples()["examples"][i]["response_json"]).unwrap()
}

fn happy(line: &str, head: &str, req: &str) -> (u16, String, u64) {
    let authed = head.to_ascii_lowercase().contains("sessionid: s-123");
    if line.starts_with("POST /api/v2/authorization/session/open ") {
        // As the real gateway: a wrong login is a 500, an unknown database a 404.
        if !(req.contains("\"username\":\"immudb\"") && req.contains("\"password\":\"immudb\"")) {
            return (
                500,
                r#"{"error":"invalid user name or password","code":2,"message":"invalid user name or password"}"#.into(),
                0,
            );
        }
        if !req.contains("\"database\":\"defaultdb\"") {
            return (
                404,
                r#"{"error":"'x' does not exist","code":5,"message":"'x' does not exist"}"#.into(),
                0,
            );
        }
        return (200, r#"{"sessionID":"s-123","serverUUID":"u"}"#.into(), 0);
    }
    if !authed {
        return (
            401,
            r#"{"error":"no session","code":16,"message":"no session"}"#.into(),
            0,
        );
    }
    if line.starts_with("GET /api/db/state ") {
        return (200, body(0), 0);
    }
    if line.starts_with("GET /api/db/verifiable/tx/20?proveSinceTx=7&keepReferencesUnresolved=true")
    {
        return (200, body(1), 0);
    }
    if line.starts_with("POST /api/v2/authorization/session/close ") {
        return (200, "{}".into(), 0);
    }
    (
        404,
        r#"{"error":"Not Found","code":5,"message":"Not Found"}"#.into(),
        0,
    )
}

fn client(url: &str, ms: u64) -> ImmudbClient {
    ImmudbClient::new(
        url,
        "immudb",
        "immudb",
        "defaultdb",
        Duration::from_millis(ms),
    )
    .unwrap()
}

#[tokio::test]
async fn end_to_end_check_against_mock_gateway() {
    let url = serve(16, happy);
    let ex = examples();
    let t = &ex["examples"][1]["trusted_state"];
    let trusted = TrustedState {
        db: "defaultdb".into(),
        tx_id: t["txId"].as_u64().unwrap(),
        tx_hash: crate::immudb::hash::digest_from_hex("h", t["txHash_hex"].as_str().unwrap())
            .unwrap(),
        signature: None,
    };
    let mut c = client(&url, 3000);
    assert!(matches!(c.state().await, Err(ClientError::NotLoggedIn)));
    let (verdict, state) = c
        .check_against(std::slice::from_ref(&trusted), Some(&pem()))
        .await
        .unwrap();
    assert_eq!(
        verdict,
        Verdict::Ahead {
            from_tx: 7,
            to_tx: 20
        }
    );
    let next = TrustedState::from_state(&state).unwrap();
    assert_eq!(next.tx_id, 20);
    // Checking again from the new trusted state: same tx, no proof needed.
    let (verdict, _) = c
        .check_against(std::slice::from_ref(&next), Some(&pem()))
        .await
        .unwrap();
    assert_eq!(verdict, Verdict::Same { tx: 20 });
}

#[tokio::test]
async fn wrong_trusted_hash_fails_verification() {
    let url = serve(8, happy);
    let trusted = TrustedState {
        db: "defaultdb".into(),
        tx_id: 7,
        tx_hash: [9u8; 32],
        signature: None,
    };
    let r = client(&url, 3000)
        .check_against(std::slice::from_ref(&trusted), Some(&pem()))
        .await;
    assert!(matches!(r, Err(ClientError::Verify(_))), "{r:?}");
}

#[tokio::test]
async fn a_wrong_password_or_database_is_refused_and_never_falls_back() {
    let url = serve(8, happy);
    let mut c =
        ImmudbClient::new(&url, "immudb", "nope", "defaultdb", Duration::from_secs(3)).unwrap();
    let r = c.login().await;
    assert!(
        matches!(&r, Err(ClientError::Status { status: 500, message, .. }) if message == "invalid user name or password"),
        "{r:?}"
    );
    assert!(r.unwrap_err().is_unavailable());
    // immudb's own 404 (unknown database) is an answer: no legacy-login retry.
    let mut c =
        ImmudbClient::new(&url, "immudb", "immudb", "otherdb", Duration::from_secs(3)).unwrap();
    let r = c.login().await;
    assert!(
        matches!(&r, Err(ClientError::Status { status: 404, message, .. }) if message.contains("does not exist")),
        "{r:?}"
    );
}

#[tokio::test]
async fn timeouts_statuses_and_bad_json() {
    fn slow(_: &str, _: &str, _: &str) -> (u16, String, u64) {
        (200, r#"{"sessionID":"s-123"}"#.into(), 2000)
    }
    fn err500(_: &str, _: &str, _: &str) -> (u16, String, u64) {
        (
            500,
            r#"{"error":"boom","code":13,"message":"tx not found"}"#.into(),
            0,
        )
    }
    fn garbage(_: &str, _: &str, _: &str) -> (u16, String, u64) {
        (200, "{not json".into(), 0)
    }
    let start = std::time::Instant::now();
    let r = client(&serve(2, slow), 300).open_session().await;
    assert!(matches!(r, Err(ClientError::Timeout { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_millis(1500));

    let r = client(&serve(2, err500), 2000).open_session().await;
    match r {
        Err(ClientError::Status {
            status: 500,
            message,
            ..
        }) => assert_eq!(message, "tx not found"),
        other => panic!("{other:?}"),
    }
    let r = client(&serve(2, garbage), 2000).open_session().await;
    assert!(matches!(r, Err(ClientError::Decode { .. })), "{r:?}");

    // Nothing listening: a transport error, not a hang or panic.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let r = client(&dead, 1000).open_session().await;
    assert!(
        matches!(
            r,
            Err(ClientError::Transport { .. } | ClientError::Timeout { .. })
        ),
        "{r:?}"
    );

    assert!(ImmudbClient::new("ftp://x", "u", "p", "d", Duration::from_secs(1)).is_err());
    assert!(ImmudbClient::new("http://x", "u", "p", "d", Duration::ZERO).is_err());
}
