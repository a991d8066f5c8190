//! `s2iam detect`: which cloud, how it was found, and (AWS) the STS endpoint.

use std::io::Write;

use clap::Args;

use s2iam::client::Error;
use s2iam::env::ProviderConfig;
use s2iam::provider::detect::{detect_provider, DetectOptions, DetectionMethod};
use s2iam::provider::CloudProvider;

use super::flags::{parse_provider, IdentityFlags};
use super::{logging, CliError};

/// `s2iam detect`'s flags.
#[derive(Debug, Args)]
pub struct DetectArgs {
    #[command(flatten)]
    pub identity: IdentityFlags,
    /// Output as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `s2iam detect`.
pub async fn run(args: &DetectArgs, out: &mut impl Write) -> Result<(), CliError> {
    logging::init(args.identity.verbose);
    let cfg = ProviderConfig::from_env();
    let opts = DetectOptions {
        timeout: args.identity.timeout,
        provider: if args.identity.force_detect {
            None
        } else {
            parse_provider(&args.identity)?
        },
        skip_fast_path: args.identity.force_detect,
    };
    let detection = detect_provider(&cfg, &opts).await.map_err(Error::from)?;
    let (method, evidence) = match &detection.method {
        DetectionMethod::Explicit => ("explicit", None),
        DetectionMethod::Environment(e) => ("environment", Some(e.clone())),
        DetectionMethod::Metadata => ("metadata", None),
    };
    let provider = detection.provider.kind();
    let credentials = detection.provider.credential_source_plan(&cfg);
    let sts = (provider == CloudProvider::Aws).then(|| aws_sts_endpoint(&cfg));
    if args.json {
        let mut doc = serde_json::json!({
            "provider": provider,
            "method": method,
            "evidence": evidence,
            "elapsed_ms": detection.elapsed.as_millis() as u64,
        });
        if let Some(c) = &credentials {
            doc["credential_source"] = serde_json::Value::from(c.as_str());
        }
        if let Some((endpoint, partition, region)) = &sts {
            doc["sts_endpoint"] = endpoint.clone().into();
            doc["sts_partition"] = partition.clone().into();
            doc["sts_region"] = region.clone().into();
        }
        writeln!(out, "{doc}")?;
    } else {
        let how = match (&detection.method, evidence) {
            (_, Some(e)) => format!("from the environment: {e}"),
            (DetectionMethod::Explicit, _) => "chosen explicitly".into(),
            _ => "its metadata service answered".into(),
        };
        writeln!(
            out,
            "{provider} ({how}; {} ms)",
            detection.elapsed.as_millis()
        )?;
        if let Some(c) = &credentials {
            writeln!(out, "credentials: {c}")?;
        }
        if let Some((endpoint, partition, region)) = &sts {
            writeln!(
                out,
                "STS endpoint: {endpoint} (partition {partition}, region {region})"
            )?;
        }
    }
    Ok(())
}

/// The STS endpoint the AWS identity will use, its partition and the region it
/// comes from (the environment's, else the default; an instance's own region is
/// only known once IMDS is asked, by `s2iam identity`).
fn aws_sts_endpoint(cfg: &ProviderConfig) -> (String, String, String) {
    let region = s2iam::provider::aws::region_from_env(cfg)
        .unwrap_or_else(|| s2iam::provider::aws::DEFAULT_REGION.to_string());
    match cfg.endpoints.sts(Some(&region)) {
        Ok(e) => (
            e.url,
            e.partition.unwrap_or("(explicit endpoint)").to_string(),
            region,
        ),
        Err(e) => (format!("none: {e}"), String::new(), region),
    }
}
