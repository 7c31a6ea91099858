//! `vpslens run`: follow logs, serve metrics, checkpoint, shut down gracefully.

use std::sync::Arc;
use std::time::Duration;

use crate::cli::RunArgs;
use crate::export::http;
use crate::export::server::web_config::WebConfigHandle;
use crate::export::server::{self, Role, ServeOptions, ServerError};
use crate::pipeline::{LineProcessor, Shared};
use crate::resolve::reload::{spawn_watcher, RegistryHandle};
use crate::resolve::sources::file_sd::FileSdPoller;
use crate::resolve::sources::xboard::XboardPoller;
use crate::resolve::sources::{workload_entry, SourceId};
use crate::source::checkpoint::CheckpointError;
use crate::source::{SourceError, TailHandle, Tailer};
use vpslens_parsers::client::ClientAddressSource;

use super::preflight;
use crate::Error;

/// How long `run` waits for every registry source's first attempt (success or failure) before
/// following logs, so nodes known only to a remote source are not counted as unregistered at
/// start-up.
pub const INITIAL_SYNC: Duration = Duration::from_secs(15);

/// Runs the daemon until SIGTERM/SIGINT.
///
/// Order: config, then bind `listen` (so a port in use fails before any state is touched),
/// then the state dir, the checkpoint, the registry and the logs.
///
/// # Errors
/// Config, bind, state-dir, registry or checkpoint errors at start-up.
pub fn run(args: &RunArgs) -> Result<(), Error> {
    let mut flags = args.common.overrides();
    flags.listen.clone_from(&args.listen);
    flags.web_config_file.clone_from(&args.web_config_file);
    flags.api_listen = args.api_listen;
    flags.disable_api = args.disable_api;
    flags.max_connections = args.max_connections;
    flags.state_dir.clone_from(&args.state_dir);
    flags.read_from = args.read_from;
    flags.sources.clone_from(&args.paths);
    let s = super::settings(args.common.config.as_deref(), flags)?;
    let f = &s.file;
    if f.registry.is_none()
        && f.file_sd.is_empty()
        && f.workload_entries.is_none()
        && f.xboard.is_none()
    {
        return Err(Error::Usage(
            "run needs --registry FILE (or `registry:`, `file_sd:`, `workload_entries:` or `xboard:` in the config)"
                .into(),
        ));
    }
    if f.sources.is_empty() {
        return Err(Error::Usage(
            "run needs at least one log path or glob".into(),
        ));
    }
    // The web config is checked before anything starts, like exporter-toolkit's.
    let web = match &f.web.config_file {
        Some(p) => Some(Arc::new(
            WebConfigHandle::load(p).map_err(ServerError::from)?,
        )),
        None => None,
    };
    let api = f.web.api.clone();
    let (listener, bound) = preflight::bind(&f.listen)?;
    let api_listener = match (api.enabled, api.listen_address) {
        (true, Some(addr)) => Some(preflight::bind(&addr.to_string())?),
        _ => None,
    };
    if let Some(dir) = &f.state_dir {
        preflight::check_state_dir(dir)?;
    }
    preflight::start_position_warnings(&f.sources, f.read_from, f.state_dir.as_deref());
    let mut pollers = Vec::new();
    for (i, c) in f.file_sd.iter().enumerate() {
        pollers.push(FileSdPoller::new(u16::try_from(i).unwrap_or(u16::MAX), c)?);
    }
    let mut others: Vec<SourceId> = pollers.iter().map(FileSdPoller::id).collect();
    if f.workload_entries.is_some() {
        others.push(SourceId::WORKLOAD_ENTRY);
    }
    let xboard = f.xboard.as_ref().map(XboardPoller::new).transpose()?;
    if xboard.is_some() {
        others.push(SourceId::XBOARD);
    }
    let registry = RegistryHandle::with_sources(f.registry.as_deref(), others)?;
    spawn_watcher(
        registry.clone(),
        Duration::from_secs(f.registry_poll_seconds),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        // Renders and the 10 s sweep run on the blocking pool: with tokio's 10 s keep-alive a
        // 15 s scrape interval started (and ended) a thread per scrape.
        .thread_keep_alive(Duration::from_secs(120))
        .enable_all()
        .build()?;
    for p in pollers {
        rt.spawn(p.run(registry.clone()));
    }
    if let Some(x) = xboard {
        rt.spawn(x.run(registry.clone()));
    }
    if let Some(we) = f.workload_entries.clone() {
        rt.spawn(workload_entry::run_in_cluster(registry.clone(), we));
    }
    if !registry.wait_first_attempts(INITIAL_SYNC) {
        tracing::warn!(
            "registry sources still loading after {}s; following logs anyway",
            INITIAL_SYNC.as_secs()
        );
    }
    let shared = super::shared(&s, registry, 1)?;
    let tailer = match Tailer::new(
        f.tail_config(),
        LineProcessor::new(shared.clone()),
        shared.sources.clone(),
    ) {
        Err(SourceError::Checkpoint(e @ CheckpointError::Corrupt { .. })) => {
            let dir = f.state_dir.as_deref().unwrap_or(std::path::Path::new("."));
            if !args.discard_corrupt_checkpoint {
                return Err(Error::Usage(preflight::corrupt_checkpoint_hint(&e)));
            }
            preflight::discard_checkpoint(dir)?;
            Tailer::new(
                f.tail_config(),
                LineProcessor::new(shared.clone()),
                shared.sources.clone(),
            )?
        }
        other => other?,
    };
    let tail = TailHandle::spawn(tailer)?;
    let grace = f.node_removal_grace_seconds;
    let hops = match s.client {
        ClientAddressSource::XForwardedFor { trusted_hops } => Some(trusted_hops),
        ClientAddressSource::DownstreamRemote => None,
    };
    let result = rt.block_on(async {
        let mut listeners = vec![server::Listener {
            listener: tokio::net::TcpListener::from_std(listener).map_err(|source| {
                ServerError::Io {
                    what: format!("listen on {bound}"),
                    source,
                }
            })?,
            role: if api.enabled && api.listen_address.is_none() {
                Role::All
            } else {
                Role::NoApi
            },
        }];
        if let Some((l, a)) = api_listener {
            listeners.push(server::Listener {
                listener: tokio::net::TcpListener::from_std(l).map_err(|source| {
                    ServerError::Io {
                        what: format!("listen on {a}"),
                        source,
                    }
                })?,
                role: Role::ApiOnly,
            });
        }
        tracing::info!(sources = ?f.sources, "vpslens running: listening on {bound} (listen: {})", f.listen);
        tokio::spawn(sweep_loop(shared.clone(), grace, hops));
        server::serve(
            listeners,
            http::router(shared.clone()),
            ServeOptions {
                http: f.web.clone(),
                web,
            },
            shutdown_signal(),
        )
        .await
    });
    tracing::info!("shutting down: final drain and checkpoint");
    tail.shutdown();
    result.map_err(Error::from)
}

/// Periodically forgets series of nodes removed from the registry longer than `grace` ago,
/// and samples the counters for the fleet view's windows. Also warns once when
/// `client_ip: xff` leaves most lines without a client (`hops`).
async fn sweep_loop(shared: Arc<Shared>, grace: u64, hops: Option<u8>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut xff_pending = hops.is_some();
    loop {
        tick.tick().await;
        if let (true, Some(h)) = (xff_pending, hops) {
            let lines = shared.lock().lines;
            let (ok, no_client) = (lines[0], lines[2]);
            if ok + no_client >= 20 {
                xff_pending = false;
                preflight::xff_warning(h, ok, no_client);
            }
        }
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
