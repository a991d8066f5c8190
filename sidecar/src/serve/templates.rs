//! The sidecar's template loop: whenever a token is fetched (and at least every
//! `cache.tick`), every template is rendered from the cache's current values and
//! written if its output changed (see [`crate::render`]). It reads the caches
//! without fetching, so it never adds an upstream call, and a slow write or
//! after-render action never delays a refresh.

use std::sync::Arc;

use tokio::sync::{watch, Notify};

use super::AppState;
use crate::render::context::{AwsValue, TokenValue, Values};
use s2iam::aws_vending::VendedCredentials;
use s2iam::client::TokenRequest;
use s2iam::exchange::JwtType;
use s2iam::token::Token;

/// Starts the loop; it ends at the stop signal.
pub fn spawn(
    state: Arc<AppState>,
    changed: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if state.renderer.is_empty() {
            return;
        }
        let mut last_errors: Vec<Option<String>> = Vec::new();
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                _ = changed.notified() => {}
                _ = tokio::time::sleep(state.config.cache.tick) => {}
            }
            let Some(values) = current_values(&state).await else {
                continue; // not every token is warm yet
            };
            let results = state.renderer.write_changed(&values, true).await;
            last_errors.resize(results.len(), None);
            for ((name, result), last) in results.into_iter().zip(last_errors.iter_mut()) {
                let error = result.err();
                // Logged once per distinct failure, not on every tick.
                if error.is_some() && error != *last {
                    tracing::error!(template = %name, error = %error.as_deref().unwrap_or(""), "cannot render template; retrying on the next change");
                }
                *last = error;
            }
        }
    })
}

/// The cached tokens, AWS credentials and (if a template reads it) identity, or
/// `None` while any of them is not there yet.
async fn current_values(state: &AppState) -> Option<Values> {
    let mut values = Values::default();
    for req in state.warm_requests() {
        add_token(&mut values, &req, &state.cache.peek(&req)?.token);
    }
    let region = state.aws.settings().region(state.client.provider_config());
    for profile in state.config.aws.profiles.iter().filter(|p| p.warm) {
        let creds = state.aws.cache().peek(&profile.name)?;
        values
            .aws
            .insert(profile.name.clone(), aws_value(&creds, &region));
    }
    if state.renderer.needs_identity() {
        match state.identity().await {
            Ok(id) => values.identity = Some(id),
            Err(e) => {
                tracing::debug!(error = %e, "identity not available for templates yet");
                return None;
            }
        }
    }
    Some(values)
}

/// Puts a configured token where templates find it (the first token of a
/// workspace group, or the first API token, wins).
pub fn add_token(values: &mut Values, req: &TokenRequest, token: &Token) {
    let v = TokenValue {
        token: token.jwt().clone(),
        expires_at: token.expires_at,
    };
    match (req.jwt_type, &req.workspace_group_id) {
        (JwtType::Database, Some(wg)) => {
            values.database.entry(wg.clone()).or_insert(v);
        }
        (JwtType::Api, _) => {
            values.api.get_or_insert(v);
        }
        (JwtType::Database, None) => {}
    }
}

/// AWS credentials as templates see them.
pub fn aws_value(v: &VendedCredentials, region: &str) -> AwsValue {
    AwsValue {
        access_key_id: v.credentials.access_key_id.clone(),
        secret_access_key: v.credentials.secret.clone(),
        session_token: v.credentials.session_token.clone(),
        expiration: v.expiration,
        region: region.to_string(),
    }
}
