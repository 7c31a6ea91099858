//! Tests for the process helpers and the `Vpslens` runner (using `/bin/sh`
//! as a stand-in for the collector binary).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use vpslens_testkit::http::StaticServer;
use vpslens_testkit::vpslens::metric_value;
use vpslens_testkit::{free_port, wait_until, Vpslens};

#[test]
fn vpslens_runner_captures_output_and_stops_gracefully() -> Result<()> {
    let script =
        "echo started; echo oops >&2; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done";
    let mut p = Vpslens::run(Path::new("/bin/sh"), &["-c", script])?;
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        p.stdout().contains("started")
    })?;
    assert!(p.stderr().contains("oops"));
    let status = p.stop_graceful()?;
    assert!(status.success(), "{status}");
    assert!(p.stdout().contains("bye"));
    Ok(())
}

#[test]
fn vpslens_runner_kill_hard_and_scrape() -> Result<()> {
    let server = StaticServer::start("vpslens_up 1\n")?;
    let mut p = Vpslens::run(Path::new("/bin/sleep"), &["30"])?;
    let body = p.wait_for_metrics(server.addr(), Duration::from_secs(5))?;
    assert_eq!(metric_value(&body, "vpslens_up"), Some(1.0));
    let t = Instant::now();
    let status = p.kill_hard()?;
    assert!(!status.success());
    assert!(t.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[test]
fn free_port_and_wait_until_timeout() -> Result<()> {
    assert!(free_port()? > 0);
    let err = wait_until(
        Duration::from_millis(100),
        Duration::from_millis(10),
        || false,
    );
    assert!(err.is_err());
    Ok(())
}
