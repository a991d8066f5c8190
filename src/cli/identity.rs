//! `s2iam identity`: the workload's cloud identity, no secrets.

use std::io::Write;

use clap::Args;

use s2iam::client::{Client, JwtOptions};
use s2iam::exchange::JwtType;

use super::flags::IdentityFlags;
use super::token::{jwt_options, token_request};
use super::{logging, CliError};

/// `s2iam identity`'s flags.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub identity: IdentityFlags,
    /// Output as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `s2iam identity`.
pub async fn run(args: &IdentityArgs, out: &mut impl Write) -> Result<(), CliError> {
    logging::init(args.identity.verbose);
    let options = jwt_options(&args.identity, None)?;
    let client = Client::new(JwtOptions {
        // Identity never reaches the auth service; any valid URL will do.
        server_url: Some(s2iam::env::endpoints::DEFAULT_AUTH_SERVER.into()),
        ..options
    })?;
    let req = token_request(&args.identity, JwtType::Api, "");
    let (_headers, identity) = client.identity(&req).await?;
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&identity).unwrap_or_default()
        )?;
    } else {
        writeln!(out, "provider:      {}", identity.provider)?;
        writeln!(out, "identifier:    {}", identity.identifier)?;
        writeln!(out, "account:       {}", identity.account_id)?;
        writeln!(out, "region:        {}", identity.region)?;
        writeln!(out, "resource type: {}", identity.resource_type)?;
        if let Some(source) = &identity.credential_source {
            writeln!(out, "credentials:   {source}")?;
        }
        for (k, v) in &identity.additional_claims {
            writeln!(out, "{k}: {v}")?;
        }
    }
    Ok(())
}
