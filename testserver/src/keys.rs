//! RSA signing keys for every issuer the mocks impersonate (the auth service, Google,
//! Azure AD, an EKS cluster's OIDC issuer), their JWKS documents, and JWT minting.
//!
//! Tokens are RS256 with a `kid` header, like the real issuers. Generating a 2048-bit
//! key costs a few hundred milliseconds, so [`KeySet::shared`] generates each issuer's
//! key once per process and hands out clones; a test server started with an explicit
//! key size (the `--key-size` flag) always gets fresh keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// Errors from key generation and token handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a {bits}-bit RSA key: {source}")]
    /// RSA key generation failed.
    Generate {
        /// The key size asked for.
        bits: usize,
        /// The cause.
        source: rsa::Error,
    },
    #[error("cannot encode an RSA key: {0}")]
    /// The key could not be encoded.
    Encode(String),
    #[error("cannot sign a token: {0}")]
    /// Signing failed.
    Sign(jsonwebtoken::errors::Error),
}

/// Who a key signs for. Each issuer has its own key, so a token minted by one mock is
/// never accepted where another issuer's token is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Issuer {
    /// The mock auth service.
    Auth,
    /// Google (GCE ID tokens).
    Google,
    /// Azure AD.
    Azure,
    /// EKS service-account tokens (IRSA).
    Eks,
}

/// One RSA key pair with everything needed to sign and verify RS256 tokens.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
    public_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh key. `kid` names it in token headers and the JWKS.
    pub fn generate(kid: &str, bits: usize) -> Result<Self, KeyError> {
        let mut rng = rand::thread_rng();
        let private = RsaPrivateKey::new(&mut rng, bits)
            .map_err(|source| KeyError::Generate { bits, source })?;
        let der = private
            .to_pkcs1_der()
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let public = private.to_public_key();
        let n = public.n().to_bytes_be();
        let e = public.e().to_bytes_be();
        let public_pem = public
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&n),
            "e": URL_SAFE_NO_PAD.encode(&e),
        });
        Ok(Self {
            kid: kid.to_string(),
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            decoding: DecodingKey::from_rsa_raw_components(&n, &e),
            jwk,
            public_pem,
        })
    }

    /// The key id in JWT headers and the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a PKCS#1 PEM (`RSA PUBLIC KEY`), as the reference test server
    /// serves it at `/info/public-key`.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// `{"keys":[...]}` with this key's JWK.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk.clone()] })
    }

    /// Signs `claims` as an RS256 JWT with this key's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(KeyError::Sign)
    }

    /// Verifies signature, `kid` and the time claims of `token`; issuer and audience
    /// checks are the caller's, through `validation`.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<T, jsonwebtoken::errors::Error> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidSignature.into());
        }
        jsonwebtoken::decode::<T>(token, &self.decoding, validation).map(|d| d.claims)
    }
}

/// The keys of every issuer the test server plays.
#[derive(Debug, Clone)]
pub struct KeySet {
    /// Signs the auth service's JWTs.
    pub auth: Arc<SigningKey>,
    /// Signs Google ID tokens.
    pub google: Arc<SigningKey>,
    /// Signs Azure AD tokens.
    pub azure: Arc<SigningKey>,
    /// Signs EKS service-account tokens.
    pub eks: Arc<SigningKey>,
}

impl KeySet {
    /// Fresh keys of `bits` bits for every issuer.
    pub fn generate(bits: usize) -> Result<Self, KeyError> {
        Ok(Self {
            auth: Arc::new(SigningKey::generate(&random_kid("auth"), bits)?),
            google: Arc::new(SigningKey::generate(&random_kid("google"), bits)?),
            azure: Arc::new(SigningKey::generate(&random_kid("azure"), bits)?),
            eks: Arc::new(SigningKey::generate(&random_kid("eks"), bits)?),
        })
    }

    /// Keys generated once per process and shared by every test server in it, so a
    /// test suite that starts hundreds of servers does not spend minutes on RSA.
    pub fn shared() -> Result<Self, KeyError> {
        static CACHE: OnceLock<Mutex<HashMap<usize, KeySet>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut guard = cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(keys) = guard.get(&2048) {
            return Ok(keys.clone());
        }
        let keys = Self::generate(2048)?;
        guard.insert(2048, keys.clone());
        Ok(keys)
    }

    /// The key of `issuer`.
    pub fn get(&self, issuer: Issuer) -> &Arc<SigningKey> {
        match issuer {
            Issuer::Auth => &self.auth,
            Issuer::Google => &self.google,
            Issuer::Azure => &self.azure,
            Issuer::Eks => &self.eks,
        }
    }
}

fn random_kid(prefix: &str) -> String {
    format!("{prefix}-{}", crate::util::random_hex(8))
}

/// Reads a JWT's header and claims without verifying anything, to decide which
/// verifier it should go to. Never trust the result for anything else.
pub fn peek_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_round_trips_and_rejects_other_keys() {
        let keys = KeySet::shared().unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let token = keys
            .google
            .sign(&json!({"sub": "x", "aud": "a", "exp": now + 60}))
            .unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["a"]);
        let claims: Value = keys.google.verify(&token, &v).unwrap();
        assert_eq!(claims["sub"], "x");
        assert!(keys.azure.verify::<Value>(&token, &v).is_err());
        assert_eq!(peek_claims(&token).unwrap()["sub"], "x");
        assert!(peek_claims("not.a-jwt").is_none());
    }

    #[test]
    fn debug_does_not_print_key_material() {
        let keys = KeySet::shared().unwrap();
        let s = format!("{:?}", keys.auth);
        assert!(s.contains("kid"));
        assert!(!s.contains("BEGIN"));
    }
}
