//! `credential_process`: run a command, read AWS credentials from its stdout.
//!
//! The command line is split into words with POSIX shell quoting rules (`shlex`,
//! as botocore does with `shlex.split`) and the program is executed directly,
//! **without a shell**: no `$VAR` or `~` expansion, globs, pipes, redirections or
//! `;`. So a value from a config file cannot smuggle a second command in, and
//! quoting behaves the same everywhere. (aws-config and the Go SDK run the line
//! through `sh -c` instead; a profile that needs shell features says so:
//! `credential_process = sh -c 'vault read ... | jq ...'`.)
//!
//! The child gets the workload's environment (the injected one in tests), no
//! stdin, and [`DEFAULT_TIMEOUT`] (`S2IAM_CREDENTIAL_PROCESS_TIMEOUT` changes it)
//! to exit; it is killed when the time is up. Its stdout is the credentials
//! document and is never logged or quoted in an error; its stderr goes to the log
//! (cut and escaped) and, when it fails, into the error.
//!
//! Output (the SDKs' format): `{"Version": 1, "AccessKeyId", "SecretAccessKey",
//! "SessionToken"?, "Expiration"? (RFC 3339), "AccountId"?}`.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::env::ProviderConfig;
use crate::logging;
use crate::provider::aws::keys::parse_time;
use crate::provider::aws::AwsCredentials;
use crate::secret::Secret;

/// How long the command may run when `S2IAM_CREDENTIAL_PROCESS_TIMEOUT` is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// More output than any credentials document: the rest is not read.
const MAX_OUTPUT: u64 = 64 * 1024;
/// How much of stderr goes into an error message.
const STDERR_IN_ERROR: usize = 512;

/// Why `credential_process` gave no credentials. Never carries stdout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// The command line cannot be split into words.
    #[error("credential_process of profile `{profile}`: {reason}")]
    BadCommand {
        /// The profile.
        profile: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The program could not be started.
    #[error("credential_process of profile `{profile}`: cannot run {program}: {reason}")]
    Spawn {
        /// The profile.
        profile: String,
        /// The program (first word only: later words may be secrets).
        program: String,
        /// What went wrong.
        reason: String,
    },
    /// It ran longer than the timeout and was killed.
    #[error(
        "credential_process of profile `{profile}`: {program} did not exit within {secs} s and \
         was killed (S2IAM_CREDENTIAL_PROCESS_TIMEOUT sets the limit)"
    )]
    Timeout {
        /// The profile.
        profile: String,
        /// The program.
        program: String,
        /// The limit.
        secs: u64,
    },
    /// It exited with a failure status.
    #[error("credential_process of profile `{profile}`: {program} {status}{stderr}")]
    Failed {
        /// The profile.
        profile: String,
        /// The program.
        program: String,
        /// "exited with status 3", "was killed by a signal".
        status: String,
        /// `": "` and an excerpt of stderr, or empty.
        stderr: String,
    },
    /// Its output is not a usable credentials document.
    #[error("credential_process of profile `{profile}`: {program} printed {reason}")]
    BadOutput {
        /// The profile.
        profile: String,
        /// The program.
        program: String,
        /// What is wrong (never the output itself).
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    version: Option<serde_json::Value>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    expiration: Option<String>,
    account_id: Option<String>,
}

/// The limit from `S2IAM_CREDENTIAL_PROCESS_TIMEOUT`, else [`DEFAULT_TIMEOUT`].
pub fn timeout(cfg: &ProviderConfig) -> Duration {
    cfg.env
        .get("S2IAM_CREDENTIAL_PROCESS_TIMEOUT")
        .and_then(|t| crate::util::parse_duration(&t).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// Runs `command` (from profile `profile`) and parses its credentials.
pub async fn run(
    cfg: &ProviderConfig,
    profile: &str,
    command: &str,
) -> Result<AwsCredentials, ProcessError> {
    let words = shlex::split(command).ok_or_else(|| ProcessError::BadCommand {
        profile: profile.to_string(),
        reason: "unbalanced quotes or a trailing backslash".into(),
    })?;
    let Some((program, args)) = words.split_first() else {
        return Err(ProcessError::BadCommand {
            profile: profile.to_string(),
            reason: "the command is empty".into(),
        });
    };
    let shown = logging::field(program);
    let limit = timeout(cfg);
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(vars) = cfg.env.fixed_vars() {
        cmd.env_clear().envs(vars);
    }
    let child = cmd.spawn().map_err(|e| ProcessError::Spawn {
        profile: profile.to_string(),
        program: shown.clone(),
        reason: e.to_string(),
    })?;
    let output = match tokio::time::timeout(limit, collect(child)).await {
        Ok(result) => result.map_err(|e| ProcessError::Spawn {
            profile: profile.to_string(),
            program: shown.clone(),
            reason: e.to_string(),
        })?,
        // Dropping the future drops the child, which kills it (kill_on_drop).
        Err(_) => {
            return Err(ProcessError::Timeout {
                profile: profile.to_string(),
                program: shown,
                secs: limit.as_secs(),
            })
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        tracing::warn!(profile, program = %shown, stderr = %logging::field(stderr), "credential_process wrote to stderr");
    }
    if !output.status.success() {
        let status = match output.status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        };
        let stderr = if stderr.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                crate::util::snippet(&escape(stderr), STDERR_IN_ERROR)
            )
        };
        return Err(ProcessError::Failed {
            profile: profile.to_string(),
            program: shown,
            status,
            stderr,
        });
    }
    parse(&output.stdout, cfg.clock.now()).map_err(|reason| ProcessError::BadOutput {
        profile: profile.to_string(),
        program: shown,
        reason,
    })
}

struct Output {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Reads both pipes (capped) while waiting for the child to exit.
async fn collect(mut child: tokio::process::Child) -> std::io::Result<Output> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let out = child.stdout.take();
    let err = child.stderr.take();
    let read_out = async {
        if let Some(out) = out {
            out.take(MAX_OUTPUT).read_to_end(&mut stdout).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let read_err = async {
        if let Some(err) = err {
            err.take(MAX_OUTPUT).read_to_end(&mut stderr).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let (a, b) = tokio::join!(read_out, read_err);
    a?;
    b?;
    let status = child.wait().await?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Control characters escaped, so stderr cannot forge lines in an error.
fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// The credentials in `stdout`; errors describe the problem, never the content.
pub fn parse(stdout: &[u8], now: std::time::SystemTime) -> Result<AwsCredentials, String> {
    let doc: Document = serde_json::from_slice(stdout).map_err(|e| {
        // serde's message may quote a value (a secret): say only where and what kind.
        let what = match e.classify() {
            serde_json::error::Category::Io => "unreadable output",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Eof => "truncated or empty JSON",
        };
        format!("{what} (line {}, column {})", e.line(), e.column())
    })?;
    match doc.version.as_ref().and_then(|v| v.as_u64()) {
        Some(1) => {}
        Some(v) => return Err(format!("Version {v}; only Version 1 is supported")),
        None => return Err("no numeric Version (expected \"Version\": 1)".into()),
    }
    let id = doc
        .access_key_id
        .filter(|s| !s.trim().is_empty())
        .ok_or("no AccessKeyId")?;
    let secret = doc
        .secret_access_key
        .filter(|s| !s.trim().is_empty())
        .ok_or("no SecretAccessKey")?;
    let expiration = match doc.expiration.as_deref() {
        None => None,
        Some(t) => Some(parse_time(t).ok_or_else(|| {
            format!(
                "an Expiration that is not RFC 3339 ({:?})",
                logging::field(t)
            )
        })?),
    };
    if let Some(exp) = expiration {
        if exp <= now {
            return Err(format!(
                "credentials that expired at {}",
                crate::util::rfc3339(exp)
            ));
        }
    }
    Ok(AwsCredentials {
        access_key_id: id.trim().to_string(),
        secret: Secret::new(secret.trim()),
        session_token: doc
            .session_token
            .filter(|t| !t.trim().is_empty())
            .map(|t| Secret::new(t.trim())),
        expiration,
        account_id: doc.account_id.filter(|a| !a.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)
    }

    #[test]
    fn parses_version_1() {
        let c = parse(
            br#"{"Version":1,"AccessKeyId":"ASIA1","SecretAccessKey":"s","SessionToken":"t",
                "Expiration":"2030-06-01T00:00:00Z","AccountId":"123456789012"}"#,
            now(),
        )
        .unwrap();
        assert_eq!(c.access_key_id, "ASIA1");
        assert_eq!(c.session_token.unwrap().expose(), "t");
        assert!(c.expiration.is_some());
        assert_eq!(c.account_id.as_deref(), Some("123456789012"));
        let c = parse(
            br#"{"Version":1,"AccessKeyId":"AKIA","SecretAccessKey":"s"}"#,
            now(),
        )
        .unwrap();
        assert!(c.expiration.is_none() && c.session_token.is_none());
    }

    #[test]
    fn refuses_bad_documents_without_quoting_them() {
        for (doc, want) in [
            (&br#"{"Version":2,"AccessKeyId":"A","SecretAccessKey":"s"}"#[..], "Version 2"),
            (br#"{"AccessKeyId":"A","SecretAccessKey":"s"}"#, "no numeric Version"),
            (br#"{"Version":1,"SecretAccessKey":"s"}"#, "no AccessKeyId"),
            (br#"{"Version":1,"AccessKeyId":"A"}"#, "no SecretAccessKey"),
            (br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"s","Expiration":"soon"}"#, "not RFC 3339"),
            (br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"s","Expiration":"2020-01-01T00:00:00Z"}"#, "expired at 2020"),
            (b"", "empty JSON"),
            (b"AccessKeyId=A SecretAccessKey=supersecret", "invalid JSON"),
        ] {
            let e = parse(doc, now()).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        // A secret in a field of the wrong type must not appear in the message.
        let e = parse(
            br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":["hunter2-secret"]}"#,
            now(),
        )
        .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn stderr_is_escaped() {
        assert_eq!(escape("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
    }
}
