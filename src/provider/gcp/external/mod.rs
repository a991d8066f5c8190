//! Workload identity federation: an `external_account` credential file turned
//! into the ID token the auth service expects.
//!
//! ```text
//! credential_source ──► subject token ──► Google STS ──► federated access token
//!   file | url | executable | aws1        (sts.rs)                │
//!                                                                 ▼
//!                      IAM Credentials generateIdToken for the service account
//!                      of service_account_impersonation_url (impersonate.rs)
//!                                                                 │
//!                                                                 ▼
//!                                       ID token, aud = the s2iam audience
//! ```
//!
//! Sources: `file` and `url` here (`format` `text` or `json` with
//! `subject_token_field_name`; `url` with its `headers`), [`executable`] and
//! [`aws`]. A federated principal has no ID token of its own: without
//! `service_account_impersonation_url` (or `--assume-role <service account>`) the
//! flow stops with an error that says so.

pub(super) mod aws;
pub(super) mod executable;

use std::path::Path;
use std::time::Duration;

use super::super::{CloudProvider, ProviderError};
use super::adc::{self, ExternalAccount, SourceFormat, UrlUse};
use super::{impersonate, sts};
use crate::env::ProviderConfig;
use crate::http::{fetch, RetryPolicy};
use crate::Secret;

const URL_TIMEOUT: Duration = Duration::from_secs(10);

/// The ID token of the service account the file (or `assume_role`) impersonates.
pub(super) async fn id_token(
    cfg: &ProviderConfig,
    policy: &RetryPolicy,
    account: &ExternalAccount,
    audience: &str,
    assume_role: Option<&str>,
) -> Result<Secret, ProviderError> {
    // Every URL is checked before any source is read or run.
    adc::check_url(cfg, "token_url", &account.token_url, UrlUse::Service)
        .map_err(|e| no_identity(&e.to_string()))?;
    let target = impersonation_target(cfg, account, assume_role)?;
    let subject = subject_token(cfg, account, target.as_ref().map(|t| t.email.as_str())).await?;
    let access = sts::exchange(cfg, policy, account, &subject).await?;
    let Some(target) = target else {
        return Err(no_identity(
            "the external_account file has no service_account_impersonation_url: Google STS \
             returns an access token for a federated principal, and Google cannot mint an ID \
             token for one. Grant a service account roles/iam.workloadIdentityUser for the pool \
             and regenerate the file with `gcloud iam workload-identity-pools create-cred-config \
             --service-account=EMAIL` (or pass --assume-role EMAIL)",
        ));
    };
    impersonate::generate_id_token_at(cfg, policy, &target.url, &target.email, audience, &access)
        .await
}

fn impersonation_target(
    cfg: &ProviderConfig,
    account: &ExternalAccount,
    assume_role: Option<&str>,
) -> Result<Option<impersonate::Target>, ProviderError> {
    if let Some(email) = assume_role {
        return Ok(Some(impersonate::Target::at_base(
            &cfg.endpoints.gcp_iamcredentials,
            email,
        )));
    }
    let Some(raw) = &account.service_account_impersonation_url else {
        return Ok(None);
    };
    let url = adc::check_url(
        cfg,
        "service_account_impersonation_url",
        raw,
        UrlUse::Service,
    )
    .map_err(|e| no_identity(&e.to_string()))?;
    impersonate::Target::from_access_token_url(&url)
        .map(Some)
        .map_err(|reason| no_identity(&format!("service_account_impersonation_url: {reason}")))
}

/// The subject token the credential source yields.
async fn subject_token(
    cfg: &ProviderConfig,
    account: &ExternalAccount,
    impersonated: Option<&str>,
) -> Result<Secret, ProviderError> {
    let source = &account.credential_source;
    if source.environment_id.is_some() {
        return aws::subject_token(cfg, account).await;
    }
    if let Some(exe) = &source.executable {
        return executable::subject_token(cfg, account, exe, impersonated).await;
    }
    if let Some(path) = &source.file {
        let text = cfg
            .fs
            .read_to_string(Path::new(path))
            .map_err(|e| no_identity(&format!("cannot read the subject token file {path}: {e}")))?;
        return parse_format(source.format.as_ref(), &text, &format!("the file {path}"));
    }
    if let Some(raw) = &source.url {
        return url_token(cfg, raw, &source.headers, source.format.as_ref()).await;
    }
    Err(no_identity("credential_source names no source"))
}

async fn url_token(
    cfg: &ProviderConfig,
    raw: &str,
    headers: &std::collections::BTreeMap<String, String>,
    format: Option<&SourceFormat>,
) -> Result<Secret, ProviderError> {
    let url = adc::check_url(cfg, "credential_source.url", raw, UrlUse::MetadataSource)
        .map_err(|e| no_identity(&e.to_string()))?;
    let mut req = cfg.http.get(url.as_str());
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let shown = crate::http::display_url(url.as_str());
    let reply = fetch(req, url.as_str(), URL_TIMEOUT)
        .await
        .map_err(|e| upstream("credential_source.url", e.to_string()))?;
    if !reply.is_success() {
        return Err(upstream(
            "credential_source.url",
            format!(
                "{shown} answered HTTP {}: {}",
                reply.status,
                reply.snippet()
            ),
        ));
    }
    parse_format(format, &reply.body, &shown)
}

/// The token in `text` under `format` (`text` by default).
fn parse_format(
    format: Option<&SourceFormat>,
    text: &str,
    from: &str,
) -> Result<Secret, ProviderError> {
    let kind = format.and_then(|f| f.kind.as_deref()).unwrap_or("text");
    let token = match kind {
        "text" => text.trim().to_string(),
        "json" => {
            let field = format
                .and_then(|f| f.subject_token_field_name.as_deref())
                .ok_or_else(|| {
                    no_identity(
                        "credential_source.format is json but names no subject_token_field_name",
                    )
                })?;
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|_| no_identity(&format!("{from} is not JSON (format json)")))?;
            value
                .get(field)
                .and_then(|v| v.as_str())
                .map(|s| s.trim().to_string())
                .ok_or_else(|| {
                    no_identity(&format!(
                        "{from} has no string field {field:?} (subject_token_field_name)"
                    ))
                })?
        }
        other => {
            return Err(no_identity(&format!(
                "credential_source.format type {other:?} is not text or json"
            )))
        }
    };
    if token.is_empty() {
        return Err(no_identity(&format!("{from} holds an empty subject token")));
    }
    Ok(Secret::new(token))
}

pub(super) fn no_identity(reason: &str) -> ProviderError {
    ProviderError::NoIdentity {
        provider: CloudProvider::Gcp,
        reason: reason.to_string(),
    }
}

pub(super) fn upstream(what: &str, reason: impl Into<String>) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Gcp,
        what: what.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(kind: &str, field: Option<&str>) -> SourceFormat {
        SourceFormat {
            kind: Some(kind.into()),
            subject_token_field_name: field.map(str::to_owned),
        }
    }

    #[test]
    fn formats_text_and_json() {
        assert_eq!(parse_format(None, " tok\n", "f").unwrap().expose(), "tok");
        let json = fmt("json", Some("access_token"));
        assert_eq!(
            parse_format(Some(&json), r#"{"access_token":"a.b.c"}"#, "f")
                .unwrap()
                .expose(),
            "a.b.c"
        );
        for (f, text) in [
            (fmt("json", Some("access_token")), r#"{"other":"x"}"#),
            (fmt("json", Some("access_token")), "not json"),
            (fmt("json", None), r#"{"access_token":"x"}"#),
            (fmt("xml", None), "x"),
            (fmt("text", None), "  "),
        ] {
            assert!(parse_format(Some(&f), text, "f").is_err(), "{f:?} {text}");
        }
    }
}
