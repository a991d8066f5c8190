//! `s2iam credential-process`: AWS credentials for the SDKs' `credential_process`.

use std::io::Write;

use clap::Args;

use super::flags::AwsSourceArgs;
use super::{logging, CliError};

/// `s2iam credential-process`'s flags.
#[derive(Debug, Args)]
pub struct CredentialProcessArgs {
    #[command(flatten)]
    pub source: AwsSourceArgs,
}

/// `s2iam credential-process`: one line of JSON on stdout, nothing secret on stderr.
pub async fn run(args: &CredentialProcessArgs, out: &mut impl Write) -> Result<(), CliError> {
    logging::init(false);
    let v = s2iam_sidecar::sidecar_client::aws_credentials::credentials(
        &args.source.options(),
        &args.source.profile,
    )
    .await?;
    writeln!(out, "{}", v.credential_process_json())?;
    Ok(())
}
