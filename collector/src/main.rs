//! The `vpslens` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use vpslens::cli::{Cli, Command};
use vpslens::commands::{replay, run};

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
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "vpslens",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { command } => {
            vpslens::cli::render_man(command.as_deref(), &mut std::io::stdout())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpslens: error: {e}");
            // 2: the command line or config cannot be right; 1: everything else.
            ExitCode::from(
                if matches!(e, vpslens::Error::Usage(_) | vpslens::Error::Config(_)) {
                    2
                } else {
                    1
                },
            )
        }
    }
}
