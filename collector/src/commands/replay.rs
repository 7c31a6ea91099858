//! `vpslens replay`: the same pipeline over finished files, then a table and the exposition.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::ReplayArgs;
use crate::export::exposition::Dialect;
use crate::export::{metrics, summary};
use crate::pipeline::LineProcessor;
use crate::resolve::reload::RegistryHandle;
use crate::resolve::sources::file_sd::FileSdPoller;
use crate::source::{ReadFrom, Tailer};
use crate::Error;

/// Bundled fixture log used when no log is given.
pub const FIXTURE_LOG: &str = "fixtures/access-istio-json.log";
/// Bundled registry used when none is given.
pub const FIXTURE_REGISTRY: &str = "fixtures/registry.yaml";

/// Finds a bundled fixture: relative to the working directory, else to the source checkout.
pub fn fixture(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Runs the replay; returns the table text (also printed) for tests.
///
/// # Errors
/// Config, registry or I/O errors.
pub fn replay(args: &ReplayArgs) -> Result<String, Error> {
    let mut flags = args.common.overrides();
    flags.sources.clone_from(&args.logs);
    let mut s = super::settings(args.common.config.as_deref(), flags)?;
    if s.sources.is_empty() {
        s.sources = vec![fixture(FIXTURE_LOG).display().to_string()];
        if s.registry.is_none() {
            s.registry = Some(fixture(FIXTURE_REGISTRY));
        }
    }
    if s.registry.is_none() && s.file_sd.is_empty() {
        return Err(Error::Usage(
            "replay needs --registry FILE (or a config with `registry:` or `file_sd:`)".into(),
        ));
    }
    let started = std::time::Instant::now();
    let mut pollers = Vec::new();
    for (i, f) in s.file_sd.iter().enumerate() {
        pollers.push(FileSdPoller::new(u16::try_from(i).unwrap_or(u16::MAX), f)?);
    }
    let registry =
        RegistryHandle::with_sources(s.registry.as_deref(), pollers.iter().map(FileSdPoller::id))?;
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
    if s.workload_entries.is_some() {
        tracing::warn!("replay ignores workload_entries (no Kubernetes watch in a replay)");
    }
    if s.xboard.is_some() {
        tracing::warn!("replay ignores xboard (the panel's list is a live source)");
    }
    for p in &s.sources {
        if !p.contains(['*', '?', '[']) && !Path::new(p).exists() {
            return Err(Error::Usage(format!("log file `{p}` does not exist")));
        }
    }
    let shared = super::shared(
        &s,
        registry,
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    )?;
    let mut tc = super::tail_config(&s);
    tc.read_from = ReadFrom::Beginning;
    tc.state_dir = None;
    tc.eof_ends_line = true;
    let mut tailer = Tailer::new(tc, LineProcessor::new(shared.clone()))?;
    tailer.poll();
    tracing::debug!(ms = ms_since(started), "replay: logs read");
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
