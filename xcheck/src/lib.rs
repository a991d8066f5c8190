//! Cross-checks of s2iam's hand-written AWS pieces against the AWS SDK crates.
//!
//! Only tests live here (`tests/`): s2iam's SigV4 signer and S3 presigner against
//! `aws-sigv4` on generated requests. This crate is a separate workspace member so
//! the SDK crates' newer minimum Rust version never reaches s2iam's own build.
