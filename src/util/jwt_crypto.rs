//! jsonwebtoken's cryptography on ring, the library rustls already brings in.
//!
//! Why hand-written: jsonwebtoken 10 ships two backends, RustCrypto (`rsa`, `p256`,
//! `p384`, `ed25519-dalek` and their bignum and curve crates) and aws-lc-rs (a C
//! library). The first puts `rsa` in the binary, whose private-key operations are not
//! constant time (RUSTSEC-2023-0071), and a second implementation of every primitive
//! ring already has; the second a second C crypto library. jsonwebtoken lets a process
//! install its own provider (`CryptoProvider`); this one maps each algorithm to ring's
//! (constant-time RSA, ECDSA, Ed25519, HMAC) in a page. See README "Binary size".
//!
//! Verification: RS/PS 256/384/512 (2048 to 8192-bit keys, as ring requires), ES256,
//! ES384, EdDSA, HS256/384/512. Signing: RS/PS and HS (s2iam signs only RS256; the mock
//! servers of the `dev` feature sign RS256 through this provider too). ECDSA and EdDSA
//! signing answer `InvalidAlgorithm`.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::error::Unspecified;
use ring::signature as sig;

/// The provider: ring for every signature jsonwebtoken checks or makes.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    // Thumbprints and public parts of private keys: never used by s2iam.
    jwk_utils: JwkUtils::new_unimplemented(),
};

/// Makes [`PROVIDER`] the process's jsonwebtoken provider, before the first signature
/// is checked. A no-op when a provider is already installed (this one, or the one a
/// program linking the library chose first).
pub fn install() {
    // Err only means "already installed": nothing to do.
    let _ = PROVIDER.install_default();
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

struct RingSigner {
    alg: Algorithm,
    key: EncodingKey,
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    // The key decides the family, never the token's header (algorithm confusion:
    // an RSA public key used as an HMAC secret).
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.clone(),
    }))
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let family = alg.family();
    if key.family() != family || !matches!(family, AlgorithmFamily::Rsa | AlgorithmFamily::Hmac) {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(RingSigner {
        alg: *alg,
        key: key.clone(),
    }))
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        verify(self.alg, &self.key, msg, signature).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        sign(self.alg, &self.key, msg).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn hmac_algorithm(alg: Algorithm) -> ring::hmac::Algorithm {
    match alg {
        Algorithm::HS384 => ring::hmac::HMAC_SHA384,
        Algorithm::HS512 => ring::hmac::HMAC_SHA512,
        _ => ring::hmac::HMAC_SHA256,
    }
}

fn verify(
    alg: Algorithm,
    key: &DecodingKey,
    msg: &[u8],
    signature: &[u8],
) -> Result<(), Unspecified> {
    let rsa: &'static sig::RsaParameters = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let secret = key.try_get_hmac_secret().map_err(|_| Unspecified)?;
            let key = ring::hmac::Key::new(hmac_algorithm(alg), secret);
            return ring::hmac::verify(&key, msg, signature);
        }
        Algorithm::ES256 => return public(key, &sig::ECDSA_P256_SHA256_FIXED, msg, signature),
        Algorithm::ES384 => return public(key, &sig::ECDSA_P384_SHA384_FIXED, msg, signature),
        Algorithm::EdDSA => return public(key, &sig::ED25519, msg, signature),
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
    };
    match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => {
            sig::UnparsedPublicKey::new(rsa, der).verify(msg, signature)
        }
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            sig::RsaPublicKeyComponents { n, e }.verify(rsa, msg, signature)
        }
    }
}

/// ECDSA and Ed25519: the key is the raw public point (how jsonwebtoken keeps them).
fn public(
    key: &DecodingKey,
    alg: &'static dyn sig::VerificationAlgorithm,
    msg: &[u8],
    signature: &[u8],
) -> Result<(), Unspecified> {
    match key.kind() {
        DecodingKeyKind::SecretOrDer(point) => {
            sig::UnparsedPublicKey::new(alg, point).verify(msg, signature)
        }
        DecodingKeyKind::RsaModulusExponent { .. } => Err(Unspecified),
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, msg: &[u8]) -> Result<Vec<u8>, Unspecified> {
    let encoding: &'static dyn sig::RsaEncoding = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let secret = key.try_get_hmac_secret().map_err(|_| Unspecified)?;
            let key = ring::hmac::Key::new(hmac_algorithm(alg), secret);
            return Ok(ring::hmac::sign(&key, msg).as_ref().to_vec());
        }
        Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_SHA512,
        Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => return Err(Unspecified),
    };
    // jsonwebtoken keeps RSA private keys as PKCS#1 DER (from PKCS#1 or PKCS#8 PEM).
    let pair = sig::RsaKeyPair::from_der(key.inner()).map_err(|_| Unspecified)?;
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        encoding,
        &ring::rand::SystemRandom::new(),
        msg,
        &mut signature,
    )?;
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn split(token: &str) -> (&str, Vec<u8>) {
        let (message, signature) = token.rsplit_once('.').unwrap();
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .unwrap();
        (message, signature)
    }

    #[test]
    fn rs256_from_the_mock_issuer_verifies_by_jwk_and_by_pem_and_a_changed_claim_fails() {
        let key = s2iam_testserver::keys::SigningKey::generate("k1", 2048).unwrap();
        let token = key.sign(&serde_json::json!({"sub": "a"})).unwrap();
        let (message, signature) = split(&token);
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(key.jwks()).unwrap();
        let by_jwk = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let by_pem = DecodingKey::from_rsa_pem(key.public_pem().as_bytes()).unwrap();
        for decoding in [&by_jwk, &by_pem] {
            assert!(verify(Algorithm::RS256, decoding, message.as_bytes(), &signature).is_ok());
            let changed = format!("{message}x");
            assert!(verify(Algorithm::RS256, decoding, changed.as_bytes(), &signature).is_err());
            // PKCS#1 v1.5 signatures are not PSS ones.
            assert!(verify(Algorithm::PS256, decoding, message.as_bytes(), &signature).is_err());
        }
    }

    #[test]
    fn hmac_signs_and_verifies_and_a_changed_message_fails() {
        let secret = b"a shared secret of enough length";
        let signature = sign(Algorithm::HS256, &EncodingKey::from_secret(secret), b"m").unwrap();
        let decoding = DecodingKey::from_secret(secret);
        assert!(verify(Algorithm::HS256, &decoding, b"m", &signature).is_ok());
        assert!(verify(Algorithm::HS256, &decoding, b"n", &signature).is_err());
        assert!(verify(Algorithm::HS384, &decoding, b"m", &signature).is_err());
    }

    #[test]
    fn an_rsa_key_is_never_an_hmac_secret() {
        let key = DecodingKey::from_rsa_raw_components(&[0xc5; 256], &[1, 0, 1]);
        assert!(new_verifier(&Algorithm::HS256, &key).is_err());
        assert!(new_verifier(&Algorithm::RS256, &key).is_ok());
        let secret = DecodingKey::from_secret(b"k");
        assert!(new_verifier(&Algorithm::RS256, &secret).is_err());
    }

    #[test]
    fn ecdsa_and_eddsa_signing_is_refused() {
        let key = EncodingKey::from_ec_der(&[0; 32]);
        assert!(new_signer(&Algorithm::ES256, &key).is_err());
        let key = EncodingKey::from_ed_der(&[0; 32]);
        assert!(new_signer(&Algorithm::EdDSA, &key).is_err());
    }
}
