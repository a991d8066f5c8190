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
        write!(out, "{}", identity_text(&identity))?;
    }
    Ok(())
}

/// The identity in words: one `key: value` per line, values aligned, keys as
/// `--json` names them (the additional claims under their own names).
fn identity_text(identity: &s2iam::provider::CloudIdentity) -> String {
    let mut lines: Vec<(String, String)> = vec![
        ("provider".into(), identity.provider.to_string()),
        ("identifier".into(), identity.identifier.clone()),
        ("account_id".into(), identity.account_id.clone()),
        ("region".into(), identity.region.clone()),
        ("resource_type".into(), identity.resource_type.clone()),
    ];
    if let Some(source) = &identity.credential_source {
        lines.push(("credential_source".into(), source.clone()));
    }
    lines.extend(
        identity
            .additional_claims
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{:<w$} {v}\n", format!("{k}:"), w = width.saturating_add(1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_lines_are_aligned_with_json_keys() {
        let mut id = s2iam::provider::CloudIdentity {
            provider: s2iam::provider::CloudProvider::Aws,
            identifier: "arn:aws:sts::1:assumed-role/r/s".into(),
            account_id: "1".into(),
            region: String::new(),
            resource_type: "assumed-role".into(),
            additional_claims: Default::default(),
            credential_source: Some("instance metadata (IMDS) role".into()),
        };
        id.additional_claims
            .insert("RoleSessionName".into(), "s".into());
        let text = identity_text(&id);
        let columns: Vec<usize> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(_, rest)| !rest.trim().is_empty())
            .map(|(k, rest)| k.len() + 1 + rest.len() - rest.trim_start().len())
            .collect();
        assert_eq!(columns.len(), 6, "{text}");
        assert!(columns.iter().all(|c| *c == columns[0]), "{text}");
        assert!(text.contains("resource_type:"), "{text}");
        assert!(text.contains("credential_source:"), "{text}");
        assert!(!text.contains("resource type"), "{text}");
    }
}
