//! `vpslens run`, `vpslens replay`, `vpslens status` and the helper subcommands
//! (`completions`, `man`).

pub mod preflight;
pub mod replay;
pub mod run;
pub mod status;

use std::path::Path;
use std::sync::Arc;

use crate::config::{FileConfig, Overrides, Settings};
use crate::pipeline::{PipelineConfig, Shared};
use crate::resolve::geo::Geo;
use crate::resolve::reload::RegistryHandle;
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
            limits: s.file.limits,
            parse_threads: s.file.parse_threads.unwrap_or(default_threads).max(1),
            geo,
            attribute_unregistered_by_node_id: s.file.attribute_unregistered_by_node_id,
        },
        s.file.istio.clone(),
        registry,
    );
    shared.default_poll_interval_seconds.store(
        s.file.default_poll_interval_seconds,
        std::sync::atomic::Ordering::Relaxed,
    );
    // Just created: the only reference.
    if let Some(sh) = Arc::get_mut(&mut shared) {
        sh.fleet = s.file.fleet.clone();
        sh.history = std::sync::Mutex::new(s.file.fleet.history());
    }
    Ok(shared)
}
