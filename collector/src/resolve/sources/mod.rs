//! Registry sources and how their node lists are merged.
//!
//! Three kinds of source produce [`NodeSpec`] lists:
//!
//! - [`SourceKind::File`] — the YAML/JSON node file (`registry:`), see [`node_file`];
//! - [`SourceKind::WorkloadEntry`] — Istio `WorkloadEntry` objects watched through the
//!   Kubernetes API (`workload_entries:`), see [`workload_entry`];
//! - [`SourceKind::FileSd`] — Prometheus `file_sd` JSON from a file or an HTTP URL
//!   (`file_sd:`), see [`file_sd`];
//! - [`SourceKind::Xboard`] — the Xboard panel's admin node list, hosts resolved by DNS
//!   (`xboard:`), see [`xboard`].
//!
//! Each source instance keeps its own **last good** list: a broken update (unreadable file,
//! HTTP error, bad JSON, an invalid node) is counted and logged, and the instance's previous
//! list stays in the merge. [`merge`] combines the lists by **precedence** — node file, then
//! WorkloadEntry, then file_sd (several `file_sd` entries: the earlier entry wins), then
//! Xboard — *by node name*. Xboard comes last because its addresses are derived (a node's
//! `host` resolved by DNS, which may be a CDN or relay): any list an operator writes can
//! override a panel node by naming it. By name: the first source that names a node owns it whole (addresses, `node_id`, labels); the
//! same name from a lower-precedence source is dropped, not merged, and counted as shadowed.
//! Address conflicts between different names are then resolved by
//! [`Registry::build`](super::Registry::build) (smaller name wins), exactly as within one file.

pub mod file_sd;
pub mod node_file;
pub mod workload_entry;
pub mod xboard;

use std::collections::{BTreeMap, BTreeSet};

use super::NodeSpec;

/// The kind of a registry source; its [`label`](SourceKind::label) is the `source` label of
/// the `vpslens_registry_source_*` metrics (a fixed set of four values).
///
/// Declaration order is merge precedence (highest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// The YAML/JSON node file (`registry:`).
    File,
    /// Istio `WorkloadEntry` objects from the Kubernetes API (`workload_entries:`).
    WorkloadEntry,
    /// Prometheus `file_sd` JSON (`file_sd:`).
    FileSd,
    /// The Xboard panel's admin API (`xboard:`).
    Xboard,
}

impl SourceKind {
    /// Every kind, in precedence order.
    pub const ALL: [SourceKind; 4] = [
        SourceKind::File,
        SourceKind::WorkloadEntry,
        SourceKind::FileSd,
        SourceKind::Xboard,
    ];

    /// The `source` label value: `file`, `workload_entry`, `file_sd` or `xboard`.
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::WorkloadEntry => "workload_entry",
            SourceKind::FileSd => "file_sd",
            SourceKind::Xboard => "xboard",
        }
    }
}

/// One configured source instance: its kind and its position in the config (only `file_sd`
/// can have several; the others use index 0). Ordering is merge precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId {
    /// The kind.
    pub kind: SourceKind,
    /// Index among sources of the same kind (config order; lower wins).
    pub index: u16,
}

impl SourceId {
    /// The node file.
    pub const FILE: SourceId = SourceId {
        kind: SourceKind::File,
        index: 0,
    };
    /// The WorkloadEntry watch.
    pub const WORKLOAD_ENTRY: SourceId = SourceId {
        kind: SourceKind::WorkloadEntry,
        index: 0,
    };

    /// The Xboard panel.
    pub const XBOARD: SourceId = SourceId {
        kind: SourceKind::Xboard,
        index: 0,
    };

    /// The `index`-th `file_sd` entry.
    pub fn file_sd(index: u16) -> SourceId {
        SourceId {
            kind: SourceKind::FileSd,
            index,
        }
    }
}

/// A node list produced by one source.
#[derive(Debug, Clone, Default)]
pub struct SourceList {
    /// The nodes (names unique within the list).
    pub nodes: Vec<NodeSpec>,
    /// Entries of the input that yielded no node (no name label, no usable address, …); each
    /// one was logged when the list was built.
    pub skipped: u64,
}

/// What one poll of a source found.
#[derive(Debug, Clone)]
pub enum SourceUpdate {
    /// A new list to validate and merge.
    Replace(SourceList),
    /// Nothing changed since the last good list (HTTP 304, identical bytes).
    Unchanged,
}

/// A node of a lower-precedence source dropped because a higher one names the same node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// The node name.
    pub name: String,
    /// The source that owns it.
    pub owner: SourceId,
    /// The source whose entry was dropped.
    pub shadowed: SourceId,
}

/// Merges last-good lists by precedence (iteration order of `lists`, i.e. [`SourceId`]
/// order): the first source naming a node owns it; later entries of the same name are
/// dropped and returned as [`Shadowed`]. Within one list names are already unique.
pub fn merge<'a>(
    lists: impl IntoIterator<Item = (SourceId, &'a [NodeSpec])>,
) -> (Vec<NodeSpec>, Vec<Shadowed>) {
    let mut owners: BTreeMap<&str, SourceId> = BTreeMap::new();
    let mut out = Vec::new();
    let mut shadowed = Vec::new();
    let mut seen_in_list: BTreeSet<&str> = BTreeSet::new();
    for (id, nodes) in lists {
        seen_in_list.clear();
        for n in nodes {
            if !seen_in_list.insert(n.name.as_str()) {
                continue;
            }
            match owners.get(n.name.as_str()) {
                Some(&owner) => shadowed.push(Shadowed {
                    name: n.name.clone(),
                    owner,
                    shadowed: id,
                }),
                None => {
                    owners.insert(n.name.as_str(), id);
                    out.push(n.clone());
                }
            }
        }
    }
    (out, shadowed)
}

/// Keeps only labels the registry accepts (Prometheus label names, not `node`/`node_id`/`__*`,
/// values of at most [`MAX_NODE_NAME`](super::MAX_NODE_NAME) bytes); returns the dropped keys.
pub fn usable_labels(labels: &mut BTreeMap<String, String>) -> Vec<String> {
    let mut dropped = Vec::new();
    labels.retain(|k, v| {
        let ok = super::is_label_name(k)
            && k != "node"
            && k != "node_id"
            && !k.starts_with("__")
            && v.len() <= super::MAX_NODE_NAME;
        if !ok {
            dropped.push(k.clone());
        }
        ok
    });
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, addr: &str, app: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            addresses: vec![addr.into()],
            node_id: None,
            labels: [("app".to_string(), app.to_string())].into(),
        }
    }

    #[test]
    fn higher_precedence_owns_the_node_whole() {
        let file = vec![spec("a", "10.0.0.1", "from-file")];
        let we = vec![
            spec("a", "10.0.0.2", "from-we"),
            spec("b", "10.0.0.3", "from-we"),
        ];
        let sd0 = vec![spec("b", "10.0.0.4", "sd0"), spec("c", "10.0.0.5", "sd0")];
        let sd1 = vec![spec("c", "10.0.0.6", "sd1"), spec("d", "10.0.0.7", "sd1")];
        // Deliberately out of order: precedence comes from the SourceId order.
        let mut lists: BTreeMap<SourceId, Vec<NodeSpec>> = BTreeMap::new();
        lists.insert(SourceId::file_sd(1), sd1);
        lists.insert(SourceId::file_sd(0), sd0);
        lists.insert(SourceId::WORKLOAD_ENTRY, we);
        lists.insert(SourceId::FILE, file);
        let (merged, shadowed) = merge(lists.iter().map(|(k, v)| (*k, v.as_slice())));
        let got: Vec<(&str, &str, &str)> = merged
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.addresses[0].as_str(),
                    n.labels["app"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "10.0.0.1", "from-file"),
                ("b", "10.0.0.3", "from-we"),
                ("c", "10.0.0.5", "sd0"),
                ("d", "10.0.0.7", "sd1"),
            ]
        );
        let sh: Vec<(&str, SourceId, SourceId)> = shadowed
            .iter()
            .map(|s| (s.name.as_str(), s.owner, s.shadowed))
            .collect();
        assert_eq!(
            sh,
            vec![
                ("a", SourceId::FILE, SourceId::WORKLOAD_ENTRY),
                ("b", SourceId::WORKLOAD_ENTRY, SourceId::file_sd(0)),
                ("c", SourceId::file_sd(0), SourceId::file_sd(1)),
            ]
        );
    }

    #[test]
    fn unusable_labels_are_dropped() {
        let mut l: BTreeMap<String, String> = [
            ("app", "x"),
            ("__meta_x", "y"),
            ("app.kubernetes.io/name", "z"),
            ("node", "n"),
            ("ok_2", "v"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
        l.insert("long".into(), "x".repeat(200));
        let mut dropped = usable_labels(&mut l);
        dropped.sort();
        assert_eq!(l.keys().collect::<Vec<_>>(), vec!["app", "ok_2"]);
        assert_eq!(
            dropped,
            vec!["__meta_x", "app.kubernetes.io/name", "long", "node"]
        );
    }
}
