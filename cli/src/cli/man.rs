//! `s2iam man`: the manual pages (roff), generated from the clap definitions.
//!
//! Without `--dir`, `s2iam(1)` on stdout (`s2iam man | man -l -`). With `--dir DIR`,
//! one page per command for packaging: `s2iam.1`, `s2iam-serve.1`, `s2iam-s3-presign.1`,
//! ... (what `man s2iam-serve` finds once installed under `share/man/man1`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};

use super::{Cli, CliError};

/// `s2iam man` arguments.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Write every page (one per command and subcommand) into this directory
    /// (created if missing) and print their paths, instead of `s2iam(1)` on stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Writes the page(s): `s2iam(1)` to `out`, or every page into `args.dir`.
pub fn run(args: &ManArgs, out: &mut impl Write) -> Result<(), CliError> {
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            out.write_all(&page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            write_pages(&cmd, dir, out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Writes the page of `cmd` and of each of its subcommands, depth first, and prints
/// each path. Built first, so every subcommand carries its full name
/// (`s2iam-s3-presign`), which is the page's name and file name.
fn write_pages(cmd: &clap::Command, dir: &Path, out: &mut impl Write) -> Result<(), CliError> {
    let mut cmd = cmd.clone();
    cmd.build();
    pages(&cmd, dir, out)
}

fn pages(cmd: &clap::Command, dir: &Path, out: &mut impl Write) -> Result<(), CliError> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(&path, page)?;
    writeln!(out, "{}", path.display())?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        pages(sub, dir, out)?;
    }
    Ok(())
}
