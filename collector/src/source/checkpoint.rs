//! Checkpoints: file offsets **and** counters, written together atomically.
//!
//! Storing the sink's state (the aggregator's counters in `vpslens run`; see
//! [`LineSink`](super::sink::LineSink)) beside the offsets makes restarts exact even after a
//! crash: on start the counters are restored to the state that matches the offsets, and reading
//! resumes at those offsets, so every line is counted once whatever happened between two
//! checkpoints. The source stage does not know what the state is.
//!
//! Write protocol: serialise to `checkpoint.json.tmp`, `fsync`, `rename` over `checkpoint.json`,
//! `fsync` the directory.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Current checkpoint format version. Version 1 (raw head bytes per file) still loads: see
/// [`Lineage::legacy_head`].
pub const VERSION: u32 = 2;

/// The identity and progress of one file.
///
/// No file content is stored: the evidence that a file is this one is SHA-256 digests (the
/// panel `token` sits in TEXT log heads and must never reach disk in clear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// Path the file was last seen under (where a restarted collector looks for its siblings).
    pub path: PathBuf,
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Birth time (Unix ns) where the file system keeps one; a file with the same inode but
    /// another birth time is another file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born_unix_ns: Option<u64>,
    /// Offset just past the last line counted (bytes).
    pub offset: u64,
    /// Digests of the bytes before `offset`; `None` while `offset` is 0 (nothing to prove).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// The file was truncated in place after this (copytruncate) in the current poll: a copy
    /// of it may exist. In memory only.
    #[serde(skip)]
    pub truncated: bool,
    /// Version 1 checkpoints stored the file's first 256 bytes in clear. Read (never written):
    /// such a lineage is only matched by inode plus this head, and is dropped from the next
    /// checkpoint unless its file was found.
    #[serde(default, rename = "head", skip_serializing)]
    pub legacy_head: Option<Vec<u8>>,
}

pub use super::identity::Evidence;

/// What a checkpoint file holds; `S` is the sink's state
/// ([`LineSink::State`](super::sink::LineSink::State)).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint<S> {
    /// [`VERSION`].
    pub version: u32,
    /// When it was written (Unix milliseconds). Files modified later may hold unread lines.
    #[serde(default)]
    pub saved_at_unix_ms: u64,
    /// Files being followed and recently retired ones (for copies and re-discovery).
    pub files: Vec<Lineage>,
    /// The sink's state consistent with `files` (stored under `aggregator`, its name in every
    /// checkpoint written so far).
    #[serde(rename = "aggregator")]
    pub state: S,
}

/// Checkpoint I/O failure.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Reading or writing failed.
    #[error("checkpoint I/O on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint of this version.
    #[error("checkpoint {path} is unreadable: {message}")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// Decoder message.
        message: String,
    },
}

/// The checkpoint file inside `state_dir`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("checkpoint.json")
}

/// Loads the checkpoint, `Ok(None)` if there is none.
///
/// # Errors
/// [`CheckpointError`] if it exists but cannot be read or decoded (the caller refuses to start
/// rather than silently re-counting or skipping data).
pub fn load<S: DeserializeOwned>(
    state_dir: &Path,
) -> Result<Option<Checkpoint<S>>, CheckpointError> {
    let path = path_in(state_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Io { path, source }),
    };
    let cp: Checkpoint<S> =
        serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
    if cp.version != VERSION && cp.version != 1 {
        return Err(CheckpointError::Corrupt {
            path,
            message: format!("version {} (expected {VERSION})", cp.version),
        });
    }
    Ok(Some(cp))
}

/// Writes a checkpoint atomically, serialised into `buf` (cleared first; the tailer keeps it
/// between checkpoints, so a fleet-sized checkpoint does not allocate megabytes each time).
///
/// # Errors
/// [`CheckpointError::Io`]; the previous checkpoint is left intact.
pub fn store<S: Serialize>(
    state_dir: &Path,
    cp: &Checkpoint<S>,
    buf: &mut Vec<u8>,
) -> Result<(), CheckpointError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let final_path = path_in(state_dir);
    let tmp = state_dir.join("checkpoint.json.tmp");
    buf.clear();
    serde_json::to_writer(&mut *buf, cp).map_err(|e| CheckpointError::Corrupt {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(buf).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
    if let Ok(d) = File::open(state_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
