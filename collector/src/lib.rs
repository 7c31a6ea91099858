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

/// Locks `m`, recovering the guard from a poisoned lock: a panic on another thread must not stop
/// counting or serving metrics (the data behind these locks stays consistent per operation).
pub fn lock_unpoisoned<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

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
    /// The listen address cannot be resolved or bound (nothing else was touched yet).
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The configured `listen` value.
        addr: String,
        /// Cause (e.g. `Address already in use (os error 98)`).
        message: String,
    },
    /// The state directory cannot be created or written.
    #[error("state_dir {dir} is not writable: {source} (checkpoints would fail on every attempt; fix its permissions or mount, or drop --state-dir to run without checkpoints)")]
    StateDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// HTTP server set-up (web config, bind).
    #[error(transparent)]
    Server(#[from] export::server::ServerError),
    /// I/O (write).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// `vpslens status` could not read the daemon.
    #[error("cannot read the daemon at {0}")]
    Daemon(String),
}
