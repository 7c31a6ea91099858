//! Parse and resolve stages, and the state shared with the export stage.
//!
//! [`LineProcessor::process`] takes a batch of whole lines from the source stage, parses and
//! attributes them **without** holding any lock (on `parse_threads` threads when more than one),
//! then locks the [`Aggregator`] once to apply the batch. Both `vpslens run` and `vpslens
//! replay` go through it: it is the tailer's [`LineSink`] (the source stage's output seam), and
//! its checkpointed state is the [`Aggregator`].
//!
//! **Architecture Invariant:** outcomes are applied to the aggregator in line order, on one
//! thread, so every counter, interned id and heavy-hitter entry is the same for any number of
//! parse threads (`collector/tests/parallel_identical.rs`).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use rayon::prelude::*;

use vpslens_parsers::client::{client_address, ClientAddressError, ClientAddressSource};
use vpslens_parsers::route::{RouteId, RouteTable};
use vpslens_parsers::{parse_line, LogFormat, ParseError};

use crate::aggregate::{method_index, Aggregator, Event, Limits, LineResult};
use crate::resolve::geo::{Geo, GeoCache, GeoLabels};
use crate::resolve::reload::RegistryHandle;
use crate::resolve::Registry;
use crate::source::sink::Applied;
pub use crate::source::sink::{Line, LineSink};
pub use crate::source::stats::{add, SourceStats};

/// How lines are interpreted. Built from the config; immutable while running.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Access-log format.
    pub format: LogFormat,
    /// Client-address source.
    pub client: ClientAddressSource,
    /// Route templates.
    pub routes: RouteTable,
    /// Label caps.
    pub limits: Limits,
    /// Threads for the parse and resolve stages (1 = the calling thread only).
    pub parse_threads: usize,
    /// GeoIP/ASN databases for unregistered clients (and node labels), if configured.
    pub geo: Option<Arc<Geo>>,
    /// Attribute unregistered addresses by the request's `node_id` (see
    /// [`FileConfig::attribute_unregistered_by_node_id`](crate::config::FileConfig)).
    pub attribute_unregistered_by_node_id: bool,
}

/// Everything the export stage reads.
#[derive(Debug)]
pub struct Shared {
    /// The counters (hot path writes once per batch).
    pub agg: Mutex<Aggregator>,
    /// The registry in force.
    pub registry: Arc<RegistryHandle>,
    /// Source-stage counters (shared with the tailer, which updates them).
    pub sources: Arc<SourceStats>,
    /// Pipeline settings (for route labels).
    pub config: PipelineConfig,
    /// Istio/Kiali export settings.
    pub istio: crate::export::istio::IstioConfig,
    /// Expected seconds between a node's polls when its registry entry has no
    /// `poll_interval_seconds` label (config `default_poll_interval_seconds`, default 60).
    pub default_poll_interval_seconds: AtomicU64,
    /// The status rule and windows of the fleet page, `/api/nodes` and `vpslens status`.
    pub fleet: crate::export::fleet::FleetConfig,
    /// Periodic samples of the counters, for windowed rates ([`Shared::sample_history`]).
    pub history: Mutex<crate::aggregate::window::History>,
    /// Render slots of `/metrics` and `/metrics/istio` (`istio.max_concurrent_renders`).
    pub scrapes: crate::export::scrape::ScrapeGate,
}

impl Shared {
    /// New shared state.
    pub fn new(
        config: PipelineConfig,
        istio: crate::export::istio::IstioConfig,
        registry: Arc<RegistryHandle>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            scrapes: crate::export::scrape::ScrapeGate::new(istio.max_concurrent_renders),
            agg: Mutex::new(Aggregator::new(config.limits)),
            registry,
            sources: Arc::new(SourceStats::default()),
            config,
            istio,
            default_poll_interval_seconds: AtomicU64::new(60),
            fleet: crate::export::fleet::FleetConfig::default(),
            history: Mutex::new(crate::aggregate::window::History::default()),
        })
    }

    /// Shared state with default parsing (auto format, `downstream_remote_address`, Xboard
    /// routes) and Istio settings over a fixed registry: for replays of files, tests and benches.
    pub fn with_registry(registry: Registry, limits: Limits) -> Arc<Shared> {
        Shared::new(
            PipelineConfig {
                format: LogFormat::Auto,
                client: ClientAddressSource::DownstreamRemote,
                routes: RouteTable::default(),
                limits,
                parse_threads: 1,
                geo: None,
                attribute_unregistered_by_node_id: false,
            },
            crate::export::istio::IstioConfig::default(),
            Arc::new(RegistryHandle::fixed(registry)),
        )
    }

    /// Forgets the series of nodes that have been missing from the merged registry (every
    /// source) for at least `grace_seconds`; returns how many nodes were dropped. `vpslens run`
    /// calls it periodically.
    pub fn sweep_removed(&self, now_seconds: u64, grace_seconds: u64) -> usize {
        let registry = self.registry.current();
        let registered = |n: &str| registry.index_of(n).is_some();
        self.lock()
            .sweep_removed(&registered, now_seconds, grace_seconds)
    }

    /// Adds a sample of the counters at `now_ms` (Unix ms) to the history unless the newest is
    /// younger than its minimum gap. `vpslens run` calls it every 10 s; the fleet views call
    /// it too, so windows exist without the daemon's loop (replays, tests).
    pub fn sample_history(&self, now_ms: i64) {
        let mut h = self
            .history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if h.wants(now_ms) {
            let s = crate::aggregate::window::Sample::take(&self.lock(), now_ms);
            h.push(s);
        }
    }

    /// Locks the aggregator, recovering from a poisoned lock (a panic elsewhere must not stop
    /// metrics).
    pub fn lock(&self) -> MutexGuard<'_, Aggregator> {
        crate::lock_unpoisoned(&self.agg)
    }
}

enum Outcome<'a> {
    Event(Event<'a>),
    Parse(ParseError),
    Client(ClientAddressError),
    TooLong,
}

/// Parses, attributes and aggregates batches of lines. One per tailer thread.
#[derive(Debug)]
pub struct LineProcessor {
    shared: Arc<Shared>,
    generation: u64,
    registry: Arc<Registry>,
    /// Registry node index → aggregator node id and the node's Xboard `node_id` (copied out of
    /// the registry so attribution touches one dense array, not the node records).
    node_map: Vec<(u32, Option<u32>)>,
    /// Route template index → aggregator route label id.
    route_map: Vec<u16>,
    route_other: u16,
    /// Parse threads when `parse_threads > 1`.
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Recent GeoIP lookups (fixed size; only used when `geo` is configured).
    geo_cache: GeoCache,
}

/// Batches smaller than this are parsed on the calling thread (spreading them costs more than
/// it saves).
const PARALLEL_MIN_LINES: usize = 256;

impl LineProcessor {
    /// A processor feeding `shared`. With `parse_threads > 1` it owns a thread pool of that size;
    /// if the pool cannot be created it logs a warning and parses on the calling thread.
    pub fn new(shared: Arc<Shared>) -> Self {
        let threads = shared.config.parse_threads;
        let pool = (threads > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("vpslens-parse-{i}"))
                    .build()
                    .map_err(|e| tracing::warn!(error = %e, "parse threads unavailable; using one"))
                    .ok()
            })
            .flatten()
            .map(Arc::new);
        let mut p = LineProcessor {
            generation: 0,
            registry: shared.registry.current(),
            shared,
            node_map: Vec::new(),
            route_map: Vec::new(),
            route_other: 0,
            pool,
            geo_cache: GeoCache::default(),
        };
        p.refresh();
        p
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-derives the index tables if the registry changed (and after a checkpoint restore).
    pub fn refresh(&mut self) {
        let generation = self.shared.registry.generation();
        if generation == self.generation && !self.node_map.is_empty() {
            return;
        }
        self.generation = generation;
        self.registry = self.shared.registry.current();
        let mut agg = self.shared.lock();
        self.node_map = self
            .registry
            .nodes()
            .iter()
            .map(|n| (agg.node_id(&n.name), n.node_id))
            .collect();
        let routes = &self.shared.config.routes;
        self.route_map = (0..routes.len())
            .map(|i| {
                agg.routes
                    .intern(routes.label(RouteId(u16::try_from(i).unwrap_or(0))))
            })
            .collect();
        self.route_other = agg.routes.intern(routes.label(RouteId::OTHER));
    }

    /// Forces [`LineProcessor::refresh`] on the next batch (after the aggregator was replaced).
    pub fn invalidate(&mut self) {
        self.node_map.clear();
    }

    /// Processes one batch: parse and resolve unlocked (in parallel when configured), then one
    /// locked apply in line order.
    pub fn process(&mut self, lines: &[Line<'_>]) {
        self.refresh();
        let this = &*self;
        let mut outcomes: Vec<Outcome<'_>> = match &this.pool {
            Some(pool) if lines.len() >= PARALLEL_MIN_LINES => pool.install(|| {
                lines
                    .par_iter()
                    .with_min_len(64)
                    .map(|l| this.outcome(l))
                    .collect()
            }),
            _ => lines.iter().map(|l| this.outcome(l)).collect(),
        };
        if let Some(geo) = &self.shared.config.geo {
            // Unregistered clients only: registered nodes get their labels per registry load.
            for o in &mut outcomes {
                if let Outcome::Event(ev @ Event { node: None, .. }) = o {
                    if let Some(ip) = ev.client {
                        ev.geo = self.geo_cache.lookup(geo, ip);
                    }
                }
            }
        }
        let mut agg = self.shared.lock();
        for o in &outcomes {
            match o {
                Outcome::Event(ev) => agg.record(ev),
                Outcome::Parse(e) => agg.count_parse_error(e),
                Outcome::Client(e) => agg.count_client_error(e.index()),
                Outcome::TooLong => agg.count_line(LineResult::TooLong),
            }
        }
    }

    #[inline]
    fn outcome<'a>(&self, line: &'a Line<'_>) -> Outcome<'a> {
        match line {
            Line::Text(t) => self.attribute(t, &self.shared.config),
            Line::TooLong => Outcome::TooLong,
            Line::Malformed(e) => Outcome::Parse(e.clone()),
        }
    }

    fn attribute<'a>(&self, text: &'a [u8], cfg: &PipelineConfig) -> Outcome<'a> {
        let rec = match parse_line(text, cfg.format) {
            Ok(r) => r,
            Err(e) => return Outcome::Parse(e),
        };
        let ip = match client_address(&rec, cfg.client) {
            Ok(ip) => ip,
            Err(e) => return Outcome::Client(e),
        };
        let target = cfg.routes.classify(rec.path.as_deref().unwrap_or(""));
        let route = if target.route == RouteId::OTHER {
            self.route_other
        } else {
            self.route_map
                .get(usize::from(target.route.0))
                .copied()
                .unwrap_or(self.route_other)
        };
        let mut idx = self.registry.lookup(ip);
        let mut node_id_fallback = false;
        if idx.is_none() && cfg.attribute_unregistered_by_node_id {
            // Spoofable by design (see README): only for fleets without a usable registry.
            if let Some(i) = target.node_id.and_then(|id| self.registry.node_by_id(id)) {
                idx = Some(i);
                node_id_fallback = true;
            }
        }
        let (node, known_id) = idx
            .and_then(|i| self.node_map.get(i as usize).copied())
            .map_or((None, None), |(node, id)| (Some(node), id));
        // A `node_id` that is not a number fitting the registry's `u32` ids (`1abc`, `-1`,
        // `99999999999999999999`) contradicts any registered id.
        let identity_mismatch = match (known_id, target.node_id) {
            (Some(known), Some(claimed)) => known != claimed,
            (Some(_), None) => target.node_id_invalid,
            _ => false,
        };
        Outcome::Event(Event {
            node,
            route,
            method: method_index(rec.method.as_deref()),
            code: rec.response_code,
            flags: rec.response_flags,
            upstream_cluster: rec.upstream_cluster,
            duration_ms: rec.duration_ms,
            bytes_received: rec.bytes_received,
            bytes_sent: rec.bytes_sent,
            start_time_ms: rec.start_time_ms,
            identity_mismatch,
            node_id_fallback,
            client: if node.is_none() { Some(ip) } else { None },
            claimed_node_id: if node.is_none() { target.node_id } else { None },
            geo: GeoLabels::default(),
        })
    }
}

/// The parse stage as the tailer's sink: applies every line; its state is the [`Aggregator`].
impl LineSink for LineProcessor {
    type State = Aggregator;

    fn apply(&mut self, lines: &[Line<'_>]) -> Applied {
        self.process(lines);
        Applied { lines: lines.len() }
    }

    fn snapshot(&self) -> Aggregator {
        self.shared.lock().clone()
    }

    /// Serialised under the lock, without the copy [`LineSink::snapshot`] makes: at 3,000
    /// nodes the copy (tens of thousands of allocations) cost more than the serialisation.
    /// Scrapes wait for it (milliseconds at that size); ingestion is this thread.
    fn serialize_state<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&*self.shared.lock(), s)
    }

    fn restore(&mut self, state: Aggregator) {
        *self.shared.lock() = state.restore(self.shared.config.limits);
        self.invalidate();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::resolve::NodeSpec;

    /// A registry of one node, `n1` at 10.0.0.1 with Xboard `node_id` 1 (other modules' tests
    /// use it too).
    pub(crate) fn n1_registry() -> Registry {
        Registry::build(vec![NodeSpec {
            name: "n1".into(),
            addresses: vec!["10.0.0.1".into()],
            node_id: Some(1),
            labels: Default::default(),
        }])
        .unwrap()
    }

    /// An Istio JSON line: a request from n1's address claiming `node_id` `id`.
    pub(crate) fn n1_request(id: &str) -> String {
        format!(
            r#"{{"downstream_remote_address":"10.0.0.1:4000","method":"GET","path":"/api/v1/server/UniProxy/user?node_id={id}&node_type=vless&token=FAKE-TOKEN-do-not-use","response_code":200,"duration":3,"bytes_sent":10,"start_time":"2026-11-23T05:38:15.940Z"}}"#
        )
    }

    /// A processor that has counted eight requests from n1 (`node_id` 1, none, then six that
    /// cannot be node 1's).
    fn processor_with_n1_requests() -> (LineProcessor, Arc<Shared>) {
        let shared = Shared::with_registry(n1_registry(), Limits::default());
        let mut p = LineProcessor::new(shared.clone());
        // Matching id, no id, then six that cannot be node 1's.
        let lines: Vec<String> = ["1", "", "2", "1abc", "-1", "99999999999999999999", "4294967296"]
            .iter()
            .map(|id| n1_request(id))
            .chain([r#"{"downstream_remote_address":"10.0.0.1:4000","method":"GET","path":"/api/v1/server/UniProxy/user?token=t","response_code":200,"duration":3,"bytes_sent":10,"start_time":"2026-11-23T05:38:15.940Z"}"#.to_owned()])
            .collect();
        p.process(&Line::batch(&lines));
        (p, shared)
    }

    #[test]
    fn unparseable_node_id_from_a_registered_address_is_an_identity_mismatch() {
        let (_p, shared) = processor_with_n1_requests();
        let agg = shared.lock();
        assert_eq!(
            agg.requests_by_node().get("n1"),
            Some(&8),
            "lines {:?} {:?}",
            agg.lines,
            agg.requests_by_node()
        );
        let n1 = agg.find_node("n1").unwrap();
        let st = agg.node_stats(n1).unwrap();
        // "" (present, empty), 2, 1abc, -1, 2^64+, 2^32: six mismatches; "1" and no node_id none.
        assert_eq!(st.identity_mismatch, 6);
    }

    /// The checkpoint serialises the aggregator in place (no copy): the same JSON as the
    /// snapshot's, and it restores the counts.
    #[test]
    fn the_checkpoints_in_place_serialisation_is_the_snapshots() {
        let (p, _shared) = processor_with_n1_requests();
        let mut json = Vec::new();
        p.serialize_state(&mut serde_json::Serializer::new(&mut json))
            .unwrap();
        assert_eq!(json, serde_json::to_vec(&p.snapshot()).unwrap());
        let fresh = Shared::with_registry(n1_registry(), Limits::default());
        let mut q = LineProcessor::new(fresh.clone());
        q.restore(serde_json::from_slice(&json).unwrap());
        assert_eq!(fresh.lock().requests_by_node().get("n1"), Some(&8));
    }
}
