//! `s2iam credential-process` and `s2iam s3 presign`: ask the running sidecar over
//! its Unix socket (`GET /v1/aws/credentials/{profile}`, `GET /v1/s3/presign`; no
//! token needed there, the socket's mode and uid allow-list guard it), and when no
//! sidecar answers on the socket, resolve the profile in this process from the
//! config file (`--config` or `S2IAM_CONFIG`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::{ServeConfig, ServeOverrides};
use crate::sidecar_client::socket::ProbeError;
use s2iam::aws_vending::{
    validate_profile_name, AwsCredentialVendor, PresignRequest, Presigned, VendError,
    VendedCredentials,
};
use s2iam::client::Client;
use s2iam::env::ProviderConfig;

/// Why the command failed. Never contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("the sidecar answered {status}: {message}")]
    /// The sidecar answered with an error.
    Sidecar {
        /// The HTTP status.
        status: u16,
        /// The server's own words.
        message: String,
    },
    #[error("the sidecar's answer is not what was expected: {0}")]
    /// The sidecar's answer is not the expected JSON.
    Malformed(String),
    #[error("cannot ask the sidecar: {0}")]
    /// The request to the sidecar failed.
    Probe(ProbeError),
    #[error("no sidecar answers on {socket} ({reason}), and no config file to resolve the profile in-process: give --config or set S2IAM_CONFIG")]
    /// No sidecar and no config file to fall back on.
    NoSource {
        /// The sidecar's socket.
        socket: PathBuf,
        /// What went wrong.
        reason: String,
    },
    #[error(transparent)]
    /// The config file is not valid.
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    /// The in-process client could not be built.
    Client(#[from] s2iam::client::Error),
    #[error(transparent)]
    /// In-process resolution failed.
    Aws(#[from] VendError),
}

/// Where to look.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The sidecar's socket.
    pub socket: PathBuf,
    /// The config file for in-process resolution.
    pub config: Option<PathBuf>,
    /// Deadline of the request to the sidecar.
    pub timeout: Duration,
    /// The environment and clock (and, in-process, everything a credential
    /// source needs).
    pub provider_config: ProviderConfig,
}

enum Answer {
    /// The sidecar's JSON.
    Sidecar(Value),
    /// No sidecar: resolve in-process.
    Local { socket_error: String },
}

async fn ask(opts: &LocalOptions, path: &str) -> Result<Answer, LocalError> {
    match super::socket::get(&opts.socket, path, opts.timeout).await {
        Ok((200, body)) => serde_json::from_str(&body)
            .map(Answer::Sidecar)
            .map_err(|e| LocalError::Malformed(e.to_string())),
        Ok((status, body)) => {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| s2iam::util::snippet(&body, 300));
            Err(LocalError::Sidecar { status, message })
        }
        Err(ProbeError::Connect { source, .. }) => Ok(Answer::Local {
            socket_error: source.to_string(),
        }),
        Err(e) => Err(LocalError::Probe(e)),
    }
}

/// The in-process vendor from the config file.
fn vendor(opts: &LocalOptions, socket_error: String) -> Result<AwsCredentialVendor, LocalError> {
    let cfg = opts.provider_config.clone();
    let config_path = opts
        .config
        .clone()
        .or_else(|| cfg.env.get("S2IAM_CONFIG").map(PathBuf::from))
        .ok_or_else(|| LocalError::NoSource {
            socket: opts.socket.clone(),
            reason: socket_error.clone(),
        })?;
    tracing::debug!(socket = %opts.socket.display(), reason = %socket_error, "no sidecar; resolving in-process");
    let config = ServeConfig::load(
        &cfg.env,
        &ServeOverrides {
            config: Some(config_path),
            ..Default::default()
        },
    )?;
    let client = Arc::new(Client::new(config.jwt_options(cfg))?);
    Ok(AwsCredentialVendor::new(
        config.aws.clone(),
        client,
        config.cache.policy.clone(),
    ))
}

/// The profile's credentials, from the sidecar or in-process.
pub async fn credentials(
    opts: &LocalOptions,
    profile: &str,
) -> Result<VendedCredentials, LocalError> {
    validate_profile_name(profile).map_err(|e| LocalError::Aws(VendError::BadRequest(e)))?;
    match ask(opts, &format!("/v1/aws/credentials/{profile}")).await? {
        Answer::Sidecar(doc) => {
            VendedCredentials::from_container_json(&doc, opts.provider_config.clock.now())
                .ok_or_else(|| LocalError::Malformed("not a container-credentials document".into()))
        }
        Answer::Local { socket_error } => {
            Ok(vendor(opts, socket_error)?.credentials(profile).await?)
        }
    }
}

/// A presigned URL, from the sidecar or in-process.
pub async fn presign(opts: &LocalOptions, req: &PresignRequest) -> Result<Presigned, LocalError> {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("profile", &req.profile)
        .append_pair("bucket", &req.bucket)
        .append_pair("key", &req.key);
    if let Some(m) = &req.method {
        q.append_pair("method", m);
    }
    if let Some(e) = req.expires {
        q.append_pair("expires", &e.to_string());
    }
    match ask(opts, &format!("/v1/s3/presign?{}", q.finish())).await? {
        Answer::Sidecar(doc) => {
            let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
            let url = s("url").ok_or_else(|| LocalError::Malformed("no url".into()))?;
            let expires_in = doc.get("expires_in").and_then(Value::as_u64).unwrap_or(0);
            Ok(Presigned {
                url,
                method: if s("method").as_deref() == Some("PUT") {
                    "PUT"
                } else {
                    "GET"
                },
                expires_at: s("expires_at")
                    .and_then(|t| s2iam::util::parse_rfc3339(&t))
                    .ok_or_else(|| LocalError::Malformed("no expires_at".into()))?,
                expires_in,
            })
        }
        Answer::Local { socket_error } => Ok(vendor(opts, socket_error)?.presign(req).await?),
    }
}
