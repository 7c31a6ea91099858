//! The fleet page, `GET /`: server-rendered HTML from a [`Fleet`] snapshot, its stylesheet
//! embedded in the binary (`assets/fleet.css`, inlined: no CDN, no second request, works
//! offline), reloaded by `<meta http-equiv="refresh">` every [`REFRESH_SECONDS`].
//!
//! Query string: `label=region=jp,app=xrayr` (every pair must match; `name=` matches the node
//! name), `status=silent` (one status of [`Status::as_str`]), `page=N` (from 1), `per_page=N`
//! (default [`PER_PAGE`], at most 5,000). Every string from outside the code — node names,
//! labels, addresses, the query itself — goes through [`esc`].

use std::fmt::Write as _;

use serde::Deserialize;

use super::fleet::{self, Fleet, NodeView, Status, UnregisteredView};

/// The stylesheet, compiled in.
pub const CSS: &str = include_str!("assets/fleet.css");

/// Seconds between reloads of the page.
pub const REFRESH_SECONDS: u32 = 15;

/// Rows per page by default.
pub const PER_PAGE: usize = 500;

/// The page's query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    /// `key=value[,key=value…]` label filter.
    pub label: Option<String>,
    /// One status name.
    pub status: Option<String>,
    /// Page number, from 1.
    pub page: Option<usize>,
    /// Rows per page.
    pub per_page: Option<usize>,
}

/// `s` with `& < > " '` replaced by entities: safe in element text and quoted attributes.
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if !s
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\''))
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Percent-encodes a query-string component (everything but RFC 3986 unreserved bytes).
fn url_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A duration in seconds as `42 s`, `12 min`, `3.5 h`, `2.1 d`.
pub fn age_text(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7_200.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.1} h", secs / 3_600.0)
    } else {
        format!("{:.1} d", secs / 86_400.0)
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "–".to_owned(), f)
}

/// The HTML page for a fleet snapshot and the busiest unregistered addresses.
pub fn render(f: &Fleet, unregistered: &[UnregisteredView], q: &PageQuery) -> String {
    let labels = q
        .label
        .as_deref()
        .map(fleet::parse_label_filter)
        .unwrap_or_default();
    let statuses: Vec<Status> = q
        .status
        .as_deref()
        .and_then(Status::parse)
        .into_iter()
        .collect();
    let per_page = q.per_page.unwrap_or(PER_PAGE).clamp(1, 5_000);
    let matching: Vec<&NodeView> = fleet::filter_nodes(&f.nodes, &labels, &statuses).collect();
    let pages = matching.len().div_ceil(per_page).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let mut h = String::with_capacity(4096 + matching.len().min(per_page) * 400);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>vpslens fleet</title><style>{CSS}</style></head><body>\n<header><h1>vpslens fleet</h1>\
         <span class=\"counts\" id=\"counts\">"
    );
    for (s, n) in &f.status_counts {
        let _ = write!(
            h,
            "<span class=\"st st-{0}\" data-count=\"{0}\">{0}: {1}</span>",
            s.as_str(),
            n
        );
    }
    let _ = write!(
        h,
        "</span><span class=\"mute\">silent after {} poll intervals (default {} s) · rates over {:.0} s · refresh {} s</span>",
        f.silent_after_poll_intervals,
        f.default_poll_interval_seconds,
        f.rate_window_seconds,
        REFRESH_SECONDS
    );
    let _ = write!(
        h,
        "<form method=\"get\" action=\"/\"><label>labels <input name=\"label\" \
         placeholder=\"region=jp,app=xrayr\" value=\"{}\"></label><label>status <select name=\"status\">\
         <option value=\"\">all</option>",
        esc(q.label.as_deref().unwrap_or(""))
    );
    for s in Status::ALL {
        let sel = if statuses.contains(&s) {
            " selected"
        } else {
            ""
        };
        let _ = write!(h, "<option{sel}>{}</option>", s.as_str());
    }
    h.push_str("</select></label><button>filter</button></form></header>\n");

    // Nodes.
    let _ = write!(
        h,
        "<h2>Nodes <span class=\"mute\">{} of {}</span></h2>\n<table id=\"nodes\"><thead><tr>\
         <th>status</th><th>node</th><th>node_id</th><th>last seen</th><th>req/s</th>\
         <th>error %</th><th>p50 ms</th><th>p99 ms</th><th>mismatches</th><th>requests</th>\
         <th>labels</th></tr></thead><tbody>\n",
        matching.len(),
        f.nodes.len()
    );
    for n in matching.iter().skip((page - 1) * per_page).take(per_page) {
        node_row(&mut h, n);
    }
    h.push_str("</tbody></table>\n");
    if pages > 1 {
        pager(&mut h, q, page, pages);
    }

    // Unregistered heavy hitters.
    let geo = unregistered
        .iter()
        .any(|u| u.country.is_some() || u.asn.is_some());
    let _ = write!(
        h,
        "<h2>Unregistered clients <span class=\"mute\">{} requests in all; busiest addresses \
         (estimates)</span></h2>\n<table id=\"unregistered\"><thead><tr><th>address</th>\
         <th>requests</th><th>last seen</th><th>claims node_id</th><th>claimed node</th>{}</tr>\
         </thead><tbody>\n",
        f.unregistered_requests_total,
        if geo {
            "<th>country</th><th>asn</th>"
        } else {
            ""
        }
    );
    let now = f.generated_at_seconds;
    for u in unregistered {
        let _ = write!(
            h,
            "<tr data-address=\"{0}\"><td>{0}</td><td class=\"n\">{1}</td><td class=\"n\">{2}</td>\
             <td class=\"n claimed\">{3}</td><td>{4}</td>",
            esc(&u.address),
            u.requests,
            age_text((now - u.last_seen_seconds).max(0.0)),
            u.claimed_node_id
                .map_or_else(|| "–".to_owned(), |i| i.to_string()),
            esc(u.claimed_node.as_deref().unwrap_or("")),
        );
        if geo {
            let _ = write!(
                h,
                "<td>{}</td><td>{}</td>",
                esc(u.country.as_deref().unwrap_or("")),
                esc(u.asn.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");

    health(&mut h, f);
    h.push_str("</body></html>\n");
    h
}

fn node_row(h: &mut String, n: &NodeView) {
    let st = n.status.as_str();
    let name = esc(&n.name);
    let _ = write!(
        h,
        "<tr data-node=\"{name}\" data-status=\"{st}\"><td class=\"st st-{st}\">{st}</td>\
         <td>{name}</td><td class=\"n\">{}</td><td class=\"n\" data-age=\"{}\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"labels\">",
        n.node_id.map_or_else(String::new, |i| i.to_string()),
        n.last_seen_age_seconds.map_or(-1.0, |a| a),
        opt(n.last_seen_age_seconds, age_text),
        opt(n.requests_per_second, |r| format!("{r:.3}")),
        opt(n.error_ratio, |r| format!("{:.1}", r * 100.0)),
        opt(n.p50_seconds, |s| format!("{:.1}", s * 1000.0)),
        opt(n.p99_seconds, |s| format!("{:.1}", s * 1000.0)),
        n.identity_mismatches_in_window,
        n.requests_total,
    );
    for (i, (k, v)) in n.labels.iter().enumerate() {
        if i > 0 {
            h.push(' ');
        }
        let _ = write!(h, "{}={}", esc(k), esc(v));
    }
    h.push_str("</td></tr>\n");
}

fn pager(h: &mut String, q: &PageQuery, page: usize, pages: usize) {
    let mut base = String::from("/?");
    if let Some(l) = &q.label {
        let _ = write!(base, "label={}&", url_component(l));
    }
    if let Some(s) = &q.status {
        let _ = write!(base, "status={}&", url_component(s));
    }
    if let Some(p) = q.per_page {
        let _ = write!(base, "per_page={p}&");
    }
    h.push_str("<p class=\"pager\">");
    for p in 1..=pages {
        if p == page {
            let _ = write!(h, "<span>{p}</span>");
        } else {
            let _ = write!(h, "<a href=\"{}page={p}\">{p}</a>", esc(&base));
        }
    }
    h.push_str("</p>\n");
}

fn health(h: &mut String, f: &Fleet) {
    let x = &f.health;
    h.push_str("<h2>vpslens</h2>\n<dl class=\"health\" id=\"health\">");
    let _ = write!(
        h,
        "<dt>lines/s</dt><dd>{}</dd><dt>ready</dt><dd>{}</dd><dt>lines</dt><dd>",
        opt(x.lines_per_second, |v| format!("{v:.1}")),
        if x.ready { "yes" } else { "no (first pass)" }
    );
    for (k, v) in &x.lines_total {
        let _ = write!(h, "{}={v} ", esc(k));
    }
    h.push_str("</dd><dt>parse errors</dt><dd id=\"parse-errors\">");
    if x.parse_errors.is_empty() {
        h.push_str("none");
    }
    for (k, v) in &x.parse_errors {
        let _ = write!(h, "{}={v} ", esc(k));
    }
    h.push_str("</dd><dt>read lag</dt><dd>");
    if x.read_lag_bytes.is_empty() {
        h.push_str("no files followed");
    }
    for (k, v) in &x.read_lag_bytes {
        let _ = write!(h, "{}: {v} bytes<br>", esc(k));
    }
    let _ = write!(
        h,
        "</dd><dt>checkpoints</dt><dd>{} written, {} failed</dd><dt>registry</dt><dd>{}</dd>",
        x.checkpoint_writes_total,
        x.checkpoint_failures_total,
        if x.registry_last_reload_successful {
            "all sources up to date"
        } else {
            "a source failed: its last good list is in force"
        }
    );
    for s in &x.registry_sources {
        let _ = write!(
            h,
            "<dt>source {}</dt><dd>{} nodes, {}, {} failures</dd>",
            esc(&s.source),
            s.nodes,
            if s.last_reload_successful {
                "last update ok"
            } else {
                "last update FAILED"
            },
            s.failures_total
        );
    }
    h.push_str("</dl>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(name: &str, status: Status, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: name.to_owned(),
            status,
            registered: status != Status::Removed,
            node_id: Some(1),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            addresses: vec![],
            last_seen_timestamp_seconds: Some(1.0),
            last_seen_age_seconds: Some(5.0),
            requests_per_second: Some(0.0167),
            error_ratio: Some(0.25),
            poll_interval_seconds: 60,
            silent_after_seconds: 180,
            identity_mismatches_in_window: 0,
            requests_total: 4,
            errors_total: 1,
            client_errors_total: 0,
            identity_mismatch_total: 0,
            p50_seconds: Some(0.0025),
            p99_seconds: Some(0.495),
        }
    }

    fn fleet(nodes: Vec<NodeView>) -> Fleet {
        Fleet {
            generated_at_seconds: 10.0,
            silent_after_poll_intervals: 3,
            default_poll_interval_seconds: 60,
            rate_window_seconds: 300.0,
            status_counts: Status::ALL.into_iter().map(|s| (s, 0)).collect(),
            nodes,
            unregistered_requests_total: 0,
            health: fleet::SelfHealth {
                lines_per_second: None,
                lines_total: BTreeMap::new(),
                parse_errors: BTreeMap::new(),
                read_lag_bytes: BTreeMap::new(),
                checkpoint_writes_total: 0,
                checkpoint_failures_total: 0,
                ready: true,
                registry_last_reload_successful: true,
                registry_sources: vec![],
            },
        }
    }

    #[test]
    fn every_outside_string_is_escaped() {
        let evil = "<script>alert('x')</script>&\"";
        let f = fleet(vec![node(evil, Status::Ok, &[(evil, evil)])]);
        let u = UnregisteredView {
            address: evil.to_owned(),
            requests: 1,
            requests_at_least: 1,
            last_seen_seconds: 1.0,
            claimed_node_id: Some(3),
            claimed_node: Some(evil.to_owned()),
            country: Some(evil.to_owned()),
            asn: Some(evil.to_owned()),
        };
        let q = PageQuery {
            label: Some(format!("a={evil}")),
            status: Some(evil.to_owned()),
            ..PageQuery::default()
        };
        let html = render(&f, &[u], &q);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("alert('x')"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
    }

    #[test]
    fn filters_and_pages() {
        let nodes: Vec<NodeView> = (0..25)
            .map(|i| {
                let region = if i % 5 == 0 { "jp" } else { "us" };
                node(&format!("n{i:02}"), Status::Ok, &[("region", region)])
            })
            .collect();
        let f = fleet(nodes);
        let q = PageQuery {
            label: Some("region=jp".into()),
            ..PageQuery::default()
        };
        let html = render(&f, &[], &q);
        assert_eq!(html.matches("<tr data-node=").count(), 5);
        let q = PageQuery {
            per_page: Some(10),
            page: Some(3),
            ..PageQuery::default()
        };
        let html = render(&f, &[], &q);
        assert_eq!(html.matches("<tr data-node=").count(), 5);
        assert!(html.contains("data-node=\"n20\""));
        assert!(html.contains("href=\"/?per_page=10&amp;page=1\""), "{html}");
    }
}
