//! `vpslens run`, `vpslens replay` and `vpslens status`.

pub mod replay;
pub mod run;
pub mod status;

use std::path::Path;
use std::sync::Arc;

use crate::config::{FileConfig, Overrides, Settings};
use crate::pipeline::{PipelineConfig, Shared};
use crate::resolve::geo::Geo;
use crate::resolve::reload::RegistryHandle;
use crate::source::TailConfig;
use crate::Error;

/// Loads the config file (if any) and merges flags.
pub(crate) fn settings(config: Option<&Path>, flags: Overrides) -> Result<Settings, Error> {
    let file = match config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    Ok(Settings::merge(file, flags)?)
}

/// Builds the shared state for settings and a loaded registry; opens the GeoIP databases.
/// `default_threads` applies when neither the config nor a flag set `parse_threads`.
///
/// # Errors
/// A configured GeoIP database that cannot be opened.
pub(crate) fn shared(
    s: &Settings,
    registry: Arc<RegistryHandle>,
    default_threads: usize,
) -> Result<Arc<Shared>, Error> {
    let geo = Geo::open(&s.geoip)?;
    let mut shared = Shared::new(
        PipelineConfig {
            format: s.format,
            client: s.client,
            routes: s.routes.clone(),
            limits: s.limits,
            parse_threads: s.parse_threads.unwrap_or(default_threads).max(1),
            geo,
            attribute_unregistered_by_node_id: s.attribute_unregistered_by_node_id,
        },
        s.istio.clone(),
        registry,
    );
    // Just created: the only reference.
    if let Some(sh) = Arc::get_mut(&mut shared) {
        sh.fleet = s.fleet.clone();
        sh.history = std::sync::Mutex::new(s.fleet.history());
    }
    Ok(shared)
}

/// Tailer settings from merged settings.
pub(crate) fn tail_config(s: &Settings) -> TailConfig {
    TailConfig {
        patterns: s.sources.clone(),
        read_from: s.read_from,
        max_line_bytes: s.max_line_bytes,
        poll_interval: std::time::Duration::from_millis(s.poll_interval_ms),
        rotate_wait: std::time::Duration::from_secs(s.rotate_wait_seconds),
        framing: s.framing,
        state_dir: s.state_dir.clone(),
        checkpoint_interval: std::time::Duration::from_secs(s.checkpoint_interval_seconds),
        read_chunk_bytes: 256 * 1024,
        eof_ends_line: false,
    }
}
