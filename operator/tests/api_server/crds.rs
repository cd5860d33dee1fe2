//! The committed CRDs as the API server takes them: accepted as structural schemas, stored
//! unchanged, enforced on every object (defaults, bounds, enums, CEL rules).

use fanout_operator::crd::{Room, RoomPhase, SfuWorker};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::cluster::cluster;

#[tokio::test]
async fn the_committed_crds_are_established_and_stored_as_written() {
    let Some(c) = cluster("crds-established").await else { return };
    let api: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    for (file, name) in [("room.yaml", "rooms.fanout.dev"), ("sfuworker.yaml", "sfuworkers.fanout.dev"), ("recording.yaml", "recordings.fanout.dev")] {
        let stored = api.get(name).await.unwrap();
        let conditions = stored.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let holds = |t: &str| conditions.iter().any(|c| c.type_ == t && c.status == "True");
        assert!(holds("Established") && holds("NamesAccepted"), "{name}: {conditions:?}");
        // A non-structural schema is refused outright by apiextensions/v1; the condition is
        // what the server reports for schemas it accepted with structural problems.
        assert!(!holds("NonStructuralSchema"), "{name}: {conditions:?}");

        // The server dropped nothing it did not understand from the schema.
        let text = std::fs::read_to_string(crate::repo().join("crds").join(file)).unwrap();
        let committed: Value = yaml_serde::from_str(&text).unwrap();
        // Typed, the server's bounds come back as floats: compare numbers as numbers.
        let stored = numbers_as_floats(serde_json::to_value(&stored).unwrap());
        let committed = numbers_as_floats(committed);
        assert_eq!(
            stored["spec"]["versions"][0]["schema"], committed["spec"]["versions"][0]["schema"],
            "{name}: the stored schema differs from crds/{file}"
        );
    }
}

#[tokio::test]
async fn the_server_refuses_invalid_rooms_and_pools_with_the_schemas_reasons() {
    let Some(c) = cluster("crds-refuse").await else { return };
    let rooms: Api<Room> = c.api();
    let untyped = |kind: ApiResource| Api::<DynamicObject>::namespaced_with(c.client.clone(), &c.ns, &kind);
    let pool_spec = |extra: Value| {
        let mut spec = json!({"image": "fanout:test"});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        spec
    };

    let room_cases = [
        (json!({"maxPeers": 0}), "spec.maxPeers: Invalid value: 0: spec.maxPeers in body should be greater than or equal to 1"),
        (json!({"maxPeers": "ten"}), "spec.maxPeers: Invalid value: \"string\": spec.maxPeers in body must be of type integer"),
        (json!({"codecs": ["AV1"]}), "spec.codecs[0]: Unsupported value: \"AV1\""),
        (json!({"emptyTimeoutSeconds": 0}), "spec.emptyTimeoutSeconds in body should be greater than or equal to 1"),
    ];
    // Sent untyped: some of these are not even valid for our own Rust types.
    let raw = untyped(ApiResource::erase::<Room>(&()));
    for (i, (spec, expected)) in room_cases.into_iter().enumerate() {
        let object = json!({"apiVersion": "fanout.dev/v1alpha1", "kind": "Room", "metadata": {"name": format!("bad-{i}")}, "spec": spec});
        let err = raw.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await.expect_err(expected);
        assert_refusal(err, expected, &format!("room case {i}"));
    }

    let pool_cases = [
        (json!({"replicas": 1}), "spec.image: Required value"),
        (pool_spec(json!({"rtcPorts": {"min": 50000, "max": 40000}})), "rtcPorts.max must be at least rtcPorts.min"),
        (pool_spec(json!({"rtcPorts": {"min": 80, "max": 90}})), "spec.rtcPorts.min in body should be greater than or equal to 1024"),
        (pool_spec(json!({"httpPort": 70000})), "spec.httpPort in body should be less than or equal to 65535"),
        (pool_spec(json!({"replicas": -1})), "spec.replicas in body should be greater than or equal to 0"),
        (pool_spec(json!({"announcedAddress": {"source": "Bogus"}})), "spec.announcedAddress.source: Unsupported value: \"Bogus\""),
        (pool_spec(json!({"capacity": {"maxPeers": 10}})), "spec.capacity.maxRooms: Required value"),
    ];
    let raw = untyped(ApiResource::erase::<SfuWorker>(&()));
    for (i, (spec, expected)) in pool_cases.into_iter().enumerate() {
        let object = json!({"apiVersion": "fanout.dev/v1alpha1", "kind": "SfuWorker", "metadata": {"name": format!("bad-{i}")}, "spec": spec});
        let err = raw.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await.expect_err(expected);
        assert_refusal(err, expected, &format!("pool case {i}"));
    }

    // What is valid is taken, with the schema's defaults filled in by the server.
    let room = c.create_room("minimal", json!({})).await;
    assert_eq!(room.spec.max_peers, 50, "maxPeers defaults to 50 on the server");
    let pool = c.create_pool("minimal", json!({"image": "fanout:test"})).await;
    assert_eq!((pool.spec.replicas, pool.spec.http_port), (1, 3000));
    assert_eq!((pool.spec.rtc_ports.min, pool.spec.rtc_ports.max), (40000, 49999));
    assert_eq!(pool.spec.drain_timeout_seconds, 1800);

    // The status: a phase from the enum, or none at all; nothing else.
    let pp = PatchParams::default();
    let status = rooms
        .patch_status("minimal", &pp, &Patch::Merge(json!({"status": {"phase": "Pending"}})))
        .await
        .expect("phase Pending is taken")
        .status
        .unwrap();
    assert_eq!(status.phase, Some(RoomPhase::Pending));
    let status = rooms
        .patch_status("minimal", &pp, &Patch::Merge(json!({"status": {"phase": null}})))
        .await
        .expect("a status without phase is taken")
        .status
        .unwrap();
    assert_eq!(status.phase, None);
    let err = rooms
        .patch_status("minimal", &pp, &Patch::Merge(json!({"status": {"phase": "Bogus"}})))
        .await
        .expect_err("an unknown phase is refused");
    assert_refusal(err, "status.phase: Unsupported value: \"Bogus\": supported values: \"Pending\", \"Scheduled\", \"Failed\"", "phase");
}

fn numbers_as_floats(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_floats).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_floats(v))).collect()),
        other => other,
    }
}

fn assert_refusal(err: kube::Error, expected: &str, case: &str) {
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422, "{case}: {e:?}");
            assert!(e.message.contains(expected), "{case}: expected {expected:?} in {:?}", e.message);
        }
        other => panic!("{case}: expected a refusal by the server, got {other}"),
    }
}
