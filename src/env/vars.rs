//! Environment variables, injected: the process's, or a fixed map in tests.

use std::collections::HashMap;
use std::sync::Arc;

use crate::http::ProxySettings;

/// Environment variables: the process's, or a fixed map for tests.
#[derive(Clone, Debug)]
pub struct Env {
    vars: Option<Arc<HashMap<String, String>>>,
}

impl Env {
    /// The real process environment.
    pub fn real() -> Self {
        Self { vars: None }
    }

    /// A fixed environment (nothing from the process leaks in).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: Some(Arc::new(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            )),
        }
    }

    /// The variable's value; set-but-empty counts as unset, as in the AWS and Google
    /// SDKs.
    pub fn get(&self, name: &str) -> Option<String> {
        let value = match &self.vars {
            // The one place the process environment is read (clippy.toml).
            #[allow(clippy::disallowed_methods)]
            None => std::env::var(name).ok(),
            Some(vars) => vars.get(name).cloned(),
        };
        value.filter(|v| !v.trim().is_empty())
    }

    /// `S2IAM_ALLOW_HTTP=1` (or `true`): plain-http auth service and credential
    /// URLs allowed, for testing only. Read here for the CLI, the sidecar's config
    /// and Google's credential files alike.
    pub fn allow_http(&self) -> bool {
        self.get("S2IAM_ALLOW_HTTP")
            .is_some_and(|v| v == "1" || v == "true")
    }

    /// Whether the variable is set and not empty.
    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every variable of a fixed (test) environment, to hand a child process
    /// instead of the real one; `None` for the real environment, which a child
    /// inherits by itself.
    pub fn fixed_vars(&self) -> Option<impl Iterator<Item = (&str, &str)>> {
        self.vars
            .as_ref()
            .map(|vars| vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl Env {
    /// The proxy variables (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`,
    /// either case), as the cloud SDKs read them.
    pub fn proxy_settings(&self) -> ProxySettings {
        let var = |upper: &str| {
            self.get(upper)
                .or_else(|| self.get(&upper.to_ascii_lowercase()))
        };
        ProxySettings {
            https: var("HTTPS_PROXY"),
            http: var("HTTP_PROXY"),
            all: var("ALL_PROXY"),
            no_proxy: var("NO_PROXY"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_env_ignores_process_env_and_empty_values() {
        let env = Env::from_pairs([("A", "1"), ("EMPTY", " ")]);
        assert_eq!(env.get("A").as_deref(), Some("1"));
        assert!(env.get("EMPTY").is_none());
        assert!(env.get("PATH").is_none());
    }
}
