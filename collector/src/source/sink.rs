//! The source stage's output seam: what the tailer hands over, and to what.
//!
//! The tailer knows nothing of parsing or counters: it hands each batch of whole lines to a
//! [`LineSink`], learns how many were applied, and advances file offsets only past those. For
//! checkpoints it stores the sink's opaque [`LineSink::State`] beside its file lineages in one
//! atomic write, and hands it back on restart, so offsets and the counters they produced always
//! match.

use std::borrow::Cow;

use vpslens_parsers::ParseError;

/// A line the source stage hands over.
#[derive(Debug)]
pub enum Line<'a> {
    /// A whole line without its newline.
    Text(Cow<'a, [u8]>),
    /// A line longer than `max_line_bytes` was skipped.
    TooLong,
    /// Container-log framing was malformed.
    Malformed(ParseError),
}

impl<'a> Line<'a> {
    /// A batch of whole lines borrowed from `lines` (each without its newline): how replays of
    /// in-memory logs, tests and benches feed a sink directly.
    pub fn batch<S: AsRef<[u8]>>(lines: &'a [S]) -> Vec<Line<'a>> {
        lines
            .iter()
            .map(|l| Line::Text(Cow::Borrowed(l.as_ref())))
            .collect()
    }
}

/// What a [`LineSink`] applied of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// How many lines from the front of the batch were applied (0..=batch length). The tailer
    /// commits offsets past exactly these and reads the rest again on its next poll.
    pub lines: usize,
}

/// Where the tailer delivers lines (the parse stage in `vpslens run` and `replay`, a recorder
/// in tests).
///
/// **Contract:** after [`LineSink::apply`] returns `Applied { lines: n }`, the first `n` lines
/// are reflected in [`LineSink::snapshot`] and the rest are not; [`LineSink::restore`] puts the
/// sink back to a snapshot's state.
pub trait LineSink {
    /// The sink's checkpointed state (serialised by the tailer under the checkpoint's
    /// `aggregator` key; opaque to the source stage).
    type State: serde::Serialize + serde::de::DeserializeOwned;

    /// Applies a batch of lines in order; returns how many from the front were applied.
    fn apply(&mut self, lines: &[Line<'_>]) -> Applied;

    /// The state that matches every line applied so far (taken for each checkpoint).
    fn snapshot(&self) -> Self::State;

    /// Serialises [`LineSink::snapshot`] into `s` (the checkpoint's `aggregator`). The default
    /// serialises a snapshot; a sink whose state is costly to copy serialises it in place.
    ///
    /// # Errors
    /// The serializer's error.
    fn serialize_state<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.snapshot(), s)
    }

    /// Replaces the sink's state with a checkpointed one (at tailer start).
    fn restore(&mut self, state: Self::State);
}
