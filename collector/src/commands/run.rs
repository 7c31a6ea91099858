//! `vpslens run`: follow logs, serve metrics, checkpoint, shut down gracefully.

use std::sync::Arc;
use std::time::Duration;

use crate::cli::RunArgs;
use crate::export::http;
use crate::pipeline::{LineProcessor, Shared};
use crate::resolve::reload::{spawn_watcher, RegistryHandle};
use crate::source::{TailHandle, Tailer};
use crate::Error;

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
    let Some(reg_path) = s.registry.clone() else {
        return Err(Error::Usage(
            "run needs --registry FILE (or `registry:` in the config)".into(),
        ));
    };
    if s.sources.is_empty() {
        return Err(Error::Usage(
            "run needs at least one log path or glob".into(),
        ));
    }
    let registry = RegistryHandle::load(&reg_path)?;
    spawn_watcher(
        registry.clone(),
        Duration::from_secs(s.registry_poll_seconds),
    )?;
    let shared = super::shared(&s, registry, 1)?;
    let tailer = Tailer::new(super::tail_config(&s), LineProcessor::new(shared.clone()))?;
    let tail = TailHandle::spawn(tailer)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
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

/// Periodically forgets series of nodes removed from the registry longer than `grace` ago.
async fn sweep_loop(shared: Arc<Shared>, grace: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let registry = shared.registry.current();
        let registered = |n: &str| registry.index_of(n).is_some();
        let dropped = shared
            .lock()
            .sweep_removed(&registered, crate::unix_now_seconds(), grace);
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
