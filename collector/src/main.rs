//! The `vpslens` binary.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use vpslens::cli::{Cli, Command, LogFormat};
use vpslens::commands::status::Outcome;
use vpslens::commands::{replay, run, status};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_level.as_deref(), cli.log_format) {
        eprintln!("vpslens: error: {e}");
        return ExitCode::from(2);
    }
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

/// Logs to stderr: `--log.level` (else `VPSLENS_LOG`, else `info`), plain text without ANSI
/// colour unless stderr is a terminal, or one JSON object per line.
fn init_logging(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| format!("--log.level {l:?}: {e}"))?,
        None => EnvFilter::try_from_env("VPSLENS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let b = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => b.json().with_ansi(false).init(),
    }
    Ok(())
}
