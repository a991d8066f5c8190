//! The client of a running sidecar: what other processes on the machine use to
//! ask `s2iam serve` over its Unix socket.
//!
//! - [`socket`]: one `GET` over the Unix socket (`s2iam probe`);
//! - [`aws_credentials`]: AWS credentials and presigned S3 URLs from the sidecar
//!   (`s2iam credential-process`, `s2iam s3 presign`), resolved in-process from
//!   the config file when no sidecar answers;
//! - `sdk` (feature `aws-sdk`): the same as a credentials provider for the AWS
//!   SDK for Rust.
//!
//! It sits above [`crate::config`] (the in-process fallback loads the sidecar's
//! config); nothing below imports it.

use std::path::{Path, PathBuf};

pub mod aws_credentials;
#[cfg(feature = "aws-sdk")]
pub mod sdk;
pub mod socket;

/// The sidecar's socket: the flag, else `S2IAM_SOCKET` (from the injected
/// environment), else `/run/s2iam/s2iam.sock`.
pub fn default_socket(flag: Option<&Path>, env: &s2iam::env::Env) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| env.get("S2IAM_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_SOCKET))
}
