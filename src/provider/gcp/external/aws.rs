//! The AWS credential source (`environment_id: aws1`): a signed STS
//! `GetCallerIdentity` request, serialised the way Google STS reads it, is the
//! subject token (subject_token_type `urn:ietf:params:aws:token-type:aws4_request`).
//! Google STS replays it against AWS STS to learn the caller's ARN; s2iam never
//! sends it to AWS itself.
//!
//! As in google-auth's `aws.py`:
//! - region: `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `region_url` (IMDS
//!   placement availability zone, last letter dropped);
//! - credentials: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+
//!   `AWS_SESSION_TOKEN`), else `url` (IMDS security-credentials: the role name,
//!   then `url/<role>`);
//! - IMDSv2: with `imdsv2_session_token_url`, a `PUT` with
//!   `X-aws-ec2-metadata-token-ttl-seconds: 300` first, and the token sent as
//!   `X-aws-ec2-metadata-token` on the IMDS reads;
//! - the request: `POST regional_cred_verification_url` (`{region}` filled in),
//!   empty body, SigV4 for service `sts` with s2iam's own signer, the header
//!   `x-goog-cloud-target-resource: <audience>` signed along;
//! - the token: `{"headers":[{"key","value"}...sorted by key],"method":"POST","url":...}`
//!   as compact JSON, then percent-encoded (Python's `urllib.parse.quote`).

use std::time::Duration;

use serde::Deserialize;

use super::super::super::aws::sigv4;
use super::super::super::ProviderError;
use super::super::adc::{self, ExternalAccount, UrlUse};
use super::{no_identity, upstream};
use crate::env::ProviderConfig;
use crate::http::fetch;
use crate::Secret;

const IMDS_TIMEOUT: Duration = Duration::from_secs(5);
const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
const TARGET_RESOURCE_HEADER: &str = "x-goog-cloud-target-resource";

/// Signing credentials, from the environment or IMDS.
struct Keys {
    access_key_id: String,
    secret: Secret,
    session_token: Option<Secret>,
}

/// The serialised, signed `GetCallerIdentity` request.
pub(super) async fn subject_token(
    cfg: &ProviderConfig,
    account: &ExternalAccount,
) -> Result<Secret, ProviderError> {
    let source = &account.credential_source;
    match source.environment_id.as_deref() {
        Some("aws1") => {}
        other => {
            return Err(no_identity(&format!(
                "credential_source.environment_id {:?} is not supported (only aws1)",
                other.unwrap_or_default()
            )))
        }
    }
    let verification = source
        .regional_cred_verification_url
        .as_deref()
        .ok_or_else(|| {
            no_identity("an aws1 credential_source needs regional_cred_verification_url")
        })?;
    let env_region = cfg
        .env
        .get("AWS_REGION")
        .or_else(|| cfg.env.get("AWS_DEFAULT_REGION"));
    let env_keys = env_keys(cfg);
    let imds_token = if env_region.is_none() || env_keys.is_none() {
        imdsv2_token(cfg, source.imdsv2_session_token_url.as_deref()).await?
    } else {
        None
    };
    let region = match env_region {
        Some(r) => r.trim().to_string(),
        None => imds_region(cfg, source.region_url.as_deref(), imds_token.as_ref()).await?,
    };
    let keys = match env_keys {
        Some(k) => k,
        None => imds_keys(cfg, source.url.as_deref(), imds_token.as_ref()).await?,
    };
    let raw_url = verification.replace("{region}", &region);
    let url = url::Url::parse(&raw_url)
        .map_err(|e| no_identity(&format!("regional_cred_verification_url is not a URL: {e}")))?;
    let time = cfg.clock.now();
    Ok(Secret::new(serialise(
        &url,
        &raw_url,
        &account.audience,
        &keys,
        &region,
        time,
    )))
}

/// Signs and serialises (split out for the known-answer test).
fn serialise(
    url: &url::Url,
    raw_url: &str,
    audience: &str,
    keys: &Keys,
    region: &str,
    time: std::time::SystemTime,
) -> String {
    let target = vec![(TARGET_RESOURCE_HEADER.to_string(), audience.to_string())];
    let params = sigv4::SigningParams {
        access_key_id: &keys.access_key_id,
        secret_access_key: keys.secret.expose(),
        session_token: keys.session_token.as_ref().map(Secret::expose),
        region,
        service: "sts",
        time,
    };
    let added = sigv4::sign("POST", url, &target, b"", &params);
    let mut headers: Vec<(String, String)> = vec![("host".into(), sigv4::host_header(url))];
    headers.extend(target);
    for (name, value) in added {
        // Google's libraries send `Authorization` capitalised, the rest lower case.
        let name = if name == "authorization" {
            "Authorization".to_string()
        } else {
            name
        };
        headers.push((name, value));
    }
    headers.sort();
    let doc = serde_json::json!({
        "headers": headers
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
            .collect::<Vec<_>>(),
        "method": "POST",
        "url": raw_url,
    });
    quote(&doc.to_string())
}

/// Python's `urllib.parse.quote(s)`: everything but `A-Za-z0-9_.-~/` percent-encoded.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len().saturating_mul(2));
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn env_keys(cfg: &ProviderConfig) -> Option<Keys> {
    let id = cfg.env.get("AWS_ACCESS_KEY_ID")?;
    let secret = cfg.env.get("AWS_SECRET_ACCESS_KEY")?;
    Some(Keys {
        access_key_id: id.trim().to_string(),
        secret: Secret::new(secret.trim()),
        session_token: cfg
            .env
            .get("AWS_SESSION_TOKEN")
            .map(|t| Secret::new(t.trim())),
    })
}

async fn imdsv2_token(
    cfg: &ProviderConfig,
    raw: Option<&str>,
) -> Result<Option<Secret>, ProviderError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let url = check(cfg, "imdsv2_session_token_url", raw)?;
    let req = cfg.http.put(url.as_str()).header(TOKEN_TTL_HEADER, "300");
    let reply = fetch(req, url.as_str(), IMDS_TIMEOUT)
        .await
        .map_err(|e| upstream("AWS IMDSv2 session token", e.to_string()))?;
    if !reply.is_success() || reply.body.trim().is_empty() {
        return Err(upstream(
            "AWS IMDSv2 session token",
            format!("HTTP {}: {}", reply.status, reply.snippet()),
        ));
    }
    Ok(Some(Secret::new(reply.body.trim())))
}

async fn imds_get(
    cfg: &ProviderConfig,
    field: &str,
    url: &url::Url,
    token: Option<&Secret>,
) -> Result<String, ProviderError> {
    let mut req = cfg.http.get(url.as_str());
    if let Some(t) = token {
        req = req.header(TOKEN_HEADER, t.expose());
    }
    let what = format!("AWS metadata ({field})");
    let reply = fetch(req, url.as_str(), IMDS_TIMEOUT)
        .await
        .map_err(|e| upstream(&what, e.to_string()))?;
    if !reply.is_success() {
        return Err(upstream(
            &what,
            format!(
                "{} answered HTTP {}",
                crate::http::display_url(url.as_str()),
                reply.status
            ),
        ));
    }
    Ok(reply.body)
}

async fn imds_region(
    cfg: &ProviderConfig,
    raw: Option<&str>,
    token: Option<&Secret>,
) -> Result<String, ProviderError> {
    let raw = raw.ok_or_else(|| {
        no_identity("no AWS region: set AWS_REGION or give credential_source.region_url")
    })?;
    let url = check(cfg, "region_url", raw)?;
    let zone = imds_get(cfg, "region_url", &url, token).await?;
    let zone = zone.trim();
    // `us-east-1a` → `us-east-1`.
    let mut chars = zone.chars();
    chars.next_back();
    let region = chars.as_str();
    if region.is_empty() {
        return Err(upstream(
            "AWS metadata (region_url)",
            "empty availability zone",
        ));
    }
    Ok(region.to_string())
}

async fn imds_keys(
    cfg: &ProviderConfig,
    raw: Option<&str>,
    token: Option<&Secret>,
) -> Result<Keys, ProviderError> {
    let raw = raw.ok_or_else(|| {
        no_identity("no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or give credential_source.url")
    })?;
    let base = check(cfg, "credential_source.url", raw)?;
    let role = imds_get(cfg, "url", &base, token).await?;
    let role = role.lines().next().unwrap_or_default().trim().to_string();
    if role.is_empty() || role.contains('/') {
        return Err(upstream("AWS metadata (url)", "no role name"));
    }
    let with_role = format!("{}/{role}", base.as_str().trim_end_matches('/'));
    let url = check(cfg, "credential_source.url", &with_role)?;
    let body = imds_get(cfg, "url", &url, token).await?;
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Creds {
        access_key_id: String,
        secret_access_key: String,
        token: Option<String>,
    }
    let c: Creds = serde_json::from_str(&body).map_err(|_| {
        upstream(
            "AWS metadata (url)",
            "the credentials answer is not the expected JSON",
        )
    })?;
    Ok(Keys {
        access_key_id: c.access_key_id,
        secret: Secret::new(c.secret_access_key),
        session_token: c.token.map(Secret::new),
    })
}

fn check(cfg: &ProviderConfig, field: &str, raw: &str) -> Result<url::Url, ProviderError> {
    adc::check_url(cfg, field, raw, UrlUse::MetadataSource).map_err(|e| no_identity(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_python() {
        // urllib.parse.quote('{"a":"b c/d?e=f&g"}')
        assert_eq!(
            quote(r#"{"a":"b c/d?e=f&g"}"#),
            "%7B%22a%22%3A%22b%20c/d%3Fe%3Df%26g%22%7D"
        );
    }

    #[test]
    fn the_token_is_the_signed_request_google_expects() {
        let keys = Keys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: Some(Secret::new("SESSIONTOKEN")),
        };
        let raw = "https://sts.us-east-2.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15";
        let url = url::Url::parse(raw).unwrap();
        let time = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = serialise(
            &url,
            raw,
            "//iam.googleapis.com/projects/1/x",
            &keys,
            "us-east-2",
            time,
        );
        let json: serde_json::Value = serde_json::from_str(
            &url::form_urlencoded::parse(format!("t={token}").as_bytes())
                .next()
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(json["method"], "POST");
        assert_eq!(json["url"], raw);
        let keys: Vec<&str> = json["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "Authorization",
                "host",
                "x-amz-date",
                "x-amz-security-token",
                "x-goog-cloud-target-resource"
            ]
        );
        let auth = json["headers"][0]["value"].as_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-2/sts/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token;x-goog-cloud-target-resource, Signature="), "{auth}");
        assert_eq!(json["headers"][1]["value"], "sts.us-east-2.amazonaws.com");
        assert!(
            !token.contains("wJalrXUtnFEMI"),
            "the secret is never in the token"
        );
    }
}
