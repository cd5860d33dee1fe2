//! The CRDs in `crds/` are generated from the Rust types and must not drift from them.

use std::path::Path;

use fanout_operator::crd::{manifests, Recording, Room, SfuWorker};
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn committed_crds_match_the_rust_types() {
    for (file, generated) in manifests() {
        let path = repo().join("crds").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale: run `cargo run -p fanout-operator --bin crdgen` and commit the result",
            path.display()
        );
    }
}

#[test]
fn the_helm_chart_carries_the_same_crds() {
    // Helm installs the CRDs in the chart's crds/ folder before anything else.
    let chart = repo().join("charts/fanout/crds");
    for (file, generated) in manifests() {
        let copy = std::fs::read_to_string(chart.join(file)).unwrap_or_default();
        assert!(copy == generated, "charts/fanout/crds/{file} differs from crds/{file}: run crdgen");
    }
    let expected: Vec<&str> = manifests().iter().map(|(file, _)| *file).collect();
    for entry in std::fs::read_dir(&chart).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(expected.contains(&name.as_str()), "charts/fanout/crds/{name} is not a generated CRD");
    }
}

/// The API server only accepts structural schemas: every node has a type (or is an
/// int-or-string / preserve-unknown-fields escape), and there are no `$ref`s.
fn assert_structural(node: &Value, path: &str) {
    let Some(obj) = node.as_object() else { return };
    assert!(!obj.contains_key("$ref"), "$ref at {path}");
    let escape = obj.contains_key("x-kubernetes-int-or-string") || obj.contains_key("x-kubernetes-preserve-unknown-fields");
    assert!(obj.contains_key("type") || escape, "no type at {path}: {node}");
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            assert_structural(v, &format!("{path}.{k}"));
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(extra, &format!("{path}{{}}"));
    }
}

#[test]
fn crd_schemas_are_structural() {
    for (file, yaml) in manifests() {
        let crd: Value = yaml_serde::from_str(&yaml).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_structural(schema, file);
    }
}

#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    fn walk(node: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                // Kubernetes' own types (metadata, tolerations...) bring their own text.
                if v.get("description").is_none() && !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    missing.push(p.clone());
                }
                walk(v, &p, missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, path, missing);
        }
    }
    for (file, yaml) in manifests() {
        let crd: Value = yaml_serde::from_str(&yaml).unwrap();
        let mut missing = Vec::new();
        walk(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], file, &mut missing);
        assert!(missing.is_empty(), "fields without a description: {missing:?}");
    }
}

#[test]
fn examples_are_valid_resources() {
    let pool: SfuWorker =
        yaml_serde::from_str(&std::fs::read_to_string(repo().join("crds/examples/sfuworker.yaml")).unwrap()).unwrap();
    assert_eq!(pool.spec.replicas, 3);
    assert!(pool.spec.rtc_ports.max >= pool.spec.rtc_ports.min);
    let room: Room = yaml_serde::from_str(&std::fs::read_to_string(repo().join("crds/examples/room.yaml")).unwrap()).unwrap();
    assert_eq!(room.spec.max_peers, 40);
    assert_eq!(room.spec.publishers, vec!["teacher".to_string()]);
    let rec: Recording =
        yaml_serde::from_str(&std::fs::read_to_string(repo().join("crds/examples/recording.yaml")).unwrap()).unwrap();
    assert_eq!(rec.spec.room_name, room.metadata.name.unwrap(), "the example records the example room");
    assert!(!rec.spec.stop);
    let storage = pool.spec.recording.expect("the example pool has a recording volume");
    assert!(storage.volume.empty_dir.is_some() && storage.volume.persistent_volume_claim.is_none());
}

/// What stricter clients than the API server refuse (kubectl's older client-side validation,
/// kubeconform, editors): `null` among enum values, unions that only add null, float bounds on
/// integers, formats Kubernetes does not define.
#[test]
fn crd_schemas_hold_nothing_that_stricter_validators_refuse() {
    const FORMATS: &[&str] = &["int32", "int64", "float", "double", "byte", "date", "date-time", "password"];
    fn walk(node: &Value, path: &str, problems: &mut Vec<String>) {
        let Some(obj) = node.as_object() else { return };
        if let Some(values) = obj.get("enum").and_then(Value::as_array)
            && values.iter().any(Value::is_null)
        {
            problems.push(format!("{path}: null among the enum values"));
        }
        for union in ["anyOf", "oneOf"] {
            if obj.contains_key(union) && !obj.contains_key("x-kubernetes-int-or-string") {
                problems.push(format!("{path}: {union}"));
            }
        }
        if obj.get("type").and_then(Value::as_str) == Some("integer") {
            for bound in ["minimum", "maximum"] {
                if obj.get(bound).is_some_and(|b| !b.is_i64() && !b.is_u64()) {
                    problems.push(format!("{path}: {bound} {} is not an integer", obj[bound]));
                }
            }
        }
        if let Some(format) = obj.get("format").and_then(Value::as_str)
            && !FORMATS.contains(&format)
        {
            problems.push(format!("{path}: format {format}"));
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), problems);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = obj.get(key) {
                walk(child, &format!("{path}[]"), problems);
            }
        }
    }
    for (file, yaml) in manifests() {
        let crd: Value = yaml_serde::from_str(&yaml).unwrap();
        let mut problems = Vec::new();
        walk(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], file, &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(!yaml.contains(".0\n"), "{file} still writes a float bound");
    }
    // The phase keeps its values and stays optional.
    let (_, room) = &fanout_operator::crd::definitions()[0];
    let phase = &room["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"];
    assert_eq!(phase["enum"], serde_json::json!(["Pending", "Scheduled", "Failed"]));
    assert_eq!(phase["nullable"], true);
}
