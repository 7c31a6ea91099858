//! Counter history for windowed figures (request rate, error ratio, identity mismatches in the
//! last minutes): periodic samples of each node's cumulative counters, so a rate is the
//! difference between now and the sample one window ago, like PromQL's `increase`.
//!
//! Bounded: at most `keep / min_gap + 2` samples of one [`NodeCounts`] (32 bytes) per node
//! ever attributed (3,000 nodes, the 10-minute default kept at one sample per 30 s: ~2 MB).

use std::collections::VecDeque;

use super::{Aggregator, CODE_OTHER};

/// One node's cumulative counters at a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// Requests.
    pub requests: u64,
    /// Requests answered 5xx or not answered (code 0), as `VpsNodeErrorRateHigh` counts them.
    pub errors: u64,
    /// Requests answered 4xx.
    pub client_errors: u64,
    /// Requests whose `node_id` contradicted the registry.
    pub identity_mismatch: u64,
}

impl NodeCounts {
    /// `self − earlier`, field by field (0 where a counter went back: the node's series were
    /// dropped after it left the registry).
    pub fn since(&self, earlier: &NodeCounts) -> NodeCounts {
        NodeCounts {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            client_errors: self.client_errors.saturating_sub(earlier.client_errors),
            identity_mismatch: self
                .identity_mismatch
                .saturating_sub(earlier.identity_mismatch),
        }
    }
}

/// Cumulative counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// Wall-clock time of the sample, Unix ms.
    pub at_ms: i64,
    /// Lines processed (every `vpslens_lines_total` result).
    pub lines: u64,
    /// Counters by aggregator node id ([`Aggregator::node_names`]).
    pub nodes: Vec<NodeCounts>,
}

impl Sample {
    /// The counters of the aggregator now.
    pub fn take(agg: &Aggregator, at_ms: i64) -> Sample {
        let mut nodes = vec![NodeCounts::default(); agg.node_names.len()];
        for (k, n) in agg.series() {
            let id = k.node as usize;
            if id >= nodes.len() {
                nodes.resize(id + 1, NodeCounts::default());
            }
            let c = &mut nodes[id];
            c.requests += n;
            if k.code == 0 || (500..600).contains(&k.code) {
                c.errors += n;
            } else if (400..500).contains(&k.code) && k.code != CODE_OTHER {
                c.client_errors += n;
            }
        }
        for (id, st) in agg.all_node_stats() {
            if let Some(c) = nodes.get_mut(id as usize) {
                c.identity_mismatch = st.identity_mismatch;
            }
        }
        Sample {
            at_ms,
            lines: agg.lines.iter().sum(),
            nodes,
        }
    }

    /// A node's counters (zero for ids the sample does not know).
    pub fn node(&self, id: u32) -> NodeCounts {
        self.nodes.get(id as usize).copied().unwrap_or_default()
    }
}

/// Samples of the last `keep_ms` (plus the newest one older than that, so a whole window is
/// always covered once the process ran that long), at least `min_gap_ms` apart.
#[derive(Debug, Clone)]
pub struct History {
    samples: VecDeque<Sample>,
    keep_ms: i64,
    min_gap_ms: i64,
}

impl Default for History {
    /// Ten minutes (the longest window of the alert rules), one sample per 30 s.
    fn default() -> Self {
        History::new(600_000, 30_000)
    }
}

impl History {
    /// Keeps samples covering `keep_ms`, at least `min_gap_ms` apart.
    pub fn new(keep_ms: i64, min_gap_ms: i64) -> History {
        History {
            samples: VecDeque::new(),
            keep_ms: keep_ms.max(0),
            min_gap_ms: min_gap_ms.max(0),
        }
    }

    /// True when a sample taken at `now_ms` would be kept (none yet, or the newest is at least
    /// the minimum gap old): lets callers skip taking it under the lock.
    pub fn wants(&self, now_ms: i64) -> bool {
        self.samples
            .back()
            .is_none_or(|s| now_ms - s.at_ms >= self.min_gap_ms)
    }

    /// Adds a sample (ignored if it is too close to the newest) and forgets samples no window
    /// needs.
    pub fn push(&mut self, s: Sample) {
        if !self.wants(s.at_ms) {
            return;
        }
        let horizon = s.at_ms - self.keep_ms;
        self.samples.push_back(s);
        while self.samples.len() > 1 && self.samples[1].at_ms <= horizon {
            self.samples.pop_front();
        }
    }

    /// The sample a window of `window_ms` ending at `now_ms` starts from: the newest one at
    /// least `window_ms` old, or the oldest kept when the process is younger than the window.
    pub fn baseline(&self, now_ms: i64, window_ms: i64) -> Option<&Sample> {
        let start = now_ms - window_ms;
        self.samples
            .iter()
            .rev()
            .find(|s| s.at_ms <= start)
            .or_else(|| self.samples.front())
    }

    /// Samples kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True before the first sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64, requests: u64) -> Sample {
        Sample {
            at_ms: ms,
            lines: requests,
            nodes: vec![NodeCounts {
                requests,
                ..NodeCounts::default()
            }],
        }
    }

    #[test]
    fn baseline_is_the_newest_sample_a_whole_window_old() {
        let mut h = History::new(600_000, 30_000);
        assert!(h.baseline(0, 300_000).is_none());
        for i in 0..40 {
            h.push(at(i * 30_000, i as u64));
        }
        // Too close to the newest: ignored.
        h.push(at(39 * 30_000 + 1, 999));
        let now = 39 * 30_000;
        assert_eq!(h.baseline(now, 300_000).unwrap().at_ms, now - 300_000);
        assert_eq!(
            h.baseline(now + 29_000, 300_000).unwrap().at_ms,
            now - 300_000
        );
        // Kept: the 10-minute window plus one sample older than it.
        assert_eq!(h.baseline(now, 600_000).unwrap().at_ms, now - 600_000);
        assert_eq!(h.len(), 21);
        // Younger than the window: the oldest sample.
        let mut young = History::new(600_000, 30_000);
        young.push(at(1_000, 0));
        young.push(at(40_000, 5));
        assert_eq!(young.baseline(60_000, 300_000).unwrap().at_ms, 1_000);
    }

    #[test]
    fn counts_since_never_go_negative() {
        let now = NodeCounts {
            requests: 3,
            errors: 1,
            client_errors: 0,
            identity_mismatch: 2,
        };
        let before = NodeCounts {
            requests: 10,
            errors: 0,
            client_errors: 0,
            identity_mismatch: 1,
        };
        assert_eq!(
            now.since(&before),
            NodeCounts {
                requests: 0,
                errors: 1,
                client_errors: 0,
                identity_mismatch: 1
            }
        );
    }
}
