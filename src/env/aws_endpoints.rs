//! AWS service endpoints derived from the region, the way the AWS SDKs derive them:
//! the partition a region belongs to (its DNS suffixes), then the service's endpoint
//! rules for FIPS, dual-stack and, for STS, the legacy global endpoint.
//!
//! The data is the SDKs' `partitions.json` and the rule sets of STS and S3
//! (botocore `data/partitions.json`, `data/sts/2011-06-15/endpoint-rule-set-1.json`),
//! hand-copied: the SDKs' generic rule-set interpreter is large, and s2iam needs two
//! services. `tests/data/aws_endpoints.tsv` holds the expected answers; the unit
//! tests check this module against it and `scripts/check-aws-endpoints` checks
//! botocore's resolver against the same table, so a drift on either side fails.
//!
//! | partition | regions | DNS suffix | dual-stack suffix |
//! |---|---|---|---|
//! | `aws` | `us-*`, `eu-*`, `ap-*`, `sa-*`, `ca-*`, `me-*`, `af-*`, `il-*`, `mx-*`, and any unknown region | `amazonaws.com` | `api.aws` |
//! | `aws-cn` | `cn-*` | `amazonaws.com.cn` | `api.amazonwebservices.com.cn` |
//! | `aws-us-gov` | `us-gov-*` | `amazonaws.com` | `api.aws` |
//! | `aws-iso` | `us-iso-*` | `c2s.ic.gov` | `api.aws.ic.gov` |
//! | `aws-iso-b` | `us-isob-*` | `sc2s.sgov.gov` | `api.aws.scloud` |
//! | `aws-iso-e` | `eu-isoe-*` | `cloud.adc-e.uk` | `api.cloud-aws.adc-e.uk` |
//! | `aws-iso-f` | `us-isof-*` | `csp.hci.ic.gov` | `api.aws.hci.ic.gov` |
//! | `aws-eusc` | `eusc-de-*` | `amazonaws.eu` | `api.amazonwebservices.eu` |
//!
//! Settings (the SDKs' variables): `AWS_USE_FIPS_ENDPOINT`, `AWS_USE_DUALSTACK_ENDPOINT`
//! (`true`/`false`), `AWS_STS_REGIONAL_ENDPOINTS` (`regional`, the default, or
//! `legacy`: `sts.amazonaws.com` for the 16 regions that used it before regional
//! endpoints). An explicit endpoint (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, the
//! sidecar's `s3_endpoint`) always wins, and then FIPS and dual-stack do not apply
//! (the SDKs refuse the combination; s2iam takes the explicit endpoint as meant).

use super::vars::Env;

/// One AWS partition: a set of regions sharing DNS suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// `aws`, `aws-cn`, `aws-us-gov`, `aws-iso`, ...
    pub name: &'static str,
    /// The suffix of regional endpoints (`sts.{region}.{dns_suffix}`).
    pub dns_suffix: &'static str,
    /// The suffix of dual-stack (IPv4 and IPv6) endpoints.
    pub dual_stack_dns_suffix: &'static str,
    /// Leading `-`-separated labels of the partition's region names (alternatives
    /// for the first label, then fixed labels), before `{word}-{digits}`.
    first_labels: &'static [&'static str],
    /// Fixed labels after the first.
    more_labels: &'static [&'static str],
    /// The partition's pseudo-region for its global endpoint (`aws-global`).
    global_region: &'static str,
}

/// The partitions in `partitions.json` order; a region matching none is `aws`'s.
pub const PARTITIONS: [Partition; 8] = [
    Partition {
        name: "aws",
        dns_suffix: "amazonaws.com",
        dual_stack_dns_suffix: "api.aws",
        first_labels: &["us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"],
        more_labels: &[],
        global_region: "aws-global",
    },
    Partition {
        name: "aws-cn",
        dns_suffix: "amazonaws.com.cn",
        dual_stack_dns_suffix: "api.amazonwebservices.com.cn",
        first_labels: &["cn"],
        more_labels: &[],
        global_region: "aws-cn-global",
    },
    Partition {
        name: "aws-eusc",
        dns_suffix: "amazonaws.eu",
        dual_stack_dns_suffix: "api.amazonwebservices.eu",
        first_labels: &["eusc"],
        more_labels: &["de"],
        global_region: "aws-eusc-global",
    },
    Partition {
        name: "aws-iso",
        dns_suffix: "c2s.ic.gov",
        dual_stack_dns_suffix: "api.aws.ic.gov",
        first_labels: &["us"],
        more_labels: &["iso"],
        global_region: "aws-iso-global",
    },
    Partition {
        name: "aws-iso-b",
        dns_suffix: "sc2s.sgov.gov",
        dual_stack_dns_suffix: "api.aws.scloud",
        first_labels: &["us"],
        more_labels: &["isob"],
        global_region: "aws-iso-b-global",
    },
    Partition {
        name: "aws-iso-e",
        dns_suffix: "cloud.adc-e.uk",
        dual_stack_dns_suffix: "api.cloud-aws.adc-e.uk",
        first_labels: &["eu"],
        more_labels: &["isoe"],
        global_region: "aws-iso-e-global",
    },
    Partition {
        name: "aws-iso-f",
        dns_suffix: "csp.hci.ic.gov",
        dual_stack_dns_suffix: "api.aws.hci.ic.gov",
        first_labels: &["us"],
        more_labels: &["isof"],
        global_region: "aws-iso-f-global",
    },
    Partition {
        name: "aws-us-gov",
        dns_suffix: "amazonaws.com",
        dual_stack_dns_suffix: "api.aws",
        first_labels: &["us"],
        more_labels: &["gov"],
        global_region: "aws-us-gov-global",
    },
];

/// The regions that used `sts.amazonaws.com` before STS had regional endpoints;
/// `AWS_STS_REGIONAL_ENDPOINTS=legacy` sends them there still.
pub const LEGACY_GLOBAL_STS_REGIONS: [&str; 16] = [
    "ap-northeast-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "aws-global",
    "ca-central-1",
    "eu-central-1",
    "eu-north-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

/// The global STS endpoint (legacy regions, `aws-global`, and no region at all).
pub const GLOBAL_STS: &str = "https://sts.amazonaws.com";
/// The region requests to the global STS endpoint are signed for.
pub const GLOBAL_STS_SIGNING_REGION: &str = "us-east-1";

impl Partition {
    fn matches(&self, region: &str) -> bool {
        if region == self.global_region {
            return true;
        }
        let labels: Vec<&str> = region.split('-').collect();
        let fixed = self.more_labels.len().saturating_add(1);
        if labels.len() != fixed.saturating_add(2) {
            return false;
        }
        let (word, digits) = (labels[fixed], labels[fixed.saturating_add(1)]);
        self.first_labels.contains(&labels[0])
            && labels[1..fixed] == *self.more_labels
            && !word.is_empty()
            && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
    }
}

/// The partition of `region`: the first whose global pseudo-region or name
/// pattern matches, else `aws` (as the SDKs' `aws.partition` function does).
pub fn partition(region: &str) -> &'static Partition {
    PARTITIONS
        .iter()
        .find(|p| region == p.global_region)
        .or_else(|| PARTITIONS.iter().find(|p| p.matches(region)))
        .unwrap_or(&PARTITIONS[0])
}

/// `AWS_STS_REGIONAL_ENDPOINTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StsEndpointsMode {
    /// `sts.{region}.{suffix}` for every region (the SDKs' default).
    #[default]
    Regional,
    /// `sts.amazonaws.com` for [`LEGACY_GLOBAL_STS_REGIONS`].
    Legacy,
}

/// How endpoints are derived from the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AwsEndpointSettings {
    /// `AWS_USE_FIPS_ENDPOINT=true`.
    pub use_fips: bool,
    /// `AWS_USE_DUALSTACK_ENDPOINT=true`.
    pub use_dual_stack: bool,
    /// `AWS_STS_REGIONAL_ENDPOINTS`.
    pub sts_mode: StsEndpointsMode,
}

impl AwsEndpointSettings {
    /// The settings in `env`. Values the SDKs would refuse are kept as errors for the
    /// first request to report (an STS or S3 endpoint cannot be derived then).
    pub fn from_env(env: &Env) -> Result<Self, EndpointError> {
        Ok(Self {
            use_fips: flag(env, "AWS_USE_FIPS_ENDPOINT")?,
            use_dual_stack: flag(env, "AWS_USE_DUALSTACK_ENDPOINT")?,
            sts_mode: match env
                .get("AWS_STS_REGIONAL_ENDPOINTS")
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref()
            {
                None | Some("") | Some("regional") => StsEndpointsMode::Regional,
                Some("legacy") => StsEndpointsMode::Legacy,
                Some(other) => {
                    return Err(EndpointError::Setting {
                        name: "AWS_STS_REGIONAL_ENDPOINTS",
                        value: other.chars().take(40).collect(),
                        expected: "regional or legacy",
                    })
                }
            },
        })
    }
}

/// A boolean SDK variable: `true`/`false` in any case, unset is false.
fn flag(env: &Env, name: &'static str) -> Result<bool, EndpointError> {
    match env
        .get(name)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(EndpointError::Setting {
            name,
            value: other.chars().take(40).collect(),
            expected: "true or false",
        }),
    }
}

/// Why an endpoint cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The region cannot be part of a host name.
    #[error(
        "the AWS region {0:?} is not a valid region name (letters, digits and '-', e.g. us-east-1)"
    )]
    InvalidRegion(String),
    /// The partition has no such endpoint (S3 has no FIPS endpoints in `aws-cn`).
    #[error(
        "{service}: Partition does not support {feature} (partition {partition}, region {region})"
    )]
    Unsupported {
        /// `s3`.
        service: &'static str,
        /// `FIPS`.
        feature: &'static str,
        /// The partition.
        partition: &'static str,
        /// The region.
        region: String,
    },
    /// A setting has a value the SDKs refuse.
    #[error("{name}={value:?} is not valid: use {expected}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// Its value (cut).
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
}

/// A derived endpoint: where to send requests and how to sign them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsEndpoint {
    /// The base URL, without a trailing slash.
    pub url: String,
    /// The region SigV4 signatures are scoped to.
    pub signing_region: String,
    /// The partition (`aws`, `aws-cn`, ...); `None` for an explicit endpoint.
    pub partition: Option<&'static str>,
}

/// The host-label rule the SDKs apply to region names before using them in a URL.
fn valid_region(region: &str) -> bool {
    let bytes = region.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

fn checked(region: &str) -> Result<&str, EndpointError> {
    if valid_region(region) {
        Ok(region)
    } else {
        Err(EndpointError::InvalidRegion(
            region.chars().take(64).collect(),
        ))
    }
}

/// The STS endpoint for `region` (the STS endpoint rule set without a custom
/// endpoint). No region at all is the global endpoint, as before regional STS.
pub fn sts(region: Option<&str>, s: &AwsEndpointSettings) -> Result<AwsEndpoint, EndpointError> {
    let Some(region) = region.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(global_sts());
    };
    let region = checked(region)?;
    let p = partition(region);
    let regional = |url: String| AwsEndpoint {
        url,
        signing_region: region.to_string(),
        partition: Some(p.name),
    };
    Ok(match (s.use_fips, s.use_dual_stack) {
        (true, true) => regional(format!(
            "https://sts-fips.{region}.{}",
            p.dual_stack_dns_suffix
        )),
        (true, false) if p.name == "aws-us-gov" => {
            regional(format!("https://sts.{region}.amazonaws.com"))
        }
        (true, false) => regional(format!("https://sts-fips.{region}.{}", p.dns_suffix)),
        (false, true) => regional(format!("https://sts.{region}.{}", p.dual_stack_dns_suffix)),
        (false, false)
            if region == "aws-global"
                || (s.sts_mode == StsEndpointsMode::Legacy
                    && LEGACY_GLOBAL_STS_REGIONS.contains(&region)) =>
        {
            global_sts()
        }
        (false, false) => regional(format!("https://sts.{region}.{}", p.dns_suffix)),
    })
}

fn global_sts() -> AwsEndpoint {
    AwsEndpoint {
        url: GLOBAL_STS.to_string(),
        signing_region: GLOBAL_STS_SIGNING_REGION.to_string(),
        partition: Some("aws"),
    }
}

/// The S3 endpoint for `region` that presigned URLs are built on (virtual-hosted
/// style puts the bucket in front of its host): `s3.{region}.{suffix}`, with S3's
/// own FIPS (`s3-fips.`) and dual-stack (`s3.dualstack.`) forms.
pub fn s3(region: &str, s: &AwsEndpointSettings) -> Result<AwsEndpoint, EndpointError> {
    let region = checked(region.trim())?;
    let p = partition(region);
    if s.use_fips && p.name == "aws-cn" {
        return Err(EndpointError::Unsupported {
            service: "s3",
            feature: "FIPS",
            partition: p.name,
            region: region.to_string(),
        });
    }
    let service = if s.use_fips { "s3-fips" } else { "s3" };
    let dual = if s.use_dual_stack { "dualstack." } else { "" };
    Ok(AwsEndpoint {
        url: format!("https://{service}.{dual}{region}.{}", p.dns_suffix),
        signing_region: region.to_string(),
        partition: Some(p.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row of `tests/data/aws_endpoints.tsv`.
    struct Case<'a> {
        service: &'a str,
        region: &'a str,
        settings: AwsEndpointSettings,
        url: &'a str,
        signing_region: &'a str,
    }

    fn cases() -> Vec<Case<'static>> {
        include_str!("../../tests/data/aws_endpoints.tsv")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f.len(), 7, "{l}");
                Case {
                    service: f[0],
                    region: f[1],
                    settings: AwsEndpointSettings {
                        use_fips: f[2] == "1",
                        use_dual_stack: f[3] == "1",
                        sts_mode: if f[4] == "legacy" {
                            StsEndpointsMode::Legacy
                        } else {
                            StsEndpointsMode::Regional
                        },
                    },
                    url: f[5],
                    signing_region: f[6],
                }
            })
            .collect()
    }

    #[test]
    fn endpoints_match_the_sdk_table() {
        let cases = cases();
        assert!(cases.len() >= 100, "{}", cases.len());
        for c in &cases {
            let got = match c.service {
                "sts" => sts(Some(c.region), &c.settings),
                "s3" => s3(c.region, &c.settings),
                other => panic!("unknown service {other}"),
            };
            if c.url == "ERROR" {
                let err = got.unwrap_err().to_string();
                assert!(
                    err.contains(c.signing_region),
                    "{err} vs {}",
                    c.signing_region
                );
                continue;
            }
            let got = got.unwrap();
            assert_eq!(
                (got.url.as_str(), got.signing_region.as_str()),
                (c.url, c.signing_region),
                "{} {} fips={} dualstack={} {:?}",
                c.service,
                c.region,
                c.settings.use_fips,
                c.settings.use_dual_stack,
                c.settings.sts_mode
            );
        }
    }

    #[test]
    fn partitions() {
        for (region, name) in [
            ("us-east-1", "aws"),
            ("eu-central-2", "aws"),
            ("mx-central-1", "aws"),
            ("cn-north-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
            ("eu-isoe-west-1", "aws-iso-e"),
            ("us-isof-south-1", "aws-iso-f"),
            ("eusc-de-east-1", "aws-eusc"),
            ("aws-cn-global", "aws-cn"),
            ("aws-global", "aws"),
            // Unknown shapes fall back to `aws`, as in the SDKs.
            ("moon-base-1", "aws"),
            ("us-east", "aws"),
            ("us-gov-west-1a", "aws"),
        ] {
            assert_eq!(partition(region).name, name, "{region}");
        }
    }

    #[test]
    fn no_region_is_the_global_endpoint() {
        let e = sts(None, &AwsEndpointSettings::default()).unwrap();
        assert_eq!(e.url, "https://sts.amazonaws.com");
        assert_eq!(e.signing_region, "us-east-1");
        assert_eq!(sts(Some(" "), &AwsEndpointSettings::default()).unwrap(), e);
    }

    #[test]
    fn regions_that_are_not_host_labels_are_refused() {
        for bad in [
            "us-east-1.evil.com",
            "a/b",
            "-us",
            "us-",
            "us east",
            "ü",
            &"a".repeat(64),
        ] {
            let s = AwsEndpointSettings::default();
            assert!(
                matches!(sts(Some(bad), &s), Err(EndpointError::InvalidRegion(_))),
                "{bad}"
            );
            assert!(s3(bad, &s).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_from_the_environment() {
        let env = Env::from_pairs([
            ("AWS_USE_FIPS_ENDPOINT", "TRUE"),
            ("AWS_USE_DUALSTACK_ENDPOINT", "false"),
            ("AWS_STS_REGIONAL_ENDPOINTS", "Legacy"),
        ]);
        assert_eq!(
            AwsEndpointSettings::from_env(&env).unwrap(),
            AwsEndpointSettings {
                use_fips: true,
                use_dual_stack: false,
                sts_mode: StsEndpointsMode::Legacy,
            }
        );
        let none = Env::from_pairs::<&str, &str>([]);
        assert_eq!(
            AwsEndpointSettings::from_env(&none).unwrap(),
            AwsEndpointSettings::default()
        );
        for (k, v) in [
            ("AWS_USE_FIPS_ENDPOINT", "yes"),
            ("AWS_USE_DUALSTACK_ENDPOINT", "1"),
            ("AWS_STS_REGIONAL_ENDPOINTS", "global"),
        ] {
            let err = AwsEndpointSettings::from_env(&Env::from_pairs([(k, v)])).unwrap_err();
            assert!(err.to_string().starts_with(k), "{err}");
        }
    }
}
