//! What a template can read, and the placeholder values `--check` renders with.
//!
//! ```text
//! database["<workspace group>"].token / .expires_at / .workspace_group_id
//! api.token / .expires_at
//! identity.provider / .principal / .account / .region / .project / .tenant / .resource_type
//! aws["<profile>"].access_key_id / .secret_access_key / .session_token / .expiration / .region
//! ```
//!
//! Only configured tokens (`[[token]]`) and warm AWS profiles (`warm = true`) are
//! there: a template naming anything else fails `--check` with "undefined value".
//! `project` is set on GCP and `tenant` on Azure (both the account); elsewhere
//! they are undefined, so a template that needs them fails loudly. There is no
//! "seconds left": it would change the output, and so rewrite the file, every time.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use s2iam::provider::{CloudIdentity, CloudProvider};
use s2iam::secret::Secret;
use s2iam::util::{rfc3339, time_after};

/// A JWT as a template sees it.
#[derive(Debug, Clone)]
pub struct TokenValue {
    /// The JWT.
    pub token: Secret,
    /// Its expiry.
    pub expires_at: SystemTime,
}

/// AWS credentials as a template sees them.
#[derive(Debug, Clone)]
pub struct AwsValue {
    /// `AKIA...` / `ASIA...`.
    pub access_key_id: String,
    /// The secret key.
    pub secret_access_key: Secret,
    /// Present for temporary credentials.
    pub session_token: Option<Secret>,
    /// When they expire.
    pub expiration: SystemTime,
    /// The AWS region of the sidecar's settings.
    pub region: String,
}

/// Everything a template may reference, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// Database tokens by workspace group.
    pub database: BTreeMap<String, TokenValue>,
    /// The API token, if one is configured.
    pub api: Option<TokenValue>,
    /// The workload's identity, when a template reads it.
    pub identity: Option<CloudIdentity>,
    /// AWS credentials by profile.
    pub aws: BTreeMap<String, AwsValue>,
}

/// The names a configuration makes available, for placeholders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Available {
    /// Workspace groups of the configured database tokens.
    pub workspace_groups: Vec<String>,
    /// Whether an API token is configured.
    pub api: bool,
    /// Warm AWS profiles.
    pub aws_profiles: Vec<String>,
}

impl Values {
    /// The template context. The only place tokens are exposed for rendering.
    pub fn context(&self) -> Value {
        let mut ctx = Map::new();
        let database: Map<String, Value> = self
            .database
            .iter()
            .map(|(wg, t)| {
                let mut v = token_json(t);
                v["workspace_group_id"] = json!(wg);
                (wg.clone(), v)
            })
            .collect();
        ctx.insert("database".into(), Value::Object(database));
        if let Some(api) = &self.api {
            ctx.insert("api".into(), token_json(api));
        }
        if let Some(id) = &self.identity {
            ctx.insert("identity".into(), identity_json(id));
        }
        let aws: Map<String, Value> = self
            .aws
            .iter()
            .map(|(name, a)| {
                let mut v = json!({
                    "access_key_id": a.access_key_id,
                    "secret_access_key": a.secret_access_key.expose(),
                    "expiration": rfc3339(a.expiration),
                    "region": a.region,
                });
                if let Some(t) = &a.session_token {
                    v["session_token"] = json!(t.expose());
                }
                (name.clone(), v)
            })
            .collect();
        ctx.insert("aws".into(), Value::Object(aws));
        Value::Object(ctx)
    }

    /// Placeholder values of the right shape (a three-part JWT, an RFC 3339 time)
    /// for everything `available` names: what `--check` renders with.
    pub fn placeholders(available: &Available) -> Self {
        let expires_at = time_after(
            SystemTime::UNIX_EPOCH,
            std::time::Duration::from_secs(4_102_444_800),
        );
        let jwt = |what: &str| TokenValue {
            token: Secret::new(format!(
                "eyJhbGciOiJub25lIn0.eyJwbGFjZWhvbGRlciI6dHJ1ZX0.{what}"
            )),
            expires_at,
        };
        Self {
            database: available
                .workspace_groups
                .iter()
                .map(|wg| (wg.clone(), jwt("database")))
                .collect(),
            api: available.api.then(|| jwt("api")),
            identity: Some(CloudIdentity {
                provider: CloudProvider::Gcp,
                identifier: "placeholder@example.iam.gserviceaccount.com".into(),
                account_id: "placeholder-project".into(),
                region: "placeholder-region".into(),
                resource_type: "placeholder".into(),
                additional_claims: BTreeMap::new(),
                credential_source: None,
            }),
            aws: available
                .aws_profiles
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        AwsValue {
                            access_key_id: "ASIAPLACEHOLDER".into(),
                            secret_access_key: Secret::new("placeholder-secret"),
                            session_token: Some(Secret::new("placeholder-session")),
                            expiration: expires_at,
                            region: "us-east-1".into(),
                        },
                    )
                })
                .collect(),
        }
    }
}

fn token_json(t: &TokenValue) -> Value {
    json!({
        "token": t.token.expose(),
        "expires_at": rfc3339(t.expires_at),
    })
}

fn identity_json(id: &CloudIdentity) -> Value {
    let mut v = json!({
        "provider": id.provider.to_string(),
        "principal": id.identifier,
        "account": id.account_id,
        "region": id.region,
        "resource_type": id.resource_type,
    });
    match id.provider {
        CloudProvider::Gcp => v["project"] = json!(id.account_id),
        CloudProvider::Azure => v["tenant"] = json!(id.account_id),
        CloudProvider::Aws => {}
    }
    v
}
