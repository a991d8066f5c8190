//! The `executable` credential source (Google's "pluggable auth"): a command
//! that prints the subject token as JSON.
//!
//! As in Google's libraries: it runs only with
//! `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`; the command line is split on
//! whitespace (no shell); `timeout_millis` is 5000..=120000 (default 30000) and the
//! process is killed when it passes; the command gets
//! `GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE`, `GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE`,
//! `GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE=0`, and
//! `GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL` / `GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE`
//! when they apply. Its output (stdout, or a still-valid `output_file` cache, which
//! is read first) is version 1:
//!
//! ```json
//! {"version": 1, "success": true, "token_type": "urn:ietf:params:oauth:token-type:jwt",
//!  "id_token": "...", "expiration_time": 1700000000}
//! {"version": 1, "success": false, "code": "401", "message": "Caller not authorized."}
//! ```
//!
//! `token_type` `...:jwt` or `...:id_token` carry `id_token`, `...:saml2` carries
//! `saml_response`. `expiration_time` is required when `output_file` is set, and a
//! past one is an error. Neither stdout nor stderr is ever logged: they hold tokens.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::super::super::ProviderError;
use super::super::adc::{ExecutableSource, ExternalAccount};
use super::no_identity;
use crate::env::ProviderConfig;
use crate::Secret;

/// The variable that must be `1` for any executable to run.
pub const ALLOW_VAR: &str = "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES";
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const MIN_TIMEOUT_MS: u64 = 5_000;
const MAX_TIMEOUT_MS: u64 = 120_000;
/// More output than any token response: the rest is not read.
const MAX_OUTPUT_BYTES: u64 = 64 * 1024;
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";

/// The subject token from the output file cache or a run of the command.
pub(super) async fn subject_token(
    cfg: &ProviderConfig,
    account: &ExternalAccount,
    exe: &ExecutableSource,
    impersonated: Option<&str>,
) -> Result<Secret, ProviderError> {
    if cfg.env.get(ALLOW_VAR).as_deref() != Some("1") {
        return Err(no_identity(&format!(
            "the external_account file runs an executable, which is off unless {ALLOW_VAR}=1 \
             (as in Google's libraries): set it if you trust the command in the file"
        )));
    }
    let timeout = Duration::from_millis(timeout_ms(exe)?);
    let now = cfg.now_unix();
    if let Some(path) = &exe.output_file {
        if let Some(token) = cached(cfg, path, now) {
            tracing::debug!(output_file = %path, "executable source: cached token still valid");
            return Ok(token);
        }
    }
    let stdout = run(account, exe, impersonated, timeout).await?;
    parse_response(&stdout, exe.output_file.is_some(), now)
}

fn timeout_ms(exe: &ExecutableSource) -> Result<u64, ProviderError> {
    match exe.timeout_millis {
        None => Ok(DEFAULT_TIMEOUT_MS),
        Some(ms) if (MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&ms) => Ok(ms),
        Some(ms) => Err(no_identity(&format!(
            "credential_source.executable.timeout_millis {ms} is outside {MIN_TIMEOUT_MS}..={MAX_TIMEOUT_MS}"
        ))),
    }
}

/// A valid, unexpired response in the output file; anything else means "run it".
fn cached(cfg: &ProviderConfig, path: &str, now: u64) -> Option<Secret> {
    let text = cfg.fs.read_to_string(Path::new(path)).ok()?;
    match parse_response(&text, true, now) {
        Ok(token) => Some(token),
        Err(e) => {
            tracing::debug!(output_file = %path, error = %e, "executable source: cache not usable");
            None
        }
    }
}

async fn run(
    account: &ExternalAccount,
    exe: &ExecutableSource,
    impersonated: Option<&str>,
    timeout: Duration,
) -> Result<String, ProviderError> {
    let mut words = exe.command.split_whitespace();
    let program = words
        .next()
        .ok_or_else(|| no_identity("credential_source.executable.command is empty"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(words)
        .env("GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE", &account.audience)
        .env(
            "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE",
            &account.subject_token_type,
        )
        .env("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(email) = impersonated {
        cmd.env("GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL", email);
    }
    if let Some(out) = &exe.output_file {
        cmd.env("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE", out);
    }
    let mut child = cmd.spawn().map_err(|e| {
        no_identity(&format!(
            "cannot run the credential executable {program:?}: {e}"
        ))
    })?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| no_identity("the credential executable has no stdout"))?;
    let work = async {
        let mut out = Vec::new();
        (&mut stdout)
            .take(MAX_OUTPUT_BYTES)
            .read_to_end(&mut out)
            .await?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out))
    };
    let (status, out) = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            return Err(no_identity(&format!(
                "reading the credential executable {program:?} failed: {e}"
            )))
        }
        // Dropping `child` (kill_on_drop) kills it.
        Err(_) => {
            return Err(no_identity(&format!(
            "the credential executable {program:?} did not finish within {} ms (timeout_millis)",
            timeout.as_millis()
        )))
        }
    };
    if !status.success() {
        return Err(no_identity(&format!(
            "the credential executable {program:?} failed ({status}); its output is not shown (it may hold tokens)"
        )));
    }
    String::from_utf8(out)
        .map_err(|_| no_identity("the credential executable printed non-UTF-8 output"))
}

#[derive(Deserialize)]
struct Response {
    version: Option<u64>,
    success: Option<bool>,
    token_type: Option<String>,
    id_token: Option<String>,
    saml_response: Option<String>,
    expiration_time: Option<u64>,
    code: Option<String>,
    message: Option<String>,
}

/// The token of a version-1 executable response.
pub(in crate::provider::gcp) fn parse_response(
    text: &str,
    need_expiry: bool,
    now: u64,
) -> Result<Secret, ProviderError> {
    let r: Response = serde_json::from_str(text.trim())
        .map_err(|_| no_identity("the credential executable's output is not a JSON object"))?;
    match r.version {
        Some(1) => {}
        Some(v) => {
            return Err(no_identity(&format!(
                "the credential executable's response version {v} is not supported (expected 1)"
            )))
        }
        None => {
            return Err(no_identity(
                "the credential executable's response has no version",
            ))
        }
    }
    match r.success {
        Some(true) => {}
        Some(false) => {
            return Err(no_identity(&format!(
                "the credential executable reported failure: {}: {}",
                r.code
                    .as_deref()
                    .map(crate::http::snippet)
                    .unwrap_or_default(),
                r.message
                    .as_deref()
                    .map(crate::http::snippet)
                    .unwrap_or_default()
            )))
        }
        None => {
            return Err(no_identity(
                "the credential executable's response has no success field",
            ))
        }
    }
    match r.expiration_time {
        Some(exp) if exp <= now => {
            return Err(no_identity("the credential executable's token has expired (expiration_time)"))
        }
        None if need_expiry => {
            return Err(no_identity(
                "the credential executable's response has no expiration_time, required with output_file",
            ))
        }
        _ => {}
    }
    let token = match r.token_type.as_deref() {
        Some(JWT) | Some(ID_TOKEN) => r.id_token,
        Some(SAML2) => r.saml_response,
        Some(other) => {
            return Err(no_identity(&format!(
                "the credential executable's token_type {:?} is not jwt, id_token or saml2",
                crate::http::snippet(other)
            )))
        }
        None => {
            return Err(no_identity(
                "the credential executable's response has no token_type",
            ))
        }
    };
    token
        .filter(|t| !t.trim().is_empty())
        .map(|t| Secret::new(t.trim()))
        .ok_or_else(|| {
            no_identity("the credential executable's response has no id_token or saml_response")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_checked_like_googles_libraries_check_them() {
        let ok = r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt","id_token":"a.b.c","expiration_time":200}"#;
        assert_eq!(parse_response(ok, true, 100).unwrap().expose(), "a.b.c");
        let saml = r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:saml2","saml_response":"PHNhbWw+"}"#;
        assert_eq!(
            parse_response(saml, false, 100).unwrap().expose(),
            "PHNhbWw+"
        );
        for (text, want) in [
            (ok, "expired"),
            (r#"{"version":2,"success":true}"#, "version 2"),
            (r#"{"success":true}"#, "no version"),
            (
                r#"{"version":1,"success":false,"code":"401","message":"Caller not authorized."}"#,
                "401: Caller not authorized.",
            ),
            (
                r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt","id_token":"x"}"#,
                "required with output_file",
            ),
            (
                r#"{"version":1,"success":true,"token_type":"weird","id_token":"x","expiration_time":999}"#,
                "not jwt",
            ),
            (
                r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt","expiration_time":999}"#,
                "no id_token",
            ),
            ("nope", "not a JSON object"),
        ] {
            let e = parse_response(text, true, 300).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn timeouts_are_bounded() {
        let exe = |t| ExecutableSource {
            command: "x".into(),
            timeout_millis: t,
            output_file: None,
        };
        assert_eq!(timeout_ms(&exe(None)).unwrap(), 30_000);
        assert_eq!(timeout_ms(&exe(Some(5_000))).unwrap(), 5_000);
        assert!(timeout_ms(&exe(Some(4_999))).is_err());
        assert!(timeout_ms(&exe(Some(120_001))).is_err());
    }
}
