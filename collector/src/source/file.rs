//! One followed file: reading, line splitting, framing, truncation checks.

use std::borrow::Cow;
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use vpslens_parsers::container::{self, Assembled, Chunk, Framing, Reassembler, Stream};

use super::checkpoint::Lineage;
use super::{FramingMode, TailConfig, FINGERPRINT_BYTES};
use crate::pipeline::{add, Line, LineProcessor};

/// The first `FINGERPRINT_BYTES` of the file at `path` (empty on error).
pub fn read_head_of(path: &Path) -> Vec<u8> {
    File::open(path).map_or_else(|_| Vec::new(), |f| read_head(&f))
}

/// The first `FINGERPRINT_BYTES` of an open file (fewer if it is shorter; empty on error).
fn read_head(f: &File) -> Vec<u8> {
    let mut head = vec![0; FINGERPRINT_BYTES];
    let mut n = 0;
    while n < head.len() {
        match f.read_at(&mut head[n..], n as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    head.truncate(n);
    head
}

/// `(device, inode)` of a file.
pub fn identity(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

#[derive(Debug)]
pub struct Tracked {
    /// Path it was last found under.
    pub path: PathBuf,
    file: File,
    pub dev: u64,
    pub ino: u64,
    /// Fingerprint: the first bytes of the file (grows up to `FINGERPRINT_BYTES`).
    pub head: Vec<u8>,
    /// Offset just past the last line handed to the processor (checkpoint value).
    committed: u64,
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
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let (dev, ino) = identity(&meta);
        let mut t = Tracked {
            path: path.to_path_buf(),
            file,
            dev,
            ino,
            head: Vec::new(),
            committed: 0,
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
        t.head = t.read_head();
        Ok(t)
    }

    pub fn size(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }

    fn read_head(&self) -> Vec<u8> {
        read_head(&self.file)
    }

    /// Positions reading at `offset` (a line boundary from a checkpoint or lineage).
    pub fn resume_at(&mut self, offset: u64) {
        self.seek(offset);
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
                self.seek(start + i as u64 + 1);
                return;
            }
            pos = start;
        }
        self.seek(0);
    }

    fn seek(&mut self, offset: u64) {
        let offset = self.file.seek(SeekFrom::Start(offset)).unwrap_or(0);
        self.committed = offset;
        self.read_pos = offset;
        self.partial.clear();
        self.skipping = false;
        self.reassembler = Reassembler::new(self.max_line_bytes);
    }

    /// A container partial sequence or partial line is pending.
    pub fn pending(&self) -> bool {
        !self.partial.is_empty() || self.skipping || self.reassembler.is_pending()
    }

    /// Bytes in the file not yet counted.
    pub fn lag(&self) -> u64 {
        self.size().saturating_sub(self.committed)
    }

    /// The checkpoint record of this file. Kept even for an empty file: its path tells a
    /// restarted collector which directory to search for files rotated while it was down.
    pub fn lineage(&self) -> Lineage {
        Lineage {
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
            head: self.head.clone(),
            offset: self.committed,
        }
    }

    /// Detects truncation (size < read offset) or rewrite (fingerprint changed). On detection
    /// returns the old identity (for copy matching) and restarts at offset 0.
    pub fn detect_truncation(&mut self) -> Option<Lineage> {
        let size = self.file.metadata().ok()?.len();
        let head_now = self.read_head();
        let n = self.head.len().min(head_now.len());
        let rewritten = self.head[..n] != head_now[..n];
        if size >= self.read_pos && !rewritten {
            if head_now.len() > self.head.len() {
                self.head = head_now;
            }
            return None;
        }
        let old = self.lineage();
        self.seek(0);
        self.framing = None;
        self.head = head_now;
        Some(old)
    }

    /// Reads everything available and processes it in batches.
    pub fn drain(
        &mut self,
        buf: &mut [u8],
        proc: &mut LineProcessor,
        cfg: &TailConfig,
        now: Instant,
    ) {
        let shared = proc.shared().clone();
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
            self.at_eof = false;
            self.last_growth = now;
            add(&shared.sources.bytes_read, n as u64);
            self.consume(&buf[..n], proc, cfg);
        }
        if cfg.eof_ends_line && (!self.partial.is_empty() || self.skipping) {
            // Replay: the final line of a finished file may lack its newline.
            let mut lines = Vec::new();
            if self.skipping {
                self.skipping = false;
                lines.push(Line::TooLong);
                add(&shared.sources.long_lines_skipped, 1);
            } else {
                let line = std::mem::take(&mut self.partial);
                self.frame(Cow::Owned(line), &mut lines);
            }
            add(&shared.sources.lines_read, lines.len() as u64);
            proc.process(&lines);
            self.committed = self.read_pos;
        }
        if self.head.len() < FINGERPRINT_BYTES {
            let h = self.read_head();
            if h.len() > self.head.len() {
                self.head = h;
            }
        }
    }

    /// Splits `data` (the bytes at `read_pos`) into lines, frames and processes them, then
    /// advances `committed` to the end of the last line after which no container partial
    /// sequence is pending.
    fn consume(&mut self, data: &[u8], proc: &mut LineProcessor, cfg: &TailConfig) {
        let shared = proc.shared().clone();
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
        let mut new_committed = None;
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
                new_committed = Some(end);
            }
        }
        add(&shared.sources.long_lines_skipped, long);
        add(&shared.sources.lines_read, out.len() as u64);
        if !out.is_empty() {
            proc.process(&out);
        }
        self.read_pos += data.len() as u64;
        if let Some(c) = new_committed {
            self.committed = c;
        }
    }

    /// Applies container framing to one line.
    fn frame<'a>(&mut self, line: Cow<'a, [u8]>, out: &mut Vec<Line<'a>>) {
        let framing = *self
            .framing
            .get_or_insert_with(|| container::detect_framing(&line));
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
