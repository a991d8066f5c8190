//! `[aws]` and `[[aws_profile]]`: each profile's source, role, session name,
//! duration, external id and session-policy rules checked against what STS
//! accepts, so a bad profile fails at start rather than on the first request.

use std::time::Duration;

use super::file::{FileAws, FileAwsProfile};
use super::value::{duration, mode};
use super::{invalid, ConfigError};
use s2iam::aws_vending::{AwsProfile, AwsSettings, PolicyRule, ProfileSource};
use s2iam::provider::{CloudProvider, DEFAULT_ROLE_SESSION_NAME};
use s2iam::util::parse_duration;

pub(super) fn aws_settings(
    a: FileAws,
    profiles: Vec<FileAwsProfile>,
) -> Result<AwsSettings, ConfigError> {
    let d = AwsSettings::default();
    let min_remaining = duration(
        "aws.min_remaining",
        a.min_remaining.as_deref(),
        d.min_remaining,
        // Vended credentials live at most 12 h (STS).
        Duration::ZERO..=super::value::secs(6 * 3600),
    )?;
    if min_remaining < s2iam::aws_vending::MIN_REMAINING {
        return Err(invalid(
            "aws.min_remaining",
            "must be at least 5m: AWS SDKs refresh vended credentials only seconds before they expire",
        ));
    }
    if let Some(r) = &a.region {
        let ok = !r.is_empty()
            && r.len() <= 32
            && r.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(invalid(
                "aws.region",
                format!("{r:?} is not a region name like \"us-east-1\""),
            ));
        }
    }
    if let Some(e) = &a.s3_endpoint {
        let ok = url::Url::parse(e).ok().is_some_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && u.query().is_none()
        });
        if !ok {
            return Err(invalid(
                "aws.s3_endpoint",
                format!("{e:?} is not an http(s) URL without a query"),
            ));
        }
    }
    let mut out: Vec<AwsProfile> = Vec::new();
    for (i, p) in profiles.into_iter().enumerate() {
        let profile = aws_profile(i, p, min_remaining)?;
        if out.iter().any(|q| q.name == profile.name) {
            return Err(invalid(
                &format!("aws_profile[{i}].name"),
                format!("profile {:?} is defined twice", profile.name),
            ));
        }
        out.push(profile);
    }
    Ok(AwsSettings {
        authorization_token_file: a.authorization_token_file,
        authorization_token_mode: mode(
            "aws.authorization_token_mode",
            a.authorization_token_mode.as_deref(),
            d.authorization_token_mode,
        )?,
        region: a.region,
        s3_endpoint: a.s3_endpoint.map(|e| e.trim_end_matches('/').to_string()),
        s3_path_style: a.s3_path_style.unwrap_or(false),
        min_remaining,
        profiles: out,
    })
}

fn aws_profile(
    i: usize,
    p: FileAwsProfile,
    min_remaining: Duration,
) -> Result<AwsProfile, ConfigError> {
    let setting = |field: &str| format!("aws_profile[{i}].{field}");
    s2iam::aws_vending::validate_profile_name(&p.name).map_err(|e| invalid(&setting("name"), e))?;
    let named = |field: &str| format!("aws_profile[{i}] ({}).{field}", p.name);
    let needs_role = matches!(p.source.as_str(), "assume_role" | "web_identity");
    let only = |field: &str, present: bool, allowed: &[&str]| {
        if present && !allowed.contains(&p.source.as_str()) {
            Err(invalid(
                &named(field),
                format!(
                    "applies to source = {} only",
                    allowed
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ))
        } else {
            Ok(())
        }
    };
    only(
        "role_arn",
        p.role_arn.is_some(),
        &["assume_role", "web_identity"],
    )?;
    only(
        "session_name",
        p.session_name.is_some(),
        &["assume_role", "web_identity"],
    )?;
    only(
        "duration",
        p.duration.is_some(),
        &["assume_role", "web_identity"],
    )?;
    only("external_id", p.external_id.is_some(), &["assume_role"])?;
    only("provider", p.provider.is_some(), &["web_identity"])?;
    only("audience", p.audience.is_some(), &["web_identity"])?;
    if !p.session_policy.is_empty() && !needs_role {
        return Err(invalid(
            &named("session_policy"),
            "STS applies session policies only when assuming a role: use source = \"assume_role\" or \"web_identity\"",
        ));
    }
    let role_arn = if needs_role {
        let arn = p
            .role_arn
            .clone()
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| invalid(&named("role_arn"), "required for this source"))?;
        s2iam::provider::aws::validate_role_arn(&arn)
            .map_err(|e| invalid(&named("role_arn"), format!("{arn:?}: {e}")))?;
        arn.trim().to_string()
    } else {
        String::new()
    };
    let session_name = p
        .session_name
        .clone()
        .unwrap_or_else(|| DEFAULT_ROLE_SESSION_NAME.into());
    let name_ok = (2..=64).contains(&session_name.len())
        && session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if !name_ok {
        return Err(invalid(
            &named("session_name"),
            format!("{session_name:?}: 2-64 characters of A-Z, a-z, 0-9 and _+=,.@-"),
        ));
    }
    let duration_value = match &p.duration {
        Some(text) => {
            let d = parse_duration(text).map_err(|e| invalid(&named("duration"), e.to_string()))?;
            if !(900..=43_200).contains(&d.as_secs()) {
                return Err(invalid(
                    &named("duration"),
                    "must be between 15m and 12h (STS limits)",
                ));
            }
            if d <= min_remaining {
                return Err(invalid(
                    &named("duration"),
                    "must be longer than aws.min_remaining",
                ));
            }
            Some(d)
        }
        None => None,
    };
    if let Some(id) = &p.external_id {
        let ok = (2..=1224).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c));
        if !ok {
            return Err(invalid(
                &named("external_id"),
                "2-1224 characters of A-Z, a-z, 0-9 and _+=,.@:/-",
            ));
        }
    }
    let source = match p.source.as_str() {
        "self" => ProfileSource::Workload,
        "assume_role" => ProfileSource::AssumeRole {
            role_arn,
            session_name,
            duration: duration_value,
            external_id: p.external_id.clone(),
        },
        "web_identity" => {
            let provider = match p.provider.as_deref() {
                None => None,
                Some(text) => match text.parse::<CloudProvider>() {
                    Ok(k @ (CloudProvider::Gcp | CloudProvider::Azure)) => Some(k),
                    _ => {
                        return Err(invalid(
                            &named("provider"),
                            format!("{text:?}: web identity comes from gcp or azure"),
                        ))
                    }
                },
            };
            if p.audience.as_deref().is_some_and(|a| a.trim().is_empty()) {
                return Err(invalid(&named("audience"), "must not be empty"));
            }
            ProfileSource::WebIdentity {
                role_arn,
                session_name,
                duration: duration_value,
                provider,
                audience: p.audience.clone(),
            }
        }
        other => {
            return Err(invalid(
                &named("source"),
                format!("{other:?} is not self, assume_role or web_identity"),
            ))
        }
    };
    let mut rules = Vec::new();
    for (j, r) in p.session_policy.iter().enumerate() {
        let rule_setting = named(&format!("session_policy[{j}]"));
        let rule = PolicyRule {
            buckets: r.buckets.clone(),
            prefixes: r.prefixes.clone(),
            actions: s2iam::aws_vending::policy::parse_actions(&r.actions)
                .map_err(|e| invalid(&format!("{rule_setting}.actions"), e))?,
        };
        rule.validate().map_err(|e| {
            let (field, message) = e.split_once(": ").unwrap_or(("", e.as_str()));
            invalid(&format!("{rule_setting}.{field}"), message)
        })?;
        rules.push(rule);
    }
    let profile = AwsProfile {
        name: p.name.clone(),
        source,
        rules,
        warm: p.warm,
    };
    if let Some(policy) = profile.session_policy() {
        let chars = policy.chars().count();
        if chars > s2iam::aws_vending::policy::MAX_POLICY_CHARS {
            return Err(invalid(
                &named("session_policy"),
                format!(
                    "the generated policy has {chars} characters; STS accepts at most {}: use fewer buckets or prefixes",
                    s2iam::aws_vending::policy::MAX_POLICY_CHARS
                ),
            ));
        }
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::super::{ServeConfig, ServeOverrides};
    use super::*;
    use s2iam::env::Env;

    fn env() -> Env {
        Env::from_pairs::<&str, &str>([])
    }

    const AWS: &str = r#"
        [aws]
        authorization_token_file = "/tmp/aws-token"
        region = "eu-west-1"
        s3_endpoint = "http://127.0.0.1:9000/"
        s3_path_style = true
        [[aws_profile]]
        name = "analytics"
        source = "assume_role"
        role_arn = "arn:aws:iam::123456789012:role/data"
        duration = "1h"
        external_id = "ext-1"
        [[aws_profile.session_policy]]
        buckets = ["*-analytics-*"]
        actions = ["read", "list"]
        [[aws_profile]]
        name = "admin"
        source = "self"
        [[aws_profile]]
        name = "gcp-s3"
        source = "web_identity"
        role_arn = "arn:aws:iam::123456789012:role/from-gcp"
        provider = "gcp"
        audience = "sts.amazonaws.com"
    "#;

    #[test]
    fn aws_profiles_parse() {
        let c = ServeConfig::from_toml(AWS, &env(), &ServeOverrides::default()).unwrap();
        let aws = &c.aws;
        assert_eq!(aws.min_remaining, Duration::from_secs(300));
        assert_eq!(aws.authorization_token_mode, 0o640);
        assert_eq!(aws.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(aws.profiles.len(), 3);
        let a = aws.profile("analytics").unwrap();
        assert_eq!(
            a.source,
            ProfileSource::AssumeRole {
                role_arn: "arn:aws:iam::123456789012:role/data".into(),
                session_name: "s2iam-session".into(),
                duration: Some(Duration::from_secs(3600)),
                external_id: Some("ext-1".into()),
            }
        );
        assert!(a
            .session_policy()
            .unwrap()
            .contains("arn:aws:s3:::*-analytics-*/*"));
        assert_eq!(
            aws.profile("admin").unwrap().source,
            ProfileSource::Workload
        );
        assert!(aws.profile("admin").unwrap().session_policy().is_none());
        assert!(matches!(
            aws.profile("gcp-s3").unwrap().source,
            ProfileSource::WebIdentity {
                provider: Some(CloudProvider::Gcp),
                ..
            }
        ));
        let none = ServeConfig::from_toml("", &env(), &ServeOverrides::default()).unwrap();
        assert!(none.aws.profiles.is_empty());
    }

    #[test]
    fn bad_aws_settings_name_themselves() {
        let p = |body: &str| format!("[[aws_profile]]\nname = \"p\"\n{body}");
        let role = "role_arn = \"arn:aws:iam::123456789012:role/r\"\n";
        let cases = [
            ("[aws]\nmin_remaining = \"60s\"".to_string(), "aws.min_remaining"),
            ("[aws]\nregion = \"US East\"".to_string(), "aws.region"),
            ("[aws]\ns3_endpoint = \"ftp://x\"".to_string(), "aws.s3_endpoint"),
            ("[aws]\nauthorization_token_mode = \"9\"".to_string(), "aws.authorization_token_mode"),
            ("[aws]\ntoken = \"x\"".to_string(), "unknown field"),
            ("[[aws_profile]]\nname = \"a b\"\nsource = \"self\"".to_string(), "aws_profile[0].name"),
            (p("source = \"moon\""), "(p).source"),
            (p("source = \"assume_role\""), "(p).role_arn"),
            (p("source = \"assume_role\"\nrole_arn = \"arn:aws:iam::1:role/r\""), "(p).role_arn"),
            (p("source = \"self\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\""), "(p).role_arn"),
            (p(&format!("source = \"assume_role\"\n{role}duration = \"5m\"")), "(p).duration"),
            (p(&format!("source = \"assume_role\"\n{role}session_name = \"a b\"")), "(p).session_name"),
            (p(&format!("source = \"assume_role\"\n{role}provider = \"gcp\"")), "(p).provider"),
            (p(&format!("source = \"web_identity\"\n{role}provider = \"aws\"")), "(p).provider"),
            (p(&format!("source = \"web_identity\"\n{role}external_id = \"xx\"")), "(p).external_id"),
            (p("source = \"self\"\n[[aws_profile.session_policy]]\nbuckets = [\"b\"]\nactions = [\"read\"]"), "(p).session_policy"),
            (p(&format!("source = \"assume_role\"\n{role}[[aws_profile.session_policy]]\nbuckets = [\"B!\"]\nactions = [\"read\"]")), "session_policy[0].buckets"),
            (p(&format!("source = \"assume_role\"\n{role}[[aws_profile.session_policy]]\nbuckets = [\"b\"]\nactions = [\"fly\"]")), "session_policy[0].actions"),
            (p(&format!("source = \"assume_role\"\n{role}[[aws_profile.session_policy]]\nbuckets = [\"b\"]\nprefixes = [\"a*\"]\nactions = [\"read\"]")), "session_policy[0].prefixes"),
            (format!("{}\n{}", p("source = \"self\""), p("source = \"self\"")), "defined twice"),
        ];
        for (text, needle) in cases {
            let err =
                ServeConfig::from_toml(&text, &env(), &ServeOverrides::default()).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}\n=> {err}");
        }
    }

    #[test]
    fn oversized_session_policy_is_refused() {
        let buckets: Vec<String> = (0..60).map(|i| format!("\"bucket-number-{i}\"")).collect();
        let text = format!(
            "[[aws_profile]]\nname = \"big\"\nsource = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\n[[aws_profile.session_policy]]\nbuckets = [{}]\nactions = [\"all\"]",
            buckets.join(",")
        );
        let err = ServeConfig::from_toml(&text, &env(), &ServeOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("at most 2048"), "{err}");
    }
}
