//! Prometheus exposition text, in both dialects Prometheus scrapes.
//!
//! - Prometheus text format 0.0.4 (`text/plain; version=0.0.4`): a counter family is named with
//!   its `_total` suffix (what `promtool check metrics` expects).
//! - OpenMetrics 1.0 (`application/openmetrics-text; version=1.0.0`): the counter family drops
//!   `_total`, samples keep it, and the body ends with `# EOF`.
//!
//! Why not `prometheus-client`'s encoder: it only speaks OpenMetrics, whose counter family names
//! fail `promtool check metrics`, and vpslens renders up to ~10⁵ series per scrape from its own
//! integer counters; a writer over one `String` does that without per-series allocation.

use std::fmt::Write as _;

/// Output dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
}

impl Dialect {
    /// Picks the dialect from an HTTP `Accept` header.
    pub fn from_accept(accept: Option<&str>) -> Dialect {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Dialect::OpenMetrics,
            _ => Dialect::Prometheus,
        }
    }

    /// The `Content-Type` for this dialect.
    pub fn content_type(self) -> &'static str {
        match self {
            Dialect::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Dialect::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter; the name passed to [`Writer::family`] ends in `_total`.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// A label set: `(name, value)` pairs, names already valid.
pub type Labels<'a> = [(&'a str, &'a str)];

/// Accumulates exposition text.
#[derive(Debug)]
pub struct Writer {
    out: String,
    dialect: Dialect,
    /// Bucket bounds last rendered by [`Writer::histogram`] and their `le` texts (formatted
    /// once per scrape, not once per series).
    le_bounds: Vec<f64>,
    le_text: Vec<String>,
    /// Scratch: one histogram's `name_bucket{labels,` prefix.
    bucket_head: String,
}

impl Writer {
    /// An empty writer.
    pub fn new(dialect: Dialect) -> Self {
        Writer::with_capacity(dialect, 64 * 1024)
    }

    /// A writer whose buffer starts with room for `bytes` (a large body then grows without
    /// copying itself over and over).
    pub fn with_capacity(dialect: Dialect, bytes: usize) -> Self {
        Writer {
            out: String::with_capacity(bytes),
            dialect,
            le_bounds: Vec::new(),
            le_text: Vec::new(),
            bucket_head: String::new(),
        }
    }

    /// Starts a family: `# HELP` and `# TYPE`. For counters `name` must end in `_total`.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let fam = match (kind, self.dialect) {
            (Kind::Counter, Dialect::OpenMetrics) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let t = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {fam} {help}");
        let _ = writeln!(self.out, "# TYPE {fam} {t}");
    }

    /// One sample with an integer value.
    pub fn sample_u64(&mut self, name: &str, labels: &Labels<'_>, v: u64) {
        self.head(name, labels);
        self.out.push(' ');
        self.out.push_str(itoa::Buffer::new().format(v));
        self.out.push('\n');
    }

    /// One sample with a float value.
    pub fn sample_f64(&mut self, name: &str, labels: &Labels<'_>, v: f64) {
        self.head(name, labels);
        self.out.push(' ');
        push_float(&mut self.out, v);
        self.out.push('\n');
    }

    /// A whole histogram series: `cumulative` counts for each of `bounds` then `+Inf`, the
    /// `sum` (in the exported unit) and the count (the last cumulative value).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &Labels<'_>,
        bounds: &[f64],
        cumulative: &[u64],
        sum: f64,
    ) {
        if self.le_bounds != bounds {
            self.le_bounds = bounds.to_vec();
            self.le_text = bounds
                .iter()
                .map(|&b| {
                    let mut t = String::new();
                    push_float(&mut t, b);
                    t
                })
                .collect();
        }
        // `name_bucket{labels,` once; then per bucket only `le` and the count.
        let mut head = std::mem::take(&mut self.bucket_head);
        head.clear();
        head.push_str(name);
        head.push_str("_bucket{");
        push_label_pairs(&mut head, labels);
        let mut num = itoa::Buffer::new();
        for (i, c) in cumulative.iter().enumerate() {
            self.out.push_str(&head);
            self.out.push_str("le=\"");
            self.out
                .push_str(self.le_text.get(i).map_or("+Inf", String::as_str));
            self.out.push_str("\"} ");
            self.out.push_str(num.format(*c));
            self.out.push('\n');
        }
        self.bucket_head = head;
        let count = cumulative.last().copied().unwrap_or(0);
        self.sample_f64(&format!("{name}_sum"), labels, sum);
        self.sample_u64(&format!("{name}_count"), labels, count);
    }

    /// `name` or `name{k="v",…}`.
    fn head(&mut self, name: &str, labels: &Labels<'_>) {
        self.out.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        push_label_pairs(&mut self.out, labels);
        // The last pair's `,` closes the set.
        self.out.pop();
        self.out.push('}');
    }

    /// Finishes the body (`# EOF` for OpenMetrics).
    pub fn finish(mut self) -> String {
        if self.dialect == Dialect::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// `k="v",` for each label (values escaped), every pair followed by a comma.
fn push_label_pairs(out: &mut String, labels: &Labels<'_>) {
    for (k, v) in labels {
        out.push_str(k);
        out.push_str("=\"");
        escape_into(out, v);
        out.push_str("\",");
    }
}

/// Escapes a label value (`\`, `"`, newline) per the exposition formats.
pub fn escape_into(out: &mut String, v: &str) {
    // Label values rarely need escaping: copy them whole when they do not.
    if memchr::memchr3(b'\\', b'"', b'\n', v.as_bytes()).is_none() {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Go-compatible float text: shortest round-trip, `+Inf`, `-Inf`, `NaN`.
pub fn push_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_family_names_per_dialect() {
        for (d, fam) in [
            (Dialect::Prometheus, "# TYPE x_total counter"),
            (Dialect::OpenMetrics, "# TYPE x counter"),
        ] {
            let mut w = Writer::new(d);
            w.family("x_total", "help", Kind::Counter);
            w.sample_u64("x_total", &[("a", "q\"\\\n")], 3);
            let s = w.finish();
            assert!(s.contains(fam), "{s}");
            assert!(s.contains(r#"x_total{a="q\"\\\n"} 3"#), "{s}");
            assert_eq!(s.ends_with("# EOF\n"), d == Dialect::OpenMetrics);
        }
    }

    #[test]
    fn histogram_lines() {
        let mut w = Writer::new(Dialect::Prometheus);
        w.family("h_seconds", "h", Kind::Histogram);
        w.histogram("h_seconds", &[("n", "a")], &[0.0005, 1.0], &[1, 2, 3], 1.5);
        let s = w.finish();
        assert!(s.contains("h_seconds_bucket{n=\"a\",le=\"0.0005\"} 1\n"));
        assert!(s.contains("h_seconds_bucket{n=\"a\",le=\"1\"} 2\n"));
        assert!(s.contains("h_seconds_bucket{n=\"a\",le=\"+Inf\"} 3\n"));
        assert!(s.contains("h_seconds_sum{n=\"a\"} 1.5\n"));
        assert!(s.contains("h_seconds_count{n=\"a\"} 3\n"));
    }
}
