//! Dense per-node storage for series and node state: the aggregate stage's memory layout.
//!
//! A node has a handful of fine-grained series (routes × methods × codes seen from it), so each
//! node keeps its own short list, scanned linearly, instead of one fleet-wide hash map: no
//! hashing per line, no fleet-wide rehash (whose doubling used to set peak memory), and a
//! node's keys share a cache line. Both tables serialise as `[key, value]` pairs, the
//! checkpoint format of the hash maps they replaced.

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{NodeStats, SeriesKey, SeriesStats};

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
}

#[derive(Debug, Clone, Default)]
struct NodeSeries {
    keys: Vec<SubKey>,
    stats: Vec<SeriesStats>,
}

/// Fine-grained series by node id (index = aggregator node id).
#[derive(Debug, Clone, Default)]
pub struct SeriesTable {
    nodes: Vec<NodeSeries>,
    len: usize,
}

impl SeriesTable {
    /// The stats of `key`, created empty on first use.
    #[inline]
    pub fn entry(&mut self, key: SeriesKey) -> &mut SeriesStats {
        let idx = key.node as usize;
        if idx >= self.nodes.len() {
            self.nodes.resize_with(idx + 1, NodeSeries::default);
        }
        let node = &mut self.nodes[idx];
        let sub = SubKey::of(&key);
        let pos = match node.keys.iter().position(|k| *k == sub) {
            Some(p) => p,
            None => {
                node.keys.push(sub);
                node.stats.push(SeriesStats::default());
                self.len += 1;
                node.keys.len() - 1
            }
        };
        &mut node.stats[pos]
    }

    /// Every series, by node id then first appearance.
    pub fn iter(&self) -> impl Iterator<Item = (SeriesKey, &SeriesStats)> {
        self.nodes.iter().zip(0u32..).flat_map(|(n, id)| {
            n.keys
                .iter()
                .zip(&n.stats)
                .map(move |(k, s)| (k.with_node(id), s))
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

    /// Number of series.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no series.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Serialize for SeriesTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<(SeriesKey, &SeriesStats)> = self.iter().collect();
        v.sort_by_key(|a| a.0);
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SeriesTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<(SeriesKey, SeriesStats)> = Vec::deserialize(d)?;
        let mut t = SeriesTable::default();
        for (k, s) in v {
            *t.entry(k) = s;
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

    #[test]
    fn entries_are_found_again_counted_and_removed() {
        let mut t = SeriesTable::default();
        t.entry(key(3, 200)).requests += 1;
        t.entry(key(3, 200)).requests += 1;
        t.entry(key(3, 503)).requests += 1;
        t.entry(key(0, 200)).requests += 1;
        assert_eq!(t.len(), 3);
        let got: Vec<(SeriesKey, u64)> = t.iter().map(|(k, s)| (k, s.requests)).collect();
        assert_eq!(got, [(key(0, 200), 1), (key(3, 200), 2), (key(3, 503), 1)]);
        assert_eq!(t.node_ids().collect::<Vec<_>>(), [0, 3]);
        t.remove_node(3);
        assert_eq!(t.len(), 1);
        assert_eq!(t.node_ids().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn serialises_as_sorted_pairs_and_back() {
        let mut t = SeriesTable::default();
        t.entry(key(5, 200)).requests = 7;
        t.entry(key(1, 404)).requests = 2;
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.starts_with(r#"[[{"node":1,"#), "{json}");
        let back: SeriesTable = serde_json::from_str(&json).unwrap();
        let a: Vec<_> = t.iter().map(|(k, s)| (k, *s)).collect();
        let b: Vec<_> = back.iter().map(|(k, s)| (k, *s)).collect();
        let (mut a, mut b) = (a, b);
        a.sort_by_key(|x| x.0);
        b.sort_by_key(|x| x.0);
        assert_eq!(a, b);

        let mut n = NodeTable::default();
        n.entry(4).last_seen_ms = 9;
        let back: NodeTable = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back.get(4).map(|s| s.last_seen_ms), Some(9));
        assert!(back.get(2).is_none());
    }
}
