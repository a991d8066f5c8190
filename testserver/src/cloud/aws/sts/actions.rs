//! The signed actions: `GetCallerIdentity`, `GetSessionToken` and `AssumeRole`,
//! and the role sessions and credentials they issue.

use std::time::Duration;

use super::super::{assumed_role_arn, constant_time_eq, role_unique_id};
use super::calls::StsCall;
use super::params::{
    duration_seconds, external_id, packed_policy_size, policy_arns, role_session_name,
    session_policy, Action, Params, RoleArn,
};
use super::xml::xml_escape;
use super::StsError;
use crate::cloud::{AwsCredential, MockCloud};
use crate::util::rfc3339;

pub(super) fn get_caller_identity(
    cloud: &MockCloud,
    caller: &AwsCredential,
) -> Result<String, StsError> {
    cloud.record_sts_call(StsCall::new(Action::GetCallerIdentity, Some(caller)));
    Ok(format!(
        "<Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>",
        xml_escape(&caller.arn),
        xml_escape(&caller.user_id),
        xml_escape(&caller.account)
    ))
}

pub(super) fn get_session_token(
    cloud: &MockCloud,
    caller: &AwsCredential,
    params: &Params,
) -> Result<String, StsError> {
    if caller.session_token.is_some() {
        return Err(StsError::AccessDenied(
            "Cannot call GetSessionToken with session credentials".into(),
        ));
    }
    let duration = duration_seconds(params, 900, 129_600)?;
    let ttl = session_ttl(cloud, duration, 43_200);
    let cred = cloud.issue_session_for(&caller.arn, &caller.user_id, &caller.account, ttl);
    let mut call = StsCall::new(Action::GetSessionToken, Some(caller));
    call.duration_seconds = duration;
    call.issued_access_key_id = Some(cred.access_key_id.clone());
    cloud.record_sts_call(call);
    Ok(credentials_xml(&cred))
}

pub(super) fn assume_role(
    cloud: &MockCloud,
    caller: &AwsCredential,
    params: &Params,
) -> Result<String, StsError> {
    let role = RoleArn::parse(params.required("RoleArn", "roleArn")?)?;
    let session = role_session_name(params)?;
    let duration = duration_seconds(params, 900, 43_200)?;
    if caller.arn.contains(":assumed-role/") && duration.is_some_and(|d| d > 3600) {
        return Err(StsError::Validation(
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.".into(),
        ));
    }
    let external_id = external_id(params)?;
    let policy = session_policy(params)?;
    let policy_arns = policy_arns(params)?;
    if !role_assumable(cloud, &role) || !external_id_matches(cloud, &role, external_id) {
        return Err(StsError::AccessDenied(format!(
            "User: {} is not authorized to perform: sts:AssumeRole on resource: {}",
            caller.arn, role.arn
        )));
    }
    let (user, cred) = issue_role_session(cloud, &role, session, duration);
    let mut call = StsCall::new(Action::AssumeRole, Some(caller));
    call.role_arn = Some(role.arn.clone());
    call.role_session_name = Some(session.to_string());
    call.duration_seconds = duration;
    call.external_id = external_id.map(str::to_string);
    call.policy_arns = policy_arns;
    call.issued_access_key_id = Some(cred.access_key_id.clone());
    let packed = policy.as_ref().map(|(raw, _)| packed_policy_size(raw));
    call.policy = policy.map(|(_, parsed)| parsed);
    cloud.record_sts_call(call);
    let mut xml = user + &credentials_xml(&cred);
    if let Some(size) = packed {
        xml.push_str(&format!("<PackedPolicySize>{size}</PackedPolicySize>"));
    }
    Ok(xml)
}

/// The lifetime of issued credentials: what was asked for (or STS's default), but
/// never longer than the mock cloud's `token_ttl`, so tests that shorten it to
/// exercise refresh get short-lived credentials from every path.
pub(super) fn session_ttl(cloud: &MockCloud, requested: Option<u64>, default: u64) -> Duration {
    let ttl = cloud.config().token_ttl;
    Duration::from_secs(requested.unwrap_or(default)).min(ttl)
}

/// Whether the configured `assumable_roles` (empty = any) allow `role`.
pub(super) fn role_assumable(cloud: &MockCloud, role: &RoleArn) -> bool {
    let allowed = cloud
        .config()
        .aws
        .map(|a| a.assumable_roles)
        .unwrap_or_default();
    allowed.is_empty() || allowed.contains(&role.arn)
}

/// A trust policy's `sts:ExternalId` condition: roles without one accept any (or
/// no) external id; the others only theirs (STS answers the same AccessDenied).
fn external_id_matches(cloud: &MockCloud, role: &RoleArn, sent: Option<&str>) -> bool {
    let required = cloud
        .config()
        .aws
        .and_then(|a| a.role_external_ids.get(&role.arn).cloned());
    match required {
        None => true,
        Some(id) => sent.is_some_and(|s| constant_time_eq(s.as_bytes(), id.as_bytes())),
    }
}

/// Issues `assumed-role/{name}/{session}` credentials; returns the
/// `<AssumedRoleUser>` XML and the credential.
pub(super) fn issue_role_session(
    cloud: &MockCloud,
    role: &RoleArn,
    session: &str,
    duration: Option<u64>,
) -> (String, AwsCredential) {
    let arn = assumed_role_arn(&role.account, &role.name, session).replacen(
        "arn:aws:",
        &format!("arn:{}:", role.partition),
        1,
    );
    let user_id = format!("{}:{session}", role_unique_id(&role.arn));
    let ttl = session_ttl(cloud, duration, 3600);
    let cred = cloud.issue_session_for(&arn, &user_id, &role.account, ttl);
    let xml = format!(
        "<AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser>",
        xml_escape(&user_id),
        xml_escape(&arn)
    );
    (xml, cred)
}

pub(super) fn credentials_xml(cred: &AwsCredential) -> String {
    format!(
        "<Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials>",
        xml_escape(&cred.access_key_id),
        xml_escape(&cred.secret_access_key),
        xml_escape(cred.session_token.as_deref().unwrap_or("")),
        rfc3339(cred.expires.unwrap_or(0))
    )
}
