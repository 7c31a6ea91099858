//! Registry hot reload: merge the sources' last good node lists, swap good snapshots, keep the
//! last good list of a source whose update is broken.
//!
//! [`RegistryHandle`] holds the registry in force and every source's last good list; sources
//! report through [`RegistryHandle::apply`] / [`RegistryHandle::record_failure`]. The node file
//! has its own watcher thread ([`spawn_watcher`]):
//!
//! The watcher observes the file's *directory* (so editors' rename-into-place and Kubernetes
//! ConfigMap `..data` symlink swaps are seen) via `notify`, and also re-reads on a timer so
//! filesystems without inotify work. A reload happens only when the bytes changed.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};

use super::sources::{self, node_file, Shadowed, SourceId, SourceKind, SourceUpdate};
use super::{NodeSpec, Registry, RegistryError};
use crate::lock_unpoisoned;

/// Bookkeeping of one source instance.
#[derive(Debug, Clone, Default)]
struct SourceState {
    /// The last good list (empty until the first success).
    nodes: Vec<NodeSpec>,
    /// Skipped entries of the last good list.
    skipped: u64,
    /// Nodes of this source dropped by the last merge because a higher source names them.
    shadowed: u64,
    success: u64,
    unchanged: u64,
    failure: u64,
    /// Whether the latest attempt succeeded (`None`: no attempt yet).
    last_ok: Option<bool>,
    last_success_seconds: u64,
}

/// Per-kind view of the sources for the `vpslens_registry_source_*` metrics (instances of one
/// kind, e.g. several `file_sd` entries, are summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistrySourceStats {
    /// Nodes in the last good lists.
    pub nodes: u64,
    /// Input entries that yielded no node in the last good lists.
    pub skipped: u64,
    /// Nodes dropped by the merge because a higher-precedence source names them.
    pub shadowed: u64,
    /// Updates that replaced a list.
    pub success: u64,
    /// Polls that found nothing changed (HTTP 304).
    pub unchanged: u64,
    /// Failed attempts (the last good list stayed in force).
    pub failure: u64,
    /// 1 when the latest attempt of every instance succeeded (instances not yet tried count as
    /// failed), else 0.
    pub last_successful: u64,
    /// Unix seconds of the oldest "latest success" among the instances (0: one never
    /// succeeded).
    pub last_success_seconds: u64,
}

/// Shared, atomically swappable registry plus reload bookkeeping.
///
/// The registry in force is the merge of every registered source's last good list (see
/// [`sources`]). The top-level counters (`reload_*`, `last_*`) describe the merged result:
/// a success is a new merged registry swapped in, a failure is a source update that was
/// rejected (its last good list stayed).
#[derive(Debug)]
pub struct RegistryHandle {
    current: ArcSwap<Registry>,
    path: Option<PathBuf>,
    /// Successful loads (including the first).
    pub reload_success: AtomicU64,
    /// Failed loads (the previous registry stayed in force).
    pub reload_failure: AtomicU64,
    /// 1 when the most recent attempt of every source succeeded, else 0.
    pub last_successful: AtomicU64,
    /// Unix seconds of the last successful load.
    pub last_success_seconds: AtomicU64,
    /// Incremented on every successful swap; consumers compare it to rebuild derived tables.
    pub generation: AtomicU64,
    /// Bytes of the last load attempt (a reload only happens when they change).
    last_bytes: Mutex<Option<Vec<u8>>>,
    /// Every registered source's last good list and counters, in precedence order.
    sources: Mutex<BTreeMap<SourceId, SourceState>>,
}

impl RegistryHandle {
    /// Loads the node file `path` once (it becomes [`SourceId::FILE`]).
    ///
    /// # Errors
    /// The first load must succeed: a broken node file at start-up is a configuration error.
    pub fn load(path: &Path) -> Result<Arc<RegistryHandle>, RegistryError> {
        let bytes = std::fs::read(path).map_err(|source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let list = node_file::parse(path, &bytes)?;
        let reg = Registry::build(list.nodes.clone())?;
        log_conflicts(&reg, None);
        let h = RegistryHandle::fixed(reg);
        lock_unpoisoned(&h.sources).insert(
            SourceId::FILE,
            SourceState {
                nodes: list.nodes,
                success: 1,
                last_ok: Some(true),
                last_success_seconds: crate::unix_now_seconds(),
                ..SourceState::default()
            },
        );
        let h = RegistryHandle {
            path: Some(path.to_path_buf()),
            last_bytes: Mutex::new(Some(bytes)),
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
            last_bytes: Mutex::new(None),
            sources: Mutex::new(BTreeMap::new()),
        }
    }

    /// An empty handle for sources that fill it later ([`RegistryHandle::register`], then
    /// [`RegistryHandle::apply`]); optionally with the node file `path` loaded first as
    /// [`RegistryHandle::load`] does.
    ///
    /// # Errors
    /// Only from loading `path`.
    pub fn with_sources(
        path: Option<&Path>,
        others: impl IntoIterator<Item = SourceId>,
    ) -> Result<Arc<RegistryHandle>, RegistryError> {
        let h = match path {
            Some(p) => RegistryHandle::load(p)?,
            None => Arc::new(RegistryHandle::fixed(Registry::default())),
        };
        for id in others {
            h.register(id);
        }
        Ok(h)
    }

    /// Declares a source so its metrics exist (with `last_successful` 0) before its first
    /// attempt. Idempotent.
    pub fn register(&self, id: SourceId) {
        lock_unpoisoned(&self.sources).entry(id).or_default();
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
        let read = std::fs::read(path);
        let bytes = read.as_ref().ok().cloned();
        {
            let mut last = lock_unpoisoned(&self.last_bytes);
            if *last == bytes {
                return Ok(());
            }
            last.clone_from(&bytes);
        }
        let parsed = match read {
            Ok(b) => node_file::parse(path, &b),
            Err(source) => Err(RegistryError::Io {
                path: path.display().to_string(),
                source,
            }),
        };
        match parsed {
            Ok(list) => self.apply(SourceId::FILE, SourceUpdate::Replace(list)),
            Err(e) => {
                self.record_failure(SourceId::FILE, &e);
                Err(e)
            }
        }
    }

    /// Applies one source's poll result: a new list is validated on its own (names,
    /// addresses, label keys — as [`Registry::build`]), merged with every other source's last
    /// good list and swapped in; [`SourceUpdate::Unchanged`] only counts. The source is
    /// registered if it was not.
    ///
    /// # Errors
    /// The validation error; the source's previous list stays in force and the failure is
    /// counted and logged.
    pub fn apply(&self, id: SourceId, update: SourceUpdate) -> Result<(), RegistryError> {
        let list = match update {
            SourceUpdate::Unchanged => {
                let mut sources = lock_unpoisoned(&self.sources);
                let st = sources.entry(id).or_default();
                st.unchanged += 1;
                st.last_ok = Some(true);
                st.last_success_seconds = crate::unix_now_seconds();
                self.refresh_flags(&sources);
                return Ok(());
            }
            SourceUpdate::Replace(list) => list,
        };
        if let Err(e) = Registry::build(list.nodes.clone()) {
            self.record_failure(id, &e);
            return Err(e);
        }
        let mut sources = lock_unpoisoned(&self.sources);
        let base = sources.get(&id).cloned().unwrap_or_default();
        let previous = sources.insert(
            id,
            SourceState {
                nodes: list.nodes,
                skipped: list.skipped,
                ..base
            },
        );
        let (merged, shadowed) =
            sources::merge(sources.iter().map(|(k, v)| (*k, v.nodes.as_slice())));
        match Registry::build(merged) {
            Ok(reg) => {
                let old = self.current.load_full();
                log_conflicts(&reg, Some(&old));
                log_shadowed(&shadowed, &sources);
                for (sid, st) in sources.iter_mut() {
                    st.shadowed = shadowed.iter().filter(|s| s.shadowed == *sid).count() as u64;
                }
                if let Some(st) = sources.get_mut(&id) {
                    st.success += 1;
                    st.last_ok = Some(true);
                    st.last_success_seconds = crate::unix_now_seconds();
                }
                self.current.store(Arc::new(reg));
                self.reload_success.fetch_add(1, Ordering::Relaxed);
                self.last_success_seconds
                    .store(crate::unix_now_seconds(), Ordering::Relaxed);
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.refresh_flags(&sources);
                tracing::info!(
                    source = id.kind.label(),
                    index = id.index,
                    nodes = self.current.load().nodes().len(),
                    "registry reloaded"
                );
                Ok(())
            }
            Err(e) => {
                // Every list was valid on its own, so this is unexpected; undo and keep the
                // registry in force.
                match previous {
                    Some(p) => sources.insert(id, p),
                    None => sources.remove(&id),
                };
                drop(sources);
                self.record_failure(id, &e);
                Err(e)
            }
        }
    }

    /// Counts and logs a failed attempt of source `id`; its last good list stays in force.
    /// `reason` must not contain secrets (URLs are logged without their query string).
    pub fn record_failure(&self, id: SourceId, reason: &dyn Display) {
        let mut sources = lock_unpoisoned(&self.sources);
        let st = sources.entry(id).or_default();
        st.failure += 1;
        st.last_ok = Some(false);
        self.reload_failure.fetch_add(1, Ordering::Relaxed);
        self.refresh_flags(&sources);
        tracing::error!(source = id.kind.label(), index = id.index, error = %reason,
            "registry source update failed; keeping its last good node list");
    }

    /// Per-kind statistics of the registered sources, in precedence order (kinds without a
    /// registered source are absent).
    pub fn source_stats(&self) -> Vec<(SourceKind, RegistrySourceStats)> {
        let sources = lock_unpoisoned(&self.sources);
        let mut out: Vec<(SourceKind, RegistrySourceStats)> = Vec::new();
        for (id, st) in sources.iter() {
            if out.last().is_none_or(|(k, _)| *k != id.kind) {
                out.push((
                    id.kind,
                    RegistrySourceStats {
                        last_successful: 1,
                        last_success_seconds: u64::MAX,
                        ..RegistrySourceStats::default()
                    },
                ));
            }
            if let Some((_, s)) = out.last_mut() {
                s.nodes += st.nodes.len() as u64;
                s.skipped += st.skipped;
                s.shadowed += st.shadowed;
                s.success += st.success;
                s.unchanged += st.unchanged;
                s.failure += st.failure;
                if st.last_ok != Some(true) {
                    s.last_successful = 0;
                }
                s.last_success_seconds = s.last_success_seconds.min(st.last_success_seconds);
            }
        }
        out
    }

    /// Number of registered sources that made at least one attempt, and of all registered.
    pub fn sources_attempted(&self) -> (usize, usize) {
        let sources = lock_unpoisoned(&self.sources);
        let tried = sources.values().filter(|s| s.last_ok.is_some()).count();
        (tried, sources.len())
    }

    /// Blocks until every registered source made its first attempt or `timeout` passed;
    /// returns whether all did. `vpslens run` calls it before following logs so that nodes
    /// known only to remote sources are not counted as unregistered at start-up.
    pub fn wait_first_attempts(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            let (tried, all) = self.sources_attempted();
            if tried == all {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn refresh_flags(&self, sources: &BTreeMap<SourceId, SourceState>) {
        let ok = sources.values().all(|s| s.last_ok != Some(false));
        self.last_successful.store(u64::from(ok), Ordering::Relaxed);
    }
}

/// Logs the conflicts of `reg` that `old` did not have (all of them without `old`).
fn log_conflicts(reg: &Registry, old: Option<&Registry>) {
    for c in reg.conflicts() {
        if old.is_some_and(|o| o.conflicts().contains(c)) {
            continue;
        }
        tracing::warn!(prefix = %c.prefix, winner = %c.winner, loser = %c.loser,
            "address claimed by two nodes; the smaller name keeps it");
    }
}

/// Logs nodes newly shadowed by a higher-precedence source (compared by count per source to
/// stay quiet on unrelated reloads).
fn log_shadowed(shadowed: &[Shadowed], before: &BTreeMap<SourceId, SourceState>) {
    for (sid, st) in before {
        let now = shadowed.iter().filter(|s| s.shadowed == *sid).count() as u64;
        if now == st.shadowed {
            continue;
        }
        for s in shadowed.iter().filter(|s| s.shadowed == *sid).take(10) {
            tracing::info!(node = %s.name, owner = s.owner.kind.label(),
                dropped_from = s.shadowed.kind.label(),
                "node named by two registry sources; the higher-precedence source owns it");
        }
    }
}

/// Convenience for sources: turns a poll result into [`RegistryHandle::apply`] or
/// [`RegistryHandle::record_failure`].
pub fn apply_result<E: Display>(handle: &RegistryHandle, id: SourceId, r: Result<SourceUpdate, E>) {
    match r {
        Ok(u) => {
            let _ = handle.apply(id, u);
        }
        Err(e) => handle.record_failure(id, &e),
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
    let name = path.file_name().map(std::ffi::OsStr::to_os_string);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.as_ref().map_or(true, |e| touches(e, name.as_deref())) {
            let _ = tx.send(());
        }
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

/// Whether `e` can mean new registry bytes: an event that can change a file's content or
/// names ([`wakes`]: not the opens, reads and closes of our own reloads, which made the
/// watcher reload itself 20 times a second) on the registry file `name`, or on a Kubernetes
/// ConfigMap mount's `..data` link swap (names starting with `..`).
fn touches(e: &notify::Event, name: Option<&std::ffi::OsStr>) -> bool {
    wakes(&e.kind)
        && (e.paths.is_empty()
            || e.paths.iter().any(|p| {
                p.file_name()
                    .is_some_and(|f| Some(f) == name || f.as_encoded_bytes().starts_with(b".."))
            }))
}

/// Whether a file-system event can mean new bytes or new/removed/renamed files: create,
/// data or name changes, delete, close-after-write. Opens, reads, close-without-write and
/// attribute changes cannot.
fn wakes(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::EventKind;
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::sources::SourceList;

    #[test]
    fn only_events_that_can_mean_new_bytes_wake() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind,
            RenameMode,
        };
        use notify::EventKind as K;
        for k in [
            K::Create(CreateKind::File),
            K::Modify(ModifyKind::Data(DataChange::Any)),
            K::Modify(ModifyKind::Name(RenameMode::From)),
            K::Remove(RemoveKind::File),
            K::Access(AccessKind::Close(AccessMode::Write)),
        ] {
            assert!(wakes(&k), "{k:?}");
        }
        for k in [
            K::Access(AccessKind::Open(AccessMode::Any)),
            K::Access(AccessKind::Read),
            K::Access(AccessKind::Close(AccessMode::Read)),
            K::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ] {
            assert!(!wakes(&k), "{k:?}");
        }
    }

    #[test]
    fn the_registry_watchers_own_reads_do_not_wake_it() {
        // Regression: every reload's open/read/close woke the watcher again (a reload loop at
        // 20 Hz, ~1 ms of CPU per second on an idle daemon).
        use notify::event::{AccessKind, AccessMode, DataChange, ModifyKind, RenameMode};
        use notify::{Event, EventKind as K};
        let name = std::ffi::OsStr::new("nodes.yaml");
        let ev = |k: K, p: &str| Event::new(k).add_path(PathBuf::from(p));
        for k in [
            K::Access(AccessKind::Open(AccessMode::Any)),
            K::Access(AccessKind::Read),
            K::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(
                !touches(&ev(k, "/etc/vpslens/nodes.yaml"), Some(name)),
                "{k:?}"
            );
        }
        let write = K::Modify(ModifyKind::Data(DataChange::Any));
        assert!(touches(&ev(write, "/etc/vpslens/nodes.yaml"), Some(name)));
        assert!(!touches(&ev(write, "/etc/vpslens/access.log"), Some(name)));
        let swap = K::Modify(ModifyKind::Name(RenameMode::To));
        assert!(
            touches(&ev(swap, "/etc/vpslens/..data"), Some(name)),
            "ConfigMap update"
        );
        assert!(touches(
            &ev(
                K::Access(AccessKind::Close(AccessMode::Write)),
                "/etc/vpslens/nodes.yaml"
            ),
            Some(name)
        ));
    }

    fn list(nodes: &[(&str, &str)]) -> SourceUpdate {
        SourceUpdate::Replace(SourceList {
            nodes: nodes
                .iter()
                .map(|(n, a)| NodeSpec {
                    name: (*n).into(),
                    addresses: vec![(*a).into()],
                    node_id: None,
                    labels: BTreeMap::new(),
                })
                .collect(),
            skipped: 0,
        })
    }

    fn stats(h: &RegistryHandle, kind: SourceKind) -> RegistrySourceStats {
        h.source_stats()
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s)
            .unwrap()
    }

    #[test]
    fn invalid_list_keeps_the_sources_last_good_list_and_instances_sum_per_kind() {
        let h = RegistryHandle::with_sources(None, [SourceId::file_sd(0), SourceId::file_sd(1)])
            .unwrap();
        assert_eq!(h.sources_attempted(), (0, 2));
        assert_eq!(stats(&h, SourceKind::FileSd).last_successful, 0, "untried");
        h.apply(SourceId::file_sd(0), list(&[("a", "192.0.2.1")]))
            .unwrap();
        h.apply(SourceId::file_sd(1), list(&[("b", "192.0.2.2")]))
            .unwrap();
        assert_eq!(h.current().nodes().len(), 2);
        let s = stats(&h, SourceKind::FileSd);
        assert_eq!((s.nodes, s.success, s.last_successful), (2, 2, 1));

        // An invalid node (bad address) rejects that instance's update only.
        let gen = h.generation();
        assert!(h
            .apply(SourceId::file_sd(1), list(&[("c", "not-an-ip")]))
            .is_err());
        assert_eq!(h.generation(), gen);
        assert!(h.current().index_of("b").is_some(), "last good kept");
        let s = stats(&h, SourceKind::FileSd);
        assert_eq!((s.nodes, s.failure, s.last_successful), (2, 1, 0));
        assert_eq!(h.last_successful.load(Ordering::Relaxed), 0);

        // Instance 0 reporting "unchanged" does not hide instance 1's failure.
        h.apply(SourceId::file_sd(0), SourceUpdate::Unchanged)
            .unwrap();
        assert_eq!(stats(&h, SourceKind::FileSd).last_successful, 0);
        assert_eq!(stats(&h, SourceKind::FileSd).unchanged, 1);

        // Recovery; an emptied source removes its nodes from the merge.
        h.apply(SourceId::file_sd(1), list(&[])).unwrap();
        assert_eq!(stats(&h, SourceKind::FileSd).last_successful, 1);
        assert_eq!(h.last_successful.load(Ordering::Relaxed), 1);
        assert!(h.current().index_of("b").is_none());
        assert_eq!(h.current().nodes().len(), 1);
    }
}
