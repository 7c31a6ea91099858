//! Checkpoints: file offsets **and** counters, written together atomically.
//!
//! Storing the aggregator beside the offsets makes restarts exact even after a crash: on start the
//! counters are restored to the state that matches the offsets, and reading resumes at those
//! offsets, so every line is counted once whatever happened between two checkpoints.
//!
//! Write protocol: serialise to `checkpoint.json.tmp`, `fsync`, `rename` over `checkpoint.json`,
//! `fsync` the directory.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregate::Aggregator;

/// Current checkpoint format version.
pub const VERSION: u32 = 1;

/// The identity and progress of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// Path the file was last seen under (informational).
    pub path: PathBuf,
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// The file's first bytes (up to the fingerprint length) when last read.
    pub head: Vec<u8>,
    /// Offset just past the last line counted.
    pub offset: u64,
}

/// What a checkpoint file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`VERSION`].
    pub version: u32,
    /// When it was written (Unix milliseconds). Files modified later may hold unread lines.
    #[serde(default)]
    pub saved_at_unix_ms: u64,
    /// Files being followed and recently retired ones (for copies and re-discovery).
    pub files: Vec<Lineage>,
    /// Counters consistent with `files`.
    pub aggregator: Aggregator,
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
pub fn load(state_dir: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = path_in(state_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Io { path, source }),
    };
    let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if cp.version != VERSION {
        return Err(CheckpointError::Corrupt {
            path,
            message: format!("version {} (expected {VERSION})", cp.version),
        });
    }
    Ok(Some(cp))
}

/// Writes a checkpoint atomically.
///
/// # Errors
/// [`CheckpointError::Io`]; the previous checkpoint is left intact.
pub fn store(state_dir: &Path, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let final_path = path_in(state_dir);
    let tmp = state_dir.join("checkpoint.json.tmp");
    let bytes = serde_json::to_vec(cp).map_err(|e| CheckpointError::Corrupt {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
    if let Ok(d) = File::open(state_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
