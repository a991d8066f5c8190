//! `s2iam-jwt-check`: checks a database JWT the way SingleStore's JWT login
//! does, for the real MariaDB server of the tests (its PAM module,
//! `scripts/lib/realdb/pam_s2iam_jwt.c`, runs this once per login with the token
//! on standard input).
//!
//! The token must be an RS256 JWT signed by a key of the JWKS file (the mock auth
//! service's, fetched once by `scripts/lib/realdb.sh`), unexpired (`exp`, no
//! leeway), of `jwtType` `database`, for `--workspace-group`, naming `--user`
//! (`username`, else `sub`). Exit 0 when it is; else 1, with the reason on
//! standard error (which the server does not pass on: a client sees its own
//! "Access denied" message).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Check the database JWT on standard input.
#[derive(Debug, Parser)]
#[command(name = "s2iam-jwt-check")]
struct Args {
    /// JWKS file (`{"keys": [...]}`) of the issuer.
    #[arg(long)]
    jwks: PathBuf,
    /// The workspace group the JWT must be for.
    #[arg(long)]
    workspace_group: String,
    /// The database user logging in (the JWT must name it).
    #[arg(long)]
    user: String,
}

/// JWTs are a few kilobytes; anything much larger is not one.
const MAX_TOKEN: u64 = 64 * 1024;

fn main() {
    let args = Args::parse();
    if let Err(e) = check(&args) {
        eprintln!("s2iam-jwt-check: refused for user {:?}: {e:#}", args.user);
        std::process::exit(1);
    }
}

fn check(args: &Args) -> anyhow::Result<()> {
    let mut token = String::new();
    std::io::stdin()
        .take(MAX_TOKEN)
        .read_to_string(&mut token)
        .context("reading the token")?;
    let token = token.trim_end_matches(['\0', '\n', '\r']);
    let jwks: JwkSet = serde_json::from_slice(
        &std::fs::read(&args.jwks).with_context(|| format!("{}", args.jwks.display()))?,
    )
    .context("the JWKS file")?;
    let header = jsonwebtoken::decode_header(token).context("not a JWT")?;
    if header.alg != Algorithm::RS256 {
        bail!("signed with {:?}, not RS256", header.alg);
    }
    let kid = header.kid.context("the JWT has no kid")?;
    let jwk = jwks.find(&kid).context("no key with the JWT's kid")?;
    let key = DecodingKey::from_jwk(jwk).context("the JWKS key")?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp"]);
    let claims: Value = jsonwebtoken::decode(token, &key, &validation)
        .context("the JWT is not valid")?
        .claims;
    if claims.get("jwtType").and_then(Value::as_str) != Some("database") {
        bail!("not a database JWT");
    }
    let wg = claims.get("workspaceGroupID").and_then(Value::as_str);
    if wg != Some(args.workspace_group.as_str()) {
        bail!("for workspace group {wg:?}, not {:?}", args.workspace_group);
    }
    let user = claims
        .get("username")
        .or_else(|| claims.get("sub"))
        .and_then(Value::as_str);
    if user != Some(args.user.as_str()) {
        bail!("the JWT names user {user:?}");
    }
    Ok(())
}
