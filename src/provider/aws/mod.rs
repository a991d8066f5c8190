//! AWS identity.
//!
//! - Detection (no I/O): any of `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`,
//!   `AWS_EXECUTION_ENV`, `AWS_REGION`, `AWS_DEFAULT_REGION`,
//!   `AWS_LAMBDA_FUNCTION_NAME`, `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`,
//!   `AWS_CONTAINER_CREDENTIALS_FULL_URI`, `AWS_PROFILE`.
//! - Probe: IMDSv2 token `PUT {imds}/latest/api/token`, then
//!   `GET {imds}/latest/meta-data/instance-id` (IMDSv1 when the PUT is refused);
//!   see [`imds`].
//! - Credentials: the SDKs' default chain ([`chain`]), the workload's own.
//! - Region: `AWS_REGION`/`AWS_DEFAULT_REGION`, else the instance's (when IMDS
//!   supplied the credentials) or the shared config profile's `region`, else the region field of the role ARN, else
//!   `us-east-1`. IMDS is not asked when another source supplied the credentials:
//!   the platforms behind those sources (ECS, Lambda, the EKS webhook) set
//!   `AWS_REGION`, and off EC2 the lookup would only cost a timeout.
//! - STS endpoint: derived from that region as the SDKs derive it (partition,
//!   `AWS_USE_FIPS_ENDPOINT`, `AWS_USE_DUALSTACK_ENDPOINT`,
//!   `AWS_STS_REGIONAL_ENDPOINTS`; see [`crate::env::aws_endpoints`]) unless
//!   `AWS_ENDPOINT_URL_STS`/`AWS_ENDPOINT_URL` names one (`s2iam detect` and
//!   `doctor` show it; it is not sent to the auth service).
//! - `additional_claims` sent to the auth service: exactly the reference
//!   clients' `UserId`, `AssumedRoleArn`, `RoleSessionName` (the wire contract is
//!   the reference's; the mock auth service refuses any other AWS claim).
//! - Identity: temporary credentials only leave the process — long-lived keys are
//!   first exchanged with STS `GetSessionToken` (as the reference clients do), or
//!   used to `AssumeRole` when a role is set; then STS `GetCallerIdentity` with the
//!   final credentials names the caller. Headers (the reference clients'):
//!   `X-AWS-Access-Key-ID`, `X-AWS-Secret-Access-Key`, `X-AWS-Session-Token`,
//!   `X-Cloud-Provider: aws`.

pub mod chain;
pub(crate) mod http;
pub mod imds;
pub mod keys;
pub mod sigv4;
pub mod sts;

use std::collections::BTreeMap;

use super::{
    CloudIdentity, CloudProvider, IdentityHeaders, IdentityRequest, ProbeError, ProviderError,
    DEFAULT_ROLE_SESSION_NAME,
};
use crate::env::ProviderConfig;
pub use chain::CredentialSource;
use imds::{Imds, ImdsError};
pub use keys::AwsCredentials;
pub use sts::{AssumeRoleRequest, AssumedRole, CallerIdentity, StsClient, StsError};

/// The STS region when nothing names one (the reference clients' default).
pub const DEFAULT_REGION: &str = "us-east-1";

/// Variables whose presence means "this is AWS", in the order they are reported.
/// `AWS_PROFILE` is not in the reference clients' list: it is here so a shared
/// config profile (a laptop, a CI runner) works without `--provider aws`.
pub const DETECT_VARS: [&str; 9] = [
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_EXECUTION_ENV",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_PROFILE",
];

/// The AWS provider: the workload's own identity, or a role assumed from it.
#[derive(Debug, Clone, Default)]
pub struct AwsProvider {
    role_arn: Option<String>,
    /// Shared config profile credentials (`credential_process`, assumed roles)
    /// kept until shortly before they expire; clones share it.
    profiles: chain::shared_config::Cache,
}

/// Temporary credentials ready to present, and how they were obtained.
#[derive(Debug, Clone)]
pub struct AwsSession {
    /// The credentials to present.
    pub credentials: AwsCredentials,
    /// Where the chain found the workload's own credentials.
    pub source: CredentialSource,
    /// The same, in words a user recognises: the source, or e.g. "shared config
    /// profile `x` (assume role ... via source_profile `y`; static keys of `y`)".
    pub source_detail: String,
    /// The region used for STS.
    pub region: String,
}

impl AwsProvider {
    /// Evidence of AWS in the environment alone (no I/O), e.g. `"AWS_REGION is set"`.
    pub fn fast_detect(cfg: &ProviderConfig) -> Option<String> {
        DETECT_VARS
            .iter()
            .find(|v| cfg.env.is_set(v))
            .map(|v| format!("{v} is set"))
    }

    /// Probes IMDS for an instance id. Cancel-safe: it holds no state across awaits
    /// beyond its own requests.
    pub async fn probe(cfg: &ProviderConfig) -> Result<(), ProbeError> {
        let imds = Imds::new(cfg.http.clone(), &cfg.endpoints.aws_imds);
        imds.instance_id()
            .await
            .map(|_| ())
            .map_err(|e| probe_error(&e))
    }

    /// A provider that assumes `role` (an IAM role ARN) with the workload's
    /// credentials. `self` is unchanged.
    pub fn assume_role(&self, role: &str) -> Result<Self, ProviderError> {
        validate_role_arn(role).map_err(|reason| ProviderError::InvalidRole {
            provider: CloudProvider::Aws,
            role: role.to_string(),
            reason: reason.to_string(),
        })?;
        Ok(Self {
            role_arn: Some(role.trim().to_string()),
            profiles: self.profiles.clone(),
        })
    }

    /// The role this provider assumes, if any.
    pub fn role_arn(&self) -> Option<&str> {
        self.role_arn.as_deref()
    }

    /// The identity headers and the identity STS says they belong to.
    pub async fn identity(
        &self,
        cfg: &ProviderConfig,
        req: &IdentityRequest,
    ) -> Result<(IdentityHeaders, CloudIdentity), ProviderError> {
        let session = self.session(cfg, &req.role_session_name).await?;
        let sts = StsClient::new(cfg, &session.region);
        let caller = sts
            .get_caller_identity(&session.credentials)
            .await
            .map_err(|e| upstream(&e))?;
        let creds = &session.credentials;
        let mut headers = IdentityHeaders::default();
        headers.push("X-AWS-Access-Key-ID", creds.access_key_id.as_str());
        headers.push("X-AWS-Secret-Access-Key", creds.secret.clone());
        if let Some(token) = &creds.session_token {
            headers.push("X-AWS-Session-Token", token.clone());
        }
        headers.push("X-Cloud-Provider", "aws");
        let mut identity = cloud_identity(&caller);
        identity.credential_source = Some(match &self.role_arn {
            Some(role) => format!("{} (then assume role {role})", session.source_detail),
            None => session.source_detail.clone(),
        });
        Ok((headers, identity))
    }

    /// Temporary credentials of this provider's identity (the role's when one is
    /// set), with the default role session name. For AWS credential vending.
    pub async fn credentials(&self, cfg: &ProviderConfig) -> Result<AwsCredentials, ProviderError> {
        Ok(self
            .session(cfg, DEFAULT_ROLE_SESSION_NAME)
            .await?
            .credentials)
    }

    /// The chain's credentials made temporary: `AssumeRole` when a role is set,
    /// `GetSessionToken` for long-lived keys, as they are otherwise.
    pub async fn session(
        &self,
        cfg: &ProviderConfig,
        role_session_name: &str,
    ) -> Result<AwsSession, ProviderError> {
        let env_region = region_from_env(cfg);
        let arn_region = self
            .role_arn
            .as_deref()
            .or(cfg.env.get("AWS_ROLE_ARN").as_deref())
            .and_then(Arn::parse)
            .map(|a| a.region.to_string())
            .filter(|r| !r.is_empty());
        let early_region = env_region
            .clone()
            .or(arn_region.clone())
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let loaded = chain::load_with(cfg, &early_region, &self.profiles)
            .await
            .map_err(|e| ProviderError::NoIdentity {
                provider: CloudProvider::Aws,
                reason: e.to_string(),
            })?;
        let source_detail = loaded.describe();
        let region = env_region
            .or(loaded.region)
            .or(arn_region)
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let sts = StsClient::new(cfg, &region);
        let credentials = match &self.role_arn {
            Some(role) => {
                let req = AssumeRoleRequest::new(role, role_session_name);
                sts.assume_role(&loaded.credentials, &req)
                    .await
                    .map_err(|e| upstream(&e))?
                    .credentials
            }
            None if !loaded.credentials.is_temporary() => sts
                .get_session_token(&loaded.credentials, None)
                .await
                .map_err(|e| upstream(&e))?,
            None => loaded.credentials,
        };
        Ok(AwsSession {
            credentials,
            source: loaded.source,
            source_detail,
            region,
        })
    }
}

/// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
pub fn region_from_env(cfg: &ProviderConfig) -> Option<String> {
    cfg.env
        .get("AWS_REGION")
        .or_else(|| cfg.env.get("AWS_DEFAULT_REGION"))
        .map(|r| r.trim().to_string())
}

fn upstream(e: &StsError) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Aws,
        what: format!("STS {}", e.action()),
        reason: e.reason(),
    }
}

fn probe_error(e: &ImdsError) -> ProbeError {
    use crate::http::TransportError as T;
    match e {
        ImdsError::Transport(T::Refused { url }) => ProbeError::Refused { url: url.clone() },
        ImdsError::Transport(T::Timeout { url, timeout_ms }) => ProbeError::Timeout {
            url: url.clone(),
            timeout_ms: *timeout_ms,
        },
        ImdsError::Transport(T::Other { url, reason }) => ProbeError::Unreachable {
            url: url.clone(),
            reason: reason.clone(),
        },
        ImdsError::Transport(t @ T::TooLarge { .. }) => ProbeError::NotThisCloud(t.to_string()),
        ImdsError::NotFound { url } => ProbeError::NotThisCloud(format!(
            "{url} answered 404: a metadata service, but not EC2's"
        )),
        ImdsError::Status { url, status, .. } => ProbeError::Status {
            url: url.clone(),
            status: *status,
        },
        ImdsError::Empty { .. } => ProbeError::NotThisCloud(e.to_string()),
        ImdsError::HopLimit {
            token_url,
            timeout_ms,
            then,
        } => ProbeError::Unreachable {
            url: token_url.clone(),
            reason: imds::hop_limit_explanation(*timeout_ms, then),
        },
    }
}

/// The parts of an ARN (`arn:partition:service:region:account:resource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    /// `aws`, `aws-cn`, `aws-us-gov`.
    pub partition: &'a str,
    /// `iam`, `sts`, ...
    pub service: &'a str,
    /// Empty for global services such as IAM.
    pub region: &'a str,
    /// The 12-digit account id.
    pub account: &'a str,
    /// `role/name`, `assumed-role/name/session`, ...
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// The parts of `arn`, if it has the ARN shape.
    pub fn parse(arn: &'a str) -> Option<Self> {
        let mut parts = arn.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let arn = Self {
            partition: parts.next()?,
            service: parts.next()?,
            region: parts.next()?,
            account: parts.next()?,
            resource: parts.next()?,
        };
        (!arn.partition.is_empty() && !arn.service.is_empty() && !arn.resource.is_empty())
            .then_some(arn)
    }

    /// `assumed-role` / `user` / `role`: the resource up to its first `/` (empty
    /// when it has none, as the reference clients do).
    pub fn resource_type(&self) -> &'a str {
        self.resource.split_once('/').map(|(t, _)| t).unwrap_or("")
    }

    /// `(role, session)` of an STS `assumed-role/ROLE/SESSION` ARN.
    pub fn assumed_role(&self) -> Option<(&'a str, &'a str)> {
        if self.service != "sts" {
            return None;
        }
        let rest = self.resource.strip_prefix("assumed-role/")?;
        let (role, session) = rest.split_once('/').unwrap_or((rest, ""));
        (!role.is_empty()).then_some((role, session))
    }
}

/// `arn:aws[-partition]:iam::<12 digits>:role/<path/name>`.
pub fn validate_role_arn(role: &str) -> Result<(), &'static str> {
    const FORMAT: &str = "expected arn:aws:iam::<12-digit account>:role/<name>";
    let arn = Arn::parse(role.trim()).ok_or(FORMAT)?;
    let partition_ok = arn.partition == "aws"
        || arn.partition.strip_prefix("aws-").is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if !partition_ok {
        return Err("unknown partition; expected arn:aws, arn:aws-cn, arn:aws-us-gov, ...");
    }
    if arn.service != "iam" || !arn.region.is_empty() {
        return Err(FORMAT);
    }
    if arn.account.len() != 12 || !arn.account.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the account id must be 12 digits");
    }
    let name = arn.resource.strip_prefix("role/").ok_or(FORMAT)?;
    let name_ok = !name.is_empty()
        && !name.ends_with('/')
        && !name.starts_with('/')
        && name.len() <= 512
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c));
    if !name_ok {
        return Err("invalid role name or path");
    }
    Ok(())
}

/// The identity the reference clients report for a `GetCallerIdentity` answer.
fn cloud_identity(caller: &CallerIdentity) -> CloudIdentity {
    let arn = Arn::parse(&caller.arn);
    let mut claims = BTreeMap::new();
    if !caller.user_id.is_empty() {
        claims.insert("UserId".to_string(), caller.user_id.clone());
    }
    if let Some((_, session)) = arn.and_then(|a| a.assumed_role()) {
        claims.insert("AssumedRoleArn".to_string(), caller.arn.clone());
        if !session.is_empty() {
            claims.insert("RoleSessionName".to_string(), session.to_string());
        }
    }
    CloudIdentity {
        provider: CloudProvider::Aws,
        identifier: caller.arn.clone(),
        account_id: caller.account.clone(),
        region: arn.map(|a| a.region.to_string()).unwrap_or_default(),
        resource_type: arn
            .map(|a| a.resource_type().to_string())
            .unwrap_or_default(),
        additional_claims: claims,
        credential_source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    #[test]
    fn fast_detect_names_the_variable() {
        let cfg = |pairs: &[(&str, &str)]| {
            ProviderConfig::with_env(
                Env::from_pairs(pairs.iter().copied()),
                Fs::from_files::<&str, &str>([]),
            )
        };
        assert_eq!(AwsProvider::fast_detect(&cfg(&[])), None);
        for var in DETECT_VARS {
            assert_eq!(
                AwsProvider::fast_detect(&cfg(&[(var, "x")])),
                Some(format!("{var} is set"))
            );
        }
        assert_eq!(AwsProvider::fast_detect(&cfg(&[("AWS_REGION", " ")])), None);
    }

    #[test]
    fn role_arn_validation() {
        for ok in [
            "arn:aws:iam::123456789012:role/r",
            "arn:aws-us-gov:iam::123456789012:role/path/to/r",
            "arn:aws-cn:iam::123456789012:role/a+b=c,d.e@f_g-h",
        ] {
            assert!(validate_role_arn(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "r",
            "arn:aws:iam::12345678901:role/r",
            "arn:aws:iam::123456789012:user/u",
            "arn:aws:iam:us-east-1:123456789012:role/r",
            "arn:aws:sts::123456789012:role/r",
            "arn:gcp:iam::123456789012:role/r",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/r/",
            "arn:aws:iam::123456789012:role/r x",
        ] {
            assert!(validate_role_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn assume_role_returns_a_new_provider() {
        let p = AwsProvider::default();
        let q = p.assume_role("arn:aws:iam::123456789012:role/r").unwrap();
        assert_eq!(p.role_arn(), None);
        assert_eq!(q.role_arn(), Some("arn:aws:iam::123456789012:role/r"));
        assert!(matches!(
            p.assume_role("my-role"),
            Err(ProviderError::InvalidRole { .. })
        ));
    }

    #[test]
    fn identity_like_the_reference() {
        let id = cloud_identity(&CallerIdentity {
            arn: "arn:aws:sts::123456789012:assumed-role/r/s2iam-session".into(),
            account: "123456789012".into(),
            user_id: "AROAX:s2iam-session".into(),
        });
        assert_eq!(id.resource_type, "assumed-role");
        assert_eq!(id.region, "");
        assert_eq!(id.additional_claims["RoleSessionName"], "s2iam-session");
        assert_eq!(id.additional_claims["UserId"], "AROAX:s2iam-session");
        assert_eq!(id.additional_claims["AssumedRoleArn"], id.identifier);

        let id = cloud_identity(&CallerIdentity {
            arn: "arn:aws:iam::123456789012:user/u".into(),
            account: "123456789012".into(),
            user_id: "AIDAX".into(),
        });
        assert_eq!(id.resource_type, "user");
        assert!(!id.additional_claims.contains_key("AssumedRoleArn"));
        let root = Arn::parse("arn:aws:iam::123456789012:root").unwrap();
        assert_eq!(root.resource_type(), "");
    }
}
