//! Registry sources against real servers on 127.0.0.1: Prometheus `file_sd` over HTTP with
//! ETags, a `file_sd` file, Istio `WorkloadEntry` list/watch with a real `kube::Client` against
//! recorded API responses (`fixtures/kube/`), cross-source precedence, last-good per source,
//! churn removal after the grace period, and the `node_id` fallback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use vpslens::aggregate::Limits;
use vpslens::export::exposition::Dialect;
use vpslens::export::istio::IstioConfig;
use vpslens::export::metrics;
use vpslens::pipeline::{Line, LineProcessor, PipelineConfig, Shared};
use vpslens::resolve::reload::RegistryHandle;
use vpslens::resolve::sources::file_sd::{FileSdConfig, FileSdPoller, LabelMap};
use vpslens::resolve::sources::workload_entry::{self, WorkloadEntryConfig};
use vpslens::resolve::sources::SourceId;
use vpslens_parsers::LogFormat;
use vpslens_testkit::process::wait_until;

fn owner(h: &RegistryHandle, ip: &str) -> Option<String> {
    let r = h.current();
    r.lookup(ip.parse().unwrap())
        .map(|i| r.nodes()[i as usize].name.clone())
}

fn names(h: &RegistryHandle) -> Vec<String> {
    h.current().nodes().iter().map(|n| n.name.clone()).collect()
}

fn shared(h: Arc<RegistryHandle>, fallback: bool) -> Arc<Shared> {
    Shared::new(
        PipelineConfig {
            format: LogFormat::Auto,
            client: Default::default(),
            routes: Default::default(),
            limits: Limits::default(),
            attribute_unregistered_by_node_id: fallback,
            parse_threads: 1,
            geo: None,
        },
        IstioConfig::default(),
        h,
    )
}

fn metrics_text(h: &Arc<RegistryHandle>) -> String {
    metrics::render(&shared(h.clone(), false), Dialect::Prometheus)
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

fn node_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("nodes.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

async fn serve(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

// ---------------------------------------------------------------- file_sd over HTTP

/// What the fleet-manager stand-in serves next.
#[derive(Clone)]
enum Reply {
    Doc {
        body: &'static str,
        etag: &'static str,
    },
    Status(u16),
}

#[derive(Default)]
struct Fleet {
    reply: Option<Reply>,
    /// `If-None-Match` of every request (None = header absent).
    seen: Vec<Option<String>>,
}

async fn fleet(State(s): State<Arc<Mutex<Fleet>>>, headers: HeaderMap) -> Response {
    let inm = headers
        .get("if-none-match")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut s = s.lock().unwrap();
    s.seen.push(inm.clone());
    match s.reply.clone().unwrap() {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::Doc { body, etag } => {
            if inm.as_deref() == Some(etag) {
                return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
            }
            (
                StatusCode::OK,
                [("etag", etag), ("content-type", "application/json")],
                body,
            )
                .into_response()
        }
    }
}

/// A fleet-manager stand-in on 127.0.0.1 serving `body` with `etag` at `path`; returns its
/// state (to change the reply and read the requests) and its base URL.
fn fleet_server(
    rt: &tokio::runtime::Runtime,
    path: &str,
    body: &'static str,
    etag: &'static str,
) -> (Arc<Mutex<Fleet>>, String) {
    let state = Arc::new(Mutex::new(Fleet::default()));
    set_doc(&state, body, etag);
    let base = rt.block_on(serve(
        axum::Router::new()
            .route(path, get(fleet))
            .with_state(state.clone()),
    ));
    (state, base)
}

/// Makes the fleet-manager stand-in serve `body` with `etag` from now on.
fn set_doc(state: &Mutex<Fleet>, body: &'static str, etag: &'static str) {
    state.lock().unwrap().reply = Some(Reply::Doc { body, etag });
}

const SD_V1: &str = r#"[
  {"targets": ["198.51.100.1:9100"], "labels": {"instance_name": "sd-a", "node_id": "11", "app": "v2bx"}},
  {"targets": ["198.51.100.2:9100"], "labels": {"instance_name": "sd-b"}},
  {"targets": ["10.0.0.99:9100"], "labels": {"instance_name": "file-a", "region": "sd"}},
  {"targets": ["10.0.0.1:9100"], "labels": {"instance_name": "aa-sd"}},
  {"targets": ["198.51.100.3:9100"], "labels": {"job": "no-name"}}
]"#;
const SD_V2: &str = r#"[
  {"targets": ["198.51.100.1:9100"], "labels": {"instance_name": "sd-a", "node_id": "11"}},
  {"targets": ["198.51.100.4", "2001:db8::4"], "labels": {"instance_name": "sd-c"}}
]"#;

#[test]
fn file_sd_http_polls_with_if_none_match_and_keeps_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let path = node_file(
        dir.path(),
        "nodes:\n  - name: file-a\n    addresses: [10.0.0.1]\n    labels: {region: file}\n",
    );
    let rt = rt();
    let (state, base) = fleet_server(&rt, "/targets.json", SD_V1, "\"v1\"");
    let h = RegistryHandle::with_sources(Some(&path), [SourceId::file_sd(0)]).unwrap();
    let cfg = FileSdConfig {
        url: Some(format!("{base}/targets.json?token=SECRET")),
        labels: LabelMap {
            name: "instance_name".into(),
            ..LabelMap::default()
        },
        ..FileSdConfig::default()
    };
    let mut p = FileSdPoller::new(0, &cfg).unwrap();
    let text = metrics_text(&h);
    assert!(
        has(
            &text,
            "vpslens_registry_source_last_reload_successful{source=\"file_sd\"} 0"
        ),
        "not tried yet: {text}"
    );

    // First poll: no If-None-Match; the nodes arrive merged with the node file.
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(names(&h), ["aa-sd", "file-a", "sd-a", "sd-b"]);
    assert_eq!(owner(&h, "198.51.100.1").as_deref(), Some("sd-a"));
    assert_eq!(h.current().nodes()[2].node_id, Some(11));
    // Precedence: the node file owns `file-a` whole; file_sd's address and labels for it are
    // dropped, not merged.
    assert_eq!(owner(&h, "10.0.0.99"), None);
    let reg = h.current();
    let file_a = &reg.nodes()[1];
    assert_eq!(
        file_a.labels.get("region").map(String::as_str),
        Some("file")
    );
    // A different name claiming the same address: resolved by Registry::build (smaller name),
    // reported as a conflict.
    assert_eq!(owner(&h, "10.0.0.1").as_deref(), Some("aa-sd"));
    assert_eq!(h.current().conflicts().len(), 1);
    assert_eq!(h.current().conflicts()[0].loser, "file-a");
    let text = metrics_text(&h);
    for line in [
        "vpslens_registry_source_nodes{source=\"file\"} 1",
        "vpslens_registry_source_nodes{source=\"file_sd\"} 4",
        "vpslens_registry_source_skipped_entries{source=\"file_sd\"} 1",
        "vpslens_registry_source_shadowed_nodes{source=\"file_sd\"} 1",
        "vpslens_registry_source_shadowed_nodes{source=\"file\"} 0",
        "vpslens_registry_source_last_reload_successful{source=\"file_sd\"} 1",
        "vpslens_registry_source_reloads_total{source=\"file_sd\",result=\"success\"} 1",
        "vpslens_registry_nodes 4",
        "vpslens_registry_address_conflicts 1",
        "vpslens_registry_last_reload_successful 1",
    ] {
        assert!(has(&text, line), "missing {line}:\n{text}");
    }
    assert!(!text.contains("SECRET"));

    // Second poll sends the ETag; the 304 changes nothing.
    let gen = h.generation();
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(h.generation(), gen);
    assert_eq!(names(&h), ["aa-sd", "file-a", "sd-a", "sd-b"]);
    let text = metrics_text(&h);
    assert!(has(
        &text,
        "vpslens_registry_source_reloads_total{source=\"file_sd\",result=\"unchanged\"} 1"
    ));

    // A new document: sd-b and aa-sd disappear, sd-c (v4 + v6) appears.
    set_doc(&state, SD_V2, "\"v2\"");
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(names(&h), ["file-a", "sd-a", "sd-c"]);
    assert_eq!(owner(&h, "2001:db8::4").as_deref(), Some("sd-c"));
    assert_eq!(owner(&h, "10.0.0.1").as_deref(), Some("file-a"));

    // Server errors and broken JSON keep the last good list and are reported.
    state.lock().unwrap().reply = Some(Reply::Status(503));
    assert!(rt.block_on(p.poll_and_apply(&h)).is_err());
    set_doc(&state, "[{\"targets\": [", "\"v3\"");
    assert!(rt.block_on(p.poll_and_apply(&h)).is_err());
    assert_eq!(names(&h), ["file-a", "sd-a", "sd-c"]);
    let text = metrics_text(&h);
    for line in [
        "vpslens_registry_source_reloads_total{source=\"file_sd\",result=\"failure\"} 2",
        "vpslens_registry_source_last_reload_successful{source=\"file_sd\"} 0",
        "vpslens_registry_source_last_reload_successful{source=\"file\"} 1",
        "vpslens_registry_last_reload_successful 0",
        "vpslens_registry_source_nodes{source=\"file_sd\"} 2",
    ] {
        assert!(has(&text, line), "missing {line}:\n{text}");
    }

    // The broken document's ETag was not adopted: the next poll still offers v2, and a
    // good answer makes the source healthy again.
    set_doc(&state, SD_V2, "\"v2\"");
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    let seen = state.lock().unwrap().seen.clone();
    assert_eq!(
        seen,
        [
            None,
            Some("\"v1\"".to_string()),
            Some("\"v1\"".to_string()),
            Some("\"v2\"".to_string()),
            Some("\"v2\"".to_string()),
            Some("\"v2\"".to_string()),
        ]
    );
    assert!(has(
        &metrics_text(&h),
        "vpslens_registry_source_last_reload_successful{source=\"file_sd\"} 1"
    ));
}

#[test]
fn file_sd_documents_over_max_bytes_are_rejected() {
    let rt = rt();
    let (_, base) = fleet_server(&rt, "/t", SD_V1, "\"v1\"");
    let h = RegistryHandle::with_sources(None, [SourceId::file_sd(0)]).unwrap();
    let cfg = FileSdConfig {
        url: Some(format!("{base}/t")),
        max_bytes: 64,
        ..FileSdConfig::default()
    };
    let mut p = FileSdPoller::new(0, &cfg).unwrap();
    let e = rt.block_on(p.poll_and_apply(&h)).unwrap_err();
    assert!(e.to_string().contains("larger than 64 bytes"), "{e}");
    assert!(names(&h).is_empty());
}

// ---------------------------------------------------------------- file_sd from a file

/// A poller (source 0) for the `file_sd` file at `sd`.
fn file_poller(sd: &Path) -> FileSdPoller {
    FileSdPoller::new(
        0,
        &FileSdConfig {
            path: Some(sd.to_path_buf()),
            ..FileSdConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn file_sd_file_reloads_on_change_and_keeps_last_good_on_broken_edit() {
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("targets.json");
    std::fs::write(
        &sd,
        r#"[{"targets": ["192.0.2.1"], "labels": {"name": "x"}}]"#,
    )
    .unwrap();
    let rt = rt();
    let h = RegistryHandle::with_sources(None, [SourceId::file_sd(0)]).unwrap();
    let mut p = file_poller(&sd);
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(owner(&h, "192.0.2.1").as_deref(), Some("x"));
    let gen = h.generation();
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(h.generation(), gen, "same bytes: no reload");

    // A broken edit (not JSON), then a missing file: the last good list is kept.
    std::fs::write(&sd, "[{").unwrap();
    assert!(rt.block_on(p.poll_and_apply(&h)).is_err());
    std::fs::remove_file(&sd).unwrap();
    assert!(rt.block_on(p.poll_and_apply(&h)).is_err());
    assert_eq!(owner(&h, "192.0.2.1").as_deref(), Some("x"));
    assert_eq!(h.generation(), gen);

    std::fs::write(
        &sd,
        r#"[{"targets": ["192.0.2.0/24"], "labels": {"name": "y"}}]"#,
    )
    .unwrap();
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(owner(&h, "192.0.2.1").as_deref(), Some("y"));
    assert_eq!(names(&h), ["y"]);
    let text = metrics_text(&h);
    assert!(has(
        &text,
        "vpslens_registry_source_reloads_total{source=\"file_sd\",result=\"failure\"} 2"
    ));
    assert!(has(
        &text,
        "vpslens_registry_source_reloads_total{source=\"file_sd\",result=\"success\"} 2"
    ));
}

// ---------------------------------------------------------------- WorkloadEntry watch

#[derive(Default)]
struct ApiServer {
    /// `(watch, resourceVersion, labelSelector)` of every request, on arrival.
    seen: Vec<(bool, String, String)>,
    lists: usize,
}

struct Api {
    state: Mutex<ApiServer>,
    /// One permit per response: the test releases the server step by step.
    gate: tokio::sync::Semaphore,
}

fn kube_fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/kube")
            .join(name),
    )
    .unwrap()
}

async fn api(State(s): State<Arc<Api>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let sel = q.get("labelSelector").cloned().unwrap_or_default();
    let list_no = {
        let mut st = s.state.lock().unwrap();
        st.seen.push((watch, rv.clone(), sel));
        if !watch {
            st.lists += 1;
        }
        st.lists
    };
    s.gate.acquire().await.unwrap().forget();
    let json = [("content-type", "application/json")];
    if !watch {
        return match list_no {
            1 => (json, kube_fixture("list-1.json")).into_response(),
            2 => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json,
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"etcdserver: request timed out","reason":"InternalError","code":500}"#,
            )
                .into_response(),
            _ => (json, kube_fixture("list-2.json")).into_response(),
        };
    }
    match rv.as_str() {
        "1000" => (json, kube_fixture("watch-1.jsonl")).into_response(),
        "1300" => (json, kube_fixture("watch-2.jsonl")).into_response(),
        // Held open without events, like an idle watch.
        _ => (
            json,
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>()),
        )
            .into_response(),
    }
}

fn wait(what: &str, f: impl FnMut() -> bool) {
    wait_until(Duration::from_secs(20), Duration::from_millis(20), f)
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
}

#[test]
fn workload_entry_watch_against_recorded_api_responses() {
    let dir = tempfile::tempdir().unwrap();
    // The node file also names de-01: it owns it (precedence), the WorkloadEntry is shadowed.
    let path = node_file(
        dir.path(),
        "nodes:\n  - name: de-01\n    addresses: [192.0.2.99]\n",
    );
    let rt = rt();
    let server = Arc::new(Api {
        state: Mutex::new(ApiServer::default()),
        gate: tokio::sync::Semaphore::new(0),
    });
    let base = rt.block_on(serve(
        axum::Router::new()
            .route(
                "/apis/networking.istio.io/v1/namespaces/vps/workloadentries",
                get(api),
            )
            .with_state(server.clone()),
    ));
    let h = RegistryHandle::with_sources(Some(&path), [SourceId::WORKLOAD_ENTRY]).unwrap();
    let _guard = rt.enter(); // kube's client spawns its buffer task
    let client =
        kube::Client::try_from(kube::Config::new(base.parse::<axum::http::Uri>().unwrap()))
            .unwrap();
    let cfg = WorkloadEntryConfig {
        namespace: "vps".into(),
        label_selector: Some("app=xrayr".into()),
        node_id_label: "vpslens.io/node-id".into(),
    };
    rt.spawn(workload_entry::run(h.clone(), cfg, client));
    let seen = || server.state.lock().unwrap().seen.clone();
    let release = || server.gate.add_permits(1);
    let text = || metrics_text(&h);

    // 1. Initial LIST (the host-name entry is skipped).
    release();
    wait("list-1", || names(&h) == ["de-01", "jp-01", "us-01"]);
    assert_eq!(owner(&h, "203.0.113.11").as_deref(), Some("jp-01"));
    assert_eq!(h.current().nodes()[1].node_id, Some(1));
    assert!(has(
        &text(),
        "vpslens_registry_source_skipped_entries{source=\"workload_entry\"} 1"
    ));

    // 2. WATCH from 1000: ADDED de-01 (shadowed by the node file), MODIFIED jp-01, a
    //    metadata-only MODIFIED, BOOKMARK 1300; the stream ends and is re-opened from 1300.
    release();
    wait("watch-1", || {
        owner(&h, "203.0.113.12").as_deref() == Some("jp-01")
    });
    wait("re-watch from the bookmark", || seen().len() == 3);
    assert_eq!(owner(&h, "203.0.113.11"), None);
    assert_eq!(
        owner(&h, "192.0.2.31"),
        None,
        "de-01 belongs to the node file"
    );
    assert_eq!(owner(&h, "192.0.2.99").as_deref(), Some("de-01"));
    assert!(has(
        &text(),
        "vpslens_registry_source_shadowed_nodes{source=\"workload_entry\"} 1"
    ));

    // 3. WATCH from 1300: DELETED us-01, then ERROR 410 Gone → a new LIST.
    release();
    wait("delete", || owner(&h, "198.51.100.21").is_none());
    wait("relist", || seen().len() == 4);
    assert_eq!(names(&h), ["de-01", "jp-01"]);

    // 4. That LIST fails (500): the last good list stays, the failure is reported.
    release();
    wait("failure", || {
        has(
            &text(),
            "vpslens_registry_source_reloads_total{source=\"workload_entry\",result=\"failure\"} 1",
        )
    });
    assert_eq!(names(&h), ["de-01", "jp-01"]);
    assert!(has(
        &text(),
        "vpslens_registry_source_last_reload_successful{source=\"workload_entry\"} 0"
    ));

    // 5. Retried LIST (after backoff) succeeds; the watch continues from its version.
    wait("retry", || seen().len() == 5);
    release();
    // de-01 is gone from the WorkloadEntries but still in the node file.
    wait("list-2", || names(&h) == ["de-01", "jp-01", "sg-01"]);
    wait("watch from 2000", || seen().len() == 6);
    release();
    assert_eq!(owner(&h, "2001:db8::41").as_deref(), Some("sg-01"));
    assert_eq!(owner(&h, "192.0.2.99").as_deref(), Some("de-01"));
    let text = text();
    for line in [
        "vpslens_registry_source_last_reload_successful{source=\"workload_entry\"} 1",
        "vpslens_registry_source_nodes{source=\"workload_entry\"} 2",
        "vpslens_registry_source_shadowed_nodes{source=\"workload_entry\"} 0",
        "vpslens_registry_source_reloads_total{source=\"workload_entry\",result=\"failure\"} 1",
        "vpslens_registry_last_reload_successful 1",
    ] {
        assert!(has(&text, line), "missing {line}:\n{text}");
    }
    let requests: Vec<(bool, String)> = seen().into_iter().map(|(w, rv, _)| (w, rv)).collect();
    let want = |w: bool, rv: &str| (w, rv.to_string());
    assert_eq!(
        requests,
        [
            want(false, ""),
            want(true, "1000"),
            want(true, "1300"),
            want(false, ""),
            want(false, ""),
            want(true, "2000"),
        ]
    );
    assert!(seen().iter().all(|(_, _, sel)| sel == "app=xrayr"));
    assert_eq!(
        h.reload_failure.load(Ordering::Relaxed),
        1,
        "410 is no failure"
    );
}

// ---------------------------------------------------------------- churn and fallback

fn line(ip: &str, node_id: u32) -> Line<'static> {
    Line::Text(
        format!(
            "{{\"downstream_remote_address\":\"{ip}:40000\",\"method\":\"GET\",\"path\":\"/api/v1/server/UniProxy/config?node_id={node_id}&node_type=vless&token=FAKE\",\"response_code\":200,\"response_flags\":\"-\",\"duration\":1,\"bytes_received\":0,\"bytes_sent\":10,\"start_time\":\"2026-11-23T07:47:54.218Z\",\"upstream_cluster\":\"outbound|80||xboard.airport-prod.svc.cluster.local\"}}"
        )
        .into_bytes()
        .into(),
    )
}

#[test]
fn node_leaving_a_source_loses_its_series_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("targets.json");
    let write = |names: &[(&str, &str)]| {
        let groups: Vec<String> = names
            .iter()
            .map(|(n, ip)| format!(r#"{{"targets": ["{ip}:9100"], "labels": {{"name": "{n}"}}}}"#))
            .collect();
        std::fs::write(&sd, format!("[{}]", groups.join(","))).unwrap();
    };
    let path = node_file(
        dir.path(),
        "nodes:\n  - name: f\n    addresses: [10.0.0.1]\n",
    );
    write(&[("a", "192.0.2.1"), ("b", "192.0.2.2"), ("f", "192.0.2.9")]);
    let rt = rt();
    let h = RegistryHandle::with_sources(Some(&path), [SourceId::file_sd(0)]).unwrap();
    let mut p = file_poller(&sd);
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    let shared = shared(h.clone(), false);
    let mut lp = LineProcessor::new(shared.clone());
    lp.process(&[
        line("192.0.2.1", 1),
        line("192.0.2.2", 2),
        line("10.0.0.1", 3),
    ]);
    let by_node = shared.lock().requests_by_node();
    assert_eq!(by_node.len(), 3, "{by_node:?}");

    // b leaves file_sd; f leaves file_sd but stays in the node file (still registered).
    write(&[("a", "192.0.2.1")]);
    rt.block_on(p.poll_and_apply(&h)).unwrap();
    assert_eq!(names(&h), ["a", "f"]);
    assert_eq!(shared.sweep_removed(1000, 600), 0);
    assert_eq!(shared.sweep_removed(1599, 600), 0);
    let text = metrics::render(&shared, Dialect::Prometheus);
    assert!(
        text.contains("vpslens_node_requests_total{node=\"b\""),
        "kept during grace"
    );
    assert_eq!(shared.sweep_removed(1600, 600), 1);
    let text = metrics::render(&shared, Dialect::Prometheus);
    assert!(!text.contains("node=\"b\""), "{text}");
    assert!(text.contains("vpslens_node_requests_total{node=\"a\""));
    assert!(text.contains("vpslens_node_requests_total{node=\"f\""));
}

#[test]
fn node_id_fallback_attributes_unregistered_addresses_only_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let path = node_file(
        dir.path(),
        "nodes:\n  - name: a\n    addresses: [10.0.0.1]\n    node_id: 7\n  - name: b\n    addresses: [10.0.0.2]\n    node_id: 8\n  - name: c\n    addresses: [10.0.0.3]\n    node_id: 8\n",
    );
    let lines = [
        line("192.0.2.50", 7),  // unregistered, id of a → a (fallback)
        line("192.0.2.51", 99), // unknown id → unregistered
        line("192.0.2.52", 8),  // id shared by b and c → ambiguous → unregistered
        line("10.0.0.1", 7),    // registered: normal attribution
    ];
    for enabled in [true, false] {
        let h = RegistryHandle::load(&path).unwrap();
        let shared = shared(h, enabled);
        LineProcessor::new(shared.clone()).process(&lines);
        let text = metrics::render(&shared, Dialect::Prometheus);
        let by_node = shared.lock().requests_by_node();
        let unregistered: u64 = shared.lock().unregistered().map(|(_, c)| *c).sum();
        if enabled {
            assert_eq!(by_node.get("a"), Some(&2));
            assert_eq!(unregistered, 2);
            assert!(
                has(&text, "vpslens_node_id_fallback_total{node=\"a\"} 1"),
                "{text}"
            );
        } else {
            assert_eq!(by_node.get("a"), Some(&1));
            assert_eq!(unregistered, 3);
            assert!(!text.contains("vpslens_node_id_fallback_total{"), "{text}");
        }
    }
}

#[test]
fn replay_reads_file_sd_sources_like_run() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("targets.json");
    std::fs::write(
        &sd,
        r#"[{"targets": ["203.0.113.11:9100"], "labels": {"name": "jp-01"}}]"#,
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("file_sd:\n  - path: {}\n", sd.display())).unwrap();
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/access-istio-json.log");
    let cli = vpslens::cli::Cli::parse_from([
        "vpslens",
        "replay",
        "--config",
        config.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    let vpslens::cli::Command::Replay(args) = cli.command else {
        panic!("not a replay");
    };
    let table = vpslens::commands::replay::replay(&args).unwrap();
    // jp-01 is the fixture node at 203.0.113.11 (fixtures/expected.json: 41 requests).
    let row = table.lines().find(|l| l.starts_with("jp-01")).unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("41"), "{table}");
    assert!(!table.contains("us-01"), "only file_sd nodes: {table}");
}

const RUN_V1: &str = r#"[
  {"targets": ["203.0.113.11:9100"], "labels": {"name": "jp-01", "node_id": "1"}},
  {"targets": ["192.0.2.200:9100"], "labels": {"name": "sg-01", "node_id": "5"}}
]"#;
const RUN_V2: &str = r#"[
  {"targets": ["203.0.113.12:9100"], "labels": {"name": "jp-02", "node_id": "2"}}
]"#;

/// The `vpslens run` binary with a node file and a file_sd URL: both sources are merged,
/// file_sd changes are followed without a restart, the `node_id` fallback attributes sg-01
/// (whose real address 192.0.2.50 is in no source), and the URL's token is never printed.
#[test]
fn run_binary_merges_node_file_and_file_sd_and_follows_changes() {
    use vpslens_testkit::process::free_port;
    use vpslens_testkit::vpslens::{metric_value, Vpslens};
    let rt = rt();
    let (state, base) = fleet_server(&rt, "/targets.json", RUN_V1, "\"r1\"");
    let dir = tempfile::tempdir().unwrap();
    let nodes = node_file(
        dir.path(),
        "nodes:\n  - name: us-01\n    addresses: [198.51.100.0/28]\n",
    );
    let log = dir.path().join("access.log");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/access-istio-json.log"),
        &log,
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {listen}\nregistry: {}\nsources: [{}]\nread_from: beginning\nattribute_unregistered_by_node_id: true\nfile_sd:\n  - url: {base}/targets.json?token=SECRET-IN-QUERY\n    refresh_seconds: 1\n",
            nodes.display(),
            log.display()
        ),
    )
    .unwrap();
    let mut p = Vpslens::run(
        Path::new(env!("CARGO_BIN_EXE_vpslens")),
        &["run", "--config", config.to_str().unwrap()],
    )
    .unwrap();
    let addr = listen.parse().unwrap();
    let body = p
        .wait_for_scrape(
            addr,
            // sg-01 sends 41 fixture requests from 192.0.2.50, which no source lists; 40 carry
            // node_id=5, one (`/admin/login`) carries none and stays unregistered.
            |b| metric_value(b, "vpslens_node_id_fallback_total{node=\"sg-01\"") == Some(40.0),
            Duration::from_secs(30),
        )
        .unwrap();
    for node in ["jp-01", "us-01", "sg-01"] {
        assert!(
            metric_value(
                &body,
                &format!("vpslens_node_last_seen_timestamp_seconds{{node=\"{node}\"")
            )
            .is_some(),
            "{node} attributed:\n{body}"
        );
    }
    assert_eq!(
        metric_value(&body, "vpslens_unregistered_requests_total{route=\"other\""),
        Some(1.0)
    );
    assert_eq!(metric_value(&body, "vpslens_registry_nodes"), Some(3.0));

    set_doc(&state, RUN_V2, "\"r2\"");
    let body = p
        .wait_for_scrape(
            addr,
            |b| {
                b.contains("vpslens_node_info{node=\"jp-02\"")
                    && !b.contains("vpslens_node_info{node=\"jp-01\"")
            },
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(body.contains("vpslens_node_info{node=\"us-01\"} 1"));
    let seen = state.lock().unwrap().seen.clone();
    assert!(seen.contains(&Some("\"r1\"".to_string())), "{seen:?}");
    p.stop_graceful().unwrap();
    assert!(!p.output().contains("SECRET-IN-QUERY"), "{}", p.output());
}
