//! vpslens: per-VPS traffic metrics from an Istio ingress gateway's access log.
//!
//! Pipeline (one module per stage, see `ARCHITECTURE.md`):
//! [`source`] (tail files) → [`pipeline`] (parse + resolve, via `vpslens-parsers` and
//! [`resolve`]) → [`aggregate`] (integer counters) → [`export`] (`/metrics`, Kiali shapes,
//! summaries). [`commands`] wires them into `vpslens run` and `vpslens replay`.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod cli;
pub mod commands;
pub mod config;
pub mod export;
pub mod pipeline;
pub mod resolve;
pub mod source;

use thiserror::Error;

/// Unix time in whole seconds (0 if the clock is before 1970).
pub fn unix_now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Top-level errors, printed by `main` with exit code 2 (usage) or 1.
#[derive(Debug, Error)]
pub enum Error {
    /// Wrong or missing arguments.
    #[error("{0}")]
    Usage(String),
    /// Config file problem.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Registry problem at start-up.
    #[error(transparent)]
    Registry(#[from] resolve::RegistryError),
    /// A configured GeoIP database could not be opened.
    #[error(transparent)]
    GeoIp(#[from] resolve::geo::GeoError),
    /// A `file_sd` entry cannot be set up.
    #[error(transparent)]
    FileSd(#[from] resolve::sources::file_sd::FileSdError),
    /// The `xboard` source cannot be set up.
    #[error(transparent)]
    Xboard(#[from] resolve::sources::xboard::XboardError),
    /// Source/checkpoint problem at start-up.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// I/O (bind, write).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// `vpslens status` could not read the daemon.
    #[error("cannot read the daemon at {0}")]
    Daemon(String),
}
