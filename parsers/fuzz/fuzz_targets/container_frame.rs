//! Any bytes as CRI / docker json-file lines through the reassembler: no panic, bounded buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpslens_parsers::container::{parse_cri, parse_docker, Assembled, Reassembler};

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new(256);
    for line in data.split(|b| *b == b'\n') {
        for chunk in [parse_cri(line), parse_docker(line)].into_iter().flatten() {
            if let Assembled::Line(l) = r.push(chunk) {
                assert!(l.len() <= 256);
            }
        }
    }
});
