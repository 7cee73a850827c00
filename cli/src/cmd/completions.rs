//! `qplay completions SHELL`: a completion script for bash, zsh, fish, elvish or PowerShell.

use crate::common::CliResult;
use clap_complete::Shell;

/// Print a shell completion script (e.g. `qplay completions bash > /etc/bash_completion.d/qplay`)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    shell: Shell,
}

pub fn run<C: clap::CommandFactory>(a: &Args) -> CliResult<()> {
    let mut cmd = C::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "qplay", &mut script);
    crate::out!("{}", String::from_utf8_lossy(&script).trim_end());
    Ok(())
}
