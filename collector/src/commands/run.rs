//! `vpslens run`: follow logs, serve metrics, checkpoint, shut down gracefully.

use std::sync::Arc;
use std::time::Duration;

use crate::cli::RunArgs;
use crate::export::http;
use crate::pipeline::{LineProcessor, Shared};
use crate::resolve::reload::{spawn_watcher, RegistryHandle};
use crate::resolve::sources::file_sd::FileSdPoller;
use crate::resolve::sources::xboard::XboardPoller;
use crate::resolve::sources::{workload_entry, SourceId};
use crate::source::{TailHandle, Tailer};
use crate::Error;

/// How long `run` waits for every registry source's first attempt (success or failure) before
/// following logs, so nodes known only to a remote source are not counted as unregistered at
/// start-up.
pub const INITIAL_SYNC: Duration = Duration::from_secs(15);

/// Runs the daemon until SIGTERM/SIGINT.
///
/// # Errors
/// Config, registry, checkpoint or bind errors at start-up.
pub fn run(args: &RunArgs) -> Result<(), Error> {
    let mut flags = args.common.overrides();
    flags.listen = args.listen;
    flags.state_dir.clone_from(&args.state_dir);
    flags.read_from = args.read_from;
    flags.sources.clone_from(&args.paths);
    let s = super::settings(args.common.config.as_deref(), flags)?;
    if s.registry.is_none()
        && s.file_sd.is_empty()
        && s.workload_entries.is_none()
        && s.xboard.is_none()
    {
        return Err(Error::Usage(
            "run needs --registry FILE (or `registry:`, `file_sd:`, `workload_entries:` or `xboard:` in the config)"
                .into(),
        ));
    }
    if s.sources.is_empty() {
        return Err(Error::Usage(
            "run needs at least one log path or glob".into(),
        ));
    }
    let mut pollers = Vec::new();
    for (i, f) in s.file_sd.iter().enumerate() {
        pollers.push(FileSdPoller::new(u16::try_from(i).unwrap_or(u16::MAX), f)?);
    }
    let mut others: Vec<SourceId> = pollers.iter().map(FileSdPoller::id).collect();
    if s.workload_entries.is_some() {
        others.push(SourceId::WORKLOAD_ENTRY);
    }
    let xboard = s.xboard.as_ref().map(XboardPoller::new).transpose()?;
    if xboard.is_some() {
        others.push(SourceId::XBOARD);
    }
    let registry = RegistryHandle::with_sources(s.registry.as_deref(), others)?;
    spawn_watcher(
        registry.clone(),
        Duration::from_secs(s.registry_poll_seconds),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    for p in pollers {
        rt.spawn(p.run(registry.clone()));
    }
    if let Some(x) = xboard {
        rt.spawn(x.run(registry.clone()));
    }
    if let Some(we) = s.workload_entries.clone() {
        rt.spawn(workload_entry::run_in_cluster(registry.clone(), we));
    }
    if !registry.wait_first_attempts(INITIAL_SYNC) {
        tracing::warn!(
            "registry sources still loading after {}s; following logs anyway",
            INITIAL_SYNC.as_secs()
        );
    }
    let shared = super::shared(&s, registry, 1)?;
    let tailer = Tailer::new(super::tail_config(&s), LineProcessor::new(shared.clone()))?;
    let tail = TailHandle::spawn(tailer)?;
    let grace = s.node_removal_grace_seconds;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(s.listen).await?;
        tracing::info!(listen = %s.listen, sources = ?s.sources, "vpslens running");
        tokio::spawn(sweep_loop(shared.clone(), grace));
        axum::serve(listener, http::router(shared.clone()))
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    tracing::info!("shutting down: final drain and checkpoint");
    tail.shutdown();
    result.map_err(Error::from)
}

/// Periodically forgets series of nodes removed from the registry longer than `grace` ago,
/// and samples the counters for the fleet view's windows.
async fn sweep_loop(shared: Arc<Shared>, grace: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            s.sample_history(crate::export::fleet::now_ms());
        })
        .await;
        let dropped = shared.sweep_removed(crate::unix_now_seconds(), grace);
        if dropped > 0 {
            tracing::info!(dropped, "removed series of nodes no longer in the registry");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
