//! `s2iam doctor`, the real binary against the mock cloud and mock auth service:
//! a healthy cloud (every check passes and the predicted `sub` is the one a real
//! exchange then gets), the IMDSv2 hop-limit symptom, a clock 10 minutes off, a
//! proxy that would capture metadata traffic, no cloud at all, a sidecar config
//! with a stale sink; the JSON schema and the exit codes.

use crate::common;
use crate::tls_front;
use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{mocks, s2iam_cmd};
use s2iam_testserver::{AwsIdentity, CloudConfig, FaultRule, TestServer};
use serde_json::Value;

/// Every check, in the order doctor reports them.
const CHECKS: [&str; 9] = [
    "proxy",
    "token_files",
    "detect",
    "imds_hop_limit",
    "credentials",
    "metadata",
    "principal",
    "clock_skew",
    "auth_service",
];

struct Run {
    code: i32,
    json: Value,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn check(&self, id: &str) -> &Value {
        self.json["checks"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["id"] == id))
            .unwrap_or_else(|| panic!("no check {id} in {:#}", self.json))
    }

    fn status(&self, id: &str) -> &str {
        self.check(id)["status"].as_str().unwrap()
    }

    fn message(&self, id: &str) -> &str {
        self.check(id)["message"].as_str().unwrap()
    }
}

fn doctor(server: &TestServer, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = s2iam_cmd(server);
    cmd.args(["doctor", "--json"]).args(args);
    if !args.contains(&"--timeout") {
        cmd.args(["--timeout", "3s"]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().expect("s2iam runs");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    };
    assert_schema(&run);
    run
}

/// The `s2iam-doctor/1` schema, whatever the verdicts.
fn assert_schema(run: &Run) {
    let j = &run.json;
    assert_eq!(j["schema"], "s2iam-doctor/1");
    let checks = j["checks"].as_array().expect("checks is an array");
    let mut ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    // `exchange` comes last, and only with --exchange.
    if ids.last() == Some(&"exchange") {
        ids.pop();
    }
    assert_eq!(ids, CHECKS);
    let mut fails = 0;
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(["pass", "warn", "fail", "skip"].contains(&status), "{c:#}");
        assert!(!c["message"].as_str().unwrap().is_empty(), "{c:#}");
        match status {
            "warn" | "fail" => assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c:#}"),
            _ => assert!(c["fix"].is_null() || c["fix"].is_string(), "{c:#}"),
        }
        assert!(c["details"]
            .as_object()
            .unwrap()
            .values()
            .all(Value::is_string));
        assert!(c["elapsed_ms"].is_u64(), "{c:#}");
        fails += usize::from(status == "fail");
    }
    for key in ["pass", "warn", "fail", "skip"] {
        let n = checks.iter().filter(|c| c["status"] == key).count();
        assert_eq!(j["counts"][key], n, "{key}");
    }
    assert_eq!(j["ok"], fails == 0);
    // Exit code: 0 when nothing fails, 1 otherwise.
    assert_eq!(run.code, if fails == 0 { 0 } else { 1 }, "{}", run.stderr);
    let outcome = j["outcome"].as_object().unwrap();
    for key in [
        "provider",
        "detected_by",
        "credential_source",
        "sub",
        "identity_format",
        "auth_server",
    ] {
        assert!(outcome.contains_key(key), "{key}");
    }
}

/// The `sub` a real exchange gets (`--print-sub` prints it on stderr).
fn real_sub(server: &TestServer) -> String {
    real_sub_with(server, &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_clouds_pass_and_the_predicted_sub_is_the_issued_one() {
    for (cloud, provider, format) in [
        (CloudConfig::aws(), "aws", "aws-iam-role-arn"),
        (CloudConfig::gcp(), "gcp", "gcp-sa-email"),
        (CloudConfig::azure(), "azure", "azure-object-id"),
    ] {
        let server = mocks(cloud).await;
        let run = doctor(&server, &[], &[]);
        assert_eq!(run.code, 0, "{provider}: {:#}", run.json);
        for id in CHECKS {
            let want = match (id, provider) {
                ("token_files", _) => "skip",
                ("imds_hop_limit", "gcp" | "azure") => "skip",
                _ => "pass",
            };
            assert_eq!(run.status(id), want, "{provider} {id}: {:#}", run.check(id));
        }
        let o = &run.json["outcome"];
        assert_eq!(o["provider"], provider);
        assert_eq!(o["detected_by"], "metadata");
        assert_eq!(o["identity_format"], format);
        // Doctor never exchanges...
        assert!(server.auth().records().is_empty(), "{provider}");
        // ...and a real exchange then gets exactly the sub it predicted.
        assert_eq!(o["sub"], real_sub(&server), "{provider}");
        assert_eq!(server.auth().records().len(), 1);
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_aws_in_words() {
    let server = mocks(CloudConfig::aws()).await;
    let out = s2iam_cmd(&server)
        .args(["doctor", "--timeout", "3s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("PASS  ")).count(),
        8,
        "{text}"
    );
    for needle in [
        "PASS  detect",
        "aws: its metadata service answered first",
        "instance metadata (IMDS) role: arn:aws:sts::123456789012:assumed-role/s2iam-test-role/",
        "sub=arn:aws:iam::123456789012:role/s2iam-test-role (identity format aws-iam-role-arn)",
        "IMDSv2 token answered",
        "8 PASS, 0 WARN, 0 FAIL, 1 SKIP",
        "A token request will use aws (metadata)",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_limit_symptom_fails_with_the_fix() {
    // HttpTokens=required and the token PUT unanswered: a container behind hop limit 1.
    let server = mocks(CloudConfig {
        aws: Some(AwsIdentity {
            imds_v1: false,
            ..AwsIdentity::default()
        }),
        ..CloudConfig::none()
    })
    .await;
    server
        .cloud_faults()
        .add(FaultRule::blackhole("/latest/api/token").method("PUT"));
    let run = doctor(&server, &[], &[]);
    assert_eq!(run.code, 1);
    let hop = run.check("imds_hop_limit");
    assert_eq!(hop["status"], "fail", "{hop:#}");
    assert!(
        run.message("imds_hop_limit").contains("hop-limit symptom")
            && run.message("imds_hop_limit").contains("requires tokens"),
        "{hop:#}"
    );
    assert!(hop["fix"]
        .as_str()
        .unwrap()
        .contains("--http-put-response-hop-limit 2"));
    // Detection says why too (the probe's own diagnosis).
    assert!(
        run.message("detect").contains("hop limit"),
        "{:#}",
        run.check("detect")
    );
    assert!(run.elapsed < Duration::from_secs(30), "{:?}", run.elapsed);

    // With IMDSv1 allowed s2iam still works (after a timeout): a warning.
    server.cloud().update(|c| {
        if let Some(aws) = c.aws.as_mut() {
            aws.imds_v1 = true;
        }
    });
    let run = doctor(&server, &[], &[]);
    assert_eq!(
        run.status("imds_hop_limit"),
        "warn",
        "{:#}",
        run.check("imds_hop_limit")
    );
    assert_eq!(
        run.status("credentials"),
        "pass",
        "{:#}",
        run.check("credentials")
    );
    assert_eq!(run.code, 0, "{:#}", run.json);
    server.shutdown().await;
}

/// A TCP listener that counts connections: the would-be proxy.
fn capture_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_that_would_capture_metadata_traffic_warns() {
    let server = mocks(CloudConfig::aws()).await;
    let (proxy, seen) = capture_proxy();
    let run = doctor(
        &server,
        &[("HTTP_PROXY", &proxy), ("https_proxy", &proxy)],
        &[],
    );
    let check = run.check("proxy");
    assert_eq!(check["status"], "warn", "{check:#}");
    let message = run.message("proxy");
    assert!(message.contains("capture metadata requests"), "{check:#}");
    assert!(message.contains("169.254.169.254"), "{check:#}");
    let fix = check["fix"].as_str().unwrap();
    assert!(
        fix.contains("NO_PROXY") && fix.contains("metadata.google.internal"),
        "{fix}"
    );
    assert_eq!(check["details"]["route.aws_imds"], "direct");
    assert_eq!(check["details"]["env.HTTP_PROXY"], format!("{proxy}/"));
    // s2iam itself sent nothing to the proxy, and everything else still works.
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    assert_eq!(run.code, 0, "{:#}", run.json);
    for id in ["detect", "credentials", "principal", "auth_service"] {
        assert_eq!(run.status(id), "pass", "{id}");
    }

    // NO_PROXY covering the metadata addresses: nothing to warn about.
    let run = doctor(
        &server,
        &[
            ("HTTP_PROXY", &proxy),
            (
                "NO_PROXY",
                "169.254.169.254,169.254.170.2,metadata.google.internal",
            ),
        ],
        &[],
    );
    assert_eq!(run.status("proxy"), "pass", "{:#}", run.check("proxy"));
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cloud_fails_within_the_timeout() {
    // Every metadata request accepted and never answered: the slowest "no cloud".
    let server = mocks(CloudConfig::none()).await;
    server.cloud_faults().add(FaultRule::blackhole("/"));
    let run = doctor(&server, &[], &["--timeout", "2s"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.status("detect"), "fail", "{:#}", run.check("detect"));
    assert!(run.message("detect").starts_with("no cloud detected"));
    for id in ["credentials", "principal", "metadata"] {
        assert_eq!(run.status(id), "skip", "{id}: {:#}", run.check(id));
    }
    assert_eq!(run.status("auth_service"), "pass");
    assert!(run.json["outcome"]["provider"].is_null());
    // Bounded by the timeout (2 s per network check), not by the blackhole.
    assert!(run.elapsed < Duration::from_secs(20), "{:?}", run.elapsed);
    server.shutdown().await;

    // Nothing listening at all: fast.
    let server = mocks(CloudConfig::none()).await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let base = format!("http://{closed}");
    let env: Vec<(String, String)> = s2iam::env::endpoints::mock_env(&base);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = doctor(&server, &env, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.status("detect"), "fail");
    assert!(
        run.message("detect").contains("connection refused"),
        "{:#}",
        run.check("detect")
    );
    assert_eq!(run.status("imds_hop_limit"), "skip");
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_auth_service_fails_and_an_http_url_needs_allowing() {
    let server = mocks(CloudConfig::gcp()).await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/auth/iam/:jwtType");
    let run = doctor(&server, &[("S2IAM_JWT_SERVER_URL", &url)], &[]);
    assert_eq!(
        run.status("auth_service"),
        "fail",
        "{:#}",
        run.check("auth_service")
    );
    assert!(
        run.message("auth_service").contains("TCP"),
        "{:#}",
        run.check("auth_service")
    );
    let run = doctor(&server, &[("S2IAM_ALLOW_HTTP", "0")], &[]);
    assert_eq!(run.status("auth_service"), "fail");
    assert!(run.message("auth_service").contains("must use https"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_sidecar_sink_fails_without_showing_the_token() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = common::temp_dir("doctor");
    let expired = jwt_with_exp(1_000_000_000);
    std::fs::write(dir.join("api"), &expired).unwrap();
    let config = dir.join("s2iam.toml");
    std::fs::write(
        &config,
        format!(
            "[[token]]\ntype = \"api\"\nsink = \"{}\"\n",
            dir.join("api").display()
        ),
    )
    .unwrap();
    let run = doctor(&server, &[], &["--config", config.to_str().unwrap()]);
    let files = run.check("token_files");
    assert_eq!(files["status"], "fail", "{files:#}");
    assert!(run.message("token_files").contains("sink api"), "{files:#}");
    assert!(run.message("token_files").contains("EXPIRED"), "{files:#}");
    assert!(!run.json.to_string().contains(&expired));
    assert!(!run.json.to_string().contains("secret-subject"));
    assert_eq!(run.code, 1);
    std::fs::remove_dir_all(&dir).ok();
    server.shutdown().await;
}

fn jwt_with_exp(exp: u64) -> String {
    use base64::Engine as _;
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        enc.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        enc.encode(format!(
            r#"{{"iss":"https://issuer.example","exp":{exp},"sub":"secret-subject"}}"#
        ))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clock_ten_minutes_off_fails_and_two_minutes_warns() {
    // The cloud's clock (its Date headers and STS's signature check) 10 minutes
    // ahead of this machine's: this machine is 10 minutes behind.
    let server = mocks(CloudConfig::aws().with_clock_offset(600)).await;
    let run = doctor(&server, &[], &[]);
    let check = run.check("clock_skew");
    assert_eq!(check["status"], "fail", "{check:#}");
    let message = run.message("clock_skew");
    assert!(message.contains("s behind aws_"), "{check:#}");
    assert!(message.contains("SigV4"), "{check:#}");
    for source in ["skew.aws_imds", "skew.aws_sts"] {
        let skew: i64 = check["details"][source].as_str().unwrap().parse().unwrap();
        assert!((599..=601).contains(&skew), "{source}: {check:#}");
    }
    // The auth service's clock is right: it shows as such.
    assert_eq!(check["details"]["skew.auth_service"], "+0");
    assert!(check["fix"].as_str().unwrap().contains("chrony"));
    // s2iam measured the skew from STS and signs with the correction, as the SDKs do.
    let correction: i64 = check["details"]["aws_sigv4_correction"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((599..=601).contains(&correction), "{check:#}");
    assert!(message.contains("signs AWS requests"), "{check:#}");
    assert_eq!(run.code, 1);
    server.shutdown().await;

    // 20 minutes: STS refuses the first signature; the corrected retry works, so
    // the credentials pass while the clock still fails.
    let server = mocks(CloudConfig::aws().with_clock_offset(1200)).await;
    let run = doctor(&server, &[], &[]);
    assert_eq!(run.status("clock_skew"), "fail");
    assert_eq!(
        run.status("credentials"),
        "pass",
        "{:#}",
        run.check("credentials")
    );
    assert_eq!(run.code, 1);
    server.shutdown().await;

    // The cloud behind by two minutes: a warning, and AWS still works.
    let server = mocks(CloudConfig::aws().with_clock_offset(-120)).await;
    let run = doctor(&server, &[], &[]);
    assert_eq!(
        run.status("clock_skew"),
        "warn",
        "{:#}",
        run.check("clock_skew")
    );
    assert!(run.message("clock_skew").contains("s ahead of aws_"));
    assert_eq!(run.status("credentials"), "pass");
    assert_eq!(run.code, 0, "{:#}", run.json);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn irsa_names_its_source_and_token_and_a_hop_limit_only_warns() {
    let server = mocks(CloudConfig {
        aws: Some(AwsIdentity {
            imds_v1: false,
            ..AwsIdentity::default()
        }),
        ..CloudConfig::none()
    })
    .await;
    server
        .cloud_faults()
        .add(FaultRule::blackhole("/latest/api/token").method("PUT"));
    let dir = common::temp_dir("doctor-irsa");
    let token_path = dir.join("token");
    let token = server
        .cloud()
        .mint_eks_web_identity_token("system:serviceaccount:default:app")
        .unwrap();
    std::fs::write(&token_path, &token).unwrap();
    let role = "arn:aws:iam::123456789012:role/irsa-app";
    let run = doctor(
        &server,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.to_str().unwrap()),
            ("AWS_ROLE_ARN", role),
        ],
        &[],
    );
    assert_eq!(run.json["outcome"]["detected_by"], "environment");
    assert_eq!(
        run.status("token_files"),
        "pass",
        "{:#}",
        run.check("token_files")
    );
    assert!(run
        .message("token_files")
        .contains("AWS_WEB_IDENTITY_TOKEN_FILE"));
    assert!(run.message("token_files").contains("exp="));
    assert!(!run.json.to_string().contains(&token));
    assert!(!run.json.to_string().contains("system:serviceaccount"));
    assert!(
        run.message("credentials")
            .starts_with("web identity (IRSA)"),
        "{:#}",
        run.check("credentials")
    );
    assert_eq!(run.status("metadata"), "skip");
    assert_eq!(run.json["outcome"]["sub"], role);
    // The hop limit would stop the instance role, not IRSA: a warning.
    let hop = run.check("imds_hop_limit");
    assert_eq!(hop["status"], "warn", "{hop:#}");
    assert!(run.message("imds_hop_limit").contains("does not stop it"));
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(
        run.json["outcome"]["sub"],
        real_sub_with(
            &server,
            &[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.to_str().unwrap()),
                ("AWS_ROLE_ARN", role),
            ]
        )
    );
    std::fs::remove_dir_all(&dir).ok();
    server.shutdown().await;
}

fn real_sub_with(server: &TestServer, env: &[(&str, &str)]) -> String {
    let out = s2iam_cmd(server)
        .envs(env.iter().copied())
        .args(["--jwt-type", "api", "--print-sub"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// A TLS terminator in front of `upstream` with a self-signed certificate no
/// client trusts: its https URL.
async fn untrusted_https_front(upstream: std::net::SocketAddr) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let addr = tls_front::tls_front(cert.der().clone(), &key, upstream).await;
    format!("https://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_tls_certificate_fails_the_handshake() {
    let server = mocks(CloudConfig::gcp()).await;
    let front = untrusted_https_front(server.auth_addr()).await;
    let url = format!("{front}/auth/iam/:jwtType");
    let run = doctor(&server, &[("S2IAM_JWT_SERVER_URL", &url)], &[]);
    let check = run.check("auth_service");
    assert_eq!(check["status"], "fail", "{check:#}");
    assert!(
        run.message("auth_service")
            .starts_with("TLS handshake failed"),
        "{check:#}"
    );
    assert!(check["fix"].as_str().unwrap().contains("CA"), "{check:#}");
    assert_eq!(run.code, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stray_aws_variable_on_gcp_warns_at_detection() {
    let server = mocks(CloudConfig::gcp()).await;
    let run = doctor(&server, &[("AWS_REGION", "us-east-1")], &[]);
    let check = run.check("detect");
    assert_eq!(check["status"], "warn", "{check:#}");
    assert!(
        run.message("detect").contains("AWS_REGION is set"),
        "{check:#}"
    );
    assert!(
        check["fix"].as_str().unwrap().contains("--provider gcp"),
        "{check:#}"
    );
    // The client would indeed take AWS and find no AWS credentials.
    assert_eq!(run.json["outcome"]["provider"], "aws");
    assert_eq!(
        run.status("credentials"),
        "fail",
        "{:#}",
        run.check("credentials")
    );
    assert_eq!(run.code, 1);
    // --force-detect, as the client: GCP, and everything passes.
    let run = doctor(&server, &[("AWS_REGION", "us-east-1")], &["--force-detect"]);
    assert_eq!(run.json["outcome"]["provider"], "gcp");
    assert_eq!(run.status("detect"), "pass");
    assert_eq!(run.code, 0, "{:#}", run.json);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_identity_format_preference_changes_the_predicted_sub_as_it_changes_the_issued_one() {
    let server = mocks(CloudConfig::aws()).await;
    for (preference, format) in [
        ("aws-arn", "aws-arn"),
        ("aws-role-id,aws-arn", "aws-role-id"),
        ("gcp-sa-email", "aws-arn"),
    ] {
        let run = doctor(&server, &[], &["--identity-format-preference", preference]);
        assert_eq!(
            run.json["outcome"]["identity_format"], format,
            "{preference}"
        );
        let out = s2iam_cmd(&server)
            .args([
                "--jwt-type",
                "api",
                "--print-sub",
                "--identity-format-preference",
                preference,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let issued = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(run.json["outcome"]["sub"], issued, "{preference}");
        let record = server.auth().records().pop().unwrap();
        assert_eq!(
            record.identity.unwrap().identity_format,
            format,
            "{preference}"
        );
    }
    // The environment variable works as for a token request.
    let run = doctor(
        &server,
        &[("S2IAM_IDENTITY_FORMAT_PREFERENCE", "aws-arn")],
        &[],
    );
    assert_eq!(run.json["outcome"]["identity_format"], "aws-arn");
    assert!(run.json["outcome"]["sub"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:sts::123456789012:assumed-role/s2iam-test-role/"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn google_federation_names_its_credential_file_and_subject_token() {
    use common::google;
    let server = mocks(CloudConfig::none()).await;
    let dir = common::temp_dir("doctor-wif");
    let subject = server
        .cloud()
        .mint_federation_subject_token("system:serviceaccount:default:app")
        .unwrap();
    let subject_path = dir.join("subject");
    std::fs::write(&subject_path, &subject).unwrap();
    let file = google::external_account(
        &server,
        &google::oidc_audience(&server),
        google::JWT,
        serde_json::json!({ "file": subject_path }),
        true,
    );
    let path = google::write_json(&dir, "wif.json", &file);
    let env = [("GOOGLE_APPLICATION_CREDENTIALS", path.to_str().unwrap())];
    let run = doctor(&server, &env, &[]);
    assert_eq!(run.code, 0, "{:#}", run.json);
    assert_eq!(run.json["outcome"]["provider"], "gcp");
    assert_eq!(run.json["outcome"]["detected_by"], "environment");
    let files = run.message("token_files");
    assert!(files.contains("type=external_account"), "{files}");
    assert!(files.contains("credential_source.file"), "{files}");
    assert!(files.contains("exp="), "{files}");
    assert!(!run.json.to_string().contains(&subject));
    assert!(
        run.message("credentials")
            .starts_with("external_account (file) from GOOGLE_APPLICATION_CREDENTIALS="),
        "{:#}",
        run.check("credentials")
    );
    assert_eq!(
        run.status("metadata"),
        "skip",
        "{:#}",
        run.check("metadata")
    );
    assert_eq!(run.json["outcome"]["identity_format"], "gcp-sa-email");
    assert_eq!(
        run.json["outcome"]["sub"],
        google::federated_account().email.as_str()
    );
    assert_eq!(run.json["outcome"]["sub"], real_sub_with(&server, &env));
    std::fs::remove_dir_all(&dir).ok();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_config_profile_chain_is_named_in_full() {
    let server = mocks(CloudConfig::aws()).await;
    let dir = common::temp_dir("doctor-profile");
    let user = server.cloud().user_key();
    let role = "arn:aws:iam::123456789012:role/profile-app";
    std::fs::write(
        dir.join("config"),
        format!("[profile app]\nrole_arn = {role}\nsource_profile = base\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("credentials"),
        format!(
            "[base]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            user.access_key_id, user.secret_access_key
        ),
    )
    .unwrap();
    let run = doctor(
        &server,
        &[
            ("AWS_PROFILE", "app"),
            ("AWS_CONFIG_FILE", dir.join("config").to_str().unwrap()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("credentials").to_str().unwrap(),
            ),
        ],
        &[],
    );
    assert_eq!(
        run.status("credentials"),
        "pass",
        "{:#}",
        run.check("credentials")
    );
    let message = run.message("credentials");
    assert!(
        message.contains("profile `app`") && message.contains("source_profile `base`"),
        "{message}"
    );
    assert!(!run.json.to_string().contains(&user.secret_access_key));
    assert_eq!(run.json["outcome"]["sub"], role);
    assert_eq!(run.code, 0, "{:#}", run.json);
    server.shutdown().await;
}

/// Issue 23 (5): every prediction passes while the auth service refuses the
/// identity; only `--exchange` (opt-in: one real request) finds the 401. On
/// success it shows the issued `sub`, never the token.
#[tokio::test(flavor = "multi_thread")]
async fn exchange_finds_a_refused_identity_and_never_prints_the_token() {
    let server = mocks(CloudConfig::aws()).await;
    server.auth().update(|c| c.fail_verification = true);
    let run = doctor(&server, &[], &[]);
    assert_eq!(
        run.code, 0,
        "without --exchange nothing exchanges: {:#}",
        run.json
    );
    assert!(server.auth().records().is_empty());

    let run = doctor(&server, &[], &["--exchange"]);
    assert_eq!(run.code, 1, "{:#}", run.json);
    assert_eq!(run.status("exchange"), "fail");
    assert!(
        run.message("exchange").contains("401"),
        "{}",
        run.message("exchange")
    );
    let fix = run.check("exchange")["fix"].as_str().unwrap();
    assert!(
        fix.contains("arn:aws:iam::123456789012:role/s2iam-test-role"),
        "{fix}"
    );

    server.auth().update(|c| c.fail_verification = false);
    let mut cmd = s2iam_cmd(&server);
    cmd.args([
        "doctor",
        "--timeout",
        "3s",
        "--exchange",
        "--workspace-group-id",
        "wg-doc",
    ]);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("PASS  exchange"), "{text}");
    assert!(text.contains("a database JWT for wg-doc"), "{text}");
    assert!(
        !text.contains("eyJ") && !String::from_utf8_lossy(&out.stderr).contains("eyJ"),
        "{text}"
    );
    let records = server.auth().records();
    assert_eq!(records.last().map(|r| r.status), Some(200));
    server.shutdown().await;
}
