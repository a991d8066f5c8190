//! The Azure Arc agent's identity endpoint (HIMDS, `http://localhost:40342` on a real
//! Arc-enabled server; here under `/arc` so it shares the listener with IMDS):
//!
//! ```text
//! GET /arc/metadata/identity/oauth2/token?api-version=2020-06-01&resource=R   (Metadata: true)
//! → 401, Www-Authenticate: Basic realm=<key dir>/<random>.key   (the agent writes the file)
//! GET ... again with Authorization: Basic <contents of that file>
//! → 200 {access_token, expires_in, expires_on, not_before, resource, token_type, client_id}
//! ```
//!
//! The challenge proves the caller can read the agent's token directory (root and the
//! `himds` group only), which is why clients check that the realm names a `.key` file
//! of at most 4096 bytes directly in that directory before reading it. The directory
//! is `azure.arc_key_dir` (a temporary directory per mock cloud when unset); tests put
//! it where they like, and `scripts/check-azure-clients` points it at the real
//! `/var/opt/azcmagent/tokens` inside a private mount namespace.
//!
//! `azure.arc_legacy_agent` is an agent without user-assigned identities: it ignores
//! the selector and answers with the machine's identity (clients must notice).
//! [`ArcChallenge`] makes the agent misbehave the ways clients must refuse: no
//! challenge header, a key file outside the directory, a file without `.key`, an
//! oversize file. Errors are IMDS-shaped `{"error", "error_description"}`; a wrong or
//! stale key is 401 with a fresh challenge, as the agent answers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{
    imds::IMDS_SELECTORS, imds_token_answer, oauth_error, parse_selector, select_identity,
    AzureIdentity, MockCloud, Subject,
};
use crate::util::{query_param, random_hex};

/// The token path, under the `/arc` prefix.
pub(super) const PATH: &str = "/arc/metadata/identity/oauth2/token";
/// The api-versions the agent speaks (azure-identity sends 2020-06-01, older SDKs
/// 2019-11-01).
const API_VERSIONS: [&str; 2] = ["2020-06-01", "2019-11-01"];
/// Keys kept valid at once; older ones are forgotten (and their files removed).
const MAX_KEYS: usize = 64;
/// What clients accept at most, and what [`ArcChallenge::OversizeKey`] exceeds.
const MAX_KEY_BYTES: usize = 4096;

/// How the mock agent answers the first (unauthenticated) request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArcChallenge {
    /// As the agent does: a fresh key file in the key directory.
    #[default]
    Normal,
    /// 401 without `Www-Authenticate`.
    MissingHeader,
    /// The realm names a key file in a sub-directory of the key directory.
    WrongDirectory,
    /// The realm names a file that does not end in `.key`.
    NotKeySuffix,
    /// The key file is larger than 4096 bytes.
    OversizeKey,
}

impl std::str::FromStr for ArcChallenge {
    type Err = String;

    /// `normal`, `missing-header`, `wrong-directory`, `not-key-suffix`, `oversize-key`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "normal" => Self::Normal,
            "missing-header" => Self::MissingHeader,
            "wrong-directory" => Self::WrongDirectory,
            "not-key-suffix" => Self::NotKeySuffix,
            "oversize-key" => Self::OversizeKey,
            _ => {
                return Err(format!(
                    "unknown Arc challenge {s:?}: use normal, missing-header, wrong-directory, \
                     not-key-suffix or oversize-key"
                ))
            }
        })
    }
}

/// The keys the agent has handed out, by key, with their files.
#[derive(Default)]
pub struct ArcKeys {
    keys: Mutex<HashMap<String, PathBuf>>,
    default_dir: Mutex<Option<PathBuf>>,
}

impl std::fmt::Debug for ArcKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArcKeys").finish_non_exhaustive()
    }
}

impl ArcKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PathBuf>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, key: String, file: PathBuf) {
        let mut keys = self.lock();
        if keys.len() >= MAX_KEYS {
            for (_, old) in keys.drain() {
                let _ = std::fs::remove_file(old);
            }
        }
        keys.insert(key, file);
    }

    fn accepts(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// A private directory for this mock cloud when the config names none.
    fn default_dir(&self) -> std::io::Result<PathBuf> {
        let mut dir = self.default_dir.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = dir.as_ref() {
            return Ok(d.clone());
        }
        let d = std::env::temp_dir().join(format!(
            "s2iam-mock-arc-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        std::fs::create_dir_all(&d)?;
        *dir = Some(d.clone());
        Ok(d)
    }
}

impl Drop for ArcKeys {
    fn drop(&mut self) {
        for (_, file) in self.lock().drain() {
            let _ = std::fs::remove_file(file);
        }
        if let Some(d) = self.default_dir.lock().ok().and_then(|mut d| d.take()) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    oauth_error(status, error, description)
}

pub(super) async fn token(
    State(cloud): State<MockCloud>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let config = cloud.config();
    let Some(az) = config.azure.as_ref() else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    let query = uri.query();
    if headers.get("metadata").map(|v| v.as_bytes()) != Some(b"true".as_slice()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    match query_param(query, "api-version") {
        Some(v) if API_VERSIONS.contains(&v.as_str()) => {}
        Some(v) if !v.is_empty() => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Invalid value for query variable 'api-version'",
            )
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required query variable 'api-version' is missing",
            )
        }
    }
    let resource = query_param(query, "resource").unwrap_or_default();
    if resource.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(str::trim);
    match presented {
        Some(key) if cloud.azure_arc_keys().accepts(key) => {}
        _ => return challenge(&cloud, az),
    }
    let selector = match az.arc_legacy_agent {
        true => Ok(super::Selector::Default),
        false => parse_selector(query, &IMDS_SELECTORS),
    };
    let identity = match selector.and_then(|s| select_identity(az, &s)) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let mut subject = Subject::managed(az, &identity);
    subject.az_rid = Some(machine_resource_id(az));
    imds_token_answer(&cloud, &subject, &identity.client_id, &resource)
}

/// The Arc machine's ARM id (`Microsoft.HybridCompute/machines`).
fn machine_resource_id(az: &AzureIdentity) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.HybridCompute/machines/{}",
        az.subscription_id, az.resource_group, az.vm_name
    )
}

/// A 401 with a fresh key file named in `Www-Authenticate` (or the configured
/// misbehaviour).
fn challenge(cloud: &MockCloud, az: &AzureIdentity) -> Response {
    let unauthorized = |realm: Option<&Path>| {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authorization header with a valid key is required",
        );
        if let Some(realm) = realm {
            let value = format!("Basic realm={}", realm.display());
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    };
    if az.arc_challenge == ArcChallenge::MissingHeader {
        return unauthorized(None);
    }
    let dir = match az.arc_key_dir.clone() {
        Some(d) => d,
        None => match cloud.azure_arc_keys().default_dir() {
            Ok(d) => d,
            Err(e) => return internal(&e),
        },
    };
    let (dir, name, key) = match az.arc_challenge {
        ArcChallenge::WrongDirectory => (dir.join("elsewhere"), random_name(".key"), random_key()),
        ArcChallenge::NotKeySuffix => (dir, random_name(".txt"), random_key()),
        ArcChallenge::OversizeKey => (dir, random_name(".key"), "k".repeat(MAX_KEY_BYTES + 1)),
        ArcChallenge::Normal | ArcChallenge::MissingHeader => {
            (dir, random_name(".key"), random_key())
        }
    };
    let file = dir.join(name);
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, &key)) {
        return internal(&e);
    }
    cloud.azure_arc_keys().remember(key, file.clone());
    unauthorized(Some(&file))
}

fn internal(e: &std::io::Error) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        &format!("cannot write the key file: {e}"),
    )
}

fn random_name(suffix: &str) -> String {
    format!("{}{suffix}", crate::util::random_uuid())
}

fn random_key() -> String {
    random_hex(32)
}
