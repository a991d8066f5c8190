//! Where `s2iam run` gets its tokens: its own exchange (the same client as the
//! CLI, configured from the config file) or a running sidecar's Unix socket.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::RunError;
use s2iam::client::{Client, TokenRequest};
use s2iam::env::Clock;
use s2iam::exchange::JwtType;
use s2iam::secret::Secret;

/// One token put into the child's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// The environment variable.
    pub env: String,
    /// Database or API.
    pub jwt_type: JwtType,
    /// For database tokens.
    pub workspace_group_id: Option<String>,
    /// A role to assume for it.
    pub assume_role: Option<String>,
}

impl TokenSpec {
    fn describe(&self) -> String {
        match &self.workspace_group_id {
            Some(wg) => format!("{} ({} token for {wg})", self.env, self.jwt_type),
            None => format!("{} ({} token)", self.env, self.jwt_type),
        }
    }
}

/// A token as received.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The JWT.
    pub jwt: Secret,
    /// Its wall-clock expiry.
    pub expires_at: SystemTime,
    /// When it was received (monotonic).
    pub received: Instant,
    /// Time left when it was received.
    pub lifetime: Duration,
}

/// The token source.
pub enum Source {
    /// Exchange in this process.
    Local {
        /// The client (detection, identity, exchange).
        client: Box<Client>,
        /// AWS role session name for assumed roles.
        role_session_name: String,
        /// GCP ID-token audience.
        gcp_audience: String,
    },
    /// Ask the sidecar listening on this socket.
    Sidecar {
        /// Its Unix socket.
        socket: PathBuf,
        /// Deadline of one request.
        timeout: Duration,
        /// The wall clock the answer's `expires_in` is counted from.
        clock: Arc<dyn Clock>,
    },
}

impl Source {
    /// Every token of `specs`, in order; the first failure stops it.
    pub async fn fetch_all(&self, specs: &[TokenSpec]) -> Result<Vec<Fetched>, RunError> {
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            out.push(self.fetch(spec).await?);
        }
        Ok(out)
    }

    async fn fetch(&self, spec: &TokenSpec) -> Result<Fetched, RunError> {
        match self {
            Source::Local {
                client,
                role_session_name,
                gcp_audience,
            } => {
                let req = TokenRequest {
                    jwt_type: spec.jwt_type,
                    workspace_group_id: spec.workspace_group_id.clone(),
                    assume_role: spec.assume_role.clone(),
                    role_session_name: role_session_name.clone(),
                    gcp_audience: gcp_audience.clone(),
                };
                let t = client.token(&req).await.map_err(|e| RunError::Token {
                    what: spec.describe(),
                    message: e.to_string(),
                })?;
                Ok(Fetched {
                    jwt: t.jwt().clone(),
                    expires_at: t.expires_at,
                    received: t.received(),
                    lifetime: t.lifetime(),
                })
            }
            Source::Sidecar {
                socket,
                timeout,
                clock,
            } => from_sidecar(socket, *timeout, clock.now(), spec).await,
        }
    }
}

async fn from_sidecar(
    socket: &std::path::Path,
    timeout: Duration,
    now: SystemTime,
    spec: &TokenSpec,
) -> Result<Fetched, RunError> {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(wg) = &spec.workspace_group_id {
        q.append_pair("workspaceGroupID", wg);
    }
    if let Some(role) = &spec.assume_role {
        q.append_pair("assumeRole", role);
    }
    let path = format!("/v1/token/{}?{}", spec.jwt_type, q.finish());
    let fail = |message: String| RunError::Token {
        what: spec.describe(),
        message,
    };
    let (status, body) = crate::sidecar_client::socket::get(socket, &path, timeout)
        .await
        .map_err(|e| fail(format!("from the sidecar: {e}")))?;
    let doc: Value = serde_json::from_str(&body).map_err(|_| {
        fail(format!(
            "the sidecar answered {status} with something that is not JSON"
        ))
    })?;
    if status != 200 {
        let message = doc.get("message").and_then(Value::as_str).unwrap_or("");
        return Err(fail(format!(
            "the sidecar answered {status}: {}",
            s2iam::util::snippet(message, 300)
        )));
    }
    let received = Instant::now();
    let jwt = doc
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| fail("the sidecar's answer has no token".into()))?;
    let expires_in = doc
        .get("expires_in")
        .and_then(Value::as_u64)
        .ok_or_else(|| fail("the sidecar's answer has no expires_in".into()))?;
    let lifetime = Duration::from_secs(expires_in);
    Ok(Fetched {
        jwt: Secret::new(jwt),
        expires_at: s2iam::util::time_after(now, lifetime),
        received,
        lifetime,
    })
}
