//! `s2iam completions bash|zsh|fish`: the shell completion script, generated from the
//! same clap definitions that parse the command line, so it cannot drift from them.
//! Packagers install it where the shell looks (README "Release and supply chain").

use std::io::Write;

use clap::{Args, CommandFactory, ValueEnum};

use super::{Cli, CliError};

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// bash (bash-completion: `/usr/share/bash-completion/completions/s2iam`).
    Bash,
    /// zsh (`_s2iam` in a directory of `$fpath`).
    Zsh,
    /// fish (`~/.config/fish/completions/s2iam.fish`).
    Fish,
}

/// `s2iam completions` arguments.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script for `args.shell` to `out`.
pub fn run(args: &CompletionsArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut cmd = Cli::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "s2iam", &mut script);
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}
