//! The node file source (`registry:`): a YAML or JSON [`crate::resolve::RegistryFile`].
//!
//! Watching and re-reading are done by [`reload`](super::super::reload) (file events plus a
//! poll, only when the bytes changed); this module only turns bytes into a [`SourceList`].

use std::path::Path;

use super::super::{RegistryError, RegistryFile};
use super::SourceList;

/// Parses node-file bytes: JSON when `path` ends in `.json`, YAML otherwise. Unknown keys are
/// errors. Node validation happens when the list is merged.
///
/// # Errors
/// [`RegistryError::Syntax`] with the parser's message (line/column) naming `path`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<SourceList, RegistryError> {
    let syntax = |message: String| RegistryError::Syntax {
        path: path.display().to_string(),
        message,
    };
    let file: RegistryFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_slice(bytes).map_err(|e| syntax(e.to_string()))?
    } else {
        serde_norway::from_slice(bytes).map_err(|e| syntax(e.to_string()))?
    };
    Ok(SourceList {
        nodes: file.nodes,
        skipped: 0,
    })
}
