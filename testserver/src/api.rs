//! The mock SingleStore HTTP APIs: the Data API (SQL over HTTP, authenticated with
//! a database JWT) and the Management API (authenticated with an API JWT), on one
//! listener. A request is accepted only with `Authorization: Bearer <JWT>` signed
//! by the mock auth service's key, unexpired, of the right `jwtType`, and for the
//! Data API with this server's `workspaceGroupID`; anything else gets 401
//! `{"error": "unauthorized", "message"}` saying what was wrong.
//!
//! Data API (shapes as SingleStore's Data API answers them):
//! - `POST /api/v2/query/rows` `{"sql", "args"?, "database"?}` →
//!   `{"results": [{"rows": [{"<column>": value}]}]}`. Understood statements:
//!   `SELECT 1`, `SELECT CURRENT_USER()` (→ `"<sub>@%"`, the JWT's user) and
//!   `SELECT * FROM large [LIMIT n]` (n rows of `{"id", "payload"}`, default
//!   [`ApiConfig::large_rows`], generated and streamed as they are sent: for
//!   throughput). Anything else: 400 with the Data API's plain-text error form.
//! - `POST /api/v2/exec` `{"sql"}` → `{"lastInsertId": 0, "rowsAffected": 0}`.
//! - `GET /api/v2/ping` → `pong` (no credentials, as in the real one).
//!
//! Management API:
//! - `GET /v1/workspaceGroups` → `[{"workspaceGroupID", "name", "regionID",
//!   "state", "createdAt", "firewallRanges"}]`.
//!
//! Test controls:
//! - `POST /_mock/upload` (a database JWT): reads a body of any size as it streams
//!   and answers `{"bytes": n}`.
//! - `GET /_mock/api/requests`: `[ApiRecord]` (the bearer token only as a SHA-256
//!   fingerprint); `DELETE` clears it.
//! - [`MockApi::hold_streams`]: large results stop after their first chunk until
//!   released, so a test can see bytes arrive before the upstream has finished;
//!   [`MockApi::break_streams`] makes the held ones fail mid-body instead.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::keys::SigningKey;
use crate::server::{self, Listener, RequestLog};
use crate::util::json_error;
use crate::{Faults, StartError};

/// What the mock APIs accept and answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiConfig {
    /// The workspace group this Data API belongs to (database JWTs must name it).
    pub workspace_group_id: String,
    /// Rows of `SELECT * FROM large` without a `LIMIT`.
    pub large_rows: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            workspace_group_id: "wg-1".into(),
            large_rows: 100_000,
        }
    }
}

/// One request to the mock APIs as a test sees it. The token itself is never
/// kept: only its fingerprint and claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiRecord {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// How many `Authorization` headers arrived.
    pub authorization_headers: usize,
    /// SHA-256 (hex) of the bearer token, when there was one.
    pub bearer_sha256: Option<String>,
    /// The token's verified claims, when it was accepted.
    pub claims: Option<Value>,
    /// Every other request header (lowercase names).
    pub headers: BTreeMap<String, String>,
    /// The status the mock answered.
    pub status: u16,
}

/// SHA-256 (hex) of a token, as [`ApiRecord::bearer_sha256`] records it.
pub fn fingerprint(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The mock APIs' shared state. Cheap to clone.
#[derive(Clone)]
pub struct MockApi {
    inner: Arc<Inner>,
}

struct Inner {
    config: RwLock<ApiConfig>,
    key: Arc<SigningKey>,
    records: Mutex<Vec<ApiRecord>>,
    gate: watch::Sender<Gate>,
}

/// What a large result does after its first chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    Hold,
    Break,
}

impl MockApi {
    /// APIs that accept JWTs signed with `key` (the mock auth service's).
    pub fn new(config: ApiConfig, key: Arc<SigningKey>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: RwLock::new(config),
                key,
                records: Mutex::new(Vec::new()),
                gate: watch::channel(Gate::Open).0,
            }),
        }
    }

    /// The current behaviour.
    pub fn config(&self) -> ApiConfig {
        self.inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the behaviour at run time.
    pub fn update(&self, f: impl FnOnce(&mut ApiConfig)) {
        f(&mut self.inner.config.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// While on, a large result sends its first chunk and then waits.
    pub fn hold_streams(&self, on: bool) {
        self.inner
            .gate
            .send_replace(if on { Gate::Hold } else { Gate::Open });
    }

    /// Held large results (and later ones, after their first chunk) fail: the
    /// connection is cut mid-body, as when a server dies while sending.
    pub fn break_streams(&self) {
        self.inner.gate.send_replace(Gate::Break);
    }

    /// Every request seen so far.
    pub fn records(&self) -> Vec<ApiRecord> {
        self.lock_records().clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_records(&self) {
        self.lock_records().clear();
    }

    fn lock_records(&self) -> std::sync::MutexGuard<'_, Vec<ApiRecord>> {
        self.inner.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, record: ApiRecord) {
        let mut records = self.lock_records();
        if records.len() >= 100_000 {
            records.drain(..10_000);
        }
        records.push(record);
    }

    /// The Data API and Management API routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v2/query/rows", post(query_rows))
            .route("/api/v2/exec", post(exec))
            .route("/api/v2/ping", get(|| async { "pong" }))
            .route("/v1/workspaceGroups", get(workspace_groups))
            .route("/_mock/upload", post(upload))
            .route(
                "/_mock/api/requests",
                get(|State(api): State<MockApi>| async move { Json(api.records()) }).delete(
                    |State(api): State<MockApi>| async move {
                        api.clear_records();
                        StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(self.clone())
    }
}

/// The mock APIs on their own listener.
pub struct MockApiServer {
    api: MockApi,
    listener: Listener,
    faults: Faults,
    log: RequestLog,
}

impl MockApiServer {
    /// Serves the APIs on `addr` (port 0: a free port), accepting JWTs signed with
    /// `key`.
    pub async fn start(
        config: ApiConfig,
        key: Arc<SigningKey>,
        addr: SocketAddr,
    ) -> Result<Self, StartError> {
        let api = MockApi::new(config, key);
        let faults = Faults::default();
        let log = RequestLog::default();
        let tcp = server::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let listener = server::spawn(tcp, api.router(), faults.clone(), log.clone())
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self {
            api,
            listener,
            faults,
            log,
        })
    }

    /// `http://127.0.0.1:port`: the base URL of both APIs.
    pub fn url(&self) -> String {
        self.listener.url()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// The mock, to change or inspect it.
    pub fn api(&self) -> &MockApi {
        &self.api
    }

    /// Fault rules of this listener.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The raw request log of this listener.
    pub fn requests(&self) -> &RequestLog {
        &self.log
    }

    /// Stops the listener.
    pub async fn shutdown(self) {
        self.listener.shutdown().await;
    }
}

/// Which API a route belongs to, and so which JWT it takes.
#[derive(Clone, Copy)]
enum Api {
    Data,
    Management,
}

/// Checks the bearer JWT and records the request; `Err` is why it is refused.
fn authorize(
    api: &MockApi,
    which: Api,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(Value, usize), String> {
    let bearers: Vec<&str> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let token = bearers
        .first()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let mut record = ApiRecord {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        authorization_headers: bearers.len(),
        bearer_sha256: token.map(fingerprint),
        claims: None,
        headers: headers
            .iter()
            .filter(|(k, _)| *k != header::AUTHORIZATION)
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        status: 401,
    };
    let verdict = match (bearers.len(), token) {
        (0, _) => Err("send Authorization: Bearer <JWT>".to_string()),
        (1, Some(token)) => check_claims(api, which, token),
        (1, None) => Err("the Authorization header must be \"Bearer <JWT>\"".to_string()),
        _ => Err("more than one Authorization header".to_string()),
    };
    match verdict {
        Ok(claims) => {
            record.claims = Some(claims.clone());
            record.status = 200;
            let index = {
                let mut records = api.lock_records();
                records.push(record);
                records.len().saturating_sub(1)
            };
            Ok((claims, index))
        }
        Err(message) => {
            api.record(record);
            Err(message)
        }
    }
}

fn check_claims(api: &MockApi, which: Api, token: &str) -> Result<Value, String> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp"]);
    let claims: Value = api
        .inner
        .key
        .verify(token, &validation)
        .map_err(|e| format!("the JWT is not valid: {e}"))?;
    let jwt_type = claims["jwtType"].as_str().unwrap_or("");
    match which {
        Api::Data => {
            if jwt_type != "database" {
                return Err(format!(
                    "the Data API takes a database JWT, not {jwt_type:?}"
                ));
            }
            let want = api.config().workspace_group_id;
            let got = claims["workspaceGroupID"].as_str().unwrap_or("");
            if got != want {
                return Err(format!(
                    "the JWT is for workspace group {got:?}, this is {want:?}"
                ));
            }
        }
        Api::Management => {
            if jwt_type != "api" {
                return Err(format!(
                    "the Management API takes an API JWT, not {jwt_type:?}"
                ));
            }
        }
    }
    Ok(claims)
}

fn unauthorized(message: String) -> Response {
    json_error(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Sets the status of the record `authorize` pushed (if still there).
fn finish(api: &MockApi, index: usize, resp: Response) -> Response {
    if let Some(r) = api.lock_records().get_mut(index) {
        r.status = resp.status().as_u16();
    }
    resp
}

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
}

/// The Data API's error form: plain text, `Error <code>: <message>`.
fn sql_error(status: StatusCode, code: u16, message: &str) -> Response {
    (status, format!("Error {code}: {message}")).into_response()
}

async fn query_rows(
    State(api): State<MockApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (claims, index) = match authorize(&api, Api::Data, &method, &uri, &headers) {
        Ok(ok) => ok,
        Err(why) => return unauthorized(why),
    };
    let resp = match serde_json::from_slice::<SqlRequest>(&body) {
        Err(e) => sql_error(
            StatusCode::BAD_REQUEST,
            1064,
            &format!("the body must be JSON {{\"sql\": ...}}: {e}"),
        ),
        Ok(req) => answer(&api, &req.sql, &claims),
    };
    finish(&api, index, resp)
}

fn answer(api: &MockApi, sql: &str, claims: &Value) -> Response {
    let normalized = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    let user = claims["sub"].as_str().unwrap_or("");
    match normalized.as_str() {
        "SELECT 1" => Json(json!({"results": [{"rows": [{"1": 1}]}]})).into_response(),
        "SELECT CURRENT_USER()" => Json(json!({"results": [{"rows": [
            {"CURRENT_USER()": format!("{user}@%")}
        ]}]}))
        .into_response(),
        "SELECT * FROM LARGE" => large(api, api.config().large_rows),
        other => match other
            .strip_prefix("SELECT * FROM LARGE LIMIT ")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) => large(api, n),
            None => sql_error(
                StatusCode::BAD_REQUEST,
                1149,
                "the mock Data API answers SELECT 1, SELECT CURRENT_USER() and SELECT * FROM large [LIMIT n]",
            ),
        },
    }
}

/// Rows generated in ~64 KiB chunks by a task and streamed as they are made.
fn large(api: &MockApi, rows: u64) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let mut gate = api.inner.gate.subscribe();
    tokio::spawn(async move {
        let payload = "x".repeat(100);
        let mut chunk = String::with_capacity(70_000);
        chunk.push_str("{\"results\":[{\"rows\":[");
        let mut first_sent = false;
        for id in 0..rows {
            if id > 0 {
                chunk.push(',');
            }
            chunk.push_str(&format!("{{\"id\":{id},\"payload\":\"{payload}\"}}"));
            if chunk.len() >= 64 * 1024 {
                if tx
                    .send(Ok(Bytes::from(std::mem::take(&mut chunk))))
                    .await
                    .is_err()
                {
                    return;
                }
                if !first_sent {
                    first_sent = true;
                    let gate = gate.wait_for(|g| *g != Gate::Hold).await.map(|g| *g);
                    if gate.is_ok_and(|g| g == Gate::Break) {
                        let broken = std::io::Error::other("mock stream broken");
                        let _ = tx.send(Err(broken)).await;
                        return;
                    }
                }
            }
        }
        chunk.push_str("]}]}");
        let _ = tx.send(Ok(Bytes::from(chunk))).await;
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::new(ChannelBody(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A body fed by a channel, ending when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(http_body::Frame::data)))
    }
}

async fn exec(
    State(api): State<MockApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let index = match authorize(&api, Api::Data, &method, &uri, &headers) {
        Ok((_, index)) => index,
        Err(why) => return unauthorized(why),
    };
    let resp = match serde_json::from_slice::<SqlRequest>(&body) {
        Ok(_) => Json(json!({"lastInsertId": 0, "rowsAffected": 0})).into_response(),
        Err(e) => sql_error(
            StatusCode::BAD_REQUEST,
            1064,
            &format!("the body must be JSON {{\"sql\": ...}}: {e}"),
        ),
    };
    finish(&api, index, resp)
}

async fn workspace_groups(
    State(api): State<MockApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let index = match authorize(&api, Api::Management, &method, &uri, &headers) {
        Ok((_, index)) => index,
        Err(why) => return unauthorized(why),
    };
    let wg = api.config().workspace_group_id;
    let resp = Json(json!([{
        "workspaceGroupID": wg,
        "name": "mock-workspace-group",
        "regionID": "00000000-0000-0000-0000-000000000001",
        "state": "ACTIVE",
        "createdAt": "2026-01-01T00:00:00Z",
        "firewallRanges": ["127.0.0.1/32"],
    }]))
    .into_response();
    finish(&api, index, resp)
}

/// Reads the body frame by frame (never holding more than a frame) and counts it.
async fn upload(
    State(api): State<MockApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let index = match authorize(&api, Api::Data, &method, &uri, &headers) {
        Ok((_, index)) => index,
        Err(why) => return unauthorized(why),
    };
    let mut body = body;
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                bytes = bytes.saturating_add(f.data_ref().map_or(0, |d| d.len() as u64));
            }
            Err(e) => {
                return finish(
                    &api,
                    index,
                    json_error(StatusCode::BAD_REQUEST, "body_error", e.to_string()),
                )
            }
        }
    }
    finish(&api, index, Json(json!({"bytes": bytes})).into_response())
}
