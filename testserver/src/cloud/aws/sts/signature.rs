//! Who signed the request: signature, session token and expiry.

use axum::http::HeaderMap;

use super::super::constant_time_eq;
use super::super::sigv4::{self, SigV4Error, SignedRequest};
use super::StsError;
use crate::cloud::{AwsCredential, MockCloud};

/// The signing credential, once its signature, session token and expiry check out.
/// Also how Google STS verifies an AWS subject token (`crate::cloud::gcp::sts`).
pub(crate) fn authenticate(
    cloud: &MockCloud,
    req: &SignedRequest<'_>,
) -> Result<AwsCredential, StsError> {
    let now = cloud.now_unix();
    let lookup = |akid: &str| cloud.credential(akid).map(|c| c.secret_access_key);
    let signer = sigv4::verify(req, "sts", lookup, now)?;
    let cred = cloud
        .credential(&signer.access_key_id)
        .ok_or(SigV4Error::InvalidClientTokenId)?;
    check_session_token(&cred, req.headers)?;
    if cred.expires.is_some_and(|exp| exp <= now) {
        return Err(StsError::ExpiredToken);
    }
    Ok(cred)
}

/// Session keys need their own token; long-term keys must not carry one.
fn check_session_token(cred: &AwsCredential, headers: &HeaderMap) -> Result<(), SigV4Error> {
    let presented = headers.get("x-amz-security-token").map(|v| v.as_bytes());
    let ok = match (&cred.session_token, presented) {
        (Some(expected), Some(got)) => constant_time_eq(expected.as_bytes(), got),
        (None, None) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(SigV4Error::InvalidClientTokenId)
    }
}
