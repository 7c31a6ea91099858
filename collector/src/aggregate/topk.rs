//! Heavy hitters among unregistered clients: the space-saving algorithm (Metwally, Agrawal,
//! El Abbadi, "Efficient computation of frequent and top-k elements in data streams", 2005).
//!
//! At most `capacity` addresses are tracked. A new address replaces the one with the smallest
//! count and inherits that count as its error bound, so any address whose true count exceeds
//! `total / capacity` is guaranteed to be present, and `count - error <= true <= count`.
//! These addresses are served as JSON at `/api/unregistered` and never become metric labels.

use std::collections::BTreeSet;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// One tracked address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeavyHitter {
    /// Client address.
    pub address: IpAddr,
    /// Estimated requests (an upper bound).
    pub count: u64,
    /// Over-estimation bound: the true count is at least `count - error`.
    pub error: u64,
    /// Latest `start_time` seen from it (Unix ms).
    pub last_seen_ms: i64,
}

/// Space-saving summary with O(log capacity) updates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopK {
    capacity: usize,
    slots: Vec<HeavyHitter>,
    #[serde(skip)]
    index: FxHashMap<IpAddr, usize>,
    #[serde(skip)]
    order: BTreeSet<(u64, usize)>,
}

impl TopK {
    /// A summary tracking at most `capacity` addresses (at least 1).
    pub fn new(capacity: usize) -> Self {
        TopK {
            capacity: capacity.max(1),
            slots: Vec::new(),
            index: FxHashMap::default(),
            order: BTreeSet::new(),
        }
    }

    /// Rebuilds the indexes after deserialisation.
    pub fn restore(&mut self) {
        self.index = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, h)| (h.address, i))
            .collect();
        self.order = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, h)| (h.count, i))
            .collect();
    }

    /// Counts one request from `address`.
    pub fn observe(&mut self, address: IpAddr, start_time_ms: i64) {
        if let Some(&i) = self.index.get(&address) {
            let h = &mut self.slots[i];
            self.order.remove(&(h.count, i));
            h.count += 1;
            h.last_seen_ms = h.last_seen_ms.max(start_time_ms);
            self.order.insert((h.count, i));
            return;
        }
        if self.slots.len() < self.capacity {
            let i = self.slots.len();
            self.slots.push(HeavyHitter {
                address,
                count: 1,
                error: 0,
                last_seen_ms: start_time_ms,
            });
            self.index.insert(address, i);
            self.order.insert((1, i));
            return;
        }
        let Some(&(min, i)) = self.order.iter().next() else {
            return;
        };
        self.order.remove(&(min, i));
        self.index.remove(&self.slots[i].address);
        self.slots[i] = HeavyHitter {
            address,
            count: min + 1,
            error: min,
            last_seen_ms: start_time_ms,
        };
        self.index.insert(address, i);
        self.order.insert((min + 1, i));
    }

    /// The `n` largest, by estimated count (descending).
    pub fn top(&self, n: usize) -> Vec<HeavyHitter> {
        self.order
            .iter()
            .rev()
            .take(n)
            .map(|&(_, i)| self.slots[i])
            .collect()
    }

    /// Addresses tracked (≤ capacity).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing was observed.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(i.to_be_bytes())
    }

    #[test]
    fn heavy_hitters_survive_a_flood_of_one_off_addresses() {
        // 103,000 observations, capacity 200: anything above 515 is guaranteed to be kept.
        let mut t = TopK::new(200);
        for round in 0..1000u32 {
            // Three heavy clients interleaved with 100 one-off addresses per round.
            for h in 0..3 {
                t.observe(ip(h), 1);
            }
            for k in 0..100 {
                t.observe(ip(1_000_000 + round * 100 + k), 1);
            }
        }
        assert_eq!(t.len(), 200);
        let top = t.top(3);
        let mut addrs: Vec<IpAddr> = top.iter().map(|h| h.address).collect();
        addrs.sort();
        assert_eq!(addrs, vec![ip(0), ip(1), ip(2)]);
        for h in top {
            assert!(h.count - h.error <= 1000 && 1000 <= h.count, "{h:?}");
        }
    }

    #[test]
    fn restore_rebuilds_indexes() {
        let mut t = TopK::new(2);
        t.observe(ip(1), 5);
        t.observe(ip(1), 7);
        t.observe(ip(1), 6);
        t.observe(ip(2), 6);
        let mut r: TopK = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        r.restore();
        r.observe(ip(3), 8);
        assert_eq!(r.top(1)[0].address, ip(1));
        assert_eq!(r.top(1)[0].last_seen_ms, 7);
        assert_eq!(r.len(), 2);
    }
}
