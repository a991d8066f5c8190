//! AWS Signature Version 4: verification (the mock STS checks every request) and
//! signing (the mock auth service calls STS with the credentials a client presented).
//! (being written)

/// Credentials to sign with.
#[derive(Clone)]
pub struct SigningCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Signs a request: returns the headers to add (`Authorization`, `X-Amz-Date`,
/// `X-Amz-Security-Token` when there is a session token, `X-Amz-Content-Sha256`
/// is not added). `headers` must already contain `host`; `now_unix` is the signing
/// time.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    _method: &str,
    _url: &url::Url,
    _headers: &[(String, String)],
    _body: &[u8],
    _creds: &SigningCredentials,
    _region: &str,
    _service: &str,
    _now_unix: u64,
) -> Vec<(String, String)> {
    unimplemented!("being written")
}
