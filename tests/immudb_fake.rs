//! A fake immudb HTTP gateway (no immudb server can run on these machines).
//!
//! It holds real histories: transaction headers produced by immudb's own Go
//! code (`drctl/testdata/immudb/immudb_vectors.json`), truncated to the tx the
//! test wants the server to be at. Its proof bodies are *synthesized* by
//! `drctl::immudb::ledger::Ledger`, which reproduces every genuine dual proof
//! in those vectors byte for byte, and rendered with the protobuf JSON mapping
//! of immudb's grpc-gateway v1 (SPEC §6.2). States are signed with the vectors'
//! test key when asked, as `immudb --signingKey` would.
//!
//! It is as strict as the real gateway where a client can get things wrong,
//! with the statuses and bodies immudb's server code produces (read from
//! immudb's `pkg/server` and `pkg/errors`: immudb errors without a gRPC code
//! map to `Unknown`, which the gateway renders as HTTP 500):
//! - `POST /api/v2/authorization/session/open` checks username, password and
//!   database: a wrong login is `500 invalid user name or password`, an
//!   unknown database `404 'x' does not exist`; success returns a fresh
//!   random `sessionID`.
//! - every other route needs the `sessionid` header: without it `401`
//!   (gRPC `Unauthenticated`; the wording varies between immudb versions, the
//!   fake says `not logged in`), with an unknown or closed one
//!   `500 session not found`; the session selects the database.
//! - `GET /api/db/verifiable/tx/{tx}?proveSinceTx=N`: `{tx}` and `proveSinceTx`
//!   must be integers (`400 type mismatch`), tx 0 is `400 illegal arguments`,
//!   a tx past the last committed one `500 tx not found`; source and target
//!   follow `VerifiableTxByID` (proveSinceTx 0 = the tx itself; a larger one
//!   swaps source and target).
//! - `POST /api/db/verifiable/set` (`VerifiableSet`, body
//!   `{"setRequest":{"KVs":[{key,value}]},"proveSinceTx"}`) commits a real
//!   new tx to the ledger (`Ledger::commit`: a v1 header linked as immudb
//!   ≥ 1.4.1 links it, the entries tree over the KVs encoded as immudb's
//!   `EncodeEntrySpec` does: key and value prefixed with 0x00) and answers
//!   the `VerifiableTx` of that tx with its entries and the dual proof from
//!   `proveSinceTx` (past the new tx: `500 tx not found`).
//! - `POST /api/db/verifiable/get` (`VerifiableGet`, body
//!   `{"keyRequest":{key,atTx},"proveSinceTx"}`) answers a key set through
//!   the fake: exactly at `atTx` (or its newest), with the tx, the dual proof
//!   as `VerifiableTxByID` pairs them, and the entry's inclusion proof; an
//!   unknown key or one not set at `atTx` is `500 key not found`.
//! - unknown routes: the gateway's own `404 Not Found`.
//!
//! Not modelled: the legacy `/api/login` token flow, entries of the
//! vectors' txs (drctl asks for `EXCLUDE`), keep-alive expiry, TLS, KV
//! metadata on writes.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use drctl::immudb::gateway::{VerifiableTx, WireDualProof, WireSignature, WireTx, WireTxHeader};
use drctl::immudb::ledger::Ledger;
use serde_json::{json, Value};

pub fn vectors() -> Value {
    let p = drctl_tests::repo_root().join("drctl/testdata/immudb/immudb_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The first `tx` txs of one of the vectors' stores (`sync_v1`, `fork_v1`, …).
pub fn ledger(store: &str, tx: u64) -> Ledger {
    Ledger::from_vectors(&vectors(), store, tx).unwrap()
}

pub const USER: &str = "drctl";
pub const PASSWORD: &str = "immudb-sentinel-pw";
pub const DB: &str = "defaultdb";

/// One stored KV: (prefixed key, prefixed value).
type Kv = (Vec<u8>, Vec<u8>);

struct Inner {
    user: String,
    password: String,
    dbs: BTreeMap<String, Ledger>,
    sessions: HashMap<String, String>,
    sign: Option<p256::ecdsa::SigningKey>,
    /// When set, every request is answered with this status (an upstream
    /// proxy or load balancer failing), before any immudb logic.
    outage: Option<u16>,
    requests: Vec<String>,
    /// KVs committed through `verifiable/set`, per database and tx, as
    /// stored (prefixed key, prefixed value).
    kvs: HashMap<String, BTreeMap<u64, Vec<Kv>>>,
    /// A misbehaving server: commits another value than the one asked for.
    lie_on_set: bool,
    /// A misbehaving server: answers `verifiable/get` with another value
    /// than the one in the tx (proofs of the real one).
    lie_on_get: bool,
}

#[derive(Clone)]
pub struct FakeImmudb {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
}

impl FakeImmudb {
    /// Serves database `defaultdb` holding `ledger`, for user `drctl` with
    /// password [`PASSWORD`].
    pub fn start(ledger: Ledger) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let inner = Arc::new(Mutex::new(Inner {
            user: USER.into(),
            password: PASSWORD.into(),
            dbs: BTreeMap::from([(DB.to_string(), ledger)]),
            sessions: HashMap::new(),
            sign: None,
            outage: None,
            requests: Vec::new(),
            kvs: HashMap::new(),
            lie_on_set: false,
            lie_on_get: false,
        }));
        let fake = FakeImmudb { port, inner };
        let f = fake.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let f = f.clone();
                std::thread::spawn(move || f.serve(s));
            }
        });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Signs states and proofs with the vectors' test key from now on.
    pub fn signing(self) -> Self {
        let pem = vectors()["state_signatures"]["private_key_pem"]
            .as_str()
            .unwrap()
            .to_string();
        let sk = p256::SecretKey::from_sec1_pem(&pem).unwrap();
        self.inner.lock().unwrap().sign = Some(p256::ecdsa::SigningKey::from(sk));
        self
    }

    /// The database now holds `ledger` (it committed more, or was replaced).
    pub fn set_ledger(&self, ledger: Ledger) {
        self.inner.lock().unwrap().dbs.insert(DB.into(), ledger);
    }

    pub fn set_outage(&self, status: Option<u16>) {
        self.inner.lock().unwrap().outage = status;
    }

    pub fn lie_on_set(&self, on: bool) {
        self.inner.lock().unwrap().lie_on_set = on;
    }

    pub fn lie_on_get(&self, on: bool) {
        self.inner.lock().unwrap().lie_on_get = on;
    }

    /// The last committed tx of `defaultdb`.
    pub fn tx(&self) -> u64 {
        self.inner.lock().unwrap().dbs[DB].len()
    }

    /// The value (unprefixed) `key` was set to through the fake, newest.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        let st = self.inner.lock().unwrap();
        let k = prefixed(key.as_bytes());
        st.kvs.get(DB)?.values().rev().find_map(|kvs| {
            kvs.iter()
                .find(|(kk, _)| *kk == k)
                .map(|(_, v)| v[1..].to_vec())
        })
    }

    /// Request lines served so far.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    fn serve(&self, mut s: TcpStream) {
        let req = drctl_tests::read_http_request(&mut s);
        let (head, body) = req.split_once("\r\n\r\n").unwrap_or((&req, ""));
        let mut lines = head.lines();
        let line = lines.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let (status, resp) = self.route(&line, &headers, body);
        let b = resp.to_string();
        let _ = s.write_all(
            format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                b.len()
            )
            .as_bytes(),
        );
    }

    fn route(&self, line: &str, headers: &[(String, String)], body: &str) -> (u16, Value) {
        let mut st = self.inner.lock().unwrap();
        st.requests.push(line.to_string());
        if let Some(code) = st.outage {
            return (
                code,
                json!({"error": "upstream unavailable", "code": 14, "message": "upstream unavailable", "details": []}),
            );
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if (method, path) == ("POST", "/api/v2/authorization/session/open") {
            let b: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let (u, p, d) = (
                b["username"].as_str().unwrap_or(""),
                b["password"].as_str().unwrap_or(""),
                b["database"].as_str().unwrap_or(""),
            );
            if u != st.user || p != st.password {
                return err(500, 2, "invalid user name or password");
            }
            if !st.dbs.contains_key(d) {
                return err(404, 5, &format!("'{d}' does not exist"));
            }
            let id = format!("{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..));
            st.sessions.insert(id.clone(), d.to_string());
            return (
                200,
                json!({"sessionID": id, "serverUUID": "cn5vq8l2r0fake000000", "inactivityTimestamp": 180}),
            );
        }
        let known = matches!(
            (method, path),
            ("POST", "/api/v2/authorization/session/keepalive")
                | ("POST", "/api/v2/authorization/session/close")
                | ("GET", "/api/db/state")
                | ("GET", "/api/v2/db/state")
                | ("POST", "/api/db/verifiable/set")
                | ("POST", "/api/v2/db/verifiable/set")
                | ("POST", "/api/db/verifiable/get")
                | ("POST", "/api/v2/db/verifiable/get")
        ) || (method == "GET" && path.starts_with("/api/db/verifiable/tx/"));
        if !known {
            return err(404, 5, "Not Found");
        }
        let Some(sid) = headers
            .iter()
            .find(|(k, _)| k == "sessionid")
            .map(|(_, v)| v.clone())
        else {
            return err(401, 16, "not logged in");
        };
        let Some(db) = st.sessions.get(&sid).cloned() else {
            return err(500, 2, "session not found");
        };
        let ledger = st.dbs[&db].clone();
        let path = path
            .strip_prefix("/api/v2/db/")
            .map_or(path.to_string(), |p| format!("/api/db/{p}"));
        let path = path.as_str();
        match path {
            "/api/db/verifiable/set" => {
                let b: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                let Some(since) = u64_field(&b["proveSinceTx"]) else {
                    return err(400, 3, "type mismatch, parameter: proveSinceTx");
                };
                let mut kvs = Vec::new();
                for kv in b["setRequest"]["KVs"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    let (Some(k), Some(v)) = (b64_field(&kv["key"]), b64_field(&kv["value"]))
                    else {
                        return err(400, 3, "illegal arguments");
                    };
                    let v = if st.lie_on_set {
                        [v, b" (altered)".to_vec()].concat()
                    } else {
                        v
                    };
                    kvs.push((prefixed(&k), prefixed(&v)));
                }
                if kvs.is_empty() || kvs.iter().any(|(k, _)| k.len() == 1) {
                    return err(500, 2, "illegal arguments");
                }
                // `VerifiableSet` refuses a proof source past the last committed tx.
                if since > ledger.len() {
                    return err(500, 2, "illegal state");
                }
                let mut ledger = ledger;
                let digests: Vec<_> = kvs.iter().map(|(k, v)| digest(k, v)).collect();
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let h = ledger.commit(ts, &digests).unwrap();
                st.dbs.insert(db.clone(), ledger.clone());
                st.kvs.entry(db.clone()).or_default().insert(h.id, kvs);
                let since = if since == 0 { h.id } else { since };
                let resp = verifiable_tx(&st, &ledger, &db, h.id, since, true);
                (200, serde_json::to_value(resp).unwrap())
            }
            "/api/db/verifiable/get" => {
                let b: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                let (Some(key), Some(at), Some(since)) = (
                    b64_field(&b["keyRequest"]["key"]),
                    u64_field(&b["keyRequest"]["atTx"]),
                    u64_field(&b["proveSinceTx"]),
                ) else {
                    return err(400, 3, "illegal arguments");
                };
                let k = prefixed(&key);
                let found = st.kvs.get(&db).and_then(|m| {
                    m.iter().rev().find_map(|(tx, kvs)| {
                        let i = kvs.iter().position(|(kk, _)| *kk == k)?;
                        (at == 0 || at == *tx).then_some((*tx, i, kvs.clone()))
                    })
                });
                let Some((tx, i, kvs)) = found.filter(|(tx, ..)| *tx <= ledger.len()) else {
                    return err(500, 2, "key not found");
                };
                if since > ledger.len() {
                    return err(500, 2, "tx not found");
                }
                // `VerifiableGet`: source and target as `VerifiableTxByID` pairs them.
                let since = if since == 0 { tx } else { since };
                let vtx = verifiable_tx(&st, &ledger, &db, tx, since, true);
                let digests: Vec<_> = kvs.iter().map(|(k, v)| digest(k, v)).collect();
                let terms = drctl::immudb::htree::htree_inclusion_proof(&digests, i).unwrap();
                let mut value = kvs[i].1[1..].to_vec();
                if st.lie_on_get {
                    value.extend_from_slice(b" (altered)");
                }
                (
                    200,
                    json!({
                        "entry": {"tx": tx.to_string(), "key": STANDARD.encode(&key), "value": STANDARD.encode(&value)},
                        "verifiableTx": serde_json::to_value(vtx).unwrap(),
                        "inclusionProof": {"leaf": i, "width": digests.len(), "terms": terms.iter().map(|t| STANDARD.encode(t)).collect::<Vec<_>>()},
                    }),
                )
            }
            "/api/v2/authorization/session/keepalive" => (200, json!({})),
            "/api/v2/authorization/session/close" => {
                st.sessions.remove(&sid);
                (200, json!({}))
            }
            "/api/db/state" | "/api/v2/db/state" => {
                let n = ledger.len();
                let alh = ledger.alh(n).unwrap();
                let mut v =
                    json!({"db": db, "txId": n.to_string(), "txHash": STANDARD.encode(alh)});
                if n == 0 {
                    v.as_object_mut().unwrap().remove("txId");
                }
                if let Some(sig) = st.sign.as_ref().map(|k| sign(k, &db, n, &alh)) {
                    v["signature"] = serde_json::to_value(sig).unwrap();
                }
                (200, v)
            }
            _ => {
                let tx_s = path.trim_start_matches("/api/db/verifiable/tx/");
                let Ok(tx) = tx_s.parse::<u64>() else {
                    return err(400, 3, &format!("type mismatch, parameter: tx, error: strconv.ParseUint: parsing {tx_s:?}: invalid syntax"));
                };
                let since_s = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("proveSinceTx="))
                    .unwrap_or("0");
                let Ok(since) = since_s.parse::<u64>() else {
                    return err(400, 3, &format!("type mismatch, parameter: proveSinceTx, error: strconv.ParseUint: parsing {since_s:?}: invalid syntax"));
                };
                if tx == 0 {
                    return err(400, 3, "illegal arguments");
                }
                if tx > ledger.len() || since > ledger.len() {
                    return err(500, 2, "tx not found");
                }
                let (s, t) = match since {
                    0 => (tx, tx),
                    k if k <= tx => (k, tx),
                    k => (tx, k),
                };
                let Some(p) = ledger.dual_proof(s, t) else {
                    return err(500, 2, "illegal arguments");
                };
                let mut header = WireTxHeader::from_header(ledger.header(tx).unwrap());
                header.metadata.get_or_insert_with(Default::default);
                let t_alh = ledger.alh(t).unwrap();
                let vtx = VerifiableTx {
                    tx: Some(WireTx {
                        header: Some(header),
                        entries: Vec::new(),
                    }),
                    dual_proof: Some(WireDualProof::from_proof(&p)),
                    signature: st.sign.as_ref().map(|k| sign(k, &db, t, &t_alh)),
                };
                (200, serde_json::to_value(vtx).unwrap())
            }
        }
    }
}

/// immudb's `EncodeKey` / plain-value encoding: a 0x00 prefix.
fn prefixed(b: &[u8]) -> Vec<u8> {
    [&[0u8][..], b].concat()
}

/// A v1 entry digest of a stored (prefixed) key and value.
fn digest(k: &[u8], v: &[u8]) -> [u8; 32] {
    let hv = drctl::immudb::hash::sha256(v);
    drctl::immudb::tx::entry_digest_v1(k, &hv, None).unwrap()
}

/// A proto3 JSON uint64: a string (or a number), absent = 0.
fn u64_field(v: &Value) -> Option<u64> {
    match v {
        Value::Null => Some(0),
        Value::String(s) => s.parse().ok(),
        v => v.as_u64(),
    }
}

fn b64_field(v: &Value) -> Option<Vec<u8>> {
    STANDARD.decode(v.as_str()?).ok()
}

/// `VerifiableTx` of `tx` proven with `since` as `VerifiableTxByID` pairs
/// them, with the entries of a tx committed through the fake.
fn verifiable_tx(
    st: &Inner,
    ledger: &Ledger,
    db: &str,
    tx: u64,
    since: u64,
    with_entries: bool,
) -> VerifiableTx {
    let (s, t) = if since <= tx {
        (since, tx)
    } else {
        (tx, since)
    };
    let p = ledger.dual_proof(s, t).unwrap();
    let mut header = WireTxHeader::from_header(ledger.header(tx).unwrap());
    header.metadata.get_or_insert_with(Default::default);
    let entries = match st.kvs.get(db).and_then(|m| m.get(&tx)) {
        Some(kvs) if with_entries => kvs
            .iter()
            .map(|(k, v)| drctl::immudb::gateway::WireTxEntry {
                key: k.clone(),
                metadata: None,
                h_value: drctl::immudb::hash::sha256(v).to_vec(),
                v_len: v.len() as i64,
            })
            .collect(),
        _ => Vec::new(),
    };
    let t_alh = ledger.alh(t).unwrap();
    VerifiableTx {
        tx: Some(WireTx {
            header: Some(header),
            entries,
        }),
        dual_proof: Some(WireDualProof::from_proof(&p)),
        signature: st.sign.as_ref().map(|k| sign(k, db, t, &t_alh)),
    }
}

/// grpc-gateway v1's error body (swagger `runtimeError`).
fn err(status: u16, code: i64, message: &str) -> (u16, Value) {
    (
        status,
        json!({"error": message, "code": code, "message": message, "details": []}),
    )
}

/// `ImmutableState.ToBytes` signed with ECDSA P-256 over SHA-256 (SPEC §5).
fn sign(k: &p256::ecdsa::SigningKey, db: &str, tx: u64, alh: &[u8; 32]) -> WireSignature {
    use p256::ecdsa::signature::Signer;
    let mut m = Vec::new();
    m.extend_from_slice(&(db.len() as u32).to_be_bytes());
    m.extend_from_slice(db.as_bytes());
    m.extend_from_slice(&tx.to_be_bytes());
    m.extend_from_slice(alh);
    let sig: p256::ecdsa::Signature = k.sign(&m);
    WireSignature {
        public_key: k
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
        signature: sig.to_der().as_bytes().to_vec(),
    }
}

/// One raw HTTP exchange with the fake: (status, JSON body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    session: Option<&str>,
    body: &str,
) -> (u16, Value) {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let sid = session.map_or(String::new(), |v| format!("sessionid: {v}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{sid}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let b = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(b).unwrap_or(Value::Null))
}
