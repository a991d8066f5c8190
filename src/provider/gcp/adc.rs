//! Application Default Credentials: which Google credential file applies, and
//! what it says.
//!
//! The order is the Google SDKs' (google-auth `default()`, Go `FindDefaultCredentials`):
//!
//! 1. the file `GOOGLE_APPLICATION_CREDENTIALS` names (an error if it is missing or
//!    unreadable: the user asked for it);
//! 2. gcloud's well-known file, `$CLOUDSDK_CONFIG/application_default_credentials.json`
//!    or `$HOME/.config/gcloud/application_default_credentials.json` (written by
//!    `gcloud auth application-default login` or `gcloud iam workload-identity-pools
//!    create-cred-config --output-file` there), when it exists;
//! 3. the metadata server (not here: see `metadata.rs`).
//!
//! Three file types yield an ID token: `external_account` (workload identity
//! federation, see `external/`), `service_account` (a key file, see `oauth.rs`) and
//! `authorized_user` (a developer's gcloud login, see `oauth.rs`). Every secret in
//! them (private key, client secret, refresh token) is a [`Secret`]: `Debug` never
//! shows it.
//!
//! Every URL a file names is checked by [`check_url`]: `https`, or plain `http` only
//! to loopback (tests), to the cloud metadata addresses for credential sources
//! that read them, or anywhere with `S2IAM_ALLOW_HTTP=1` (testing only, as for the
//! auth service URL).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::env::ProviderConfig;
use crate::Secret;

/// Google's OAuth 2.0 token endpoint, when an `authorized_user` file names none.
pub const DEFAULT_OAUTH_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The file name gcloud writes in its configuration directory.
pub const WELL_KNOWN_FILE: &str = "application_default_credentials.json";

/// Where the credential file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    EnvVar,
    /// gcloud's well-known application-default file.
    WellKnown,
}

/// A credential file found by the ADC order.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its path.
    pub path: PathBuf,
    /// How it was found.
    pub origin: Origin,
    /// What it holds.
    pub file: CredentialsFile,
}

impl Found {
    /// `external_account (aws1) from GOOGLE_APPLICATION_CREDENTIALS=/path`: what
    /// `s2iam identity` and `detect` report.
    pub fn describe(&self) -> String {
        let from = match self.origin {
            Origin::EnvVar => "GOOGLE_APPLICATION_CREDENTIALS=",
            Origin::WellKnown => "the gcloud application-default credentials file ",
        };
        format!("{} from {from}{}", self.file.kind(), self.path.display())
    }
}

/// The three credential file types that can yield an ID token.
#[derive(Debug, Clone)]
pub enum CredentialsFile {
    /// Workload identity federation.
    ExternalAccount(Box<ExternalAccount>),
    /// A service-account key.
    ServiceAccount(ServiceAccountKey),
    /// A user's refresh token from `gcloud auth application-default login`.
    AuthorizedUser(AuthorizedUser),
}

impl CredentialsFile {
    /// `external_account (file)`, `service_account`, `authorized_user`.
    pub fn kind(&self) -> String {
        match self {
            Self::ExternalAccount(e) => format!("external_account ({})", e.source_kind()),
            Self::ServiceAccount(_) => "service_account".into(),
            Self::AuthorizedUser(_) => "authorized_user".into(),
        }
    }
}

/// An `external_account` file (the fields s2iam uses; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct ExternalAccount {
    /// The workload identity pool provider:
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/Q`.
    pub audience: String,
    /// What the credential source yields (`urn:ietf:params:oauth:token-type:jwt`, ...).
    pub subject_token_type: String,
    /// Google STS (`https://sts.googleapis.com/v1/token`).
    pub token_url: String,
    /// `https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`.
    #[serde(default)]
    pub service_account_impersonation_url: Option<String>,
    /// Where the subject token comes from.
    pub credential_source: CredentialSource,
    /// Optional client authentication at the STS (workforce pools).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Workforce pools bill this project.
    #[serde(default)]
    pub workforce_pool_user_project: Option<String>,
}

impl ExternalAccount {
    /// `file`, `url`, `executable` or `aws1`.
    pub fn source_kind(&self) -> &'static str {
        let s = &self.credential_source;
        if s.environment_id.is_some() {
            "aws1"
        } else if s.executable.is_some() {
            "executable"
        } else if s.file.is_some() {
            "file"
        } else if s.url.is_some() {
            "url"
        } else {
            "unknown"
        }
    }
}

/// `credential_source` of an `external_account` file: one of file, url,
/// executable or AWS (`environment_id`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CredentialSource {
    /// A file holding the subject token.
    #[serde(default)]
    pub file: Option<String>,
    /// A URL answering with the subject token (or, for AWS, the credentials URL).
    #[serde(default)]
    pub url: Option<String>,
    /// Headers sent to `url`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How to read the token out of the file or URL answer.
    #[serde(default)]
    pub format: Option<SourceFormat>,
    /// A command printing the token.
    #[serde(default)]
    pub executable: Option<ExecutableSource>,
    /// `aws1`.
    #[serde(default)]
    pub environment_id: Option<String>,
    /// AWS: the availability-zone URL (IMDS).
    #[serde(default)]
    pub region_url: Option<String>,
    /// AWS: `https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15`.
    #[serde(default)]
    pub regional_cred_verification_url: Option<String>,
    /// AWS: IMDSv2's session token URL.
    #[serde(default)]
    pub imdsv2_session_token_url: Option<String>,
}

/// `format`: `text` (the default) or `json` with the field holding the token.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceFormat {
    /// `text` or `json`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The JSON field with the token.
    #[serde(default)]
    pub subject_token_field_name: Option<String>,
}

/// `credential_source.executable`.
#[derive(Debug, Clone, Deserialize)]
pub struct ExecutableSource {
    /// The command line (split on whitespace, as Google's libraries do).
    pub command: String,
    /// 5000..=120000; default 30000.
    #[serde(default)]
    pub timeout_millis: Option<u64>,
    /// Where the executable caches its answer.
    #[serde(default)]
    pub output_file: Option<String>,
}

/// A `service_account` key file.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    /// The account's email (the JWT's `iss`).
    pub client_email: String,
    /// The key's id (the JWT's `kid`).
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// The PEM private key.
    pub private_key: Secret,
    /// Where the signed JWT is exchanged.
    #[serde(default)]
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// An `authorized_user` file.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthorizedUser {
    /// The OAuth client the user logged in through (the ID token's `aud`).
    pub client_id: String,
    /// Its secret.
    pub client_secret: Secret,
    /// The user's refresh token.
    pub refresh_token: Secret,
    /// The token endpoint (gcloud writes none: Google's is the default).
    #[serde(default)]
    pub token_uri: Option<String>,
}

/// Why no usable credential file could be read.
#[derive(Debug, thiserror::Error)]
pub enum AdcError {
    /// The named file cannot be read.
    #[error("cannot read the Google credential file {path}: {reason}")]
    Unreadable {
        /// The path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// It is not a credential file s2iam understands.
    #[error("the Google credential file {path} is not usable: {reason}")]
    Invalid {
        /// The path.
        path: String,
        /// What is wrong (never a value from the file).
        reason: String,
    },
    /// A URL it names is refused.
    #[error("the Google credential file's {field} is refused: {reason}")]
    Url {
        /// The field (`token_url`, ...).
        field: String,
        /// Why.
        reason: String,
    },
}

/// The credential file the ADC order picks, if any. `None`: no
/// `GOOGLE_APPLICATION_CREDENTIALS` and no well-known file; use the metadata server.
pub fn locate(cfg: &ProviderConfig) -> Result<Option<Found>, AdcError> {
    if let Some(path) = cfg.env.get("GOOGLE_APPLICATION_CREDENTIALS") {
        let path = PathBuf::from(path.trim());
        let file = read(cfg, &path)?;
        return Ok(Some(Found {
            path,
            origin: Origin::EnvVar,
            file,
        }));
    }
    match well_known_path(cfg) {
        Some(path) if cfg.fs.exists(&path) => {
            let file = read(cfg, &path)?;
            Ok(Some(Found {
                path,
                origin: Origin::WellKnown,
                file,
            }))
        }
        _ => Ok(None),
    }
}

/// gcloud's application-default file: `$CLOUDSDK_CONFIG/…`, else
/// `$HOME/.config/gcloud/…` (`%APPDATA%\gcloud\…` on Windows).
pub fn well_known_path(cfg: &ProviderConfig) -> Option<PathBuf> {
    if let Some(dir) = cfg.env.get("CLOUDSDK_CONFIG") {
        return Some(Path::new(dir.trim()).join(WELL_KNOWN_FILE));
    }
    if cfg!(windows) {
        return cfg
            .env
            .get("APPDATA")
            .map(|d| Path::new(&d).join("gcloud").join(WELL_KNOWN_FILE));
    }
    cfg.env.get("HOME").map(|home| {
        Path::new(&home)
            .join(".config")
            .join("gcloud")
            .join(WELL_KNOWN_FILE)
    })
}

/// Reads and parses a credential file.
pub fn read(cfg: &ProviderConfig, path: &Path) -> Result<CredentialsFile, AdcError> {
    let text = cfg
        .fs
        .read_to_string(path)
        .map_err(|e| AdcError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    parse(&text).map_err(|reason| AdcError::Invalid {
        path: path.display().to_string(),
        reason,
    })
}

/// Parses a credential file's text. Errors name fields, never values (the file
/// holds secrets).
pub fn parse(text: &str) -> Result<CredentialsFile, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or("it has no \"type\" field")?
        .to_string();
    let field_error = |e: serde_json::Error| {
        // serde's messages name the missing or mistyped field, not values.
        format!("a {kind} file, but {}", strip_position(&e.to_string()))
    };
    let file = match kind.as_str() {
        "external_account" => {
            let e: ExternalAccount = serde_json::from_value(value).map_err(field_error)?;
            validate_external(&e)?;
            CredentialsFile::ExternalAccount(Box::new(e))
        }
        "service_account" => {
            let k: ServiceAccountKey = serde_json::from_value(value).map_err(field_error)?;
            if k.client_email.trim().is_empty() || k.private_key.expose().trim().is_empty() {
                return Err("a service_account file with an empty client_email or private_key".into());
            }
            CredentialsFile::ServiceAccount(k)
        }
        "authorized_user" => {
            let u: AuthorizedUser = serde_json::from_value(value).map_err(field_error)?;
            if u.client_id.trim().is_empty() || u.refresh_token.expose().trim().is_empty() {
                return Err("an authorized_user file with an empty client_id or refresh_token".into());
            }
            CredentialsFile::AuthorizedUser(u)
        }
        "impersonated_service_account" | "external_account_authorized_user" | "gdch_service_account" => {
            return Err(format!(
                "type {kind:?} is not supported; use external_account, service_account or authorized_user \
                 (or --assume-role with an authorized_user file to impersonate a service account)"
            ))
        }
        other => {
            return Err(format!(
                "unknown type {:?}; expected external_account, service_account or authorized_user",
                crate::http::snippet(other)
            ))
        }
    };
    Ok(file)
}

/// `missing field `x` at line 1 column 2` → `missing field `x``.
fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(msg).to_string(),
        None => msg.to_string(),
    }
}

fn validate_external(e: &ExternalAccount) -> Result<(), String> {
    if e.audience.trim().is_empty() {
        return Err("an external_account file with an empty audience".into());
    }
    let s = &e.credential_source;
    let kinds = [
        s.environment_id.is_some(),
        s.executable.is_some(),
        s.file.is_some(),
        s.url.is_some() && s.environment_id.is_none(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        1 => Ok(()),
        0 => Err("credential_source names no source: give one of file, url, executable or environment_id".into()),
        _ => Err("credential_source names more than one of file, url, executable and environment_id".into()),
    }
}

/// What kind of address a URL may be, for [`check_url`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlUse {
    /// A Google service (STS, OAuth, IAM Credentials): https.
    Service,
    /// A credential source that may read a metadata service over plain http
    /// (`169.254.169.254`, `fd00:ec2::254`).
    MetadataSource,
}

/// Accepts `https`, and plain `http` to loopback, to the metadata addresses for
/// [`UrlUse::MetadataSource`], or anywhere when `S2IAM_ALLOW_HTTP` is set.
pub fn check_url(
    cfg: &ProviderConfig,
    field: &str,
    raw: &str,
    use_: UrlUse,
) -> Result<url::Url, AdcError> {
    let refuse = |reason: String| AdcError::Url {
        field: field.to_string(),
        reason,
    };
    let url = url::Url::parse(raw.trim()).map_err(|e| {
        refuse(format!(
            "{:?} is not a URL: {e}",
            crate::http::display_url(raw)
        ))
    })?;
    match url.scheme() {
        "https" => Ok(url),
        "http" => {
            let host_ok = match url.host() {
                Some(url::Host::Ipv4(ip)) => allowed_http_ip(IpAddr::V4(ip), use_),
                Some(url::Host::Ipv6(ip)) => allowed_http_ip(IpAddr::V6(ip), use_),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if host_ok || cfg.env.allow_http() {
                Ok(url)
            } else {
                Err(refuse(format!(
                    "{} is plain http to a non-loopback host; use https (S2IAM_ALLOW_HTTP=1 allows it, for testing only)",
                    crate::http::display_url(raw)
                )))
            }
        }
        other => Err(refuse(format!("unsupported scheme {other:?}"))),
    }
}

const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn allowed_http_ip(ip: IpAddr, use_: UrlUse) -> bool {
    let metadata = use_ == UrlUse::MetadataSource;
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || (metadata && v4 == METADATA_V4),
        IpAddr::V6(v6) => v6.is_loopback() || (metadata && v6 == METADATA_V6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    fn cfg(env: &[(&str, &str)], files: &[(&str, &str)]) -> ProviderConfig {
        ProviderConfig::with_env(
            Env::from_pairs(env.iter().copied()),
            Fs::from_files(files.iter().copied()),
        )
    }

    const SA: &str = r#"{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com","private_key_id":"k1","private_key":"-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n","token_uri":"https://oauth2.googleapis.com/token"}"#;

    #[test]
    fn env_var_wins_then_the_well_known_file() {
        let user =
            r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#;
        let home = "/home/u/.config/gcloud/application_default_credentials.json";
        let c = cfg(
            &[
                ("GOOGLE_APPLICATION_CREDENTIALS", "/sa.json"),
                ("HOME", "/home/u"),
            ],
            &[("/sa.json", SA), (home, user)],
        );
        let found = locate(&c).unwrap().unwrap();
        assert_eq!(found.origin, Origin::EnvVar);
        assert!(matches!(found.file, CredentialsFile::ServiceAccount(_)));
        assert_eq!(
            found.describe(),
            "service_account from GOOGLE_APPLICATION_CREDENTIALS=/sa.json"
        );
        let c = cfg(&[("HOME", "/home/u")], &[(home, user)]);
        let found = locate(&c).unwrap().unwrap();
        assert_eq!(found.origin, Origin::WellKnown);
        assert!(found
            .describe()
            .starts_with("authorized_user from the gcloud"));
        let c = cfg(
            &[("CLOUDSDK_CONFIG", "/gc"), ("HOME", "/home/u")],
            &[(home, user)],
        );
        assert!(
            locate(&c).unwrap().is_none(),
            "CLOUDSDK_CONFIG moves the file"
        );
        assert!(locate(&cfg(&[], &[])).unwrap().is_none());
    }

    #[test]
    fn a_named_file_that_is_missing_or_wrong_is_an_error() {
        let c = cfg(&[("GOOGLE_APPLICATION_CREDENTIALS", "/nope.json")], &[]);
        assert!(matches!(locate(&c), Err(AdcError::Unreadable { .. })));
        for (text, want) in [
            ("not json", "not JSON"),
            ("{}", "no \"type\""),
            (r#"{"type":"weird"}"#, "unknown type"),
            (
                r#"{"type":"impersonated_service_account"}"#,
                "not supported",
            ),
            (
                r#"{"type":"service_account","client_email":"a@b.c"}"#,
                "missing field `private_key`",
            ),
            (
                r#"{"type":"external_account","audience":"a","subject_token_type":"t","token_url":"u","credential_source":{}}"#,
                "names no source",
            ),
            (
                r#"{"type":"external_account","audience":"a","subject_token_type":"t","token_url":"u","credential_source":{"file":"f","executable":{"command":"x"}}}"#,
                "more than one",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let CredentialsFile::ServiceAccount(k) = parse(SA).unwrap() else {
            panic!("not a service account")
        };
        assert!(!format!("{k:?}").contains("SECRETKEYMATERIAL"));
        let user = r#"{"type":"authorized_user","client_id":"c","client_secret":"CLIENTSECRET","refresh_token":"REFRESHTOKEN"}"#;
        let shown = format!("{:?}", parse(user).unwrap());
        assert!(
            !shown.contains("CLIENTSECRET") && !shown.contains("REFRESHTOKEN"),
            "{shown}"
        );
        // A type error names the field, not the value.
        let bad = r#"{"type":"service_account","client_email":"a","private_key":12345678}"#;
        assert!(!parse(bad).unwrap_err().contains("12345678"));
    }

    #[test]
    fn urls_must_be_https_except_loopback_metadata_or_allowed() {
        let c = cfg(&[], &[]);
        let ok = |u: &str, use_| check_url(&c, "f", u, use_).is_ok();
        assert!(ok("https://sts.googleapis.com/v1/token", UrlUse::Service));
        assert!(ok("http://127.0.0.1:8080/v1/token", UrlUse::Service));
        assert!(ok("http://[::1]:8080/x", UrlUse::Service));
        assert!(ok("http://localhost:1/x", UrlUse::Service));
        assert!(!ok("http://sts.googleapis.com/v1/token", UrlUse::Service));
        assert!(!ok("http://169.254.169.254/x", UrlUse::Service));
        assert!(ok(
            "http://169.254.169.254/latest/meta-data",
            UrlUse::MetadataSource
        ));
        assert!(ok("http://[fd00:ec2::254]/latest", UrlUse::MetadataSource));
        assert!(!ok("http://10.0.0.1/x", UrlUse::MetadataSource));
        assert!(!ok("ftp://127.0.0.1/x", UrlUse::Service));
        assert!(!ok("not a url", UrlUse::Service));
        let allowed = cfg(&[("S2IAM_ALLOW_HTTP", "1")], &[]);
        assert!(check_url(&allowed, "f", "http://example.com/x", UrlUse::Service).is_ok());
        let off = cfg(&[("S2IAM_ALLOW_HTTP", "0")], &[]);
        assert!(check_url(&off, "f", "http://example.com/x", UrlUse::Service).is_err());
    }
}
