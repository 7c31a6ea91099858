//! A line longer than `max_line_bytes` is skipped and counted; tailing continues, and memory
//! stays bounded while the long line streams in across many reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use vpslens::aggregate::Limits;
use vpslens::pipeline::{LineProcessor, Shared};
use vpslens::resolve::{NodeSpec, Registry};
use vpslens::source::{FramingMode, ReadFrom, TailConfig, Tailer};

const LINE: &str = r#"{"start_time":"2026-11-23T05:38:15.940Z","response_code":200,"duration":3,"downstream_remote_address":"10.0.0.1:4000"}"#;

#[test]
fn long_line_is_skipped_counted_and_does_not_stop_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let reg = Registry::build(vec![NodeSpec {
        name: "n1".into(),
        addresses: vec!["10.0.0.1".into()],
        node_id: None,
        labels: Default::default(),
    }])
    .unwrap();
    let shared = Shared::with_registry(reg, Limits::default());
    std::fs::write(&path, "").unwrap();
    let cfg = TailConfig {
        patterns: vec![path.display().to_string()],
        read_from: ReadFrom::Beginning,
        max_line_bytes: 1024,
        poll_interval: Duration::from_millis(10),
        rescan_interval: Duration::from_secs(10),
        rotate_wait: Duration::ZERO,
        framing: FramingMode::Auto,
        state_dir: None,
        checkpoint_interval: Duration::from_secs(60),
        read_chunk_bytes: 4096,
        eof_ends_line: false,
    };
    let mut t = Tailer::new(
        cfg,
        LineProcessor::new(shared.clone()),
        shared.sources.clone(),
    )
    .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "{LINE}").unwrap();
    // A 1 MiB line arriving in pieces, polled in between (never buffered whole).
    let piece = "x".repeat(64 * 1024);
    for _ in 0..16 {
        f.write_all(piece.as_bytes()).unwrap();
        t.poll();
    }
    writeln!(f).unwrap();
    writeln!(f, "{LINE}").unwrap();
    t.poll();
    let agg = shared.lock();
    assert_eq!(agg.requests_by_node().get("n1"), Some(&2));
    assert_eq!(
        agg.lines,
        [2, 0, 0, 1],
        "ok, malformed, no_client, too_long"
    );
    drop(agg);
    assert_eq!(
        shared
            .sources
            .long_lines_skipped
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
