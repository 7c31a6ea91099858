//! Source stage: follow access-log files across rotation, truncation and restarts.
//!
//! **Architecture Invariant:** a line is handed to the [`LineSink`] exactly once. Offsets only
//! advance past lines the sink reports applied, and checkpoints store offsets together with the
//! sink state (the counters) they produced. The source stage knows nothing later: the sink is
//! any [`LineSink`] (`pipeline::LineProcessor` in `vpslens run` and `replay`).
//!
//! **Architecture Invariant (file identity):** two distinct files are never taken for one.
//! - A followed file is its open descriptor, `(device, inode)`; it is held open, so its inode
//!   cannot be reused while followed. A rename keeps it (drained to its end, kept for
//!   `rotate_wait` after it stops growing); a new inode at a followed path is a new file, read
//!   from 0.
//! - File *heads* prove nothing: Envoy prints JSON keys sorted, so requests on one keep-alive
//!   connection share their first ~300 bytes; a head fingerprint (Vector's `checksum`, our
//!   first 256 bytes before) merges such files and drops one (Vector issues #5833 "More than one
//!   file has the same fingerprint", #643 empty files identical), and inode alone is reused
//!   (Fluent Bit #1875, #4895, #2960: a new file resumed at a deleted file's offset).
//! - Content is matched only to continue a recorded position, on [`identity::Evidence`] that
//!   distinct files cannot share: the candidate is at least `offset` bytes long and has the
//!   same whole first line and the same 4 KiB before `offset` (SHA-256 digests; Envoy lines
//!   carry request ids and start times). Where it is used:
//!   1. same inode as a remembered or checkpointed file (renamed while down, restarts, an
//!      inode met again): resume at its offset only if the evidence holds; otherwise the inode
//!      was truncated, rewritten or reused;
//!   2. a copy (a different inode) only of a file truncated in place (copytruncate), and only
//!      in the poll that found the truncation (while running) or found a checkpointed inode
//!      present but failing its evidence (at restart): a copy is made before the truncation,
//!      later files copy newer bytes, which may repeat the old ones. A new file met while a
//!      followed file shows a truncation newer than this poll's check (a copytruncate racing
//!      the poll) is decided on the next poll, after that check;
//!   3. an empty new file is decided on once it has bytes (`cp` creates its copy empty);
//!      a new file that holds so far only bytes of a followed file, at the same positions (its
//!      whole first line and its last 4 KiB), may be a copy being made: it waits until that
//!      file is truncated (then 2 applies), for `rotate_wait` at most (then it is a file of its
//!      own, read from 0: a file whose lines equal another's is still read).
//! - A fresh start (no checkpoint; every `replay`) matches nothing: every input is read per
//!   `read_from`, so two inputs with colliding heads, or one a prefix of another, are both
//!   read in full.
//! - A followed file is truncated (or rewritten) when its size drops below the read offset or
//!   the 4 KiB before its committed offset change; it restarts at 0 and its old identity
//!   becomes a copy candidate (2). Each read is kept only if the file still holds, after it,
//!   the bytes just before it (a file truncated and written past our position between the
//!   check and the read is not read on as the old one), and a resumed file must still hold
//!   its proven bytes when it is positioned.
//! - Evidence is taken from the bytes read (the first line as read from offset 0, the 4 KiB
//!   before the offset from memory) or from the lineage that proved the file, never read back
//!   from a file a writer may have copied and truncated since (that left identities without
//!   evidence and their copies read from 0).
//! - A remembered identity whose inode is found holding other bytes is marked truncated
//!   before any copy is matched in that listing, in any poll (a rename racing a restart's
//!   first listing defers it to the sibling scan).
//! - Checkpoints store digests, never file bytes. Version 1 checkpoints (raw first 256 bytes)
//!   still load; their identities match by inode plus those bytes and are rewritten as digests.
//!
//! Rotated siblings (`<followed name>.…`, `<followed name>-…`) are drained even when the
//! patterns do not cover them: see [`Tailer::poll`] → `scan_siblings`. Deletion: what is open
//! is drained, then dropped. Without a checkpoint, `read_from` applies. A checkpoint is written
//! after the first pass, after each rotation or truncation, and every `checkpoint_interval`
//! while offsets, files or the sink's state changed.
//!
//! Kubernetes container logs (CRI, docker `json-file`) are detected per file by the first line
//! that frames (a cut or garbage first line does not decide) and partial chunks are
//! reassembled; a checkpoint never splits a partial sequence.

pub mod checkpoint;
mod file;
pub mod identity;
pub mod sink;
pub mod stats;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use checkpoint::{Checkpoint, Lineage};
use file::Tracked;
pub use sink::{Applied, Line, LineSink};
pub use stats::SourceStats;
pub use watch::{Stopper, Watch, Woke};

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
    /// Shortest gap between two reads while file events keep coming (they are batched into
    /// one read per gap), and the poll period where file events do not cover the patterns.
    pub poll_interval: Duration,
    /// Where file events cover the patterns: how often discovery (globs, rotated siblings)
    /// runs although no event asked for it, a safety net for lost events.
    pub rescan_interval: Duration,
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
            poll_interval: Duration::from_millis(200),
            rescan_interval: Duration::from_secs(10),
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

/// Points inside a poll where tests act as a writer racing the tailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PollStage {
    /// After the truncation check, before discovery.
    TruncationsChecked,
    /// In a restart's first poll, after the files that may be checkpointed ones were listed
    /// and before they are looked at.
    RestartListed,
    /// After discovery, before the files are read.
    Discovered,
}

/// The sink's state as the checkpoint's `aggregator` ([`LineSink::serialize_state`]).
struct SinkState<'a, K>(&'a K);

impl<K: LineSink> serde::Serialize for SinkState<'_, K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_state(s)
    }
}

/// Follows files and feeds their lines to a [`LineSink`] `K`.
#[derive(Debug)]
pub struct Tailer<K: LineSink> {
    cfg: TailConfig,
    sink: K,
    /// Counters this stage publishes (read by the export stage).
    stats: Arc<SourceStats>,
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
    /// Write a checkpoint at the end of this poll: the first positions, a rotation or a
    /// truncation happened (a crash loop then keeps its offsets).
    checkpoint_soon: bool,
    /// Offsets, files or the sink's state changed since the last checkpoint (an idle tailer
    /// does not rewrite an unchanged one every `checkpoint_interval`).
    dirty: bool,
    /// The last discovery left a file undecided (empty, a copy being made, deferred): the next
    /// poll runs discovery whatever woke it.
    undecided: bool,
    /// Siblings found to hold nothing to read, by identity, with the size and mtime then.
    sibling_seen: rustc_hash::FxHashMap<(u64, u64), (u64, Option<std::time::SystemTime>)>,
    /// Files waiting as possible copies in progress: since when, and of which followed file.
    copy_waits: rustc_hash::FxHashMap<(u64, u64), (Instant, (u64, u64))>,
    buf: Vec<u8>,
    /// Serialised checkpoint, kept between checkpoints (megabytes at fleet scale).
    checkpoint_buf: Vec<u8>,
}

impl<K: LineSink> Tailer<K> {
    /// Creates a tailer feeding `sink` and updating `stats`, restoring the sink's state and the
    /// offsets from the checkpoint in `state_dir` if there is one.
    ///
    /// # Errors
    /// [`SourceError`] for invalid patterns or an unreadable checkpoint (including a sink state
    /// that does not decode as `K::State`).
    pub fn new(
        cfg: TailConfig,
        mut sink: K,
        stats: Arc<SourceStats>,
    ) -> Result<Tailer<K>, SourceError> {
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
            if let Some(cp) = checkpoint::load::<K::State>(dir)? {
                saved_at = cp.saved_at_unix_ms;
                sink.restore(cp.state);
                known = cp.files;
                restored = true;
                tracing::info!(files = known.len(), "restored checkpoint");
            }
        }
        let buf = vec![0; cfg.read_chunk_bytes.max(4096)];
        Ok(Tailer {
            cfg,
            sink,
            stats,
            files: Vec::new(),
            known,
            first_pass: true,
            restored,
            saved_at,
            last_poll_wall: std::time::SystemTime::now(),
            last_checkpoint: Instant::now(),
            checkpoint_soon: false,
            dirty: false,
            undecided: false,
            sibling_seen: rustc_hash::FxHashMap::default(),
            copy_waits: rustc_hash::FxHashMap::default(),
            buf,
            checkpoint_buf: Vec::new(),
        })
    }

    /// The sink (for tests and replay summaries).
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// One full cycle: detect truncation, discover files, read everything available, drop
    /// files that are gone and quiet, checkpoint if due.
    pub fn poll(&mut self) {
        self.poll_with(true, &mut |_| {});
    }

    /// [`Tailer::poll`] after a wake caused only by writes to existing files: no discovery and
    /// no sibling scan (no name appeared, moved or vanished) unless the truncation check finds
    /// a truncated file (its copy is looked for in this poll, as [`Tailer::poll`] does) or this
    /// is the first poll. Sound at any time: what it leaves out, the next [`Tailer::poll`]
    /// finds (siblings modified since the previous full poll).
    pub fn poll_written(&mut self) {
        self.poll_with(false, &mut |_| {});
    }

    /// [`Tailer::poll`], calling `at` at each [`PollStage`] (tests put a rotation there:
    /// writers do not wait for our polls).
    fn poll_with(&mut self, full: bool, at: &mut dyn FnMut(PollStage)) {
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        // A truncated identity is a copy candidate only in the poll that found it truncated
        // (or, after a restart, found its inode failing its evidence): a copy is made before
        // the truncation, so it is there to be found then; later files are copies of newer
        // bytes, which may repeat the old ones.
        self.known.retain(|l| !l.truncated);
        let truncated = self.check_truncations();
        at(PollStage::TruncationsChecked);
        // A file left undecided (empty, a copy in progress) is looked at again on the next
        // poll: writes to it look like writes to any file.
        let full = full || truncated || self.first_pass || self.undecided;
        if full {
            let before = self.files.len();
            self.discover(now, at);
            self.scan_siblings(now);
            self.dirty |= self.files.len() != before;
        }
        at(PollStage::Discovered);
        for i in 0..self.files.len() {
            let (files, buf) = (&mut self.files, &mut self.buf);
            self.dirty |= files[i].drain(buf, &mut self.sink, &self.stats, &self.cfg, now);
        }
        self.drop_gone(now);
        self.publish_lag();
        if full {
            // Siblings modified since the previous full poll may hold unread lines.
            self.last_poll_wall = wall;
        }
        if self.first_pass {
            self.first_pass = false;
            self.checkpoint_soon = true;
            self.stats.ready.store(true, Ordering::Release);
        }
        if self.cfg.state_dir.is_some()
            && (self.checkpoint_soon
                || (self.dirty
                    && now.duration_since(self.last_checkpoint) >= self.cfg.checkpoint_interval))
        {
            self.checkpoint();
        }
    }

    /// Runs until `stop` is set; on stop drains once more and writes a final checkpoint.
    ///
    /// With a [`Watch`] that covers every pattern the tailer sleeps until a file event (an
    /// idle tailer costs nothing), reads at most once per `poll_interval` while events keep
    /// coming (Envoy writes its log every flush: tens of writes a second under load), skips
    /// discovery when only existing files were written ([`Tailer::poll_written`]) and runs it
    /// on any other event and every `rescan_interval`. Otherwise it polls fully every
    /// `poll_interval`, and sooner on any event. `stop_rx` ends a wait without a watch.
    pub fn run(
        mut self,
        stop: &AtomicBool,
        mut watch: Option<Watch>,
        stop_rx: &mpsc::Receiver<()>,
    ) {
        let covered = watch.as_ref().is_some_and(Watch::covers);
        let mut full = true;
        let mut hot = false;
        let mut last_full = Instant::now();
        while !stop.load(Ordering::Acquire) {
            let started = Instant::now();
            if full {
                last_full = started;
                self.poll();
            } else {
                self.poll_written();
            }
            let suspect = self.files.iter().any(Tracked::suspect);
            let woke = match watch.as_mut() {
                Some(w) if covered => {
                    let mut woke = Woke::Timeout;
                    if hot && !suspect {
                        // Lines are flowing: one sleep per read, then whatever queued up meanwhile
                        // (a wake per event costs more than reading the lines, issue 14).
                        let gap = self.cfg.poll_interval.saturating_sub(started.elapsed());
                        if !gap.is_zero() {
                            std::thread::sleep(gap);
                        }
                        woke = w.take();
                    }
                    if woke == Woke::Timeout && !stop.load(Ordering::Acquire) {
                        // Quiet: sleep until an event, the next rescan or a checkpoint due.
                        woke = w.wait(self.quiet_timeout(last_full, suspect));
                    }
                    woke
                }
                Some(w) => {
                    let _ = w.wait(if suspect {
                        Duration::ZERO
                    } else {
                        self.cfg.poll_interval
                    });
                    Woke::Names
                }
                None => {
                    if !suspect {
                        let _ = stop_rx.recv_timeout(self.cfg.poll_interval);
                    }
                    Woke::Names
                }
            };
            hot = woke != Woke::Timeout;
            full = woke != Woke::Writes || last_full.elapsed() >= self.cfg.rescan_interval;
        }
        self.poll();
        self.checkpoint();
    }

    /// How long a quiet tailer with complete file events sleeps: until the next rescan, or
    /// sooner while counted lines are not yet checkpointed; not at all while a file was found
    /// rewritten under its read position (handled right away).
    fn quiet_timeout(&self, last_full: Instant, suspect: bool) -> Duration {
        if suspect {
            return Duration::ZERO;
        }
        let rescan = self.cfg.rescan_interval.saturating_sub(last_full.elapsed());
        if self.dirty && self.cfg.state_dir.is_some() {
            let due = self
                .cfg
                .checkpoint_interval
                .saturating_sub(self.last_checkpoint.elapsed());
            rescan.min(due)
        } else {
            rescan
        }
    }

    /// Writes a checkpoint now (no-op without a state dir).
    pub fn checkpoint(&mut self) {
        let Some(dir) = self.cfg.state_dir.clone() else {
            return;
        };
        self.last_checkpoint = Instant::now();
        self.checkpoint_soon = false;
        self.dirty = false;
        let mut files: Vec<Lineage> = self.files.iter().map(Tracked::lineage).collect();
        // Version 1 identities not found again cannot be written without their raw heads.
        files.extend(
            self.known
                .iter()
                .filter(|l| l.legacy_head.is_none() && !l.truncated)
                .cloned(),
        );
        let cp = Checkpoint {
            version: checkpoint::VERSION,
            saved_at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            files,
            state: SinkState(&self.sink),
        };
        match checkpoint::store(&dir, &cp, &mut self.checkpoint_buf) {
            Ok(()) => self.stats.record_checkpoint(true),
            Err(e) => {
                self.stats.record_checkpoint(false);
                tracing::error!(error = %e, "checkpoint write failed");
            }
        }
    }

    /// Whether a followed file was found truncated or rewritten.
    fn check_truncations(&mut self) -> bool {
        let mut any = false;
        for f in &mut self.files {
            if let Some(old) = f.detect_truncation() {
                stats::add(&self.stats.truncations, 1);
                tracing::info!(path = %f.path.display(), "file truncated or rewritten; reading from 0");
                remember(&mut self.known, old);
                self.sibling_seen.clear();
                self.checkpoint_soon = true;
                any = true;
            }
        }
        any
    }

    /// Rotated siblings hold lines of followed files even when the patterns do not cover them:
    /// `access.log.1` from logrotate's copytruncate (the lines between the last read and the
    /// truncation), a file created and rotated away between two polls, kubelet's
    /// `0.log.<timestamp>` rotated while vpslens was down. In the directories of followed
    /// files, siblings named `<followed name>.…` or `<followed name>-…` are drained when
    /// - a remembered identity with their inode is proven ([`Lineage`] evidence) and they have
    ///   bytes past its offset, or
    /// - they are proven copies of a file truncated in place and have bytes past its offset, or
    /// - their inode is unknown and they were modified since the previous poll (or, on the
    ///   first poll after a restart, since the checkpoint was written): they hold lines never
    ///   read. [`Tailer::discover_new`] then decides where to start.
    fn scan_siblings(&mut self, now: Instant) {
        if self.first_pass && !self.restored {
            // Fresh start: `read_from` decides; nothing was read that a sibling could continue.
            return;
        }
        let since = self.sibling_since();
        // First every remembered identity whose inode is listed is settled (proven, or
        // failing its evidence: truncated), then copies are matched: a copy listed before the
        // file it copies must still find that file's identity marked truncated.
        let mut listed = Vec::new();
        for path in self.sibling_paths() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let (dev, ino) = file::identity(&meta);
            if self.files.iter().any(|f| f.dev == dev && f.ino == ino) {
                continue;
            }
            let born = file::born(&meta);
            let (size, mtime) = (meta.len(), meta.modified().ok());
            // Unchanged since it was last found to hold nothing new: no reads.
            let unchanged = self.sibling_seen.get(&(dev, ino)) == Some(&(size, mtime));
            // Its own remembered identity proven, with bytes past the offset read.
            let mut grew = false;
            if !unchanged
                && self
                    .known
                    .iter()
                    .any(|l| same_inode(l, dev, ino, born) && !l.truncated && l.offset > 0)
            {
                if let Ok(f) = std::fs::File::open(&path) {
                    grew = self
                        .settle_inode(&path, (dev, ino, born), &f, size)
                        .is_some_and(|i| size > self.known[i].offset);
                }
            }
            listed.push((path, (dev, ino, born), size, mtime, unchanged, grew));
        }
        for (path, (dev, ino, born), size, mtime, unchanged, grew) in listed {
            if mtime.is_some_and(|m| m >= since) {
                self.adopt_outside_patterns(&path, now);
                continue;
            }
            if unchanged {
                continue;
            }
            // Or a proven copy of a file truncated in place, with bytes past its offset.
            let proven = grew
                || std::fs::File::open(&path).is_ok_and(|f| {
                    self.known.iter().any(|l| {
                        l.truncated
                            && !same_inode(l, dev, ino, born)
                            && size > l.offset
                            && verifies(l, &f, size)
                    })
                });
            if proven {
                self.adopt_outside_patterns(&path, now);
            } else {
                if self.sibling_seen.len() >= MAX_RETIRED {
                    self.sibling_seen.clear();
                }
                self.sibling_seen.insert((dev, ino), (size, mtime));
            }
        }
    }

    /// Files modified after this may hold lines never read: the previous poll, or on the first
    /// poll after a restart the checkpoint's time. File timestamps come from the kernel's
    /// coarse clock and can trail `SystemTime::now()` by a tick; the 2 s slack is safe because
    /// an adopted file is then only read where the identity rule says.
    fn sibling_since(&self) -> std::time::SystemTime {
        let since = if self.first_pass && self.restored {
            std::time::UNIX_EPOCH + Duration::from_millis(self.saved_at)
        } else {
            self.last_poll_wall
        };
        since
            .checked_sub(Duration::from_secs(2))
            .unwrap_or(std::time::UNIX_EPOCH)
    }

    /// Siblings (`<name>.…`, `<name>-…`) of the exact paths among the patterns and of followed
    /// and remembered files.
    fn sibling_paths(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<(PathBuf, String)> = self
            .cfg
            .patterns
            .iter()
            .filter(|p| !p.contains(['*', '?', '[']))
            .filter_map(|p| dir_and_name(Path::new(p)))
            .chain(self.files.iter().filter_map(|f| dir_and_name(&f.path)))
            .chain(self.known.iter().filter_map(|l| dir_and_name(&l.path)))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs.iter()
            .flat_map(|(dir, base)| siblings(dir, base))
            .collect()
    }

    /// Tracks a file outside the patterns: drained, then dropped.
    fn adopt_outside_patterns(&mut self, path: &Path, now: Instant) {
        let before = self.files.len();
        self.discover_one(path, now);
        if let Some(f) = self.files.get_mut(before) {
            f.found = false;
            tracing::info!(path = %path.display(), "draining a rotated file outside the patterns");
        }
    }

    fn discover(&mut self, now: Instant, at: &mut dyn FnMut(PollStage)) {
        self.undecided = false;
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
        paths.retain(|p| !skipped_extension(p));
        paths.sort();
        paths.dedup();
        if self.first_pass && self.restored {
            self.resume_proven(&paths, now, at);
        }
        for path in paths {
            self.discover_one(&path, now);
        }
    }

    /// First poll after a restart: every file (in the patterns or a sibling) whose inode and
    /// content prove it is a checkpointed file resumes at its offset, before any content
    /// matching, so a file renamed while vpslens was down is never mistaken for a copy or the
    /// other way round. A checkpointed inode that is present but fails the proof was truncated
    /// or rewritten: its lineage becomes a copy candidate.
    fn resume_proven(&mut self, patterns: &[PathBuf], now: Instant, at: &mut dyn FnMut(PollStage)) {
        let mut candidates: Vec<(PathBuf, bool)> =
            patterns.iter().map(|p| (p.clone(), true)).collect();
        candidates.extend(self.sibling_paths().into_iter().map(|p| (p, false)));
        at(PollStage::RestartListed);
        for (path, in_patterns) in candidates {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let (dev, ino) = file::identity(&meta);
            if !meta.is_file() || self.files.iter().any(|f| f.dev == dev && f.ino == ino) {
                continue;
            }
            let Ok(mut t) = Tracked::open(&path, self.cfg.max_line_bytes, now) else {
                continue;
            };
            let size = t.size();
            let born = file::born(&meta);
            if let Some(i) = self.settle_inode(&path, (dev, ino, born), t.file(), size) {
                let l = self.known.remove(i);
                tracing::debug!(path = %path.display(), offset = l.offset, "checkpointed file proven: resuming");
                t.set_framing(self.cfg.framing);
                t.resume_at(l.offset, l.evidence.as_ref());
                t.found = in_patterns;
                self.files.push(t);
            }
        }
    }

    /// The remembered identity of inode `id` = `(dev, ino, birth time)` (not truncated, at an
    /// offset > 0; an identity at offset 0 proves and continues nothing): its index if `f` (of
    /// `size` bytes) proves it. If `f` fails its evidence, the inode was truncated or rewritten
    /// since: the identity is marked truncated, so this poll takes a proven copy of it for one
    /// (a rename racing a restart's first listing leaves such an identity to later polls).
    fn settle_inode(
        &mut self,
        path: &Path,
        id: (u64, u64, Option<u64>),
        f: &std::fs::File,
        size: u64,
    ) -> Option<usize> {
        let (dev, ino, born) = id;
        let i = self
            .known
            .iter()
            .position(|l| same_inode(l, dev, ino, born) && !l.truncated && l.offset > 0)?;
        if verifies(&self.known[i], f, size) {
            return Some(i);
        }
        let l = &mut self.known[i];
        tracing::debug!(path = %path.display(), offset = l.offset, "remembered inode fails its evidence: truncated or rewritten");
        l.truncated = true;
        None
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
        self.discover_new(path, now);
    }

    /// A file whose inode is not followed. The identity rule (see the module docs), in order:
    /// a fresh start reads it per `read_from`, with no matching at all; a remembered identity
    /// with the same inode whose evidence holds resumes at its offset; a byte-for-byte prefix
    /// of a followed file is a copy in progress and waits; a proven copy of a file truncated in
    /// place resumes at that file's offset; anything else is a new file, read from 0.
    fn discover_new(&mut self, path: &Path, now: Instant) {
        let Ok(mut t) = Tracked::open(path, self.cfg.max_line_bytes, now) else {
            return;
        };
        t.set_framing(self.cfg.framing);
        let size = t.size();
        let (dev, ino, born) = (t.dev, t.ino, t.born);
        if self.first_pass && !self.restored {
            if self.cfg.read_from == ReadFrom::End {
                t.start_at_end();
            }
        } else if size == 0 || self.defer_for_truncation(dev, ino, now) {
            // Nothing to decide on yet: `cp` creates its copy empty, then fills it; and a
            // followed file truncated since this poll's truncation check (its copy may be
            // this file) is handled first, on the next poll.
            self.undecided = true;
            return;
        } else if let Some(i) = self.settle_inode(path, (dev, ino, born), t.file(), size) {
            let l = self.known.remove(i);
            tracing::debug!(path = %path.display(), offset = l.offset, "known file proven: resuming");
            t.resume_at(l.offset, l.evidence.as_ref());
        } else if let Some(i) = self.copy_waits.get(&(dev, ino)).and_then(|&(_, of)| {
            self.known.iter().position(|l| {
                l.truncated
                    && (l.dev, l.ino) == of
                    && l.evidence
                        .as_ref()
                        .is_some_and(|e| e.head_matches(t.file()))
            })
        }) {
            // Seen holding only bytes of that file before it was truncated: a copy of bytes
            // read up to its offset (the copy may end before it: lines written between the
            // copy and the truncation were read from the original).
            let l = self.known.remove(i);
            tracing::info!(path = %path.display(), offset = l.offset, "copy of a truncated file: continuing where it was read");
            t.resume_at(
                l.offset.min(size),
                l.evidence.as_ref().filter(|_| l.offset <= size),
            );
        } else if self
            .files
            .iter()
            .find(|live| is_prefix_copy(live, &t, size))
            .map(|live| (live.dev, live.ino))
            .is_some_and(|of| {
                let since = self.copy_waits.entry((dev, ino)).or_insert((now, of)).0;
                now.duration_since(since) < self.cfg.rotate_wait
            })
        {
            // Holds nothing but bytes of a followed file (a copy being made): wait until that
            // file is truncated (then this is its copy) or, for `rotate_wait`, gone or not
            // truncated (then this is a file of its own).
            if self.copy_waits.len() > MAX_RETIRED {
                self.copy_waits.clear();
            }
            self.undecided = true;
            return;
        } else if let Some(i) = self.known.iter().position(|l| {
            l.truncated
                && !(l.dev == dev && l.ino == ino)
                && l.evidence.is_some()
                && verifies(l, t.file(), size)
        }) {
            let l = self.known.remove(i);
            tracing::info!(path = %path.display(), offset = l.offset, "copy of a truncated file: continuing where it was read");
            t.resume_at(l.offset, l.evidence.as_ref());
        } else if self.defer_for_truncation(dev, ino, now) {
            // A followed file was truncated while this one was being compared with it (a
            // copytruncate racing this poll): it no longer shows that this is its copy, and
            // the truncated identity that would is known only from the next poll's check.
            self.undecided = true;
            return;
        } else {
            tracing::debug!(path = %path.display(), size, "new file: reading from 0");
        }
        if !self.first_pass && self.files.iter().any(|f| f.path == path && !f.found) {
            stats::add(&self.stats.rotations, 1);
            self.checkpoint_soon = true;
        }
        self.copy_waits.remove(&(dev, ino));
        t.found = true;
        self.files.push(t);
    }

    /// Some followed file was truncated or rewritten since this poll's truncation check: a new
    /// file `(dev, ino)` may be its copy, decided on the next poll (after that check). It is
    /// noted as a possible copy of that file, so a copy still being made (shorter than the
    /// offset read) continues where the original was read rather than from 0.
    fn defer_for_truncation(&mut self, dev: u64, ino: u64, now: Instant) -> bool {
        let Some(of) = self
            .files
            .iter()
            .find(|f| f.rewritten())
            .map(|f| (f.dev, f.ino))
        else {
            return false;
        };
        if self.copy_waits.len() > MAX_RETIRED {
            self.copy_waits.clear();
        }
        self.copy_waits.entry((dev, ino)).or_insert((now, of));
        true
    }

    fn drop_gone(&mut self, now: Instant) {
        let wait = self.cfg.rotate_wait;
        let mut i = 0;
        while i < self.files.len() {
            let f = &self.files[i];
            if !f.found && f.at_eof && now.duration_since(f.last_growth) >= wait && !f.pending() {
                let f = self.files.swap_remove(i);
                self.dirty = true;
                tracing::debug!(path = %f.path.display(), "dropping file that left the patterns");
                // A deleted file never comes back; its inode number may, for another file.
                if !f.deleted() {
                    remember(&mut self.known, f.lineage());
                }
            } else {
                i += 1;
            }
        }
    }

    fn publish_lag(&self) {
        let Ok(mut published) = self.stats.lag.lock() else {
            return;
        };
        let mut followed = self.files.iter().filter(|f| f.found);
        // Same files as last time (every poll while lines flow): numbers only, no allocation.
        let same = published.len() == followed.clone().count()
            && published
                .iter()
                .zip(followed.clone())
                .all(|((p, _), f)| Path::new(p) == f.path);
        if same {
            for ((_, lag), f) in published.iter_mut().zip(&mut followed) {
                *lag = f.lag();
            }
        } else {
            *published = followed
                .map(|f| (f.path.display().to_string(), f.lag()))
                .collect();
        }
    }
}

/// A path's directory and file name.
pub(crate) fn dir_and_name(path: &Path) -> Option<(PathBuf, String)> {
    // `access.log` has the parent `""`: that is the working directory, like `./access.log`.
    let dir = match path.parent()? {
        p if p.as_os_str().is_empty() => PathBuf::from("."),
        p => p.to_path_buf(),
    };
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

/// `l` recorded this inode, not an earlier or later file that had the same number (birth
/// times differ when both are known).
fn same_inode(l: &Lineage, dev: u64, ino: u64, born: Option<u64>) -> bool {
    l.dev == dev
        && l.ino == ino
        && (l.born_unix_ns.is_none() || born.is_none() || l.born_unix_ns == born)
}

/// `f` (of `size` bytes) is the file `l` recorded, read up to `l.offset`: at least that long
/// and with the same first line and bytes before the offset (see [`identity::Evidence`]).
/// Version 1 lineages carry raw head bytes instead, compared as such.
fn verifies(l: &Lineage, f: &std::fs::File, size: u64) -> bool {
    if size < l.offset {
        return false;
    }
    if l.offset == 0 {
        return true;
    }
    match (&l.evidence, &l.legacy_head) {
        (Some(e), _) => e.matches(f, l.offset),
        (None, Some(h)) => {
            let n = (h.len() as u64).min(size);
            n > 0 && identity::read_exact_at(f, 0, n).is_some_and(|now| now[..] == h[..now.len()])
        }
        (None, None) => false,
    }
}

/// `cand` (of `size` bytes) holds so far nothing but the bytes `live` has at the same
/// positions: its whole first line (or all of it, if it has none yet) and its last
/// [`identity::TAIL_BYTES`] bytes. That is a copy of `live` (being) made.
fn is_prefix_copy(live: &Tracked, cand: &Tracked, size: u64) -> bool {
    if size == 0 || live.size() < size {
        return false;
    }
    let same = |at: u64, len: u64| {
        let a = identity::read_exact_at(cand.file(), at, len);
        a.is_some() && a == identity::read_exact_at(live.file(), at, len)
    };
    let head = identity::first_line(cand.file(), size)
        .map_or(size.min(identity::TAIL_BYTES), |h| h.len() as u64);
    let tail = size.min(identity::TAIL_BYTES);
    same(0, head) && same(size - tail, tail)
}

/// Remembers a retired identity. A file truncated in place keeps its older truncated
/// identities (each may still have a copy to find); any other one replaces what was
/// remembered for its inode.
fn remember(known: &mut Vec<Lineage>, l: Lineage) {
    known.retain(|k| !(k.dev == l.dev && k.ino == l.ino && !k.truncated));
    known.push(l);
    if known.len() > MAX_RETIRED {
        known.remove(0);
    }
}

/// The longest leading directory of a pattern without glob metacharacters.
pub(crate) fn glob_base(pattern: &str) -> PathBuf {
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

/// A tailer thread plus its stop flag and the means to end its wait.
#[derive(Debug)]
pub struct TailHandle {
    stop: Arc<AtomicBool>,
    stop_tx: mpsc::Sender<()>,
    stopper: Option<Stopper>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TailHandle {
    /// Spawns the tailer thread, watching the patterns' directories where inotify allows.
    ///
    /// # Errors
    /// Thread creation failure.
    pub fn spawn<K: LineSink + Send + 'static>(tailer: Tailer<K>) -> std::io::Result<TailHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = mpsc::channel();
        let watch = Watch::new(&tailer.cfg.patterns);
        let stopper = watch.as_ref().map(Watch::stopper);
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vpslens-tail".into())
            .spawn(move || tailer.run(&s, watch, &stop_rx))?;
        Ok(TailHandle {
            stop,
            stop_tx,
            stopper,
            thread: Some(thread),
        })
    }

    /// Stops the thread after a final drain and checkpoint, and waits for it.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.stop_tx.send(());
        if let Some(s) = &self.stopper {
            s.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;

    fn json_line(seq: u64) -> String {
        format!(
            "{{\"authority\":\"panel.example.com\",\"downstream_remote_address\":\"10.0.0.1:40000\",\"method\":\"GET\",\"path\":\"/\",\"protocol\":\"HTTP/1.1\",\"request_id\":\"{seq:08}\",\"response_code\":200,\"start_time\":\"2026-11-23T05:38:15.940Z\"}}\n"
        )
    }

    fn append(path: &Path, seqs: std::ops::Range<u64>) {
        let text: String = seqs.map(json_line).collect();
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn counted(t: &Tailer<crate::pipeline::LineProcessor>) -> u64 {
        let agg = t.sink().shared().lock();
        agg.requests_by_node().get("n1").copied().unwrap_or(0)
    }

    #[test]
    fn copytruncate_during_a_poll_does_not_recount_the_copy() {
        // Regression (issue 14, the SIGKILL loop over-counting ~380 lines): a writer copied the
        // live file and truncated it after this poll's truncation check; the sibling scan then
        // compared the copy with the truncated original, found no proof it was a copy, and read
        // it from 0 although the original had been read up to its offset.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let copy = dir.path().join("access.log.1");
        std::fs::write(&log, "").unwrap();
        let shared = crate::pipeline::Shared::with_registry(
            crate::pipeline::tests::n1_registry(),
            crate::aggregate::Limits::default(),
        );
        let cfg = TailConfig {
            patterns: vec![log.display().to_string()],
            read_from: ReadFrom::Beginning,
            poll_interval: Duration::from_millis(10),
            rotate_wait: Duration::from_secs(3600),
            state_dir: Some(dir.path().join("state")),
            checkpoint_interval: Duration::from_secs(3600),
            read_chunk_bytes: 4096,
            ..TailConfig::default()
        };
        let stats = shared.sources.clone();
        let mut t = Tailer::new(cfg, crate::pipeline::LineProcessor::new(shared), stats).unwrap();
        t.poll();
        append(&log, 0..20);
        t.poll();
        assert_eq!(counted(&t), 20);
        // Written after the last read: only the copy holds these.
        append(&log, 20..25);
        t.poll_with(true, &mut |stage| {
            if stage != PollStage::TruncationsChecked {
                return;
            }
            std::fs::copy(&log, &copy).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&log)
                .unwrap()
                .set_len(0)
                .unwrap();
            // Written again up to the old offset (lines of equal length) before the sibling
            // scan looks: not shorter than what was read, but no longer what the copy holds.
            append(&log, 25..45);
        });
        t.poll();
        t.poll();
        assert_eq!(counted(&t), 45, "every line once: the copy continues at 20");
    }

    /// A sink with no aggregator: records each applied line's bytes, applying at most `limit`
    /// lines of a batch when set.
    #[derive(Debug, Default)]
    struct Recorder {
        lines: Vec<Vec<u8>>,
        limit: Option<usize>,
    }

    impl LineSink for Recorder {
        type State = Vec<Vec<u8>>;

        fn apply(&mut self, lines: &[Line<'_>]) -> Applied {
            let n = self.limit.map_or(lines.len(), |l| l.min(lines.len()));
            for l in &lines[..n] {
                match l {
                    Line::Text(t) => self.lines.push(t.to_vec()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            Applied { lines: n }
        }

        fn snapshot(&self) -> Vec<Vec<u8>> {
            self.lines.clone()
        }

        fn restore(&mut self, state: Vec<Vec<u8>>) {
            self.lines = state;
        }
    }

    fn recorder_config(dir: &Path) -> TailConfig {
        TailConfig {
            patterns: vec![dir.join("access.log").display().to_string()],
            read_from: ReadFrom::Beginning,
            poll_interval: Duration::from_millis(10),
            rotate_wait: Duration::from_secs(3600),
            state_dir: Some(dir.join("state")),
            checkpoint_interval: Duration::from_secs(3600),
            read_chunk_bytes: 4096,
            ..TailConfig::default()
        }
    }

    /// A tailer over `dir/access.log` feeding `sink`, with its own source statistics.
    fn recording_tailer(dir: &Path, sink: Recorder) -> Tailer<Recorder> {
        Tailer::new(recorder_config(dir), sink, Arc::new(SourceStats::default())).unwrap()
    }

    /// A recording tailer over a new, empty `dir/access.log` that has read lines `0..n` of it;
    /// returns the log's path too.
    fn tailer_that_read(dir: &Path, n: u64) -> (PathBuf, Tailer<Recorder>) {
        let log = dir.join("access.log");
        std::fs::write(&log, "").unwrap();
        let mut t = recording_tailer(dir, Recorder::default());
        t.poll();
        append(&log, 0..n);
        t.poll();
        (log, t)
    }

    /// `seqs` as the recorder holds them (lines without their newline), sorted.
    fn expected(seqs: std::ops::Range<u64>) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = seqs
            .map(|s| json_line(s).trim_end().as_bytes().to_vec())
            .collect();
        v.sort();
        v
    }

    fn recorded(t: &Tailer<Recorder>) -> Vec<Vec<u8>> {
        let mut v = t.sink().lines.clone();
        v.sort();
        v
    }

    /// A [`Recorder`] that runs `during_apply` once, inside the first `apply` call: a writer
    /// acting while the tailer is busy with a batch (between its read and the end of its drain).
    struct RecorderWithWriter {
        rec: Recorder,
        during_apply: Option<Box<dyn FnOnce() + Send>>,
    }

    impl std::fmt::Debug for RecorderWithWriter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.rec.fmt(f)
        }
    }

    impl LineSink for RecorderWithWriter {
        type State = Vec<Vec<u8>>;

        fn apply(&mut self, lines: &[Line<'_>]) -> Applied {
            if let Some(w) = self.during_apply.take() {
                w();
            }
            self.rec.apply(lines)
        }

        fn snapshot(&self) -> Vec<Vec<u8>> {
            self.rec.snapshot()
        }

        fn restore(&mut self, state: Vec<Vec<u8>>) {
            self.rec.restore(state);
        }
    }

    #[test]
    fn copytruncate_while_the_first_batch_is_applied_keeps_the_first_line_evidence() {
        // Regression (issue 14, the SIGKILL loop over-counting one 380–400-line generation): a
        // restarted tailer read a new file from 0; while its lines went through the pipeline
        // the writer copied and truncated the file, and the first line's digest was then read
        // from the truncated file: no evidence, so the copy was read from 0 again.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let copy = dir.path().join("access.log.1");
        std::fs::write(&log, "").unwrap();
        append(&log, 0..20);
        let writer = {
            let (log, copy) = (log.clone(), copy.clone());
            move || {
                append(&log, 20..25);
                copytruncate_and_write(&log, &copy, 25..30);
            }
        };
        let sink = RecorderWithWriter {
            rec: Recorder::default(),
            during_apply: Some(Box::new(writer)),
        };
        let cfg = TailConfig {
            read_chunk_bytes: 64 * 1024,
            ..recorder_config(dir.path())
        };
        let mut t = Tailer::new(cfg, sink, Arc::new(SourceStats::default())).unwrap();
        // Not a fresh start (that matches nothing): a restart whose checkpoint holds no file.
        t.restored = true;
        t.poll();
        t.poll();
        t.poll();
        let mut got = t.sink().rec.lines.clone();
        got.sort();
        assert_eq!(got.len(), 30, "every line once: the copy continues at 20");
        assert_eq!(got, expected(0..30));
    }

    #[test]
    fn checkpointed_file_renamed_while_a_restart_lists_files_still_marks_its_copy() {
        // Regression (issue 14, the SIGKILL loop over-counting half a generation): killed after
        // a checkpoint at line 10 of 20; while down the file was copytruncated (the copy holds
        // lines 0..20) and refilled; the restart listed the directory, then the file was renamed
        // and a new one created before it was looked at. Its identity was never found failing
        // its evidence, so the copy was read from 0, not from line 10.
        let dir = tempfile::tempdir().unwrap();
        let (log, mut t) = tailer_that_read(dir.path(), 10);
        t.checkpoint();
        append(&log, 10..20);
        drop(t); // killed: no final poll or checkpoint
        copytruncate_and_write(&log, &dir.path().join("access.log.1"), 20..30);
        let mut t = recording_tailer(dir.path(), Recorder::default());
        let (log2, new_log) = (dir.path().join("access.log.2"), log.clone());
        t.poll_with(true, &mut |stage| {
            if stage == PollStage::RestartListed {
                std::fs::rename(&new_log, &log2).unwrap();
                std::fs::write(&new_log, "").unwrap();
                append(&new_log, 30..35);
            }
        });
        t.poll();
        t.poll();
        let got = recorded(&t);
        assert_eq!(
            got.len(),
            35,
            "every line once: the copy continues at line 10"
        );
        assert_eq!(got, expected(0..35));
    }

    /// Copies `log` to `copy`, truncates it and writes `seqs` to it: a copytruncate followed by
    /// the writer's next lines.
    fn copytruncate_and_write(log: &Path, copy: &Path, seqs: std::ops::Range<u64>) {
        std::fs::copy(log, copy).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(log, seqs);
    }

    #[test]
    fn copytruncate_refilled_past_the_offset_before_the_read_is_not_read_as_a_continuation() {
        // Regression (issue 14): truncated and written past the read position between the
        // truncation check and the read, the file was read on from the old position (the new
        // file's lines 10.. taken for the old one's), and its copy from 0.
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("access.log.1");
        let (log, mut t) = tailer_that_read(dir.path(), 10);
        append(&log, 10..15);
        t.poll_with(true, &mut |stage| {
            if stage == PollStage::Discovered {
                copytruncate_and_write(&log, &copy, 15..40);
            }
        });
        t.poll();
        t.poll();
        let got = recorded(&t);
        assert_eq!(got.len(), 40, "every line once");
        assert_eq!(got, expected(0..40));
    }

    #[test]
    fn restart_resumes_a_file_copytruncated_between_its_proof_and_its_read() {
        // Regression (issue 14, the SIGKILL loop over-counting 40 lines): a restart proved the
        // checkpointed file at line 10; before it was read the writer copytruncated it and wrote
        // 25 new lines; the tailer read them from line 10 on as the old file's, and the copy
        // from 0.
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("access.log.1");
        let (log, mut t) = tailer_that_read(dir.path(), 10);
        t.checkpoint();
        drop(t); // killed
        append(&log, 10..20);
        let mut t = recording_tailer(dir.path(), Recorder::default());
        t.poll_with(true, &mut |stage| {
            if stage == PollStage::Discovered {
                copytruncate_and_write(&log, &copy, 20..45);
            }
        });
        t.poll();
        t.poll();
        let got = recorded(&t);
        assert_eq!(
            got.len(),
            45,
            "every line once: the copy continues at line 10"
        );
        assert_eq!(got, expected(0..45));
    }

    #[test]
    fn a_file_created_empty_is_read_after_a_wake_by_its_first_write() {
        // Envoy reopens its log as an empty file (a create event: discovery finds nothing to
        // decide yet), then writes to it (a write event: discovery is skipped). Without a
        // second look the new file waited for the next name change or rescan.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "").unwrap();
        let mut t = recording_tailer(dir.path(), Recorder::default());
        t.poll();
        append(&log, 0..5);
        t.poll_written();
        std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
        std::fs::write(&log, "").unwrap();
        t.poll(); // the rename and the create
        append(&log, 5..10);
        t.poll_written(); // the write
        assert_eq!(recorded(&t), expected(0..10));
    }

    #[test]
    fn writes_alone_do_not_run_discovery() {
        // What makes write-only wakes cheap: a file that appears without a name event (none
        // reached the tailer) is found by the next full poll, not by a write-only one.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "").unwrap();
        let cfg = TailConfig {
            patterns: vec![dir.path().join("*.log").display().to_string()],
            ..recorder_config(dir.path())
        };
        let mut t =
            Tailer::new(cfg, Recorder::default(), Arc::new(SourceStats::default())).unwrap();
        t.poll();
        append(&log, 0..5);
        let other = dir.path().join("other.log");
        std::fs::write(&other, json_line(5)).unwrap();
        t.poll_written();
        assert_eq!(recorded(&t), expected(0..5), "the followed file only");
        t.poll();
        assert_eq!(recorded(&t), expected(0..6));
    }

    #[test]
    fn an_idle_tailer_does_not_rewrite_an_unchanged_checkpoint() {
        // Checkpoints were rewritten (serialised, fsynced, renamed) every interval while
        // nothing changed.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "").unwrap();
        let stats = Arc::new(SourceStats::default());
        let cfg = TailConfig {
            checkpoint_interval: Duration::ZERO, // due at every poll
            ..recorder_config(dir.path())
        };
        let mut t = Tailer::new(cfg, Recorder::default(), stats.clone()).unwrap();
        let writes = || stats.checkpoint_writes.load(Ordering::Relaxed);
        t.poll();
        append(&log, 0..3);
        t.poll();
        let after_lines = writes();
        assert!(after_lines >= 1);
        t.poll();
        t.poll();
        assert_eq!(writes(), after_lines, "nothing changed: no rewrite");
        append(&log, 3..4);
        t.poll_written();
        assert_eq!(writes(), after_lines + 1, "a counted line is checkpointed");
    }

    #[test]
    fn a_recording_sink_gets_every_line_once_across_a_rename_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "").unwrap();
        let stats = Arc::new(SourceStats::default());
        let mut t = Tailer::new(
            recorder_config(dir.path()),
            Recorder::default(),
            stats.clone(),
        )
        .unwrap();
        t.poll();
        append(&log, 0..10);
        t.poll();
        assert_eq!(recorded(&t), expected(0..10));
        // Lines written just before the rename are read from the renamed file.
        append(&log, 10..15);
        std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
        std::fs::write(&log, "").unwrap();
        append(&log, 15..20);
        t.poll();
        t.poll();
        assert_eq!(
            recorded(&t),
            expected(0..20),
            "every line once across the rename"
        );
        assert_eq!(stats.rotations.load(Ordering::Relaxed), 1);
        t.checkpoint();
        drop(t);
        // Restart: the sink's state comes back with the offsets; only new lines are added.
        append(&log, 20..25);
        let mut t = recording_tailer(dir.path(), Recorder::default());
        t.poll();
        t.poll();
        assert_eq!(
            recorded(&t),
            expected(0..25),
            "every line once across the restart"
        );
    }

    #[test]
    fn offsets_advance_only_past_lines_the_sink_applied() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "").unwrap();
        let sink = Recorder {
            limit: Some(3),
            ..Recorder::default()
        };
        let mut t = recording_tailer(dir.path(), sink);
        append(&log, 0..10);
        t.poll();
        assert_eq!(t.sink().lines.len(), 3, "one partly applied batch per poll");
        // Each poll applies at most 3 more; the rest is read again, never skipped or repeated.
        for _ in 0..4 {
            t.poll();
        }
        let in_order: Vec<Vec<u8>> = (0..10)
            .map(|s| json_line(s).trim_end().as_bytes().to_vec())
            .collect();
        assert_eq!(t.sink().lines, in_order);
        t.checkpoint();
        drop(t);
        let mut t = recording_tailer(dir.path(), Recorder::default());
        t.poll();
        assert_eq!(
            t.sink().lines,
            in_order,
            "the checkpoint's offsets match its state"
        );
    }
}
