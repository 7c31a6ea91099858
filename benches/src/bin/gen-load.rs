//! Writes a whole-process benchmark load: `gen-load DIR LINES NODES UNREGISTERED_PCT`.
//! Produces `DIR/access.log` and `DIR/registry.yaml`.

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map_or("target/bench-load", String::as_str);
    let lines: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let nodes: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3000);
    let pct: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(20);
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        format!("{dir}/registry.yaml"),
        vpslens_benches::registry_yaml(nodes),
    )?;
    let mut w = BufWriter::new(std::fs::File::create(format!("{dir}/access.log"))?);
    let mut bytes = 0u64;
    for seq in 0..lines {
        let l = vpslens_benches::line(seq, nodes, pct);
        bytes += l.len() as u64 + 1;
        w.write_all(l.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    eprintln!("gen-load: {lines} lines, {nodes} nodes, {pct}% unregistered, {bytes} bytes ({} B/line) in {dir}", bytes / lines.max(1));
    Ok(())
}
