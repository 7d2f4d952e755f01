//! Minimal async client for immudb's HTTP/JSON gateway (SPEC §6.2). Only the
//! routes a DR consistency check needs; every request is bounded by the
//! configured timeout (connect + whole exchange) and a body size cap, so a
//! hung or hostile replica cannot stall or exhaust drctl.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::immudb::error::ClientError;
use crate::immudb::gateway::{Bundle, ImmutableState, RuntimeError, VerifiableEntry, VerifiableTx};
use crate::immudb::verdict::{proof_source, verify_against_checkpoints, TrustedState, Verdict};

/// Largest response body accepted (proofs are a few KB; the gateway itself caps gRPC at 4 MB).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
enum Auth {
    None,
    Session(String),
    Bearer(String),
}

/// A client bound to one database on one immudb server.
#[derive(Debug, Clone)]
pub struct ImmudbClient {
    base_url: String,
    username: String,
    password: String,
    database: String,
    timeout: Duration,
    http: reqwest::Client,
    auth: Auth,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenSessionResponse {
    #[serde(rename = "sessionID", alias = "sessionId", default)]
    session_id: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
}

impl ImmudbClient {
    /// `base_url` is e.g. `http://dr-immudb:8080` (the `/api` prefix is added here).
    pub fn new(
        base_url: &str,
        username: &str,
        password: &str,
        database: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "base_url must be http(s)://, got {base_url:?}"
            )));
        }
        if timeout.is_zero() {
            return Err(ClientError::Config("timeout must be > 0".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(ImmudbClient {
            base_url: base.to_string(),
            username: username.to_string(),
            password: password.to_string(),
            database: database.to_string(),
            timeout,
            http,
            auth: Auth::None,
        })
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base_url, path);
        let mut req = self.http.request(method, &url);
        match &self.auth {
            Auth::None => {}
            Auth::Session(id) => req = req.header("sessionid", id),
            Auth::Bearer(tok) => req = req.bearer_auth(tok),
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let timeout_err = || ClientError::Timeout {
            url: url.clone(),
            timeout_ms: self.timeout.as_millis(),
        };
        let exchange = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| map_reqwest(&url, e, self.timeout))?;
            let status = resp.status();
            let mut buf = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| map_reqwest(&url, e, self.timeout))?
            {
                if buf.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(ClientError::BodyTooLarge {
                        url: url.clone(),
                        limit: MAX_BODY_BYTES,
                    });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok((status, buf))
        };
        // reqwest's own timeout should fire first; this is the hard outer bound.
        let (status, buf) =
            tokio::time::timeout(self.timeout + Duration::from_millis(250), exchange)
                .await
                .map_err(|_| timeout_err())??;
        decode_response(&url, status, &buf)
    }

    /// Opens a gRPC-gateway session (`/api/v2/authorization/session/open`).
    pub async fn open_session(&mut self) -> Result<(), ClientError> {
        self.auth = Auth::None;
        let body = serde_json::json!({
            "username": self.username, "password": self.password, "database": self.database,
        });
        let r: OpenSessionResponse = self
            .call(
                Method::POST,
                "/api/v2/authorization/session/open",
                Some(body),
            )
            .await?;
        if r.session_id.is_empty() {
            return Err(ClientError::Decode {
                url: format!("{}/api/v2/authorization/session/open", self.base_url),
                reason: "empty sessionID".into(),
            });
        }
        self.auth = Auth::Session(r.session_id);
        Ok(())
    }

    /// Legacy token login (`/api/login` + `/api/db/use/{db}`) for servers without sessions.
    pub async fn login_legacy(&mut self) -> Result<(), ClientError> {
        self.auth = Auth::None;
        let body = serde_json::json!({
            "user": STANDARD.encode(self.username.as_bytes()),
            "password": STANDARD.encode(self.password.as_bytes()),
        });
        let t: TokenResponse = self.call(Method::POST, "/api/login", Some(body)).await?;
        self.auth = Auth::Bearer(t.token);
        let path = format!("/api/db/use/{}", encode_path_segment(&self.database));
        let t: TokenResponse = self.call(Method::GET, &path, None).await?;
        self.auth = Auth::Bearer(t.token);
        Ok(())
    }

    /// Opens a session, falling back to legacy login when the route does not
    /// exist (the gateway's own "Not Found"/"Not Implemented", as an immudb
    /// without sessions answers). A 404 from immudb itself (an unknown
    /// database: `'x' does not exist`) is an answer, not a missing route.
    pub async fn login(&mut self) -> Result<(), ClientError> {
        match self.open_session().await {
            Err(ClientError::Status {
                status: 404 | 501,
                message,
                ..
            }) if message.eq_ignore_ascii_case("not found")
                || message.eq_ignore_ascii_case("not implemented") =>
            {
                self.login_legacy().await
            }
            other => other,
        }
    }

    pub async fn keep_alive(&self) -> Result<(), ClientError> {
        self.require_auth()?;
        let _: serde_json::Value = self
            .call(
                Method::POST,
                "/api/v2/authorization/session/keepalive",
                Some(serde_json::json!({})),
            )
            .await?;
        Ok(())
    }

    /// Closes the session (no-op for token auth). Best effort: callers may ignore errors.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        if let Auth::Session(_) = self.auth {
            let r: Result<serde_json::Value, _> = self
                .call(
                    Method::POST,
                    "/api/v2/authorization/session/close",
                    Some(serde_json::json!({})),
                )
                .await;
            self.auth = Auth::None;
            r?;
        }
        self.auth = Auth::None;
        Ok(())
    }

    fn require_auth(&self) -> Result<(), ClientError> {
        match self.auth {
            Auth::None => Err(ClientError::NotLoggedIn),
            _ => Ok(()),
        }
    }

    /// `GET /api/db/state`.
    pub async fn state(&self) -> Result<ImmutableState, ClientError> {
        self.require_auth()?;
        self.call(Method::GET, "/api/db/state", None).await
    }

    /// `GET /api/db/verifiable/tx/{tx}?proveSinceTx=N`, without entries and without
    /// waiting for the index (both irrelevant to a header-level consistency proof).
    pub async fn verifiable_tx(
        &self,
        tx: u64,
        prove_since: u64,
    ) -> Result<VerifiableTx, ClientError> {
        self.require_auth()?;
        let path = format!(
            "/api/db/verifiable/tx/{tx}?proveSinceTx={prove_since}&keepReferencesUnresolved=true&entriesSpec.kvEntriesSpec.action=EXCLUDE"
        );
        self.call(Method::GET, &path, None).await
    }

    /// `POST /api/db/verifiable/set` (`VerifiableSet`): commits `key` =
    /// `value` in a new tx and returns that tx (header and entries) with a
    /// dual proof from `prove_since`. The caller verifies it (see
    /// [`crate::report::anchor`]); nothing here trusts the answer.
    pub async fn verifiable_set(
        &self,
        key: &[u8],
        value: &[u8],
        prove_since: u64,
    ) -> Result<VerifiableTx, ClientError> {
        self.require_auth()?;
        let body = serde_json::json!({
            "setRequest": {"KVs": [{"key": STANDARD.encode(key), "value": STANDARD.encode(value)}]},
            "proveSinceTx": prove_since.to_string(),
        });
        self.call(Method::POST, "/api/db/verifiable/set", Some(body))
            .await
    }

    /// `POST /api/db/verifiable/get` (`VerifiableGet`): the value `key` was
    /// set to exactly at tx `at_tx` (0: its newest), with that tx, a dual
    /// proof from `prove_since` and the entry's inclusion proof.
    pub async fn verifiable_get(
        &self,
        key: &[u8],
        at_tx: u64,
        prove_since: u64,
    ) -> Result<VerifiableEntry, ClientError> {
        self.require_auth()?;
        let body = serde_json::json!({
            "keyRequest": {"key": STANDARD.encode(key), "atTx": at_tx.to_string()},
            "proveSinceTx": prove_since.to_string(),
        });
        self.call(Method::POST, "/api/db/verifiable/get", Some(body))
            .await
    }

    /// Fetches the replica's state and the proof it must give against the
    /// trusted checkpoints (see [`proof_source`]).
    pub async fn fetch_bundle(&self, checkpoints: &[TrustedState]) -> Result<Bundle, ClientError> {
        let state = self.state().await?;
        let verifiable_tx = match proof_source(checkpoints, state.tx_id) {
            Some(since) => Some(self.verifiable_tx(state.tx_id, since).await?),
            None => None,
        };
        Ok(Bundle {
            state,
            verifiable_tx,
        })
    }

    /// The whole SPEC §7 procedure: login, fetch, verify, close. Returns the
    /// verdict and the replica state (adopt it with `TrustedState::from_state`
    /// only for `Same`/`Ahead`). `checkpoints` are the trusted states kept for
    /// the source region, newest = the trusted state; a replica behind it is
    /// proven against the newest checkpoint at or below its tx.
    pub async fn check_against(
        &mut self,
        checkpoints: &[TrustedState],
        pinned_pubkey_pem: Option<&str>,
    ) -> Result<(Verdict, ImmutableState), ClientError> {
        self.login().await?;
        let fetched = self.fetch_bundle(checkpoints).await;
        if let Err(e) = self.close().await {
            tracing::debug!(error = %e, "closing immudb session failed");
        }
        let bundle = fetched?;
        let verdict = verify_against_checkpoints(
            checkpoints,
            &bundle.state,
            bundle.verifiable_tx.as_ref(),
            pinned_pubkey_pem,
        )?;
        Ok((verdict, bundle.state))
    }
}

fn map_reqwest(url: &str, e: reqwest::Error, timeout: Duration) -> ClientError {
    if e.is_timeout() {
        ClientError::Timeout {
            url: url.to_string(),
            timeout_ms: timeout.as_millis(),
        }
    } else {
        ClientError::Transport {
            url: url.to_string(),
            reason: e.to_string(),
        }
    }
}

fn decode_response<T: DeserializeOwned>(
    url: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<T, ClientError> {
    if !status.is_success() {
        let message = serde_json::from_slice::<RuntimeError>(body)
            .ok()
            .map(|r| {
                if r.message.is_empty() {
                    r.error
                } else {
                    r.message
                }
            })
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
        return Err(ClientError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

/// Percent-encodes a database name for use as one path segment.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
