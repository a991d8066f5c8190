//! The audit trail (`[audit] path`): one JSON line per credential handed to a
//! local caller — which surface, which peer (uid on the Unix socket, address on
//! TCP), what kind of credential, a fingerprint and its expiry — and never the
//! credential itself.
//!
//! The fingerprint of a JWT is the SHA-256 of its signature segment, first 16
//! hex digits: whoever holds the token (the application, the auth service that
//! issued it) can compute it and find the line, nobody can get the token back
//! from it. It is computed once per token, when the token is fetched
//! ([`fingerprint`]), so an audited hot-path answer costs one formatted line
//! handed to a channel. A writer task appends the lines to the file (created
//! with mode 0600, opened for append, so `logrotate copytruncate` works); when
//! it falls behind by more than [`QUEUE`] lines, lines are dropped and counted
//! rather than slowing callers down.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use s2iam::env::Clock;
use tokio::sync::mpsc;

/// Lines the writer may fall behind by before lines are dropped.
pub const QUEUE: usize = 4096;

/// Where a credential was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The token API on the Unix socket.
    Unix,
    /// The token API on loopback TCP.
    Tcp,
    /// The AWS container-credentials endpoint.
    AwsCredentials,
}

impl Surface {
    fn as_str(self) -> &'static str {
        match self {
            Surface::Unix => "unix",
            Surface::Tcp => "tcp",
            Surface::AwsCredentials => "aws_credentials",
        }
    }
}

/// The audit trail; `Audit::off()` when not configured (one branch per answer).
#[derive(Debug)]
pub struct Audit {
    tx: Option<mpsc::Sender<String>>,
    dropped: AtomicU64,
    /// The injected wall clock (the line's `time`).
    clock: Option<Arc<dyn Clock>>,
}

/// Why the audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path} (audit.path): {source}")]
pub struct AuditError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl Audit {
    /// No audit trail.
    pub fn off() -> Self {
        Self {
            tx: None,
            dropped: AtomicU64::new(0),
            clock: None,
        }
    }

    /// Appends to `path` (created 0600) from a writer task; lines are timed by
    /// `clock`.
    pub fn to_file(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, AuditError> {
        let mut file = open(path).map_err(|source| AuditError {
            path: path.to_path_buf(),
            source,
        })?;
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let mut failed = false;
            while let Some(line) = rx.blocking_recv() {
                match file.write_all(line.as_bytes()) {
                    Ok(()) => failed = false,
                    Err(e) if !failed => {
                        failed = true; // logged once per run of failures
                        tracing::error!(path = %shown, error = %e, "cannot write the audit log");
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(Self {
            tx: Some(tx),
            dropped: AtomicU64::new(0),
            clock: Some(clock),
        })
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records one credential handed to `peer` over `surface`: `kind` says which
    /// (`database`, `api`, `aws`), `fingerprint` is from [`fingerprint`].
    pub fn issued(
        &self,
        surface: Surface,
        peer: &dyn fmt::Display,
        kind: &str,
        fingerprint: &str,
        expires_at: SystemTime,
    ) {
        let (Some(tx), Some(clock)) = (&self.tx, &self.clock) else {
            return;
        };
        let line = serde_json::json!({
            "time": s2iam::util::rfc3339(clock.now()),
            "event": "credential_issued",
            "surface": surface.as_str(),
            "peer": peer.to_string(),
            "kind": kind,
            "fingerprint": fingerprint,
            "expires_at": s2iam::util::rfc3339(expires_at),
        });
        if tx.try_send(format!("{line}\n")).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The fingerprint of a credential: SHA-256 of `secret_part`, the first 16 hex
/// digits. For a JWT pass its signature segment ([`jwt_signature`]).
pub fn fingerprint(secret_part: &str) -> String {
    let digest = Sha256::digest(secret_part.as_bytes());
    hex::encode(&digest[..8])
}

/// The signature segment of a JWT (the whole string if it has no dots).
pub fn jwt_signature(jwt: &str) -> &str {
    jwt.rsplit('.').next().unwrap_or(jwt)
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// One audit line for a token handed to `caller` (hot path and router alike).
pub(super) fn audit_token(
    state: &super::AppState,
    tcp: bool,
    caller: super::limits::Caller,
    jwt_type: s2iam::exchange::JwtType,
    fingerprint: &str,
    expires_at: std::time::SystemTime,
) {
    let kind = match jwt_type {
        s2iam::exchange::JwtType::Api => "api",
        s2iam::exchange::JwtType::Database => "database",
    };
    state.audit.issued(
        if tcp { Surface::Tcp } else { Surface::Unix },
        &caller,
        kind,
        fingerprint,
        expires_at,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_stable_short_and_not_the_token() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz";
        let f = fingerprint(jwt_signature(jwt));
        assert_eq!(f.len(), 16);
        assert_eq!(f, fingerprint("c2lnbmF0dXJlLWJ5dGVz"));
        assert!(!jwt.contains(&f));
        assert_ne!(f, fingerprint(jwt_signature("a.b.other")));
    }

    #[tokio::test]
    async fn a_line_per_credential_and_never_the_credential() {
        let dir = std::env::temp_dir().join(format!("s2iam-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        let audit = Audit::to_file(&path, Arc::new(s2iam::env::SystemClock)).unwrap();
        let secret = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.dGhlLXNpZ25hdHVyZQ";
        let f = fingerprint(jwt_signature(secret));
        audit.issued(
            Surface::Unix,
            &super::super::limits::Caller::Uid(1000),
            "database",
            &f,
            s2iam::env::Clock::now(&s2iam::env::SystemClock),
        );
        audit.issued(
            Surface::Tcp,
            &super::super::limits::Caller::Addr("127.0.0.1".parse().unwrap()),
            "api",
            &f,
            s2iam::env::Clock::now(&s2iam::env::SystemClock),
        );
        drop(audit); // the writer drains and stops
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["peer"], "uid:1000");
        assert_eq!(lines[0]["surface"], "unix");
        assert_eq!(lines[1]["peer"], "127.0.0.1");
        assert_eq!(lines[1]["fingerprint"], f.as_str());
        assert!(!text.contains("dGhlLXNpZ25hdHVyZQ") && !text.contains("eyJ"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
