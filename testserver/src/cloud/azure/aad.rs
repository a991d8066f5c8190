//! Azure AD token endpoint as AKS workload identity uses it: `POST /{tenant}/oauth2/v2.0/token`
//!
//! Global, always served. Form `grant_type=client_credentials`, `client_id`,
//! `scope=<resource>/.default`, `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
//! `client_assertion=<AKS service-account token>` (RS256 by the cluster key, `iss`
//! [`AKS_ISSUER`], `aud` containing `api://AzureADTokenExchange`, unexpired). The
//! tenant must be `azure.tenant_id` and the client id one of
//! `azure.workload_client_ids`. → `{token_type: "Bearer", expires_in, ext_expires_in,
//! access_token}` (numbers). Errors are AAD's `{error, error_description: "AADSTSnnn:
//! ...", error_codes, timestamp, trace_id, correlation_id}`, all 400.
//!

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{
    access_token_claims, json_response, oauth_error, sign, ttl, AzureIdentity, MockCloud, Subject,
    AKS_ISSUER,
};
use crate::util::{now_unix, random_uuid, rfc3339};

/// The audience AKS projects into workload-identity tokens.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An AAD error: `AADSTS{code}: {message}` plus AAD's trace fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AadError {
    error: &'static str,
    code: u32,
    message: String,
}

impl AadError {
    fn new(error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self {
            error,
            code,
            message: message.into(),
        }
    }

    fn missing(param: &str) -> Self {
        Self::new(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
    }

    fn into_response(self) -> Response {
        let (trace, correlation) = (random_uuid(), random_uuid());
        let timestamp = rfc3339(now_unix()).replace('T', " ");
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}",
            self.code, self.message
        );
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": self.error,
                "error_description": description,
                "error_codes": [self.code],
                "timestamp": timestamp,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
            }),
        )
    }
}

/// The form fields of a token request; a body that is not a form reads as empty,
/// so AAD's "missing parameter" errors follow, as they do on the real endpoint.
fn form_fields(headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Vec::new();
    }
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The resource a client-credentials `scope` names (`https://x/.default` → `https://x`).
fn scope_resource(scope: &str) -> Result<String, AadError> {
    let mut scopes = scope.split_whitespace();
    let (Some(only), None) = (scopes.next(), scopes.next()) else {
        return Err(AadError::new(
            "invalid_scope",
            70011,
            format!("The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
        ));
    };
    match only.strip_suffix("/.default") {
        Some(resource) if !resource.is_empty() => Ok(resource.to_string()),
        _ => Err(AadError::new(
            "invalid_scope",
            1002012,
            format!("The provided value for scope {only} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        )),
    }
}

/// Verifies an AKS federated token the way AAD checks a federated credential.
fn verify_assertion(cloud: &MockCloud, assertion: &str) -> Result<(), AadError> {
    use jsonwebtoken::errors::ErrorKind;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[AKS_ISSUER]);
    validation.set_audience(&[TOKEN_EXCHANGE_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    let Err(e) = cloud.keys().eks.verify::<Value>(assertion, &validation) else {
        return Ok(());
    };
    let peek = crate::keys::peek_claims(assertion).unwrap_or(Value::Null);
    let claim = |name: &str| match &peek[name] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    Err(match e.kind() {
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => AadError::new(
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                rfc3339(now_unix()),
                claim("nbf"),
                claim("exp"),
            ),
        ),
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) => {
            AadError::new(
                "invalid_client",
                70021,
                format!(
                    "No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{}'.",
                    claim("iss"),
                    claim("sub"),
                    claim("aud"),
                ),
            )
        }
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidRsaKey(_) => {
            AadError::new(
                "invalid_client",
                700027,
                "Client assertion contains an invalid signature.",
            )
        }
        _ => AadError::new("invalid_client", 50027, "JWT token is invalid or malformed."),
    })
}

/// Validates a workload-identity token request; on success, the client id and the
/// token's audience.
fn check_token_request(
    cloud: &MockCloud,
    az: &AzureIdentity,
    fields: &[(String, String)],
) -> Result<(String, String), AadError> {
    let grant_type = field(fields, "grant_type").ok_or_else(|| AadError::missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(AadError::new(
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = field(fields, "client_id").ok_or_else(|| AadError::missing("client_id"))?;
    let scope = field(fields, "scope").ok_or_else(|| AadError::missing("scope"))?;
    let audience = scope_resource(scope)?;
    if !az
        .workload_client_ids
        .iter()
        .any(|c| c.eq_ignore_ascii_case(client_id))
    {
        return Err(AadError::new(
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", az.tenant_id),
        ));
    }
    let assertion = field(fields, "client_assertion").ok_or_else(|| {
        AadError::new(
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        )
    })?;
    if field(fields, "client_assertion_type") != Some(JWT_BEARER) {
        return Err(AadError::new(
            "invalid_request",
            90014,
            format!(
                "The required field 'client_assertion_type' is missing or is not '{JWT_BEARER}'."
            ),
        ));
    }
    verify_assertion(cloud, assertion)?;
    Ok((client_id.to_string(), audience))
}

pub(super) async fn token(
    State(cloud): State<MockCloud>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = cloud.config();
    let Some(az) = config
        .azure
        .as_ref()
        .filter(|az| az.tenant_id.eq_ignore_ascii_case(&tenant))
    else {
        return AadError::new(
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        )
        .into_response();
    };
    let fields = form_fields(&headers, &body);
    let (client_id, audience) = match check_token_request(&cloud, az, &fields) {
        Ok(ok) => ok,
        Err(e) => return e.into_response(),
    };
    let ttl = ttl(&cloud);
    let claims = access_token_claims(
        &Subject::workload(az, &client_id),
        &audience,
        now_unix(),
        ttl,
    );
    let Ok(token) = sign(&cloud, &claims) else {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "signing failed",
        );
    };
    json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": ttl,
            "ext_expires_in": ttl,
            "access_token": token,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_must_name_one_resource_with_default() {
        assert_eq!(
            scope_resource("https://management.azure.com/.default").unwrap(),
            "https://management.azure.com"
        );
        assert_eq!(scope_resource("https://x/read").unwrap_err().code, 1002012);
        assert_eq!(scope_resource("/.default").unwrap_err().code, 1002012);
        assert_eq!(
            scope_resource("a/.default b/.default").unwrap_err().code,
            70011
        );
    }
}
