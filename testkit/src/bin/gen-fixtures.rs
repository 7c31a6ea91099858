//! Regenerates `fixtures/` by driving a real Envoy (JSON, then TEXT access-log
//! format) with the deterministic traffic plan from `vpslens_testkit::fixtures`.
//!
//! Usage: `gen-fixtures [--out DIR] [--check]`
//!
//! * `--out DIR`: output directory (default: the workspace's `fixtures/`).
//! * `--check`: do not run Envoy; verify the existing files in DIR against
//!   the plan instead (exit 1 on mismatch).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vpslens_testkit::client::send;
use vpslens_testkit::envoy::{EnvoyGateway, EnvoyOptions, LogFormat};
use vpslens_testkit::fixtures::{self, PlannedRequest, EXPECTED, JSON_LOG, REGISTRY, TEXT_LOG};
use vpslens_testkit::upstream::XboardStub;

fn run_format(
    stub: &XboardStub,
    format: LogFormat,
    plan: &[PlannedRequest],
    out: &Path,
) -> Result<()> {
    let started = Instant::now();
    let gw = EnvoyGateway::start(EnvoyOptions::new(stub.addr()).log_format(format))?;
    for (i, p) in plan.iter().enumerate() {
        let code = send(gw.listener_addr(), &p.request)
            .with_context(|| format!("plan step {i} ({} {})", p.node, p.request.path))?;
        if code != p.expected_code {
            bail!(
                "plan step {i} ({} {} {}): got {code}, expected {}",
                p.node,
                p.request.method,
                p.request.path,
                p.expected_code
            );
        }
    }
    let lines = gw.wait_for_log_lines(plan.len(), Duration::from_secs(15))?;
    // Give Envoy one more flush interval to prove no extra lines arrive.
    std::thread::sleep(Duration::from_millis(500));
    let lines_now = gw.access_log_lines();
    if lines_now.len() != plan.len() {
        bail!(
            "{:?}: {} access-log lines, expected {}",
            format,
            lines_now.len(),
            plan.len()
        );
    }
    debug_assert_eq!(lines.len(), lines_now.len());
    let mut text = lines_now.join("\n");
    text.push('\n');
    std::fs::write(out, &text).with_context(|| format!("write {}", out.display()))?;
    eprintln!(
        "gen-fixtures: {:?}: {} lines -> {} ({:.1}s)",
        format,
        lines_now.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    let mut out = fixtures::fixtures_dir();
    let mut check_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out needs a value")?),
            "--check" => check_only = true,
            "-h" | "--help" => {
                println!("usage: gen-fixtures [--out DIR] [--check]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let plan = fixtures::plan()?;
    let expected = fixtures::expected(&plan);
    if check_only {
        fixtures::check_dir(&out)?;
        eprintln!(
            "gen-fixtures: {} is consistent with the plan",
            out.display()
        );
        return Ok(());
    }
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let stub = XboardStub::start()?;
    run_format(&stub, LogFormat::Json, &plan, &out.join(JSON_LOG))?;
    run_format(&stub, LogFormat::Text, &plan, &out.join(TEXT_LOG))?;
    std::fs::write(out.join(REGISTRY), fixtures::registry_yaml())?;
    let mut exp = serde_json::to_string_pretty(&expected)?;
    exp.push('\n');
    std::fs::write(out.join(EXPECTED), exp)?;
    fixtures::check_dir(&out).context("freshly written fixtures failed verification")?;
    eprintln!(
        "gen-fixtures: wrote {} ({} requests per log, stub saw {})",
        out.display(),
        plan.len(),
        stub.request_count()
    );
    Ok(())
}
