//! `AssumeRoleWithWebIdentity`: unsigned, authorised by an RS256 JWT from one of
//! the mock issuers (EKS/AKS cluster, Google, Azure AD).

use serde_json::Value;

use super::actions::{credentials_xml, issue_role_session, role_assumable};
use super::calls::StsCall;
use super::params::{
    duration_seconds, packed_policy_size, policy_arns, role_session_name, session_policy, Action,
    Params, RoleArn,
};
use super::xml::xml_escape;
use super::StsError;
use crate::cloud::{MockCloud, AKS_ISSUER, EKS_ISSUER};
use crate::util::now_unix;

pub(super) fn assume_role_with_web_identity(
    cloud: &MockCloud,
    params: &Params,
) -> Result<String, StsError> {
    let role = RoleArn::parse(params.required("RoleArn", "roleArn")?)?;
    let session = role_session_name(params)?;
    let token = params.required("WebIdentityToken", "webIdentityToken")?;
    if !(4..=20_000).contains(&token.len()) {
        return Err(StsError::validation(
            "webIdentityToken",
            Some("***"),
            "Member must have length between 4 and 20000",
        ));
    }
    let duration = duration_seconds(params, 900, 43_200)?;
    let policy = session_policy(params)?;
    let policy_arns = policy_arns(params)?;
    let identity = verify_web_identity(cloud, token)?;
    if !role_assumable(cloud, &role) {
        return Err(StsError::AccessDenied(
            "Not authorized to perform sts:AssumeRoleWithWebIdentity".into(),
        ));
    }
    let (user, cred) = issue_role_session(cloud, &role, session, duration);
    let mut call = StsCall::new(Action::AssumeRoleWithWebIdentity, None);
    call.role_arn = Some(role.arn.clone());
    call.role_session_name = Some(session.to_string());
    call.duration_seconds = duration;
    call.policy_arns = policy_arns;
    call.web_identity_subject = Some(identity.subject.clone());
    call.issued_access_key_id = Some(cred.access_key_id.clone());
    let packed = policy.as_ref().map(|(raw, _)| packed_policy_size(raw));
    call.policy = policy.map(|(_, parsed)| parsed);
    cloud.record_sts_call(call);
    let mut xml = format!(
        "<SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken><Audience>{}</Audience>",
        xml_escape(&identity.subject),
        xml_escape(&identity.audience)
    );
    xml.push_str(&user);
    xml.push_str(&credentials_xml(&cred));
    if let Some(size) = packed {
        xml.push_str(&format!("<PackedPolicySize>{size}</PackedPolicySize>"));
    }
    xml.push_str(&format!(
        "<Provider>{}</Provider>",
        xml_escape(&identity.provider(&role.account))
    ));
    Ok(xml)
}

/// What a verified web identity token established.
#[derive(Debug, Clone)]
struct WebIdentity {
    issuer: String,
    subject: String,
    audience: String,
    google: bool,
}

impl WebIdentity {
    /// `accounts.google.com` for Google; otherwise the IAM OIDC provider's ARN.
    fn provider(&self, account: &str) -> String {
        if self.google {
            return "accounts.google.com".into();
        }
        let host_path = self
            .issuer
            .trim_start_matches("https://")
            .trim_end_matches('/');
        format!("arn:aws:iam::{account}:oidc-provider/{host_path}")
    }
}

/// Which mock issuer signed a token, by `kid`, and whether its `iss` is one that
/// issuer uses.
fn issuer_for(cloud: &MockCloud, kid: &str, iss: &str) -> Option<(crate::keys::Issuer, bool)> {
    use crate::keys::Issuer;
    let keys = cloud.keys();
    [Issuer::Eks, Issuer::Google, Issuer::Azure]
        .into_iter()
        .find(|i| keys.get(*i).kid() == kid)
        .map(|i| {
            let iss_ok = match i {
                Issuer::Eks => iss == EKS_ISSUER || iss == AKS_ISSUER,
                Issuer::Google => {
                    iss == "https://accounts.google.com" || iss == "accounts.google.com"
                }
                _ => {
                    iss.starts_with("https://login.microsoftonline.com/")
                        || iss.starts_with("https://sts.windows.net/")
                }
            };
            (i, iss_ok)
        })
}

fn verify_web_identity(cloud: &MockCloud, token: &str) -> Result<WebIdentity, StsError> {
    let not_jwt = || {
        StsError::InvalidIdentityToken(
            "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)".into(),
        )
    };
    let header = jsonwebtoken::decode_header(token).map_err(|_| not_jwt())?;
    let peeked = crate::keys::peek_claims(token).ok_or_else(not_jwt)?;
    let iss = peeked.get("iss").and_then(Value::as_str).unwrap_or("");
    let (issuer, iss_ok) = issuer_for(cloud, header.kid.as_deref().unwrap_or(""), iss)
        .ok_or_else(|| {
            StsError::InvalidIdentityToken(
                "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements".into(),
            )
        })?;
    if !iss_ok {
        return Err(StsError::InvalidIdentityToken(format!(
            "No OpenIDConnect provider found in your account for {iss}"
        )));
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let claims: Value = cloud
        .keys()
        .get(issuer)
        .verify(token, &validation)
        .map_err(|e| web_identity_error(&e, &peeked))?;
    let audience = match claims.get("aud") {
        Some(Value::String(a)) => Some(a.clone()),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
    .ok_or_else(|| StsError::InvalidIdentityToken("Incorrect token audience".into()))?;
    Ok(WebIdentity {
        issuer: iss.to_string(),
        subject: claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        audience,
        google: issuer == crate::keys::Issuer::Google,
    })
}

fn web_identity_error(err: &jsonwebtoken::errors::Error, claims: &Value) -> StsError {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::ExpiredSignature => StsError::ExpiredWebIdentityToken(format!(
            "Token expired: current date/time {} must be before the expiration date/time {}",
            now_unix(),
            claims.get("exp").and_then(Value::as_u64).unwrap_or(0)
        )),
        ErrorKind::ImmatureSignature => {
            StsError::InvalidIdentityToken("Token is not yet valid (nbf is in the future)".into())
        }
        ErrorKind::MissingRequiredClaim(c) => {
            StsError::InvalidIdentityToken(format!("The token is missing the '{c}' claim"))
        }
        _ => StsError::InvalidIdentityToken(
            "The web identity token that was passed could not be validated by AWS. Get a new identity token from the identity provider and then retry the request.".into(),
        ),
    }
}
