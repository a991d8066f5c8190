//! One proxied request: check the caller, take the JWT from the sidecar's cache,
//! rewrite the headers, and stream the request to the upstream and its answer back.
//!
//! Headers: the client's `Authorization` and `Proxy-Authorization` are dropped (the
//! proxy's JWT replaces them; a client credential never leaves the machine), as are
//! `Host` (the upstream's is set from its URL) and the hop-by-hop headers of RFC 9110
//! §7.6.1 (`Connection` and every header it names, `Keep-Alive`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`, `Proxy-Connection`), and `Expect` (the proxy's
//! own server already answered `100 Continue`). Everything else, both ways, passes
//! unchanged; redirects are returned to the client, never followed.
//!
//! Traces: with tracing on ([`s2iam::otel`]), each request from an allowed caller is
//! an `s2iam.api_proxy.request` server span continuing the caller's W3C
//! `traceparent` (a token fetched in line is its child), and the upstream gets this
//! span's `traceparent` in place of the caller's, so the upstream's spans hang under
//! the proxy's; `tracestate` passes unchanged. With tracing off, the caller's
//! `traceparent` passes unchanged like any other header. A refused caller starts no
//! span: it cannot put trace ids of its choosing into the exporter. The span ends
//! when the upstream's answer head is relayed (the body streams on after it).
//!
//! The proxy's own answers are JSON `{"error", "message"}`: 403 `forbidden` (a
//! caller outside `listen.allowed_uids`, on either transport, or a non-loopback
//! `Host` on TCP),
//! 405 `method_not_allowed` (`CONNECT`), 400 `bad_request_target` (a target that
//! is not a path, or a path leaving the upstream's base path: see [`super::target`]),
//! 503 `token_unavailable` (with why), 502 `upstream_unreachable` /
//! `upstream_error`, 504 `upstream_timeout`.

use std::sync::Arc;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{full, Counted, ProxyBody};
use super::ApiProxyError;
use crate::config::api_proxy::ApiProxyConfig;
use crate::serve::{describe, AppState};
use s2iam::cache::CacheError;
use s2iam::client::TokenRequest;
use s2iam::env::Env;
use s2iam::otel::{Span, SpanKind};

/// The W3C trace context header (<https://www.w3.org/TR/trace-context/>).
const TRACEPARENT: &str = "traceparent";

/// Who is calling, as the listener established it.
#[derive(Debug, Clone, Copy)]
pub enum Caller {
    /// Over loopback TCP: the `Host` header is checked.
    Tcp,
    /// Over the Unix socket, by a peer the allow-list admits.
    UnixAllowed,
    /// A caller the listener refused (outside `listen.allowed_uids`, or a TCP
    /// peer whose uid the kernel did not name while that list is set).
    Refused,
}

/// A configured proxy: its upstream client and the token it adds.
pub struct Proxy {
    /// The validated settings.
    pub config: ApiProxyConfig,
    name: Arc<str>,
    token: TokenRequest,
    http: reqwest::Client,
    state: Arc<AppState>,
}

impl Proxy {
    /// Builds the upstream client (with `ca_file`) for one `[[api_proxy]]`.
    pub fn new(
        config: ApiProxyConfig,
        state: Arc<AppState>,
        env: &Env,
    ) -> Result<Self, ApiProxyError> {
        let http = upstream_client(&config, env)?;
        Ok(Self {
            name: config.name.as_str().into(),
            token: token_request(&config, &state.config),
            config,
            http,
            state,
        })
    }

    /// Forwards one request with the JWT in place of the client's `Authorization`.
    pub async fn handle(&self, req: Request<Incoming>, caller: Caller) -> Response<ProxyBody> {
        let started = std::time::Instant::now();
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let mut span = self.span(&req, caller, &path);
        let resp = span.scope(self.forward(req, caller, &span)).await;
        let status = resp.status().as_u16();
        span.set("http.response.status_code", status);
        if resp.status().is_server_error() {
            span.fail(resp.status().canonical_reason().unwrap_or("server error"));
        }
        self.state
            .metrics
            .api_proxy
            .count_request(&self.name, status);
        // The path only: a query may carry values the application considers private.
        tracing::debug!(proxy = %self.name, %method, path, status, headers_ms = started.elapsed().as_millis() as u64, "API proxy request");
        resp
    }

    /// The request's span (off for a refused caller or with tracing off): the
    /// proxy's name, the method and the path (escaped and cut; never the query).
    fn span(&self, req: &Request<Incoming>, caller: Caller, path: &str) -> Span {
        if matches!(caller, Caller::Refused) {
            return Span::off();
        }
        let remote = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
        let mut span =
            self.state
                .tracer
                .span_from_remote("s2iam.api_proxy.request", SpanKind::Server, remote);
        span.set("s2iam.proxy", &*self.name);
        span.set("http.request.method", req.method().as_str());
        span.set("url.path", s2iam::logging::field(path));
        span
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        caller: Caller,
        span: &Span,
    ) -> Response<ProxyBody> {
        match caller {
            Caller::Refused => {
                return error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this user is not allowed to use the s2iam API proxy (listen.allowed_uids)",
                )
            }
            Caller::Tcp => {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                if !crate::serve::listen::host_is_loopback(host) {
                    s2iam::refusal!(self.state.refusals, proxy = %self.name, host = %s2iam::logging::field(host), "refused API proxy request with a non-loopback Host header");
                    return error(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "the Host header must name a loopback address",
                    );
                }
            }
            Caller::UnixAllowed => {}
        }
        if req.method() == axum::http::Method::CONNECT {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the API proxy forwards requests to its upstream; it does not open tunnels",
            );
        }
        let url = match super::target::upstream_url(&self.config.upstream, req.uri()) {
            Ok(url) => url,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request_target", e.to_string()),
        };
        let jwt = match self.state.cache.get(self.token.clone()).await {
            Ok(token) => token.token.jwt().clone(),
            Err(CacheError { error: e }) => {
                self.state
                    .metrics
                    .api_proxy
                    .count_upstream_error(&self.name, "token");
                tracing::warn!(proxy = %self.name, error = %e, "API proxy has no token");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "token_unavailable",
                    format!("s2iam cannot get the {} token: {e}", describe(&self.token)),
                );
            }
        };
        let (parts, body) = req.into_parts();
        let mut headers = strip_hop_by_hop(parts.headers);
        headers.remove(header::HOST);
        headers.remove(header::AUTHORIZATION);
        headers.remove(header::PROXY_AUTHORIZATION);
        headers.remove(header::EXPECT);
        let Ok(mut bearer) = HeaderValue::from_str(&format!("Bearer {}", jwt.expose())) else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unavailable",
                "the auth service issued a token that is not a valid header value",
            );
        };
        bearer.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, bearer);
        if let Some(ours) = span
            .traceparent()
            .and_then(|t| HeaderValue::from_str(&t).ok())
        {
            headers.insert(TRACEPARENT, ours);
        }
        let mut upstream = self.http.request(parts.method, &url).headers(headers);
        if !(body.is_end_stream() && body.size_hint().exact() == Some(0)) {
            let counted = Counted::new(
                body,
                self.state.metrics.clone(),
                self.name.clone(),
                "upstream",
            );
            upstream = upstream.body(reqwest::Body::wrap(counted));
        }
        let sent = tokio::time::timeout(self.config.timeout, upstream.send()).await;
        match sent {
            Ok(Ok(resp)) => self.relay(resp),
            Ok(Err(e)) => self.upstream_failed(e),
            Err(_) => {
                self.state
                    .metrics
                    .api_proxy
                    .count_upstream_error(&self.name, "timeout");
                error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "{} sent no response within {:?} (api_proxy timeout)",
                        self.config.upstream, self.config.timeout
                    ),
                )
            }
        }
    }

    /// The upstream's answer, streamed back as it arrives.
    fn relay(&self, resp: reqwest::Response) -> Response<ProxyBody> {
        let resp: Response<reqwest::Body> = resp.into();
        let (mut parts, body) = resp.into_parts();
        parts.headers = strip_hop_by_hop(std::mem::take(&mut parts.headers));
        let counted = Counted::new(
            body,
            self.state.metrics.clone(),
            self.name.clone(),
            "downstream",
        );
        Response::from_parts(parts, counted.map_err(Into::into).boxed())
    }

    fn upstream_failed(&self, e: reqwest::Error) -> Response<ProxyBody> {
        let (reason, status, code) = if e.is_timeout() {
            ("timeout", StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
        } else if e.is_connect() {
            ("connect", StatusCode::BAD_GATEWAY, "upstream_unreachable")
        } else {
            ("other", StatusCode::BAD_GATEWAY, "upstream_error")
        };
        self.state
            .metrics
            .api_proxy
            .count_upstream_error(&self.name, reason);
        // The URL holds the client's path and query: the message names the upstream only.
        let why = error_chain(&e.without_url());
        tracing::warn!(proxy = %self.name, upstream = %self.config.upstream, error = %why, "API proxy upstream failed");
        let what = match reason {
            "connect" => "cannot connect to",
            "timeout" => "timed out talking to",
            _ => "request failed to",
        };
        error(
            status,
            code,
            format!("{what} {}: {why}", self.config.upstream),
        )
    }
}

/// The cache key of the proxy's token: the same as a `[[token]]` of that kind, so
/// the two share one cached JWT.
pub fn token_request(config: &ApiProxyConfig, serve: &crate::config::ServeConfig) -> TokenRequest {
    TokenRequest {
        jwt_type: config.token.jwt_type(),
        workspace_group_id: config.token.workspace_group_id().map(String::from),
        assume_role: None,
        role_session_name: serve.client.role_session_name.clone(),
        gcp_audience: serve.client.gcp_audience.clone(),
    }
}

/// The upstream client ([`s2iam::http::forwarding_client`]) with `ca_file` read.
fn upstream_client(config: &ApiProxyConfig, env: &Env) -> Result<reqwest::Client, ApiProxyError> {
    let mut roots = Vec::new();
    if let Some(path) = &config.ca_file {
        let ca_error = |message: String| ApiProxyError::CaFile {
            name: config.name.clone(),
            path: path.clone(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        roots = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ca_error("no PEM certificate in it".into()))?;
    }
    let timeouts = s2iam::http::ForwardingTimeouts {
        connect: config.connect_timeout,
        read: config.timeout,
    };
    s2iam::http::forwarding_client(&env.proxy_settings(), timeouts, roots).map_err(|e| {
        ApiProxyError::Client {
            name: config.name.clone(),
            message: error_chain(&e),
        }
    })
}

/// `headers` without the hop-by-hop ones (including those `Connection` names).
fn strip_hop_by_hop(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
    headers
}

/// An error and its sources, `: `-separated (reqwest's own message is terse).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// One of the proxy's own JSON errors.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<ProxyBody> {
    let body = serde_json::json!({"error": code, "message": message.into()}).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "application/json"),
            ("x-request-id", "abc"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let kept = strip_hop_by_hop(h);
        let mut names: Vec<&str> = kept.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-type", "x-request-id"]);
    }
}
