//! `k8s/rbac/`: the Role grants exactly what the WorkloadEntry source uses (get/list/watch on
//! the resource `workload_entry::api_resource()` names, in one namespace), and the RoleBinding
//! ties it to the ServiceAccount.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};
use vpslens::resolve::sources::workload_entry::api_resource;

fn doc(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../k8s/rbac")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    Value::deserialize(serde_norway::Deserializer::from_str(&text)).unwrap()
}

#[test]
fn role_grants_read_only_access_to_workloadentries_and_is_bound_to_the_service_account() {
    let sa = doc("serviceaccount.yaml");
    let role = doc("role.yaml");
    let binding = doc("rolebinding.yaml");
    assert_eq!(sa["kind"], "ServiceAccount");
    assert_eq!(role["kind"], "Role", "namespaced, not a ClusterRole");
    let ar = api_resource();
    assert_eq!(
        role["rules"],
        json!([{
            "apiGroups": [ar.group],
            "resources": [ar.plural],
            "verbs": ["get", "list", "watch"],
        }])
    );
    assert_eq!(binding["kind"], "RoleBinding");
    assert_eq!(
        binding["metadata"]["namespace"],
        role["metadata"]["namespace"]
    );
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}])
    );
}
