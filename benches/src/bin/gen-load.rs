//! Writes a whole-process benchmark load:
//! `gen-load DIR LINES NODES UNREGISTERED_PCT [json|text|cri]` (default `json`).
//! Produces `DIR/access.log` (json), `DIR/access-text.log` or `DIR/access-cri.log`, and
//! the same registry as `DIR/registry.yaml` and `DIR/registry.json`. The same seed (the line number) gives the same requests in every format.

use std::io::{BufWriter, Write};

/// A line generator: (sequence number, nodes, unregistered percent) → line.
type LineFn = fn(u64, u32, u64) -> String;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map_or("target/bench-load", String::as_str);
    let lines: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let nodes: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3000);
    let pct: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(20);
    let format = args.get(5).map_or("json", String::as_str);
    let (file, make): (&str, LineFn) = match format {
        "json" => ("access.log", vpslens_benches::line),
        "text" => ("access-text.log", vpslens_benches::text_line),
        "cri" => ("access-cri.log", vpslens_benches::cri_line),
        other => {
            eprintln!("gen-load: unknown format {other:?} (json, text, cri)");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        format!("{dir}/registry.yaml"),
        vpslens_benches::registry_yaml(nodes),
    )?;
    std::fs::write(
        format!("{dir}/registry.json"),
        vpslens_benches::registry_json(nodes),
    )?;
    let mut w = BufWriter::new(std::fs::File::create(format!("{dir}/{file}"))?);
    let mut bytes = 0u64;
    for seq in 0..lines {
        let l = make(seq, nodes, pct);
        bytes += l.len() as u64 + 1;
        w.write_all(l.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    eprintln!("gen-load: {format} {lines} lines, {nodes} nodes, {pct}% unregistered, {bytes} bytes ({} B/line) in {dir}", bytes / lines.max(1));
    Ok(())
}
