//! The container-credentials authorization token: random, written to a file
//! at start for SDKs (`AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).

use crate::secret::Secret;

/// A fresh random token for the container-credentials endpoint (256 bits, hex).
pub fn generate_authorization_token() -> Secret {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::new(hex::encode(bytes))
}

/// Writes the token to `path` atomically with `mode`, creating the directory.
pub fn write_authorization_token(
    path: &std::path::Path,
    token: &Secret,
    mode: u32,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::util::atomic_file::write_atomic(path, token.expose().as_bytes(), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_long() {
        let a = generate_authorization_token();
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, generate_authorization_token());
    }
}
