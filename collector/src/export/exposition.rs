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

/// One metric family: the row of the table in [`super::metrics::FAMILIES`] that both endpoints
/// render from. `labels` names the label set of its samples in order (`le` of histogram
/// buckets not included); a trailing `*` means "followed by labels from the registry or
/// configuration".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// Sample name (counters end in `_total`; histograms without `_bucket`/`_sum`/`_count`).
    pub name: &'static str,
    /// Metric type.
    pub kind: Kind,
    /// `# HELP` text.
    pub help: &'static str,
    /// Label names, in the order they are written.
    pub labels: &'static [&'static str],
}

/// Where a streaming [`Writer`] sends its text, a chunk at a time (see
/// [`Writer::streaming`]). An error ends the body: the writer drops everything after it.
pub trait Sink: Send {
    /// Takes one chunk of exposition text (whole lines).
    ///
    /// # Errors
    /// The body cannot go on (client gone, deadline passed); the render stops early.
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()>;

    /// Called once after the last chunk when no write failed (flush trailers, mark the end).
    ///
    /// # Errors
    /// As [`Sink::write`].
    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Accumulates exposition text, either into one `String` ([`Writer::new`]) or, a chunk of
/// whole lines at a time, into a [`Sink`] ([`Writer::streaming`]), so a body of any size needs
/// only `chunk_bytes` of buffer.
pub struct Writer {
    out: String,
    sink: Option<Box<dyn Sink>>,
    /// Flush to `sink` once `out` holds this many bytes.
    chunk_bytes: usize,
    /// The first sink error; everything after it is dropped.
    error: Option<std::io::Error>,
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
            sink: None,
            chunk_bytes: usize::MAX,
            error: None,
            dialect,
            le_bounds: Vec::new(),
            le_text: Vec::new(),
            bucket_head: String::new(),
        }
    }

    /// A writer that hands its text to `sink` in chunks of about `chunk_bytes` (whole lines),
    /// holding at most one chunk (plus one line) itself.
    pub fn streaming(dialect: Dialect, sink: Box<dyn Sink>, chunk_bytes: usize) -> Self {
        let mut w = Writer::with_capacity(dialect, chunk_bytes + 4096);
        w.sink = Some(sink);
        w.chunk_bytes = chunk_bytes;
        w
    }

    /// True once the sink failed: the rest of the body would be dropped, so renders stop.
    pub fn is_closed(&self) -> bool {
        self.error.is_some()
    }

    /// Hands the buffered text to the sink when a chunk is full (streaming writers only).
    fn spill(&mut self, force: bool) {
        if self.out.len() < self.chunk_bytes && !force {
            return;
        }
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        if self.error.is_none() && !self.out.is_empty() {
            if let Err(e) = sink.write(self.out.as_bytes()) {
                self.error = Some(e);
            }
        }
        self.out.clear();
    }

    /// Starts a family from its table row: `# HELP` and `# TYPE`.
    pub fn family(&mut self, f: &Family) {
        self.family_head(f.name, f.help, f.kind);
    }

    /// `# HELP` and `# TYPE`. For counters `name` must end in `_total`.
    fn family_head(&mut self, name: &str, help: &str, kind: Kind) {
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
        self.spill(false);
    }

    /// One sample with a float value.
    pub fn sample_f64(&mut self, name: &str, labels: &Labels<'_>, v: f64) {
        self.head(name, labels);
        self.out.push(' ');
        push_float(&mut self.out, v);
        self.out.push('\n');
        self.spill(false);
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
        self.histogram_buckets(name, labels, bounds, cumulative, .., sum);
    }

    /// Like [`Writer::histogram`] but writes only the buckets in `keep` (indexes into
    /// `cumulative`; `+Inf`, `_sum` and `_count` are always written). See
    /// [`super::istio::sparse_range`] for which buckets can go without changing any
    /// `histogram_quantile`.
    pub fn histogram_buckets(
        &mut self,
        name: &str,
        labels: &Labels<'_>,
        bounds: &[f64],
        cumulative: &[u64],
        keep: impl std::ops::RangeBounds<usize>,
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
        let last = cumulative.len().saturating_sub(1);
        for (i, c) in cumulative.iter().enumerate() {
            if i != last && !keep.contains(&i) {
                continue;
            }
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

    /// Finishes the body (`# EOF` for OpenMetrics). A streaming writer hands the rest to its
    /// sink and returns an empty string.
    pub fn finish(mut self) -> String {
        if self.dialect == Dialect::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        if self.sink.is_some() {
            self.spill(true);
            return String::new();
        }
        self.out
    }

    /// Finishes a streaming body: the rest to the sink, then the first sink error if any.
    ///
    /// # Errors
    /// The sink's first error (the body was cut short).
    pub fn finish_stream(mut self) -> std::io::Result<()> {
        if self.dialect == Dialect::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.spill(true);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match self.sink.as_mut() {
            Some(sink) => sink.finish(),
            None => Ok(()),
        }
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
            w.family(&Family {
                name: "x_total",
                kind: Kind::Counter,
                help: "help",
                labels: &["a"],
            });
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
        w.family(&Family {
            name: "h_seconds",
            kind: Kind::Histogram,
            help: "h",
            labels: &["n"],
        });
        w.histogram("h_seconds", &[("n", "a")], &[0.0005, 1.0], &[1, 2, 3], 1.5);
        let s = w.finish();
        assert!(s.contains("h_seconds_bucket{n=\"a\",le=\"0.0005\"} 1\n"));
        assert!(s.contains("h_seconds_bucket{n=\"a\",le=\"1\"} 2\n"));
        assert!(s.contains("h_seconds_bucket{n=\"a\",le=\"+Inf\"} 3\n"));
        assert!(s.contains("h_seconds_sum{n=\"a\"} 1.5\n"));
        assert!(s.contains("h_seconds_count{n=\"a\"} 3\n"));
    }
}
