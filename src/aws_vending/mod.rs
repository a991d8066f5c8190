//! AWS and S3 credential vending: named credential profiles, each resolved to
//! short-lived AWS credentials, kept warm in a [`Cache`](crate::cache::Cache), served to SDKs (the
//! container-credentials protocol, `credential_process`, the Rust SDK provider
//! behind the `aws-sdk` feature) and used to presign S3 URLs.
//!
//! A profile's credentials come from one of three sources:
//! - `self`: the workload's own AWS identity (the SDKs' default chain, made
//!   temporary with `GetSessionToken` when the keys are long-lived);
//! - `assume_role`: `AssumeRole` into `role_arn` with the workload's credentials;
//! - `web_identity`: `AssumeRoleWithWebIdentity` into `role_arn` with the workload's
//!   GCP ID token or Azure access token, so a pod on GCP or Azure gets S3 access
//!   with no AWS keys anywhere.
//!
//! A profile may carry a session policy generated from simple rules (see
//! [`policy`]); STS then issues credentials that can do at most what both the role
//! and the rules allow, and presigning refuses buckets outside the rules.
//!
//! Credentials are never handed out with less than `min_remaining` (default and
//! minimum 5 minutes) left: SDKs refresh only seconds before `Expiration`
//! (see docs/architecture.md).
//!
//! | file | what |
//! |---|---|
//! | [`profile`] | the profile model and the `[aws]` settings |
//! | [`resolve`](mod@resolve) | one STS resolution of a profile |
//! | [`vendor`] | profiles through a cache; presigning |
//! | [`vended`] | the credentials and their JSON forms |
//! | [`error`] | reasons, with their HTTP status |
//! | [`policy`], [`presign`] | session policies from rules; SigV4 query signing |
//! | [`token_file`] | the container-credentials authorization token |
//!
//! Not to be confused with [`crate::provider::aws::chain`], the workload's *own*
//! AWS credential chain, which this module uses as one source.

pub mod error;
pub mod policy;
pub mod presign;
pub mod profile;
pub mod resolve;
pub mod token_file;
pub mod vended;
pub mod vendor;

pub use error::VendError;
pub use policy::{PolicyRule, S3Action};
pub use profile::{
    validate_profile_name, AwsProfile, AwsSettings, ProfileSource, DEFAULT_WEB_IDENTITY_AUDIENCE,
    MIN_REMAINING,
};
pub use resolve::resolve;
pub use token_file::{generate_authorization_token, write_authorization_token};
pub use vended::VendedCredentials;
pub use vendor::{
    AwsCache, AwsCredentialVendor, PresignRequest, Presigned, DEFAULT_PRESIGN_EXPIRES,
};
