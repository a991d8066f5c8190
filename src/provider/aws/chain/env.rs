//! Credentials from the environment: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
//! (long-lived keys), plus `AWS_SESSION_TOKEN` for temporary ones.

use super::{
    AwsCredentials, CredentialSource, ProvideCredentials, ProvideFuture, Provided, SourceError,
};
use crate::env::ProviderConfig;
use crate::secret::Secret;

/// The environment-keys source.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvKeys;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
/// Why environment keys could not be had.
pub enum EnvKeysError {
    #[error("AWS_ACCESS_KEY_ID is not set")]
    /// No key in the environment: not configured.
    NotSet,
    #[error("{set} is set but {missing} is not")]
    /// Half a key pair.
    Incomplete {
        /// What is set.
        set: &'static str,
        /// What is missing.
        missing: &'static str,
    },
}

impl SourceError for EnvKeysError {
    fn is_not_configured(&self) -> bool {
        matches!(self, Self::NotSet)
    }
}

impl EnvKeys {
    /// The keys from the environment.
    pub fn load(&self, cfg: &ProviderConfig) -> Result<AwsCredentials, EnvKeysError> {
        let id = cfg.env.get("AWS_ACCESS_KEY_ID");
        let secret = cfg.env.get("AWS_SECRET_ACCESS_KEY");
        match (id, secret) {
            (None, None) => Err(EnvKeysError::NotSet),
            (Some(_), None) => Err(EnvKeysError::Incomplete {
                set: "AWS_ACCESS_KEY_ID",
                missing: "AWS_SECRET_ACCESS_KEY",
            }),
            (None, Some(_)) => Err(EnvKeysError::Incomplete {
                set: "AWS_SECRET_ACCESS_KEY",
                missing: "AWS_ACCESS_KEY_ID",
            }),
            (Some(id), Some(secret)) => Ok(AwsCredentials {
                access_key_id: id.trim().to_string(),
                secret: Secret::new(secret.trim()),
                session_token: cfg
                    .env
                    .get("AWS_SESSION_TOKEN")
                    .map(|t| Secret::new(t.trim())),
                expiration: None,
                account_id: None,
            }),
        }
    }
}

impl ProvideCredentials for EnvKeys {
    fn source(&self) -> CredentialSource {
        CredentialSource::Environment
    }

    fn provide<'a>(&'a self, cfg: &'a ProviderConfig) -> ProvideFuture<'a> {
        Box::pin(std::future::ready(
            self.load(cfg).map(Provided::from).map_err(|e| e.skip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    fn cfg(pairs: &[(&str, &str)]) -> ProviderConfig {
        ProviderConfig::with_env(
            Env::from_pairs(pairs.iter().copied()),
            Fs::from_files::<&str, &str>([]),
        )
    }

    #[test]
    fn keys_and_token() {
        let c = EnvKeys
            .load(&cfg(&[
                ("AWS_ACCESS_KEY_ID", "AKIA1"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
                ("AWS_SESSION_TOKEN", "t"),
            ]))
            .unwrap();
        assert_eq!(c.access_key_id, "AKIA1");
        assert_eq!(c.session_token.unwrap().expose(), "t");
    }

    #[test]
    fn unset_and_incomplete() {
        assert_eq!(EnvKeys.load(&cfg(&[])).unwrap_err(), EnvKeysError::NotSet);
        let e = EnvKeys
            .load(&cfg(&[("AWS_ACCESS_KEY_ID", "AKIA1")]))
            .unwrap_err();
        assert!(!e.is_not_configured());
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY is not"));
    }
}
