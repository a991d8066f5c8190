//! AWS endpoints end to end: STS endpoints derived for each partition (and with
//! FIPS, dual-stack, legacy global STS) reached over HTTPS by their real host names
//! — resolved to the mock cloud's TLS listener, whose certificate names them — and
//! signed for the region STS expects there; IMDS over IPv6.
//!
//! Nothing leaves loopback: the derived names resolve to 127.0.0.1 in the test's
//! own HTTP client, and the IPv6 metadata address is only tried inside the isolated
//! network namespace that binds it to loopback.

use crate::common;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::common::s2iam_cmd;
use s2iam::env::{Env, Fs};
use s2iam::provider::aws::AwsProvider;
use s2iam::provider::IdentityRequest;
use s2iam::ProviderConfig;
use s2iam_testserver::{CloudConfig, TestServer, TestServerConfig};

/// (environment, the STS host s2iam must derive, its partition).
type Case = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

const CASES: [Case; 6] = [
    (
        &[("AWS_REGION", "cn-north-1")],
        "sts.cn-north-1.amazonaws.com.cn",
        "aws-cn",
    ),
    (
        &[
            ("AWS_REGION", "us-gov-west-1"),
            ("AWS_USE_FIPS_ENDPOINT", "true"),
        ],
        "sts.us-gov-west-1.amazonaws.com",
        "aws-us-gov",
    ),
    (
        &[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_STS_REGIONAL_ENDPOINTS", "legacy"),
        ],
        "sts.amazonaws.com",
        "aws",
    ),
    (
        &[
            ("AWS_DEFAULT_REGION", "us-east-2"),
            ("AWS_USE_DUALSTACK_ENDPOINT", "true"),
            ("AWS_USE_FIPS_ENDPOINT", "true"),
        ],
        "sts-fips.us-east-2.api.aws",
        "aws",
    ),
    (
        &[("AWS_REGION", "us-iso-east-1")],
        "sts.us-iso-east-1.c2s.ic.gov",
        "aws-iso",
    ),
    (
        &[("AWS_REGION", "eu-isoe-west-1")],
        "sts.eu-isoe-west-1.cloud.adc-e.uk",
        "aws-iso-e",
    ),
];

/// A config whose IMDS is the mock (plain HTTP) and whose STS endpoint is derived;
/// its HTTP client sends `hosts` to the mock's TLS listener and trusts its CA.
fn partition_config(server: &TestServer, env: &[(&str, &str)], hosts: &[&str]) -> ProviderConfig {
    let pairs = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.cloud_url())]
        .into_iter()
        .chain(env.iter().map(|(k, v)| (*k, v.to_string())));
    let mut cfg = ProviderConfig::with_env(
        Env::from_pairs(pairs),
        Fs::from_files::<std::path::PathBuf, String>([]),
    );
    let ca = reqwest::Certificate::from_pem(server.cloud_ca_pem().unwrap().as_bytes()).unwrap();
    let mut http = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca);
    for host in hosts {
        http = http.resolve(host, server.cloud_tls_addr().unwrap());
    }
    cfg.http = http.build().unwrap();
    cfg
}

#[tokio::test]
async fn sts_is_reached_at_each_partitions_derived_host_and_signed_for_its_region() {
    let hosts: Vec<&str> = CASES.iter().map(|(_, h, _)| *h).collect();
    let server =
        TestServer::start(TestServerConfig::new(CloudConfig::aws()).with_cloud_tls(&hosts))
            .await
            .unwrap();
    for (env, host, partition) in CASES {
        let cfg = partition_config(&server, env, &hosts);
        let (_, identity) = AwsProvider::default()
            .identity(&cfg, &IdentityRequest::default())
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        // The mock STS checked the signature's region against the host's, and
        // names the caller in the host's partition.
        assert!(
            identity
                .identifier
                .starts_with(&format!("arn:{partition}:sts::123456789012:assumed-role/")),
            "{host}: {}",
            identity.identifier
        );
        // Issue 23 (10): the claims the auth service gets are the reference
        // client's; the endpoint is not one of them.
        assert!(
            identity.additional_claims.keys().all(|k| [
                "UserId",
                "AssumedRoleArn",
                "RoleSessionName"
            ]
            .contains(&k.as_str())),
            "{host}: {:?}",
            identity.additional_claims
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_region_that_is_not_a_host_name_is_refused_before_any_request() {
    let server = common::mocks(CloudConfig::aws()).await;
    let cfg = ProviderConfig::with_env(
        Env::from_pairs([
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                server.cloud_url().as_str(),
            ),
            ("AWS_REGION", "us-east-1.evil.example"),
        ]),
        Fs::from_files::<std::path::PathBuf, String>([]),
    );
    let err = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a valid region name"), "{err}");
    assert!(
        server
            .cloud_requests()
            .entries()
            .iter()
            .all(|r| r.path != "/"),
        "no STS request"
    );
    server.shutdown().await;
}

// Multi-threaded: the mocks answer while this thread waits for the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_and_identity_name_the_sts_endpoint() {
    let server = common::mocks(CloudConfig::aws()).await;
    // detect: AWS_REGION is the fast path, so nothing is sent anywhere.
    let out = s2iam_cmd(&server)
        .env_remove("AWS_ENDPOINT_URL_STS")
        .env("AWS_REGION", "cn-northwest-1")
        .args(["detect", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["sts_endpoint"],
        "https://sts.cn-northwest-1.amazonaws.com.cn"
    );
    assert_eq!(doc["sts_partition"], "aws-cn");
    let out = s2iam_cmd(&server)
        .env_remove("AWS_ENDPOINT_URL_STS")
        .env("AWS_REGION", "us-gov-east-1")
        .env("AWS_USE_FIPS_ENDPOINT", "true")
        .arg("detect")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "STS endpoint: https://sts.us-gov-east-1.amazonaws.com (partition aws-us-gov, region us-gov-east-1)"
        ),
        "{text}"
    );
    // identity: through the mock STS (an explicit endpoint).
    let out = s2iam_cmd(&server)
        .args(["identity", "--provider", "aws"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Issue 23 (10): not an identity claim (the reference sends none); doctor
    // names the endpoint the identity used.
    assert!(!text.contains("StsEndpoint"), "{text}");
    let out = s2iam_cmd(&server)
        .args(["doctor", "--json", "--provider", "aws"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let credentials = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "credentials")
        .unwrap();
    assert_eq!(
        credentials["details"]["sts_endpoint"],
        server.cloud_url().to_string(),
        "{credentials}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn imds_over_ipv6_through_the_endpoint_override() {
    let mut config = TestServerConfig::new(CloudConfig::aws());
    config.cloud_addrs = vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0)];
    let server = match TestServer::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIP: no IPv6 loopback here ({e})");
            return;
        }
    };
    let port = server.cloud_addrs()[0].port();
    let base = format!("http://[::1]:{port}");
    let cfg = ProviderConfig::with_env(
        Env::from_pairs([
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", base.as_str()),
            // The explicit endpoint wins over the mode.
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6"),
            ("AWS_ENDPOINT_URL_STS", base.as_str()),
        ]),
        Fs::from_files::<std::path::PathBuf, String>([]),
    );
    assert_eq!(cfg.endpoints.aws_imds, base);
    AwsProvider::probe(&cfg)
        .await
        .expect("IMDS answers over IPv6");
    let (_, identity) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert!(identity
        .identifier
        .contains(":assumed-role/s2iam-test-role/"));
    assert!(
        server
            .cloud_requests()
            .count("/latest/meta-data/iam/security-credentials")
            > 0
    );
    server.shutdown().await;
}

/// Whether `ip` is an address of this network namespace (the isolated namespace
/// binds the metadata addresses to its loopback; the host does not).
fn is_local_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[tokio::test]
async fn imds_at_the_default_ipv6_address_inside_the_isolated_namespace() {
    let imds: IpAddr = "fd00:ec2::254".parse().unwrap();
    if !is_local_address(imds) {
        eprintln!(
            "SKIP: fd00:ec2::254 is not an address of this network namespace \
             (run scripts/test inside /work/shared/bin/isolated); nothing was sent to it"
        );
        return;
    }
    // Inside the namespace the address is loopback's: the mock listens on it.
    let mut config = TestServerConfig::new(CloudConfig::aws());
    config.cloud_addrs = vec![SocketAddr::new(imds, 80)];
    let server = TestServer::start(config)
        .await
        .expect("mock IMDS on [fd00:ec2::254]:80");
    let cfg = ProviderConfig::with_env(
        Env::from_pairs([
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6"),
            ("AWS_ENDPOINT_URL_STS", "http://[fd00:ec2::254]"),
        ]),
        Fs::from_files::<std::path::PathBuf, String>([]),
    );
    assert_eq!(cfg.endpoints.aws_imds, "http://[fd00:ec2::254]");
    AwsProvider::probe(&cfg)
        .await
        .expect("IMDS answers at the default IPv6 address");
    let (_, identity) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert!(identity
        .identifier
        .contains(":assumed-role/s2iam-test-role/"));
    server.shutdown().await;
}
