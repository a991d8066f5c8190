//! `s2iam probe`: one `GET` to the sidecar over its Unix socket; success if it
//! answers 200. Made for Kubernetes exec probes:
//!
//! ```yaml
//! startupProbe:
//!   exec:
//!     command: ["/usr/local/bin/s2iam", "probe", "--socket", "/run/s2iam/s2iam.sock", "/readyz"]
//! ```
//!
//! Why not an `httpGet` probe: the kubelet probes from the node to the pod IP, so
//! it would need the sidecar to listen on a non-loopback TCP address, which would
//! serve tokens to the network (and `/healthz` cannot be separated from the token
//! routes there). The container image has no shell and no curl, so the binary
//! itself does the one request. The body of a non-200 answer (for `/readyz`, the
//! reasons) goes into the error, which the kubelet records in the pod's events.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes of the answer read at most (the probe routes answer a few hundred).
const MAX_ANSWER: u64 = 64 * 1024;
/// Characters of a failed answer's body put in the error.
const MAX_REASON: usize = 512;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe path {0:?} must start with '/'")]
    /// The path does not start with `/` or has spaces or line breaks.
    BadPath(String),
    #[error("cannot reach the sidecar on {socket}: {source}")]
    /// Nothing answers on the socket.
    Connect {
        /// The sidecar's socket.
        socket: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    #[error("{path} on {socket}: no answer within {timeout:?}")]
    /// No answer in time.
    Timeout {
        /// The method and route asked for.
        path: String,
        /// The sidecar's socket.
        socket: PathBuf,
        /// The deadline.
        timeout: Duration,
    },
    #[error("{path} on {socket}: {message}")]
    /// The answer is not HTTP/1.1.
    Protocol {
        /// The method and route asked for.
        path: String,
        /// The sidecar's socket.
        socket: PathBuf,
        /// The server's own words.
        message: String,
    },
    #[error("{path} answered {status}: {reason}")]
    /// The sidecar answered, but not 200.
    Status {
        /// The method and route asked for.
        path: String,
        /// The HTTP status.
        status: u16,
        /// What went wrong.
        reason: String,
    },
}

/// Runs `s2iam probe`: Ok only if the sidecar answered 200.
pub async fn probe(socket: &Path, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let (status, body) = get(socket, path, timeout).await?;
    ok_only(status, body, format!("GET {path}"))
}

/// `s2iam shutdown`: `POST /quitquitquit`; Ok only if the sidecar answered 200.
pub async fn quit(socket: &Path, timeout: Duration) -> Result<(), ProbeError> {
    let (status, body) = request(socket, "POST", "/quitquitquit", timeout).await?;
    ok_only(status, body, "POST /quitquitquit".into())
}

fn ok_only(status: u16, body: String, path: String) -> Result<(), ProbeError> {
    if status == 200 {
        Ok(())
    } else {
        Err(ProbeError::Status {
            path,
            status,
            reason: body.trim().chars().take(MAX_REASON).collect(),
        })
    }
}

/// One `GET path` over the Unix socket at `socket`: (status, body).
pub async fn get(
    socket: &Path,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), ProbeError> {
    request(socket, "GET", path, timeout).await
}

/// One bodiless request over the Unix socket at `socket`: (status, body).
async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), ProbeError> {
    if !path.starts_with('/') || path.contains(['\r', '\n', ' ']) {
        return Err(ProbeError::BadPath(path.to_string()));
    }
    let shown = format!("{method} {path}");
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| ProbeError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        let length = if method == "GET" {
            ""
        } else {
            "Content-Length: 0\r\n"
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: s2iam-probe\r\n{length}Connection: close\r\n\r\n"
        );
        let protocol = |message: String| ProbeError::Protocol {
            path: shown.clone(),
            socket: socket.to_path_buf(),
            message,
        };
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| protocol(format!("cannot send the request: {e}")))?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| protocol(format!("cannot read the answer: {e}")))?;
        parse_answer(&answer).map_err(protocol)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout {
            path: shown.clone(),
            socket: socket.to_path_buf(),
            timeout,
        })?
}

/// Status and body of an HTTP/1.1 answer.
pub(crate) fn parse_answer(answer: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP answer ({} bytes)", answer.len()))?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("bad status line {status_line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status = code
        .parse::<u16>()
        .map_err(|_| format!("bad status line {status_line:?}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let a = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\nnope!";
        assert_eq!(parse_answer(a).unwrap(), (503, "nope!".to_string()));
        let a = b"HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(parse_answer(a).unwrap(), (200, String::new()));
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_answer(b"").is_err());
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn refuses_paths_that_would_break_the_request_line() {
        for p in ["readyz", "/a b", "/a\r\nX: y"] {
            let err = get(Path::new("/nonexistent"), p, Duration::from_secs(1))
                .await
                .unwrap_err();
            assert!(matches!(err, ProbeError::BadPath(_)), "{p}: {err}");
        }
    }
}
