//! Aggregate stage: the hot path. Parsed, attributed events in; plain integer counters out.
//!
//! **Architecture Invariant:** every label value in here comes from a bounded set: registry node
//! names, configured route templates, a fixed method list, or an [`Interner`] with a cap whose
//! overflow becomes `other` (and is counted). Client IPs, user agents, raw paths and the `token`
//! never enter this module.
//!
//! One fine-grained table ([`SeriesKey`] → request count, [`HistogramKey`] → [`Histograms`])
//! feeds every exported family; the export stage sums it into views at scrape time. The whole [`Aggregator`] is serialisable so
//! checkpoints store counters and file offsets together (see `source::checkpoint`).

pub mod histogram;
pub mod table;
pub mod topk;
pub mod view;
pub mod window;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use vpslens_parsers::ParseError;

use crate::resolve::geo::GeoLabels;
pub use histogram::{Histogram, ENVOY_BUCKETS};
pub use table::{HistogramKey, Histograms, NodeTable, SeriesTable};
pub use topk::{HeavyHitter, TopK};
pub use view::AggregateView;

/// Label value used when a capped label overflows.
pub const OTHER: &str = "other";

/// HTTP methods kept as label values; anything else is `other`.
pub const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", OTHER,
];

/// Index into [`METHODS`] for a logged method.
pub fn method_index(m: Option<&str>) -> u8 {
    let m = m.unwrap_or("");
    METHODS[..9]
        .iter()
        .position(|x| *x == m)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(9)
}

/// Caps for labels fed by input (`limits:` in the config file; also stored in checkpoints).
/// Missing keys take the [`Default`] values, which are the one source of these defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Distinct HTTP status `code` values (count). Default 64.
    pub codes: usize,
    /// Distinct `response_flags` values (count). Default 32.
    pub response_flags: usize,
    /// Distinct upstream clusters, i.e. destinations (count). Default 16.
    pub destinations: usize,
    /// Unregistered addresses tracked for `/api/unregistered` (space-saving summary, count).
    /// Default 1000.
    pub unregistered_top: usize,
    /// Distinct GeoIP `country` values, `unknown` included (count). Default 300.
    pub countries: usize,
    /// Distinct GeoIP `asn` values, `unknown` included (count). Default 200.
    pub asns: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            codes: 64,
            response_flags: 32,
            destinations: 16,
            unregistered_top: 1000,
            countries: 300,
            asns: 200,
        }
    }
}

/// A string table with a cap: the first `cap` distinct values get ids, later ones map to the
/// `other` id (0 is always `other`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interner {
    values: Vec<String>,
    #[serde(skip)]
    index: FxHashMap<String, u16>,
    cap: usize,
    /// Values that mapped to `other` because the cap was reached.
    pub overflow: u64,
    /// Id of the last value found (0 = none yet).
    #[serde(skip)]
    last: u16,
}

impl Interner {
    /// An interner holding at most `cap` values besides `other`.
    pub fn new(cap: usize) -> Self {
        Interner {
            values: vec![OTHER.to_owned()],
            index: FxHashMap::default(),
            cap: cap.min(usize::from(u16::MAX) - 1),
            overflow: 0,
            last: 0,
        }
    }

    /// Rebuilds the lookup index after deserialisation and applies a (possibly new) cap.
    fn restore(&mut self, cap: usize) {
        self.cap = cap.min(usize::from(u16::MAX) - 1);
        self.index = self
            .values
            .iter()
            .enumerate()
            .skip(1)
            .filter_map(|(i, v)| u16::try_from(i).ok().map(|i| (v.clone(), i)))
            .collect();
    }

    /// The id of `s`, inserting it if below the cap.
    #[inline]
    pub fn intern(&mut self, s: &str) -> u16 {
        // Consecutive lines mostly repeat the value (one upstream cluster, `-` flags): compare
        // with the last hit before hashing.
        if self.last != 0
            && self
                .values
                .get(usize::from(self.last))
                .is_some_and(|v| v == s)
        {
            return self.last;
        }
        if let Some(&i) = self.index.get(s) {
            self.last = i;
            return i;
        }
        if self.values.len() > self.cap {
            self.overflow += 1;
            return 0;
        }
        let Ok(i) = u16::try_from(self.values.len()) else {
            self.overflow += 1;
            return 0;
        };
        self.values.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        self.last = i;
        i
    }

    /// All values, indexed by id (`other` first).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// The value of an id (`other` for unknown ids).
    pub fn get(&self, id: u16) -> &str {
        self.values
            .get(usize::from(id))
            .map_or(OTHER, String::as_str)
    }
}

/// Fine-grained key of one attributed series. All fields are small ids into bounded tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Node name id ([`Aggregator::node_names`]).
    pub node: u32,
    /// Route label id ([`Aggregator::routes`]).
    pub route: u16,
    /// Index into [`METHODS`].
    pub method: u8,
    /// HTTP status (0 = no response); [`CODE_OTHER`] when the code cap overflowed.
    pub code: u16,
    /// `response_flags` id ([`Aggregator::flags`]); id of `-` for none.
    pub flags: u16,
    /// Upstream cluster id ([`Aggregator::destinations`]); id of `-` for none.
    pub dest: u16,
}

/// `code` value used when the distinct-code cap overflowed (rendered as `other`).
pub const CODE_OTHER: u16 = u16::MAX;

/// Per-node state besides series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Latest `start_time` seen, Unix milliseconds (0 = never).
    pub last_seen_ms: i64,
    /// Requests whose `node_id` differs from the registry's `node_id` for this node.
    pub identity_mismatch: u64,
    /// Requests from an unregistered address attributed to this node by their `node_id`.
    #[serde(default)]
    pub node_id_fallback: u64,
}

/// Key of unregistered-client counters (no per-IP label, by design).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UnregisteredKey {
    /// Route label id.
    pub route: u16,
    /// HTTP status, or [`CODE_OTHER`].
    pub code: u16,
    /// GeoIP country id ([`Aggregator::countries`]); [`GEO_UNKNOWN`] without a database.
    #[serde(default = "geo_unknown")]
    pub country: u16,
    /// GeoIP ASN id ([`Aggregator::asns`]); [`GEO_UNKNOWN`] without a database.
    #[serde(default = "geo_unknown")]
    pub asn: u16,
}

/// Id of `unknown` in the geo interners (0 is `other`).
pub const GEO_UNKNOWN: u16 = 1;

fn geo_unknown() -> u16 {
    GEO_UNKNOWN
}

/// A capped interner whose id [`GEO_UNKNOWN`] is `unknown`.
fn geo_interner(cap: usize) -> Interner {
    let mut i = Interner::new(cap.max(1));
    i.intern(crate::resolve::geo::UNKNOWN);
    i
}

fn default_geo_interner() -> Interner {
    geo_interner(200)
}

/// Outcome of one line, for `vpslens_lines_total{result}` (the label value is the variant's
/// `snake_case` name, [`LINE_RESULTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum LineResult {
    /// Parsed and a client address found (registered or not).
    Ok = 0,
    /// Parse error (see `vpslens_parse_errors_total`).
    Malformed = 1,
    /// Parsed, but no usable client address.
    NoClient = 2,
    /// Longer than `max_line_bytes`; skipped.
    TooLong = 3,
}

/// Label values of [`LineResult`], by discriminant.
pub const LINE_RESULTS: &[&str] = <LineResult as strum::VariantNames>::VARIANTS;

/// Client-address failure reasons, by `ClientAddressError::index`.
pub const CLIENT_REASONS: &[&str] = vpslens_parsers::client::ClientAddressError::REASONS;

/// One attributed request, produced by the parse+resolve stages. Strings borrow from the
/// current read buffer (owned only when JSON escapes forced a copy) and are only interned
/// (bounded) here.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// Node name id, or `None` for an unregistered client.
    pub node: Option<u32>,
    /// Route label id.
    pub route: u16,
    /// Index into [`METHODS`].
    pub method: u8,
    /// HTTP status (0 = none).
    pub code: u16,
    /// `%RESPONSE_FLAGS%` (`None` = `-`).
    pub flags: Option<Cow<'a, str>>,
    /// `%UPSTREAM_CLUSTER_RAW%`.
    pub upstream_cluster: Option<Cow<'a, str>>,
    /// `%DURATION%` ms.
    pub duration_ms: Option<u64>,
    /// `%BYTES_RECEIVED%`.
    pub bytes_received: u64,
    /// `%BYTES_SENT%`.
    pub bytes_sent: u64,
    /// `%START_TIME%`, Unix ms.
    pub start_time_ms: i64,
    /// True when the request's `node_id` contradicts the registry's id for this node.
    pub identity_mismatch: bool,
    /// True when the node was found by the request's `node_id`, not by its address
    /// (`attribute_unregistered_by_node_id`).
    pub node_id_fallback: bool,
    /// The client address, set only for unregistered clients (heavy-hitter tracking).
    pub client: Option<IpAddr>,
    /// The request's `node_id` query parameter, kept for unregistered clients only (the
    /// heavy hitters remember the latest one per address; never a label).
    pub claimed_node_id: Option<u32>,
    /// GeoIP country/ASN of an unregistered client (default: unknown).
    pub geo: GeoLabels,
}

/// All counters. Guarded by one mutex in the daemon; locked once per read batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aggregator {
    /// Node names ever attributed (ids are stable for the process and across checkpoints).
    pub node_names: Vec<String>,
    #[serde(skip)]
    node_ids: FxHashMap<String, u32>,
    /// Route labels.
    pub routes: Interner,
    /// `response_flags` values.
    pub flags: Interner,
    /// Upstream clusters.
    pub destinations: Interner,
    /// GeoIP `country` values of unregistered clients.
    #[serde(default = "default_geo_interner")]
    pub countries: Interner,
    /// GeoIP `asn` values of unregistered clients.
    #[serde(default = "default_geo_interner")]
    pub asns: Interner,
    /// Distinct codes seen (for the code cap).
    codes: Vec<u16>,
    limits: Limits,
    /// Codes that overflowed the cap.
    pub code_overflow: u64,
    series: SeriesTable,
    nodes: NodeTable,
    #[serde(with = "as_pairs")]
    unregistered: FxHashMap<UnregisteredKey, u64>,
    /// Busiest unregistered addresses (never labels).
    pub unregistered_top: TopK,
    /// `vpslens_lines_total` by [`LineResult`].
    pub lines: [u64; LINE_RESULTS.len()],
    /// `vpslens_parse_errors_total` by [`ParseError::index`].
    pub parse_errors: [u64; ParseError::REASONS.len()],
    /// `vpslens_client_address_errors_total` by [`CLIENT_REASONS`] index.
    pub client_errors: [u64; CLIENT_REASONS.len()],
    /// Node name id → Unix seconds when it left the registry (series removed after a grace).
    #[serde(with = "as_pairs")]
    removed_at: FxHashMap<u32, u64>,
}

impl Aggregator {
    /// An empty aggregator with label caps.
    pub fn new(limits: Limits) -> Self {
        Aggregator {
            node_names: Vec::new(),
            node_ids: FxHashMap::default(),
            routes: Interner::new(4096),
            flags: Interner::new(limits.response_flags),
            destinations: Interner::new(limits.destinations),
            countries: geo_interner(limits.countries),
            asns: geo_interner(limits.asns),
            codes: Vec::new(),
            limits,
            code_overflow: 0,
            series: SeriesTable::default(),
            nodes: NodeTable::default(),
            unregistered: FxHashMap::default(),
            unregistered_top: TopK::new(limits.unregistered_top),
            lines: [0; 4],
            parse_errors: [0; ParseError::REASONS.len()],
            client_errors: [0; 3],
            removed_at: FxHashMap::default(),
        }
    }

    /// Rebuilds indexes after deserialisation (from a checkpoint) and applies current limits.
    pub fn restore(mut self, limits: Limits) -> Self {
        self.node_ids = self
            .node_names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| u32::try_from(i).ok().map(|i| (n.clone(), i)))
            .collect();
        self.routes.restore(4096);
        self.flags.restore(limits.response_flags);
        self.destinations.restore(limits.destinations);
        self.countries.restore(limits.countries.max(1));
        self.asns.restore(limits.asns.max(1));
        self.unregistered_top.restore();
        self.limits = limits;
        self
    }

    /// Stable id of a node name.
    pub fn node_id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.node_ids.get(name) {
            return i;
        }
        let i = u32::try_from(self.node_names.len()).unwrap_or(u32::MAX);
        self.node_names.push(name.to_owned());
        self.node_ids.insert(name.to_owned(), i);
        i
    }

    /// The id of a node name, if it was ever attributed (unlike [`Aggregator::node_id`], never
    /// adds one).
    pub fn find_node(&self, name: &str) -> Option<u32> {
        self.node_ids.get(name).copied()
    }

    /// A node name by id.
    pub fn node_name(&self, id: u32) -> &str {
        self.node_names
            .get(id as usize)
            .map_or(OTHER, String::as_str)
    }

    fn code(&mut self, code: u16) -> u16 {
        if self.codes.contains(&code) {
            return code;
        }
        if self.codes.len() >= self.limits.codes {
            self.code_overflow += 1;
            return CODE_OTHER;
        }
        self.codes.push(code);
        code
    }

    /// Counts a line outcome.
    #[inline]
    pub fn count_line(&mut self, r: LineResult) {
        self.lines[r as usize] += 1;
    }

    /// Counts a parse error (and the `malformed` line).
    #[inline]
    pub fn count_parse_error(&mut self, e: &ParseError) {
        self.parse_errors[e.index()] += 1;
        self.count_line(LineResult::Malformed);
    }

    /// Counts a client-address failure (and the `no_client` line).
    #[inline]
    pub fn count_client_error(&mut self, reason_index: usize) {
        if let Some(c) = self.client_errors.get_mut(reason_index) {
            *c += 1;
        }
        self.count_line(LineResult::NoClient);
    }

    /// Records one attributed request. This is the per-line hot path.
    #[inline]
    pub fn record(&mut self, ev: &Event<'_>) {
        self.count_line(LineResult::Ok);
        let code = self.code(ev.code);
        let Some(node) = ev.node else {
            let country = match ev.geo.country {
                Some(_) => self.countries.intern(ev.geo.country_label()),
                None => GEO_UNKNOWN,
            };
            let asn = match ev.geo.asn {
                Some(_) => self.asns.intern(ev.geo.asn_label().as_str()),
                None => GEO_UNKNOWN,
            };
            *self
                .unregistered
                .entry(UnregisteredKey {
                    route: ev.route,
                    code,
                    country,
                    asn,
                })
                .or_insert(0) += 1;
            if let Some(ip) = ev.client {
                self.unregistered_top
                    .observe_claim(ip, ev.start_time_ms, ev.claimed_node_id);
            }
            return;
        };
        let key = SeriesKey {
            node,
            route: ev.route,
            method: ev.method,
            code,
            flags: self.flags.intern(ev.flags.as_deref().unwrap_or("-")),
            dest: self
                .destinations
                .intern(ev.upstream_cluster.as_deref().unwrap_or("-")),
        };
        self.series
            .record(key, ev.duration_ms, ev.bytes_received, ev.bytes_sent);
        let n = self.nodes.entry(node);
        n.last_seen_ms = n.last_seen_ms.max(ev.start_time_ms);
        if ev.identity_mismatch {
            n.identity_mismatch += 1;
        }
        if ev.node_id_fallback {
            n.node_id_fallback += 1;
        }
    }

    /// Every series, by node id then first appearance (deterministic for a given input order).
    pub fn series(&self) -> impl Iterator<Item = (SeriesKey, u64)> + '_ {
        self.series.iter()
    }

    /// Every histogram set (duration, request and response bytes per node, code, flags and
    /// destination), by node id then first appearance.
    pub fn histograms(&self) -> impl Iterator<Item = (HistogramKey, &Histograms)> {
        self.series.histograms()
    }

    /// Per-node state.
    pub fn node_stats(&self, node: u32) -> Option<&NodeStats> {
        self.nodes.get(node)
    }

    /// All per-node states.
    pub fn all_node_stats(&self) -> impl Iterator<Item = (u32, &NodeStats)> {
        self.nodes.iter()
    }

    /// Unregistered counters.
    pub fn unregistered(&self) -> impl Iterator<Item = (&UnregisteredKey, &u64)> {
        self.unregistered.iter()
    }

    /// Renders a code id as a label value (`other` for [`CODE_OTHER`]), formatting digits in
    /// `buf` (no allocation: exports call it once per sample).
    pub fn code_label(code: u16, buf: &mut itoa::Buffer) -> &str {
        if code == CODE_OTHER {
            OTHER
        } else {
            buf.format(code)
        }
    }

    /// Marks nodes that are no longer registered (`registered` = names in the registry) and
    /// forgets the series of nodes removed more than `grace_seconds` ago. Returns how many nodes
    /// were dropped.
    pub fn sweep_removed(
        &mut self,
        registered: &dyn Fn(&str) -> bool,
        now_seconds: u64,
        grace_seconds: u64,
    ) -> usize {
        let mut seen: Vec<u32> = self.nodes.iter().map(|(id, _)| id).collect();
        seen.extend(self.series.node_ids());
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if registered(self.node_name(id)) {
                self.removed_at.remove(&id);
            } else {
                self.removed_at.entry(id).or_insert(now_seconds);
            }
        }
        let expired: Vec<u32> = self
            .removed_at
            .iter()
            .filter(|(_, t)| now_seconds.saturating_sub(**t) >= grace_seconds)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.series.remove_node(*id);
            self.nodes.remove(*id);
            self.removed_at.remove(id);
        }
        expired.len()
    }

    /// Number of fine-grained series (for the self-metric and benches).
    pub fn series_len(&self) -> usize {
        self.series.len()
    }

    /// Number of histogram sets (for the self-metric).
    pub fn histogram_sets_len(&self) -> usize {
        self.series.histograms_len()
    }

    /// Total requests per node name (for summaries and tests).
    pub fn requests_by_node(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (k, n) in self.series.iter() {
            *out.entry(self.node_name(k.node).to_owned()).or_insert(0) += n;
        }
        out
    }
}

/// Serialises a hash map as a list of pairs (keys are structs; JSON/postcard friendly).
mod as_pairs {
    use std::hash::Hash;

    use rustc_hash::FxHashMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K, V, S>(m: &FxHashMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        K: Serialize + Ord,
        V: Serialize,
        S: Serializer,
    {
        let mut v: Vec<(&K, &V)> = m.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.serialize(s)
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<FxHashMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let v: Vec<(K, V)> = Vec::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(node: Option<u32>, code: u16) -> Event<'static> {
        Event {
            node,
            route: 0,
            method: 0,
            code,
            flags: None,
            upstream_cluster: Some("outbound|80||xboard.airport-prod.svc.cluster.local".into()),
            duration_ms: Some(12),
            bytes_received: 10,
            bytes_sent: 100,
            start_time_ms: 1_000,
            identity_mismatch: false,
            node_id_fallback: false,
            client: None,
            claimed_node_id: None,
            geo: GeoLabels::default(),
        }
    }

    #[test]
    fn label_values_of_line_results_and_client_reasons() {
        // Interfaces (dashboards, alerts): a renamed variant must show up here.
        assert_eq!(LINE_RESULTS, ["ok", "malformed", "no_client", "too_long"]);
        assert_eq!(LINE_RESULTS[LineResult::TooLong as usize], "too_long");
        assert_eq!(
            <&str>::from(LineResult::NoClient),
            LINE_RESULTS[LineResult::NoClient as usize]
        );
        assert_eq!(
            CLIENT_REASONS,
            ["client_missing", "client_invalid", "xff_too_few_hops"]
        );
    }

    #[test]
    fn caps_turn_overflow_into_other() {
        let mut a = Aggregator::new(Limits {
            codes: 2,
            response_flags: 1,
            destinations: 1,
            unregistered_top: 10,
            ..Limits::default()
        });
        let n = a.node_id("jp-01");
        for code in [200, 503, 404, 418] {
            a.record(&ev(Some(n), code));
        }
        let mut codes: Vec<u16> = a.series().map(|(k, _)| k.code).collect();
        codes.sort_unstable();
        assert_eq!(codes, vec![200, 503, CODE_OTHER]);
        assert_eq!(a.code_overflow, 2);
        let mut e = ev(Some(n), 200);
        e.flags = Some("UF".into());
        a.record(&e);
        e.flags = Some("DC".into());
        a.record(&e);
        // The cap of 1 was taken by "-" (no flags): both UF and DC overflowed.
        assert_eq!(a.flags.overflow, 2);
        assert_eq!(a.flags.values(), ["other", "-"]);
    }

    #[test]
    fn interner_last_value_cache_returns_each_values_own_id() {
        let mut i = Interner::new(2);
        let a = i.intern("a");
        let b = i.intern("b");
        assert_ne!(a, b);
        for (s, want) in [("b", b), ("b", b), ("a", a), ("a", a), ("b", b)] {
            assert_eq!(i.intern(s), want, "{s}");
        }
        // Over the cap: `other` (0), counted every time, also right after a cached hit.
        assert_eq!(i.intern("c"), 0);
        assert_eq!(i.intern("c"), 0);
        assert_eq!(i.overflow, 2);
        assert_eq!(i.intern("a"), a);
    }

    #[test]
    fn checkpoint_roundtrip_keeps_counts_and_ids() {
        let mut a = Aggregator::new(Limits::default());
        let n = a.node_id("jp-01");
        a.record(&ev(Some(n), 200));
        a.record(&ev(None, 404));
        let bytes = serde_json::to_vec(&a).unwrap();
        let b: Aggregator = serde_json::from_slice(&bytes).unwrap();
        let mut b = b.restore(Limits::default());
        assert_eq!(b.node_id("jp-01"), n);
        assert_eq!(b.requests_by_node(), a.requests_by_node());
        assert_eq!(b.unregistered().count(), 1);
        assert_eq!(b.lines, a.lines);
        assert_eq!(
            b.destinations
                .intern("outbound|80||xboard.airport-prod.svc.cluster.local"),
            1
        );
    }

    #[test]
    fn geo_labels_are_capped_and_old_checkpoints_read_as_unknown() {
        let mut a = Aggregator::new(Limits {
            countries: 2,
            asns: 3,
            ..Limits::default()
        });
        for (i, cc) in [*b"NL", *b"JP", *b"DE"].iter().cycle().take(9).enumerate() {
            let mut e = ev(None, 200);
            e.geo = GeoLabels {
                country: Some(*cc),
                asn: Some(64_500 + u32::try_from(i).unwrap()),
            };
            a.record(&e);
        }
        a.record(&ev(None, 200));
        // Caps include `unknown`: 2 → unknown + NL; 3 → unknown + two ASNs.
        assert_eq!(a.countries.values(), ["other", "unknown", "NL"]);
        assert_eq!(a.asns.values(), ["other", "unknown", "AS64500", "AS64501"]);
        assert_eq!((a.countries.overflow, a.asns.overflow), (6, 7));
        let total: u64 = a.unregistered().map(|(_, n)| n).sum();
        assert_eq!(total, 10);
        let unknown = a
            .unregistered()
            .filter(|(k, _)| k.country == GEO_UNKNOWN && k.asn == GEO_UNKNOWN)
            .map(|(_, n)| *n)
            .sum::<u64>();
        assert_eq!(unknown, 1);

        // A checkpoint written before GeoIP existed restores with `unknown` geo labels.
        let mut old = Aggregator::new(Limits::default());
        old.record(&ev(None, 404));
        let mut v = serde_json::to_value(&old).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("countries");
        obj.remove("asns");
        obj["limits"].as_object_mut().unwrap().remove("asns");
        for pair in obj["unregistered"].as_array_mut().unwrap() {
            let key = pair[0].as_object_mut().unwrap();
            key.remove("country");
            key.remove("asn");
        }
        let b: Aggregator = serde_json::from_value(v).unwrap();
        let mut b = b.restore(Limits::default());
        let keys: Vec<UnregisteredKey> = b.unregistered().map(|(k, _)| *k).collect();
        assert_eq!((keys[0].country, keys[0].asn), (GEO_UNKNOWN, GEO_UNKNOWN));
        assert_eq!(b.asns.intern("AS1"), 2);
    }

    #[test]
    fn removed_nodes_are_dropped_after_grace() {
        let mut a = Aggregator::new(Limits::default());
        let gone = a.node_id("gone");
        let kept = a.node_id("kept");
        a.record(&ev(Some(gone), 200));
        a.record(&ev(Some(kept), 200));
        let registered = |n: &str| n == "kept";
        assert_eq!(a.sweep_removed(&registered, 100, 60), 0);
        assert_eq!(a.sweep_removed(&registered, 159, 60), 0);
        assert_eq!(a.sweep_removed(&registered, 160, 60), 1);
        assert_eq!(a.requests_by_node().keys().collect::<Vec<_>>(), ["kept"]);
    }
}
