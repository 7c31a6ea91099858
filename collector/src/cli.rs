//! Command-line interface (`clap`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ClientIp, Format, Overrides};
use crate::export::istio::EdgeMode;
use crate::source::ReadFrom;

/// Per-VPS traffic metrics from an Istio ingress gateway's access log.
#[derive(Debug, Parser)]
#[command(name = "vpslens", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Follow access logs and serve /metrics, /healthz, /readyz, /api/nodes.
    Run(RunArgs),
    /// Read logs to EOF, print a per-node table and the /metrics text. With no LOG and no
    /// config, replays the bundled fixtures.
    Replay(ReplayArgs),
    /// Print the fleet table of a running daemon (its /api/nodes). Exit code 0: no node
    /// silent, 1: at least one silent, 2: the daemon could not be read.
    Status(StatusArgs),
}

/// `vpslens status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Base URL of the daemon's HTTP listener.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9464")]
    pub url: String,
    /// Give up on the daemon after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub timeout_seconds: u64,
}

/// Flags shared by `run` and `replay`.
#[derive(Debug, Args, Clone, Default)]
pub struct CommonArgs {
    /// YAML config file (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Registry of VPS nodes (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    pub registry: Option<PathBuf>,
    /// Where the client address comes from.
    #[arg(long, value_enum)]
    pub client_ip: Option<ClientIp>,
    /// Trusted proxies in front of the gateway (X-Forwarded-For entry N from the right).
    #[arg(long, value_name = "N")]
    pub trusted_hops: Option<u8>,
    /// Access-log format.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Kiali edge mode for istio_* metrics.
    #[arg(long, value_enum)]
    pub istio_mode: Option<EdgeMode>,
    /// Threads that parse lines in parallel (results do not depend on it). Default: 1 for
    /// `run`, all cores for `replay`.
    #[arg(long, value_name = "N")]
    pub parse_threads: Option<usize>,
}

/// `vpslens run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// HTTP listen address (default 0.0.0.0:9464).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for checkpoints (offsets + counters).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where to start files that have no checkpoint (first start only).
    #[arg(long, value_enum)]
    pub read_from: Option<ReadFrom>,
    /// Access-log paths or globs.
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

/// `vpslens replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Write the exposition text /metrics would serve to FILE (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    pub metrics_out: Option<PathBuf>,
    /// Write the exposition text /metrics/istio would serve to FILE (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    pub istio_out: Option<PathBuf>,
    /// Log files (paths or globs).
    #[arg(value_name = "LOG")]
    pub logs: Vec<String>,
}

impl CommonArgs {
    /// Flag overrides for [`crate::config::Settings::merge`].
    pub fn overrides(&self) -> Overrides {
        Overrides {
            registry: self.registry.clone(),
            format: self.format,
            client_ip: self.client_ip,
            trusted_hops: self.trusted_hops,
            istio_mode: self.istio_mode,
            parse_threads: self.parse_threads,
            ..Overrides::default()
        }
    }
}
