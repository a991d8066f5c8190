//! placeholder: identity verification (being written)

use crate::cloud::MockCloud;

/// Verifies the identities clients present.
#[derive(Clone)]
pub struct Verifier {
    pub cloud: MockCloud,
    pub sts_url: String,
    pub http: reqwest::Client,
}
