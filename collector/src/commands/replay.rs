//! `vpslens replay`: the same pipeline over finished files, then a table and the exposition.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use vpslens_parsers::client::ClientAddressSource;

use crate::cli::ReplayArgs;
use crate::export::exposition::Dialect;
use crate::export::{metrics, summary};
use crate::pipeline::{Line, LineProcessor};
use crate::resolve::reload::RegistryHandle;
use crate::resolve::sources::file_sd::FileSdPoller;
use crate::resolve::Registry;
use crate::source::{ReadFrom, Tailer};
use crate::Error;

use super::preflight;

/// Name the bundled fixture log is reported under (its bytes are embedded in the binary).
pub const FIXTURE_LOG: &str = "fixtures/access-istio-json.log";
/// Name the bundled registry is reported under (its bytes are embedded in the binary).
pub const FIXTURE_REGISTRY: &str = "fixtures/registry.yaml";
/// The bundled Envoy access log (`fixtures/access-istio-json.log`, recorded from a real Envoy;
/// counts in `fixtures/expected.json`), so `vpslens replay` works from any directory.
pub const FIXTURE_LOG_BYTES: &[u8] = include_bytes!("../../../fixtures/access-istio-json.log");
/// The bundled registry (`fixtures/registry.yaml`).
pub const FIXTURE_REGISTRY_BYTES: &[u8] = include_bytes!("../../../fixtures/registry.yaml");

/// Runs the replay; returns the table text (also printed) for tests.
///
/// With no LOG and no `sources:` in the config, replays the embedded fixture log, against the
/// embedded registry unless a registry is configured.
///
/// # Errors
/// Config, registry or I/O errors; [`Error::Usage`] when a LOG matches no file or only `.gz`
/// files.
pub fn replay(args: &ReplayArgs) -> Result<String, Error> {
    let mut flags = args.common.overrides();
    flags.sources.clone_from(&args.logs);
    let s = super::settings(args.common.config.as_deref(), flags)?;
    let f = &s.file;
    let bundled = f.sources.is_empty();
    let bundled_registry = bundled && f.registry.is_none() && f.file_sd.is_empty();
    if !bundled_registry && f.registry.is_none() && f.file_sd.is_empty() {
        return Err(Error::Usage(
            "replay needs --registry FILE (or a config with `registry:` or `file_sd:`)".into(),
        ));
    }
    if !bundled {
        preflight::replay_inputs(&f.sources)?;
    }
    let started = std::time::Instant::now();
    let mut pollers = Vec::new();
    for (i, c) in f.file_sd.iter().enumerate() {
        pollers.push(FileSdPoller::new(u16::try_from(i).unwrap_or(u16::MAX), c)?);
    }
    let registry = if bundled_registry {
        Arc::new(RegistryHandle::fixed(Registry::from_bytes(
            Path::new(FIXTURE_REGISTRY),
            FIXTURE_REGISTRY_BYTES,
        )?))
    } else {
        RegistryHandle::with_sources(f.registry.as_deref(), pollers.iter().map(FileSdPoller::id))?
    };
    tracing::debug!(ms = ms_since(started), "replay: registry loaded");
    if !pollers.is_empty() {
        // One poll of each file_sd source, like the first poll of `run`.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for mut p in pollers {
            rt.block_on(p.poll_and_apply(&registry))?;
        }
    }
    if f.workload_entries.is_some() {
        tracing::warn!("replay ignores workload_entries (no Kubernetes watch in a replay)");
    }
    if f.xboard.is_some() {
        tracing::warn!("replay ignores xboard (the panel's list is a live source)");
    }
    let shared = super::shared(
        &s,
        registry,
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    )?;
    if bundled {
        let lines: Vec<&[u8]> = FIXTURE_LOG_BYTES
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        LineProcessor::new(shared.clone()).process(&Line::batch(&lines));
    } else {
        let mut tc = f.tail_config();
        tc.read_from = ReadFrom::Beginning;
        tc.state_dir = None;
        tc.eof_ends_line = true;
        let mut tailer = Tailer::new(
            tc,
            LineProcessor::new(shared.clone()),
            shared.sources.clone(),
        )?;
        tailer.poll();
    }
    tracing::debug!(ms = ms_since(started), "replay: logs read");
    if let ClientAddressSource::XForwardedFor { trusted_hops } = s.client {
        let lines = shared.lock().lines;
        preflight::xff_warning(trusted_hops, lines[0], lines[2]);
    }
    let table = summary::table(&shared);
    print!("{table}");
    tracing::debug!(ms = ms_since(started), "replay: table printed");
    if let Some(out) = &args.metrics_out {
        write_out(out, &metrics::render(&shared, Dialect::Prometheus))?;
        tracing::debug!(ms = ms_since(started), "replay: metrics written");
    }
    if let Some(out) = &args.istio_out {
        write_out(out, &metrics::render_istio(&shared, Dialect::Prometheus))?;
        tracing::debug!(ms = ms_since(started), "replay: istio metrics written");
    }
    Ok(table)
}

/// Milliseconds since `t`, for the phase timings logged at debug level.
fn ms_since(t: std::time::Instant) -> u128 {
    t.elapsed().as_millis()
}

fn write_out(out: &Path, body: &str) -> std::io::Result<()> {
    if out.as_os_str() == "-" {
        std::io::stdout().write_all(body.as_bytes())
    } else {
        std::fs::write(out, body)
    }
}
