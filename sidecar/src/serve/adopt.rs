//! A token that survives restarts: at start, a configured token whose sink already
//! holds a token s2iam wrote earlier is *adopted* instead of exchanged again, so an
//! init container (`serve --once`) followed by the sidecar makes one exchange, and
//! a restarted sidecar serves at once, with none.
//!
//! The signature is not checked (that needs the auth service's JWKS; the token goes
//! to the same services that would reject a bad one), so everything else is:
//!
//! - the file is a regular file owned by the sink's owner (s2iam itself unless
//!   `sink_owner`), not writable by group or others, at most 64 KiB;
//! - it is JWT-shaped, its `jwtType` claim (the token's audience: the database or
//!   the API) is the configured type, and a database token's `workspaceGroupID` is
//!   the configured workspace group;
//! - `iat` and `exp` are present and sane, and the token is before the point where
//!   the cache would refresh it anyway (`cache.refresh_at` of its lifetime) with at
//!   least `cache.min_remaining` left;
//! - tokens for an assumed role are never adopted (the claims do not name the role).
//!
//! Anything else (no file, a stale or foreign token) is an exchange, as before.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Sink;
use s2iam::cache::CachePolicy;
use s2iam::client::TokenRequest;
use s2iam::secret::Secret;
use s2iam::token::{Claims, Token};

/// Largest sink file read.
const MAX_SINK: u64 = 64 * 1024;

/// Why a sink's token was not adopted (for the log; never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdopted {
    /// No file (the usual first start).
    #[error("no token file yet")]
    Missing,
    /// The file is not one s2iam can trust to be its own.
    #[error("the file is not s2iam's own: {0}")]
    NotOurs(String),
    /// Not a JWT, or claims missing.
    #[error("not a usable JWT: {0}")]
    Malformed(String),
    /// A token for another type or workspace group.
    #[error("a token for something else: {0}")]
    Other(String),
    /// Too close to its refresh point or expiry.
    #[error("too close to expiry ({0} s left)")]
    Expiring(u64),
    /// Assumed-role tokens are always exchanged.
    #[error("tokens for an assumed role are not adopted")]
    AssumedRole,
}

/// The token in `sink` if it may stand in for an exchange of `req` at `now`.
pub fn adopt(
    req: &TokenRequest,
    sink: &Sink,
    policy: &CachePolicy,
    now: SystemTime,
) -> Result<Token, NotAdopted> {
    if req.assume_role.is_some() {
        return Err(NotAdopted::AssumedRole);
    }
    let text = read_own(sink)?;
    let jwt = text.trim();
    let claims = Claims::decode_checked(jwt).map_err(|e| NotAdopted::Malformed(e.to_string()))?;
    if claims.jwt_type.as_deref() != Some(req.jwt_type.to_string().as_str()) {
        return Err(NotAdopted::Other(format!(
            "jwtType {:?}",
            claims.jwt_type.as_deref().map(s2iam::logging::field)
        )));
    }
    if claims.workspace_group_id != req.workspace_group_id {
        return Err(NotAdopted::Other("another workspace group".into()));
    }
    let (Some(iat), Some(exp)) = (claims.iat, claims.exp) else {
        return Err(NotAdopted::Malformed("no iat or exp".into()));
    };
    let at = |secs: u64| {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(secs.min(u64::from(u32::MAX))))
            .unwrap_or(UNIX_EPOCH)
    };
    let (issued, expires) = (at(iat), at(exp));
    let lifetime = expires
        .duration_since(issued)
        .map_err(|_| NotAdopted::Malformed("exp before iat".into()))?;
    let left = expires.duration_since(now).unwrap_or(Duration::ZERO);
    // The cache would refresh at refresh_at of the lifetime: adopt only before that.
    let fraction = (1.0 - policy.refresh_at).clamp(0.0, 1.0);
    let refresh_left =
        Duration::try_from_secs_f64(lifetime.as_secs_f64() * fraction).unwrap_or(lifetime);
    if left <= policy.min_remaining.max(refresh_left) || now < issued {
        return Err(NotAdopted::Expiring(left.as_secs()));
    }
    Ok(Token::issued(Secret::new(jwt), issued, expires, now))
}

/// The sink's text, if the file is s2iam's own (see the module documentation).
fn read_own(sink: &Sink) -> Result<String, NotAdopted> {
    let meta = match std::fs::symlink_metadata(&sink.path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NotAdopted::Missing),
        Err(e) => return Err(NotAdopted::NotOurs(e.to_string())),
    };
    let owner = sink
        .owner
        .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    if !meta.file_type().is_file() {
        return Err(NotAdopted::NotOurs("not a regular file".into()));
    }
    if meta.uid() != owner {
        return Err(NotAdopted::NotOurs(format!(
            "owned by uid {}, not {owner}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(NotAdopted::NotOurs("writable by group or others".into()));
    }
    let mut text = String::new();
    std::fs::File::open(&sink.path)
        .and_then(|f| f.take(MAX_SINK).read_to_string(&mut text))
        .map_err(|e| NotAdopted::NotOurs(e.to_string()))?;
    Ok(text)
}
