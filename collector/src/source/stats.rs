//! Source-stage counters, owned by the source stage and read by the export stage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Source-stage counters (lock-free; updated by the tailer).
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Bytes read from all files.
    pub bytes_read: AtomicU64,
    /// Lines (after container-log reassembly) handed to the parser.
    pub lines_read: AtomicU64,
    /// Rename/create rotations detected.
    pub rotations: AtomicU64,
    /// Truncations (copytruncate, truncate, rewrite) detected.
    pub truncations: AtomicU64,
    /// Lines skipped because they exceeded `max_line_bytes`.
    pub long_lines_skipped: AtomicU64,
    /// Checkpoints written.
    pub checkpoint_writes: AtomicU64,
    /// Checkpoint writes that failed.
    pub checkpoint_failures: AtomicU64,
    /// 1 when the latest checkpoint write failed, 0 otherwise (also before the first write).
    pub checkpoint_last_write_failed: AtomicU64,
    /// Unix seconds of the latest successful checkpoint write (0 = none yet).
    pub checkpoint_last_success_unix: AtomicU64,
    /// Files currently followed with their read lag (size − offset, bytes).
    pub lag: Mutex<Vec<(String, u64)>>,
    /// Set once the tailer has completed its first pass over the configured files.
    pub ready: AtomicBool,
}

impl SourceStats {
    /// Records the outcome of a checkpoint write (counters and the last-write gauges).
    pub fn record_checkpoint(&self, ok: bool) {
        if ok {
            add(&self.checkpoint_writes, 1);
            self.checkpoint_last_success_unix
                .store(crate::unix_now_seconds(), Ordering::Relaxed);
        } else {
            add(&self.checkpoint_failures, 1);
        }
        self.checkpoint_last_write_failed
            .store(u64::from(!ok), Ordering::Relaxed);
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
