//! The `aws-config` feature: an SSO profile, which the native chain defers, is
//! resolved by the AWS SDK's chain against the mock SSO portal
//! (`AWS_ENDPOINT_URL_SSO`, a token in the SDK's cache), and the result is used
//! like any other credentials (GetCallerIdentity at the mock STS). Native
//! profiles stay native. Run by `scripts/check-aws-config-feature` (inside an
//! isolated network namespace); needs Rust 1.94.1.

#![cfg(feature = "aws-config")]

#[path = "../../tests/common/mod.rs"]
mod common;

use common::mocks as start;
use s2iam_testserver::cloud::aws::sso::SSO_ACCESS_TOKEN;
use s2iam_testserver::CloudConfig;

const ACCOUNT: &str = "123456789012";

/// The SDK's token cache file name for an `sso_session`: sha1 of its name.
fn cache_name(session: &str) -> String {
    let out = std::process::Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(session.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    format!("{}.json", hex.split_whitespace().next().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_profile_is_resolved_by_the_aws_sdk() {
    let server = start(CloudConfig::aws()).await;
    let home = common::temp_dir("aws-config");
    let aws = home.join(".aws");
    std::fs::create_dir_all(aws.join("sso/cache")).unwrap();
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile dev]\nsso_session = corp\nsso_account_id = {ACCOUNT}\nsso_role_name = Dev\n\
             region = us-east-1\n\
             [profile expired]\nsso_session = gone\nsso_account_id = {ACCOUNT}\nsso_role_name = Dev\n\
             [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-1\n\
             [sso-session gone]\nsso_start_url = https://gone.awsapps.com/start\nsso_region = us-east-1\n\
             [profile native]\ncredential_source = Ec2InstanceMetadata\nrole_arn = arn:aws:iam::{ACCOUNT}:role/native\n"
        ),
    )
    .unwrap();
    std::fs::write(
        aws.join("sso/cache").join(cache_name("corp")),
        format!(
            r#"{{"accessToken": "{SSO_ACCESS_TOKEN}", "expiresAt": "2099-01-01T00:00:00Z",
                "region": "us-east-1", "startUrl": "https://corp.awsapps.com/start"}}"#
        ),
    )
    .unwrap();
    let run = |profile: &str| {
        let mut cmd = common::s2iam_cmd(&server);
        cmd.args(["identity", "--json", "--provider", "aws"])
            .env("HOME", &home)
            .env("AWS_PROFILE", profile)
            .env("AWS_ENDPOINT_URL_SSO", server.cloud_url())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.cloud_url());
        tokio::task::block_in_place(|| cmd.output().unwrap())
    };

    let out = run("dev");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["identifier"],
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Dev/s2iam-sso-user")
    );
    assert_eq!(
        doc["credential_source"],
        "AWS SDK default chain (aws-config) (profile `dev`)"
    );
    assert_eq!(server.cloud_requests().count("/federation/credentials"), 1);

    // Without a cached token the SDK's own advice comes through.
    let out = run("expired");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS SDK default chain"), "{err}");

    // A profile the native chain knows never reaches the SDK.
    let out = run("native");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["credential_source"]
            .as_str()
            .unwrap()
            .starts_with("shared config profile `native`"),
        "{doc}"
    );
    std::fs::remove_dir_all(&home).ok();
}
