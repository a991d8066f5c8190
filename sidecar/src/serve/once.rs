//! `s2iam serve --once` (alias `--exit-after-auth`): fetch every configured
//! token and warm AWS profile, write every sink and template, and exit — 0 when
//! all of it worked, non-zero with every reason otherwise. For init containers,
//! CronJobs, CI jobs and systemd's `ExecStartPre=`. After-render actions do not
//! run: the application they would notify has not started yet. A sink that already
//! holds a valid token of its own is kept (see [`super::adopt`]): a second run, or
//! the sidecar after this init container, makes no exchange.

use std::sync::Arc;

use super::templates::{add_token, aws_value};
use super::{describe, warm_requests};
use crate::config::ServeConfig;
use crate::render::context::Values;
use crate::render::{Outcome, Renderer};
use s2iam::aws_vending::AwsCredentialVendor;
use s2iam::client::{Client, TokenRequest};
use s2iam::env::ProviderConfig;
use s2iam::util::atomic_file as sinks;

/// What `--once` could not do, every reason (never a token).
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    /// Tokens, sinks or templates that failed, one reason each.
    #[error("{} failed:\n  {}", .0.len(), .0.join("\n  "))]
    Failed(Vec<String>),
    /// The client or the templates could not be set up.
    #[error(transparent)]
    Setup(#[from] super::ServeError),
}

/// Does the one pass; returns one line per file written.
pub async fn run(
    config: ServeConfig,
    provider_config: ProviderConfig,
) -> Result<Vec<String>, OnceError> {
    let renderer = Renderer::new(config.templates.clone()).map_err(super::ServeError::from)?;
    let client = Arc::new(
        Client::new(config.jwt_options(provider_config)).map_err(super::ServeError::from)?,
    );
    let mut values = Values::default();
    let mut failures = Vec::new();
    let mut written = Vec::new();
    for (req, t) in warm_requests(&config).iter().zip(&config.tokens) {
        // A valid token this (or an earlier) run wrote is kept: no exchange.
        if let Some(sink) = &t.sink {
            let now = client.provider_config().clock.now();
            if let Ok(token) = super::adopt::adopt(req, sink, &config.cache.policy, now) {
                add_token(&mut values, req, &token);
                written.push(format!(
                    "kept {} (token {}, still valid: no exchange)",
                    sink.path.display(),
                    describe(req)
                ));
                continue;
            }
        }
        match client.token(req).await {
            Ok(token) => {
                add_token(&mut values, req, &token);
                if let Some(sink) = &t.sink {
                    let opts = sinks::FileOptions {
                        mode: sink.mode,
                        owner: sink.owner,
                        group: sink.group,
                    };
                    match sinks::write_file(&sink.path, token.jwt().expose().as_bytes(), &opts) {
                        Ok(()) => written.push(format!(
                            "wrote {} (token {})",
                            sink.path.display(),
                            describe(req)
                        )),
                        Err(e) => failures.push(format!("sink {}: {e}", sink.path.display())),
                    }
                }
            }
            Err(e) => failures.push(format!("token {}: {e}", describe(req))),
        }
    }
    let vendor = AwsCredentialVendor::new(
        config.aws.clone(),
        client.clone(),
        config.cache.policy.clone(),
    );
    let region = config.aws.region(client.provider_config());
    for profile in config.aws.profiles.iter().filter(|p| p.warm) {
        match vendor.credentials(&profile.name).await {
            Ok(v) => {
                values
                    .aws
                    .insert(profile.name.clone(), aws_value(&v, &region));
            }
            Err(e) => failures.push(format!("AWS profile {}: {e}", profile.name)),
        }
    }
    if renderer.needs_identity() {
        let req = TokenRequest {
            gcp_audience: config.client.gcp_audience.clone(),
            ..TokenRequest::api()
        };
        match client.identity(&req).await {
            Ok((_, id)) => values.identity = Some(id),
            Err(e) => failures.push(format!("identity: {e}")),
        }
    }
    if !failures.is_empty() {
        if !renderer.is_empty() {
            failures.push("templates not rendered (their inputs are missing)".into());
        }
        return Err(OnceError::Failed(failures));
    }
    let results = renderer.write_changed(&values, false).await;
    for ((name, result), spec) in results.into_iter().zip(&config.templates) {
        match result {
            Ok(Outcome::Written | Outcome::Unchanged) => {
                written.push(format!("wrote {} ({name})", spec.destination.display()));
            }
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Ok(written)
    } else {
        Err(OnceError::Failed(failures))
    }
}
