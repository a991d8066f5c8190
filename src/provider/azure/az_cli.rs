//! The Azure CLI's login on a developer's machine:
//!
//! ```text
//! az account get-access-token --output json --resource <r> [--tenant <AZURE_TENANT_ID>]
//! → {"accessToken", "expiresOn": "2024-01-01 12:00:00.000000" (local time),
//!    "expires_on": 1704110400 (az ≥ 2.54), "subscription", "tenant", "tokenType"}
//! ```
//!
//! As in azure-identity's `DefaultAzureCredential`, this is the last Azure source:
//! used only when no managed-identity source is configured and IMDS does not answer.
//! The command is `S2IAM_AZURE_CLI` (a path, or a name looked up on `PATH`; `off`
//! disables it), else `az` on `PATH`; it gets `S2IAM_AZURE_CLI_TIMEOUT` seconds
//! (default 10, azure-identity's) and is killed after that. It runs in `/`, so a
//! malicious `az` in the current directory is never picked up (azure-identity does
//! the same). Its stderr is quoted in errors, cut short, with anything shaped like a
//! token removed; its stdout (the token) never is.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use super::super::{CloudProvider, ProviderError};
use super::token::{parse_expires_on, AccessToken};
use crate::env::ProviderConfig;
use crate::Secret;

/// azure-identity's `process_timeout` default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT_SECS: u64 = 300;
/// `az` prints a few hundred bytes; anything much larger is not its answer.
const MAX_OUTPUT_BYTES: usize = 64 * 1024;
const WHAT: &str = "Azure CLI token request (az account get-access-token)";

/// How to run the Azure CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AzureCli {
    pub program: PathBuf,
    pub timeout: Duration,
    pub tenant: Option<String>,
}

impl AzureCli {
    /// The CLI to use, if any: `S2IAM_AZURE_CLI` or `az`, found on `PATH` unless
    /// given as a path.
    pub fn from_env(cfg: &ProviderConfig) -> Option<Self> {
        let named = cfg.env.get("S2IAM_AZURE_CLI").map(|v| v.trim().to_string());
        let program = match named.as_deref() {
            Some("off" | "false" | "0" | "none") => return None,
            Some(p) if p.contains('/') => PathBuf::from(p),
            Some(name) => find_on_path(cfg, name)?,
            None => find_on_path(cfg, "az")?,
        };
        let timeout = cfg
            .env
            .get("S2IAM_AZURE_CLI_TIMEOUT")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.clamp(1, MAX_TIMEOUT_SECS)))
            .unwrap_or(DEFAULT_TIMEOUT);
        Some(Self {
            program,
            timeout,
            tenant: cfg.env.get("AZURE_TENANT_ID").map(|t| t.trim().to_string()),
        })
    }

    /// An access token for `resource` from the CLI's current login, and the
    /// subscription it is signed in to.
    pub async fn token(
        &self,
        resource: &str,
    ) -> Result<(AccessToken, Option<String>), ProviderError> {
        // An argument, not an option: az must not read a resource as a flag.
        if resource.starts_with('-')
            || resource
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(upstream(format!(
                "the resource {resource:?} cannot be passed to az (it starts with - or has spaces)"
            )));
        }
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args([
            "account",
            "get-access-token",
            "--output",
            "json",
            "--resource",
            resource,
        ]);
        if let Some(tenant) = &self.tenant {
            if !super::workload::valid_tenant(tenant) {
                return Err(upstream(format!(
                    "AZURE_TENANT_ID {tenant:?} is not a tenant id or domain"
                )));
            }
            cmd.args(["--tenant", tenant]);
        }
        cmd.current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = self.program.display();
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => no_identity(format!(
                "the Azure CLI is not installed ({shown} not found): install it and run \
                 `az login`, or set S2IAM_AZURE_CLI to its path"
            )),
            _ => upstream(format!("cannot run {shown}: {e}")),
        })?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                upstream(format!(
                    "{shown} did not answer within {} s and was stopped (S2IAM_AZURE_CLI_TIMEOUT)",
                    self.timeout.as_secs()
                ))
            })?
            .map_err(|e| upstream(format!("cannot run {shown}: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(failure(&stderr, output.status.code()));
        }
        if output.stdout.len() > MAX_OUTPUT_BYTES {
            return Err(upstream(format!(
                "{shown} printed more than {MAX_OUTPUT_BYTES} bytes: not a token"
            )));
        }
        parse(&output.stdout).ok_or_else(|| {
            upstream(format!(
                "{shown} did not print the JSON of `az account get-access-token` (no accessToken)"
            ))
        })
    }
}

/// `dir/name` for the first `PATH` directory that has it.
fn find_on_path(cfg: &ProviderConfig, name: &str) -> Option<PathBuf> {
    let path = cfg.env.get("PATH")?;
    path.split(':')
        .filter(|d| !d.is_empty() && Path::new(d).is_absolute())
        .map(|d| Path::new(d).join(name))
        .find(|p| cfg.fs.exists(p))
}

/// The token, its expiry and the subscription. `expires_on` (az ≥ 2.54) is epoch
/// seconds. Older versions print only `expiresOn`, a local time without its zone:
/// it is read as the latest instant it can denote in any zone (UTC−12), so a token
/// is only ever called expired when it is, whatever the zone.
pub(super) fn parse(stdout: &[u8]) -> Option<(AccessToken, Option<String>)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        access_token: Option<String>,
        #[serde(rename = "expires_on")]
        expires_on: Option<serde_json::Value>,
        #[serde(rename = "expiresOn")]
        expires_on_local: Option<String>,
        subscription: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(stdout).ok()?;
    let token = answer.access_token?;
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    let token = AccessToken {
        token: Secret::new(token),
        expires_on: answer
            .expires_on
            .as_ref()
            .and_then(parse_expires_on)
            .or_else(|| answer.expires_on_local.as_deref().and_then(latest_instant)),
    };
    let subscription = answer.subscription.filter(|s| !s.trim().is_empty());
    Some((token, subscription))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` in an unknown zone, as the latest Unix time it
/// can be (the zone 12 hours behind UTC).
fn latest_instant(local: &str) -> Option<u64> {
    let (date, time) = local.trim().split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i32>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<u8>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year, month, u8::try_from(day).ok()?).ok()?;
    let naive = date.with_hms(hour, minute, second).ok()?.assume_utc();
    let latest = naive.unix_timestamp().checked_add(12 * 3600)?;
    u64::try_from(latest).ok()
}

/// A failed `az`: "not logged in" is no identity (with what `az` said), anything
/// else an upstream failure.
fn failure(stderr: &str, code: Option<i32>) -> ProviderError {
    let said = redact(stderr);
    let said = crate::util::snippet(said.trim(), 300);
    let not_logged_in = (stderr.contains("az login") || stderr.contains("az account set"))
        && !stderr.contains("AADSTS");
    if not_logged_in {
        return no_identity(format!(
            "the Azure CLI is not logged in: run `az login` (az said: {said})"
        ));
    }
    let code = code.map_or_else(|| "a signal".to_string(), |c| format!("status {c}"));
    upstream(format!("az exited with {code}: {said}"))
}

/// `text` with every word that looks like a JWT or a long opaque credential
/// replaced, in case a CLI echoes one into its error output.
fn redact(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            let looks_secret = w.starts_with("eyJ")
                || (w.len() >= 40
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.+/=".contains(c)));
            if looks_secret {
                "<redacted>"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn upstream(reason: String) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Azure,
        what: WHAT.into(),
        reason,
    }
}

fn no_identity(reason: String) -> ProviderError {
    ProviderError::NoIdentity {
        provider: CloudProvider::Azure,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    fn cfg(env: &[(&str, &str)], files: &[&str]) -> ProviderConfig {
        ProviderConfig::with_env(
            Env::from_pairs(env.iter().copied()),
            Fs::from_files(files.iter().map(|f| (*f, ""))),
        )
    }

    #[test]
    fn the_command_comes_from_the_variable_or_path() {
        let path = [("PATH", "/usr/local/bin:relative:/usr/bin")];
        let found = AzureCli::from_env(&cfg(&path, &["/usr/bin/az"])).unwrap();
        assert_eq!(found.program, Path::new("/usr/bin/az"));
        assert_eq!(found.timeout, DEFAULT_TIMEOUT);
        assert!(
            AzureCli::from_env(&cfg(&path, &[])).is_none(),
            "no az anywhere"
        );
        assert!(AzureCli::from_env(&cfg(&[("PATH", "relative")], &["relative/az"])).is_none());
        let explicit = cfg(
            &[
                ("S2IAM_AZURE_CLI", "/opt/fake/az"),
                ("S2IAM_AZURE_CLI_TIMEOUT", "3"),
                ("AZURE_TENANT_ID", "contoso.onmicrosoft.com"),
            ],
            &[],
        );
        let cli = AzureCli::from_env(&explicit).unwrap();
        assert_eq!(cli.program, Path::new("/opt/fake/az"));
        assert_eq!(cli.timeout, Duration::from_secs(3));
        assert_eq!(cli.tenant.as_deref(), Some("contoso.onmicrosoft.com"));
        let off = [("S2IAM_AZURE_CLI", "off"), ("PATH", "/usr/bin")];
        assert!(AzureCli::from_env(&cfg(&off, &["/usr/bin/az"])).is_none());
    }

    #[tokio::test]
    async fn a_resource_is_never_an_option() {
        let cli = AzureCli {
            program: PathBuf::from("/nonexistent/az"),
            timeout: DEFAULT_TIMEOUT,
            tenant: None,
        };
        for bad in ["--help", "-h", "https://x y", "https://x\n"] {
            let e = cli.token(bad).await.unwrap_err().to_string();
            assert!(e.contains("cannot be passed to az"), "{bad}: {e}");
        }
    }

    #[test]
    fn output_parsing() {
        let (t, sub) = parse(
            br#"{"accessToken":"a.b.c","expiresOn":"2024-01-01 12:00:00.000000",
                 "expires_on":1704110400,"subscription":"s-1","tenant":"t","tokenType":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(t.token.expose(), "a.b.c");
        assert_eq!(t.expires_on, Some(1_704_110_400));
        assert_eq!(sub.as_deref(), Some("s-1"));
        let (t, _) =
            parse(br#"{"accessToken":"x","expiresOn":"2024-01-01 12:00:00.000000"}"#).unwrap();
        // 2024-01-01 12:00 at UTC-12 is 2024-01-02 00:00 UTC.
        assert_eq!(t.expires_on, Some(1_704_153_600));
        assert_eq!(latest_instant("2024-01-01 12:00:00"), Some(1_704_153_600));
        for bad in [
            "",
            "2024-01-01",
            "2024-13-01 12:00:00",
            "soon 12:00:00",
            "2024-01-01 25:00:00",
        ] {
            assert_eq!(latest_instant(bad), None, "{bad}");
        }
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            br#"{"accessToken":" "}"#,
            b"Please run az login",
        ] {
            assert!(parse(bad).is_none());
        }
    }

    #[test]
    fn failures_quote_stderr_without_tokens() {
        let e = failure("ERROR: Please run 'az login' to setup account.\n", Some(1));
        assert!(
            matches!(&e, ProviderError::NoIdentity { reason, .. } if reason.contains("run `az login`") && reason.contains("Please run 'az login'")),
            "{e}"
        );
        let e = failure(
            "ERROR: AADSTS70043: The refresh token has expired. Run az login. token eyJhbGciOi.x.y",
            Some(1),
        )
        .to_string();
        assert!(e.contains("status 1") && e.contains("AADSTS70043"), "{e}");
        assert!(!e.contains("eyJhbGciOi"), "{e}");
        let long = "x".repeat(2000);
        assert!(failure(&format!("boom {long}"), None).to_string().len() < 700);
        assert_eq!(redact("a eyJx.y.z b"), "a <redacted> b");
    }
}
