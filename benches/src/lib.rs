//! Shared load shapes for the benches: Istio JSON lines as Envoy 1.40 writes them (keys in
//! alphabetical order, typed values, ~830 bytes) from a fleet of registered nodes plus a share
//! of unregistered clients.

use std::fmt::Write as _;

/// Node `i`'s address (100.64.0.0/10, carrier-grade NAT space: never a real peer).
pub fn node_ip(i: u32) -> String {
    format!("100.{}.{}.{}", 64 + (i >> 16) % 64, (i >> 8) & 255, i & 255)
}

/// Node `i` of a generated registry: name, address, Xboard `node_id`, `region` and `provider`
/// labels (every node also has `app: xrayr`).
fn registry_node(i: u32) -> (String, String, u32, String, String) {
    (
        format!("node-{i:05}"),
        node_ip(i),
        i + 1,
        format!("r{}", i % 7),
        format!("p{}", i % 5),
    )
}

/// A registry YAML with `nodes` nodes.
pub fn registry_yaml(nodes: u32) -> String {
    let mut s = String::from("nodes:\n");
    for (name, ip, id, region, provider) in (0..nodes).map(registry_node) {
        let _ = writeln!(
            s,
            "  - name: {name}\n    addresses: [\"{ip}\"]\n    node_id: {id}\n    labels: {{app: xrayr, region: {region}, provider: {provider}}}",
        );
    }
    s
}

/// The registry of [`registry_yaml`] as JSON (the form a script exporting a large fleet would
/// write; `vpslens` reads a `.json` registry with `serde_json`, several times faster than YAML).
pub fn registry_json(nodes: u32) -> String {
    let list: Vec<serde_json::Value> = (0..nodes)
        .map(registry_node)
        .map(|(name, ip, id, region, provider)| {
            serde_json::json!({
                "name": name,
                "addresses": [ip],
                "node_id": id,
                "labels": {"app": "xrayr", "region": region, "provider": provider},
            })
        })
        .collect();
    serde_json::json!({ "nodes": list }).to_string()
}

/// Line `seq` of a load with `nodes` registered nodes and `unregistered_pct`% other clients.
pub fn line(seq: u64, nodes: u32, unregistered_pct: u64) -> String {
    let h = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let unregistered = (h >> 7) % 100 < unregistered_pct;
    let node = u32::try_from((h >> 20) % u64::from(nodes.max(1))).unwrap_or(0);
    let ip = if unregistered {
        // One address per line (10.0.0.0/8 holds 16M): 20% of 1M lines = 200,000 distinct
        // unregistered clients, the worst case for the heavy-hitter summary.
        format!(
            "10.{}.{}.{}",
            (seq >> 16) & 255,
            (seq >> 8) & 255,
            seq & 255
        )
    } else {
        node_ip(node)
    };
    let (method, route) = match (h >> 3) % 4 {
        0 => ("GET", "config"),
        1 => ("GET", "user"),
        2 => ("POST", "push"),
        _ => ("POST", "alive"),
    };
    let code = match (h >> 11) % 50 {
        0 => 503,
        1 => 500,
        2..=6 => 304,
        _ => 200,
    };
    let ms = 3 + (h >> 13) % 200;
    let secs = seq / 1000;
    format!(
        concat!(
            r#"{{"authority":"panel.example.com","bytes_received":{br},"bytes_sent":{bs},"connection_termination_details":null,"#,
            r#""downstream_local_address":"10.0.0.5:8443","downstream_remote_address":"{ip}:{port}","duration":{ms},"#,
            r#""method":"{method}","path":"/api/v1/server/UniProxy/{route}?node_id={nid}&node_type=vless&token=FAKE-TOKEN-do-not-use","#,
            r#""protocol":"HTTP/1.1","request_id":"{rid:08x}-{rid2:04x}-4a11-9c3e-5b2f0d7e{rid3:04x}","requested_server_name":null,"#,
            r#""response_code":{code},"response_code_details":"via_upstream","response_flags":"-","route_name":"xboard-route","#,
            r#""start_time":"2026-11-23T05:{mm:02}:{ss:02}.{frac:03}Z","upstream_cluster":"outbound|80||xboard.airport-prod.svc.cluster.local","#,
            r#""upstream_host":"10.0.1.7:80","upstream_local_address":"10.0.0.5:{uport}","upstream_service_time":"{ust}","#,
            r#""upstream_transport_failure_reason":null,"user_agent":"go-resty/2.7.0 (https://github.com/go-resty/resty)","#,
            r#""x_forwarded_for":"{ip}"}}"#
        ),
        br = if method == "POST" { 532 } else { 0 },
        bs = 90 + (h >> 17) % 4000,
        ip = ip,
        port = 1024 + (h >> 23) % 60000,
        ms = ms,
        method = method,
        route = route,
        nid = node + 1,
        rid = h & 0xffff_ffff,
        rid2 = (h >> 32) & 0xffff,
        rid3 = (h >> 48) & 0xffff,
        code = code,
        mm = (secs / 60) % 60,
        ss = secs % 60,
        frac = seq % 1000,
        uport = 30000 + (h >> 29) % 30000,
        ust = ms.saturating_sub(1),
    )
}

/// The same request as [`line()`], in Istio's default TEXT format (`EnvoyTextLogFormat` in
/// istio/istio `pilot/pkg/model/telemetry_logging.go`).
pub fn text_line(seq: u64, nodes: u32, unregistered_pct: u64) -> String {
    let json = line(seq, nodes, unregistered_pct);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let s = |k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => "-".to_owned(),
    };
    format!(
        "[{}] \"{} {} {}\" {} {} {} - \"-\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} {} {} - {}",
        s("start_time"),
        s("method"),
        s("path"),
        s("protocol"),
        s("response_code"),
        s("response_flags"),
        s("response_code_details"),
        s("bytes_received"),
        s("bytes_sent"),
        s("duration"),
        s("upstream_service_time"),
        s("x_forwarded_for"),
        s("user_agent"),
        s("request_id"),
        s("authority"),
        s("upstream_host"),
        s("upstream_cluster"),
        s("upstream_local_address"),
        s("downstream_local_address"),
        s("downstream_remote_address"),
        s("route_name"),
    )
}

/// [`line()`] as the container runtime writes it to `/var/log/pods/.../0.log` (CRI framing, one
/// full `F` chunk per line).
pub fn cri_line(seq: u64, nodes: u32, unregistered_pct: u64) -> String {
    format!(
        "2026-11-23T05:{:02}:{:02}.{:09}Z stdout F {}",
        (seq / 60_000) % 60,
        (seq / 1000) % 60,
        (seq % 1000) * 1_000_000 + 123_456,
        line(seq, nodes, unregistered_pct)
    )
}
