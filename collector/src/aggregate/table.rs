//! Dense per-node storage for series and node state: the aggregate stage's memory layout.
//!
//! A node has a handful of fine-grained series (routes × methods × codes seen from it), so each
//! node keeps its own short lists, scanned linearly, instead of one fleet-wide hash map: no
//! hashing per line, no fleet-wide rehash (whose doubling used to set peak memory), and a
//! node's keys share a cache line.
//!
//! Request counts are kept per fine-grained series ([`SeriesKey`]); the three histograms only
//! per [`HistogramKey`] (node, code, flags, destination), because no exported family splits a
//! histogram by route or method (`vpslens_node_request_duration_seconds` is per node, Istio's
//! histograms per Istio edge and response labels). On the whole-process bench load (3,000
//! nodes, four Xboard routes) 32,893 series share ~18,000 histogram sets of 272 bytes (`u32`
//! bucket counts that spill before they overflow): 5 MB of counters instead of 17 MB, within
//! the last-level cache. Each fine series stores the index of its histogram set, so a request
//! still costs one key scan.

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{Histogram, NodeStats, SeriesKey};

/// The part of a [`SeriesKey`] below the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubKey {
    route: u16,
    code: u16,
    flags: u16,
    dest: u16,
    method: u8,
}

impl SubKey {
    fn of(k: &SeriesKey) -> SubKey {
        SubKey {
            route: k.route,
            code: k.code,
            flags: k.flags,
            dest: k.dest,
            method: k.method,
        }
    }

    fn with_node(self, node: u32) -> SeriesKey {
        SeriesKey {
            node,
            route: self.route,
            method: self.method,
            code: self.code,
            flags: self.flags,
            dest: self.dest,
        }
    }

    fn histogram(self) -> HistSubKey {
        HistSubKey {
            code: self.code,
            flags: self.flags,
            dest: self.dest,
        }
    }
}

/// Key of one histogram set: a [`SeriesKey`] without route and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HistogramKey {
    /// Node name id.
    pub node: u32,
    /// HTTP status (see [`SeriesKey::code`]).
    pub code: u16,
    /// `response_flags` id.
    pub flags: u16,
    /// Upstream cluster id.
    pub dest: u16,
}

/// The part of a [`HistogramKey`] below the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HistSubKey {
    code: u16,
    flags: u16,
    dest: u16,
}

impl HistSubKey {
    fn with_node(self, node: u32) -> HistogramKey {
        HistogramKey {
            node,
            code: self.code,
            flags: self.flags,
            dest: self.dest,
        }
    }
}

/// The three histograms of one [`HistogramKey`], over [`ENVOY_BUCKETS`](super::ENVOY_BUCKETS):
/// `%DURATION%` (ms; requests without a duration are not observed), `%BYTES_RECEIVED%` and
/// `%BYTES_SENT%` (bytes).
///
/// Laid out for the per-line update (272 bytes): the three sums share the first cache line
/// with the first bucket counts, so a request touches that line plus at most one bucket line
/// per histogram. Bucket counts are `u32`; a bucket about to pass `u32::MAX` (4.29 billion
/// observations) moves its count into `spilled`, allocated then, so counts never saturate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HistogramsRecord", into = "HistogramsRecord")]
#[repr(C)]
pub struct Histograms {
    /// Sums of [`DURATION`, `REQUEST_BYTES`, `RESPONSE_BYTES`] observations.
    sums: [u64; 3],
    /// Per-bucket counts, same order (see [`Histogram::counts`]), without `spilled`.
    counts: [[u32; 20]; 3],
    /// Counts moved out of `counts` before they would overflow (`None` until one did).
    spilled: Option<Box<[[u64; 20]; 3]>>,
}

const DURATION: usize = 0;
const REQUEST_BYTES: usize = 1;
const RESPONSE_BYTES: usize = 2;

impl Histograms {
    /// `%DURATION%` in milliseconds.
    pub fn duration_ms(&self) -> Histogram {
        self.histogram(DURATION)
    }

    /// `%BYTES_RECEIVED%`.
    pub fn request_bytes(&self) -> Histogram {
        self.histogram(REQUEST_BYTES)
    }

    /// `%BYTES_SENT%`.
    pub fn response_bytes(&self) -> Histogram {
        self.histogram(RESPONSE_BYTES)
    }

    fn histogram(&self, i: usize) -> Histogram {
        let mut counts = [0u64; 20];
        for (b, c) in counts.iter_mut().enumerate() {
            *c = self.count(i, b);
        }
        Histogram {
            counts,
            sum: self.sums[i],
        }
    }

    /// The count of bucket `b` of histogram `i`.
    fn count(&self, i: usize, b: usize) -> u64 {
        u64::from(self.counts[i][b]) + self.spilled.as_ref().map_or(0, |s| s[i][b])
    }

    /// Sets the count of bucket `b` of histogram `i`.
    fn set_count(&mut self, i: usize, b: usize, n: u64) {
        match u32::try_from(n) {
            Ok(n) if n < u32::MAX => {
                self.counts[i][b] = n;
                if let Some(s) = &mut self.spilled {
                    s[i][b] = 0;
                }
            }
            _ => {
                self.counts[i][b] = 0;
                self.spilled.get_or_insert_with(Box::default)[i][b] = n;
            }
        }
    }

    /// Adds one to bucket `b` of histogram `i`.
    #[inline]
    fn bump(&mut self, i: usize, b: usize) {
        let c = &mut self.counts[i][b];
        *c += 1;
        if *c == u32::MAX {
            self.spill(i, b);
        }
    }

    #[cold]
    #[inline(never)]
    fn spill(&mut self, i: usize, b: usize) {
        let n = std::mem::take(&mut self.counts[i][b]);
        self.spilled.get_or_insert_with(Box::default)[i][b] += u64::from(n);
    }

    /// Records one request: its duration (if any) and byte counts.
    #[inline]
    fn observe(&mut self, duration_ms: Option<u64>, bytes_received: u64, bytes_sent: u64) {
        if let Some(d) = duration_ms {
            self.bump(DURATION, Histogram::bucket(d));
            self.sums[DURATION] = self.sums[DURATION].saturating_add(d);
        }
        self.bump(REQUEST_BYTES, Histogram::bucket(bytes_received));
        self.sums[REQUEST_BYTES] = self.sums[REQUEST_BYTES].saturating_add(bytes_received);
        self.bump(RESPONSE_BYTES, Histogram::bucket(bytes_sent));
        self.sums[RESPONSE_BYTES] = self.sums[RESPONSE_BYTES].saturating_add(bytes_sent);
    }

    /// Histograms from their sums and non-zero buckets (as [`NonZeroBuckets`] writes them);
    /// `None` when a histogram or bucket index is out of range.
    fn from_buckets(sums: [u64; 3], buckets: &[(u8, u8, u64)]) -> Option<Histograms> {
        let mut h = Histograms {
            sums,
            ..Histograms::default()
        };
        for &(i, b, n) in buckets {
            let (i, b) = (usize::from(i), usize::from(b));
            if i >= 3 || b >= 20 {
                return None;
            }
            let total = h.count(i, b).saturating_add(n);
            h.set_count(i, b, total);
        }
        Some(h)
    }

    fn merge(&mut self, other: &Histograms) {
        for (a, b) in self.sums.iter_mut().zip(other.sums) {
            *a = a.saturating_add(b);
        }
        for i in 0..3 {
            for b in 0..20 {
                let n = self.count(i, b).saturating_add(other.count(i, b));
                self.set_count(i, b, n);
            }
        }
    }
}

/// The checkpoint form of [`Histograms`]: one [`Histogram`] (`counts`, `sum`) per field, the
/// shape series stats had before histograms were split from request counts.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct HistogramsRecord {
    duration_ms: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl From<HistogramsRecord> for Histograms {
    fn from(r: HistogramsRecord) -> Self {
        let mut h = Histograms {
            sums: [r.duration_ms.sum, r.request_bytes.sum, r.response_bytes.sum],
            ..Histograms::default()
        };
        for (i, src) in [r.duration_ms, r.request_bytes, r.response_bytes]
            .iter()
            .enumerate()
        {
            for (b, n) in src.counts.iter().enumerate() {
                h.set_count(i, b, *n);
            }
        }
        h
    }
}

impl From<Histograms> for HistogramsRecord {
    fn from(h: Histograms) -> Self {
        HistogramsRecord {
            duration_ms: h.duration_ms(),
            request_bytes: h.request_bytes(),
            response_bytes: h.response_bytes(),
        }
    }
}

/// One node's series: fine keys with their request counts and histogram-set index, and the
/// histogram sets.
#[derive(Debug, Clone, Default)]
struct NodeSeries {
    keys: Vec<SubKey>,
    /// `(requests, index into hists)`, parallel to `keys`.
    fine: Vec<(u64, u32)>,
    hist_keys: Vec<HistSubKey>,
    hists: Vec<Histograms>,
}

impl NodeSeries {
    /// `sub`'s request count and histogram set, both created on first use; `true` when the
    /// series is new.
    #[inline]
    fn series(&mut self, sub: SubKey) -> (&mut u64, &mut Histograms, bool) {
        let (pos, new) = match self.keys.iter().position(|k| *k == sub) {
            Some(p) => (p, false),
            None => {
                let hist = self.hist_index(sub.histogram());
                self.keys.push(sub);
                self.fine.push((0, u32::try_from(hist).unwrap_or(u32::MAX)));
                (self.keys.len() - 1, true)
            }
        };
        let (requests, hist) = &mut self.fine[pos];
        (requests, &mut self.hists[*hist as usize], new)
    }

    /// Index of the histogram set of `h`, created empty on first use.
    fn hist_index(&mut self, h: HistSubKey) -> usize {
        match self.hist_keys.iter().position(|k| *k == h) {
            Some(i) => i,
            None => {
                self.hist_keys.push(h);
                self.hists.push(Histograms::default());
                self.hist_keys.len() - 1
            }
        }
    }
}

/// Fine-grained series by node id (index = aggregator node id).
#[derive(Debug, Clone, Default)]
pub struct SeriesTable {
    nodes: Vec<NodeSeries>,
    len: usize,
}

impl SeriesTable {
    #[inline]
    fn node(&mut self, node: u32) -> &mut NodeSeries {
        let idx = node as usize;
        if idx >= self.nodes.len() {
            self.nodes.resize_with(idx + 1, NodeSeries::default);
        }
        &mut self.nodes[idx]
    }

    /// Counts one request of `key` and observes its duration (if any) and byte counts in the
    /// key's histogram set; both are created empty on first use. This is the per-line update.
    #[inline]
    pub fn record(
        &mut self,
        key: SeriesKey,
        duration_ms: Option<u64>,
        bytes_received: u64,
        bytes_sent: u64,
    ) {
        let (requests, h, new) = self.node(key.node).series(SubKey::of(&key));
        *requests += 1;
        h.observe(duration_ms, bytes_received, bytes_sent);
        self.len += usize::from(new);
    }

    /// Every fine series with its request count, by node id then first appearance.
    pub fn iter(&self) -> impl Iterator<Item = (SeriesKey, u64)> + '_ {
        self.nodes.iter().zip(0u32..).flat_map(|(n, id)| {
            n.keys
                .iter()
                .zip(&n.fine)
                .map(move |(k, f)| (k.with_node(id), f.0))
        })
    }

    /// Every histogram set, by node id then first appearance.
    pub fn histograms(&self) -> impl Iterator<Item = (HistogramKey, &Histograms)> {
        self.nodes.iter().zip(0u32..).flat_map(|(n, id)| {
            n.hist_keys
                .iter()
                .zip(&n.hists)
                .map(move |(k, h)| (k.with_node(id), h))
        })
    }

    /// Node ids that have at least one series.
    pub fn node_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes
            .iter()
            .zip(0u32..)
            .filter(|(n, _)| !n.keys.is_empty())
            .map(|(_, id)| id)
    }

    /// Forgets every series of `node`.
    pub fn remove_node(&mut self, node: u32) {
        if let Some(n) = self.nodes.get_mut(node as usize) {
            self.len -= n.keys.len();
            *n = NodeSeries::default();
        }
    }

    /// Number of fine-grained series.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of histogram sets.
    pub fn histograms_len(&self) -> usize {
        self.nodes.iter().map(|n| n.hists.len()).sum()
    }

    /// True when there is no series.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `requests` to `key` and merges `h` into its histogram set (checkpoint restore).
    fn add(&mut self, key: SeriesKey, requests: u64, h: Option<&Histograms>) {
        let (n, into, new) = self.node(key.node).series(SubKey::of(&key));
        *n += requests;
        if let Some(h) = h {
            into.merge(h);
        }
        self.len += usize::from(new);
    }
}

/// One request series in a checkpoint: `(node, route, method, code, flags, dest, requests)`
/// ([`SeriesKey`]'s fields in order, then the count).
type RequestRow = (u32, u16, u8, u16, u16, u16, u64);

/// One histogram set in a checkpoint: `(node, code, flags, dest, sums, buckets)` —
/// [`HistogramKey`]'s fields, the three sums (duration ms, request bytes, response bytes) and
/// the non-zero buckets as `(histogram 0..3, bucket 0..20, count)`.
type HistogramRow = (u32, u16, u16, u16, [u64; 3], Vec<(u8, u8, u64)>);

/// Checkpoint form of a [`SeriesTable`].
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum TableRecord {
    /// Current: rows of numbers in table order, non-zero buckets only — a fraction of
    /// `Split`'s named keys and dense buckets; a checkpoint is written every
    /// `checkpoint_interval_seconds` while lines flow (figures: `benches/RESULTS.md`,
    /// checkpoint-cost).
    Rows {
        request_rows: Vec<RequestRow>,
        histogram_rows: Vec<HistogramRow>,
    },
    /// Before rows: request counts per series, histogram sets per [`HistogramKey`] with named
    /// fields and all 20 buckets. Still read.
    Split {
        requests: Vec<(SeriesKey, u64)>,
        histograms: Vec<(HistogramKey, Histograms)>,
    },
    /// Before histograms were split from request counts: `[key, {requests, duration_ms,
    /// request_bytes, response_bytes}]` pairs. Still read (histograms merged per key).
    Pairs(Vec<(SeriesKey, LegacySeriesStats)>),
}

#[derive(Serialize, Deserialize)]
struct LegacySeriesStats {
    requests: u64,
    #[serde(flatten)]
    histograms: Histograms,
}

impl Serialize for SeriesTable {
    /// Writes the rows form (`request_rows`, `histogram_rows`) straight from the table (no
    /// intermediate rows: a checkpoint is written every `checkpoint_interval_seconds` while
    /// lines flow), in table order: by node id, then first appearance.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct RowsOut<'a> {
            request_rows: RequestRowsOut<'a>,
            histogram_rows: HistogramRowsOut<'a>,
        }
        struct RequestRowsOut<'a>(&'a SeriesTable);
        impl Serialize for RequestRowsOut<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(
                    self.0
                        .iter()
                        .map(|(k, n)| (k.node, k.route, k.method, k.code, k.flags, k.dest, n)),
                )
            }
        }
        struct HistogramRowsOut<'a>(&'a SeriesTable);
        impl Serialize for HistogramRowsOut<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(
                    self.0
                        .histograms()
                        .map(|(k, h)| (k.node, k.code, k.flags, k.dest, h.sums, NonZeroBuckets(h))),
                )
            }
        }
        RowsOut {
            request_rows: RequestRowsOut(self),
            histogram_rows: HistogramRowsOut(self),
        }
        .serialize(s)
    }
}

/// The non-zero bucket counts of a [`Histograms`] as `(histogram, bucket, count)`, in order
/// (the last element of a [`HistogramRow`]).
struct NonZeroBuckets<'a>(&'a Histograms);

impl Serialize for NonZeroBuckets<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = self.0;
        s.collect_seq((0u8..).zip(0..3).flat_map(|(i, row)| {
            (0u8..).zip(0..20).filter_map(move |(b, bucket)| {
                let n = h.count(row, bucket);
                (n > 0).then_some((i, b, n))
            })
        }))
    }
}

impl SeriesTable {
    /// Adds `h` to the histogram set `k` (checkpoint restore). Exports read histogram sets
    /// directly: one without a request series (not written by this version) is kept, not
    /// dropped.
    fn merge_histograms(&mut self, k: HistogramKey, h: &Histograms) {
        let n = self.node(k.node);
        let i = n.hist_index(HistSubKey {
            code: k.code,
            flags: k.flags,
            dest: k.dest,
        });
        n.hists[i].merge(h);
    }
}

impl<'de> Deserialize<'de> for SeriesTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut t = SeriesTable::default();
        match TableRecord::deserialize(d)? {
            TableRecord::Rows {
                request_rows,
                histogram_rows,
            } => {
                for (node, route, method, code, flags, dest, n) in request_rows {
                    let key = SeriesKey {
                        node,
                        route,
                        method,
                        code,
                        flags,
                        dest,
                    };
                    t.add(key, n, None);
                }
                for (node, code, flags, dest, sums, buckets) in histogram_rows {
                    let h = Histograms::from_buckets(sums, &buckets).ok_or_else(|| {
                        serde::de::Error::custom(format!(
                            "histogram bucket out of range in {buckets:?} (histogram < 3, bucket < 20)"
                        ))
                    })?;
                    t.merge_histograms(
                        HistogramKey {
                            node,
                            code,
                            flags,
                            dest,
                        },
                        &h,
                    );
                }
            }
            TableRecord::Split {
                requests,
                histograms,
            } => {
                for (k, n) in requests {
                    t.add(k, n, None);
                }
                for (k, h) in histograms {
                    t.merge_histograms(k, &h);
                }
            }
            TableRecord::Pairs(v) => {
                for (k, s) in v {
                    t.add(k, s.requests, Some(&s.histograms));
                }
            }
        }
        Ok(t)
    }
}

/// Per-node state by node id; `None` for nodes never attributed a request.
#[derive(Debug, Clone, Default)]
pub struct NodeTable {
    nodes: Vec<Option<NodeStats>>,
}

impl NodeTable {
    /// The state of `node`, created on first use.
    #[inline]
    pub fn entry(&mut self, node: u32) -> &mut NodeStats {
        let idx = node as usize;
        if idx >= self.nodes.len() {
            self.nodes.resize(idx + 1, None);
        }
        self.nodes[idx].get_or_insert_with(NodeStats::default)
    }

    /// The state of `node`, if it was ever attributed a request.
    pub fn get(&self, node: u32) -> Option<&NodeStats> {
        self.nodes.get(node as usize).and_then(Option::as_ref)
    }

    /// Every node with state, by id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &NodeStats)> {
        self.nodes
            .iter()
            .zip(0u32..)
            .filter_map(|(n, id)| n.as_ref().map(|n| (id, n)))
    }

    /// Forgets `node`'s state.
    pub fn remove(&mut self, node: u32) {
        if let Some(n) = self.nodes.get_mut(node as usize) {
            *n = None;
        }
    }
}

impl Serialize for NodeTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.iter().collect::<Vec<_>>().serialize(s)
    }
}

impl<'de> Deserialize<'de> for NodeTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<(u32, NodeStats)> = Vec::deserialize(d)?;
        let mut t = NodeTable::default();
        for (id, s) in v {
            *t.entry(id) = s;
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node: u32, code: u16) -> SeriesKey {
        SeriesKey {
            node,
            route: 1,
            method: 0,
            code,
            flags: 1,
            dest: 1,
        }
    }

    fn routed(node: u32, route: u16, code: u16) -> SeriesKey {
        SeriesKey {
            route,
            ..key(node, code)
        }
    }

    #[test]
    fn entries_are_found_again_counted_and_removed() {
        let mut t = SeriesTable::default();
        t.record(key(3, 200), Some(5), 0, 90);
        t.record(key(3, 200), Some(5), 0, 90);
        t.record(key(3, 503), None, 0, 0);
        t.record(key(0, 200), Some(1), 0, 0);
        assert_eq!(t.len(), 3);
        let got: Vec<(SeriesKey, u64)> = t.iter().collect();
        assert_eq!(got, [(key(0, 200), 1), (key(3, 200), 2), (key(3, 503), 1)]);
        assert_eq!(t.node_ids().collect::<Vec<_>>(), [0, 3]);
        t.remove_node(3);
        assert_eq!(t.len(), 1);
        assert_eq!(t.node_ids().collect::<Vec<_>>(), [0]);
        assert_eq!(t.histograms_len(), 1);
    }

    #[test]
    fn routes_and_methods_share_one_histogram_set_per_code_flags_and_destination() {
        let mut t = SeriesTable::default();
        t.record(routed(1, 0, 200), Some(3), 10, 100);
        t.record(routed(1, 2, 200), Some(30), 20, 200);
        t.record(
            SeriesKey {
                method: 1,
                ..routed(1, 2, 200)
            },
            None,
            0,
            5,
        );
        t.record(routed(1, 2, 503), Some(7), 0, 0);
        t.record(
            SeriesKey {
                dest: 2,
                ..routed(1, 0, 200)
            },
            Some(1),
            0,
            0,
        );
        assert_eq!(t.len(), 5, "five request series");
        let h: Vec<(HistogramKey, Histograms)> =
            t.histograms().map(|(k, h)| (k, h.clone())).collect();
        let keys: Vec<(u16, u16)> = h.iter().map(|(k, _)| (k.code, k.dest)).collect();
        assert_eq!(keys, [(200, 1), (503, 1), (200, 2)]);
        let ok = &h[0].1;
        assert_eq!(
            ok.duration_ms().count(),
            2,
            "the request without a duration is not observed"
        );
        assert_eq!(ok.duration_ms().sum, 33);
        assert_eq!(ok.request_bytes().count(), 3);
        assert_eq!(ok.request_bytes().sum, 30);
        assert_eq!(ok.response_bytes().sum, 305);
        assert_eq!(h[1].1.duration_ms().sum, 7);
        assert_eq!(h[2].1.duration_ms().count(), 1);
    }

    #[test]
    fn serialises_as_rows_and_back() {
        let mut t = SeriesTable::default();
        for _ in 0..7 {
            t.record(key(5, 200), Some(12), 1, 2);
        }
        t.record(key(1, 404), None, 0, 0);
        t.record(key(1, 404), Some(2), 0, 0);
        t.record(routed(1, 3, 404), Some(4), 0, 0);
        let json = serde_json::to_string(&t).unwrap();
        assert!(
            json.starts_with(r#"{"request_rows":[[1,1,0,404,1,1,2],[1,3,0,404"#),
            "{json}"
        );
        let back: SeriesTable = serde_json::from_str(&json).unwrap();
        let mut a: Vec<_> = t.iter().collect();
        let mut b: Vec<_> = back.iter().collect();
        a.sort_by_key(|x| x.0);
        b.sort_by_key(|x| x.0);
        assert_eq!(a, b);
        let mut a: Vec<_> = t.histograms().map(|(k, h)| (k, h.clone())).collect();
        let mut b: Vec<_> = back.histograms().map(|(k, h)| (k, h.clone())).collect();
        a.sort_by_key(|x| x.0);
        b.sort_by_key(|x| x.0);
        assert_eq!(a, b);
        assert_eq!(back.len(), 3);

        let mut n = NodeTable::default();
        n.entry(4).last_seen_ms = 9;
        let back: NodeTable = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back.get(4).map(|s| s.last_seen_ms), Some(9));
        assert!(back.get(2).is_none());
    }

    /// Checkpoints written before rows hold named keys and all 20 buckets per histogram: they
    /// still load, and spilled counts (past `u32::MAX`) survive the rows form.
    #[test]
    fn checkpoints_with_named_keys_still_load_and_rows_keep_spilled_counts() {
        let mut t = SeriesTable::default();
        t.record(routed(2, 1, 200), Some(3), 10, 100);
        t.record(routed(2, 1, 200), Some(300), 0, 0);
        t.record(key(4, 503), None, 0, 0);
        let requests: Vec<(SeriesKey, u64)> = t.iter().collect();
        let histograms: Vec<(HistogramKey, Histograms)> =
            t.histograms().map(|(k, h)| (k, h.clone())).collect();
        let named = serde_json::json!({ "requests": requests, "histograms": histograms });
        assert!(named["histograms"][0][0].get("node").is_some(), "{named}");
        let back: SeriesTable = serde_json::from_value(named).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), requests);
        let h: Vec<_> = back.histograms().map(|(k, h)| (k, h.clone())).collect();
        assert_eq!(h, histograms);

        let big = u64::from(u32::MAX) + 7;
        let mut t = SeriesTable::default();
        t.record(key(1, 200), Some(5), 0, 0);
        let mut spilled = Histograms::default();
        spilled.set_count(DURATION, 4, big);
        t.merge_histograms(
            HistogramKey {
                node: 1,
                code: 200,
                flags: 1,
                dest: 1,
            },
            &spilled,
        );
        let json = serde_json::to_string(&t).unwrap();
        let back: SeriesTable = serde_json::from_str(&json).unwrap();
        let (_, h) = back.histograms().next().unwrap();
        assert_eq!(h.duration_ms().counts[4], big, "{json}");
        assert_eq!(h.duration_ms().count(), big + 1);
    }

    /// A bucket index out of range is a checkpoint error, not a panic or a lost count.
    #[test]
    fn rows_with_a_bucket_out_of_range_are_an_error() {
        let json = r#"{"request_rows":[[1,0,0,200,1,1,2]],"histogram_rows":[[1,200,1,1,[0,0,0],[[0,20,1]]]]}"#;
        let e = serde_json::from_str::<SeriesTable>(json).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    /// Checkpoints written before histograms were split from request counts hold `[key,
    /// {requests, duration_ms, request_bytes, response_bytes}]` pairs: they still load, with
    /// the histograms of series differing only by route or method merged.
    #[test]
    fn checkpoints_with_per_series_histograms_still_load() {
        let hist = |count: u64, sum: u64| {
            let mut counts = [0u64; 20];
            counts[3] = count;
            serde_json::json!({ "counts": counts, "sum": sum })
        };
        let key_json = |route: u16| serde_json::json!({"node": 2, "route": route, "method": 0, "code": 200, "flags": 1, "dest": 1});
        let old = serde_json::json!([
            [key_json(0), {"requests": 3, "duration_ms": hist(3, 21), "request_bytes": hist(3, 0), "response_bytes": hist(3, 27)}],
            [key_json(1), {"requests": 2, "duration_ms": hist(2, 16), "request_bytes": hist(2, 0), "response_bytes": hist(2, 18)}],
        ]);
        let t: SeriesTable = serde_json::from_value(old).unwrap();
        let req: Vec<_> = t.iter().map(|(k, n)| (k.route, n)).collect();
        assert_eq!(req, [(0, 3), (1, 2)]);
        let h: Vec<_> = t.histograms().map(|(k, h)| (k, h.clone())).collect();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].1.duration_ms().sum, 37);
        assert_eq!(h[0].1.duration_ms().counts[3], 5);
        assert_eq!(h[0].1.response_bytes().sum, 45);
    }

    /// Bucket counts are `u32` in memory: one about to overflow moves into the spill table, so
    /// exported counts keep counting past 4.29 billion.
    #[test]
    fn bucket_counts_carry_past_u32_max_without_saturating() {
        let mut h = Histograms::default();
        let b = Histogram::bucket(3);
        h.set_count(DURATION, b, u64::from(u32::MAX) - 2);
        assert!(h.spilled.is_none());
        for _ in 0..5 {
            h.observe(Some(3), 0, 0);
        }
        assert!(h.spilled.is_some(), "the bucket spilled");
        assert_eq!(h.duration_ms().counts[b], u64::from(u32::MAX) + 3);
        assert_eq!(h.duration_ms().count(), u64::from(u32::MAX) + 3);
        assert_eq!(h.request_bytes().count(), 5);
        // Checkpoint form and merge keep the exact count.
        let json = serde_json::to_string(&h).unwrap();
        let back: Histograms = serde_json::from_str(&json).unwrap();
        assert_eq!(back.duration_ms(), h.duration_ms());
        let mut m = back.clone();
        m.merge(&h);
        assert_eq!(m.duration_ms().counts[b], 2 * (u64::from(u32::MAX) + 3));
        assert_eq!(m.duration_ms().sum, 30);
    }
}
