//! Model-based test of the source stage: random sequences of writes, partial writes,
//! rename-rotations, copytruncate, truncate, delete and collector restarts (graceful and
//! crash). Every complete line written must be counted exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use vpslens::aggregate::Limits;
use vpslens::pipeline::{LineProcessor, Shared};
use vpslens::resolve::{NodeSpec, Registry};
use vpslens::source::{FramingMode, ReadFrom, TailConfig, Tailer};

#[derive(Debug, Clone)]
enum Op {
    /// Append the same complete line as every other `WriteHead` (colliding heads).
    WriteHead,
    /// Append n complete lines (completing a pending partial line first).
    Write(usize),
    /// Append the first `k` bytes of the next line, without its newline.
    PartialWrite(usize),
    /// Rename the live file to a new rotated name and create an empty live file.
    RenameRotate,
    /// Copy the live file to a new rotated name, then truncate the live file.
    CopyTruncate,
    /// Truncate the live file in place (after a poll and a checkpoint: unread lines would be
    /// lost by design).
    Truncate,
    /// Delete the oldest rotated file (after a poll and a checkpoint).
    DeleteRotated,
    /// One collector poll.
    Poll,
    /// One poll as after a wake by writes only (no discovery unless a truncation is found):
    /// sound at any moment, the model checks, since a later full poll finds what it skipped.
    PollWritten,
    /// Graceful stop (final drain + checkpoint) and start.
    Restart,
    /// Crash: drop the collector without a final drain or checkpoint, and start again later.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..20).prop_map(Op::Write),
        2 => Just(Op::WriteHead),
        2 => (1usize..400).prop_map(Op::PartialWrite),
        2 => Just(Op::RenameRotate),
        2 => Just(Op::CopyTruncate),
        1 => Just(Op::Truncate),
        1 => Just(Op::DeleteRotated),
        4 => Just(Op::Poll),
        3 => Just(Op::PollWritten),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

/// One logical access-log line, raw or framed as CRI chunks (1–3 per line, `P`…`F`).
fn line(seq: u64, cri: bool) -> String {
    let raw = json_line(seq);
    if !cri {
        return raw;
    }
    let body = raw.trim_end_matches('\n');
    let parts = 1 + (seq % 3) as usize;
    let step = body.len().div_ceil(parts);
    let mut out = String::new();
    let mut start = 0;
    while start < body.len() {
        let end = (start + step).min(body.len());
        let tag = if end == body.len() { 'F' } else { 'P' };
        // One timestamp for every chunk: CRI heads collide like the lines inside them.
        out.push_str(&format!(
            "2026-11-23T05:38:15.000000000Z stdout {tag} {}\n",
            &body[start..end]
        ));
        start = end;
    }
    out
}

/// The line every `WriteHead` writes: byte-identical each time, so files starting with it
/// have identical first lines, and a file holding only it is a prefix of another.
const HEAD_SEQ: u64 = 99_999_999;

/// Shaped like Envoy's output: keys sorted, so the first ~330 bytes (a keep-alive connection's
/// `authority` … `path`) are the same on every line; the sequence number comes late.
fn json_line(seq: u64) -> String {
    format!(
        "{{\"authority\":\"panel.example.com\",\"bytes_received\":0,\"bytes_sent\":10,\"connection_termination_details\":null,\"downstream_local_address\":\"10.244.0.7:8443\",\"downstream_remote_address\":\"10.0.0.1:40000\",\"duration\":3,\"method\":\"GET\",\"path\":\"/api/v1/server/UniProxy/user?node_id=1&node_type=vless&token=FAKE-TOKEN-do-not-use\",\"protocol\":\"HTTP/1.1\",\"request_id\":\"{seq:08}\",\"response_code\":200,\"start_time\":\"2026-11-23T05:38:15.940Z\"}}\n"
    )
}

struct World {
    cri: bool,
    /// Follow `access.log*` (rotations stay in the pattern) or exactly `access.log`.
    glob: bool,
    dir: tempfile::TempDir,
    live: PathBuf,
    rotated: Vec<PathBuf>,
    generation: u32,
    next_seq: u64,
    /// Complete lines written (the truth).
    written: u64,
    /// Bytes of the pending partial line already in the live file.
    partial: Option<(String, usize)>,
}

impl World {
    fn new(cri: bool, glob: bool) -> World {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("access.log");
        fs::write(&live, b"").unwrap();
        World {
            cri,
            glob,
            dir,
            live,
            rotated: Vec::new(),
            generation: 0,
            next_seq: 0,
            written: 0,
            partial: None,
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.live)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    fn finish_partial(&mut self) {
        if let Some((l, k)) = self.partial.take() {
            self.append(&l.as_bytes()[k..]);
            self.written += 1;
        }
    }

    fn write(&mut self, n: usize) {
        self.finish_partial();
        let mut buf = String::new();
        for _ in 0..n {
            buf.push_str(&line(self.next_seq, self.cri));
            self.next_seq += 1;
        }
        self.written += n as u64;
        self.append(buf.as_bytes());
    }

    fn write_head(&mut self) {
        self.finish_partial();
        self.written += 1;
        self.append(line(HEAD_SEQ, self.cri).as_bytes());
    }

    fn partial_write(&mut self, k: usize) {
        self.finish_partial();
        let l = line(self.next_seq, self.cri);
        self.next_seq += 1;
        let k = k.min(l.len() - 1);
        self.append(&l.as_bytes()[..k]);
        self.partial = Some((l, k));
    }

    fn rotated_name(&mut self) -> PathBuf {
        self.generation += 1;
        self.dir
            .path()
            .join(format!("access.log.{}", self.generation))
    }
}

struct Collector {
    tailer: Tailer<LineProcessor>,
}

fn registry() -> Registry {
    Registry::build(vec![NodeSpec {
        name: "n1".into(),
        addresses: vec!["10.0.0.1".into()],
        node_id: Some(1),
        labels: Default::default(),
    }])
    .unwrap()
}

fn start(world: &World, state: &Path) -> Collector {
    let shared = Shared::with_registry(registry(), Limits::default());
    let cfg = TailConfig {
        patterns: vec![if world.glob {
            format!("{}*", world.live.display())
        } else {
            world.live.display().to_string()
        }],
        read_from: ReadFrom::End,
        max_line_bytes: 64 * 1024,
        poll_interval: Duration::from_millis(10),
        rescan_interval: Duration::from_secs(10),
        rotate_wait: Duration::ZERO,
        framing: FramingMode::Auto,
        state_dir: Some(state.to_path_buf()),
        // Only the checkpoints the tailer writes on its own (first pass, rotations, truncations)
        // and at graceful stops: crashes in between must still be exact.
        checkpoint_interval: Duration::from_secs(3600),
        read_chunk_bytes: 4096,
        eof_ends_line: false,
    };
    let mut tailer = Tailer::new(
        cfg,
        LineProcessor::new(shared.clone()),
        shared.sources.clone(),
    )
    .unwrap();
    // The collector's first pass happens when it starts (read_from: end applies then).
    tailer.poll();
    Collector { tailer }
}

fn counted(c: &Collector) -> (u64, u64) {
    let shared = c.tailer.sink().shared();
    let agg = shared.lock();
    let by_node = agg.requests_by_node();
    (
        by_node.get("n1").copied().unwrap_or(0),
        agg.lines[1] + agg.lines[2] + agg.lines[3],
    )
}

fn run_model(ops: &[Op]) {
    run_model_framed(ops, false, true);
    run_model_framed(ops, false, false);
}

fn run_model_framed(ops: &[Op], cri: bool, glob: bool) {
    let mut w = World::new(cri, glob);
    let state = w.dir.path().join("state");
    let mut c = Some(start(&w, &state));
    for op in ops {
        match op {
            Op::Write(n) => w.write(*n),
            Op::WriteHead => w.write_head(),
            Op::PartialWrite(k) => w.partial_write(*k),
            Op::RenameRotate => {
                w.finish_partial();
                let to = w.rotated_name();
                fs::rename(&w.live, &to).unwrap();
                fs::write(&w.live, b"").unwrap();
                w.rotated.push(to);
            }
            Op::CopyTruncate => {
                w.finish_partial();
                let to = w.rotated_name();
                fs::copy(&w.live, &to).unwrap();
                OpenOptions::new()
                    .write(true)
                    .open(&w.live)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                w.rotated.push(to);
            }
            Op::Truncate => {
                // Only while running: a truncation while down destroys unread lines by design.
                if let Some(c) = c.as_mut() {
                    w.finish_partial();
                    // Destroys bytes: only after they were read and checkpointed (a real
                    // truncation comes long after the checkpoint interval).
                    c.tailer.poll();
                    c.tailer.checkpoint();
                    OpenOptions::new()
                        .write(true)
                        .open(&w.live)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                    // The truncation wakes the tailer (inotify IN_MODIFY) before new writes.
                    // Without that poll, bytes written again identically up to the read
                    // offset (`WriteHead` after `Truncate`) are indistinguishable from the
                    // bytes already read; real lines carry request ids and start times.
                    c.tailer.poll();
                }
            }
            Op::DeleteRotated => {
                if let (Some(c), false) = (c.as_mut(), w.rotated.is_empty()) {
                    c.tailer.poll();
                    c.tailer.checkpoint();
                    fs::remove_file(w.rotated.remove(0)).unwrap();
                }
            }
            Op::Poll => {
                if let Some(c) = c.as_mut() {
                    c.tailer.poll();
                }
            }
            Op::PollWritten => {
                if let Some(c) = c.as_mut() {
                    c.tailer.poll_written();
                }
            }
            Op::Restart => {
                if let Some(mut old) = c.take() {
                    old.tailer.poll();
                    old.tailer.checkpoint();
                }
                c = Some(start(&w, &state));
            }
            Op::Crash => {
                // Drop without a final poll/checkpoint; the next Restart (or the end) starts it.
                c = None;
            }
        }
    }
    w.finish_partial();
    let mut c = c.unwrap_or_else(|| start(&w, &state));
    c.tailer.poll();
    c.tailer.poll();
    let (n1, bad) = counted(&c);
    assert_eq!(bad, 0, "no line may be malformed, split or too long");
    assert_eq!(
        n1, w.written,
        "lines counted must equal lines written; ops: {ops:?}"
    );
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), .. ProptestConfig::default() })]
    #[test]
    fn every_line_counted_exactly_once(ops in prop::collection::vec(op(), 1..40)) {
        run_model(&ops);
    }

    #[test]
    fn every_cri_line_counted_exactly_once(ops in prop::collection::vec(op(), 1..40)) {
        run_model_framed(&ops, true, true);
        run_model_framed(&ops, true, false);
    }
}

#[test]
fn copytruncate_copy_resumes_where_the_original_stopped() {
    // Regression: lines written between the last read and a copytruncate live only in the copy.
    run_model(&[
        Op::Write(3),
        Op::Poll,
        Op::Write(4),
        Op::CopyTruncate,
        Op::Write(2),
        Op::Poll,
    ]);
}

#[test]
fn rename_while_down_is_drained_after_restart() {
    run_model(&[
        Op::Write(3),
        Op::Poll,
        Op::Write(2),
        Op::Crash,
        Op::RenameRotate,
        Op::Write(5),
        Op::Restart,
    ]);
}

#[test]
fn rotated_twice_out_of_the_pattern_while_down() {
    // Regression: a file born and rotated away while vpslens was down was never read.
    run_model(&[
        Op::Write(1),
        Op::Poll,
        Op::Crash,
        Op::RenameRotate,
        Op::Write(5),
        Op::PartialWrite(55),
        Op::RenameRotate,
        Op::Write(12),
    ]);
}

#[test]
fn partial_line_across_restart() {
    run_model(&[
        Op::Write(1),
        Op::PartialWrite(40),
        Op::Poll,
        Op::Restart,
        Op::Write(1),
    ]);
}

// Regression tests named after the cases measured in issue 14.

fn tail_config(patterns: Vec<String>, state: Option<&Path>) -> TailConfig {
    TailConfig {
        patterns,
        read_from: ReadFrom::End,
        max_line_bytes: 64 * 1024,
        poll_interval: Duration::from_millis(10),
        rescan_interval: Duration::from_secs(10),
        rotate_wait: Duration::ZERO,
        framing: FramingMode::Auto,
        state_dir: state.map(Path::to_path_buf),
        checkpoint_interval: Duration::from_secs(3600),
        read_chunk_bytes: 4096,
        eof_ends_line: false,
    }
}

fn tailer(cfg: TailConfig) -> Collector {
    let shared = Shared::with_registry(registry(), Limits::default());
    let mut tailer = Tailer::new(
        cfg,
        LineProcessor::new(shared.clone()),
        shared.sources.clone(),
    )
    .unwrap();
    tailer.poll();
    Collector { tailer }
}

fn lines(range: std::ops::Range<u64>) -> String {
    range.map(json_line).collect()
}

fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

#[test]
fn replay_reads_two_files_with_identical_heads() {
    // `vpslens replay fixture other.log` with other.log = the fixture's first 20 lines read 20.
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    let c = dir.path().join("c.log");
    fs::write(&a, lines(0..50)).unwrap();
    fs::write(&b, lines(0..20)).unwrap();
    // Same first 256+ bytes, different lines after.
    fs::write(&c, lines(500..530)).unwrap();
    let mut cfg = tail_config(
        vec![
            a.display().to_string(),
            b.display().to_string(),
            c.display().to_string(),
        ],
        None,
    );
    cfg.read_from = ReadFrom::Beginning;
    cfg.eof_ends_line = true;
    let c = tailer(cfg);
    assert_eq!(counted(&c), (100, 0));
}

#[test]
fn new_file_at_followed_path_with_identical_head_is_read_from_zero() {
    // Envoy keep-alive load: after rename + reopen the new file's head equals the renamed
    // file's, which is still being written and drained. Every line of the new file was lost.
    for glob in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("access.log");
        let pattern = if glob {
            format!("{}*", live.display())
        } else {
            live.display().to_string()
        };
        fs::write(&live, "").unwrap();
        let mut c = tailer(tail_config(vec![pattern], Some(&dir.path().join("state"))));
        append(&live, &lines(0..10));
        c.tailer.poll();
        let rotated = dir.path().join("access.log.1");
        fs::rename(&live, &rotated).unwrap();
        append(&rotated, &lines(10..15)); // Envoy's old descriptor, before /reopen_logs
        append(&live, &lines(15..40));
        c.tailer.poll();
        append(&live, &lines(40..45));
        c.tailer.poll();
        c.tailer.poll();
        assert_eq!(counted(&c), (45, 0), "glob: {glob}");
    }
}

#[test]
fn restart_after_rotation_with_identical_head_reads_both() {
    // Down while the log rotated and a new file with the checkpointed head started: 1,000 of
    // 1,800 lines were counted.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let live = dir.path().join("access.log");
    fs::write(&live, "").unwrap();
    let cfg = tail_config(vec![live.display().to_string()], Some(&state));
    let mut c = tailer(cfg.clone());
    append(&live, &lines(0..100));
    c.tailer.poll();
    c.tailer.checkpoint();
    drop(c);
    append(&live, &lines(100..120));
    fs::rename(&live, dir.path().join("access.log.1")).unwrap();
    append(&live, &lines(120..180));
    let mut c = tailer(cfg);
    c.tailer.poll();
    assert_eq!(counted(&c), (180, 0));
}

#[test]
fn relative_path_drains_rotated_sibling() {
    // `vpslens run access.log` rotated while down: 1,300 of 1,800 (the sibling scan got an
    // empty parent directory). The only test in this binary that changes the working directory;
    // every other one uses absolute paths.
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let state = dir.path().join("state");
    for (n, pattern) in ["access.log", "./other.log"].into_iter().enumerate() {
        let live = dir.path().join(pattern.trim_start_matches("./"));
        fs::write(&live, "").unwrap();
        let cfg = tail_config(vec![pattern.to_string()], Some(&state.join(n.to_string())));
        let mut c = tailer(cfg.clone());
        append(&live, &lines(0..10));
        c.tailer.poll();
        drop(c); // crash
        append(&live, &lines(10..13));
        fs::rename(&live, live.with_extension("log.1")).unwrap();
        append(&live, &lines(13..18));
        let mut c = tailer(cfg);
        c.tailer.poll();
        assert_eq!(counted(&c), (18, 0), "pattern {pattern}");
    }
}

#[test]
fn garbage_first_line_does_not_disable_cri_framing() {
    // With `framing: auto` a cut first line made all 21 later CRI lines `unknown_format`.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("0.log");
    let mut text = String::from("r\":\"GET\",\"path\":\"/cut-by-rotation\"}\n");
    for i in 0..21 {
        text.push_str(&line(i, true));
    }
    fs::write(&log, text).unwrap();
    let mut cfg = tail_config(vec![log.display().to_string()], None);
    cfg.read_from = ReadFrom::Beginning;
    let c = tailer(cfg);
    assert_eq!(
        counted(&c),
        (21, 1),
        "21 lines counted, the cut one malformed"
    );
}

#[test]
fn crash_loop_keeps_offsets() {
    // Restarts every 0.3–6 s never reached the first periodic checkpoint: counters restarted
    // from zero and rotated files were never drained.
    run_model(&[
        Op::Write(5),
        Op::Crash,
        Op::Write(3),
        Op::Restart,
        Op::Write(2),
        Op::RenameRotate,
        Op::Write(4),
        Op::Poll,
        Op::Crash,
        Op::Write(1),
        Op::RenameRotate,
        Op::Crash,
        Op::Write(6),
        Op::Restart,
        Op::Crash,
    ]);
}

#[test]
fn copy_of_an_unread_rewrite_is_not_taken_for_the_truncated_file() {
    // Found by the model with colliding heads: a later copy repeats the truncated file's bytes.
    run_model(&[
        Op::WriteHead,
        Op::Truncate,
        Op::WriteHead,
        Op::Write(1),
        Op::CopyTruncate,
    ]);
}

#[test]
fn reused_inode_with_identical_content_is_a_new_file() {
    // Found by the model: a deleted file's inode number came back for a file with the same
    // bytes.
    run_framed_both(&[
        Op::WriteHead,
        Op::CopyTruncate,
        Op::DeleteRotated,
        Op::RenameRotate,
        Op::RenameRotate,
        Op::WriteHead,
    ]);
}

fn run_framed_both(ops: &[Op]) {
    run_model(ops);
    run_model_framed(ops, true, true);
    run_model_framed(ops, true, false);
}

#[test]
fn checkpoint_holds_digests_not_file_bytes() {
    // checkpoint.json stored each file's first 256 bytes: for TEXT logs the `token`.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let live = dir.path().join("access.log");
    fs::write(&live, "").unwrap();
    let cfg = tail_config(vec![live.display().to_string()], Some(&state));
    let mut c = tailer(cfg.clone());
    append(&live, &lines(0..30));
    c.tailer.poll();
    c.tailer.checkpoint();
    let text = fs::read_to_string(state.join("checkpoint.json")).unwrap();
    assert!(
        !text.contains("FAKE-TOKEN"),
        "the token reached the checkpoint"
    );
    assert!(!text.contains("\"head\""), "raw head bytes stored");
    assert!(text.contains("head_sha256") && text.contains("tail_sha256"));

    // The same checkpoint in the version 1 form (raw first 256 bytes) still resumes exactly.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["version"] = 1.into();
    let head: Vec<u8> = fs::read(&live).unwrap()[..256].to_vec();
    for f in v["files"].as_array_mut().unwrap() {
        let f = f.as_object_mut().unwrap();
        f.remove("evidence");
        f.insert("head".into(), serde_json::to_value(&head).unwrap());
    }
    drop(c);
    fs::write(
        state.join("checkpoint.json"),
        serde_json::to_vec(&v).unwrap(),
    )
    .unwrap();
    append(&live, &lines(30..35));
    let mut c = tailer(cfg);
    c.tailer.poll();
    assert_eq!(counted(&c), (35, 0));
    c.tailer.checkpoint();
    let text = fs::read_to_string(state.join("checkpoint.json")).unwrap();
    assert!(!text.contains("FAKE-TOKEN") && !text.contains("\"head\""));
}

#[test]
fn copy_seen_before_its_truncation_is_not_read_twice() {
    // Real Envoy + copytruncate: the tailer polled between the copy and the truncation, read
    // lines the copy does not have, and then took the copy for a new file (read twice).
    // `cp` creates the copy empty first (the poll its creation wakes saw an empty new file).
    for (glob, empty_first) in [(false, false), (true, false), (false, true), (true, true)] {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("access.log");
        let pattern = if glob {
            format!("{}*", live.display())
        } else {
            live.display().to_string()
        };
        fs::write(&live, "").unwrap();
        let mut cfg = tail_config(vec![pattern], Some(&dir.path().join("state")));
        cfg.rotate_wait = Duration::from_secs(3600);
        let mut c = tailer(cfg);
        append(&live, &lines(0..10));
        c.tailer.poll();
        let copy = dir.path().join("access.log.1");
        if empty_first {
            fs::write(&copy, "").unwrap();
            c.tailer.poll();
        }
        fs::copy(&live, &copy).unwrap();
        append(&live, &lines(10..12)); // written between the copy and the truncation
        c.tailer.poll();
        OpenOptions::new()
            .write(true)
            .open(&live)
            .unwrap()
            .set_len(0)
            .unwrap();
        c.tailer.poll();
        append(&live, &lines(12..15));
        c.tailer.poll();
        c.tailer.poll();
        assert_eq!(
            counted(&c),
            (15, 0),
            "glob: {glob}, empty first: {empty_first}"
        );
    }
}

#[test]
fn copytruncate_while_down_with_an_identical_first_line_is_a_truncation() {
    // The first line alone cannot tell the truncated-and-rewritten file from the one
    // checkpointed: the bytes before the offset must.
    run_framed_both(&[
        Op::WriteHead,
        Op::Write(3),
        Op::Restart,
        Op::Crash,
        Op::CopyTruncate,
        Op::WriteHead,
        Op::Write(10),
    ]);
}

#[test]
fn empty_live_file_still_has_its_rotations_drained() {
    // Found by the model: an empty new file is not followed until it has bytes; its rotated
    // name must still be searched (siblings of the pattern's own name).
    run_model(&[
        Op::Write(1),
        Op::Restart,
        Op::RenameRotate,
        Op::Restart,
        Op::Write(1),
        Op::RenameRotate,
    ]);
}
