//! SigV4 clock skew against the mock STS with its clock moved (`CloudConfig::
//! with_clock_offset`): a request signed with this machine's clock is refused
//! (`SignatureDoesNotMatch: Signature expired`), s2iam measures the offset from the
//! answer, signs again and succeeds on the one retry, keeps the correction for
//! later requests, and reports it in `/metrics`.

use std::time::Duration;

use crate::common::{
    eventually, mocks, provider_config, sidecar_config, start_sidecar, tcp_sidecar_config,
    temp_dir, uds_get,
};
use s2iam::provider::aws::{AwsCredentials, StsClient};
use s2iam::secret::Secret;
use s2iam_testserver::{CloudConfig, TestServer};

/// The mock's long-lived user keys as s2iam credentials.
fn user_keys(server: &TestServer) -> AwsCredentials {
    let k = server.cloud().user_key();
    AwsCredentials {
        access_key_id: k.access_key_id,
        secret: Secret::new(k.secret_access_key),
        session_token: None,
        expiration: None,
        account_id: None,
    }
}

/// Statuses of the STS requests (`POST /`) the mock has seen, in order.
fn sts_statuses(server: &TestServer) -> Vec<u16> {
    server
        .cloud_requests()
        .entries()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/")
        .map(|r| r.status)
        .collect()
}

fn near(got: i64, want: i64) -> bool {
    got.abs_diff(want) <= 2
}

#[tokio::test]
async fn a_skewed_clock_is_corrected_after_one_refusal_and_the_correction_kept() {
    for offset in [20 * 60_i64, -20 * 60] {
        let server = mocks(CloudConfig::aws().with_clock_offset(offset)).await;
        let cfg = provider_config(&server);
        let sts = StsClient::new(&cfg, "us-east-1");
        let keys = user_keys(&server);

        let caller = sts
            .get_caller_identity(&keys)
            .await
            .expect("succeeds after the retry");
        assert!(
            caller.arn.ends_with(":user/s2iam-test-user"),
            "{}",
            caller.arn
        );
        // Signed with this machine's clock it was refused; re-signed it passed.
        assert_eq!(sts_statuses(&server), [403, 200], "offset {offset}");
        let reading = cfg.aws_clock_skew.reading();
        assert!(near(reading.correction_secs, offset), "{reading:?}");
        assert!(near(reading.measured_secs.unwrap(), offset), "{reading:?}");

        // Later requests, from any client of the same config, are signed right at once.
        let again = StsClient::new(&cfg, "us-east-1");
        again.get_session_token(&keys, None).await.unwrap();
        assert_eq!(sts_statuses(&server), [403, 200, 200]);
        assert!(near(again.clock_skew().correction_secs, offset));
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_ten_minute_skew_passes_sts_and_is_corrected_for_later_requests() {
    // STS accepts 15 minutes either way, so 10 minutes is no refusal: the Date of the
    // answer alone sets the correction, which later requests are signed with.
    for offset in [10 * 60_i64, -10 * 60] {
        let server = mocks(CloudConfig::aws().with_clock_offset(offset)).await;
        let cfg = provider_config(&server);
        let sts = StsClient::new(&cfg, "us-east-1");
        let keys = user_keys(&server);
        sts.get_caller_identity(&keys).await.unwrap();
        assert_eq!(sts_statuses(&server), [200]);
        assert!(near(cfg.aws_clock_skew.correction_secs(), offset));

        // The cloud's clock moves another 10 minutes the same way: 20 minutes from
        // this machine's, but only 10 from the corrected signing time.
        server
            .cloud()
            .update(|c| c.clock_offset_secs = offset.saturating_mul(2));
        sts.get_caller_identity(&keys).await.unwrap();
        assert_eq!(
            sts_statuses(&server),
            [200, 200],
            "no refusal: signed with the correction"
        );
        assert!(near(cfg.aws_clock_skew.correction_secs(), offset * 2));
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_right_clock_is_not_corrected_and_a_wrong_key_is_not_retried() {
    let server = mocks(CloudConfig::aws()).await;
    let cfg = provider_config(&server);
    let sts = StsClient::new(&cfg, "us-east-1");
    let mut keys = user_keys(&server);
    sts.get_caller_identity(&keys).await.unwrap();
    let reading = sts.clock_skew();
    assert_eq!(reading.correction_secs, 0);
    assert!(reading.measured_secs.unwrap().abs() <= 2, "{reading:?}");

    keys.secret = Secret::new("wrong-secret-wrong-secret-wrong-secret-00");
    let err = sts.get_caller_identity(&keys).await.unwrap_err();
    assert!(err.to_string().contains("SignatureDoesNotMatch"), "{err}");
    assert_eq!(
        sts_statuses(&server),
        [200, 403],
        "a bad signature is not a skew"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn probe_measures_the_skew_without_credentials() {
    let server = mocks(CloudConfig::aws().with_clock_offset(-600)).await;
    let cfg = provider_config(&server);
    let offset = StsClient::new(&cfg, "eu-west-1")
        .probe_clock_skew()
        .await
        .unwrap();
    assert!(near(offset, -600), "{offset}");
    assert!(near(cfg.aws_clock_skew.correction_secs(), -600));
    server.shutdown().await;
}

#[tokio::test]
async fn the_sidecar_reports_the_skew_in_metrics() {
    let offset = 20 * 60;
    let server = mocks(CloudConfig::aws().with_clock_offset(offset)).await;
    let dir = temp_dir("skew-metrics");
    let c = sidecar_config(&server, &dir, "[identity]\nprovider = \"aws\"\n");
    let sidecar = start_sidecar(&server, c).await;
    let socket = dir.join("s2iam.sock");
    // A token needs the AWS identity: STS refuses, s2iam corrects and retries.
    let (status, body) = uds_get(&socket, "/v1/token/api").await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = uds_get(&socket, "/metrics").await;
    let gauge = |name: &str| -> i64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert!(
        near(gauge("s2iam_aws_clock_skew_seconds"), offset),
        "{metrics}"
    );
    assert!(near(
        gauge("s2iam_aws_clock_skew_correction_seconds"),
        offset
    ));
    assert!(
        eventually(Duration::from_secs(1), async || sts_statuses(&server)
            .contains(&403))
        .await,
        "the first signature was refused"
    );
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn presigned_urls_are_signed_on_awss_clock_once_the_skew_is_known() {
    let offset = -20 * 60;
    let server = mocks(CloudConfig::aws().with_clock_offset(offset)).await;
    let dir = temp_dir("skew-presign");
    let toml = format!(
        "[identity]\nprovider = \"aws\"\n[aws]\nauthorization_token_file = \"{}\"\n\
         [[aws_profile]]\nname = \"data\"\nsource = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/data\"\n",
        dir.join("aws-token").display()
    );
    let sidecar = start_sidecar(&server, tcp_sidecar_config(&server, &toml)).await;
    let token = std::fs::read_to_string(dir.join("aws-token")).unwrap();
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/s3/presign?profile=data&bucket=bucket-1&key=k",
            sidecar.tcp_addr().unwrap()
        ))
        .header("Authorization", token.trim())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{doc}");
    let url = url::Url::parse(doc["url"].as_str().unwrap()).unwrap();
    // No S3 endpoint configured: the region's, virtual-hosted.
    assert_eq!(url.host_str(), Some("bucket-1.s3.us-east-1.amazonaws.com"));
    let signed_at = url
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Date")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    // AssumeRole was refused once for the skew, then the URL was signed on AWS's clock.
    assert_eq!(sts_statuses(&server), [403, 200]);
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let signed = time::PrimitiveDateTime::parse(&signed_at, &fmt)
        .unwrap()
        .assume_utc()
        .unix_timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(near(signed - now, offset), "signed at {signed_at}");
    sidecar.shutdown().await;
    server.shutdown().await;
}
