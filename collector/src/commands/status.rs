//! `vpslens status`: the fleet table of a running daemon in a terminal, from its
//! `GET /api/nodes` ([`Fleet`]), for people and for cron or health checks.
//!
//! Exit code: 0 when no node is silent, 1 when at least one is ([`Status::Silent`], the same
//! rule as the page and the `VpsNodeSilent` alert), 2 when the daemon cannot be read (or a
//! usage error). Colour only when stdout is a terminal and `NO_COLOR` is unset.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::Duration;

use crate::cli::StatusArgs;
use crate::export::fleet::{Fleet, NodeView, Status};
use crate::export::page::age_text;
use crate::Error;

/// What `status` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No node is silent.
    Healthy,
    /// At least one node is silent.
    Silent,
}

/// Reads `/api/nodes` from `args.url` and prints the table to stdout.
///
/// # Errors
/// [`Error::Daemon`]: the daemon did not answer, answered non-200, or not with `/api/nodes`'s
/// JSON.
pub fn status(args: &StatusArgs) -> Result<Outcome, Error> {
    let fleet = fetch(&args.url, Duration::from_secs(args.timeout_seconds))?;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    print!("{}", table(&fleet, colour));
    Ok(
        if fleet
            .status_counts
            .get(&Status::Silent)
            .copied()
            .unwrap_or(0)
            > 0
        {
            Outcome::Silent
        } else {
            Outcome::Healthy
        },
    )
}

/// `GET <base>/api/nodes` as a [`Fleet`].
///
/// # Errors
/// [`Error::Daemon`].
pub fn fetch(base: &str, timeout: Duration) -> Result<Fleet, Error> {
    let url = format!("{}/api/nodes", base.trim_end_matches('/'));
    let daemon = |e: &dyn std::fmt::Display| Error::Daemon(format!("{url}: {e}"));
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| daemon(&e))?;
    let resp = client.get(&url).send().map_err(|e| daemon(&e))?;
    let code = resp.status();
    if !code.is_success() {
        return Err(daemon(&format!("HTTP {code}")));
    }
    let body = resp.bytes().map_err(|e| daemon(&e))?;
    serde_json::from_slice(&body).map_err(|e| daemon(&format!("not /api/nodes JSON: {e}")))
}

fn paint(s: &str, status: Status, colour: bool) -> String {
    if !colour {
        return s.to_owned();
    }
    let code = match status {
        Status::Silent | Status::Erroring => "31;1",
        Status::IdentityMismatch | Status::NeverSeen => "33",
        Status::Removed => "2",
        Status::Ok => "32",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

fn num(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

/// The table: one line per node (worst first, as served), then the counts per status.
pub fn table(f: &Fleet, colour: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<17} {:<20} {:>7} {:>10} {:>8} {:>6} {:>8} {:>8} {:>8}",
        "STATUS", "NODE", "NODE_ID", "LAST_SEEN", "REQ/S", "ERR%", "P50_MS", "P99_MS", "MISMATCH"
    );
    for n in &f.nodes {
        row(&mut s, n, colour);
    }
    let counts: Vec<String> = f
        .status_counts
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(st, c)| paint(&format!("{}={c}", st.as_str()), *st, colour))
        .collect();
    let _ = writeln!(
        s,
        "{} nodes: {}   (silent after {} poll intervals, default {} s; rates over {:.0} s; unregistered requests {})",
        f.nodes.len(),
        counts.join(" "),
        f.silent_after_poll_intervals,
        f.default_poll_interval_seconds,
        f.rate_window_seconds,
        f.unregistered_requests_total
    );
    s
}

fn row(s: &mut String, n: &NodeView, colour: bool) {
    // Pad before painting so escape codes do not shift the columns.
    let st = paint(&format!("{:<17}", n.status.as_str()), n.status, colour);
    let _ = writeln!(
        s,
        "{st} {:<20} {:>7} {:>10} {:>8} {:>6} {:>8} {:>8} {:>8}",
        n.name,
        n.node_id.map_or_else(|| "-".to_owned(), |i| i.to_string()),
        num(n.last_seen_age_seconds, age_text),
        num(n.requests_per_second, |r| format!("{r:.3}")),
        num(n.error_ratio, |r| format!("{:.1}", r * 100.0)),
        num(n.p50_seconds, |v| format!("{:.1}", v * 1000.0)),
        num(n.p99_seconds, |v| format!("{:.1}", v * 1000.0)),
        n.identity_mismatches_in_window,
    );
}
