//! AWS shared config profiles against the mock STS, IMDS and container endpoint on
//! loopback: `source_profile` chains, cycles, `credential_source`,
//! `credential_process` (expiry, failure, timeout, bad output), `external_id`,
//! `duration_seconds`, `role_session_name`, `region`, web identity in a profile,
//! and the refusals (`mfa_serial`, SSO without the `aws-config` feature).

// Tests and benches own their environment and clock (rule 4 is for the library).
#![allow(clippy::disallowed_methods)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mocks as start;
use s2iam::env::{Env, Fs, ManualClock};
use s2iam::provider::aws::{AwsProvider, CredentialSource};
use s2iam::{IdentityRequest, ProviderConfig};
use s2iam_testserver::{AwsIdentity, CloudConfig, TestServer};

const ACCOUNT: &str = "123456789012";

fn role(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// Every endpoint at the mock, `HOME=/home/t`, `PATH` (for credential_process
/// scripts), plus `extra`; the two files in memory.
fn config(
    server: &TestServer,
    extra: &[(&str, &str)],
    aws_config: &str,
    credentials: &str,
) -> ProviderConfig {
    let path = std::env::var("PATH").unwrap_or_default();
    let env = s2iam::env::endpoints::mock_env(&server.cloud_url())
        .into_iter()
        .chain([
            ("HOME".to_string(), "/home/t".to_string()),
            ("PATH".to_string(), path),
        ])
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ProviderConfig::with_env(
        Env::from_pairs(env),
        Fs::from_files([
            ("/home/t/.aws/config", aws_config.to_string()),
            ("/home/t/.aws/credentials", credentials.to_string()),
        ]),
    )
}

fn user_keys(server: &TestServer, profile: &str) -> String {
    let user = server.cloud().user_key();
    format!(
        "[{profile}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        user.access_key_id, user.secret_access_key
    )
}

fn assume_calls(server: &TestServer) -> Vec<s2iam_testserver::cloud::aws::sts::StsCall> {
    server
        .cloud()
        .sts_calls()
        .into_iter()
        .filter(|c| c.action == "AssumeRole")
        .collect()
}

async fn identity(p: &AwsProvider, cfg: &ProviderConfig) -> Result<s2iam::CloudIdentity, String> {
    p.identity(cfg, &IdentityRequest::default())
        .await
        .map(|(_, id)| id)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn source_profile_chain_of_depth_three_with_external_id_duration_and_session_name() {
    let server = start(CloudConfig {
        aws: Some(AwsIdentity {
            role_external_ids: [(role("app"), "ext-4711".to_string())].into(),
            ..AwsIdentity::default()
        }),
        ..CloudConfig::none()
    })
    .await;
    let aws_config = format!(
        "[profile app]\nrole_arn = {}\nsource_profile = mid\nexternal_id = ext-4711\n\
         duration_seconds = 1800\nrole_session_name = app-session\nregion = eu-west-2\n\
         [profile mid]\nrole_arn = {}\nsource_profile = base\n\
         [profile wrong-ext]\nrole_arn = {}\nsource_profile = base\nexternal_id = other-id\n",
        role("app"),
        role("mid"),
        role("app")
    );
    let credentials = user_keys(&server, "base");
    let cfg = config(
        &server,
        &[("AWS_PROFILE", "app")],
        &aws_config,
        &credentials,
    );
    let provider = AwsProvider::default();

    let session = provider.session(&cfg, "ignored").await.unwrap();
    assert_eq!(session.source, CredentialSource::SharedConfig);
    assert_eq!(session.region, "eu-west-2", "the profile's region");
    assert_eq!(
        session.source_detail,
        format!(
            "shared config profile `app` (assume role {} via source_profile `mid`; \
             assume role {} via source_profile `base`; static keys of `base`)",
            role("app"),
            role("mid")
        )
    );

    let id = identity(&provider, &cfg).await.unwrap();
    assert_eq!(
        id.identifier,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/app/app-session")
    );
    assert_eq!(
        id.credential_source.as_deref(),
        Some(session.source_detail.as_str())
    );

    // What the mock saw: the user's keys assume mid, mid's session assumes app
    // with the external id and duration; the second load came from the cache.
    let calls = assume_calls(&server);
    assert_eq!(calls.len(), 2, "{calls:?}");
    let user = server.cloud().user_key();
    assert_eq!(calls[0].role_arn.as_deref(), Some(role("mid").as_str()));
    assert_eq!(calls[0].caller_arn.as_deref(), Some(user.arn.as_str()));
    assert_eq!(calls[0].role_session_name.as_deref(), Some("s2iam-session"));
    assert_eq!(calls[0].external_id, None);
    assert_eq!(calls[1].role_arn.as_deref(), Some(role("app").as_str()));
    assert_eq!(
        calls[1].caller_arn.as_deref(),
        Some(format!("arn:aws:sts::{ACCOUNT}:assumed-role/mid/s2iam-session").as_str())
    );
    assert_eq!(calls[1].external_id.as_deref(), Some("ext-4711"));
    assert_eq!(calls[1].duration_seconds, Some(1800));
    assert_eq!(calls[1].role_session_name.as_deref(), Some("app-session"));

    // The trust policy's external id is enforced by the mock: another id is denied.
    let cfg = config(
        &server,
        &[("AWS_PROFILE", "wrong-ext")],
        &aws_config,
        &credentials,
    );
    let err = identity(&AwsProvider::default(), &cfg).await.unwrap_err();
    assert!(
        err.contains("profile `wrong-ext`: assuming") && err.contains("AccessDenied"),
        "{err}"
    );
}

#[tokio::test]
async fn duration_seconds_reaches_sts_which_refuses_a_chained_role_over_an_hour() {
    let server = start(CloudConfig::aws()).await;
    let aws_config = format!(
        "[profile a]\nrole_arn = {}\nsource_profile = b\nduration_seconds = 7200\n\
         [profile b]\nrole_arn = {}\ncredential_source = Ec2InstanceMetadata\n",
        role("a"),
        role("b")
    );
    let cfg = config(&server, &[("AWS_PROFILE", "a")], &aws_config, "");
    let err = identity(&AwsProvider::default(), &cfg).await.unwrap_err();
    assert!(err.contains("1 hour session limit"), "{err}");
    assert!(err.contains(&role("a")), "{err}");
}

#[tokio::test]
async fn source_profile_cycles_are_named_and_nothing_is_sent() {
    let server = start(CloudConfig::aws()).await;
    let aws_config = format!(
        "[profile a]\nrole_arn = {r}\nsource_profile = b\n\
         [profile b]\nrole_arn = {r}\nsource_profile = c\n\
         [profile c]\nrole_arn = {r}\nsource_profile = a\n",
        r = role("x")
    );
    let cfg = config(&server, &[("AWS_PROFILE", "a")], &aws_config, "");
    let err = identity(&AwsProvider::default(), &cfg).await.unwrap_err();
    assert!(
        err.contains("source_profile cycle: a -> b -> c -> a"),
        "{err}"
    );
    assert!(
        server.cloud_requests().entries().is_empty(),
        "no request was sent"
    );
}

#[tokio::test]
async fn credential_source_environment_instance_metadata_and_container() {
    let server = start(CloudConfig::aws()).await;
    let user = server.cloud().user_key();
    let aws_config = format!(
        "[profile env]\nrole_arn = {}\ncredential_source = Environment\n\
         [profile imds]\nrole_arn = {}\ncredential_source = Ec2InstanceMetadata\n\
         [profile ecs]\nrole_arn = {}\ncredential_source = EcsContainer\n",
        role("from-env"),
        role("from-imds"),
        role("from-ecs")
    );
    // (profile, role, extra variables, the AssumeRole caller or "" for any)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, String);
    let cases: [Case; 3] = [
        (
            "env",
            "from-env",
            vec![
                ("AWS_ACCESS_KEY_ID", user.access_key_id.as_str()),
                ("AWS_SECRET_ACCESS_KEY", user.secret_access_key.as_str()),
            ],
            user.arn.clone(),
        ),
        (
            "imds",
            "from-imds",
            vec![],
            format!("arn:aws:sts::{ACCOUNT}:assumed-role/s2iam-test-role/i-0123456789abcdef0"),
        ),
        (
            "ecs",
            "from-ecs",
            vec![(
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/task-1",
            )],
            String::new(),
        ),
    ];
    for (profile, role_name, extra, caller) in cases {
        server.cloud().clear_sts_calls();
        let mut vars = extra.clone();
        vars.push(("AWS_PROFILE", profile));
        // The environment keys would win as a chain source of their own; the
        // `Environment` case selects the profile source explicitly instead.
        let cfg = config(&server, &vars, &aws_config, "");
        let loaded = if profile == "env" {
            s2iam::provider::aws::chain::Chain::default()
                .with(s2iam::provider::aws::chain::shared_config::SharedConfig::default())
                .load(&cfg)
                .await
                .unwrap()
        } else {
            s2iam::provider::aws::chain::load(&cfg, "us-east-1")
                .await
                .unwrap()
        };
        assert_eq!(loaded.source, CredentialSource::SharedConfig, "{profile}");
        let detail = loaded.describe();
        let expected = match profile {
            "env" => "credential_source Environment; environment keys",
            "imds" => "credential_source Ec2InstanceMetadata; instance metadata (IMDS) role",
            _ => "credential_source EcsContainer; container credentials",
        };
        assert!(detail.ends_with(&format!("{expected})")), "{detail}");
        let calls = assume_calls(&server);
        assert_eq!(calls.len(), 1, "{profile}");
        assert_eq!(calls[0].role_arn.as_deref(), Some(role(role_name).as_str()));
        if !caller.is_empty() {
            assert_eq!(
                calls[0].caller_arn.as_deref(),
                Some(caller.as_str()),
                "{profile}"
            );
        }
    }
    assert_eq!(server.cloud_requests().count("/v2/credentials/task-1"), 1);

    // A broken credential_source stops the chain with the profile named.
    let cfg = config(&server, &[("AWS_PROFILE", "env")], &aws_config, "");
    let err = identity(&AwsProvider::default(), &cfg).await.unwrap_err();
    assert!(
        err.contains("profile `env`: credential_source Environment gave no credentials"),
        "{err}"
    );
}

#[tokio::test]
async fn web_identity_token_file_in_a_profile() {
    let server = start(CloudConfig::aws()).await;
    let token = server
        .cloud()
        .mint_eks_web_identity_token("system:serviceaccount:ns:app")
        .unwrap();
    let aws_config = format!(
        "[default]\nrole_arn = {}\nweb_identity_token_file = /var/run/token\nrole_session_name = pod-1\n",
        role("irsa")
    );
    let path = std::env::var("PATH").unwrap_or_default();
    let env = s2iam::env::endpoints::mock_env(&server.cloud_url())
        .into_iter()
        .chain([
            ("HOME".to_string(), "/home/t".to_string()),
            ("PATH".to_string(), path),
        ]);
    let cfg = ProviderConfig::with_env(
        Env::from_pairs(env),
        Fs::from_files([
            ("/home/t/.aws/config", aws_config),
            ("/var/run/token", token),
        ]),
    );
    let id = identity(&AwsProvider::default(), &cfg).await.unwrap();
    assert_eq!(
        id.identifier,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/irsa/pod-1")
    );
    assert!(
        id.credential_source
            .as_deref()
            .unwrap()
            .contains("web identity token file"),
        "{:?}",
        id.credential_source
    );
    let calls = server.cloud().sts_calls();
    assert_eq!(calls[0].action, "AssumeRoleWithWebIdentity");
    assert_eq!(
        calls[0].web_identity_subject.as_deref(),
        Some("system:serviceaccount:ns:app")
    );
}

/// A `credential_process` script printing the mock user's keys with
/// `Expiration` = the contents of `{dir}/expiration`, appending a line to
/// `{dir}/runs` each time.
fn process_script(server: &TestServer, dir: &Path) -> String {
    let user = server.cloud().user_key();
    let script = dir.join("creds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho run >> '{dir}/runs'\necho 'diagnostic on stderr' >&2\n\
             printf '{{\"Version\": 1, \"AccessKeyId\": \"%s\", \"SecretAccessKey\": \"%s\", \"Expiration\": \"%s\"}}' \
             '{}' '{}' \"$(cat '{dir}/expiration')\"\n",
            user.access_key_id,
            user.secret_access_key,
            dir = dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn credential_process_runs_once_per_expiry_and_again_when_it_nears() {
    let server = start(CloudConfig::aws()).await;
    let dir = common::temp_dir("credproc");
    // SigV4 allows 15 minutes of skew, and the clock below also signs: keep the
    // moves inside that.
    let expiration =
        s2iam::util::rfc3339(std::time::SystemTime::now() + Duration::from_secs(16 * 60));
    std::fs::write(dir.join("expiration"), &expiration).unwrap();
    let script = process_script(&server, &dir);
    // The quoted argument is passed as one word, without a shell.
    let aws_config = format!(
        "[profile proc]\ncredential_process = {script} \"an argument with spaces\"\n\
         [profile via-proc]\nrole_arn = {}\nsource_profile = proc\n",
        role("via-proc")
    );
    let clock = Arc::new(ManualClock::default());
    let cfg =
        config(&server, &[("AWS_PROFILE", "proc")], &aws_config, "").with_clock(clock.clone());
    let provider = AwsProvider::default();

    let id = identity(&provider, &cfg).await.unwrap();
    assert_eq!(id.identifier, server.cloud().user_key().arn);
    assert_eq!(
        id.credential_source.as_deref(),
        Some("shared config profile `proc` (credential_process of `proc`)")
    );
    assert_eq!(runs(&dir), 1);
    // Cached until 5 minutes before the Expiration...
    identity(&provider, &cfg).await.unwrap();
    clock.set_offset(10 * 60);
    identity(&provider, &cfg).await.unwrap();
    assert_eq!(
        runs(&dir),
        1,
        "the process ran again before its credentials neared expiry"
    );
    // ...then run again.
    clock.set_offset(12 * 60);
    identity(&provider, &cfg).await.unwrap();
    assert_eq!(runs(&dir), 2);

    // As a source profile: the role's session is what is cached.
    clock.set_offset(0);
    let cfg =
        config(&server, &[("AWS_PROFILE", "via-proc")], &aws_config, "").with_clock(clock.clone());
    let id = identity(&provider, &cfg).await.unwrap();
    assert_eq!(
        id.identifier,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/via-proc/s2iam-session")
    );
    assert_eq!(runs(&dir), 3);
    identity(&provider, &cfg).await.unwrap();
    assert_eq!(runs(&dir), 3);
    assert_eq!(assume_calls(&server).len(), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn credential_process_failures_are_clear_and_never_quote_stdout() {
    let server = start(CloudConfig::aws()).await;
    let dir = common::temp_dir("credproc-fail");
    let script = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    };
    let failing = script("fail.sh", "echo '{\"SecretAccessKey\": \"leaked-secret\"}'\necho 'token expired, run login' >&2\nexit 3");
    let garbage = script(
        "garbage.sh",
        "echo 'AccessKeyId=AKIA SecretAccessKey=leaked-secret'",
    );
    let version2 = script(
        "v2.sh",
        "echo '{\"Version\": 2, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"leaked-secret\"}'",
    );
    let slow = script("slow.sh", "sleep 30");
    let aws_config = format!(
        "[profile failing]\ncredential_process = {failing}\n\
         [profile garbage]\ncredential_process = {garbage}\n\
         [profile version2]\ncredential_process = {version2}\n\
         [profile slow]\ncredential_process = {slow}\n\
         [profile missing]\ncredential_process = {}/does-not-exist --flag\n\
         [profile unbalanced]\ncredential_process = {failing} \"oops\n\
         [profile shell]\ncredential_process = {garbage} ; touch {}/injected\n",
        dir.display(),
        dir.display()
    );
    let err_for = |profile: &'static str| {
        let cfg = config(
            &server,
            &[
                ("AWS_PROFILE", profile),
                ("S2IAM_CREDENTIAL_PROCESS_TIMEOUT", "1s"),
            ],
            &aws_config,
            "",
        );
        async move { identity(&AwsProvider::default(), &cfg).await.unwrap_err() }
    };

    let err = err_for("failing").await;
    assert!(
        err.contains("exited with status 3: token expired, run login"),
        "{err}"
    );
    let err = err_for("garbage").await;
    assert!(err.contains("printed invalid JSON"), "{err}");
    let err = err_for("version2").await;
    assert!(err.contains("Version 2; only Version 1"), "{err}");
    let started = Instant::now();
    let err = err_for("slow").await;
    assert!(
        err.contains("did not exit within 1 s and was killed"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let err = err_for("missing").await;
    assert!(
        err.contains("cannot run") && err.contains("does-not-exist"),
        "{err}"
    );
    assert!(!err.contains("--flag"), "only the program is shown: {err}");
    let err = err_for("unbalanced").await;
    assert!(err.contains("unbalanced quotes"), "{err}");
    // No shell: `;` is an argument, not a second command.
    let err = err_for("shell").await;
    assert!(err.contains("printed invalid JSON"), "{err}");
    assert!(
        !dir.join("injected").exists(),
        "a shell ran the command line"
    );
    for profile in ["failing", "garbage", "version2"] {
        let err = err_for(profile).await;
        assert!(
            !err.contains("leaked-secret"),
            "{profile}: stdout leaked: {err}"
        );
    }
    assert!(assume_calls(&server).is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn mfa_and_sso_profiles_are_refused_with_what_to_do() {
    let server = start(CloudConfig::aws()).await;
    let aws_config = format!(
        "[profile mfa]\nrole_arn = {}\nsource_profile = base\nmfa_serial = arn:aws:iam::{ACCOUNT}:mfa/me\n\
         [profile sso]\nsso_session = corp\nsso_account_id = {ACCOUNT}\nsso_role_name = Dev\n\
         [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-1\n",
        role("r")
    );
    let credentials = user_keys(&server, "base");
    let cfg = config(
        &server,
        &[("AWS_PROFILE", "mfa")],
        &aws_config,
        &credentials,
    );
    let err = identity(&AwsProvider::default(), &cfg).await.unwrap_err();
    assert!(
        err.contains("sets mfa_serial") && err.contains("cannot prompt"),
        "{err}"
    );

    if !cfg!(feature = "aws-config") {
        let cfg = config(
            &server,
            &[("AWS_PROFILE", "sso")],
            &aws_config,
            &credentials,
        );
        let err = identity(&AwsProvider::default(), &cfg).await.unwrap_err();
        assert!(err.contains("uses sso_session"), "{err}");
        assert!(err.contains("--features aws-config"), "{err}");
        assert!(
            err.contains("aws configure export-credentials --profile sso"),
            "{err}"
        );
    }
    assert!(
        server.cloud_requests().entries().is_empty(),
        "nothing was sent"
    );
}

#[tokio::test]
async fn an_explicit_profile_wins_over_container_credentials_as_in_the_sdks() {
    let server = start(CloudConfig::aws()).await;
    let credentials = user_keys(&server, "dev");
    let cfg = config(
        &server,
        &[
            ("AWS_PROFILE", "dev"),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/task-1",
            ),
        ],
        "",
        &credentials,
    );
    let id = identity(&AwsProvider::default(), &cfg).await.unwrap();
    assert_eq!(id.identifier, server.cloud().user_key().arn);
    assert_eq!(server.cloud_requests().count("/v2/credentials/task-1"), 0);
    // A config with only a region passes to the next source.
    let cfg = config(
        &server,
        &[(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/task-1",
        )],
        "[default]\nregion = eu-central-1\n",
        "",
    );
    let session = AwsProvider::default().session(&cfg, "x").await.unwrap();
    assert_eq!(session.source, CredentialSource::Container);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_and_identity_name_the_profile_and_its_roles() {
    let server = start(CloudConfig::aws()).await;
    let dir = common::temp_dir("profile-cli");
    std::fs::write(
        dir.join("config"),
        format!(
            "[profile app]\nrole_arn = {}\nsource_profile = base\n",
            role("app")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("credentials"), user_keys(&server, "base")).unwrap();
    let run = |args: &[&str]| {
        let mut cmd = common::s2iam_cmd(&server);
        cmd.args(args)
            .env("HOME", &dir)
            .env("AWS_PROFILE", "app")
            .env("AWS_CONFIG_FILE", dir.join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"));
        // The mocks run on this test's runtime: wait for the binary elsewhere.
        tokio::task::block_in_place(|| cmd.output().unwrap())
    };
    let want = format!(
        "shared config profile `app` (assume role {} via source_profile `base`; static keys of `base`)",
        role("app")
    );
    let out = run(&["detect"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("aws (from the environment: AWS_PROFILE is set"),
        "{text}"
    );
    assert!(text.contains(&format!("credentials: {want}")), "{text}");
    let out = run(&["detect", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["credential_source"], want.as_str());

    let out = run(&["identity"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("credential_source: {want}")),
        "{text}"
    );
    assert!(text.contains("assumed-role/app/s2iam-session"), "{text}");
    let out = run(&["identity", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["credential_source"], want.as_str());
    std::fs::remove_dir_all(&dir).ok();
}
