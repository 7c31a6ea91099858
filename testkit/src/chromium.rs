//! Headless Chromium (Debian `chromium`): load a page like a person's browser would and hand
//! back its DOM after load (`--dump-dom`) or a PNG screenshot. Each call is one short-lived
//! browser with its own profile directory; killed if it takes longer than [`TIMEOUT`].

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{read_lossy, ChildGuard};

/// Longest a single page load may take (a cold Chromium start on a busy machine is slow).
pub const TIMEOUT: Duration = Duration::from_secs(90);

fn run(extra: &[&str], url: &str) -> Result<String> {
    let bin = crate::bins::chromium()?;
    let dir = tempfile::Builder::new()
        .prefix("vpslens-chromium-")
        .tempdir()?;
    let profile = dir.path().join("profile");
    let stdout = dir.path().join("stdout");
    let stderr = dir.path().join("stderr");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    let mut child = ChildGuard::spawn_logged("chromium", &mut cmd, &stdout, &stderr)?;
    let Some(st) = child.wait_timeout(TIMEOUT)? else {
        child.kill()?;
        bail!("chromium did not finish {url} within {TIMEOUT:?}");
    };
    if !st.success() {
        bail!(
            "chromium exited with {st} on {url}:\n{}",
            read_lossy(&stderr)
        );
    }
    Ok(read_lossy(&stdout))
}

/// The serialised DOM of `url` after the page loaded.
pub fn dump_dom(url: &str) -> Result<String> {
    let dom = run(&["--dump-dom"], url)?;
    if dom.trim().is_empty() {
        bail!("chromium printed no DOM for {url}");
    }
    Ok(dom)
}

/// Saves a `width`×`height` PNG screenshot of `url` to `out`.
pub fn screenshot(url: &str, out: &Path, width: u32, height: u32) -> Result<()> {
    let shot = format!("--screenshot={}", out.display());
    let size = format!("--window-size={width},{height}");
    run(&[&shot, &size], url)?;
    let meta =
        std::fs::metadata(out).with_context(|| format!("no screenshot at {}", out.display()))?;
    if meta.len() < 1000 {
        bail!("screenshot {} is only {} bytes", out.display(), meta.len());
    }
    Ok(())
}
