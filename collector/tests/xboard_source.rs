//! Issue 17: the Xboard panel as a registry source, against a local axum server that serves
//! `fixtures/xboard/getNodes.json` (Xboard's getNodes shape) at Xboard's admin route and
//! checks the admin token like Xboard's `Admin` middleware (403 `{"message":"Unauthorized"}`).
//! Covers a refused token, IP literals, `localhost` (resolved), a `.invalid` host (never
//! resolves: node listed without addresses), a disabled node, a node removed from the panel, a
//! panel that is down (last good list kept, failure metrics set) and the merge below the node
//! file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use vpslens::aggregate::Limits;
use vpslens::export::exposition::Dialect;
use vpslens::export::metrics;
use vpslens::pipeline::Shared;
use vpslens::resolve::reload::RegistryHandle;
use vpslens::resolve::sources::xboard::{XboardConfig, XboardError, XboardPoller};
use vpslens::resolve::sources::SourceId;

const SECURE: &str = "a1b2c3d4";
const TOKEN: &str = "42|FAKE-sanctum-token-do-not-use";

struct Panel {
    doc: String,
    hits: u64,
}

async fn get_nodes(
    State(p): State<Arc<Mutex<Panel>>>,
    UrlPath(secure): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if secure != SECURE {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {TOKEN}") {
        return (
            StatusCode::FORBIDDEN,
            [("content-type", "application/json")],
            r#"{"message":"Unauthorized"}"#,
        )
            .into_response();
    }
    let mut p = p.lock().unwrap();
    p.hits += 1;
    ([("content-type", "application/json")], p.doc.clone()).into_response()
}

fn fixture() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/xboard/getNodes.json"),
    )
    .unwrap()
}

/// The fixture without the node of `id`.
fn without(doc: &str, id: u64) -> String {
    let mut v: serde_json::Value = serde_json::from_str(doc).unwrap();
    v["data"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["id"].as_u64() != Some(id));
    v.to_string()
}

fn owner(h: &RegistryHandle, ip: &str) -> Option<String> {
    let r = h.current();
    r.lookup(ip.parse().unwrap())
        .map(|i| r.nodes()[i as usize].name.clone())
}

fn names(h: &RegistryHandle) -> Vec<String> {
    h.current().nodes().iter().map(|n| n.name.clone()).collect()
}

fn metrics_text(h: &Arc<RegistryHandle>) -> String {
    metrics::render(
        &Shared::new(
            vpslens::pipeline::PipelineConfig {
                format: vpslens_parsers::LogFormat::Auto,
                client: Default::default(),
                routes: Default::default(),
                limits: Limits::default(),
                attribute_unregistered_by_node_id: false,
                parse_threads: 1,
                geo: None,
            },
            Default::default(),
            h.clone(),
        ),
        Dialect::Prometheus,
    )
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// A fake panel serving `fixture()` on `127.0.0.1:<ephemeral>` from its own runtime (kept
/// alive by the returned value), with the handle of its server task.
fn start_panel() -> (
    tokio::runtime::Runtime,
    Arc<Mutex<Panel>>,
    std::net::SocketAddr,
    tokio::task::JoinHandle<()>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let panel = Arc::new(Mutex::new(Panel {
        doc: fixture(),
        hits: 0,
    }));
    let app = axum::Router::new()
        .route("/api/v2/{secure}/server/manage/getNodes", get(get_nodes))
        .with_state(panel.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rt, panel, addr, server)
}

#[test]
fn xboard_source_auth_dns_removal_outage_and_precedence() {
    let (rt, panel, addr, server) = start_panel();
    let dir = tempfile::tempdir().unwrap();

    // The node file names jp-01 too: it wins (xboard is the lowest precedence).
    let node_file = dir.path().join("nodes.yaml");
    std::fs::write(
        &node_file,
        "nodes:\n  - name: jp-01\n    addresses: [\"192.0.2.1\"]\n    node_id: 1\n",
    )
    .unwrap();
    let token_file = dir.path().join("xboard-token");
    std::fs::write(&token_file, "Bearer wrong-token\n").unwrap();
    let cfg = XboardConfig {
        url: format!("http://{addr}"),
        secure_path: SECURE.into(),
        token_file: Some(token_file.clone()),
        token_env: None,
        refresh_seconds: 60,
        timeout_seconds: 5,
        max_bytes: 1 << 20,
    };
    let h = RegistryHandle::with_sources(Some(&node_file), [SourceId::XBOARD]).unwrap();
    let mut p = XboardPoller::new(&cfg).unwrap();

    // 1. A refused token: a failure, nothing from the panel, no secret in the error.
    let e = rt.block_on(p.poll_and_apply(&h)).unwrap_err();
    assert!(
        matches!(e, XboardError::Unauthorized { status: 403, .. }),
        "{e}"
    );
    let msg = format!("{e} {e:?} {p:?}");
    for secret in [SECURE, "wrong-token", TOKEN] {
        assert!(!msg.contains(secret), "{secret} in {msg}");
    }
    assert_eq!(names(&h), ["jp-01"]);
    let m = metrics_text(&h);
    assert!(
        has(
            &m,
            r#"vpslens_registry_source_last_reload_successful{source="xboard"} 0"#
        ),
        "{m}"
    );

    // 2. The right token (the bare Sanctum token, without `Bearer `): the panel's nodes.
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(
        names(&h),
        ["de-01", "jp-01", "jp-02", "us-01"],
        "sg-01 is disabled"
    );
    let reg = h.current();
    let by_id = |id: u32| {
        reg.node_by_id(id)
            .map(|i| reg.nodes()[i as usize].name.clone())
    };
    assert_eq!(by_id(4).as_deref(), Some("de-01"), "id → node_id");
    assert_eq!(by_id(2).as_deref(), Some("jp-02"));
    // jp-01 comes from the node file, whole: its file address, not the panel's host.
    assert_eq!(owner(&h, "192.0.2.1").as_deref(), Some("jp-01"));
    assert_eq!(owner(&h, "203.0.113.11"), None);
    // An IPv6 literal as is; `localhost` resolved by DNS; the `.invalid` host never resolves:
    // us-01 is listed (so the page shows it never seen) without addresses, and counted.
    assert_eq!(owner(&h, "2001:db8:1::10").as_deref(), Some("de-01"));
    assert_eq!(owner(&h, "127.0.0.1").as_deref(), Some("jp-02"));
    let us = reg.node(reg.index_of("us-01").unwrap()).unwrap();
    assert!(us.addresses.is_empty());
    assert_eq!(us.labels["node_type"], "trojan");
    let m = metrics_text(&h);
    assert!(
        has(
            &m,
            r#"vpslens_registry_source_last_reload_successful{source="xboard"} 1"#
        ),
        "{m}"
    );
    assert!(
        has(
            &m,
            r#"vpslens_registry_source_skipped_entries{source="xboard"} 1"#
        ),
        "{m}"
    );
    assert!(
        has(
            &m,
            r#"vpslens_registry_source_shadowed_nodes{source="xboard"} 1"#
        ),
        "{m}"
    );
    drop(reg);

    // The same panel again: unchanged, no new registry.
    let generation = h.generation();
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(h.generation(), generation);

    // 3. de-01 removed from the panel: gone from the registry.
    panel.lock().unwrap().doc = without(&fixture(), 4);
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(names(&h), ["jp-01", "jp-02", "us-01"]);
    assert_eq!(owner(&h, "2001:db8:1::10"), None);

    // 4. The panel goes down: the last good list stays, the failure is visible.
    server.abort();
    let _ = rt.block_on(server);
    let e = rt.block_on(p.poll_and_apply(&h)).unwrap_err();
    assert!(matches!(e, XboardError::Http { .. }), "{e}");
    assert!(!e.to_string().contains(SECURE), "{e}");
    assert_eq!(names(&h), ["jp-01", "jp-02", "us-01"]);
    assert_eq!(owner(&h, "127.0.0.1").as_deref(), Some("jp-02"));
    let m = metrics_text(&h);
    assert!(
        has(
            &m,
            r#"vpslens_registry_source_last_reload_successful{source="xboard"} 0"#
        ),
        "{m}"
    );
    assert!(
        has(
            &m,
            r#"vpslens_registry_source_reloads_total{source="xboard",result="failure"} 2"#
        ),
        "{m}"
    );
    assert!(has(&m, "vpslens_registry_last_reload_successful 0"), "{m}");
    assert!(!m.contains(TOKEN) && !m.contains(SECURE));
    assert_eq!(panel.lock().unwrap().hits, 3);
}

#[test]
fn xboard_token_from_an_environment_variable() {
    let (rt, _panel, addr, _server) = start_panel();
    // Only this test sets this variable.
    std::env::set_var("VPSLENS_TEST_XBOARD_TOKEN", format!("Bearer {TOKEN}"));
    let cfg = XboardConfig {
        url: format!("http://{addr}/"),
        secure_path: format!("/{SECURE}/"),
        token_file: None,
        token_env: Some("VPSLENS_TEST_XBOARD_TOKEN".into()),
        refresh_seconds: 60,
        timeout_seconds: 5,
        max_bytes: 1 << 20,
    };
    let h = RegistryHandle::with_sources(None, [SourceId::XBOARD]).unwrap();
    let mut p = XboardPoller::new(&cfg).unwrap();
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(names(&h), ["de-01", "jp-01", "jp-02", "us-01"]);
    assert_eq!(owner(&h, "203.0.113.11").as_deref(), Some("jp-01"));
    // A variable that is not set: a clear failure, last good kept.
    let cfg = XboardConfig {
        token_env: Some("VPSLENS_TEST_XBOARD_TOKEN_UNSET".into()),
        ..cfg
    };
    let mut p = XboardPoller::new(&cfg).unwrap();
    let e = rt.block_on(p.poll_and_apply(&h)).unwrap_err();
    assert!(
        e.to_string()
            .contains("VPSLENS_TEST_XBOARD_TOKEN_UNSET is not set"),
        "{e}"
    );
    assert_eq!(names(&h).len(), 4);
}

#[test]
fn run_binary_lists_the_panels_nodes_without_logging_secrets() {
    let (_rt, panel, addr, _server) = start_panel();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("Bearer {TOKEN}\n")).unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "xboard: {{url: 'http://{addr}', secure_path: {SECURE}, token_file: '{}', refresh_seconds: 1}}\nsources: ['{}']\n",
            token_file.display(),
            log.display()
        ),
    )
    .unwrap();
    let listen: std::net::SocketAddr =
        format!("127.0.0.1:{}", vpslens_testkit::free_port().unwrap())
            .parse()
            .unwrap();
    let mut v = vpslens_testkit::Vpslens::run_with_env(
        Path::new(env!("CARGO_BIN_EXE_vpslens")),
        &[
            "run",
            "--config",
            &config.display().to_string(),
            "--listen",
            &listen.to_string(),
        ],
        &[("VPSLENS_LOG", "debug")],
    )
    .unwrap();
    v.wait_for_metrics(listen, std::time::Duration::from_secs(30))
        .unwrap();
    let nodes = vpslens_testkit::process::wait_for_value(
        "the panel's nodes on /api/nodes",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(200),
        || {
            let (_, body) = vpslens_testkit::http::get(&format!("http://{listen}/api/nodes"))?;
            let names = vpslens_testkit::vpslens::node_statuses(&serde_json::from_str(&body)?);
            Ok((names.len() == 4).then_some(names))
        },
    )
    .unwrap();
    assert!(nodes.iter().all(|(_, s)| s == "never_seen"), "{nodes:?}");
    // Refreshed every second: a node removed from the panel leaves the registry.
    panel.lock().unwrap().doc = without(&fixture(), 3);
    vpslens_testkit::process::wait_until(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(200),
        || {
            vpslens_testkit::http::get(&format!("http://{listen}/api/nodes"))
                .is_ok_and(|(_, b)| !b.contains("\"us-01\"") && b.contains("\"jp-02\""))
        },
    )
    .unwrap();
    let (_, page) = vpslens_testkit::http::get(&format!("http://{listen}/")).unwrap();
    assert!(
        page.contains("<dt>source xboard</dt><dd>3 nodes, last update ok"),
        "{page}"
    );
    let m = v.scrape(listen).unwrap();
    assert!(
        has(&m, r#"vpslens_registry_source_nodes{source="xboard"} 3"#),
        "{m}"
    );
    v.stop_graceful().unwrap();
    let out = v.output();
    assert!(out.contains("registry reloaded"), "{out}");
    for secret in [TOKEN, SECURE] {
        assert!(!out.contains(secret), "{secret} in the logs:\n{out}");
        assert!(!m.contains(secret) && !page.contains(secret));
    }
}
