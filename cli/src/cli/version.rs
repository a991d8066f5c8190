//! `s2iam version`: which build this is. `s2iam --version` stays the one line
//! `s2iam 0.1.0`; `s2iam version --json` adds the commit, the features, the target and
//! the compiler (from build.rs: `unknown` for a commit built without git, as from a
//! crate tarball).

use std::io::Write;

use clap::Args;
use serde::Serialize;

use super::CliError;

/// `s2iam version` arguments.
#[derive(Debug, Clone, Args)]
pub struct VersionArgs {
    /// One JSON object: version, commit, features, target, rustc.
    #[arg(long)]
    pub json: bool,
}

/// The build, as `version --json` prints it.
#[derive(Debug, Serialize)]
struct Build {
    version: &'static str,
    commit: &'static str,
    features: Vec<&'static str>,
    target: &'static str,
    rustc: &'static str,
}

fn build() -> Build {
    let features = env!("S2IAM_BUILD_FEATURES");
    Build {
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("S2IAM_BUILD_COMMIT"),
        features: features.split(',').filter(|f| !f.is_empty()).collect(),
        target: env!("S2IAM_BUILD_TARGET"),
        rustc: env!("S2IAM_BUILD_RUSTC"),
    }
}

/// Prints the version line, or the build as JSON.
pub fn run(args: &VersionArgs, out: &mut impl Write) -> Result<(), CliError> {
    let b = build();
    if args.json {
        let json = serde_json::to_string(&b).map_err(std::io::Error::other)?;
        writeln!(out, "{json}")?;
    } else {
        writeln!(
            out,
            "s2iam {} (commit {}, {}, features {}, {})",
            b.version,
            b.commit,
            b.target,
            b.features.join(","),
            b.rustc
        )?;
    }
    Ok(())
}
