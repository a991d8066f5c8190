//! `s2iam s3 ...`: S3 helpers (presigned URLs).

use std::io::Write;

use clap::{Args, Subcommand};

use super::flags::AwsSourceArgs;
use super::{logging, CliError};

/// `s2iam s3`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum S3Command {
    /// Print a presigned S3 URL (GET to download, PUT to upload).
    Presign(PresignArgs),
}

#[derive(Debug, Args)]
pub struct PresignArgs {
    #[command(flatten)]
    pub source: AwsSourceArgs,
    #[arg(long)]
    pub bucket: String,
    #[arg(long)]
    pub key: String,
    /// GET or PUT.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Validity: seconds or a duration (15m, 1h); default 1 hour, at most 7 days
    /// and the credentials' remaining lifetime.
    #[arg(long)]
    pub expires: Option<String>,
    /// Print {"url","method","expires_at","expires_in"} instead of the URL alone.
    #[arg(long)]
    pub json: bool,
}

/// `s2iam s3 presign`.
pub async fn run(command: &S3Command, out: &mut impl Write) -> Result<(), CliError> {
    logging::init(false);
    let S3Command::Presign(args) = command;
    let expires = args
        .expires
        .as_deref()
        .map(s2iam_sidecar::serve::aws_routes::parse_expires)
        .transpose()
        .map_err(CliError::Usage)?;
    let req = s2iam::aws_vending::PresignRequest {
        profile: args.source.profile.clone(),
        bucket: args.bucket.clone(),
        key: args.key.clone(),
        method: Some(args.method.clone()),
        expires,
    };
    let p = s2iam_sidecar::sidecar_client::aws_credentials::presign(&args.source.options(), &req)
        .await?;
    if args.json {
        writeln!(out, "{}", p.json())?;
    } else {
        writeln!(out, "{}", p.url)?;
    }
    Ok(())
}
