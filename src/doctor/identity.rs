//! The credential source, the cloud identity, and the principal the auth service
//! will see — everything up to the exchange, and not the exchange.
//!
//! AWS: the credential chain and the session exactly as a token request builds
//! them, then STS `GetCallerIdentity`. GCP and Azure: the provider's identity
//! headers; the principal comes from the claims of the token they carry (read, not
//! verified: the auth service verifies).

use std::time::Duration;

use super::principal::{self, Candidate};
use super::{within, Check, DoctorOptions};
use crate::env::ProviderConfig;
use crate::provider::aws::{AwsProvider, CredentialSource, StsClient};
use crate::provider::{CloudIdentity, CloudProvider, IdentityHeaders, IdentityRequest, Provider};

/// The credentials check's id.
pub const ID: &str = "credentials";
/// The principal check's id.
pub const PRINCIPAL_ID: &str = "principal";

/// What the identity step found.
#[derive(Debug, Clone)]
pub struct Found {
    /// The `credentials` check.
    pub credentials: Check,
    /// Where the workload's credentials come from, when known.
    pub source: Option<String>,
    /// Whether they come from the cloud's metadata service (`None`: unknown).
    pub uses_metadata: Option<bool>,
    /// The AWS region STS is called in.
    pub region: Option<String>,
    /// Every format the auth service could issue `sub` in.
    pub candidates: Vec<Candidate>,
}

impl Found {
    fn failed(credentials: Check) -> Self {
        Self {
            credentials,
            source: None,
            uses_metadata: None,
            region: None,
            candidates: Vec::new(),
        }
    }

    /// The `sub` the auth service will pick for `preference`.
    pub fn chosen(&self, preference: &[String]) -> Option<Candidate> {
        principal::negotiate(&self.candidates, preference).cloned()
    }
}

/// Gets the identity of `provider` (nothing when no cloud was detected).
pub async fn run(
    cfg: &ProviderConfig,
    opts: &DoctorOptions,
    provider: Option<CloudProvider>,
) -> Found {
    let Some(kind) = provider else {
        return Found::failed(Check::skip(ID, "no cloud detected: no identity to get"));
    };
    let base = Provider::for_kind(kind);
    let p = match opts.assume_role.as_deref().filter(|r| !r.is_empty()) {
        Some(role) => match base.assume_role(role) {
            Ok(p) => p,
            Err(e) => {
                return Found::failed(Check::fail(
                    ID,
                    e.to_string(),
                    "pass a role this cloud can assume (AWS role ARN, GCP service-account email, Azure client id)",
                ))
            }
        },
        None => base,
    };
    match &p {
        Provider::Aws(aws) => run_aws(cfg, opts, aws).await,
        other => run_bearer(cfg, opts, other).await,
    }
}

fn timed_out(what: &str, timeout: Duration) -> Check {
    Check::fail(
        ID,
        format!(
            "no {what} within {} ms: the metadata service or STS is not answering",
            super::millis(timeout)
        ),
        "see the metadata and imds_hop_limit checks; a longer --timeout shows whether it is only slow",
    )
}

async fn run_aws(cfg: &ProviderConfig, opts: &DoctorOptions, p: &AwsProvider) -> Found {
    let session = match within(opts.timeout, p.session(cfg, &opts.role_session_name)).await {
        None => return Found::failed(timed_out("AWS credentials", opts.timeout)),
        Some(Err(e)) => {
            return Found::failed(Check::fail(
                ID,
                e.to_string(),
                "give the workload an AWS identity: an instance profile, IRSA (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), EKS Pod Identity, ECS task role, or AWS_PROFILE",
            ))
        }
        Some(Ok(s)) => s,
    };
    let mut source = session.source_detail.clone();
    if let Some(role) = p.role_arn() {
        source.push_str(&format!(", then AssumeRole into {role}"));
    }
    let sts = StsClient::new(cfg, &session.region);
    let caller = match within(opts.timeout, sts.get_caller_identity(&session.credentials)).await {
        None => return Found::failed(timed_out("STS GetCallerIdentity answer", opts.timeout)),
        Some(Err(e)) => {
            let mut f = Found::failed(Check::fail(
                ID,
                format!("credentials from {source}, but STS GetCallerIdentity failed: {e}"),
                "see the clock_skew check (STS refuses a signature 15 minutes off its clock) and check that STS is reachable",
            ));
            f.source = Some(source);
            return f;
        }
        Some(Ok(c)) => c,
    };
    let credentials = Check::pass(
        ID,
        format!(
            "{source}: {} (account {}, STS region {})",
            caller.arn, caller.account, session.region
        ),
    )
    .detail("source", source.clone())
    .detail("arn", caller.arn.clone())
    .detail("account", caller.account.clone())
    .detail("sts_endpoint", sts.endpoint().to_string());
    Found {
        credentials,
        source: Some(source),
        uses_metadata: Some(session.source == CredentialSource::InstanceMetadata),
        region: Some(session.region),
        candidates: principal::aws(&caller.arn, &caller.user_id, &caller.account),
    }
}

async fn run_bearer(cfg: &ProviderConfig, opts: &DoctorOptions, p: &Provider) -> Found {
    let req = IdentityRequest {
        gcp_audience: opts.gcp_audience.clone(),
        role_session_name: opts.role_session_name.clone(),
        ..IdentityRequest::default()
    };
    let (headers, identity) = match within(opts.timeout, p.identity(cfg, &req)).await {
        None => return Found::failed(timed_out("identity token", opts.timeout)),
        Some(Err(e)) => {
            return Found::failed(Check::fail(
                ID,
                e.to_string(),
                match p.kind() {
                    CloudProvider::Gcp => "attach a service account to the instance (or GKE workload identity), and allow it to act as any service account named with --assume-role",
                    _ => "assign a managed identity to the VM (or AKS workload identity: AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE)",
                },
            ))
        }
        Some(Ok(v)) => v,
    };
    let (source, uses_metadata) = bearer_source(p, &identity);
    let candidates = bearer_candidates(p.kind(), &headers);
    let credentials = Check::pass(
        ID,
        format!(
            "{source}: {} (account {})",
            identity.identifier,
            if identity.account_id.is_empty() {
                "unknown"
            } else {
                &identity.account_id
            }
        ),
    )
    .detail("source", source.clone())
    .detail("identifier", identity.identifier.clone());
    Found {
        credentials,
        source: Some(source),
        uses_metadata: Some(uses_metadata),
        region: None,
        candidates,
    }
}

/// Where a GCP or Azure token came from, and whether that is the metadata service.
fn bearer_source(p: &Provider, identity: &CloudIdentity) -> (String, bool) {
    let claimed = identity
        .additional_claims
        .get("identity_source")
        .or_else(|| identity.additional_claims.get("credential_source"))
        .cloned();
    match (p, claimed) {
        // The provider names the file or the metadata server, impersonation included.
        (Provider::Gcp(_), Some(src)) => {
            let uses_metadata = src.starts_with("GCE metadata server");
            (src, uses_metadata)
        }
        (Provider::Gcp(g), None) => match g.impersonation_target() {
            Some(sa) => (format!("GCE metadata server, impersonating {sa}"), true),
            None => ("GCE metadata server".into(), true),
        },
        (_, Some(src)) => {
            let uses_metadata = src == "imds";
            let shown = match src.as_str() {
                "imds" => "the VM's managed identity (IMDS)".to_string(),
                "app-service" => "App Service managed identity (IDENTITY_ENDPOINT)".to_string(),
                "workload-identity" => {
                    "AKS workload identity (AZURE_FEDERATED_TOKEN_FILE)".to_string()
                }
                "azure-arc" => "Azure Arc managed identity (the Arc agent)".to_string(),
                "msi-endpoint" => "legacy managed identity endpoint (MSI_ENDPOINT)".to_string(),
                "cloud-shell" => "Cloud Shell managed identity (MSI_ENDPOINT)".to_string(),
                "azure-cli" => "the Azure CLI's login".to_string(),
                other => other.to_string(),
            };
            (shown, uses_metadata)
        }
        (_, None) => ("managed identity".into(), true),
    }
}

/// The candidates of the token in `Authorization: Bearer`.
fn bearer_candidates(kind: CloudProvider, headers: &IdentityHeaders) -> Vec<Candidate> {
    let Some(token) = headers
        .get("Authorization")
        .and_then(|v| v.expose().strip_prefix("Bearer ").map(str::to_owned))
    else {
        return Vec::new();
    };
    let Ok(claims) = crate::provider::jwt::jwt_claims(&token) else {
        return Vec::new();
    };
    match kind {
        CloudProvider::Gcp => principal::gcp(&claims),
        CloudProvider::Azure => principal::azure(&claims),
        CloudProvider::Aws => Vec::new(),
    }
}

/// The `principal` check: the `sub` and its format, or why there is none.
pub fn principal_check(found: &Found, preference: &[String]) -> Check {
    if found.credentials.status != super::Status::Pass {
        return Check::skip(PRINCIPAL_ID, "no identity: nothing to negotiate");
    }
    let Some(chosen) = found.chosen(preference) else {
        return Check::fail(
            PRINCIPAL_ID,
            "the identity carries nothing the auth service can name it by",
            "report this with the output of s2iam identity --json",
        );
    };
    let others: Vec<String> = found
        .candidates
        .iter()
        .filter(|c| c.format != chosen.format)
        .map(|c| format!("{}={}", c.format, c.value))
        .collect();
    let mut c = Check::pass(
        PRINCIPAL_ID,
        format!(
            "the auth service will issue sub={} (identity format {}); grant this principal access in SingleStore",
            chosen.value, chosen.format
        ),
    )
    .detail("sub", chosen.value.clone())
    .detail("identity_format", chosen.format)
    .detail("preference", preference.join(","));
    if !others.is_empty() {
        c = c.detail("other_formats", others.join(", "));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn principal_follows_the_preference() {
        let found = Found {
            credentials: Check::pass(ID, "ok"),
            source: Some("x".into()),
            uses_metadata: Some(true),
            region: None,
            candidates: principal::aws(
                "arn:aws:sts::123456789012:assumed-role/r/i-1",
                "AROA1:i-1",
                "123456789012",
            ),
        };
        let c = principal_check(&found, &["aws-iam-role-arn".to_string()]);
        assert_eq!(c.status, Status::Pass);
        assert_eq!(c.details["sub"], "arn:aws:iam::123456789012:role/r");
        assert!(c.details["other_formats"].contains("aws-role-id=AROA1"));
        let failed = Found::failed(Check::fail(ID, "x", "y"));
        assert_eq!(principal_check(&failed, &[]).status, Status::Skip);
    }
}
