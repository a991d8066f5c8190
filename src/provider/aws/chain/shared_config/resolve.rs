//! From a profile name to a plan: where the first credentials come from (the
//! base) and the roles assumed on top of them, outermost last. No I/O: the plan
//! is what `s2iam detect` prints and what [`super::SharedConfig`] runs.
//!
//! The rules are aws-config's and botocore's:
//! - a profile with `role_arn` assumes it with the credentials of its
//!   `source_profile` (followed to any depth) or of its `credential_source`
//!   (`Environment`, `Ec2InstanceMetadata`, `EcsContainer`); both at once is an
//!   error; with `web_identity_token_file` the role is assumed with that token;
//! - after the first profile, a profile's static keys win over its own
//!   `role_arn` (it is a source, not a role to assume again); a profile may name
//!   itself as `source_profile` only when it has static keys;
//! - a profile without `role_arn` gives credentials itself: `web_identity_token_file`
//!   (needs `role_arn`), SSO, `credential_process`, `login_session`, else static
//!   keys;
//! - a `source_profile` seen twice is a cycle, reported with the whole loop.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use super::files::{ProfileSet, Section};

/// `credential_source` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedSource {
    /// `Environment`: `AWS_ACCESS_KEY_ID` and friends.
    Environment,
    /// `Ec2InstanceMetadata`: the instance role from IMDS.
    Ec2InstanceMetadata,
    /// `EcsContainer`: ECS / EKS Pod Identity container credentials.
    EcsContainer,
}

impl NamedSource {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "Environment" => Some(Self::Environment),
            "Ec2InstanceMetadata" => Some(Self::Ec2InstanceMetadata),
            "EcsContainer" => Some(Self::EcsContainer),
            _ => None,
        }
    }

    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "Environment",
            Self::Ec2InstanceMetadata => "Ec2InstanceMetadata",
            Self::EcsContainer => "EcsContainer",
        }
    }
}

/// Where a plan's first credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `aws_access_key_id` + `aws_secret_access_key` (+ `aws_session_token`) of
    /// the named profile. Only the profile name is kept: the keys are read again
    /// when the plan runs, so a plan never holds a secret.
    Static {
        /// The profile holding the keys.
        profile: String,
    },
    /// `credential_process` of the named profile.
    Process {
        /// The profile.
        profile: String,
        /// The command line, as written.
        command: String,
    },
    /// `role_arn` assumed with the token in `web_identity_token_file`.
    WebIdentity {
        /// The profile.
        profile: String,
        /// The token file.
        token_file: PathBuf,
        /// The role.
        role: RoleHop,
    },
    /// A `credential_source` of the named profile.
    Named {
        /// The profile.
        profile: String,
        /// Which source.
        source: NamedSource,
    },
}

/// One `AssumeRole` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleHop {
    /// The profile that names the role.
    pub profile: String,
    /// `role_arn`.
    pub role_arn: String,
    /// `role_session_name`, if set.
    pub session_name: Option<String>,
    /// `external_id`, if set.
    pub external_id: Option<String>,
    /// `duration_seconds`, if set.
    pub duration_seconds: Option<u32>,
}

/// What to run for a profile: the base, then each role in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The profile asked for.
    pub profile: String,
    /// The first credentials.
    pub base: Base,
    /// Roles assumed on top of the base, innermost first.
    pub hops: Vec<RoleHop>,
    /// The asked-for profile's `region`, if any.
    pub region: Option<String>,
}

impl fmt::Display for Plan {
    /// "shared config profile `dev` (assume role via source_profile `base`:
    /// static keys)", the text `detect` and `identity` print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shared config profile `{}` (", self.profile)?;
        // Outermost role first, as a reader follows the file from the profile.
        for (i, hop) in self.hops.iter().enumerate().rev() {
            let inner = i.checked_sub(1).and_then(|j| self.hops.get(j));
            let via = match (inner, &self.base) {
                (Some(inner), _) => format!("source_profile `{}`", inner.profile),
                (None, Base::Named { source, .. }) => {
                    format!("credential_source {}", source.as_str())
                }
                (None, base) if base.profile() == hop.profile => "its own keys".to_string(),
                (None, base) => format!("source_profile `{}`", base.profile()),
            };
            write!(f, "assume role {} via {via}; ", hop.role_arn)?;
        }
        match &self.base {
            Base::Static { profile } => write!(f, "static keys of `{profile}`")?,
            Base::Process { profile, .. } => write!(f, "credential_process of `{profile}`")?,
            Base::WebIdentity { role, .. } => {
                write!(f, "web identity token file, assume role {}", role.role_arn)?
            }
            Base::Named { source, .. } => {
                let what = match source {
                    NamedSource::Environment => "environment keys",
                    NamedSource::Ec2InstanceMetadata => "instance metadata (IMDS) role",
                    NamedSource::EcsContainer => "container credentials",
                };
                write!(f, "{what}")?
            }
        }
        f.write_str(")")
    }
}

impl Base {
    /// The profile that supplies the base credentials.
    pub fn profile(&self) -> &str {
        match self {
            Self::Static { profile }
            | Self::Process { profile, .. }
            | Self::WebIdentity { profile, .. }
            | Self::Named { profile, .. } => profile,
        }
    }
}

/// Why a profile cannot be planned. Messages name the profile and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The profile does not exist.
    #[error("{wanted_by} names profile `{profile}`, but {files} have no such profile")]
    NoProfile {
        /// The missing profile.
        profile: String,
        /// Who asked for it (`AWS_PROFILE`, or `source_profile` of another profile).
        wanted_by: String,
        /// The files looked in.
        files: String,
    },
    /// `source_profile` goes round in a circle.
    #[error("source_profile cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A key has a value s2iam does not accept.
    #[error("profile `{profile}`: {key} {problem}")]
    Invalid {
        /// The profile.
        profile: String,
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// `mfa_serial` on a role s2iam would assume.
    #[error(
        "profile `{profile}` sets mfa_serial: s2iam runs unattended and cannot prompt for an MFA \
         code. Use a role whose trust policy does not require MFA, or a credential_process that \
         caches an MFA session"
    )]
    Mfa {
        /// The profile.
        profile: String,
    },
    /// A login kind only the AWS SDK resolves (SSO, `aws login`).
    #[error(
        "profile `{profile}` uses {kind}, which s2iam does not resolve natively. Build s2iam with \
         `--features aws-config` to resolve it through the AWS SDK, or set \
         `credential_process = aws configure export-credentials --profile {profile} --format process` \
         in another profile and use that one"
    )]
    NeedsSdk {
        /// The profile.
        profile: String,
        /// What it uses (`sso_session`, `sso_start_url`, `login_session`).
        kind: &'static str,
    },
    /// The profile has no way to get credentials.
    #[error(
        "profile `{profile}` has no credentials: expected role_arn (with source_profile, \
         credential_source or web_identity_token_file), credential_process, or \
         aws_access_key_id and aws_secret_access_key"
    )]
    NoCredentials {
        /// The profile.
        profile: String,
    },
}

impl ResolveError {
    /// A profile kind only the AWS SDK's chain resolves.
    pub fn needs_sdk(&self) -> bool {
        matches!(self, Self::NeedsSdk { .. })
    }
}

/// The plan for `profile`; `wanted_by` says who named it, for the message when it
/// does not exist.
pub fn plan(set: &ProfileSet, profile: &str, wanted_by: &str) -> Result<Plan, ResolveError> {
    let mut visited: Vec<String> = Vec::new();
    let mut hops: Vec<RoleHop> = Vec::new();
    let mut name = profile.to_string();
    let mut wanted = wanted_by.to_string();
    let base = loop {
        let keys = set
            .profiles
            .get(&name)
            .ok_or_else(|| ResolveError::NoProfile {
                profile: name.clone(),
                wanted_by: wanted.clone(),
                files: set.describe_files(),
            })?;
        if visited.contains(&name) {
            visited.push(name);
            return Err(ResolveError::Cycle(visited));
        }
        visited.push(name.clone());
        // A source profile's own keys win over its role_arn.
        if visited.len() > 1 && has_static_keys(keys) {
            break Base::Static { profile: name };
        }
        let Some(role_arn) = value(keys, "role_arn") else {
            break leaf(&name, keys)?;
        };
        let hop = role_hop(&name, keys, role_arn)?;
        if let Some(token_file) = value(keys, "web_identity_token_file") {
            break Base::WebIdentity {
                profile: name.clone(),
                token_file: PathBuf::from(token_file),
                role: hop,
            };
        }
        if value(keys, "mfa_serial").is_some() {
            return Err(ResolveError::Mfa { profile: name });
        }
        match (
            value(keys, "source_profile"),
            value(keys, "credential_source"),
        ) {
            (Some(_), Some(_)) => {
                return Err(ResolveError::Invalid {
                    profile: name,
                    key: "source_profile",
                    problem: "and credential_source are both set; set only one".into(),
                })
            }
            (Some(source), None) if source == name => {
                hops.push(hop);
                if !has_static_keys(keys) {
                    visited.push(name);
                    return Err(ResolveError::Cycle(visited));
                }
                break Base::Static { profile: name };
            }
            (Some(source), None) => {
                hops.push(hop);
                wanted = format!("source_profile of profile `{name}`");
                name = source.to_string();
            }
            (None, Some(source)) => {
                let source = NamedSource::parse(source).ok_or_else(|| ResolveError::Invalid {
                    profile: name.clone(),
                    key: "credential_source",
                    problem: format!(
                        "is {source:?}; expected Environment, Ec2InstanceMetadata or EcsContainer"
                    ),
                })?;
                hops.push(hop);
                break Base::Named {
                    profile: name,
                    source,
                };
            }
            (None, None) => {
                return Err(ResolveError::Invalid {
                    profile: name,
                    key: "role_arn",
                    problem: "is set without source_profile, credential_source or \
                              web_identity_token_file: nothing to assume it with"
                        .into(),
                })
            }
        }
    };
    hops.reverse();
    let region = set
        .profiles
        .get(profile)
        .and_then(|p| value(p, "region"))
        .map(str::to_string);
    Ok(Plan {
        profile: profile.to_string(),
        base,
        hops,
        region,
    })
}

/// A profile that gives credentials itself (no `role_arn`).
fn leaf(name: &str, keys: &Section) -> Result<Base, ResolveError> {
    if value(keys, "web_identity_token_file").is_some() {
        return Err(ResolveError::Invalid {
            profile: name.to_string(),
            key: "web_identity_token_file",
            problem: "is set without role_arn".into(),
        });
    }
    for kind in ["sso_session", "sso_start_url", "login_session"] {
        if value(keys, kind).is_some() {
            return Err(ResolveError::NeedsSdk {
                profile: name.to_string(),
                kind,
            });
        }
    }
    if let Some(command) = value(keys, "credential_process") {
        return Ok(Base::Process {
            profile: name.to_string(),
            command: command.to_string(),
        });
    }
    if has_static_keys(keys) {
        return Ok(Base::Static {
            profile: name.to_string(),
        });
    }
    if value(keys, "aws_access_key_id").is_some() {
        return Err(ResolveError::Invalid {
            profile: name.to_string(),
            key: "aws_secret_access_key",
            problem: "is missing (aws_access_key_id is set)".into(),
        });
    }
    Err(ResolveError::NoCredentials {
        profile: name.to_string(),
    })
}

fn role_hop(name: &str, keys: &Section, role_arn: &str) -> Result<RoleHop, ResolveError> {
    let invalid = |key: &'static str, problem: String| ResolveError::Invalid {
        profile: name.to_string(),
        key,
        problem,
    };
    crate::provider::aws::validate_role_arn(role_arn).map_err(|reason| {
        invalid(
            "role_arn",
            format!("{role_arn:?} is not a role ARN: {reason}"),
        )
    })?;
    let duration_seconds = match value(keys, "duration_seconds") {
        None => None,
        Some(text) => Some(
            text.parse::<u32>()
                .ok()
                .filter(|d| (900..=43_200).contains(d))
                .ok_or_else(|| {
                    invalid(
                        "duration_seconds",
                        format!("is {text:?}; expected whole seconds from 900 to 43200"),
                    )
                })?,
        ),
    };
    let session_name = value(keys, "role_session_name").map(str::to_string);
    if let Some(s) = &session_name {
        let ok = (2..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
        if !ok {
            return Err(invalid(
                "role_session_name",
                format!("is {s:?}; expected 2 to 64 of the characters [A-Za-z0-9_+=,.@-]"),
            ));
        }
    }
    Ok(RoleHop {
        profile: name.to_string(),
        role_arn: role_arn.to_string(),
        session_name,
        external_id: value(keys, "external_id").map(str::to_string),
        duration_seconds,
    })
}

/// Both static keys present and non-empty.
pub fn has_static_keys(keys: &Section) -> bool {
    value(keys, "aws_access_key_id").is_some() && value(keys, "aws_secret_access_key").is_some()
}

/// A key's value when present and not empty.
pub fn value<'a>(keys: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    keys.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::aws::chain::shared_config::files::merge;

    const ROLE: &str = "arn:aws:iam::123456789012:role/";

    fn set(config: &str) -> ProfileSet {
        merge(
            &config.replace("ROLE", ROLE),
            "[keys]\naws_access_key_id = AKIA\naws_secret_access_key = s\n",
        )
    }

    #[test]
    fn source_profile_chain_of_depth_three() {
        let s = set(
            "[profile a]\nrole_arn = ROLEa\nsource_profile = b\nexternal_id = ext-1\n\
             duration_seconds = 1800\nrole_session_name = me\nregion = eu-west-1\n\
             [profile b]\nrole_arn = ROLEb\nsource_profile = c\n\
             [profile c]\nrole_arn = ROLEc\nsource_profile = keys\n\
             [profile keys]\nrole_arn = ROLEignored\nsource_profile = a\n",
        );
        let p = plan(&s, "a", "AWS_PROFILE").unwrap();
        assert_eq!(
            p.base,
            Base::Static {
                profile: "keys".into()
            }
        );
        let roles: Vec<_> = p.hops.iter().map(|h| h.role_arn.as_str()).collect();
        assert_eq!(
            roles,
            [format!("{ROLE}c"), format!("{ROLE}b"), format!("{ROLE}a")]
        );
        let outer = p.hops.last().unwrap();
        assert_eq!(outer.external_id.as_deref(), Some("ext-1"));
        assert_eq!(outer.duration_seconds, Some(1800));
        assert_eq!(outer.session_name.as_deref(), Some("me"));
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));
        let shown = p.to_string();
        assert!(
            shown.starts_with(&format!(
                "shared config profile `a` (assume role {ROLE}a via source_profile `b`; "
            )),
            "{shown}"
        );
        assert!(
            shown.ends_with("via source_profile `keys`; static keys of `keys`)"),
            "{shown}"
        );
    }

    #[test]
    fn cycles_are_named() {
        let s = set("[profile a]\nrole_arn = ROLEa\nsource_profile = b\n\
             [profile b]\nrole_arn = ROLEb\nsource_profile = c\n\
             [profile c]\nrole_arn = ROLEc\nsource_profile = a\n\
             [profile self]\nrole_arn = ROLEs\nsource_profile = self\n");
        let e = plan(&s, "a", "AWS_PROFILE").unwrap_err();
        assert_eq!(e.to_string(), "source_profile cycle: a -> b -> c -> a");
        let e = plan(&s, "self", "AWS_PROFILE").unwrap_err();
        assert_eq!(e.to_string(), "source_profile cycle: self -> self");
    }

    #[test]
    fn self_reference_with_keys_uses_them() {
        let s = merge(
            "",
            &format!("[me]\nrole_arn = {ROLE}r\nsource_profile = me\naws_access_key_id = A\naws_secret_access_key = s\n"),
        );
        let p = plan(&s, "me", "AWS_PROFILE").unwrap();
        assert_eq!(
            p.base,
            Base::Static {
                profile: "me".into()
            }
        );
        assert_eq!(p.hops.len(), 1);
        assert!(p.to_string().contains("via its own keys"), "{p}");
    }

    #[test]
    fn credential_sources_and_web_identity() {
        let s = set("[profile e]\nrole_arn = ROLEe\ncredential_source = Ec2InstanceMetadata\n\
             [profile env]\nrole_arn = ROLEe\ncredential_source = Environment\n\
             [profile ecs]\nrole_arn = ROLEe\ncredential_source = EcsContainer\n\
             [profile bad]\nrole_arn = ROLEe\ncredential_source = Moon\n\
             [profile both]\nrole_arn = ROLEe\ncredential_source = Environment\nsource_profile = keys\n\
             [profile w]\nrole_arn = ROLEw\nweb_identity_token_file = /t\n\
             [profile w2]\nweb_identity_token_file = /t\n");
        let p = plan(&s, "e", "AWS_PROFILE").unwrap();
        assert!(matches!(
            p.base,
            Base::Named {
                source: NamedSource::Ec2InstanceMetadata,
                ..
            }
        ));
        assert!(
            p.to_string()
                .contains("via credential_source Ec2InstanceMetadata; instance metadata"),
            "{p}"
        );
        assert!(matches!(
            plan(&s, "env", "x").unwrap().base,
            Base::Named {
                source: NamedSource::Environment,
                ..
            }
        ));
        assert!(matches!(
            plan(&s, "ecs", "x").unwrap().base,
            Base::Named {
                source: NamedSource::EcsContainer,
                ..
            }
        ));
        let e = plan(&s, "bad", "x").unwrap_err().to_string();
        assert!(e.contains("credential_source is \"Moon\""), "{e}");
        let e = plan(&s, "both", "x").unwrap_err().to_string();
        assert!(e.contains("credential_source are both set"), "{e}");
        let p = plan(&s, "w", "x").unwrap();
        assert!(
            matches!(&p.base, Base::WebIdentity { token_file, .. } if token_file == &PathBuf::from("/t"))
        );
        assert!(p.hops.is_empty());
        let e = plan(&s, "w2", "x").unwrap_err().to_string();
        assert!(e.contains("without role_arn"), "{e}");
    }

    #[test]
    fn refusals_and_missing_profiles() {
        let s = set("[profile mfa]\nrole_arn = ROLEm\nsource_profile = keys\nmfa_serial = arn:aws:iam::1:mfa/u\n\
             [profile sso]\nsso_session = corp\nsso_account_id = 1\n\
             [profile legacy]\nsso_start_url = https://x\n\
             [profile login]\nlogin_session = arn:aws:iam::123456789012:user/u\n\
             [profile empty]\nregion = x\n\
             [profile half]\naws_access_key_id = A\n\
             [profile dangling]\nrole_arn = ROLEd\nsource_profile = nope\n\
             [profile lonely]\nrole_arn = ROLEl\n\
             [profile dur]\nrole_arn = ROLEd\nsource_profile = keys\nduration_seconds = 60\n\
             [profile arn]\nrole_arn = my-role\nsource_profile = keys\n\
             [profile session]\nrole_arn = ROLEd\nsource_profile = keys\nrole_session_name = a b\n\
             [profile via-sso]\nrole_arn = ROLEd\nsource_profile = sso\n");
        let e = plan(&s, "mfa", "x").unwrap_err();
        assert!(e.to_string().contains("mfa_serial"), "{e}");
        for (p, kind) in [
            ("sso", "sso_session"),
            ("legacy", "sso_start_url"),
            ("login", "login_session"),
            ("via-sso", "sso_session"),
        ] {
            let e = plan(&s, p, "x").unwrap_err();
            assert!(e.needs_sdk(), "{p}: {e}");
            let t = e.to_string();
            assert!(
                t.contains(kind) && t.contains("--features aws-config"),
                "{t}"
            );
        }
        assert!(matches!(
            plan(&s, "empty", "x"),
            Err(ResolveError::NoCredentials { .. })
        ));
        assert!(plan(&s, "half", "x")
            .unwrap_err()
            .to_string()
            .contains("aws_secret_access_key is missing"));
        let e = plan(&s, "dangling", "AWS_PROFILE").unwrap_err().to_string();
        assert!(
            e.starts_with("source_profile of profile `dangling` names profile `nope`"),
            "{e}"
        );
        let e = plan(&s, "ghost", "AWS_PROFILE").unwrap_err().to_string();
        assert!(e.starts_with("AWS_PROFILE names profile `ghost`"), "{e}");
        assert!(plan(&s, "lonely", "x")
            .unwrap_err()
            .to_string()
            .contains("nothing to assume it with"));
        assert!(plan(&s, "dur", "x")
            .unwrap_err()
            .to_string()
            .contains("duration_seconds is \"60\""));
        assert!(plan(&s, "arn", "x")
            .unwrap_err()
            .to_string()
            .contains("not a role ARN"));
        assert!(plan(&s, "session", "x")
            .unwrap_err()
            .to_string()
            .contains("role_session_name"));
    }

    #[test]
    fn process_profile() {
        let s = set("[profile p]\ncredential_process = /bin/get-creds --json\n\
             [profile r]\nrole_arn = ROLEr\nsource_profile = p\n");
        let p = plan(&s, "r", "x").unwrap();
        assert_eq!(
            p.base,
            Base::Process {
                profile: "p".into(),
                command: "/bin/get-creds --json".into()
            }
        );
        assert!(p.to_string().ends_with("credential_process of `p`)"), "{p}");
    }
}
