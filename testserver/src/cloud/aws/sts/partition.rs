//! Partitions and regions from the host name: which region a signature must be
//! scoped to, and how ARNs are spelled in that partition.

use axum::http::HeaderMap;

use super::super::sigv4::{self, SigV4Error, SignedRequest};
use super::StsError;

/// What an STS host name says: the region signatures must be scoped to and the
/// partition (`sts.cn-north-1.amazonaws.com.cn`: `cn-north-1`, `aws-cn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpoint {
    /// The region in the host (`us-east-1` for the global `sts.amazonaws.com`).
    pub region: String,
    /// The partition the host's DNS suffix belongs to.
    pub partition: &'static str,
}

/// The DNS suffixes of STS endpoints (regional and dual-stack) by partition.
const STS_SUFFIXES: [(&str, &str); 14] = [
    ("amazonaws.com", "aws"),
    ("api.aws", "aws"),
    ("amazonaws.com.cn", "aws-cn"),
    ("api.amazonwebservices.com.cn", "aws-cn"),
    ("c2s.ic.gov", "aws-iso"),
    ("api.aws.ic.gov", "aws-iso"),
    ("sc2s.sgov.gov", "aws-iso-b"),
    ("api.aws.scloud", "aws-iso-b"),
    ("cloud.adc-e.uk", "aws-iso-e"),
    ("api.cloud-aws.adc-e.uk", "aws-iso-e"),
    ("csp.hci.ic.gov", "aws-iso-f"),
    ("api.aws.hci.ic.gov", "aws-iso-f"),
    ("amazonaws.eu", "aws-eusc"),
    ("api.amazonwebservices.eu", "aws-eusc"),
];

/// The endpoint a request's `Host` names, if it is a real STS host name
/// (`sts[-fips].{region}.{suffix}` or `sts.amazonaws.com`); `None` for the
/// loopback addresses tests usually use, which accept any region.
pub fn endpoint_for_host(headers: &HeaderMap) -> Option<HostEndpoint> {
    let host = headers.get("host")?.to_str().ok()?.to_ascii_lowercase();
    let host = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
    if host == "sts.amazonaws.com" {
        return Some(HostEndpoint {
            region: "us-east-1".into(),
            partition: "aws",
        });
    }
    let rest = host
        .strip_prefix("sts.")
        .or_else(|| host.strip_prefix("sts-fips."))?;
    let (region, suffix) = rest.split_once('.')?;
    let (_, mut partition) = STS_SUFFIXES.iter().find(|(s, _)| *s == suffix)?;
    // GovCloud shares the `aws` partition's suffixes.
    if partition == "aws" && region.starts_with("us-gov-") {
        partition = "aws-us-gov";
    }
    Some(HostEndpoint {
        region: region.to_string(),
        partition,
    })
}

/// A regional STS endpoint takes only signatures scoped to its own region (the
/// global one: `us-east-1`).
pub(super) fn check_scope_region(
    req: &SignedRequest<'_>,
    endpoint: &HostEndpoint,
) -> Result<(), StsError> {
    let scoped = sigv4::scope_region(req.headers).unwrap_or_default();
    if scoped == endpoint.region {
        Ok(())
    } else {
        Err(SigV4Error::SignatureDoesNotMatch(
            "Credential should be scoped to a valid region. ".into(),
        )
        .into())
    }
}

/// `arn:aws:...` in `partition` (`arn:aws-cn:...`), as STS in that partition names it.
pub(super) fn in_partition(arn: &str, partition: &str) -> String {
    match arn.strip_prefix("arn:aws:") {
        Some(rest) => format!("arn:{partition}:{rest}"),
        None => arn.to_string(),
    }
}
