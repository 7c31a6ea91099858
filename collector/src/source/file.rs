//! One followed file: reading, line splitting, framing, truncation checks.

use std::borrow::Cow;
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use vpslens_parsers::container::{self, Assembled, Chunk, Framing, Reassembler, Stream};

use super::checkpoint::Lineage;
use super::identity::{self, Digest, Evidence, TAIL_BYTES};
use super::sink::{Line, LineSink};
use super::stats::{add, SourceStats};
use super::{FramingMode, TailConfig};

/// `(device, inode)` of a file.
pub fn identity(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// A file's birth time (Unix ns; `statx` `btime`) where the file system keeps one: tells a
/// reused inode from the file that had it before.
pub fn born(meta: &Metadata) -> Option<u64> {
    let t = meta.created().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(d.as_nanos()).ok()
}

#[derive(Debug)]
pub struct Tracked {
    /// Path it was last found under.
    pub path: PathBuf,
    file: File,
    pub dev: u64,
    pub ino: u64,
    /// Birth time (Unix ns) if the file system records one.
    pub born: Option<u64>,
    /// Length and SHA-256 of the first line, once a line was committed.
    head: Option<(u64, Digest)>,
    /// The first line's bytes read so far while reading from offset 0 and before its newline
    /// (at most [`identity::HEAD_MAX`]; memory only): the head digest is taken from the bytes
    /// read, never read back from a file that may have been truncated meanwhile.
    head_read: Vec<u8>,
    /// The bytes just before `committed` (at most [`TAIL_BYTES`]; memory only, never stored):
    /// a file whose bytes there changed was rewritten.
    tail: Vec<u8>,
    /// The last bytes read, just before `read_pos` (at most [`TAIL_BYTES`]; memory only): if
    /// the file no longer holds them there it was truncated and written again.
    recent: Vec<u8>,
    /// Offset just past the last line handed to the processor (checkpoint value).
    committed: u64,
    /// The evidence that proved this file at the offset it resumed at (a lineage's): its
    /// identity while nothing was committed since, even if the file changes meanwhile.
    proven: Option<(u64, Evidence)>,
    /// The file no longer held the bytes before the read position when last looked at (it was
    /// truncated and written again between the truncation check and a read, or between the
    /// proof of a resumed offset and the seek there): the next truncation check finds it.
    suspect: bool,
    /// Offset up to which bytes were read (committed + pending bytes).
    read_pos: u64,
    /// Bytes of an incomplete line.
    partial: Vec<u8>,
    /// Discarding an over-long line until its newline.
    skipping: bool,
    framing: Option<Framing>,
    reassembler: Reassembler,
    /// Longest line kept (bytes).
    max_line_bytes: usize,
    /// Seen by the latest discovery pass.
    pub found: bool,
    /// The last read hit end of file.
    pub at_eof: bool,
    /// Last time the file produced bytes.
    pub last_growth: Instant,
}

impl Tracked {
    pub fn open(path: &Path, max_line_bytes: usize, now: Instant) -> std::io::Result<Tracked> {
        let file = open_noatime(path)?;
        let meta = file.metadata()?;
        let (dev, ino) = identity(&meta);
        let t = Tracked {
            path: path.to_path_buf(),
            file,
            dev,
            ino,
            born: born(&meta),
            head: None,
            head_read: Vec::new(),
            tail: Vec::new(),
            recent: Vec::new(),
            committed: 0,
            proven: None,
            suspect: false,
            read_pos: 0,
            partial: Vec::new(),
            skipping: false,
            framing: None,
            reassembler: Reassembler::new(max_line_bytes),
            max_line_bytes,
            found: false,
            at_eof: false,
            last_growth: now,
        };
        Ok(t)
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn size(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }

    /// Positions reading at `offset` (a line boundary from a checkpoint or lineage), with the
    /// first line's length and digest when the lineage that proved the file carries them
    /// (otherwise they are read from the file now).
    pub fn resume_at(&mut self, offset: u64, proof: Option<&Evidence>) {
        self.seek(offset);
        if let Some(e) = proof.filter(|_| offset > 0) {
            self.head = Some((e.head_len, e.head_sha256));
            self.proven = Some((offset, e.clone()));
            // Proven just before; if the bytes found now differ, the file was rewritten since.
            let len = usize::try_from(e.tail_len).unwrap_or(usize::MAX);
            self.suspect = self.recent.len() < len
                || Digest::of(&self.recent[self.recent.len() - len..]) != e.tail_sha256;
        }
        self.note_committed();
    }

    /// Refreshes the in-memory evidence after `committed` moved: the first line's digest (once)
    /// and the bytes before `committed`.
    fn note_committed(&mut self) {
        let c = self.committed;
        if c == 0 {
            self.head = None;
            self.tail.clear();
            return;
        }
        if self.head.is_none() {
            // Only when reading did not start at 0 (`read_from: end`, a lineage without
            // evidence): the file's first line as it is now.
            self.head =
                identity::first_line(&self.file, c).map(|h| (h.len() as u64, Digest::of(&h)));
        }
        // From the bytes read (in memory), not the file: a copytruncate right after the read
        // must not leave the old identity without its evidence.
        let pending = usize::try_from(self.read_pos - c).unwrap_or(usize::MAX);
        self.tail.clear();
        if let Some(end) = self.recent.len().checked_sub(pending) {
            let len = usize::try_from(c.min(TAIL_BYTES)).unwrap_or(0).min(end);
            self.tail.extend_from_slice(&self.recent[end - len..end]);
        } else if let Some(t) =
            identity::read_exact_at(&self.file, c - c.min(TAIL_BYTES), c.min(TAIL_BYTES))
        {
            // A pending partial line longer than what is kept in memory: from the file.
            self.tail = t;
        }
    }

    /// Positions reading after the last complete line currently in the file.
    pub fn start_at_end(&mut self) {
        let size = self.size();
        // Find the last newline at or before `size` so a half-written line is not split.
        let mut pos = size;
        let mut buf = [0u8; 4096];
        while pos > 0 {
            let start = pos.saturating_sub(buf.len() as u64);
            let len = usize::try_from(pos - start).unwrap_or(0);
            let Ok(n) = self.file.read_at(&mut buf[..len], start) else {
                break;
            };
            if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
                self.resume_at(start + i as u64 + 1, None);
                return;
            }
            pos = start;
        }
        self.resume_at(0, None);
    }

    fn seek(&mut self, offset: u64) {
        let offset = self.file.seek(SeekFrom::Start(offset)).unwrap_or(0);
        self.committed = offset;
        self.read_pos = offset;
        let len = offset.min(TAIL_BYTES);
        self.recent = identity::read_exact_at(&self.file, offset - len, len).unwrap_or_default();
        self.partial.clear();
        self.skipping = false;
        self.reassembler = Reassembler::new(self.max_line_bytes);
        self.head_read.clear();
        self.proven = None;
        self.suspect = false;
        if offset == 0 {
            self.head = None;
        }
    }

    /// A container partial sequence or partial line is pending.
    pub fn pending(&self) -> bool {
        !self.partial.is_empty() || self.skipping || self.reassembler.is_pending()
    }

    /// The file is shorter than what was read, or no longer holds the bytes last read where
    /// they were: truncated (and perhaps written again) since the last truncation check.
    /// Reads at most [`TAIL_BYTES`]; changes nothing (see [`Tracked::detect_truncation`]).
    pub fn rewritten(&self) -> bool {
        let Ok(meta) = self.file.metadata() else {
            return false;
        };
        self.suspect || meta.len() < self.read_pos || !self.still_holds_recent()
    }

    /// The file was deleted (no name left): nothing can find it again.
    pub fn deleted(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    /// Bytes in the file not yet counted.
    pub fn lag(&self) -> u64 {
        self.size().saturating_sub(self.committed)
    }

    /// The checkpoint record of this file. Kept even for an empty file: its path tells a
    /// restarted collector which directory to search for files rotated while it was down.
    pub fn lineage(&self) -> Lineage {
        let evidence = match self.head {
            _ if self
                .proven
                .as_ref()
                .is_some_and(|(o, _)| *o == self.committed) =>
            {
                self.proven.as_ref().map(|(_, e)| e.clone())
            }
            Some((head_len, head_sha256)) if self.committed > 0 && !self.tail.is_empty() => {
                Some(Evidence {
                    head_len,
                    head_sha256,
                    tail_len: self.tail.len() as u64,
                    tail_sha256: Digest::of(&self.tail),
                })
            }
            _ => None,
        };
        Lineage {
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
            born_unix_ns: self.born,
            offset: self.committed,
            evidence,
            truncated: false,
            legacy_head: None,
        }
    }

    /// Detects truncation (size < read offset) or rewrite (the bytes before the read offset
    /// changed: a copytruncate followed by new writes past our offset; heads alone cannot
    /// tell, Envoy's heads repeat). Checked before each read, not only by the read itself:
    /// a copy of the file may appear before the next poll, and must find the old identity
    /// marked. On detection returns the old identity, marked `truncated` (a copy of it may
    /// appear), and restarts at offset 0.
    pub fn detect_truncation(&mut self) -> Option<Lineage> {
        if !self.rewritten() {
            return None;
        }
        let mut old = self.lineage();
        old.truncated = true;
        self.seek(0);
        self.note_committed();
        self.framing = None;
        Some(old)
    }

    /// Reads everything available and hands it to `sink` in batches. Stops early (not at end
    /// of file) when the sink applied only part of a batch: the rest is read again next poll.
    /// Returns whether the committed offset moved.
    pub fn drain<K: LineSink>(
        &mut self,
        buf: &mut [u8],
        sink: &mut K,
        stats: &SourceStats,
        cfg: &TailConfig,
        now: Instant,
    ) -> bool {
        let committed_before = self.committed;
        loop {
            let n = match self.file.read(buf) {
                Ok(0) => {
                    self.at_eof = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "read failed");
                    self.at_eof = true;
                    break;
                }
            };
            if !self.still_holds_recent() {
                // Truncated and written past our position since the truncation check: these
                // bytes are not the continuation of what was read. The next check handles it.
                self.suspect = true;
                let _ = self.file.seek(SeekFrom::Start(self.read_pos));
                break;
            }
            self.at_eof = false;
            self.last_growth = now;
            add(&stats.bytes_read, n as u64);
            self.note_head(&buf[..n]);
            self.remember_recent(&buf[..n]);
            if !self.consume(&buf[..n], sink, stats, cfg) {
                break;
            }
        }
        if cfg.eof_ends_line && (!self.partial.is_empty() || self.skipping) {
            // Replay: the final line of a finished file may lack its newline.
            let mut lines = Vec::new();
            if self.skipping {
                self.skipping = false;
                lines.push(Line::TooLong);
                add(&stats.long_lines_skipped, 1);
            } else {
                let line = std::mem::take(&mut self.partial);
                self.frame(Cow::Owned(line), &mut lines);
            }
            let applied = sink.apply(&lines).lines.min(lines.len());
            add(&stats.lines_read, applied as u64);
            if applied == lines.len() {
                self.committed = self.read_pos;
            } else {
                // Read the unapplied tail again next poll.
                let c = self.committed;
                self.seek(c);
                self.at_eof = false;
            }
        }
        if self.committed != committed_before {
            self.note_committed();
        }
        self.committed != committed_before
    }

    /// Whether the file still holds, just before the read position, the bytes read there
    /// (checked after each read: bytes read before a truncation are the file's; bytes read
    /// after one that was written past our position are not, and then the bytes before it
    /// changed too).
    fn still_holds_recent(&self) -> bool {
        let len = self.recent.len() as u64;
        len == 0 || identity::holds_at(&self.file, self.read_pos - len, &self.recent)
    }

    /// Whether the last look found the file rewritten under the read position.
    pub fn suspect(&self) -> bool {
        self.suspect
    }

    /// Takes the first line's digest from `data` (the bytes at `read_pos`) while reading from
    /// offset 0: the line with its newline, or its first [`identity::HEAD_MAX`] bytes (as
    /// [`identity::first_line`] reads it).
    fn note_head(&mut self, data: &[u8]) {
        if self.head.is_some() || self.head_read.len() as u64 != self.read_pos {
            return;
        }
        let room = usize::try_from(identity::HEAD_MAX).unwrap_or(usize::MAX) - self.head_read.len();
        let (take, done) = match memchr::memchr(b'\n', data) {
            Some(i) if i < room => (i + 1, true),
            _ if data.len() >= room => (room, true),
            _ => (data.len(), false),
        };
        self.head_read.extend_from_slice(&data[..take]);
        if done {
            let line = std::mem::take(&mut self.head_read);
            self.head = Some((line.len() as u64, Digest::of(&line)));
        }
    }

    /// Keeps the last [`TAIL_BYTES`] of what was read (`data` follows what was read before).
    fn remember_recent(&mut self, data: &[u8]) {
        let cap = TAIL_BYTES as usize;
        if data.len() >= cap {
            self.recent.clear();
            self.recent.extend_from_slice(&data[data.len() - cap..]);
        } else {
            let keep = cap - data.len();
            if self.recent.len() > keep {
                self.recent.drain(..self.recent.len() - keep);
            }
            self.recent.extend_from_slice(data);
        }
    }

    /// Splits `data` (the bytes at `read_pos`) into lines, frames them and hands them to
    /// `sink`, then advances `committed` to the end of the last applied line after which no
    /// container partial sequence is pending. Returns `false` when the sink applied only part of
    /// the batch: reading was then rewound to `committed` (`at_eof` cleared).
    fn consume<K: LineSink>(
        &mut self,
        data: &[u8],
        sink: &mut K,
        stats: &SourceStats,
        cfg: &TailConfig,
    ) -> bool {
        let max = cfg.max_line_bytes;
        let base = self.read_pos;
        // Sized for ~512-byte lines (Istio JSON lines are ~800): no regrowth per read in the
        // common case.
        let mut raw: Vec<(Line<'_>, u64)> = Vec::with_capacity(data.len() / 512 + 1);
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            let end = base + nl as u64 + 1;
            let seg = &data[start..nl];
            let seg = seg.strip_suffix(b"\r").unwrap_or(seg);
            let line = if self.skipping {
                self.skipping = false;
                Line::TooLong
            } else if start == 0 && !self.partial.is_empty() {
                let mut joined = std::mem::take(&mut self.partial);
                if joined.len() + seg.len() > max {
                    Line::TooLong
                } else {
                    joined.extend_from_slice(seg);
                    if joined.last() == Some(&b'\r') {
                        joined.pop();
                    }
                    Line::Text(Cow::Owned(joined))
                }
            } else if seg.len() > max {
                Line::TooLong
            } else {
                Line::Text(Cow::Borrowed(seg))
            };
            raw.push((line, end));
            start = nl + 1;
        }
        if !self.skipping {
            let rest = &data[start..];
            if self.partial.len() + rest.len() > max {
                self.partial = Vec::new();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
        let mut out = Vec::with_capacity(raw.len());
        // Line boundaries where no partial sequence is pending: (lines handed over up to
        // there, offset just past it).
        let mut safe: Vec<(usize, u64)> = Vec::new();
        let mut long = 0u64;
        for (line, end) in raw {
            match line {
                Line::Text(t) => self.frame(t, &mut out),
                other => {
                    long += 1;
                    out.push(other);
                }
            }
            if !self.reassembler.is_pending() {
                safe.push((out.len(), end));
            }
        }
        add(&stats.long_lines_skipped, long);
        let applied = if out.is_empty() {
            0
        } else {
            sink.apply(&out).lines.min(out.len())
        };
        add(&stats.lines_read, applied as u64);
        if applied < out.len() {
            // Offsets advance only past applied lines; the rest is read again.
            if let Some(&(_, c)) = safe.iter().rev().find(|(n, _)| *n <= applied) {
                self.committed = c;
            }
            let c = self.committed;
            self.seek(c);
            self.at_eof = false;
            return false;
        }
        self.read_pos += data.len() as u64;
        if let Some(&(_, c)) = safe.last() {
            self.committed = c;
        }
        true
    }

    /// Applies container framing to one line.
    fn frame<'a>(&mut self, line: Cow<'a, [u8]>, out: &mut Vec<Line<'a>>) {
        let framing = match self.framing {
            Some(f) => f,
            None => match container::detect_framing(&line) {
                // A cut or garbage line frames as nothing: the next line decides.
                Framing::Raw if !looks_like_access_log(&line) => {
                    out.push(Line::Text(line));
                    return;
                }
                f => *self.framing.insert(f),
            },
        };
        let parse: fn(&[u8]) -> Result<Chunk<'_>, vpslens_parsers::ParseError> = match framing {
            Framing::Raw => {
                out.push(Line::Text(line));
                return;
            }
            Framing::Cri => container::parse_cri,
            Framing::DockerJson => container::parse_docker,
        };
        let chunk = match line {
            Cow::Borrowed(b) => parse(b),
            Cow::Owned(ref v) => parse(v).map(|c| Chunk {
                stream: c.stream,
                last: c.last,
                message: Cow::Owned(c.message.into_owned()),
            }),
        };
        match chunk {
            Err(e) => out.push(Line::Malformed(e)),
            Ok(c) if c.stream == Stream::Stderr => {}
            Ok(c) => match self.reassembler.push(c) {
                Assembled::Line(l) => out.push(Line::Text(l)),
                Assembled::Pending => {}
                Assembled::TooLong => out.push(Line::TooLong),
            },
        }
    }
}

impl Tracked {
    /// Applies a configured framing (`auto` keeps per-file detection).
    pub fn set_framing(&mut self, mode: FramingMode) {
        match mode {
            FramingMode::Auto => {}
            FramingMode::Raw => self.framing = Some(Framing::Raw),
            FramingMode::Cri => self.framing = Some(Framing::Cri),
            FramingMode::Docker => self.framing = Some(Framing::DockerJson),
        }
    }
}

/// Opens `path` for reading without access-time updates where the file's owner allows it
/// (`O_NOATIME`; otherwise a plain open): a followed log is read several times a second
/// right after each write, and with `relatime` every such read dirtied the inode.
fn open_noatime(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let noatime = nix::fcntl::OFlag::O_NOATIME.bits();
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(noatime)
        .open(path)
    {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => File::open(path),
        r => r,
    }
}

/// A whole access-log line as Envoy writes it to a file: a JSON object (`{…}`) or Istio's TEXT
/// format (`[<start time>] "…`). Auto framing settles on raw only on such a line.
fn looks_like_access_log(line: &[u8]) -> bool {
    (line.first() == Some(&b'{') && line.last() == Some(&b'}'))
        || (line.first() == Some(&b'[') && memchr::memmem::find(line, b"] \"").is_some())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_rewritten_between_its_proof_and_the_seek_is_suspect_and_keeps_its_proven_identity() {
        // The window between `verifies` and `resume_at`: the bytes before the offset are not
        // the proven ones any more; reading on from the offset would take new lines for old.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let old: String = (0..20).map(|i| format!("{{\"old\":{i:04}}}\n")).collect();
        std::fs::write(&path, &old).unwrap();
        let offset = (old.len() / 2) as u64;
        let proof = Evidence::of(&File::open(&path).unwrap(), offset).unwrap();
        let new: String = (0..20).map(|i| format!("{{\"new\":{i:04}}}\n")).collect();
        std::fs::write(&path, &new).unwrap();
        let mut t = Tracked::open(&path, 1024, Instant::now()).unwrap();
        t.resume_at(offset, Some(&proof));
        assert!(
            t.suspect(),
            "the bytes before the offset changed since the proof"
        );
        assert!(t.rewritten());
        assert_eq!(
            t.lineage().evidence,
            Some(proof.clone()),
            "the identity that was proven"
        );
        // Unchanged since the proof: nothing to suspect.
        std::fs::write(&path, &old).unwrap();
        let mut t = Tracked::open(&path, 1024, Instant::now()).unwrap();
        t.resume_at(offset, Some(&proof));
        assert!(!t.suspect());
        assert!(!t.rewritten());
    }
}
