//! Registry hot reload: watch the file, swap good snapshots, keep the last good one on error.
//!
//! The watcher observes the file's *directory* (so editors' rename-into-place and Kubernetes
//! ConfigMap `..data` symlink swaps are seen) via `notify`, and also re-reads on a timer so
//! filesystems without inotify work. A reload happens only when the bytes changed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};

use super::{Registry, RegistryError};

/// Shared, atomically swappable registry plus reload bookkeeping.
#[derive(Debug)]
pub struct RegistryHandle {
    current: ArcSwap<Registry>,
    path: Option<PathBuf>,
    /// Successful loads (including the first).
    pub reload_success: AtomicU64,
    /// Failed loads (the previous registry stayed in force).
    pub reload_failure: AtomicU64,
    /// 1 when the most recent attempt succeeded, else 0.
    pub last_successful: AtomicU64,
    /// Unix seconds of the last successful load.
    pub last_success_seconds: AtomicU64,
    /// Incremented on every successful swap; consumers compare it to rebuild derived tables.
    pub generation: AtomicU64,
    /// Bytes of the last load attempt (a reload only happens when they change).
    last_bytes: std::sync::Mutex<Option<Vec<u8>>>,
}

impl RegistryHandle {
    /// Loads `path` once.
    ///
    /// # Errors
    /// The first load must succeed: a daemon without a registry cannot attribute anything.
    pub fn load(path: &Path) -> Result<Arc<RegistryHandle>, RegistryError> {
        let bytes = std::fs::read(path).map_err(|source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let reg = Registry::from_bytes(path, &bytes)?;
        let h = RegistryHandle::fixed(reg);
        let h = RegistryHandle {
            path: Some(path.to_path_buf()),
            last_bytes: std::sync::Mutex::new(Some(bytes)),
            ..h
        };
        Ok(Arc::new(h))
    }

    /// A handle that never reloads (tests, or no registry configured).
    pub fn fixed(reg: Registry) -> RegistryHandle {
        RegistryHandle {
            current: ArcSwap::from_pointee(reg),
            path: None,
            reload_success: AtomicU64::new(1),
            reload_failure: AtomicU64::new(0),
            last_successful: AtomicU64::new(1),
            last_success_seconds: AtomicU64::new(crate::unix_now_seconds()),
            generation: AtomicU64::new(1),
            last_bytes: std::sync::Mutex::new(None),
        }
    }

    /// The registry in force.
    pub fn current(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    /// The registry's generation (changes on every successful reload).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The file this handle reloads from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Re-reads the file if its bytes changed since the last attempt; on success swaps it in,
    /// on failure keeps the current one.
    ///
    /// # Errors
    /// The load error (already counted in the failure metrics).
    pub fn reload_if_changed(&self) -> Result<(), RegistryError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = std::fs::read(path).ok();
        {
            let mut last = self
                .last_bytes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *last == bytes {
                return Ok(());
            }
            last.clone_from(&bytes);
        }
        let result = match bytes {
            Some(b) => Registry::from_bytes(path, &b),
            None => Registry::load(path),
        };
        match result {
            Ok(reg) => {
                for c in reg.conflicts() {
                    tracing::warn!(prefix = %c.prefix, winner = %c.winner, loser = %c.loser,
                        "address claimed by two nodes; the smaller name keeps it");
                }
                self.current.store(Arc::new(reg));
                self.reload_success.fetch_add(1, Ordering::Relaxed);
                self.last_successful.store(1, Ordering::Relaxed);
                self.last_success_seconds
                    .store(crate::unix_now_seconds(), Ordering::Relaxed);
                self.generation.fetch_add(1, Ordering::AcqRel);
                tracing::info!(path = %path.display(), "registry reloaded");
                Ok(())
            }
            Err(e) => {
                self.reload_failure.fetch_add(1, Ordering::Relaxed);
                self.last_successful.store(0, Ordering::Relaxed);
                tracing::error!(error = %e, "registry reload failed; keeping the last good registry");
                Err(e)
            }
        }
    }
}

/// Spawns a thread that reloads `handle` whenever its file's bytes change (notify events, and a
/// poll every `poll` as a fallback). Returns when the handle has no path.
pub fn spawn_watcher(handle: Arc<RegistryHandle>, poll: Duration) -> std::io::Result<()> {
    let Some(path) = handle.path().map(Path::to_path_buf) else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name("vpslens-registry".into())
        .spawn(move || watch_loop(&handle, &path, poll))?;
    Ok(())
}

fn watch_loop(handle: &RegistryHandle, path: &Path, poll: Duration) {
    let (tx, rx) = mpsc::channel();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    if let Err(e) = &watcher {
        tracing::warn!(error = %e, "registry file watch unavailable; polling only");
    }
    loop {
        match rx.recv_timeout(poll) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(poll),
        }
        // Coalesce bursts of events from one save.
        std::thread::sleep(Duration::from_millis(50));
        while rx.try_recv().is_ok() {}
        let _ = handle.reload_if_changed();
    }
}
