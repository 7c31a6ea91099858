//! Istio `WorkloadEntry` objects as a registry source (`workload_entries:` in the config).
//!
//! `networking.istio.io/v1` `WorkloadEntry`
//! (<https://istio.io/latest/docs/reference/config/networking/workload-entry/>) describes a
//! workload outside Kubernetes, such as a VPS: `metadata.name` → node name, `spec.address` →
//! its address (an IP; entries whose address is a host name or empty are skipped and counted),
//! `spec.labels` → node labels, the label `vpslens.io/node-id` (configurable) → `node_id`.
//! Labels that are not usable registry label keys (e.g. `app.kubernetes.io/name`) are dropped.
//!
//! One namespace is watched (the Role in `k8s/rbac/` grants get/list/watch there only), so
//! `metadata.name` is unique and needs no namespace prefix.
//!
//! Protocol (Kubernetes "API concepts: efficient detection of changes"): LIST with the label
//! selector, then WATCH from the list's `resourceVersion` with bookmarks; every event and
//! bookmark advances the resource version; a watch that ends (server timeout) is re-opened
//! from the last version; an `ERROR` event (410 Gone: the version is too old) or any other
//! desync leads to a fresh LIST. [`WatchState`] is the pure state machine; [`run`] is the
//! client loop over a real [`kube::Client`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, ObjectList, WatchEvent, WatchParams};
use kube::discovery::ApiResource;
use serde::Deserialize;

use super::super::reload::RegistryHandle;
use super::super::{parse_net, NodeSpec, MAX_NODE_NAME};
use super::{usable_labels, SourceId, SourceList, SourceUpdate};

/// Default label holding the Xboard node id.
pub const DEFAULT_NODE_ID_LABEL: &str = "vpslens.io/node-id";
/// Server-side watch timeout, seconds (the API server caps it; kube-rs requires < 295).
pub const WATCH_TIMEOUT_SECONDS: u32 = 290;

/// The `workload_entries:` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEntryConfig {
    /// Namespace of the WorkloadEntries (e.g. `vps`). Required.
    pub namespace: String,
    /// Kubernetes label selector (e.g. `app=xrayr`). Default: every WorkloadEntry in the
    /// namespace.
    pub label_selector: Option<String>,
    /// `spec.labels` key holding the Xboard node id (decimal). Default `vpslens.io/node-id`.
    #[serde(default = "default_node_id_label")]
    pub node_id_label: String,
}

/// Serde default of [`WorkloadEntryConfig::node_id_label`].
fn default_node_id_label() -> String {
    DEFAULT_NODE_ID_LABEL.to_owned()
}

/// The API resource: group `networking.istio.io`, version `v1`, kind `WorkloadEntry`.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "WorkloadEntry".into(),
        plural: "workloadentries".into(),
    }
}

/// The fields of `spec` vpslens reads (others are ignored).
#[derive(Debug, Default, Deserialize)]
struct Spec {
    #[serde(default)]
    address: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// What the client must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The node list changed.
    Changed,
    /// Only the resource version moved (bookmark) or nothing changed.
    Unchanged,
    /// The watch is out of sync (`ERROR` event, e.g. 410 Gone): LIST again.
    Relist {
        /// HTTP-style code of the `Status` (410 for an expired resource version).
        code: u16,
        /// The status message.
        message: String,
    },
}

/// The pure list/watch state machine: WorkloadEntries by name, and the resource version to
/// watch from.
#[derive(Debug, Clone)]
pub struct WatchState {
    node_id_label: String,
    /// `metadata.name` → the node, or why the entry yields none.
    entries: BTreeMap<String, Result<NodeSpec, String>>,
    resource_version: Option<String>,
}

impl WatchState {
    /// An empty state reading `node_id` from `node_id_label`.
    pub fn new(node_id_label: &str) -> WatchState {
        WatchState {
            node_id_label: node_id_label.to_owned(),
            entries: BTreeMap::new(),
            resource_version: None,
        }
    }

    /// The resource version to watch from (the list's, then the latest event's or bookmark's).
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// Replaces everything with a LIST response.
    pub fn apply_list(&mut self, list: ObjectList<DynamicObject>) {
        self.entries.clear();
        for obj in list.items {
            self.upsert(&obj);
        }
        self.resource_version = list.metadata.resource_version;
    }

    /// Applies one WATCH event.
    pub fn apply_event(&mut self, ev: WatchEvent<DynamicObject>) -> Step {
        match ev {
            WatchEvent::Added(obj) | WatchEvent::Modified(obj) => {
                self.bump(&obj);
                if self.upsert(&obj) {
                    Step::Changed
                } else {
                    Step::Unchanged
                }
            }
            WatchEvent::Deleted(obj) => {
                self.bump(&obj);
                match obj.metadata.name {
                    Some(n) if self.entries.remove(&n).is_some() => Step::Changed,
                    _ => Step::Unchanged,
                }
            }
            WatchEvent::Bookmark(b) => {
                self.resource_version = Some(b.metadata.resource_version);
                Step::Unchanged
            }
            WatchEvent::Error(e) => Step::Relist {
                code: e.code,
                message: e.message,
            },
        }
    }

    /// The node list (entries without a usable address are counted as skipped).
    pub fn list(&self) -> SourceList {
        let mut out = SourceList::default();
        for e in self.entries.values() {
            match e {
                Ok(n) => out.nodes.push(n.clone()),
                Err(_) => out.skipped += 1,
            }
        }
        out
    }

    fn bump(&mut self, obj: &DynamicObject) {
        if let Some(rv) = &obj.metadata.resource_version {
            self.resource_version = Some(rv.clone());
        }
    }

    /// Inserts or replaces an entry; returns whether the node list changed.
    fn upsert(&mut self, obj: &DynamicObject) -> bool {
        let Some(name) = obj.metadata.name.clone() else {
            return false;
        };
        let node = self.to_node(&name, obj);
        if let Err(why) = &node {
            tracing::warn!(workload_entry = %name, reason = %why,
                "WorkloadEntry yields no node");
        }
        let old = self.entries.insert(name, node.clone());
        old.as_ref().map(|o| same(o, &node)) != Some(true)
    }

    fn to_node(&self, name: &str, obj: &DynamicObject) -> Result<NodeSpec, String> {
        if name.len() > MAX_NODE_NAME {
            // Kubernetes allows 253 bytes; the `node` label allows fewer.
            return Err(format!("metadata.name longer than {MAX_NODE_NAME} bytes"));
        }
        let spec: Spec = match obj.data.get("spec") {
            Some(s) => Spec::deserialize(s).map_err(|e| format!("bad spec: {e}"))?,
            None => Spec::default(),
        };
        if spec.address.is_empty() {
            return Err("spec.address is empty".into());
        }
        let net = parse_net(&spec.address)
            .map_err(|e| format!("spec.address: {e} (host names are not resolved)"))?;
        let mut labels = spec.labels;
        let node_id = labels
            .remove(&self.node_id_label)
            .and_then(|v| v.trim().parse::<u32>().ok());
        let dropped = usable_labels(&mut labels);
        if !dropped.is_empty() {
            tracing::debug!(workload_entry = %name, ?dropped, "labels not usable as node labels");
        }
        Ok(NodeSpec {
            name: name.to_owned(),
            addresses: vec![net.addr().to_string()],
            node_id,
            labels,
        })
    }
}

fn same(a: &Result<NodeSpec, String>, b: &Result<NodeSpec, String>) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => {
            x.name == y.name
                && x.addresses == y.addresses
                && x.node_id == y.node_id
                && x.labels == y.labels
        }
        (Err(x), Err(y)) => x == y,
        _ => false,
    }
}

/// Watches WorkloadEntries with `client` forever and feeds `handle` as
/// [`SourceId::WORKLOAD_ENTRY`]. LIST failures and non-410 watch errors are counted as failed
/// updates (the last good list stays) and retried with exponential backoff (1 s … 60 s).
pub async fn run(handle: Arc<RegistryHandle>, cfg: WorkloadEntryConfig, client: kube::Client) {
    let id = SourceId::WORKLOAD_ENTRY;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &cfg.namespace, &api_resource());
    let mut lp = ListParams::default();
    let mut wp = WatchParams::default().timeout(WATCH_TIMEOUT_SECONDS);
    if let Some(sel) = &cfg.label_selector {
        lp = lp.labels(sel);
        wp = wp.labels(sel);
    }
    let mut state = WatchState::new(&cfg.node_id_label);
    let mut backoff = Backoff::default();
    loop {
        match api.list(&lp).await {
            Ok(list) => {
                state.apply_list(list);
                let _ = handle.apply(id, SourceUpdate::Replace(state.list()));
                backoff.reset();
            }
            Err(e) => {
                handle.record_failure(id, &format!("LIST workloadentries: {e}"));
                backoff.sleep().await;
                continue;
            }
        }
        // Watch until a desync asks for a fresh LIST.
        loop {
            let rv = state.resource_version().unwrap_or("0").to_owned();
            let stream = match api.watch(&wp, &rv).await {
                Ok(s) => s,
                Err(kube::Error::Api(s)) if s.code == 410 => {
                    tracing::info!("WorkloadEntry watch: resource version expired; listing again");
                    break;
                }
                Err(e) => {
                    handle.record_failure(id, &format!("WATCH workloadentries: {e}"));
                    backoff.sleep().await;
                    continue;
                }
            };
            let mut batches = std::pin::pin!(stream.ready_chunks(256));
            let mut relist = false;
            while let Some(batch) = batches.next().await {
                let mut changed = false;
                for item in batch {
                    match item {
                        Ok(ev) => match state.apply_event(ev) {
                            Step::Changed => changed = true,
                            Step::Unchanged => {}
                            Step::Relist { code, message } => {
                                if code == 410 {
                                    tracing::info!(%message,
                                        "WorkloadEntry watch: 410 Gone; listing again");
                                } else {
                                    handle.record_failure(
                                        id,
                                        &format!("WATCH error event {code}: {message}"),
                                    );
                                }
                                relist = true;
                                break;
                            }
                        },
                        Err(e) => {
                            handle.record_failure(id, &format!("WATCH stream: {e}"));
                            relist = true;
                            break;
                        }
                    }
                }
                if changed {
                    let _ = handle.apply(id, SourceUpdate::Replace(state.list()));
                }
                if relist {
                    break;
                }
            }
            if relist {
                backoff.sleep().await;
                break;
            }
            backoff.reset();
            // The server closed the watch (timeout): re-open from the last resource version.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Builds a client from the environment (in-cluster service account, or `KUBECONFIG`) and
/// runs [`run`]; retries client construction every 30 s, counting failures.
pub async fn run_in_cluster(handle: Arc<RegistryHandle>, cfg: WorkloadEntryConfig) {
    loop {
        let client = match kube::Config::infer().await {
            Ok(c) => kube::Client::try_from(c).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match client {
            Ok(c) => return run(handle, cfg, c).await,
            Err(e) => {
                handle.record_failure(
                    SourceId::WORKLOAD_ENTRY,
                    &format!("no Kubernetes client config: {e}"),
                );
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}

/// 1 s doubling to 60 s.
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    fn reset(&mut self) {
        self.next = None;
    }

    async fn sleep(&mut self) {
        let d = self.next.unwrap_or(Duration::from_secs(1));
        tokio::time::sleep(d).await;
        self.next = Some((d * 2).min(Duration::from_secs(60)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fixtures/kube")
                .join(name),
        )
        .unwrap()
    }

    fn events(name: &str) -> Vec<WatchEvent<DynamicObject>> {
        fixture(name)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn names(s: &WatchState) -> Vec<(String, Vec<String>, Option<u32>)> {
        s.list()
            .nodes
            .into_iter()
            .map(|n| (n.name, n.addresses, n.node_id))
            .collect()
    }

    fn n(name: &str, addr: &str, id: Option<u32>) -> (String, Vec<String>, Option<u32>) {
        (name.into(), vec![addr.into()], id)
    }

    #[test]
    fn recorded_list_and_watch_events_drive_the_node_list() {
        let mut s = WatchState::new(DEFAULT_NODE_ID_LABEL);
        s.apply_list(serde_json::from_str(&fixture("list-1.json")).unwrap());
        assert_eq!(s.resource_version(), Some("1000"));
        assert_eq!(
            names(&s),
            [
                n("jp-01", "203.0.113.11", Some(1)),
                n("us-01", "198.51.100.21", Some(3))
            ]
        );
        assert_eq!(s.list().skipped, 1, "the host-name entry");
        let labels = &s.list().nodes[0].labels;
        assert_eq!(labels.get("app").map(String::as_str), Some("xrayr"));
        assert!(!labels.contains_key("app.kubernetes.io/part-of"));

        let steps: Vec<Step> = events("watch-1.jsonl")
            .into_iter()
            .map(|e| s.apply_event(e))
            .collect();
        assert_eq!(
            steps,
            [
                Step::Changed,
                Step::Changed,
                Step::Unchanged,
                Step::Unchanged
            ]
        );
        assert_eq!(s.resource_version(), Some("1300"), "bookmark");
        assert_eq!(
            names(&s),
            [
                n("de-01", "192.0.2.31", Some(4)),
                n("jp-01", "203.0.113.12", Some(1)),
                n("us-01", "198.51.100.21", Some(3)),
            ]
        );

        let steps: Vec<Step> = events("watch-2.jsonl")
            .into_iter()
            .map(|e| s.apply_event(e))
            .collect();
        assert_eq!(steps[0], Step::Changed, "DELETED us-01");
        assert!(
            matches!(&steps[1], Step::Relist { code: 410, .. }),
            "{:?}",
            steps[1]
        );
        assert_eq!(
            names(&s),
            [
                n("de-01", "192.0.2.31", Some(4)),
                n("jp-01", "203.0.113.12", Some(1))
            ]
        );

        // The relist replaces everything, including entries the watch never reported deleted.
        s.apply_list(serde_json::from_str(&fixture("list-2.json")).unwrap());
        assert_eq!(s.resource_version(), Some("2000"));
        assert_eq!(
            names(&s),
            [
                n("jp-01", "203.0.113.12", Some(1)),
                n("sg-01", "2001:db8::41", None)
            ]
        );
    }
}
