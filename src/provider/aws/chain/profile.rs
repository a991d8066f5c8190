//! The shared credentials file: `AWS_SHARED_CREDENTIALS_FILE`, else
//! `$HOME/.aws/credentials`; profile `AWS_PROFILE`, else `default`. INI sections
//! `[name]` with `aws_access_key_id`, `aws_secret_access_key` and optional
//! `aws_session_token`; every other key is ignored. Only static keys are supported
//! (no `role_arn`/`source_profile`, SSO or `credential_process` profiles).

use std::collections::HashMap;
use std::path::PathBuf;

use super::{AwsCredentials, CredentialSource, ProvideCredentials, ProvideFuture, SourceError};
use crate::provider::ProviderConfig;
use crate::secret::Secret;

/// The shared-credentials-file source.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedCredentialsFile;

#[derive(Debug, Clone, thiserror::Error)]
/// Why the shared credentials file gave nothing.
pub enum ProfileError {
    #[error("neither AWS_SHARED_CREDENTIALS_FILE nor HOME is set")]
    /// No home directory and no `AWS_SHARED_CREDENTIALS_FILE`.
    NoPath,
    #[error("{path} does not exist")]
    /// The file does not exist: not configured.
    NoFile {
        /// The file.
        path: String,
    },
    #[error("cannot read {path}: {reason}")]
    /// The file exists but cannot be read.
    Unreadable {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    #[error("{path} has no [{profile}] profile")]
    /// The file has no `default` profile: not configured.
    NoDefaultProfile {
        /// The file.
        path: String,
        /// The profile.
        profile: String,
    },
    #[error("AWS_PROFILE={profile} but {path} has no [{profile}] profile")]
    /// `AWS_PROFILE` names a profile the file does not have.
    NoProfile {
        /// The file.
        path: String,
        /// The profile.
        profile: String,
    },
    #[error(
        "profile [{profile}] in {path} has no {missing} (only static keys are supported; \
         role_arn, sso and credential_process profiles are not)"
    )]
    /// The profile lacks a key.
    Incomplete {
        /// The file.
        path: String,
        /// The profile.
        profile: String,
        /// What is missing.
        missing: &'static str,
    },
}

impl SourceError for ProfileError {
    fn is_not_configured(&self) -> bool {
        matches!(
            self,
            Self::NoPath | Self::NoFile { .. } | Self::NoDefaultProfile { .. }
        )
    }
}

impl SharedCredentialsFile {
    /// The keys of the selected profile.
    pub fn load(&self, cfg: &ProviderConfig) -> Result<AwsCredentials, ProfileError> {
        let path = path(cfg).ok_or(ProfileError::NoPath)?;
        let shown = path.display().to_string();
        let text = cfg.fs.read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ProfileError::NoFile {
                path: shown.clone(),
            },
            _ => ProfileError::Unreadable {
                path: shown.clone(),
                reason: e.to_string(),
            },
        })?;
        let explicit = cfg.env.get("AWS_PROFILE");
        let profile = explicit.clone().unwrap_or_else(|| "default".to_string());
        let sections = parse_ini(&text);
        let Some(keys) = sections.get(&profile) else {
            return Err(match explicit {
                Some(_) => ProfileError::NoProfile {
                    path: shown,
                    profile,
                },
                None => ProfileError::NoDefaultProfile {
                    path: shown,
                    profile,
                },
            });
        };
        let field = |name: &'static str| {
            keys.get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| ProfileError::Incomplete {
                    path: shown.clone(),
                    profile: profile.clone(),
                    missing: name,
                })
        };
        Ok(AwsCredentials {
            access_key_id: field("aws_access_key_id")?,
            secret: Secret::new(field("aws_secret_access_key")?),
            session_token: field("aws_session_token").ok().map(Secret::new),
            expiration: None,
            account_id: None,
        })
    }
}

fn path(cfg: &ProviderConfig) -> Option<PathBuf> {
    let home = cfg.env.get("HOME").or_else(|| cfg.env.get("USERPROFILE"));
    match cfg.env.get("AWS_SHARED_CREDENTIALS_FILE") {
        Some(p) => match (p.strip_prefix("~/"), &home) {
            (Some(rest), Some(h)) => Some(PathBuf::from(h).join(rest)),
            _ => Some(PathBuf::from(p)),
        },
        None => home.map(|h| PathBuf::from(h).join(".aws").join("credentials")),
    }
}

/// Sections of an INI file: `[name]` headers, `key = value` lines, `#`/`;`
/// comments. Keys are lowercased; a repeated section merges.
pub fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(section), Some((k, v))) = (&current, line.split_once('=')) else {
            continue;
        };
        sections
            .entry(section.clone())
            .or_default()
            .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    sections
}

impl ProvideCredentials for SharedCredentialsFile {
    fn source(&self) -> CredentialSource {
        CredentialSource::SharedCredentialsFile
    }

    fn provide<'a>(&'a self, cfg: &'a ProviderConfig) -> ProvideFuture<'a> {
        Box::pin(std::future::ready(
            self.load(cfg).map(|c| (c, None)).map_err(|e| e.skip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    const FILE: &str = "# comment\n[default]\naws_access_key_id = AKIA1\n\
        aws_secret_access_key=s1\nregion = eu-west-1\n\n[dev]\n; c\n\
        AWS_ACCESS_KEY_ID = AKIA2\naws_secret_access_key = s2\naws_session_token = t2\n\
        [sso]\nsso_start_url = https://x\n";

    fn cfg(env: &[(&str, &str)]) -> ProviderConfig {
        ProviderConfig::with_env(
            Env::from_pairs(env.iter().copied()),
            Fs::from_files([("/home/u/.aws/credentials", FILE)]),
        )
    }

    #[test]
    fn default_and_named_profiles() {
        let c = SharedCredentialsFile
            .load(&cfg(&[("HOME", "/home/u")]))
            .unwrap();
        assert_eq!(c.access_key_id, "AKIA1");
        assert!(c.session_token.is_none());
        let c = SharedCredentialsFile
            .load(&cfg(&[("HOME", "/home/u"), ("AWS_PROFILE", "dev")]))
            .unwrap();
        assert_eq!(c.access_key_id, "AKIA2");
        assert_eq!(c.session_token.unwrap().expose(), "t2");
    }

    #[test]
    fn missing_pieces() {
        let e = SharedCredentialsFile.load(&cfg(&[])).unwrap_err();
        assert!(e.is_not_configured());
        let e = SharedCredentialsFile
            .load(&cfg(&[("HOME", "/nowhere")]))
            .unwrap_err();
        assert!(e.is_not_configured(), "{e}");
        let e = SharedCredentialsFile
            .load(&cfg(&[("HOME", "/home/u"), ("AWS_PROFILE", "nope")]))
            .unwrap_err();
        assert!(!e.is_not_configured());
        let e = SharedCredentialsFile
            .load(&cfg(&[("HOME", "/home/u"), ("AWS_PROFILE", "sso")]))
            .unwrap_err();
        assert!(e.to_string().contains("aws_access_key_id"));
        let e = SharedCredentialsFile
            .load(&cfg(&[
                ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
                ("HOME", "/home/u"),
            ]))
            .unwrap();
        assert_eq!(e.access_key_id, "AKIA1");
    }
}
