//! The request's parameters and their checks: the action and version, role ARNs,
//! session names, durations, external ids and session policies, with the real
//! service's validation messages.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, Method};
use serde_json::Value;

use super::{StsError, MAX_POLICY_CHARS, VERSION};

/// The STS actions the mock implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    GetCallerIdentity,
    GetSessionToken,
    AssumeRole,
    AssumeRoleWithWebIdentity,
}

impl Action {
    pub(super) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "GetCallerIdentity" => Self::GetCallerIdentity,
            "GetSessionToken" => Self::GetSessionToken,
            "AssumeRole" => Self::AssumeRole,
            "AssumeRoleWithWebIdentity" => Self::AssumeRoleWithWebIdentity,
            _ => return None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::GetCallerIdentity => "GetCallerIdentity",
            Self::GetSessionToken => "GetSessionToken",
            Self::AssumeRole => "AssumeRole",
            Self::AssumeRoleWithWebIdentity => "AssumeRoleWithWebIdentity",
        }
    }
}

/// A request's parameters: the form body of a POST and the query string (first
/// occurrence of a name wins, body before query).
pub(super) struct Params(HashMap<String, String>);

impl Params {
    pub(super) fn parse(method: &Method, query: &str, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut map = HashMap::new();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if method == Method::POST && is_form {
            for (k, v) in url::form_urlencoded::parse(body) {
                map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Self(map)
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A required parameter; `member` is its name in validation messages.
    pub(super) fn required(&self, name: &str, member: &str) -> Result<&str, StsError> {
        self.get(name)
            .ok_or_else(|| StsError::validation(member, None, "Member must not be null"))
    }

    pub(super) fn action(&self) -> Result<Action, StsError> {
        let name = self.get("Action").ok_or(StsError::MissingAction)?;
        let version = self.get("Version").unwrap_or("NO_VERSION_SPECIFIED");
        match Action::parse(name) {
            Some(action) if version == VERSION => Ok(action),
            _ => Err(StsError::InvalidAction {
                action: name.to_string(),
                version: version.to_string(),
            }),
        }
    }
}

/// A parsed `arn:{partition}:iam::{account}:role/{path/}{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RoleArn {
    pub(super) arn: String,
    pub(super) partition: String,
    pub(super) account: String,
    pub(super) name: String,
}

impl RoleArn {
    pub(super) fn parse(arn: &str) -> Result<Self, StsError> {
        Self::try_parse(arn).ok_or_else(|| {
            if arn.len() < 20 {
                StsError::validation(
                    "roleArn",
                    Some(arn),
                    "Member must have length greater than or equal to 20",
                )
            } else {
                StsError::Validation(format!("{arn} is invalid"))
            }
        })
    }

    fn try_parse(arn: &str) -> Option<Self> {
        if arn.len() > 2048 {
            return None;
        }
        let rest = arn.strip_prefix("arn:")?;
        let (partition, rest) = rest.split_once(':')?;
        if !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") {
            return None;
        }
        let rest = rest.strip_prefix("iam::")?;
        let (account, resource) = rest.split_once(':')?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let path_and_name = resource.strip_prefix("role/")?;
        let name = path_and_name.rsplit('/').next()?;
        let name_ok = (1..=64).contains(&name.len()) && name.chars().all(is_name_char);
        let path_ok = path_and_name
            .split('/')
            .all(|seg| !seg.is_empty() && seg.chars().all(|c| is_name_char(c) || c == '/'));
        (name_ok && path_ok).then(|| Self {
            arn: arn.to_string(),
            partition: partition.to_string(),
            account: account.to_string(),
            name: name.to_string(),
        })
    }
}

/// `[\w+=,.@-]`, the characters of role, user and session names.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

pub(super) fn role_session_name(params: &Params) -> Result<&str, StsError> {
    let name = params.required("RoleSessionName", "roleSessionName")?;
    if !(2..=64).contains(&name.len()) {
        return Err(StsError::validation(
            "roleSessionName",
            Some(name),
            "Member must have length between 2 and 64",
        ));
    }
    if !name.chars().all(is_name_char) {
        return Err(StsError::validation(
            "roleSessionName",
            Some(name),
            r"Member must satisfy regular expression pattern: [\w+=,.@-]*",
        ));
    }
    Ok(name)
}

pub(super) fn duration_seconds(
    params: &Params,
    min: u64,
    max: u64,
) -> Result<Option<u64>, StsError> {
    let Some(raw) = params.get("DurationSeconds") else {
        return Ok(None);
    };
    let value: u64 = raw.trim().parse().map_err(|_| {
        StsError::validation("durationSeconds", Some(raw), "Member must be an integer")
    })?;
    if value < min {
        return Err(StsError::validation(
            "durationSeconds",
            Some(raw),
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if value > max {
        return Err(StsError::validation(
            "durationSeconds",
            Some(raw),
            &format!("Member must have value less than or equal to {max}"),
        ));
    }
    Ok(Some(value))
}

pub(super) fn external_id(params: &Params) -> Result<Option<&str>, StsError> {
    let Some(id) = params.get("ExternalId") else {
        return Ok(None);
    };
    if !(2..=1224).contains(&id.len()) {
        return Err(StsError::validation(
            "externalId",
            Some(id),
            "Member must have length between 2 and 1224",
        ));
    }
    if !id.chars().all(|c| is_name_char(c) || c == ':' || c == '/') {
        return Err(StsError::validation(
            "externalId",
            Some(id),
            r"Member must satisfy regular expression pattern: [\w+=,.@:\/-]*",
        ));
    }
    Ok(Some(id))
}

/// The `Policy` parameter, raw and parsed: at most 2048 characters, a JSON object
/// with a `Statement`.
pub(super) fn session_policy(params: &Params) -> Result<Option<(String, Value)>, StsError> {
    let Some(raw) = params.get("Policy") else {
        return Ok(None);
    };
    if raw.chars().count() > MAX_POLICY_CHARS {
        return Err(StsError::validation(
            "policy",
            Some("..."),
            &format!("Member must have length less than or equal to {MAX_POLICY_CHARS}"),
        ));
    }
    let parsed: Value = serde_json::from_str(raw).map_err(|_| {
        StsError::MalformedPolicyDocument("The policy is not in the valid JSON format.".into())
    })?;
    let statement_ok = parsed
        .get("Statement")
        .is_some_and(|s| s.is_array() || s.is_object());
    if !statement_ok {
        return Err(StsError::MalformedPolicyDocument(
            "Syntax errors in policy.".into(),
        ));
    }
    Ok(Some((raw.to_string(), parsed)))
}

/// `PolicyArns.member.N.arn`, N from 1, at most 10.
pub(super) fn policy_arns(params: &Params) -> Result<Vec<String>, StsError> {
    let mut arns = Vec::new();
    for n in 1.. {
        let Some(arn) = params.get(&format!("PolicyArns.member.{n}.arn")) else {
            break;
        };
        if n > 10 {
            return Err(StsError::validation(
                "policyArns",
                None,
                "Member must have length less than or equal to 10",
            ));
        }
        if !(arn.starts_with("arn:aws:iam::") && arn.contains(":policy/")) {
            return Err(StsError::Validation(format!("{arn} is invalid")));
        }
        arns.push(arn.to_string());
    }
    Ok(arns)
}

/// The percentage of the packed-policy allowance a policy uses (STS compresses;
/// the mock approximates by length).
pub(super) fn packed_policy_size(raw: &str) -> usize {
    raw.len()
        .saturating_mul(100)
        .div_ceil(MAX_POLICY_CHARS.saturating_mul(2))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn role_arns() {
        let r = RoleArn::parse("arn:aws:iam::123456789012:role/path/to/App-Role").unwrap();
        assert_eq!(r.account, "123456789012");
        assert_eq!(r.name, "App-Role");
        assert_eq!(r.partition, "aws");
        for bad in [
            "arn:aws:iam::12345678901:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:sts::123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
            "arn:foo:iam::123456789012:role/x",
            "short",
        ] {
            let err = RoleArn::parse(bad).unwrap_err();
            assert_eq!(err.code(), "ValidationError", "{bad}");
        }
    }

    #[test]
    fn session_names() {
        assert!(role_session_name(&params(&[("RoleSessionName", "s2iam-session")])).is_ok());
        assert!(role_session_name(&params(&[("RoleSessionName", "a+b=c,d.e@f_g-1")])).is_ok());
        for bad in ["a", "has space", "slash/no", &"x".repeat(65)] {
            let err = role_session_name(&params(&[("RoleSessionName", bad)])).unwrap_err();
            assert_eq!(err.code(), "ValidationError", "{bad}");
        }
        let err = role_session_name(&params(&[])).unwrap_err();
        assert!(err.to_string().contains("Value null at 'roleSessionName'"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration_seconds(&params(&[]), 900, 43200).unwrap(), None);
        assert_eq!(
            duration_seconds(&params(&[("DurationSeconds", "900")]), 900, 43200).unwrap(),
            Some(900)
        );
        for bad in ["899", "43201", "abc", "-1", ""] {
            assert!(duration_seconds(&params(&[("DurationSeconds", bad)]), 900, 43200).is_err());
        }
    }

    #[test]
    fn policies() {
        let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
        let (raw, parsed) = session_policy(&params(&[("Policy", ok)])).unwrap().unwrap();
        assert_eq!(raw, ok);
        assert_eq!(parsed["Statement"][0]["Action"], "s3:GetObject");
        let err = session_policy(&params(&[("Policy", "{not json")])).unwrap_err();
        assert_eq!(err.code(), "MalformedPolicyDocument");
        let err =
            session_policy(&params(&[("Policy", "{\"Version\":\"2012-10-17\"}")])).unwrap_err();
        assert_eq!(err.code(), "MalformedPolicyDocument");
        let long = format!("{{\"Statement\":[],\"x\":\"{}\"}}", "a".repeat(2100));
        assert_eq!(
            session_policy(&params(&[("Policy", &long)]))
                .unwrap_err()
                .code(),
            "ValidationError"
        );
    }

    #[test]
    fn external_ids() {
        assert_eq!(
            external_id(&params(&[("ExternalId", "abc:def/1")])).unwrap(),
            Some("abc:def/1")
        );
        assert!(external_id(&params(&[("ExternalId", "a")])).is_err());
        assert!(external_id(&params(&[("ExternalId", "a b")])).is_err());
    }

    #[test]
    fn actions_and_versions() {
        assert_eq!(
            params(&[("Action", "GetCallerIdentity"), ("Version", VERSION)])
                .action()
                .unwrap(),
            Action::GetCallerIdentity
        );
        assert_eq!(params(&[]).action().unwrap_err().code(), "MissingAction");
        let err = params(&[("Action", "GetCallerIdentity")])
            .action()
            .unwrap_err();
        assert_eq!(err.code(), "InvalidAction");
        assert!(err.to_string().contains("NO_VERSION_SPECIFIED"));
        let err = params(&[("Action", "Nope"), ("Version", VERSION)])
            .action()
            .unwrap_err();
        assert_eq!(err.code(), "InvalidAction");
    }
}
