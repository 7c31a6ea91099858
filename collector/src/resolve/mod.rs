//! Resolve stage: client IP → registered VPS node.
//!
//! A [`Registry`] is an immutable snapshot built from the merged node lists of the configured
//! [`sources`] (node file, Prometheus `file_sd`, Istio `WorkloadEntry`); [`reload`] swaps
//! snapshots when a source changes and keeps each source's last good list when an update is
//! broken.

pub mod geo;
pub mod reload;
pub mod sources;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use thiserror::Error;

/// Maximum length of a node name (it becomes the `node` label value).
pub const MAX_NODE_NAME: usize = 128;

/// The registry file: `nodes:` list, YAML or JSON (chosen by the `.json` extension).
///
/// ```yaml
/// nodes:
///   - name: jp-01
///     addresses: ["203.0.113.11", "2001:db8::/64"]
///     node_id: 1
///     labels: {app: xrayr, region: jp, provider: vultr}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Every VPS node.
    pub nodes: Vec<NodeSpec>,
}

/// One VPS node as written in the registry file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique name; becomes the `node` label (and Istio's `source_workload`). 1–128 bytes.
    pub name: String,
    /// IPv4/IPv6 addresses or CIDR prefixes the node connects from.
    pub addresses: Vec<String>,
    /// Xboard node id (`node_id` query parameter) when known.
    #[serde(default)]
    pub node_id: Option<u32>,
    /// Extra labels for `vpslens_node_info` (keys must be Prometheus label names). `app` is
    /// also Istio's `source_app`/`source_canonical_service`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Why a registry could not be built. The previous registry stays in force.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The file could not be read.
    #[error("cannot read registry {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// YAML/JSON syntax or schema error (unknown keys are errors).
    #[error("registry {path} is not valid: {message}")]
    Syntax {
        /// File path.
        path: String,
        /// Parser message with line/column.
        message: String,
    },
    /// A semantic problem with one node.
    #[error("registry node `{node}`: {message}")]
    Node {
        /// Node name (or index when the name is the problem).
        node: String,
        /// What is wrong.
        message: String,
    },
}

/// A registered node, ready for export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// Xboard node id, if known.
    pub node_id: Option<u32>,
    /// Sanitised extra labels (sorted by key).
    pub labels: BTreeMap<String, String>,
    /// The prefixes it owns after conflict resolution.
    pub addresses: Vec<IpNet>,
}

/// Registry label holding a node's expected poll interval in whole seconds (≥ 1).
pub const POLL_INTERVAL_LABEL: &str = "poll_interval_seconds";

impl Node {
    /// The node's expected seconds between polls (registry label `poll_interval_seconds`),
    /// `None` when the label is absent (then the config default applies).
    pub fn poll_interval_seconds(&self) -> Option<u64> {
        self.labels
            .get(POLL_INTERVAL_LABEL)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v >= 1)
    }

    /// The node's `app` label, or `default`.
    pub fn app<'a>(&'a self, default: &'a str) -> &'a str {
        self.labels.get("app").map_or(default, String::as_str)
    }
}

/// Index of a node in [`Registry::nodes`].
pub type NodeIndex = u32;

/// An address claimed by more than one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The prefix claimed twice.
    pub prefix: IpNet,
    /// The node that keeps it (smallest name).
    pub winner: String,
    /// The node that loses it.
    pub loser: String,
}

/// Immutable lookup table from IP to node. Longest prefix wins; an identical prefix claimed by
/// two nodes goes to the lexicographically smaller name and is reported in [`Registry::conflicts`].
#[derive(Debug, Default)]
pub struct Registry {
    nodes: Vec<Node>,
    by_name: HashMap<String, NodeIndex>,
    /// Xboard node id → node; `None` when two nodes claim the same id.
    by_node_id: HashMap<u32, Option<NodeIndex>>,
    /// Per prefix length (longest first): masked network address → node.
    v4: Vec<(u8, FxHashMap<u32, NodeIndex>)>,
    v6: Vec<(u8, FxHashMap<u128, NodeIndex>)>,
    conflicts: Vec<Conflict>,
}

impl Registry {
    /// Reads and builds a registry from a YAML or JSON file.
    ///
    /// # Errors
    /// [`RegistryError`] on I/O, syntax, schema or validation failure.
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let bytes = std::fs::read(path).map_err(|source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Registry::from_bytes(path, &bytes)
    }

    /// Builds a registry from file contents (`path` selects JSON vs YAML and names errors).
    ///
    /// # Errors
    /// See [`Registry::load`].
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Registry, RegistryError> {
        Registry::build(sources::node_file::parse(path, bytes)?.nodes)
    }

    /// Validates nodes and builds the lookup tables.
    ///
    /// # Errors
    /// [`RegistryError::Node`] for an empty/overlong/duplicate name, an unparsable address or a
    /// label key that is not a Prometheus label name (or is reserved: `node`, `node_id`).
    pub fn build(specs: Vec<NodeSpec>) -> Result<Registry, RegistryError> {
        let mut specs = specs;
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut reg = Registry::default();
        let mut claims: BTreeMap<IpNet, NodeIndex> = BTreeMap::new();
        for spec in specs {
            let err = |message: String| RegistryError::Node {
                node: spec.name.clone(),
                message,
            };
            if spec.name.is_empty() || spec.name.len() > MAX_NODE_NAME {
                return Err(err(format!("name must be 1..={MAX_NODE_NAME} bytes")));
            }
            if spec.name.chars().any(char::is_control) {
                return Err(err("name must not contain control characters".into()));
            }
            if reg.by_name.contains_key(&spec.name) {
                return Err(err("duplicate node name".into()));
            }
            for (k, v) in &spec.labels {
                if !is_label_name(k) || k == "node" || k == "node_id" || k.starts_with("__") {
                    return Err(err(format!(
                        "label key `{k}` is not a usable Prometheus label name"
                    )));
                }
                if k == POLL_INTERVAL_LABEL && !v.parse::<u64>().is_ok_and(|s| s >= 1) {
                    return Err(err(format!(
                        "label `{POLL_INTERVAL_LABEL}` must be a whole number of seconds >= 1, not `{v}`"
                    )));
                }
                if v.len() > MAX_NODE_NAME {
                    return Err(err(format!(
                        "label `{k}` value longer than {MAX_NODE_NAME}"
                    )));
                }
            }
            let idx =
                NodeIndex::try_from(reg.nodes.len()).map_err(|_| err("too many nodes".into()))?;
            let mut owned = Vec::new();
            for a in &spec.addresses {
                let net = parse_net(a).map_err(err)?;
                match claims.get(&net) {
                    Some(&other) => {
                        let winner = reg.nodes[other as usize].name.clone();
                        reg.conflicts.push(Conflict {
                            prefix: net,
                            winner,
                            loser: spec.name.clone(),
                        });
                    }
                    None => {
                        claims.insert(net, idx);
                        owned.push(net);
                    }
                }
            }
            reg.by_name.insert(spec.name.clone(), idx);
            if let Some(id) = spec.node_id {
                reg.by_node_id
                    .entry(id)
                    .and_modify(|e| *e = None)
                    .or_insert(Some(idx));
            }
            reg.nodes.push(Node {
                name: spec.name,
                node_id: spec.node_id,
                labels: spec.labels,
                addresses: owned,
            });
        }
        for (net, idx) in claims {
            match net {
                IpNet::V4(n) => {
                    let len = n.prefix_len();
                    table_for(&mut reg.v4, len).insert(u32::from(n.network()), idx);
                }
                IpNet::V6(n) => {
                    let len = n.prefix_len();
                    table_for(&mut reg.v6, len).insert(u128::from(n.network()), idx);
                }
            }
        }
        Ok(reg)
    }

    /// The node owning `ip` (longest matching prefix), if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<NodeIndex> {
        match ip {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.v4.iter().find_map(|(len, t)| {
                    let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
                    t.get(&(bits & mask)).copied()
                })
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.v6.iter().find_map(|(len, t)| {
                    let mask = if *len == 0 {
                        0
                    } else {
                        u128::MAX << (128 - len)
                    };
                    t.get(&(bits & mask)).copied()
                })
            }
        }
    }

    /// All nodes, sorted by name.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A node by index.
    pub fn node(&self, idx: NodeIndex) -> Option<&Node> {
        self.nodes.get(idx as usize)
    }

    /// A node's index by name.
    pub fn index_of(&self, name: &str) -> Option<NodeIndex> {
        self.by_name.get(name).copied()
    }

    /// The node whose registry `node_id` is `id`, if exactly one node has it (an id claimed by
    /// two nodes resolves to none).
    pub fn node_by_id(&self, id: u32) -> Option<NodeIndex> {
        self.by_node_id.get(&id).copied().flatten()
    }

    /// Addresses claimed by more than one node (resolved to the smaller name).
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }
}

fn table_for<K>(
    tables: &mut Vec<(u8, FxHashMap<K, NodeIndex>)>,
    len: u8,
) -> &mut FxHashMap<K, NodeIndex> {
    let pos = match tables.iter().position(|(l, _)| *l <= len) {
        Some(p) if tables[p].0 == len => p,
        Some(p) => {
            tables.insert(p, (len, FxHashMap::default()));
            p
        }
        None => {
            tables.push((len, FxHashMap::default()));
            tables.len() - 1
        }
    };
    &mut tables[pos].1
}

/// `a.b.c.d`, `v6`, or a CIDR prefix.
///
/// # Errors
/// A message for text that is no IP or CIDR; for a CIDR with host bits set (`203.0.113.1/24`:
/// like `ip route`, which rejects it, the operator probably meant one address or the network
/// and vpslens does not guess); for a prefix shorter than /8 (IPv4) or /16 (IPv6), which would
/// attribute a large part of the Internet (`0.0.0.0/0`, `::/0`) to one node.
fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    let net = s
        .parse::<IpNet>()
        .map_err(|_| format!("`{s}` is not an IP or CIDR"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{s}` has host bits set: write the address `{}` or the network `{}`",
            net.addr(),
            net.trunc()
        ));
    }
    let min = match net {
        IpNet::V4(_) => MIN_PREFIX_V4,
        IpNet::V6(_) => MIN_PREFIX_V6,
    };
    if net.prefix_len() < min {
        return Err(format!(
            "`{s}` is shorter than /{min}: it would attribute a large part of the Internet to \
             this node (a catch-all belongs nowhere in the registry)"
        ));
    }
    Ok(net)
}

/// Shortest IPv4 prefix a registry address may have.
pub const MIN_PREFIX_V4: u8 = 8;
/// Shortest IPv6 prefix a registry address may have.
pub const MIN_PREFIX_V6: u8 = 16;

/// Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, addrs: &[&str]) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            addresses: addrs.iter().map(|s| (*s).to_string()).collect(),
            node_id: None,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn longest_prefix_wins_v4_and_v6() {
        let r = Registry::build(vec![
            spec("wide", &["198.51.100.0/24", "2001:db8::/32"]),
            spec("narrow", &["198.51.100.5", "2001:db8:1::/64"]),
        ])
        .unwrap();
        let name = |ip: &str| {
            r.lookup(ip.parse().unwrap())
                .map(|i| r.nodes()[i as usize].name.clone())
        };
        assert_eq!(name("198.51.100.5").as_deref(), Some("narrow"));
        assert_eq!(name("198.51.100.6").as_deref(), Some("wide"));
        assert_eq!(name("2001:db8:1::10").as_deref(), Some("narrow"));
        assert_eq!(name("2001:db8:2::10").as_deref(), Some("wide"));
        assert_eq!(name("192.0.2.1"), None);
        assert_eq!(
            name("::ffff:198.51.100.5").as_deref(),
            None,
            "callers canonicalise"
        );
    }

    #[test]
    fn conflicts_resolve_to_smaller_name_regardless_of_file_order() {
        for order in [["b", "a"], ["a", "b"]] {
            let r =
                Registry::build(order.iter().map(|n| spec(n, &["192.0.2.7"])).collect()).unwrap();
            let idx = r.lookup("192.0.2.7".parse().unwrap()).unwrap();
            assert_eq!(r.nodes()[idx as usize].name, "a");
            assert_eq!(r.conflicts().len(), 1);
            assert_eq!(r.conflicts()[0].loser, "b");
        }
    }

    #[test]
    fn invalid_registries_are_rejected() {
        assert!(Registry::build(vec![spec("a", &["not-an-ip"])]).is_err());
        assert!(Registry::build(vec![spec("a", &[]), spec("a", &[])]).is_err());
        assert!(Registry::build(vec![spec("", &[])]).is_err());
        let mut s = spec("a", &[]);
        s.labels.insert("bad-key".into(), "x".into());
        assert!(Registry::build(vec![s]).is_err());
        let e = Registry::from_bytes(
            Path::new("x.yaml"),
            b"nodes:\n  - name: a\n    adresses: []\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("adresses"), "{e}");
        let r = Registry::from_bytes(
            Path::new("x.json"),
            br#"{"nodes":[{"name":"a","addresses":["10.0.0.0/8"],"node_id":3,"labels":{"app":"xrayr"}}]}"#,
        )
        .unwrap();
        assert_eq!(r.nodes()[0].node_id, Some(3));
        assert_eq!(r.nodes()[0].app("x"), "xrayr");
    }

    #[test]
    fn node_by_id_is_unique_or_none() {
        let mut a = spec("a", &[]);
        a.node_id = Some(1);
        let mut b = spec("b", &[]);
        b.node_id = Some(2);
        let mut c = spec("c", &[]);
        c.node_id = Some(2);
        let r = Registry::build(vec![a, b, c]).unwrap();
        assert_eq!(r.node_by_id(1), r.index_of("a"));
        assert!(r.node_by_id(1).is_some());
        assert_eq!(r.node_by_id(2), None, "ambiguous id");
        assert_eq!(r.node_by_id(3), None);
    }

    #[test]
    fn registry_cidr_with_host_bits_or_catch_all_is_an_error_naming_the_node() {
        let e = Registry::build(vec![spec("jp-01", &["203.0.113.1/24"])]).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("registry node `jp-01`"), "{m}");
        assert!(m.contains("host bits set"), "{m}");
        assert!(m.contains("203.0.113.0/24"), "{m}");
        for catch_all in ["0.0.0.0/0", "::/0", "10.0.0.0/7"] {
            let m = Registry::build(vec![spec("x", &[catch_all])])
                .unwrap_err()
                .to_string();
            assert!(m.contains("shorter than"), "{catch_all}: {m}");
        }
        Registry::build(vec![spec(
            "ok",
            &["203.0.113.0/24", "2001:db8::/32", "10.0.0.0/8"],
        )])
        .unwrap();
    }
}
