//! A FAKE Google Cloud DNS API for tests (no Google service can run here).
//! It follows the real API's request and response shapes for what drctl
//! uses: the OAuth token endpoint (JWT bearer grant: RS256 signature checked
//! against the test key, and the claims Google checks: `iss` is the service
//! account, `scope` the Cloud DNS read-write scope, `aud` the token URI,
//! `iat`/`exp` current and at most an hour apart), `rrsets.list` filtered
//! by name and type, `changes.create` (atomic, as the real API: deletions
//! must match the existing rrsets exactly, else 412, additions must not
//! exist after the deletions, else 409; a refused change applies nothing
//! and gets exactly one response), and `changes.get` (pending, then done).

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

/// Why a JWT bearer assertion is refused, if it is: the signature, then
/// the claims Google's token endpoint checks.
fn jwt_problem(jwt: &str, public_der: &[u8], email: &str, aud: &str) -> Option<String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut it = jwt.rsplitn(2, '.');
    let (Some(sig), Some(input)) = (it.next(), it.next()) else {
        return Some("not a JWT".into());
    };
    let Ok(sig) = b64.decode(sig) else {
        return Some("signature is not base64url".into());
    };
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_der,
    );
    if key.verify(input.as_bytes(), &sig).is_err() {
        return Some("Invalid JWT Signature.".into());
    }
    let part = |i: usize| -> Option<Value> {
        let seg = input.split('.').nth(i)?;
        serde_json::from_slice(&b64.decode(seg).ok()?).ok()
    };
    let (Some(header), Some(claims)) = (part(0), part(1)) else {
        return Some("header or claims are not base64url JSON".into());
    };
    if header["alg"] != "RS256" {
        return Some(format!("alg {} is not RS256", header["alg"]));
    }
    if claims["iss"] != email {
        return Some(format!("iss {} is not the service account", claims["iss"]));
    }
    if claims["scope"] != "https://www.googleapis.com/auth/ndev.clouddns.readwrite" {
        return Some(format!(
            "scope {} does not grant Cloud DNS writes",
            claims["scope"]
        ));
    }
    if claims["aud"] != aud {
        return Some(format!("aud {} is not the token URI {aud}", claims["aud"]));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Some("iat and exp must be integers".into());
    };
    if iat > now + 60 || exp <= now || exp - iat > 3600 {
        return Some(format!(
            "Invalid JWT: iat {iat} / exp {exp} not valid at {now}"
        ));
    }
    None
}

/// Applies a `changes.create` body to `st` all or nothing, as the real API
/// does: the status and error to answer with when it is refused.
fn apply_change(st: &mut Vec<Value>, change: &Value) -> Result<(), (u16, Value)> {
    let strip = |v: &Value| json!({"name": v["name"], "type": v["type"], "ttl": v["ttl"], "rrdatas": v["rrdatas"]});
    let mut next = st.clone();
    for d in change["deletions"].as_array().cloned().unwrap_or_default() {
        match next.iter().position(|r| strip(r) == strip(&d)) {
            Some(i) => {
                next.remove(i);
            }
            None => {
                return Err((
                    412,
                    json!({"error": {"code": 412, "message": "conditionNotMet: deletion does not match the existing rrset"}}),
                ))
            }
        }
    }
    for a in change["additions"].as_array().cloned().unwrap_or_default() {
        if next
            .iter()
            .any(|r| r["name"] == a["name"] && r["type"] == a["type"])
        {
            return Err((
                409,
                json!({"error": {"code": 409, "message": "alreadyExists"}}),
            ));
        }
        next.push(strip(&a));
    }
    *st = next;
    Ok(())
}

impl FakeCloudDns {
    /// Serves the fake; `email` is the service account whose JWTs it
    /// accepts (signed by the key behind `public_der`).
    pub fn start(public_der: Vec<u8>, email: &str, initial: Vec<Value>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let email = email.to_string();
        let aud = format!("http://127.0.0.1:{port}/token");
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
                    let problem = if body.contains(
                        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
                    ) {
                        jwt_problem(assertion, &public_der, &email, &aud)
                    } else {
                        Some("unsupported grant_type".into())
                    };
                    if problem.is_none() {
                        respond(
                            &mut s,
                            200,
                            &json!({"access_token": "fake-token-123", "token_type": "Bearer", "expires_in": 3600}),
                        );
                    } else {
                        respond(
                            &mut s,
                            400,
                            &json!({"error": "invalid_grant", "error_description": problem}),
                        );
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
                    let applied = apply_change(&mut state.lock().unwrap(), &change);
                    match applied {
                        Ok(()) => {
                            polls = 0;
                            respond(
                                &mut s,
                                200,
                                &json!({"kind": "dns#change", "id": "7", "status": "pending", "additions": change["additions"], "deletions": change["deletions"]}),
                            );
                        }
                        Err((status, body)) => respond(&mut s, status, &body),
                    }
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

#[cfg(test)]
mod strictness {
    use super::*;

    fn rr(data: &str) -> Value {
        json!({"name": "app.test.example.", "type": "A", "ttl": 30, "rrdatas": [data]})
    }

    /// A change whose deletion does not match applies none of its
    /// additions, and a conflicting addition applies none of its deletions.
    #[test]
    fn a_refused_change_applies_nothing() {
        let mut st = vec![rr("10.0.0.1")];
        let stale = json!({"deletions": [rr("10.9.9.9")], "additions": [rr("10.1.0.1")]});
        assert_eq!(apply_change(&mut st, &stale).unwrap_err().0, 412);
        assert_eq!(st, vec![rr("10.0.0.1")]);
        let dup = json!({"deletions": [], "additions": [rr("10.1.0.1")]});
        assert_eq!(apply_change(&mut st, &dup).unwrap_err().0, 409);
        assert_eq!(st, vec![rr("10.0.0.1")]);
        let good = json!({"deletions": [rr("10.0.0.1")], "additions": [rr("10.1.0.1")]});
        apply_change(&mut st, &good).unwrap();
        assert_eq!(st, vec![rr("10.1.0.1")]);
    }

    /// Only a JWT signed by the key, for the right account, scope and
    /// audience, and current, gets a token.
    #[test]
    fn jwt_claims_are_checked() {
        let w = drctl_tests::Work::new();
        let pem = w.path().join("k.pem");
        let der = w.path().join("k.der");
        assert!(std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out"
            ])
            .arg(&pem)
            .status()
            .unwrap()
            .success());
        assert!(std::process::Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&der)
            .status()
            .unwrap()
            .success());
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&std::fs::read(&der).unwrap()).unwrap();
        let public = ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let sign = |claims: Value| {
            let input = format!(
                "{}.{}",
                b64.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string()),
                b64.encode(claims.to_string())
            );
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
            format!("{input}.{}", b64.encode(sig))
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let (email, aud) = (
            "sa@proj.iam.gserviceaccount.com",
            "http://127.0.0.1:1/token",
        );
        let good = json!({"iss": email, "scope": "https://www.googleapis.com/auth/ndev.clouddns.readwrite", "aud": aud, "iat": now, "exp": now + 3600});
        assert_eq!(jwt_problem(&sign(good.clone()), &public, email, aud), None);
        for (field, bad) in [
            ("iss", json!("other@proj.iam.gserviceaccount.com")),
            (
                "scope",
                json!("https://www.googleapis.com/auth/cloud-platform.read-only"),
            ),
            ("aud", json!("https://oauth2.googleapis.com/token")),
            ("exp", json!(now - 10)),
        ] {
            let mut c = good.clone();
            c[field] = bad;
            assert!(
                jwt_problem(&sign(c), &public, email, aud).is_some(),
                "a JWT with a wrong {field} was accepted"
            );
        }
        let mut forged = sign(good);
        forged.push('A');
        assert!(jwt_problem(&forged, &public, email, aud).is_some());
    }
}
