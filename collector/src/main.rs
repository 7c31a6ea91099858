//! The `vpslens` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use vpslens::cli::{Cli, Command};
use vpslens::commands::status::Outcome;
use vpslens::commands::{replay, run, status};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VPSLENS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(a) => run::run(a),
        Command::Replay(a) => replay::replay(a).map(|_| ()),
        Command::Status(a) => {
            // 0: no node silent, 1: a node is silent, 2: the daemon could not be read.
            return match status::status(a) {
                Ok(Outcome::Healthy) => ExitCode::SUCCESS,
                Ok(Outcome::Silent) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("vpslens: error: {e}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpslens: error: {e}");
            ExitCode::from(if matches!(e, vpslens::Error::Usage(_)) {
                2
            } else {
                1
            })
        }
    }
}
