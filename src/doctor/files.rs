//! Token and credential files: readable, well-formed, not expired.
//!
//! Files looked at: `AWS_WEB_IDENTITY_TOKEN_FILE` (IRSA),
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (EKS Pod Identity, ECS), `AZURE_FEDERATED_TOKEN_FILE`
//! (AKS workload identity), `GOOGLE_APPLICATION_CREDENTIALS` (and, for an
//! `external_account`, its `credential_source.file`), and any the caller adds (the
//! sidecar's sinks). A token is reported by its non-secret claims (`exp`, `iss`,
//! `aud`), never by its contents; a credential file by its `type`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Check, Status};
use crate::env::ProviderConfig;
use crate::util::{from_unix, rfc3339};

/// The check's id.
pub const ID: &str = "token_files";

/// A token expiring sooner than this is a warning: whatever rotates it is late.
const EXPIRING_SECS: u64 = 120;

/// What one file turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Where it was named (`AWS_WEB_IDENTITY_TOKEN_FILE`, `sink database:wg`).
    pub label: String,
    /// The file.
    pub path: PathBuf,
    /// The verdict for this file.
    pub status: Status,
    /// What was found (claims, type) or what is wrong.
    pub summary: String,
}

/// What a file is expected to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A JWT.
    Jwt,
    /// A JWT or an opaque token.
    Token,
    /// A Google credential file (JSON).
    GoogleCredentials,
}

/// The files named by the environment (and their kind), then `extra`.
fn named_files(cfg: &ProviderConfig, extra: &[(String, PathBuf)]) -> Vec<(String, PathBuf, Kind)> {
    let mut files = Vec::new();
    for (var, kind) in [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", Kind::Jwt),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", Kind::Token),
        ("AZURE_FEDERATED_TOKEN_FILE", Kind::Jwt),
        ("GOOGLE_APPLICATION_CREDENTIALS", Kind::GoogleCredentials),
    ] {
        if let Some(p) = cfg.env.get(var) {
            files.push((var.to_string(), PathBuf::from(p), kind));
        }
    }
    for (label, path) in extra {
        files.push((label.clone(), path.clone(), Kind::Jwt));
    }
    files
}

/// Inspects every file.
pub fn reports(cfg: &ProviderConfig, extra: &[(String, PathBuf)]) -> Vec<FileReport> {
    let now = cfg.clock.now();
    let mut out = Vec::new();
    for (label, path, kind) in named_files(cfg, extra) {
        let text = match cfg.fs.read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                out.push(unreadable(label, path, &e));
                continue;
            }
        };
        if kind != Kind::GoogleCredentials {
            let (status, summary) = token_or_opaque(&text, kind, now);
            out.push(FileReport {
                label,
                path,
                status,
                summary,
            });
            continue;
        }
        let (status, summary, source) = credentials_summary(&text);
        out.push(FileReport {
            label: label.clone(),
            path,
            status,
            summary,
        });
        if let Some(source) = source {
            let source_label = format!("{label} credential_source.file");
            match cfg.fs.read_to_string(&source) {
                Ok(t) => {
                    // A subject token may be a JWT (OIDC) or opaque (SAML).
                    let (status, summary) = token_or_opaque(&t, Kind::Token, now);
                    out.push(FileReport {
                        label: source_label,
                        path: source,
                        status,
                        summary,
                    });
                }
                Err(e) => out.push(unreadable(source_label, source, &e)),
            }
        }
    }
    out
}

fn unreadable(label: String, path: PathBuf, e: &std::io::Error) -> FileReport {
    FileReport {
        label,
        path,
        status: Status::Fail,
        summary: format!("cannot read it: {e}"),
    }
}

/// A JWT's verdict; an opaque token is fine where one is allowed.
fn token_or_opaque(text: &str, kind: Kind, now: SystemTime) -> (Status, String) {
    let t = text.trim();
    if kind == Kind::Token && !t.is_empty() && t.split('.').count() != 3 {
        return (Status::Pass, "readable (an opaque token)".into());
    }
    token_summary(t, now)
}

/// A token file's verdict: its `exp`, `iss` and `aud`.
fn token_summary(text: &str, now: SystemTime) -> (Status, String) {
    let token = text.trim();
    if token.is_empty() {
        return (Status::Fail, "empty".into());
    }
    let Ok(claims) = crate::provider::jwt::jwt_claims(token) else {
        return (Status::Fail, "not a JWT".into());
    };
    let mut parts = Vec::new();
    if let Some(iss) = crate::provider::jwt::claim_str(&claims, "iss") {
        parts.push(format!("iss={}", crate::util::snippet(&iss, 120)));
    }
    match claims.get("aud") {
        Some(serde_json::Value::String(a)) => {
            parts.push(format!("aud={}", crate::util::snippet(a, 120)))
        }
        Some(serde_json::Value::Array(list)) => {
            let auds: Vec<String> = list
                .iter()
                .filter_map(|v| v.as_str())
                .map(|a| crate::util::snippet(a, 120))
                .collect();
            parts.push(format!("aud={}", auds.join("|")));
        }
        _ => {}
    }
    let exp = claims.get("exp").and_then(serde_json::Value::as_u64);
    let status = match exp.and_then(from_unix) {
        None => {
            parts.push("no exp".into());
            Status::Warn
        }
        Some(at) => match at.duration_since(now) {
            Err(_) => {
                parts.push(format!("EXPIRED at {}", rfc3339(at)));
                Status::Fail
            }
            Ok(left) => {
                parts.push(format!("exp={} (in {} s)", rfc3339(at), left.as_secs()));
                if left.as_secs() < EXPIRING_SECS {
                    Status::Warn
                } else {
                    Status::Pass
                }
            }
        },
    };
    (status, parts.join(", "))
}

/// A Google credential file's verdict: its `type` (never its keys), and the
/// subject-token file of an `external_account` with a file source.
fn credentials_summary(text: &str) -> (Status, String, Option<PathBuf>) {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
        return (Status::Fail, "not JSON".into(), None);
    };
    let Some(kind) = doc.get("type").and_then(serde_json::Value::as_str) else {
        return (Status::Fail, "JSON without a \"type\"".into(), None);
    };
    let source = doc
        .get("credential_source")
        .and_then(|s| s.get("file"))
        .and_then(serde_json::Value::as_str)
        .map(PathBuf::from);
    let mut summary = format!("type={}", crate::util::snippet(kind, 40));
    if let Some(aud) = doc.get("audience").and_then(serde_json::Value::as_str) {
        summary.push_str(&format!(", audience={}", crate::util::snippet(aud, 200)));
    }
    let status = match kind {
        "external_account"
        | "service_account"
        | "authorized_user"
        | "impersonated_service_account"
        | "external_account_authorized_user" => Status::Pass,
        _ => Status::Warn,
    };
    (status, summary, source)
}

/// The verdict on every file.
pub fn check(cfg: &ProviderConfig, extra: &[(String, PathBuf)]) -> Check {
    let reports = reports(cfg, extra);
    if reports.is_empty() {
        return Check::skip(
            ID,
            "no token or credential file named (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, AZURE_FEDERATED_TOKEN_FILE, GOOGLE_APPLICATION_CREDENTIALS, sidecar sinks)",
        );
    }
    let worst = reports
        .iter()
        .map(|r| r.status)
        .max()
        .unwrap_or(Status::Pass);
    let mut c = Check::new(
        ID,
        worst,
        reports
            .iter()
            .map(|r| format!("{} {}: {}", r.label, shown(&r.path), r.summary))
            .collect::<Vec<_>>()
            .join("; "),
    );
    for r in &reports {
        c = c.detail(
            format!("{} {}", r.label, shown(&r.path)),
            format!("{}: {}", r.status.label(), r.summary),
        );
    }
    match worst {
        Status::Fail => c.with_fix(
            "make the file readable by this user and keep it fresh (projected service-account tokens are rotated by the kubelet; a sink by a running sidecar)",
        ),
        Status::Warn => c.with_fix(
            "check whatever rotates the token (kubelet projection, the sidecar) is running",
        ),
        _ => c,
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own their clock and environment
mod tests {
    use super::*;
    use crate::env::{Env, Fs};
    use base64::Engine as _;

    fn jwt(payload: serde_json::Value) -> String {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.c2ln",
            enc.encode(br#"{"alg":"RS256"}"#),
            enc.encode(payload.to_string())
        )
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn cfg(env: &[(&str, &str)], files: Vec<(&str, String)>) -> ProviderConfig {
        ProviderConfig::with_env(Env::from_pairs(env.iter().copied()), Fs::from_files(files))
    }

    #[test]
    fn nothing_named_skips() {
        assert_eq!(check(&cfg(&[], vec![]), &[]).status, Status::Skip);
    }

    #[test]
    fn fresh_tokens_pass_with_claims_but_never_contents() {
        let token = jwt(serde_json::json!({
            "iss": "https://oidc.eks.example", "aud": ["sts.amazonaws.com"],
            "exp": now() + 3600, "sub": "system:serviceaccount:ns:sa"
        }));
        let c = check(
            &cfg(
                &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")],
                vec![("/t", token.clone())],
            ),
            &[],
        );
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.message.contains("iss=https://oidc.eks.example"), "{c:?}");
        assert!(c.message.contains("aud=sts.amazonaws.com"), "{c:?}");
        let shown = format!("{c:?}");
        assert!(!shown.contains(&token), "{shown}");
        assert!(!shown.contains("system:serviceaccount"), "{shown}");
    }

    #[test]
    fn expired_missing_and_garbage_fail() {
        let old = jwt(serde_json::json!({"exp": now() - 10}));
        let c = check(
            &cfg(
                &[
                    ("AWS_WEB_IDENTITY_TOKEN_FILE", "/old"),
                    ("AZURE_FEDERATED_TOKEN_FILE", "/missing"),
                ],
                vec![("/old", old)],
            ),
            &[("sink api".into(), PathBuf::from("/garbage"))],
        );
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.message.contains("EXPIRED"), "{c:?}");
        assert!(c.message.contains("cannot read it"), "{c:?}");
        assert!(c.fix.is_some());
        let soon = jwt(serde_json::json!({"exp": now() + 30}));
        let c = check(
            &cfg(&[], vec![("/s", soon)]),
            &[("sink".into(), "/s".into())],
        );
        assert_eq!(c.status, Status::Warn, "{c:?}");
    }

    #[test]
    fn container_tokens_may_be_opaque_but_web_identity_tokens_are_jwts() {
        let c = check(
            &cfg(
                &[
                    ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/c"),
                    ("AWS_WEB_IDENTITY_TOKEN_FILE", "/w"),
                ],
                vec![
                    ("/c", "opaque-secret".to_string()),
                    ("/w", "opaque".to_string()),
                ],
            ),
            &[],
        );
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.message.contains("an opaque token"), "{c:?}");
        assert!(c.message.contains("not a JWT"), "{c:?}");
        assert!(!format!("{c:?}").contains("opaque-secret"));
    }

    #[test]
    fn google_credentials_by_type_and_subject_token_file() {
        let doc = serde_json::json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
            "credential_source": {"file": "/subject"},
            "private_key": "-----BEGIN PRIVATE KEY-----secret"
        });
        let c = check(
            &cfg(
                &[("GOOGLE_APPLICATION_CREDENTIALS", "/gac.json")],
                vec![
                    ("/gac.json", doc.to_string()),
                    ("/subject", jwt(serde_json::json!({"exp": now() + 600}))),
                ],
            ),
            &[],
        );
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.message.contains("type=external_account"), "{c:?}");
        assert!(c.message.contains("credential_source.file"), "{c:?}");
        assert!(!format!("{c:?}").contains("secret"));
    }
}
