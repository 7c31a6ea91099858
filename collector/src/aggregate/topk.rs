//! Heavy hitters among unregistered clients: the space-saving algorithm (Metwally, Agrawal,
//! El Abbadi, "Efficient computation of frequent and top-k elements in data streams", 2005).
//!
//! At most `capacity` addresses are tracked. A new address replaces the one with the smallest
//! count and inherits that count as its error bound, so any address whose true count exceeds
//! `total / capacity` is guaranteed to be present, and `count - error <= true <= count`.
//! These addresses are served as JSON at `/api/unregistered` and never become metric labels.

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
    /// The latest `node_id` query parameter it sent (requests without one keep the previous
    /// value): which node an unregistered address claims to be. One integer per tracked
    /// address, never a label.
    #[serde(default)]
    pub claimed_node_id: Option<u32>,
}

/// A heap entry: a slot's count (copied, so sifting never reads the slots) and the slot.
#[derive(Debug, Clone, Copy)]
struct HeapEntry {
    count: u64,
    slot: u32,
}

impl HeapEntry {
    /// The heap order: `(count, slot)`, unique per entry.
    #[inline]
    fn key(self) -> (u64, u32) {
        (self.count, self.slot)
    }
}

/// Space-saving summary with O(log capacity) updates and no allocation once full.
///
/// The minimum is kept by an indexed binary min-heap over `(count, slot)`, so the address
/// evicted is the same one an ordered set of `(count, slot)` would give.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopK {
    capacity: usize,
    slots: Vec<HeavyHitter>,
    #[serde(skip)]
    index: FxHashMap<IpAddr, u32>,
    /// `(count, slot)` in heap order (root = smallest).
    #[serde(skip)]
    heap: Vec<HeapEntry>,
    /// Slot number → its position in `heap`.
    #[serde(skip)]
    pos: Vec<u32>,
}

/// Slots are numbered with `u32` (the capacity is capped to that).
const MAX_CAPACITY: usize = u32::MAX as usize;

impl TopK {
    /// A summary tracking at most `capacity` addresses (at least 1, at most 2³²−1).
    pub fn new(capacity: usize) -> Self {
        TopK {
            capacity: capacity.clamp(1, MAX_CAPACITY),
            slots: Vec::new(),
            index: FxHashMap::default(),
            heap: Vec::new(),
            pos: Vec::new(),
        }
    }

    /// Rebuilds the indexes after deserialisation.
    pub fn restore(&mut self) {
        self.capacity = self.capacity.clamp(1, MAX_CAPACITY);
        self.index = self
            .slots
            .iter()
            .zip(0u32..)
            .map(|(h, i)| (h.address, i))
            .collect();
        self.heap = self
            .slots
            .iter()
            .zip(0u32..)
            .map(|(h, slot)| HeapEntry {
                count: h.count,
                slot,
            })
            .collect();
        self.pos = (0u32..).take(self.slots.len()).collect();
        for at in (0..self.heap.len() / 2).rev() {
            self.sift_down(at);
        }
    }

    /// Puts `e` at heap position `at` and records where its slot is.
    #[inline]
    fn place(&mut self, at: usize, e: HeapEntry) {
        self.heap[at] = e;
        self.pos[e.slot as usize] = at as u32;
    }

    fn sift_up(&mut self, mut at: usize) {
        let e = self.heap[at];
        while at > 0 {
            let parent = (at - 1) / 2;
            if e.key() >= self.heap[parent].key() {
                break;
            }
            self.place(at, self.heap[parent]);
            at = parent;
        }
        self.place(at, e);
    }

    /// Moves the entry at `at` down to its place (a hole is moved, the entry written once).
    fn sift_down(&mut self, mut at: usize) {
        let n = self.heap.len();
        let e = self.heap[at];
        loop {
            let l = 2 * at + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && self.heap[r].key() < self.heap[l].key() {
                r
            } else {
                l
            };
            let child = self.heap[c];
            if child.key() >= e.key() {
                break;
            }
            self.place(at, child);
            at = c;
        }
        self.place(at, e);
    }

    /// Counts one request from `address` at `start_time_ms` that carried no `node_id`.
    pub fn observe(&mut self, address: IpAddr, start_time_ms: i64) {
        self.observe_claim(address, start_time_ms, None);
    }

    /// Counts one request from `address` at `start_time_ms` whose `node_id` query parameter was
    /// `claimed` (kept as the address's latest claim when `Some`).
    pub fn observe_claim(&mut self, address: IpAddr, start_time_ms: i64, claimed: Option<u32>) {
        if let Some(&i) = self.index.get(&address) {
            let h = &mut self.slots[i as usize];
            h.count += 1;
            if start_time_ms >= h.last_seen_ms {
                h.last_seen_ms = start_time_ms;
                if claimed.is_some() {
                    h.claimed_node_id = claimed;
                }
            } else if h.claimed_node_id.is_none() {
                h.claimed_node_id = claimed;
            }
            // The key only grew: it can only move down.
            let at = self.pos[i as usize] as usize;
            self.heap[at].count = h.count;
            self.sift_down(at);
            return;
        }
        if self.slots.len() < self.capacity {
            // Below the capacity, itself at most u32::MAX.
            let Ok(i) = u32::try_from(self.slots.len()) else {
                return;
            };
            self.slots.push(HeavyHitter {
                address,
                count: 1,
                error: 0,
                last_seen_ms: start_time_ms,
                claimed_node_id: claimed,
            });
            self.index.insert(address, i);
            self.heap.push(HeapEntry { count: 1, slot: i });
            self.pos.push(i);
            self.sift_up(self.heap.len() - 1);
            return;
        }
        // Full: the smallest `(count, slot)` gives its place and its count as the error bound.
        let Some(&root) = self.heap.first() else {
            return;
        };
        let i = root.slot as usize;
        let min = self.slots[i].count;
        self.index.remove(&self.slots[i].address);
        self.slots[i] = HeavyHitter {
            address,
            count: min + 1,
            error: min,
            last_seen_ms: start_time_ms,
            claimed_node_id: claimed,
        };
        self.index.insert(address, root.slot);
        self.heap[0].count = min + 1;
        self.sift_down(0);
    }

    /// The `n` largest, by estimated count (descending; ties: the later slot first).
    pub fn top(&self, n: usize) -> Vec<HeavyHitter> {
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        order.sort_unstable_by_key(|&i| std::cmp::Reverse((self.slots[i].count, i)));
        order.into_iter().take(n).map(|i| self.slots[i]).collect()
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

    /// The algorithm written plainly: evict the smallest `(count, slot)` by a linear scan.
    fn reference(capacity: usize, stream: &[(u32, i64)]) -> Vec<HeavyHitter> {
        let mut slots: Vec<HeavyHitter> = Vec::new();
        for &(a, t) in stream {
            if let Some(h) = slots.iter_mut().find(|h| h.address == ip(a)) {
                h.count += 1;
                h.last_seen_ms = h.last_seen_ms.max(t);
            } else if slots.len() < capacity {
                slots.push(HeavyHitter {
                    address: ip(a),
                    count: 1,
                    error: 0,
                    last_seen_ms: t,
                    claimed_node_id: None,
                });
            } else {
                let i = (0..slots.len())
                    .min_by_key(|&i| (slots[i].count, i))
                    .unwrap();
                let min = slots[i].count;
                slots[i] = HeavyHitter {
                    address: ip(a),
                    count: min + 1,
                    error: min,
                    last_seen_ms: t,
                    claimed_node_id: None,
                };
            }
        }
        slots
    }

    #[test]
    fn heap_evicts_exactly_like_the_plain_algorithm() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &(
                    1usize..12,
                    proptest::collection::vec((0u32..30, 0i64..100), 0..400),
                ),
                |(capacity, stream)| {
                    let mut t = TopK::new(capacity);
                    for &(a, ts) in &stream {
                        t.observe(ip(a), ts);
                    }
                    prop_assert_eq!(&t.slots, &reference(capacity, &stream));
                    // A checkpoint round trip keeps the behaviour.
                    let mut r: TopK =
                        serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
                    r.restore();
                    let mut more = stream.clone();
                    more.extend(stream.iter().rev().take(50));
                    for &(a, ts) in stream.iter().rev().take(50) {
                        r.observe(ip(a), ts);
                    }
                    prop_assert_eq!(&r.slots, &reference(capacity, &more));
                    Ok(())
                },
            )
            .unwrap();
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

    #[test]
    fn heavy_hitters_remember_the_latest_claimed_node_id() {
        let mut t = TopK::new(2);
        t.observe_claim(ip(1), 5, Some(7));
        t.observe_claim(ip(1), 6, None);
        assert_eq!(
            t.top(1)[0].claimed_node_id,
            Some(7),
            "no node_id keeps the claim"
        );
        t.observe_claim(ip(1), 8, Some(9));
        assert_eq!(
            t.top(1)[0].claimed_node_id,
            Some(9),
            "the latest claim wins"
        );
        t.observe_claim(ip(1), 7, Some(3));
        assert_eq!(
            t.top(1)[0].claimed_node_id,
            Some(9),
            "an older line does not"
        );
        // An evicted slot takes the newcomer's claim, not the old one's.
        t.observe_claim(ip(2), 8, Some(4));
        t.observe_claim(ip(3), 9, Some(5));
        let by_addr: Vec<(IpAddr, Option<u32>)> = t
            .top(2)
            .iter()
            .map(|h| (h.address, h.claimed_node_id))
            .collect();
        assert!(by_addr.contains(&(ip(3), Some(5))), "{by_addr:?}");
        // Checkpoints keep it; older checkpoints without the field read as `None`.
        let mut r: TopK = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        r.restore();
        assert_eq!(r.top(1)[0].claimed_node_id, Some(9));
        let old = r#"{"capacity":2,"slots":[{"address":"192.0.2.1","count":1,"error":0,"last_seen_ms":1}]}"#;
        let o: TopK = serde_json::from_str(old).unwrap();
        assert_eq!(o.top(1)[0].claimed_node_id, None);
    }
}
