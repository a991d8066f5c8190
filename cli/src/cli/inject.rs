//! `s2iam inject`: Kubernetes manifests in, the same manifests with s2iam added to
//! every annotated workload out (see `s2iam_sidecar::kube`).

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::Args;

use super::CliError;

/// `s2iam inject [-f FILE] [--image IMAGE] [--update]`.
#[derive(Debug, Clone, Args)]
pub struct InjectArgs {
    /// The manifests (multi-document YAML; `-` or nothing: standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The sidecar image for workloads whose `s2iam.singlestore.com/image`
    /// annotation does not name one.
    #[arg(long, default_value_t = s2iam_sidecar::kube::inject::default_image())]
    pub image: String,
    /// Replace an s2iam that is already in a pod template (default: leave it alone).
    #[arg(long)]
    pub update: bool,
}

/// Reads, injects, writes to `out`; a one-line summary goes to stderr.
pub fn run(args: &InjectArgs, out: &mut impl Write) -> Result<(), CliError> {
    // Manifests of a few MiB at most; a bound keeps a wrong pipe from eating memory.
    const MAX_INPUT: u64 = 64 << 20;
    let mut text = String::new();
    let read = match args.file.as_deref() {
        None => std::io::stdin().take(MAX_INPUT).read_to_string(&mut text),
        Some(p) if p.as_os_str() == "-" => {
            std::io::stdin().take(MAX_INPUT).read_to_string(&mut text)
        }
        Some(p) => std::fs::File::open(p).and_then(|f| f.take(MAX_INPUT).read_to_string(&mut text)),
    };
    read.map_err(|e| {
        CliError::Usage(format!(
            "cannot read {}: {e}",
            args.file
                .as_deref()
                .map_or("standard input".into(), |p| p.display().to_string())
        ))
    })?;
    let options = s2iam_sidecar::kube::Options {
        image: args.image.clone(),
        update: args.update,
    };
    let (output, report) = s2iam_sidecar::kube::yaml::inject_stream(&text, &options)?;
    out.write_all(output.as_bytes())?;
    out.flush()?;
    let count = |o| report.outcomes.iter().filter(|x| **x == o).count();
    eprintln!(
        "s2iam inject: {} injected, {} already had s2iam, {} not annotated",
        count(s2iam_sidecar::kube::Outcome::Injected),
        count(s2iam_sidecar::kube::Outcome::AlreadyPresent),
        count(s2iam_sidecar::kube::Outcome::NotAnnotated),
    );
    Ok(())
}
