//! Azure Arc-enabled servers: the Arc agent (HIMDS) serves managed-identity tokens
//! on `IDENTITY_ENDPOINT` (default `http://localhost:40342/metadata/identity/oauth2/token`;
//! the agent also sets `IMDS_ENDPOINT`). A caller proves it may read the agent's
//! token directory:
//!
//! ```text
//! GET {IDENTITY_ENDPOINT}?api-version=2020-06-01&resource=<r>[&client_id=<id>]   Metadata: true
//! → 401, Www-Authenticate: Basic realm=/var/opt/azcmagent/tokens/<random>.key
//! GET ... again with Authorization: Basic <the key file's contents>
//! → 200 {"access_token", "expires_in", "expires_on", "resource", "token_type", ...}
//! ```
//!
//! The realm comes from whoever answers on that port, so before reading it the path
//! is checked as the SDKs check it: absolute, directly in the key directory
//! ([`ProviderConfig::azure_arc_key_dir`], `/var/opt/azcmagent/tokens` on Linux), a
//! `.key` name, a regular file of at most 4096 bytes. Otherwise any local process
//! could make us read a file of its choosing and send it to it. The key is a secret:
//! it is never logged nor quoted in an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::ProviderError;
use super::token::{AccessToken, Source};
use crate::env::ProviderConfig;
use crate::http::{fetch, retry, GaveUp, Reply, RetryPolicy, Step};
use crate::Secret;

const TIMEOUT: Duration = Duration::from_secs(5);
/// What azure-identity and MSAL send; the agent also speaks 2019-11-01.
const API_VERSION: &str = "2020-06-01";
/// The agent's address when only its binary tells us it is there.
pub(super) const DEFAULT_ENDPOINT: &str = "http://localhost:40342/metadata/identity/oauth2/token";
/// The agent's binary on Linux: its presence alone means Arc, as in MSAL.
pub(super) const HIMDS_BINARY: &str = "/opt/azcmagent/bin/himds";
/// The largest key file the SDKs read.
const MAX_KEY_BYTES: u64 = 4096;
const WHAT: &str = "Azure Arc managed identity token request (IDENTITY_ENDPOINT)";

/// The agent's token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Arc {
    pub endpoint: String,
}

impl Arc {
    /// `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT` (what the agent sets for services), or
    /// the agent installed at its standard path.
    pub fn from_env(cfg: &ProviderConfig) -> Option<Self> {
        match (
            cfg.env.get("IDENTITY_ENDPOINT"),
            cfg.env.is_set("IMDS_ENDPOINT"),
        ) {
            (Some(endpoint), true) => Some(Self {
                endpoint: endpoint.trim().to_string(),
            }),
            (None, _) if cfg.fs.exists(Path::new(HIMDS_BINARY)) => Some(Self {
                endpoint: DEFAULT_ENDPOINT.into(),
            }),
            _ => None,
        }
    }

    /// An access token for `resource` (the machine's identity, or the
    /// user-assigned `client_id` where the agent supports it).
    pub async fn token(
        &self,
        cfg: &ProviderConfig,
        policy: &RetryPolicy,
        resource: &str,
        client_id: Option<&str>,
    ) -> Result<AccessToken, ProviderError> {
        let source = Source {
            what: WHAT,
            not_found: Some(match client_id {
                Some(id) => format!(
                    "the user-assigned managed identity with client id {id} is not assigned to \
                     this Arc-enabled server"
                ),
                None => "this Arc-enabled server has no managed identity".into(),
            }),
            hint,
        };
        let mut url = url::Url::parse(&self.endpoint)
            .map_err(|e| super::bad_endpoint("IDENTITY_ENDPOINT", e))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", API_VERSION)
                .append_pair("resource", resource);
            if let Some(id) = client_id {
                q.append_pair("client_id", id);
            }
        }
        let url = url.as_str();
        // One attempt is the whole challenge flow: the agent writes a new key file
        // for each challenge, so a retry starts over.
        retry(
            policy,
            |_| {
                let source = &source;
                async move { attempt(cfg, source, url, client_id).await }
            },
            |g: GaveUp| source.upstream(g.to_string()),
        )
        .await
    }
}

async fn attempt(
    cfg: &ProviderConfig,
    source: &Source<'_>,
    url: &str,
    client_id: Option<&str>,
) -> Step<AccessToken, ProviderError> {
    let first = cfg.http.get(url).header("Metadata", "true");
    let reply = match Step::from_transport(fetch(first, url, TIMEOUT).await, |e| source.upstream(e))
    {
        Ok(reply) => reply,
        Err(step) => return step,
    };
    if reply.is_success() {
        return Step::Fail(source.upstream(
            "the endpoint answered without the challenge the Azure Arc agent always sends \
             first: IDENTITY_ENDPOINT does not look like the Arc agent",
        ));
    }
    if reply.status != 401 {
        return source.classify_reply(&reply, cfg.clock.now());
    }
    let key = match challenge_key(cfg, &reply) {
        Ok(key) => key,
        Err(reason) => return Step::Fail(source.upstream(reason)),
    };
    let second = cfg
        .http
        .get(url)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {}", key.expose()));
    let reply =
        match Step::from_transport(fetch(second, url, TIMEOUT).await, |e| source.upstream(e)) {
            Ok(reply) => reply,
            Err(step) => return step,
        };
    if let (true, Some(wanted)) = (reply.is_success(), client_id) {
        if !confirms(&reply.body, wanted) {
            // An agent without user-assigned identities answers with the machine's
            // own; MSAL refuses that too, rather than act as the wrong identity.
            return Step::Fail(source.upstream(format!(
                "the Azure Arc agent did not confirm the user-assigned identity {wanted} in                  its answer (an agent without user-assigned identities returns the                  machine's own): refusing the token"
            )));
        }
    }
    source.classify_reply(&reply, cfg.clock.now())
}

/// Whether the answer's `client_id` is `wanted`.
fn confirms(body: &str, wanted: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("client_id")?.as_str().map(str::to_owned))
        .is_some_and(|id| id.eq_ignore_ascii_case(wanted))
}

/// The key the 401 challenge points at, after checking where it points.
fn challenge_key(cfg: &ProviderConfig, reply: &Reply) -> Result<Secret, String> {
    let header = reply.header("www-authenticate").ok_or(
        "the Azure Arc agent answered 401 without a Www-Authenticate challenge naming its key file",
    )?;
    let path = realm_path(header).ok_or_else(|| {
        format!(
            "the Azure Arc agent's challenge {:?} is not \"Basic realm=<key file>\"",
            crate::util::snippet(header, 120)
        )
    })?;
    let path = check_key_path(&path, &cfg.azure_arc_key_dir)?;
    let size = cfg
        .fs
        .file_size(&path)
        .map_err(|e| format!("cannot read the Azure Arc key file {}: {e}", path.display()))?;
    if size > MAX_KEY_BYTES {
        return Err(format!(
            "the Azure Arc key file {} is {size} bytes, more than the {MAX_KEY_BYTES} a key may be: refusing to read it",
            path.display()
        ));
    }
    let key = cfg.fs.read_to_string(&path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (only root and the himds group may read the agent's keys: add this user to \
             the himds group)"
        } else {
            ""
        };
        format!(
            "cannot read the Azure Arc key file {}: {e}{hint}",
            path.display()
        )
    })?;
    let key = key.trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the Azure Arc key file {} is empty or not printable text",
            path.display()
        ));
    }
    Ok(Secret::new(key))
}

/// The file in `Basic realm=<path>` (quotes allowed).
pub(super) fn realm_path(header: &str) -> Option<PathBuf> {
    let (scheme, rest) = header.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let (name, value) = rest.trim().split_once('=')?;
    if !name.trim().eq_ignore_ascii_case("realm") {
        return None;
    }
    let value = value.trim().trim_matches('"');
    (!value.is_empty()).then(|| PathBuf::from(value))
}

/// `path` if it is a `.key` file directly in `dir`, else why not.
fn check_key_path(path: &Path, dir: &Path) -> Result<PathBuf, String> {
    let refuse = |why: &str| {
        Err(format!(
            "the Azure Arc agent's challenge names {}, {why}: refusing to read it (is \
             IDENTITY_ENDPOINT really the Arc agent?)",
            path.display()
        ))
    };
    if !path.is_absolute() {
        return refuse("which is not an absolute path");
    }
    // Checked on the text: `Path::components` drops inner `.` segments.
    let text = path.to_string_lossy();
    if text.split('/').any(|seg| seg == "." || seg == "..") {
        return refuse("which has . or .. in it");
    }
    if path.parent() != Some(dir) {
        return refuse(&format!("which is not directly in {}", dir.display()));
    }
    if path.extension().and_then(|e| e.to_str()) != Some("key") {
        return refuse("which is not a .key file");
    }
    Ok(path.to_path_buf())
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => " (the Arc agent refused the key from its own challenge)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    #[test]
    fn user_assigned_answers_must_name_the_identity() {
        assert!(confirms(r#"{"access_token":"x","client_id":"ABC"}"#, "abc"));
        assert!(!confirms(
            r#"{"access_token":"x","client_id":"other"}"#,
            "abc"
        ));
        assert!(!confirms(r#"{"access_token":"x"}"#, "abc"));
        assert!(!confirms("not json", "abc"));
    }

    #[test]
    fn realm_header_shapes() {
        let p = |h| realm_path(h).map(|p| p.display().to_string());
        assert_eq!(
            p("Basic realm=/var/opt/azcmagent/tokens/a.key").as_deref(),
            Some("/var/opt/azcmagent/tokens/a.key")
        );
        assert_eq!(p("basic Realm=\"/x/a.key\"").as_deref(), Some("/x/a.key"));
        for bad in [
            "",
            "Basic",
            "Bearer realm=/x/a.key",
            "Basic realm=",
            "Basic foo=/x",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn key_paths_must_be_key_files_directly_in_the_directory() {
        let dir = Path::new("/var/opt/azcmagent/tokens");
        assert!(check_key_path(Path::new("/var/opt/azcmagent/tokens/a.key"), dir).is_ok());
        for bad in [
            "a.key",
            "tokens/a.key",
            "/var/opt/azcmagent/tokens/sub/a.key",
            "/var/opt/azcmagent/tokens/../tokens/a.key",
            "/var/opt/azcmagent/tokens/./a.key",
            "/etc/shadow",
            "/var/opt/azcmagent/tokens/a.txt",
            "/var/opt/azcmagent/tokens/a",
            "/var/opt/azcmagent/tokensx/a.key",
        ] {
            let e = check_key_path(Path::new(bad), dir).unwrap_err();
            assert!(e.contains("refusing"), "{bad}: {e}");
        }
    }

    #[test]
    fn from_env_needs_both_variables_or_the_agent() {
        let cfg = |env: &[(&str, &str)], files: &[(&str, &str)]| {
            ProviderConfig::with_env(
                Env::from_pairs(env.iter().copied()),
                Fs::from_files(files.iter().copied()),
            )
        };
        let both = [
            ("IDENTITY_ENDPOINT", "http://x/t"),
            ("IMDS_ENDPOINT", "http://x"),
        ];
        assert_eq!(
            Arc::from_env(&cfg(&both, &[])).unwrap().endpoint,
            "http://x/t"
        );
        assert!(Arc::from_env(&cfg(&both[..1], &[])).is_none());
        assert_eq!(
            Arc::from_env(&cfg(&[], &[(HIMDS_BINARY, "")]))
                .unwrap()
                .endpoint,
            DEFAULT_ENDPOINT
        );
        assert!(Arc::from_env(&cfg(&[], &[])).is_none());
    }

    fn reply_with(header: Option<&str>) -> Reply {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(h) = header {
            headers.insert("www-authenticate", h.parse().unwrap());
        }
        Reply {
            status: 401,
            headers,
            body: String::new(),
        }
    }

    #[test]
    fn the_key_is_read_only_when_small_and_never_quoted() {
        let dir = "/var/opt/azcmagent/tokens";
        let big = "k".repeat(4097);
        let cfg = ProviderConfig::with_env(
            Env::from_pairs::<&str, &str>([]),
            Fs::from_files([
                (format!("{dir}/ok.key"), "s3cret-key\n".to_string()),
                (format!("{dir}/big.key"), big),
                (format!("{dir}/bin.key"), "a\u{1}b".to_string()),
            ]),
        );
        let key = challenge_key(
            &cfg,
            &reply_with(Some(&format!("Basic realm={dir}/ok.key"))),
        )
        .unwrap();
        assert_eq!(key.expose(), "s3cret-key");
        let e = challenge_key(
            &cfg,
            &reply_with(Some(&format!("Basic realm={dir}/big.key"))),
        )
        .unwrap_err();
        assert!(e.contains("4097 bytes"), "{e}");
        let e = challenge_key(
            &cfg,
            &reply_with(Some(&format!("Basic realm={dir}/bin.key"))),
        )
        .unwrap_err();
        assert!(e.contains("not printable"), "{e}");
        let e = challenge_key(
            &cfg,
            &reply_with(Some(&format!("Basic realm={dir}/none.key"))),
        )
        .unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        let e = challenge_key(&cfg, &reply_with(None)).unwrap_err();
        assert!(e.contains("without a Www-Authenticate"), "{e}");
    }
}
