//! CRI and docker json-file fixtures (partial chunks, interleaved stderr) reassemble into the
//! original Istio JSON lines, and replaying them through the pipeline gives the same counts as
//! replaying the raw log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use vpslens::aggregate::Limits;
use vpslens::pipeline::{LineProcessor, Shared};
use vpslens::resolve::Registry;
use vpslens::source::{FramingMode, ReadFrom, TailConfig, Tailer};
use vpslens_parsers::container::{self, Assembled, Reassembler, Stream};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn original() -> Vec<Vec<u8>> {
    std::fs::read(fixtures().join("access-istio-json.log"))
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn reassemble(path: &Path, docker: bool) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut r = Reassembler::new(64 * 1024);
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let chunk = if docker {
            container::parse_docker(line)
        } else {
            container::parse_cri(line)
        }
        .unwrap();
        if chunk.stream == Stream::Stderr {
            continue;
        }
        match r.push(chunk) {
            Assembled::Line(l) => out.push(l.into_owned()),
            Assembled::Pending => {}
            Assembled::TooLong => panic!("fixture line too long"),
        }
    }
    assert!(!r.is_pending());
    out
}

#[test]
fn cri_chunks_reassemble_into_the_original_json_lines() {
    let cri = fixtures().join("container/cri-0.log");
    let text = std::fs::read_to_string(&cri).unwrap();
    assert!(
        text.lines().filter(|l| l.contains(" stdout P ")).count() > 100,
        "needs partials"
    );
    assert_eq!(reassemble(&cri, false), original());
}

#[test]
fn docker_json_file_chunks_reassemble_into_the_original_json_lines() {
    assert_eq!(
        reassemble(&fixtures().join("container/docker-0.log"), true),
        original()
    );
}

fn replay(path: &Path) -> (std::collections::BTreeMap<String, u64>, [u64; 4]) {
    let reg = Registry::load(&fixtures().join("registry.yaml")).unwrap();
    let shared = Shared::with_registry(reg, Limits::default());
    let cfg = TailConfig {
        patterns: vec![path.display().to_string()],
        read_from: ReadFrom::Beginning,
        max_line_bytes: 64 * 1024,
        poll_interval: Duration::from_millis(10),
        rescan_interval: Duration::from_secs(10),
        rotate_wait: Duration::ZERO,
        framing: FramingMode::Auto,
        state_dir: None,
        checkpoint_interval: Duration::from_secs(60),
        read_chunk_bytes: 1000, // small reads: chunks and lines straddle buffer boundaries
        eof_ends_line: true,
    };
    let mut t = Tailer::new(
        cfg,
        LineProcessor::new(shared.clone()),
        shared.sources.clone(),
    )
    .unwrap();
    t.poll();
    let agg = shared.lock();
    (agg.requests_by_node(), agg.lines)
}

#[test]
fn container_framing_is_detected_and_counts_match_the_raw_log() {
    let raw = replay(&fixtures().join("access-istio-json.log"));
    assert_eq!(raw.1[0], 223);
    for f in ["container/cri-0.log", "container/docker-0.log"] {
        assert_eq!(replay(&fixtures().join(f)), raw, "{f}");
    }
}
