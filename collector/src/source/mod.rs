//! Source stage: follow access-log files across rotation, truncation and restarts.
//!
//! **Architecture Invariant:** a line is handed to the [`LineProcessor`] exactly once. Offsets
//! only advance past lines that were processed, and checkpoints store offsets together with the
//! counters they produced.
//!
//! File identity is `(device, inode)` plus a fingerprint: the file's first
//! [`FINGERPRINT_BYTES`] bytes.
//! - Rename-and-create: the renamed file stays open and is drained to its end (kept for
//!   `rotate_wait` after it stops growing); the new file at the path is read from offset 0.
//! - Truncation (size < offset) and rewrite (fingerprint changed, e.g. copytruncate followed by
//!   new writes): restart at 0 and count it. The old identity is retired with its offset, so a
//!   copy (`access.log.1` from copytruncate) resumes where reading stopped.
//! - Rotated siblings (`<followed name>.…`, `<followed name>-…`) are drained even when the
//!   patterns do not cover them: see [`Tailer::poll`] → `scan_siblings`.
//! - A file whose fingerprint equals a *live* file's is a copy in progress: it is not read until
//!   the original is truncated or gone.
//! - Deletion: what is open is drained, then dropped.
//! - Inode reuse: an inode match only counts when the fingerprint matches too.
//! - Restart: files are matched against the checkpoint by inode+fingerprint, then by fingerprint
//!   alone (renamed or copied while vpslens was down). Without a checkpoint, `read_from` applies.
//!
//! Kubernetes container logs (CRI, docker `json-file`) are detected per file and partial chunks
//! are reassembled; a checkpoint never splits a partial sequence.

pub mod checkpoint;
mod file;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::pipeline::LineProcessor;
use checkpoint::{Checkpoint, Lineage};
use file::Tracked;

/// Bytes of a file's head used as its fingerprint.
pub const FINGERPRINT_BYTES: usize = 256;
/// Minimum fingerprint length for matching a file by content alone (copies, renames while down).
pub const MIN_CONTENT_MATCH: usize = 32;
/// Retired identities remembered for copy detection.
const MAX_RETIRED: usize = 256;

/// Where to start a file that has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[derive(serde::Serialize)]
pub enum ReadFrom {
    /// From offset 0.
    Beginning,
    /// From the current end (only complete lines written after start are read).
    #[default]
    End,
}

/// How lines are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[derive(serde::Serialize)]
pub enum FramingMode {
    /// Detect per file from its first line (CRI, docker json-file, or raw).
    #[default]
    Auto,
    /// One entry per line.
    Raw,
    /// CRI container log.
    Cri,
    /// docker json-file.
    Docker,
}

/// Tailer settings.
#[derive(Debug, Clone)]
pub struct TailConfig {
    /// File paths or glob patterns. `*.gz` matches are ignored.
    pub patterns: Vec<String>,
    /// Start position for files without a checkpoint, at first start only.
    pub read_from: ReadFrom,
    /// Lines longer than this (bytes) are skipped and counted.
    pub max_line_bytes: usize,
    /// Poll period (also the fallback when file events are unavailable).
    pub poll_interval: Duration,
    /// How long a file that left the patterns is kept open after it stopped growing.
    pub rotate_wait: Duration,
    /// Framing.
    pub framing: FramingMode,
    /// Directory for checkpoints; `None` disables them.
    pub state_dir: Option<PathBuf>,
    /// Checkpoint period.
    pub checkpoint_interval: Duration,
    /// Read buffer size per read call (bytes); bounds memory per file.
    pub read_chunk_bytes: usize,
    /// Treat end-of-file as end-of-line (replay of finished files).
    pub eof_ends_line: bool,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            patterns: Vec::new(),
            read_from: ReadFrom::End,
            max_line_bytes: 64 * 1024,
            poll_interval: Duration::from_millis(250),
            rotate_wait: Duration::from_secs(10),
            framing: FramingMode::Auto,
            state_dir: None,
            checkpoint_interval: Duration::from_secs(5),
            read_chunk_bytes: 256 * 1024,
            eof_ends_line: false,
        }
    }
}

/// Errors that stop the tailer from starting.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A glob pattern is invalid.
    #[error("invalid path pattern `{pattern}`: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        message: String,
    },
    /// The checkpoint exists but cannot be used.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

/// Follows files and feeds their lines to a [`LineProcessor`].
#[derive(Debug)]
pub struct Tailer {
    cfg: TailConfig,
    processor: LineProcessor,
    files: Vec<Tracked>,
    /// Identities of files no longer followed (truncated, dropped) or from the checkpoint.
    known: Vec<Lineage>,
    /// True until the first discovery pass ran.
    first_pass: bool,
    /// A checkpoint was restored (then `read_from` does not apply).
    restored: bool,
    /// When the restored checkpoint was written (Unix ms; 0 without one).
    saved_at: u64,
    /// Wall-clock start of the previous poll.
    last_poll_wall: std::time::SystemTime,
    last_checkpoint: Instant,
    buf: Vec<u8>,
}

impl Tailer {
    /// Creates a tailer, restoring counters and offsets from the checkpoint in `state_dir` if
    /// there is one.
    ///
    /// # Errors
    /// [`SourceError`] for invalid patterns or an unreadable checkpoint.
    pub fn new(cfg: TailConfig, mut processor: LineProcessor) -> Result<Tailer, SourceError> {
        for p in &cfg.patterns {
            glob::Pattern::new(p).map_err(|e| SourceError::Pattern {
                pattern: p.clone(),
                message: e.to_string(),
            })?;
        }
        let mut known = Vec::new();
        let mut restored = false;
        let mut saved_at = 0;
        if let Some(dir) = &cfg.state_dir {
            if let Some(cp) = checkpoint::load(dir)? {
                saved_at = cp.saved_at_unix_ms;
                let shared = processor.shared().clone();
                *shared.lock() = cp.aggregator.restore(shared.config.limits);
                processor.invalidate();
                known = cp.files;
                restored = true;
                tracing::info!(files = known.len(), "restored checkpoint");
            }
        }
        let buf = vec![0; cfg.read_chunk_bytes.max(4096)];
        Ok(Tailer {
            cfg,
            processor,
            files: Vec::new(),
            known,
            first_pass: true,
            restored,
            saved_at,
            last_poll_wall: std::time::SystemTime::now(),
            last_checkpoint: Instant::now(),
            buf,
        })
    }

    /// The processor (for tests and replay summaries).
    pub fn processor(&self) -> &LineProcessor {
        &self.processor
    }

    /// One full cycle: detect truncation, discover files, read everything available, drop
    /// files that are gone and quiet, checkpoint if due.
    pub fn poll(&mut self) {
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        self.check_truncations();
        self.discover(now);
        self.scan_siblings(now);
        for i in 0..self.files.len() {
            let (files, buf) = (&mut self.files, &mut self.buf);
            files[i].drain(buf, &mut self.processor, &self.cfg, now);
        }
        self.drop_gone(now);
        self.publish_lag();
        self.last_poll_wall = wall;
        if self.first_pass {
            self.first_pass = false;
            self.processor.shared().ready.store(true, Ordering::Release);
        }
        if self.cfg.state_dir.is_some()
            && now.duration_since(self.last_checkpoint) >= self.cfg.checkpoint_interval
        {
            self.checkpoint();
        }
    }

    /// Runs until `stop` is set: polls on file events or every `poll_interval`; on stop drains
    /// once more and writes a final checkpoint.
    pub fn run(mut self, stop: &AtomicBool, wake: &mpsc::Receiver<()>) {
        while !stop.load(Ordering::Acquire) {
            self.poll();
            let _ = wake.recv_timeout(self.cfg.poll_interval);
            while wake.try_recv().is_ok() {}
        }
        self.poll();
        self.checkpoint();
    }

    /// Writes a checkpoint now (no-op without a state dir).
    pub fn checkpoint(&mut self) {
        let Some(dir) = self.cfg.state_dir.clone() else {
            return;
        };
        self.last_checkpoint = Instant::now();
        let mut files: Vec<Lineage> = self.files.iter().map(Tracked::lineage).collect();
        files.extend(self.known.iter().cloned());
        let shared = self.processor.shared().clone();
        let aggregator = shared.lock().clone();
        let cp = Checkpoint {
            version: checkpoint::VERSION,
            saved_at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            files,
            aggregator,
        };
        match checkpoint::store(&dir, &cp) {
            Ok(()) => shared.sources.record_checkpoint(true),
            Err(e) => {
                shared.sources.record_checkpoint(false);
                tracing::error!(error = %e, "checkpoint write failed");
            }
        }
    }

    fn check_truncations(&mut self) {
        let shared = self.processor.shared().clone();
        for f in &mut self.files {
            if let Some(old) = f.detect_truncation() {
                crate::pipeline::add(&shared.sources.truncations, 1);
                tracing::info!(path = %f.path.display(), "file truncated or rewritten; reading from 0");
                remember(&mut self.known, old);
            }
        }
    }

    /// Rotated siblings hold lines of followed files even when the patterns do not cover them:
    /// `access.log.1` from logrotate's copytruncate (the lines between the last read and the
    /// truncation), a file created and rotated away between two polls, kubelet's
    /// `0.log.<timestamp>` rotated while vpslens was down. In the directories of followed
    /// files, siblings named `<followed name>.…` or `<followed name>-…` are drained when
    /// - their inode and fingerprint are known and they have bytes past the known offset, or
    /// - their fingerprint matches a retired file's (a copy) and they have bytes past its
    ///   offset, or
    /// - their inode is unknown and they were modified since the previous poll (or, on the
    ///   first poll after a restart, since the checkpoint was written): they hold lines never
    ///   read.
    fn scan_siblings(&mut self, now: Instant) {
        if self.first_pass && !self.restored {
            // Fresh start: `read_from` decides; nothing was read that a sibling could continue.
            return;
        }
        let restoring = self.first_pass && self.restored;
        let mut dirs: Vec<(PathBuf, String)> = self
            .files
            .iter()
            .filter_map(|f| dir_and_name(&f.path))
            .chain(self.known.iter().filter_map(|l| dir_and_name(&l.path)))
            .collect();
        dirs.sort();
        dirs.dedup();
        // File timestamps come from the kernel's coarse clock and can trail `SystemTime::now()`
        // by a tick; the slack is safe because an adopted file becomes known by inode and is
        // then only read past its known offset.
        let slack = std::time::Duration::from_secs(2);
        let since = if restoring {
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.saved_at)
        } else {
            self.last_poll_wall
        };
        let since = since.checked_sub(slack).unwrap_or(std::time::UNIX_EPOCH);
        for (dir, base) in dirs {
            for path in siblings(&dir, &base) {
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let (dev, ino) = file::identity(&meta);
                if self.files.iter().any(|f| f.dev == dev && f.ino == ino) {
                    continue;
                }
                let size = meta.len();
                // Heads are read lazily: most siblings are old rotations already read in full.
                let head = std::cell::OnceCell::new();
                let head = || head.get_or_init(|| file::read_head_of(&path)).as_slice();
                // An inode match counts only with a matching fingerprint (inodes are reused).
                let by_inode = self
                    .known
                    .iter()
                    .filter(|l| l.dev == dev && l.ino == ino)
                    .find(|l| prefix_match(&l.head, head(), l.head.len().min(MIN_CONTENT_MATCH)));
                let adopt = match by_inode {
                    Some(l) => size > l.offset,
                    None => {
                        meta.modified().is_ok_and(|m| m >= since)
                            || self
                                .known
                                .iter()
                                .filter(|l| size > l.offset)
                                .any(|l| prefix_match(&l.head, head(), MIN_CONTENT_MATCH))
                    }
                };
                if adopt {
                    self.adopt_outside_patterns(&path, now);
                }
            }
        }
    }

    /// Tracks a file outside the patterns (found by identity): drained, then dropped.
    fn adopt_outside_patterns(&mut self, path: &Path, now: Instant) {
        let before = self.files.len();
        self.discover_one(path, now);
        if let Some(f) = self.files.get_mut(before) {
            f.found = false;
            tracing::info!(path = %path.display(), "draining a rotated copy outside the patterns");
        }
    }

    fn discover(&mut self, now: Instant) {
        for f in &mut self.files {
            f.found = false;
        }
        let mut paths = Vec::new();
        for p in &self.cfg.patterns {
            match glob::glob(p) {
                Ok(it) => paths.extend(it.filter_map(Result::ok)),
                Err(e) => tracing::warn!(pattern = %p, error = %e, "bad pattern"),
            }
        }
        paths.sort();
        paths.dedup();
        for path in paths {
            if skipped_extension(&path) {
                continue;
            }
            self.discover_one(&path, now);
        }
    }

    fn discover_one(&mut self, path: &Path, now: Instant) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let (dev, ino) = file::identity(&meta);
        if let Some(t) = self.files.iter_mut().find(|t| t.dev == dev && t.ino == ino) {
            t.found = true;
            if t.path != path {
                t.path = path.to_path_buf();
            }
            return;
        }
        let Ok(mut t) = Tracked::open(path, self.cfg.max_line_bytes, now) else {
            return;
        };
        t.set_framing(self.cfg.framing);
        let head = t.head.clone();
        let size = t.size();
        // 1. Same inode and fingerprint as a remembered identity: resume there.
        if let Some(i) = self.known.iter().position(|l| {
            l.dev == dev
                && l.ino == ino
                && l.offset <= size
                && prefix_match(&l.head, &head, l.head.len().min(MIN_CONTENT_MATCH))
        }) {
            let l = self.known.remove(i);
            t.resume_at(l.offset);
        } else if self
            .files
            .iter()
            .any(|live| prefix_match(&live.head, &head, MIN_CONTENT_MATCH))
        {
            // 2. A copy of a file being read: wait until the original is truncated or gone.
            return;
        } else if let Some(i) = self
            .known
            .iter()
            .position(|l| prefix_match(&l.head, &head, MIN_CONTENT_MATCH))
        {
            // 3. Same content as a retired/checkpointed file (copytruncate copy, or renamed
            //    while down): continue where that file was left.
            let l = self.known.remove(i);
            t.resume_at(l.offset.min(t.size()));
        } else if self.first_pass && !self.restored && self.cfg.read_from == ReadFrom::End {
            // 4. Initial start without a checkpoint.
            t.start_at_end();
        } else if t.head.len() < MIN_CONTENT_MATCH && t.size() > 0 && !t.head.contains(&b'\n') {
            // Too little content to tell a copy from a new file: decide on a later poll.
            return;
        }
        if !self.first_pass && self.files.iter().any(|f| f.path == path && !f.found) {
            crate::pipeline::add(&self.processor.shared().sources.rotations, 1);
        }
        t.found = true;
        self.files.push(t);
    }

    fn drop_gone(&mut self, now: Instant) {
        let wait = self.cfg.rotate_wait;
        let mut i = 0;
        while i < self.files.len() {
            let f = &self.files[i];
            if !f.found && f.at_eof && now.duration_since(f.last_growth) >= wait && !f.pending() {
                let f = self.files.swap_remove(i);
                tracing::debug!(path = %f.path.display(), "dropping file that left the patterns");
                remember(&mut self.known, f.lineage());
            } else {
                i += 1;
            }
        }
    }

    fn publish_lag(&self) {
        let lag: Vec<(String, u64)> = self
            .files
            .iter()
            .filter(|f| f.found)
            .map(|f| (f.path.display().to_string(), f.lag()))
            .collect();
        let shared = self.processor.shared();
        if let Ok(mut l) = shared.sources.lag.lock() {
            *l = lag;
        }
    }
}

/// A path's directory and file name.
fn dir_and_name(path: &Path) -> Option<(PathBuf, String)> {
    let dir = path.parent()?.to_path_buf();
    let name = path.file_name()?.to_string_lossy().into_owned();
    Some((dir, name))
}

/// Regular files in `dir` named `<base>.…` or `<base>-…` (logrotate's and kubelet's rotated
/// names), except compressed/temporary ones.
fn siblings(dir: &Path, base: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
        })
        .map(|e| e.path())
        .filter(|p| !skipped_extension(p) && p.is_file())
        .collect();
    out.sort();
    out
}

/// Compressed or temporary files are never read (kubelet gzips old rotations).
fn skipped_extension(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz" || e == "tmp")
}

/// `a` and `b` agree on their common prefix, which is at least `min` bytes (and non-empty).
fn prefix_match(a: &[u8], b: &[u8], min: usize) -> bool {
    let n = a.len().min(b.len());
    n > 0 && n >= min && a[..n] == b[..n]
}

fn remember(known: &mut Vec<Lineage>, l: Lineage) {
    known.retain(|k| !(k.dev == l.dev && k.ino == l.ino));
    known.push(l);
    if known.len() > MAX_RETIRED {
        known.remove(0);
    }
}

/// Starts a thread that wakes `tx` on file-system events in the directories of `patterns`
/// (best effort; polling covers filesystems without inotify). The watcher lives as long as the
/// returned value.
pub fn watch_dirs(patterns: &[String], tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut w = notify::recommended_watcher(move |_e: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .ok()?;
    for p in patterns {
        let dir = glob_base(p);
        if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; polling");
        }
    }
    Some(w)
}

/// The longest leading directory of a pattern without glob metacharacters.
fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    let path = Path::new(pattern);
    let comps: Vec<_> = path.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let s = c.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[']) || i + 1 == comps.len() {
            break;
        }
        base.push(c);
    }
    if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    }
}

/// A tailer thread plus its stop flag and wake channel.
#[derive(Debug)]
pub struct TailHandle {
    stop: Arc<AtomicBool>,
    wake: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl TailHandle {
    /// Spawns the tailer thread.
    ///
    /// # Errors
    /// Thread creation failure.
    pub fn spawn(tailer: Tailer) -> std::io::Result<TailHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let watcher = watch_dirs(&tailer.cfg.patterns, tx.clone());
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vpslens-tail".into())
            .spawn(move || tailer.run(&s, &rx))?;
        Ok(TailHandle {
            stop,
            wake: tx,
            thread: Some(thread),
            _watcher: watcher,
        })
    }

    /// Stops the thread after a final drain and checkpoint, and waits for it.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
