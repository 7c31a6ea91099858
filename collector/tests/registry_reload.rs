//! Registry hot reload: edits are picked up without a restart, a broken edit keeps the last
//! good registry and is reported in the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use vpslens::aggregate::Limits;
use vpslens::export::exposition::Dialect;
use vpslens::export::istio::IstioConfig;
use vpslens::export::metrics;
use vpslens::pipeline::{PipelineConfig, Shared};
use vpslens::resolve::reload::{spawn_watcher, RegistryHandle};
use vpslens_parsers::LogFormat;
use vpslens_testkit::process::wait_until;

fn wait(what: &str, f: impl FnMut() -> bool) {
    wait_until(Duration::from_secs(10), Duration::from_millis(20), f)
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
}

/// Writes like an editor or a ConfigMap update: temp file, then rename over the original.
fn atomic_write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-edit");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn owner(h: &RegistryHandle, ip: &str) -> Option<String> {
    let r = h.current();
    r.lookup(ip.parse().unwrap())
        .map(|i| r.nodes()[i as usize].name.clone())
}

#[test]
fn broken_edit_keeps_last_good_registry_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.yaml");
    std::fs::write(&path, "nodes:\n  - name: a\n    addresses: [10.0.0.1]\n").unwrap();
    let h = RegistryHandle::load(&path).unwrap();
    spawn_watcher(h.clone(), Duration::from_millis(100)).unwrap();
    let shared = Shared::new(
        PipelineConfig {
            format: LogFormat::Auto,
            client: Default::default(),
            routes: Default::default(),
            limits: Limits::default(),
            geo: None,
            parse_threads: 1,
            attribute_unregistered_by_node_id: false,
        },
        IstioConfig::default(),
        h.clone(),
    );
    assert_eq!(owner(&h, "10.0.0.1").as_deref(), Some("a"));

    // A broken edit (unknown key) is rejected; `a` still resolves.
    atomic_write(&path, "nodes:\n  - name: b\n    adress: [10.0.0.2]\n");
    wait("failure", || {
        h.reload_failure.load(std::sync::atomic::Ordering::Relaxed) >= 1
    });
    assert_eq!(owner(&h, "10.0.0.1").as_deref(), Some("a"));
    let text = metrics::render(&shared, Dialect::Prometheus);
    assert!(
        text.contains("vpslens_registry_last_reload_successful 0\n"),
        "{text}"
    );
    assert!(text.contains("vpslens_registry_reloads_total{result=\"failure\"} 1\n"));
    assert!(text.contains("vpslens_node_info{node=\"a\"} 1\n"));

    // A good edit is picked up: `a` gone, `b` resolves, success reported.
    atomic_write(&path, "nodes:\n  - name: b\n    addresses: [10.0.0.0/24]\n");
    wait("reload", || owner(&h, "10.0.0.1").as_deref() == Some("b"));
    let text = metrics::render(&shared, Dialect::Prometheus);
    assert!(
        text.contains("vpslens_registry_last_reload_successful 1\n"),
        "{text}"
    );
    assert!(text.contains("vpslens_node_info{node=\"b\"} 1\n"));
    assert!(!text.contains("vpslens_node_info{node=\"a\"}"));

    // In-place truncation mid-write (an empty file) is also just a failed reload.
    std::fs::write(&path, "").unwrap();
    wait("second failure", || {
        h.reload_failure.load(std::sync::atomic::Ordering::Relaxed) >= 2
    });
    assert_eq!(owner(&h, "10.0.0.9").as_deref(), Some("b"));
}
