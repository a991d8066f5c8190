//! `exchange` (only with `doctor --exchange`): one real token request, the way
//! the CLI makes it, against the configured auth service. Every other check
//! predicts; this one asks, so a service that refuses the identity (HTTP 401:
//! the principal has no access, or the service cannot verify the cloud's
//! credentials) shows up here even when every prediction passes. The token
//! itself is never printed: only its `sub`, type and lifetime.

use super::{Check, DoctorOptions};
use crate::client::{Client, JwtOptions, TokenRequest};
use crate::env::ProviderConfig;
use crate::exchange::{ExchangeConfig, ExchangeError, JwtType};
use crate::provider::CloudProvider;

/// The check's id.
pub const ID: &str = "exchange";

/// Which token `doctor --exchange` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeProbe {
    /// A database JWT for this workspace group.
    Database(String),
    /// An API JWT (needs no workspace group).
    Api,
}

/// Runs the exchange for `probe` with the doctor's options; `provider` is the
/// one detection chose (so the exchange does not detect again), `predicted` the
/// `sub` the `principal` check computed.
pub async fn check(
    cfg: &ProviderConfig,
    opts: &DoctorOptions,
    probe: &ExchangeProbe,
    provider: Option<CloudProvider>,
    predicted: Option<&str>,
) -> Check {
    let options = JwtOptions {
        server_url: opts.server_url.clone(),
        allow_http: opts.allow_http,
        provider: opts.provider.or(provider),
        force_detect: false,
        timeout: opts.timeout,
        exchange: ExchangeConfig {
            identity_format_preference: opts.identity_format_preference.clone(),
            ..ExchangeConfig::default()
        },
        provider_config: Some(cfg.clone()),
        ..JwtOptions::default()
    };
    let client = match Client::new(options) {
        Ok(c) => c,
        Err(e) => return Check::fail(ID, e.to_string(), SERVER_FIX),
    };
    let mut req = match probe {
        ExchangeProbe::Database(wg) => TokenRequest::database(wg),
        ExchangeProbe::Api => TokenRequest::api(),
    };
    req.assume_role = opts.assume_role.clone();
    req.role_session_name = opts.role_session_name.clone();
    req.gcp_audience = opts.gcp_audience.clone();
    match client.token(&req).await {
        Ok(token) => issued(&req, &token, predicted, cfg),
        Err(e) => refused(&e, predicted),
    }
}

const SERVER_FIX: &str = "set --server-url or S2IAM_JWT_SERVER_URL to the https URL of the auth service (http:// only with --allow-http, for testing)";

fn issued(
    req: &TokenRequest,
    token: &crate::token::Token,
    predicted: Option<&str>,
    cfg: &ProviderConfig,
) -> Check {
    let sub = token.claims.sub.clone().unwrap_or_default();
    let left = token
        .expires_at
        .duration_since(cfg.clock.now())
        .unwrap_or_default()
        .as_secs();
    let what = match req.jwt_type {
        JwtType::Database => format!(
            "a database JWT for {}",
            req.workspace_group_id.as_deref().unwrap_or_default()
        ),
        JwtType::Api => "an API JWT".to_string(),
    };
    let message = format!(
        "the auth service issued {what}: sub={sub}, valid {left} s (the token is not shown)"
    );
    let check = match predicted {
        Some(p) if !sub.is_empty() && p != sub => Check::warn(
            ID,
            format!("{message}; the principal check predicted sub={p}"),
            "grant access to the sub the service issued: it is the one SingleStore checks",
        ),
        _ => Check::pass(ID, message),
    };
    check
        .detail("sub", sub)
        .detail("jwt_type", req.jwt_type.to_string())
        .detail("expires_at", crate::util::rfc3339(token.expires_at))
}

fn refused(e: &crate::client::Error, predicted: Option<&str>) -> Check {
    let principal = predicted.map_or("the workload's principal".to_string(), |p| p.to_string());
    let fix = match e {
        crate::client::Error::Exchange(x) => match x.status() {
            Some(401) => format!("the auth service refused the identity: grant {principal} access in SingleStore, check that --server-url is the service your organisation uses, and that this machine's clock is right"),
            Some(403) | Some(404) => format!("no access for {principal} here: grant it in SingleStore (for a database JWT, on this workspace group)"),
            Some(_) => "the auth service failed: retry later, or check --server-url".to_string(),
            None if matches!(x, ExchangeError::MissingWorkspaceGroup) => {
                "give --workspace-group-id for a database JWT".to_string()
            }
            None => SERVER_FIX.to_string(),
        },
        _ => "the checks above say why no identity was found".to_string(),
    };
    Check::fail(ID, format!("the token request failed: {e}"), fix)
}
