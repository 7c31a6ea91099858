//! Command-line interface (`clap`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ClientIp, Format, Overrides};
use crate::export::istio::EdgeMode;
use crate::source::ReadFrom;

/// Per-VPS traffic metrics from an Istio ingress gateway's access log.
#[derive(Debug, Parser)]
#[command(
    name = "vpslens",
    version,
    about,
    after_help = "Config reference, endpoints and metrics: README.md and `vpslens man`. Logs go to \
                  stderr; VPSLENS_LOG=debug for more."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`) or tracing filter directives.
    /// Default: `VPSLENS_LOG`, else `info`.
    #[arg(long = "log.level", global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: `text` (plain, colour only on a terminal) or `json` (one object a line).
    #[arg(long = "log.format", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colour only when stderr is a terminal.
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Follow access logs and serve /metrics, /metrics/istio, /healthz, /readyz, /api/nodes
    /// and /api/unregistered.
    Run(RunArgs),
    /// Read logs to EOF and print a per-node table (the /metrics and /metrics/istio text only
    /// with --metrics-out / --istio-out). With no LOG and no `sources:`, replays the fixtures
    /// embedded in the binary.
    Replay(ReplayArgs),
    /// Print a shell completion script to stdout (e.g. `vpslens completions bash >
    /// /etc/bash_completion.d/vpslens`).
    Completions {
        /// Target shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) to stdout: vpslens(1), or vpslens-COMMAND(1) with every flag of
    /// that command (e.g. `vpslens man run | man -l -`).
    Man {
        /// Subcommand whose page to print (`run`, `replay`, `status`, `completions`).
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
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
    /// Where the client address comes from [default: downstream].
    #[arg(long, value_enum)]
    pub client_ip: Option<ClientIp>,
    /// Trusted proxies in front of the gateway: the client is X-Forwarded-For entry N+1 from
    /// the right. Only with --client-ip xff (an error otherwise) [default: 0].
    #[arg(long, value_name = "N")]
    pub trusted_hops: Option<u8>,
    /// Access-log format [default: auto].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Kiali edge mode for istio_* metrics [default: gateway].
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
    /// HTTP listen address HOST:PORT; host names are resolved. Bound before anything else,
    /// so a port in use fails before any state is touched [default: 0.0.0.0:9464].
    #[arg(long, alias = "web.listen-address", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// exporter-toolkit web configuration file: TLS, basic auth, response headers (as
    /// node_exporter's). Overrides `web.config_file`.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Serve `/api/*` on this address only, not on the metrics listener.
    #[arg(long = "web.api-listen-address", value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// Do not serve `/api/*` at all.
    #[arg(long = "web.disable-api")]
    pub disable_api: bool,
    /// Most open HTTP connections (lowered to fit RLIMIT_NOFILE) [default: 2048].
    #[arg(long = "web.max-connections", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Directory for checkpoints (offsets + counters), created if missing; must be writable
    /// [default: none, no checkpoints].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where to start files while there is no checkpoint; ignored (with a warning) once one
    /// exists [default: end].
    #[arg(long, value_enum)]
    pub read_from: Option<ReadFrom>,
    /// Move an unreadable checkpoint.json aside (to checkpoint.json.corrupt-TIME) and start
    /// without it: file offsets and every counter are lost (counters restart at 0).
    #[arg(long)]
    pub discard_corrupt_checkpoint: bool,
    /// Access-log paths or globs (`*.gz` never read); a path that does not exist yet is
    /// followed once it appears, with a warning.
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

/// `vpslens replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also write the exposition text /metrics would serve to FILE (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    pub metrics_out: Option<PathBuf>,
    /// Also write the exposition text /metrics/istio would serve to FILE (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    pub istio_out: Option<PathBuf>,
    /// Log files (paths or globs); each must match at least one file that is not `.gz`.
    /// None: the embedded fixture log.
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

/// The man page of `vpslens` (`None`) or of one subcommand (`vpslens-<name>`), rendered as roff.
///
/// # Errors
/// [`crate::Error::Usage`] for an unknown subcommand; I/O errors of `out`.
pub fn render_man(command: Option<&str>, out: &mut dyn std::io::Write) -> Result<(), crate::Error> {
    use clap::CommandFactory;
    let top = Cli::command();
    let cmd = match command {
        None => top,
        Some(name) => {
            let sub = top
                .get_subcommands()
                .find(|c| c.get_name() == name && name != "man")
                .cloned()
                .ok_or_else(|| crate::Error::Usage(format!("no subcommand `{name}`")))?;
            let full = format!("vpslens-{name}");
            sub.name(full.clone()).bin_name(full)
        }
    };
    clap_mangen::Man::new(cmd).render(out)?;
    Ok(())
}
