//! The `sub` the auth service will issue, computed locally the way the reference
//! server's `SelectIdentityFormat` computes it: every identity has a set of valid
//! formats (candidates); the first one in the client's
//! `X-S2IAM-Identity-Format-Preference` wins, else the first in the server's
//! built-in order, else the provider's floor.
//!
//! | provider | format | value | valid when |
//! |---|---|---|---|
//! | AWS | `aws-arn` (floor) | caller ARN | always |
//! | AWS | `aws-iam-role-arn` | `arn:{partition}:iam::{account}:role/{role}` | assumed-role ARN |
//! | AWS | `aws-role-id` | `UserId` before `:` | assumed-role ARN |
//! | GCP | `gcp-sa-unique-id` (floor) | `sub` | always |
//! | GCP | `gcp-sa-email` | `email` | `email_verified: true` |
//! | Azure | `azure-object-id` (floor) | `oid`, else `sub`, else `appid` | always |
//! | Azure | `azure-resource-id` | `xms_mirid` | user-assigned identity |

use serde_json::{Map, Value};

/// The server's built-in order, after the client's preference.
pub const SERVER_ORDER: &[&str] = &[
    "aws-arn",
    "aws-iam-role-arn",
    "aws-role-id",
    "gcp-sa-email",
    "gcp-sa-unique-id",
    "azure-object-id",
    "azure-resource-id",
];

/// One valid representation of the principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The identity format.
    pub format: &'static str,
    /// The identifier in that format.
    pub value: String,
}

fn candidate(format: &'static str, value: impl Into<String>) -> Candidate {
    Candidate {
        format,
        value: value.into(),
    }
}

/// AWS: from `GetCallerIdentity`'s `Arn`, `UserId` and `Account`.
pub fn aws(arn: &str, user_id: &str, account: &str) -> Vec<Candidate> {
    let mut out = vec![candidate("aws-arn", arn)];
    let assumed = crate::provider::aws::Arn::parse(arn).and_then(|a| {
        let (role, _session) = a.assumed_role()?;
        Some((a.partition, role))
    });
    if let Some((partition, role)) = assumed {
        out.push(candidate(
            "aws-iam-role-arn",
            format!("arn:{partition}:iam::{account}:role/{role}"),
        ));
        if let Some((role_id, _)) = user_id.split_once(':') {
            if !role_id.is_empty() {
                out.push(candidate("aws-role-id", role_id));
            }
        }
    }
    out
}

fn str_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// GCP: from the ID token's claims.
pub fn gcp(claims: &Map<String, Value>) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(sub) = str_claim(claims, "sub") {
        out.push(candidate("gcp-sa-unique-id", sub));
    }
    if let Some(email) = str_claim(claims, "email") {
        if claims.get("email_verified").and_then(Value::as_bool) == Some(true) {
            out.push(candidate("gcp-sa-email", email));
        }
    }
    out
}

/// Azure: from the access token's claims.
pub fn azure(claims: &Map<String, Value>) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(p) = ["oid", "sub", "appid"]
        .iter()
        .find_map(|c| str_claim(claims, c))
    {
        out.push(candidate("azure-object-id", p));
    }
    if let Some(m) = str_claim(claims, "xms_mirid").filter(|m| {
        m.to_ascii_lowercase()
            .contains("/providers/microsoft.managedidentity/userassignedidentities/")
    }) {
        out.push(candidate("azure-resource-id", m));
    }
    out
}

/// The candidate the server picks for `preference`.
pub fn negotiate<'a>(candidates: &'a [Candidate], preference: &[String]) -> Option<&'a Candidate> {
    preference
        .iter()
        .map(|p| p.trim())
        .chain(SERVER_ORDER.iter().copied())
        .find_map(|wanted| candidates.iter().find(|c| c.format == wanted))
        .or_else(|| candidates.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn assumed_role_becomes_the_role_arn_without_the_session() {
        let c = aws(
            "arn:aws:sts::123456789012:assumed-role/app/s2iam-session",
            "AROAEXAMPLE:s2iam-session",
            "123456789012",
        );
        let default = prefs(crate::exchange::DEFAULT_IDENTITY_FORMAT_PREFERENCE);
        let chosen = negotiate(&c, &default).unwrap();
        assert_eq!(chosen.format, "aws-iam-role-arn");
        assert_eq!(chosen.value, "arn:aws:iam::123456789012:role/app");
        // No preference: the server's order puts the full ARN first.
        assert_eq!(negotiate(&c, &[]).unwrap().format, "aws-arn");
        assert_eq!(
            negotiate(&c, &prefs(&[" aws-role-id "])).unwrap().value,
            "AROAEXAMPLE"
        );
    }

    #[test]
    fn users_have_only_the_arn() {
        let c = aws(
            "arn:aws-cn:iam::123456789012:user/u",
            "AIDA",
            "123456789012",
        );
        assert_eq!(c.len(), 1);
        let chosen = negotiate(&c, &prefs(&["aws-iam-role-arn"])).unwrap();
        assert_eq!(chosen.format, "aws-arn");
    }

    #[test]
    fn gcp_email_only_when_verified() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        let verified = gcp(&claims(serde_json::json!({
            "sub": "1234", "email": "sa@p.iam.gserviceaccount.com", "email_verified": true
        })));
        let default = prefs(crate::exchange::DEFAULT_IDENTITY_FORMAT_PREFERENCE);
        assert_eq!(
            negotiate(&verified, &default).unwrap().format,
            "gcp-sa-email"
        );
        let unverified = gcp(&claims(serde_json::json!({"sub": "1234", "email": "x@y"})));
        assert_eq!(negotiate(&unverified, &default).unwrap().value, "1234");
    }

    #[test]
    fn azure_resource_id_only_for_user_assigned() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        let user = azure(&claims(serde_json::json!({
            "oid": "o", "xms_mirid": "/subscriptions/s/resourcegroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u"
        })));
        assert_eq!(user.len(), 2);
        assert_eq!(
            negotiate(&user, &prefs(&["azure-resource-id"]))
                .unwrap()
                .format,
            "azure-resource-id"
        );
        let system = azure(&claims(serde_json::json!({
            "appid": "a", "xms_mirid": "/subscriptions/s/resourcegroups/g/providers/Microsoft.Compute/virtualMachines/vm"
        })));
        assert_eq!(system, vec![candidate("azure-object-id", "a")]);
        assert!(negotiate(&[], &[]).is_none());
    }
}
