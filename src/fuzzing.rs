//! Entry points for the `fuzz/` crate (built only with the `fuzzing` feature,
//! through `s2iam_sidecar::fuzzing`, which adds the sidecar's parsers): one
//! function per family of the library's parsers that read untrusted bytes —
//! durations, cloud metadata answers, STS XML, the auth service's answer, JWT
//! claims, container credentials and session-policy rules.
//!
//! Each function feeds its input to every parser of the family and ignores the
//! result: a fuzz target fails only on a panic, a hang or an out-of-memory, and a
//! few functions also assert invariants the rest of the program relies on. The
//! parsers stay private to their modules; this module is the one place that sees
//! them all.

// Fuzz entry points need a "now", any will do: the real clock, not injected.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, SystemTime};

use crate::provider::aws::chain::{container, imds as instance_role, shared_config};
use crate::provider::aws::sts;
use crate::util::{parse_duration, MAX_DURATION};

/// Lossy UTF-8, as every parser here takes text.
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A duration as `--timeout` and the config file take it (the sidecar adds `?expires=`). Whatever is
/// accepted is within [`MAX_DURATION`].
pub fn duration(data: &[u8]) {
    let input = text(data);
    if let Ok(d) = parse_duration(&input) {
        assert!(d <= MAX_DURATION, "{input:?} gave {d:?}");
        assert!(
            SystemTime::now().checked_add(d).is_some(),
            "{input:?} overflows the clock"
        );
    }
    let _ = crate::util::parse_rfc3339(&input);
    let _ = crate::provider::aws::keys::parse_time(&input);
    let _ = crate::http::fetch::parse_retry_after(&input, SystemTime::now());
}

/// Answers of the metadata services and cloud token endpoints (GCP, Azure, AWS
/// IMDS role credentials), and the AWS shared config and `credential_process` output.
pub fn metadata_response(data: &[u8]) {
    let body = text(data);
    crate::provider::gcp::fuzz_responses(&body);
    crate::provider::azure::fuzz_responses(&body);
    let _ = instance_role::parse("role", &body);
    let _ = shared_config::parse_ini(&body);
    let _ = shared_config::process::parse(data, std::time::SystemTime::UNIX_EPOCH);
}

/// An STS answer: AssumeRole, AssumeRoleWithWebIdentity, GetCallerIdentity, or an
/// error document.
pub fn sts_xml(data: &[u8]) {
    let xml = text(data);
    for result in ["AssumeRoleResult", "AssumeRoleWithWebIdentityResult"] {
        let _ = sts::parse_assumed(&xml, result, "AssumeRole");
    }
    let _ = sts::parse_credentials(&xml, "GetSessionToken");
    if let Some(error) = sts::xml::tag(&xml, "Error") {
        let _ = sts::xml::tag(&error, "Code");
        let _ = sts::xml::tag(&error, "Message");
    }
    let _ = sts::xml::tag(&xml, "Arn");
}

/// The auth service's answer to an exchange (HTTP 200 body). A token it accepts
/// has not expired and its deadline is representable.
pub fn exchange_response(data: &[u8]) {
    let now = SystemTime::now();
    if let Ok(token) =
        crate::exchange::response::parse_success(data, now, Duration::from_secs(3600))
    {
        assert!(token.expires_at > now);
        let _ = token.remaining();
        let _ = format!("{token:?}");
    }
}

/// A JWT as the auth service or a cloud returns it (claims read unverified).
pub fn jwt_claims(data: &[u8]) {
    let jwt = text(data);
    let _ = crate::token::Claims::decode_checked(&jwt);
    let _ = crate::provider::jwt::jwt_claims(&jwt);
    let _ = crate::token::Token::new(
        crate::Secret::new(jwt),
        crate::util::time_after(SystemTime::UNIX_EPOCH, Duration::from_secs(8_589_934_590)),
        SystemTime::now(),
        None,
    );
}

/// The ECS/EKS container-credentials endpoint's answer and its URI setting.
pub fn container_credentials(data: &[u8]) {
    let body = text(data);
    let _ = container::parse("http://127.0.0.1/creds", &body);
    let _ = container::error_message(&body);
    let _ = container::check_full_uri(&body);
}

/// Session-policy rules as written in `[[aws_profile.session_policy]]`, and a
/// caller's bucket and key checked against them. Lines: `bucket patterns`,
/// `prefixes`, `actions` (space-separated), then the bucket and key asked for.
pub fn session_policy(data: &[u8]) {
    use crate::aws_vending::policy;
    let input = text(data);
    let mut lines = input.lines();
    let mut words = || -> Vec<String> {
        lines
            .next()
            .unwrap_or("")
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect()
    };
    let (buckets, prefixes, actions) = (words(), words(), words());
    let asked = words();
    let Ok(actions) = policy::parse_actions(&actions) else {
        return;
    };
    let rule = policy::PolicyRule {
        buckets,
        prefixes,
        actions,
    };
    let valid = rule.validate().is_ok();
    let rules = [rule];
    if valid {
        if let Some(doc) = policy::session_policy(&rules, "aws") {
            let parsed = serde_json::from_str::<serde_json::Value>(&doc);
            assert!(
                parsed.as_ref().is_ok_and(serde_json::Value::is_object),
                "the session policy is not a JSON object: {doc}"
            );
        }
    }
    let bucket = asked.first().map(String::as_str).unwrap_or("");
    let key = asked.get(1).map(String::as_str);
    let _ = policy::validate_bucket_name(bucket);
    if let Some(k) = key {
        let _ = policy::validate_key(k);
    }
    for action in policy::S3Action::ALL {
        let _ = policy::allowed(&rules, action, bucket, key);
    }
}
