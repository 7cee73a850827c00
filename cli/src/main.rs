//! `qplay`: the command-line face of qplay-core. See `qplay --help`; each subcommand is one file in
//! `cmd/`, and this file only dispatches.
//!
//! Exit codes: 0 on success, 1 when a file, the model or the computation fails (one line on
//! stderr), 2 for usage errors (unknown or missing flags, bad values, flags that do not combine).

mod cmd;
mod common;
mod data;
mod progress;

use clap::Parser;
use common::{CliError, Global};
use std::process::ExitCode;

/// Quantize, run and measure small ONNX models: the same core as the qplay playground.
#[derive(Parser, Debug)]
#[command(name = "qplay", version, propagate_version = true, max_term_width = 110)]
#[command(after_help = "Exit codes: 0 success, 1 error (one line on stderr), 2 usage error.\nSee `qplay help <COMMAND>` for a command's flags.")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    Inspect(cmd::inspect::Args),
    Run(cmd::run::Args),
    Quantize(cmd::quantize::Args),
    Eval(cmd::eval::Args),
    Compress(cmd::compress::Args),
    Train(cmd::train::Args),
    MixedPrecision(cmd::mixed::Args),
    Search(cmd::search::Args),
    Bench(cmd::bench::Args),
    Completions(cmd::completions::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let g = &cli.global;
    let result = match &cli.command {
        Command::Inspect(a) => cmd::inspect::run(a, g),
        Command::Run(a) => cmd::run::run(a, g),
        Command::Quantize(a) => cmd::quantize::run(a, g),
        Command::Eval(a) => cmd::eval::run(a, g),
        Command::Compress(a) => cmd::compress::run(a, g),
        Command::Train(a) => cmd::train::run(a, g),
        Command::MixedPrecision(a) => cmd::mixed::run(a, g),
        Command::Search(a) => cmd::search::run(a, g),
        Command::Bench(a) => cmd::bench::run(a, g),
        Command::Completions(a) => cmd::completions::run::<Cli>(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => {
            eprintln!("qplay: error: {m} (see `qplay help`)");
            ExitCode::from(2)
        }
        Err(CliError::Failed(m)) => {
            eprintln!("qplay: error: {m}");
            ExitCode::FAILURE
        }
    }
}
