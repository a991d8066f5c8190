//! An AWS STS client for the Query API.
//!
//! Protocol: `POST {sts}/` with an `application/x-www-form-urlencoded` body
//! `Action=<action>&Version=2011-06-15&<params>`, SigV4-signed for service `sts`
//! (except `AssumeRoleWithWebIdentity`, whose proof is the web identity token). The
//! endpoint is derived from the region as the SDKs derive it (partition, FIPS,
//! dual-stack: [`crate::env::aws_endpoints`]) unless overridden (see
//! [`crate::env::endpoints`]). Answers are XML: `<{Action}Response><{Action}Result>...`
//! on success, `<ErrorResponse><Error><Code/><Message/></Error></ErrorResponse>` on
//! failure. A tiny tag extractor reads them: STS responses are flat, fixed documents
//! and an XML crate would be the largest dependency here.
//!
//! Clock skew: every answer's `Date` updates the shared [`ClockSkew`]; a request
//! refused for clock skew (`SignatureDoesNotMatch: Signature expired ...`) while the
//! measured offset calls for a new correction is signed again with the corrected
//! time and sent once more, as the AWS SDKs do (see [`crate::env::skew`]).
//!
//! Actions: `GetCallerIdentity`, `GetSessionToken`, `AssumeRole` (with the optional
//! `DurationSeconds`, `ExternalId` and session `Policy` that credential vending
//! uses), `AssumeRoleWithWebIdentity`.

use std::sync::Arc;
use std::time::Duration;

use super::http;
use super::keys::{parse_time, AwsCredentials};
use super::sigv4;
use crate::env::aws_endpoints::{AwsEndpoint, EndpointError};
use crate::env::skew::{self, ClockSkew};
use crate::env::{Clock, ProviderConfig};
use crate::http::TransportError;
use crate::secret::Secret;

/// The STS API version sent with every action.
pub const STS_VERSION: &str = "2011-06-15";
/// Per-request timeout: STS is a regional HTTPS service, normally well under 1 s.
pub const STS_TIMEOUT: Duration = Duration::from_secs(10);
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Who the credentials belong to (`GetCallerIdentity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The caller's ARN.
    pub arn: String,
    /// The caller's account.
    pub account: String,
    /// The caller's unique id.
    pub user_id: String,
}

/// `AssumeRole` parameters. Build with [`AssumeRoleRequest::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleRequest {
    /// The role to assume.
    pub role_arn: String,
    /// The session name, visible in CloudTrail.
    pub role_session_name: String,
    /// 900 s to the role's maximum session duration; STS defaults to 3600.
    pub duration_seconds: Option<u32>,
    /// The external id the role's trust policy may require.
    pub external_id: Option<String>,
    /// A session policy (JSON) that further restricts the role's permissions.
    pub policy: Option<String>,
}

impl AssumeRoleRequest {
    /// `AssumeRole` into `role_arn` with the default duration and no policy.
    pub fn new(role_arn: impl Into<String>, role_session_name: impl Into<String>) -> Self {
        Self {
            role_arn: role_arn.into(),
            role_session_name: role_session_name.into(),
            duration_seconds: None,
            external_id: None,
            policy: None,
        }
    }

    /// The session's lifetime.
    pub fn duration_seconds(mut self, secs: u32) -> Self {
        self.duration_seconds = Some(secs);
        self
    }

    /// The external id to send.
    pub fn external_id(mut self, id: impl Into<String>) -> Self {
        self.external_id = Some(id.into());
        self
    }

    /// A session policy that narrows the role's permissions.
    pub fn policy(mut self, policy_json: impl Into<String>) -> Self {
        self.policy = Some(policy_json.into());
        self
    }
}

/// Credentials of an assumed role and the session they belong to.
#[derive(Debug, Clone)]
pub struct AssumedRole {
    /// The temporary credentials of the session.
    pub credentials: AwsCredentials,
    /// `arn:aws:sts::{account}:assumed-role/{role}/{session}`.
    pub arn: String,
    /// `{role id}:{session}`.
    pub assumed_role_id: String,
}

/// What kind of STS error, for callers that react differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StsErrorKind {
    /// The caller may not do this (e.g. the role's trust policy refuses it).
    AccessDenied,
    /// The key id is unknown or the signature does not match the secret.
    InvalidCredentials,
    /// The presented session token has expired.
    ExpiredToken,
    /// The web identity token was rejected.
    InvalidIdentityToken,
    /// Too many requests; retry later.
    Throttled,
    /// The signature's time is too far from STS's clock (still, after correcting
    /// by the measured offset once).
    ClockSkew,
    /// Anything else.
    Other,
}

/// An STS failure. Messages never contain credential values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("STS {}: {}", self.action(), self.reason())]
pub enum StsError {
    /// No HTTP answer.
    Transport {
        /// The STS action.
        action: &'static str,
        /// The cause.
        source: TransportError,
    },
    /// STS answered with an error document.
    Service {
        /// The STS action.
        action: &'static str,
        /// The STS endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The STS error code.
        code: String,
        /// The server's own words.
        message: String,
    },
    /// An error status without an error document.
    Status {
        /// The STS action.
        action: &'static str,
        /// The STS endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
    },
    /// A 200 answer that is not the expected document.
    Malformed {
        /// The STS action.
        action: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The endpoint URL cannot be used.
    BadEndpoint {
        /// The STS action.
        action: &'static str,
        /// The STS endpoint.
        endpoint: String,
    },
    /// No endpoint can be derived from the region and settings.
    Endpoint {
        /// The STS action.
        action: &'static str,
        /// Why.
        source: EndpointError,
    },
}

impl StsError {
    /// The STS action that failed.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Transport { action, .. }
            | Self::Service { action, .. }
            | Self::Status { action, .. }
            | Self::Malformed { action, .. }
            | Self::BadEndpoint { action, .. }
            | Self::Endpoint { action, .. } => action,
        }
    }

    /// What went wrong, without the action.
    pub fn reason(&self) -> String {
        match self {
            Self::Transport { source, .. } => source.to_string(),
            Self::Service {
                endpoint,
                status,
                code,
                message,
                ..
            } => format!("{endpoint} answered HTTP {status} {code}: {message}"),
            Self::Status {
                endpoint, status, ..
            } => format!("{endpoint} answered HTTP {status} without an STS error document"),
            Self::Malformed { reason, .. } => format!("malformed response: {reason}"),
            Self::BadEndpoint { endpoint, .. } => {
                format!("the endpoint {endpoint:?} is not a valid URL")
            }
            Self::Endpoint { source, .. } => source.to_string(),
        }
    }

    /// What kind of error, for callers that react differently.
    pub fn kind(&self) -> StsErrorKind {
        let Self::Service { code, message, .. } = self else {
            return StsErrorKind::Other;
        };
        if is_skew_message(code, message) {
            return StsErrorKind::ClockSkew;
        }
        match code.as_str() {
            "AccessDenied" | "AccessDeniedException" => StsErrorKind::AccessDenied,
            "SignatureDoesNotMatch"
            | "InvalidClientTokenId"
            | "IncompleteSignature"
            | "InvalidAccessKeyId"
            | "MissingAuthenticationToken" => StsErrorKind::InvalidCredentials,
            "ExpiredToken" | "ExpiredTokenException" => StsErrorKind::ExpiredToken,
            "InvalidIdentityToken" | "IDPRejectedClaim" | "IDPCommunicationError" => {
                StsErrorKind::InvalidIdentityToken
            }
            "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                StsErrorKind::Throttled
            }
            _ => StsErrorKind::Other,
        }
    }
}

/// Whether an STS error says the signature's time is off (rather than the key).
fn is_skew_message(code: &str, message: &str) -> bool {
    matches!(
        code,
        "RequestTimeTooSkewed" | "RequestExpired" | "RequestInTheFuture"
    ) || (matches!(code, "SignatureDoesNotMatch" | "InvalidSignatureException")
        && (message.starts_with("Signature expired")
            || message.starts_with("Signature not yet current")))
}

/// An STS client for one endpoint and signing region.
#[derive(Debug, Clone)]
pub struct StsClient {
    http: reqwest::Client,
    endpoint: Result<AwsEndpoint, EndpointError>,
    region: String,
    clock: Arc<dyn Clock>,
    skew: Arc<ClockSkew>,
    timeout: Duration,
}

impl StsClient {
    /// The client for `region`'s endpoint (or the configured override). A region
    /// or setting no endpoint can be derived from fails each call with
    /// [`StsError::Endpoint`].
    pub fn new(cfg: &ProviderConfig, region: &str) -> Self {
        let endpoint = cfg.endpoints.sts(Some(region));
        let signing_region = endpoint
            .as_ref()
            .map(|e| e.signing_region.clone())
            .unwrap_or_else(|_| region.to_string());
        Self {
            http: cfg.http.clone(),
            endpoint,
            region: signing_region,
            clock: cfg.clock.clone(),
            skew: cfg.aws_clock_skew.clone(),
            timeout: STS_TIMEOUT,
        }
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The endpoint requests go to (empty when none can be derived).
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_ref().map(|e| e.url.as_str()).unwrap_or("")
    }

    /// The partition the endpoint was derived for (`aws`, `aws-cn`, ...); `None`
    /// for an explicit endpoint.
    pub fn partition(&self) -> Option<&'static str> {
        self.endpoint.as_ref().ok().and_then(|e| e.partition)
    }

    /// The region requests are signed for (`us-east-1` for the global endpoint).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The clock skew measured from STS answers so far (shared by every client of
    /// the same [`ProviderConfig`]).
    pub fn clock_skew(&self) -> crate::env::SkewReading {
        self.skew.reading()
    }

    /// Measures the clock skew without credentials: an unsigned `GetCallerIdentity`
    /// (STS answers 403 `MissingAuthenticationToken`, with its `Date`). Returns the
    /// offset of STS's clock from this one in seconds, and records it.
    pub async fn probe_clock_skew(&self) -> Result<i64, StsError> {
        const ACTION: &str = "GetCallerIdentity";
        let url = self.url(ACTION)?;
        let body = form(ACTION, &[]);
        let answer = http::send(url.as_str(), self.timeout, || {
            self.http
                .post(url.clone())
                .header("content-type", FORM)
                .body(body.clone())
        })
        .await
        .map_err(|source| StsError::Transport {
            action: ACTION,
            source,
        })?;
        let offset = self.observe(&answer).ok_or_else(|| StsError::Malformed {
            action: ACTION,
            reason: "the answer has no valid Date header".into(),
        })?;
        Ok(offset)
    }

    fn url(&self, action: &'static str) -> Result<url::Url, StsError> {
        let endpoint = self
            .endpoint
            .as_ref()
            .map_err(|source| StsError::Endpoint {
                action,
                source: source.clone(),
            })?;
        url::Url::parse(&endpoint.url).map_err(|_| StsError::BadEndpoint {
            action,
            endpoint: endpoint.url.clone(),
        })
    }

    /// Records the offset of the answer's `Date` from the local clock; returns it.
    fn observe(&self, answer: &http::Answer) -> Option<i64> {
        let server = skew::parse_http_date(answer.header("date")?)?;
        let offset = skew::offset_secs(server, self.clock.now());
        self.skew.record(offset);
        Some(offset)
    }

    /// Who the credentials belong to.
    pub async fn get_caller_identity(
        &self,
        creds: &AwsCredentials,
    ) -> Result<CallerIdentity, StsError> {
        const ACTION: &str = "GetCallerIdentity";
        let xml = self.call(ACTION, &[], Some(creds), &[]).await?;
        let result = section(&xml, "GetCallerIdentityResult", ACTION)?;
        Ok(CallerIdentity {
            arn: required(result, "Arn", ACTION)?,
            account: required(result, "Account", ACTION)?,
            user_id: xml::tag(result, "UserId").unwrap_or_default(),
        })
    }

    /// Session credentials for long-lived keys.
    pub async fn get_session_token(
        &self,
        creds: &AwsCredentials,
        duration_seconds: Option<u32>,
    ) -> Result<AwsCredentials, StsError> {
        const ACTION: &str = "GetSessionToken";
        let duration = duration_seconds.map(|d| d.to_string());
        let mut params = Vec::new();
        if let Some(d) = &duration {
            params.push(("DurationSeconds", d.as_str()));
        }
        let xml = self.call(ACTION, &params, Some(creds), &[]).await?;
        let result = section(&xml, "GetSessionTokenResult", ACTION)?;
        parse_credentials(result, ACTION)
    }

    /// Temporary credentials of `req.role_arn`, signed with `credentials`.
    pub async fn assume_role(
        &self,
        creds: &AwsCredentials,
        req: &AssumeRoleRequest,
    ) -> Result<AssumedRole, StsError> {
        const ACTION: &str = "AssumeRole";
        let duration = req.duration_seconds.map(|d| d.to_string());
        let mut params = vec![
            ("RoleArn", req.role_arn.as_str()),
            ("RoleSessionName", req.role_session_name.as_str()),
        ];
        if let Some(d) = &duration {
            params.push(("DurationSeconds", d.as_str()));
        }
        if let Some(id) = &req.external_id {
            params.push(("ExternalId", id.as_str()));
        }
        if let Some(p) = &req.policy {
            params.push(("Policy", p.as_str()));
        }
        let xml = self.call(ACTION, &params, Some(creds), &[]).await?;
        parse_assumed(&xml, "AssumeRoleResult", ACTION)
    }

    /// Unsigned: the web identity token is the proof.
    pub async fn assume_role_with_web_identity(
        &self,
        role_arn: &str,
        role_session_name: &str,
        web_identity_token: &Secret,
    ) -> Result<AssumedRole, StsError> {
        self.assume_role_with_web_identity_request(
            &AssumeRoleRequest::new(role_arn, role_session_name),
            web_identity_token,
        )
        .await
    }

    /// `AssumeRoleWithWebIdentity` with the optional `DurationSeconds` and session
    /// `Policy` of `req` (`ExternalId` does not apply and is not sent).
    pub async fn assume_role_with_web_identity_request(
        &self,
        req: &AssumeRoleRequest,
        web_identity_token: &Secret,
    ) -> Result<AssumedRole, StsError> {
        const ACTION: &str = "AssumeRoleWithWebIdentity";
        let duration = req.duration_seconds.map(|d| d.to_string());
        let mut params = vec![
            ("RoleArn", req.role_arn.as_str()),
            ("RoleSessionName", req.role_session_name.as_str()),
            ("WebIdentityToken", web_identity_token.expose()),
        ];
        if let Some(d) = &duration {
            params.push(("DurationSeconds", d.as_str()));
        }
        if let Some(p) = &req.policy {
            params.push(("Policy", p.as_str()));
        }
        let xml = self
            .call(ACTION, &params, None, &[web_identity_token.expose()])
            .await?;
        parse_assumed(&xml, "AssumeRoleWithWebIdentityResult", ACTION)
    }

    /// One Query API call; the response XML on HTTP 2xx. A signed request refused
    /// for clock skew is signed again with the corrected time and sent once more
    /// when the measured offset changed the correction.
    async fn call(
        &self,
        action: &'static str,
        params: &[(&str, &str)],
        creds: Option<&AwsCredentials>,
        extra_secrets: &[&str],
    ) -> Result<String, StsError> {
        let url = self.url(action)?;
        let body = form(action, params);
        let signed_with = self.skew.correction_secs();
        let mut answer = self.send(action, &url, &body, creds).await?;
        if !answer.is_success() && creds.is_some() && self.skew_corrected(&answer, signed_with) {
            tracing::info!(
                action,
                correction_secs = self.skew.correction_secs(),
                "STS refused the signature's time; signing again with the clock corrected by STS's"
            );
            answer = self.send(action, &url, &body, creds).await?;
        }
        if answer.is_success() {
            return Ok(answer.body);
        }
        let mut secrets: Vec<&str> = extra_secrets.to_vec();
        if let Some(c) = creds {
            secrets.push(c.secret.expose());
            if let Some(t) = &c.session_token {
                secrets.push(t.expose());
            }
        }
        Err(self.error(action, answer.status, &answer.body, &secrets))
    }

    /// Signs (with the skew-corrected clock) and sends once, with the transport's
    /// retries; records the answer's `Date`.
    async fn send(
        &self,
        action: &'static str,
        url: &url::Url,
        body: &str,
        creds: Option<&AwsCredentials>,
    ) -> Result<http::Answer, StsError> {
        let headers = vec![("content-type".to_string(), FORM.to_string())];
        let signed = creds.map(|c| self.signature_headers(url, &headers, body, c));
        let answer = http::send(url.as_str(), self.timeout, || {
            let mut req = self.http.post(url.clone()).body(body.to_string());
            for (n, v) in headers.iter().chain(signed.iter().flatten()) {
                req = req.header(n, v);
            }
            req
        })
        .await
        .map_err(|source| StsError::Transport { action, source })?;
        self.observe(&answer);
        Ok(answer)
    }

    /// Whether `answer` is a clock-skew refusal and the correction now differs from
    /// the one the request was signed with (`signed_with`), so signing again can
    /// succeed. [`Self::send`] has recorded the `Date` already; without one, the
    /// server time in STS's message is the measurement.
    fn skew_corrected(&self, answer: &http::Answer, signed_with: i64) -> bool {
        let error = xml::tag(&answer.body, "Error").unwrap_or_default();
        let code = xml::tag(&error, "Code").unwrap_or_default();
        if !skew::SKEW_ERROR_CODES.contains(&code.as_str()) {
            return false;
        }
        if answer
            .header("date")
            .and_then(skew::parse_http_date)
            .is_none()
        {
            let message = xml::tag(&error, "Message").unwrap_or_default();
            if let Some(server) = skew::server_time_in_message(&message) {
                self.skew
                    .record(skew::offset_secs(server, self.clock.now()));
            }
        }
        signed_with.abs_diff(self.skew.correction_secs())
            >= ClockSkew::THRESHOLD_SECS.unsigned_abs()
    }

    fn signature_headers(
        &self,
        url: &url::Url,
        headers: &[(String, String)],
        body: &str,
        creds: &AwsCredentials,
    ) -> Vec<(String, String)> {
        let params = sigv4::SigningParams {
            access_key_id: &creds.access_key_id,
            secret_access_key: creds.secret.expose(),
            session_token: creds.session_token.as_ref().map(|t| t.expose()),
            region: &self.region,
            service: "sts",
            time: self.skew.corrected(self.clock.now()),
        };
        sigv4::sign("POST", url, headers, body.as_bytes(), &params)
    }

    fn error(&self, action: &'static str, status: u16, body: &str, secrets: &[&str]) -> StsError {
        let error = xml::tag(body, "Error");
        match error.as_deref().and_then(|e| xml::tag(e, "Code")) {
            Some(code) => StsError::Service {
                action,
                endpoint: self.endpoint().to_string(),
                status,
                code: http::scrub(&code, secrets),
                message: http::scrub(
                    &error
                        .as_deref()
                        .and_then(|e| xml::tag(e, "Message"))
                        .unwrap_or_default(),
                    secrets,
                ),
            },
            None => StsError::Status {
                action,
                endpoint: self.endpoint().to_string(),
                status,
            },
        }
    }
}

fn form(action: &str, params: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    s.append_pair("Action", action);
    s.append_pair("Version", STS_VERSION);
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

fn section<'a>(xml: &'a str, name: &str, action: &'static str) -> Result<&'a str, StsError> {
    xml::element(xml, name).ok_or_else(|| StsError::Malformed {
        action,
        reason: format!("no <{name}> element"),
    })
}

fn required(xml: &str, name: &str, action: &'static str) -> Result<String, StsError> {
    xml::tag(xml, name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| StsError::Malformed {
            action,
            reason: format!("no <{name}>"),
        })
}

pub(crate) fn parse_credentials(
    result: &str,
    action: &'static str,
) -> Result<AwsCredentials, StsError> {
    let creds = section(result, "Credentials", action)?;
    let expiration = match xml::tag(creds, "Expiration") {
        Some(text) => Some(parse_time(&text).ok_or_else(|| StsError::Malformed {
            action,
            reason: format!("Expiration {text:?} is not an RFC 3339 time"),
        })?),
        None => None,
    };
    Ok(AwsCredentials {
        access_key_id: required(creds, "AccessKeyId", action)?,
        secret: Secret::new(required(creds, "SecretAccessKey", action)?),
        session_token: Some(Secret::new(required(creds, "SessionToken", action)?)),
        expiration,
        account_id: None,
    })
}

pub(crate) fn parse_assumed(
    xml: &str,
    result: &str,
    action: &'static str,
) -> Result<AssumedRole, StsError> {
    let result = section(xml, result, action)?;
    let mut credentials = parse_credentials(result, action)?;
    let user = section(result, "AssumedRoleUser", action)?;
    let arn = required(user, "Arn", action)?;
    credentials.account_id = super::Arn::parse(&arn).map(|a| a.account.to_string());
    Ok(AssumedRole {
        credentials,
        arn,
        assumed_role_id: xml::tag(user, "AssumedRoleId").unwrap_or_default(),
    })
}

/// A tag extractor for STS's flat XML documents: first element by name, entity
/// unescaping, no namespaces, attributes skipped.
pub mod xml {
    /// The raw inner text of the first `<name>` element (markup and all).
    pub fn element<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
        let open = format!("<{name}");
        let close = format!("</{name}>");
        let inner = |from: &'a str| from.find(&close).and_then(|end| from.get(..end));
        let mut rest = doc;
        while let Some(pos) = rest.find(&open) {
            // What follows `<name`: `>`, attributes, or a longer name.
            let after = rest.get(pos..)?.strip_prefix(open.as_str())?;
            match after.chars().next() {
                Some('>') => return inner(after.get(1..)?),
                Some(c) if c.is_whitespace() || c == '/' => {
                    let (attrs, from_gt) = after.split_at(after.find('>')?);
                    if attrs.ends_with('/') {
                        return Some("");
                    }
                    return inner(from_gt.get(1..)?);
                }
                _ => rest = after,
            }
        }
        None
    }

    /// The unescaped, trimmed text of the first `<name>` element.
    pub fn tag(doc: &str, name: &str) -> Option<String> {
        element(doc, name).map(|t| unescape(t.trim()))
    }

    /// `text` with the five XML entities and numeric references decoded.
    pub fn unescape(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            rest = &rest[amp..];
            let Some(semi) = rest.find(';').filter(|s| *s <= 10) else {
                out.push('&');
                rest = &rest[1..];
                continue;
            };
            match entity(&rest[1..semi]) {
                Some(c) => {
                    out.push(c);
                    rest = &rest[semi..][1..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn entity(name: &str) -> Option<char> {
        match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => {
                let n = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    name.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    const CALLER: &str = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn>
    <UserId>AROAEXAMPLE:s</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>x</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;

    #[test]
    fn extracts_tags() {
        let r = xml::element(CALLER, "GetCallerIdentityResult").unwrap();
        assert_eq!(xml::tag(r, "Account").unwrap(), "123456789012");
        assert_eq!(xml::tag(r, "UserId").unwrap(), "AROAEXAMPLE:s");
        assert!(xml::tag(r, "Missing").is_none());
        assert_eq!(xml::tag("<A/>", "A").unwrap(), "");
        assert_eq!(xml::tag("<AB>1</AB><A x=\"1\">2</A>", "A").unwrap(), "2");
        assert!(xml::tag("<A>unterminated", "A").is_none());
    }

    #[test]
    fn unescapes_entities() {
        assert_eq!(
            xml::unescape("a&amp;b&lt;&#65;&#x42;&bogus;&"),
            "a&b<AB&bogus;&"
        );
    }

    #[test]
    fn parses_assumed_role() {
        let doc = r#"<AssumeRoleResponse><AssumeRoleResult>
          <Credentials><AccessKeyId>ASIAX</AccessKeyId><SecretAccessKey>sec</SecretAccessKey>
          <SessionToken>tok+/=</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration></Credentials>
          <AssumedRoleUser><Arn>arn:aws:sts::111122223333:assumed-role/r/s</Arn><AssumedRoleId>AROA1:s</AssumedRoleId></AssumedRoleUser>
        </AssumeRoleResult></AssumeRoleResponse>"#;
        let a = parse_assumed(doc, "AssumeRoleResult", "AssumeRole").unwrap();
        assert_eq!(a.credentials.access_key_id, "ASIAX");
        assert_eq!(a.credentials.session_token.unwrap().expose(), "tok+/=");
        assert_eq!(a.credentials.account_id.as_deref(), Some("111122223333"));
        assert_eq!(
            a.credentials.expiration,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );
        assert_eq!(a.assumed_role_id, "AROA1:s");
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for doc in [
            "",
            "not xml",
            "<AssumeRoleResult><Credentials></Credentials>",
        ] {
            assert!(matches!(
                parse_assumed(doc, "AssumeRoleResult", "AssumeRole"),
                Err(StsError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn form_body() {
        assert_eq!(
            form("AssumeRole", &[("RoleArn", "arn:aws:iam::1:role/a b")]),
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa+b"
        );
    }

    #[test]
    fn error_kinds() {
        let e = |code: &str| StsError::Service {
            action: "X",
            endpoint: "e".into(),
            status: 403,
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(e("AccessDenied").kind(), StsErrorKind::AccessDenied);
        assert_eq!(
            e("SignatureDoesNotMatch").kind(),
            StsErrorKind::InvalidCredentials
        );
        assert_eq!(e("Whatever").kind(), StsErrorKind::Other);
        let skewed = StsError::Service {
            action: "X",
            endpoint: "e".into(),
            status: 403,
            code: "SignatureDoesNotMatch".into(),
            message: "Signature expired: 20261130T093000Z is now earlier than 20261130T093500Z (20261130T095000Z - 15 min.)".into(),
        };
        assert_eq!(skewed.kind(), StsErrorKind::ClockSkew);
        assert_eq!(e("RequestTimeTooSkewed").kind(), StsErrorKind::ClockSkew);
    }
}
