//! The export stage's read-only window on the [`Aggregator`].
//!
//! Export never touches the aggregator's fields: it asks an [`AggregateView`] (a shared borrow,
//! taken while the scrape holds the aggregator lock) for ids, numbers and label tables, copies
//! what it needs into its own compact views, and renders after the lock is released. Every
//! method is a plain read; nothing here can change a counter.

use super::{Aggregator, HistogramKey, Histograms, NodeStats, SeriesKey, UnregisteredKey};
use vpslens_parsers::ParseError;

/// A read-only view of an [`Aggregator`] (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct AggregateView<'a> {
    agg: &'a Aggregator,
}

/// Label caps that overflowed, as `(label, values turned into other)`, for
/// `vpslens_label_overflow_total`.
pub type Overflow = [(&'static str, u64); 5];

impl Aggregator {
    /// The read-only view the export stage renders from.
    pub fn view(&self) -> AggregateView<'_> {
        AggregateView { agg: self }
    }
}

impl<'a> AggregateView<'a> {
    /// Node names by aggregator node id (ids are dense).
    pub fn node_names(&self) -> &'a [String] {
        &self.agg.node_names
    }

    /// Every fine series `(node, route, method, code, flags, destination)` with its request
    /// count, by node id then first appearance.
    pub fn series(&self) -> impl Iterator<Item = (SeriesKey, u64)> + 'a {
        self.agg.series.iter()
    }

    /// Every histogram set (per node, code, flags, destination), by node id then first
    /// appearance.
    pub fn histograms(&self) -> impl Iterator<Item = (HistogramKey, &'a Histograms)> + 'a {
        self.agg.series.histograms()
    }

    /// Per-node state of every node attributed a request, by id.
    pub fn node_stats(&self) -> impl Iterator<Item = (u32, &'a NodeStats)> + 'a {
        self.agg.nodes.iter()
    }

    /// Unregistered-client counters.
    pub fn unregistered(&self) -> impl Iterator<Item = (&'a UnregisteredKey, &'a u64)> + 'a {
        self.agg.unregistered.iter()
    }

    /// Route label values by id.
    pub fn routes(&self) -> &'a [String] {
        self.agg.routes.values()
    }

    /// `response_flags` values by id.
    pub fn flags(&self) -> &'a [String] {
        self.agg.flags.values()
    }

    /// The upstream cluster (`%UPSTREAM_CLUSTER_RAW%`) of a destination id (`other` if unknown).
    pub fn destination(&self, id: u16) -> &'a str {
        self.agg.destinations.get(id)
    }

    /// GeoIP country values by id.
    pub fn countries(&self) -> &'a [String] {
        self.agg.countries.values()
    }

    /// GeoIP ASN values by id.
    pub fn asns(&self) -> &'a [String] {
        self.agg.asns.values()
    }

    /// `vpslens_lines_total` by [`super::LineResult`].
    pub fn lines(&self) -> [u64; 4] {
        self.agg.lines
    }

    /// `vpslens_parse_errors_total` by [`ParseError::index`].
    pub fn parse_errors(&self) -> [u64; ParseError::REASONS.len()] {
        self.agg.parse_errors
    }

    /// `vpslens_client_address_errors_total` by [`super::CLIENT_REASONS`] index.
    pub fn client_errors(&self) -> [u64; 3] {
        self.agg.client_errors
    }

    /// Overflow counts of every capped label.
    pub fn overflow(&self) -> Overflow {
        let a = self.agg;
        [
            ("code", a.code_overflow),
            ("response_flags", a.flags.overflow),
            ("destination", a.destinations.overflow),
            ("country", a.countries.overflow),
            ("asn", a.asns.overflow),
        ]
    }

    /// Number of fine series.
    pub fn series_len(&self) -> usize {
        self.agg.series_len()
    }

    /// Number of histogram sets.
    pub fn histogram_sets_len(&self) -> usize {
        self.agg.histogram_sets_len()
    }
}
