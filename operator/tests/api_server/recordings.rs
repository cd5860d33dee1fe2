//! Recordings through the real API server and the real `fanout-operator`: the CRD's schema,
//! the finalizer, the status phases and conditions. The first test plays the worker with a fake
//! of its recording API (`/v1/rooms/{room}/recordings`), served on each worker pod's node
//! address and port (`Kubelet::start_fakes`) and checking the operator's bearer token, so that
//! it can report growing files and a full disk at will; the second runs the real worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use fanout_operator::crd::{Recording, RecordingPhase};
use fanout_operator::worker_api::{WorkerRecording, WorkerRecordingError, WorkerRecordingFile, WorkerRecordingState};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use crate::cluster::{cluster, eventually, Cluster, WORKER_TOKEN};
use crate::kit::say;
use crate::kubelet::Kubelet;
use crate::operator::{Operator, OperatorArgs};
use crate::pools::{pool_spec, ready_pool, worker_token_secret};

const WAIT: Duration = Duration::from_secs(30);

/// What the fake worker records, by `(room, id)`, and every call it was sent.
#[derive(Default)]
struct Recorder {
    recordings: HashMap<(String, String), WorkerRecording>,
    calls: Vec<String>,
}

type Shared = Arc<Mutex<Recorder>>;

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {WORKER_TOKEN}"))
}

/// The worker's REST API as far as the operator uses it here, recordings per the contract.
fn fake_worker(state: Shared) -> Router {
    async fn start(State(s): State<Shared>, headers: HeaderMap, Path(room): Path<String>, Json(body): Json<serde_json::Value>) -> Response {
        if !authorised(&headers) {
            return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "missing or wrong bearer token");
        }
        let Some(id) = body["recordingId"].as_str().map(String::from) else {
            return error(StatusCode::BAD_REQUEST, "INVALID_ID", "recordingId missing");
        };
        let mut s = s.lock().unwrap();
        s.calls.push(format!("POST {room} {id}"));
        if let Some(existing) = s.recordings.get(&(room.clone(), id.clone())) {
            return (StatusCode::OK, Json(existing.clone())).into_response();
        }
        let rec = crate::recording_fixtures::started(&room, &id);
        s.recordings.insert((room, id), rec.clone());
        (StatusCode::CREATED, Json(rec)).into_response()
    }
    async fn read(State(s): State<Shared>, headers: HeaderMap, Path((room, id)): Path<(String, String)>) -> Response {
        if !authorised(&headers) {
            return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "missing or wrong bearer token");
        }
        let mut s = s.lock().unwrap();
        s.calls.push(format!("GET {room} {id}"));
        match s.recordings.get(&(room, id)) {
            Some(r) => Json(r.clone()).into_response(),
            None => error(StatusCode::NOT_FOUND, "RECORDING_NOT_FOUND", "no such recording"),
        }
    }
    async fn stop(State(s): State<Shared>, headers: HeaderMap, Path((room, id)): Path<(String, String)>) -> Response {
        if !authorised(&headers) {
            return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "missing or wrong bearer token");
        }
        let mut s = s.lock().unwrap();
        s.calls.push(format!("DELETE {room} {id}"));
        match s.recordings.get_mut(&(room, id)) {
            Some(r) => {
                if r.state == WorkerRecordingState::Recording {
                    r.state = WorkerRecordingState::Stopped;
                    r.stopped_at = Some(jiff::Timestamp::now().to_string());
                }
                Json(r.clone()).into_response()
            }
            None => error(StatusCode::NOT_FOUND, "RECORDING_NOT_FOUND", "no such recording"),
        }
    }
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/stats", get(|| async { Json(fanout_worker::api::WorkerStats::default()) }))
        .route("/v1/rooms/{room}", delete(|| async { StatusCode::NO_CONTENT }))
        .route("/v1/rooms/{room}/recordings", post(start))
        .route("/v1/rooms/{room}/recordings/{id}", get(read).delete(stop))
        .with_state(state)
}

/// Sent untyped, so that specs the Rust type would refuse reach the server's schema.
pub(crate) async fn create_recording(c: &Cluster, name: &str, spec: serde_json::Value) -> Result<Recording, kube::Error> {
    let resource = ApiResource::erase::<Recording>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), &c.ns, &resource);
    let object = json!({"apiVersion": "fanout.dev/v1alpha1", "kind": "Recording", "metadata": {"name": name}, "spec": spec});
    let created = api.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await?;
    Ok(serde_json::from_value(serde_json::to_value(created).unwrap()).expect("a stored Recording reads as one"))
}

/// The Recording once its phase is `phase`, with the reason of its `Recording` condition.
pub(crate) async fn phase(c: &Cluster, name: &str, phase: RecordingPhase) -> (Recording, String) {
    let api: Api<Recording> = c.api();
    eventually(&format!("recording {name} {phase:?}"), WAIT, || async {
        let r = api.get(name).await.ok()?;
        let status = r.status.as_ref()?;
        (status.phase == Some(phase)).then_some(())?;
        let reason = status.conditions.iter().find(|c| c.type_ == "Recording")?.reason.clone();
        Some((r, reason))
    })
    .await
}

fn file(name: &str, bytes: u64, duration_ms: u64) -> WorkerRecordingFile {
    crate::recording_fixtures::audio_file("lesson", name, bytes, duration_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_wait_for_their_room_record_stop_fail_and_are_deleted_through_the_finalizer() {
    let Some(c) = cluster("recording").await else { return };
    let nodes = c.nodes(1).await;
    worker_token_secret(&c).await;
    let spec = pool_spec(&c, &nodes, 1, json!({"recording": {"volume": {"emptyDir": {"sizeLimit": "1Gi"}}}}));
    c.create_pool("sfu", spec).await;
    let recorder: Shared = Arc::default();
    let _kubelet = Kubelet::start_fakes(&c, nodes.clone(), fake_worker(recorder.clone()));
    let _operator = Operator::start(&c, "op", OperatorArgs::default());
    ready_pool(&c, "sfu", 1).await;
    let recordings: Api<Recording> = c.api();

    // The worker pod as the server stored it: the volume mounted where --recording-dir says.
    let pod = c.api::<Pod>().get("sfu-0").await.unwrap();
    let pod_spec = pod.spec.unwrap();
    let container = &pod_spec.containers[0];
    assert!(container.args.as_ref().unwrap().iter().any(|a| a == "--recording-dir=/var/lib/fanout/recordings"));
    let mount = container.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "recordings").expect("the recording mount");
    assert_eq!(mount.mount_path, "/var/lib/fanout/recordings");
    let volume = pod_spec.volumes.unwrap().into_iter().find(|v| v.name == "recordings").unwrap();
    assert_eq!(volume.empty_dir.unwrap().size_limit.unwrap().0, "1Gi");

    // The schema: a room name is required, and a pool's volume is one kind or the other.
    for bad in [json!({}), json!({"roomName": ""}), json!({"roomName": "lesson", "stop": "yes"})] {
        let refused = create_recording(&c, "bad", bad.clone()).await.expect_err("refused by the schema");
        assert!(matches!(&refused, kube::Error::Api(e) if e.code == 422), "{bad}: {refused}");
    }
    let two_volumes = pool_spec(&c, &nodes, 0, json!({"recording": {"volume": {"emptyDir": {}, "persistentVolumeClaim": {"claimName": "x"}}}}));
    let object = json!({"apiVersion": "fanout.dev/v1alpha1", "kind": "SfuWorker", "metadata": {"name": "two"}, "spec": two_volumes});
    let refused = c.api::<fanout_operator::crd::SfuWorker>().create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await;
    assert!(format!("{:?}", refused.expect_err("two volumes refused")).contains("exactly one of persistentVolumeClaim or emptyDir"));

    // No room yet: Pending, and the finalizer is in place.
    create_recording(&c, "first", json!({"roomName": "lesson"})).await.expect("a Recording is accepted");
    let (rec, reason) = phase(&c, "first", RecordingPhase::Pending).await;
    assert_eq!(reason, "RoomNotFound");
    assert_eq!(rec.finalizers(), ["fanout.dev/stop-recording"]);
    assert!(!rec.spec.stop, "stop defaults to false");
    let uid = rec.uid().unwrap();

    // The Room arrives: the Room watch wakes the Recording, which starts on the room's worker.
    let created = std::time::Instant::now();
    c.create_room("lesson", json!({"maxPeers": 10})).await;
    let (rec, reason) = phase(&c, "first", RecordingPhase::Recording).await;
    say(format!("figure: Room created -> its waiting Recording Recording in {:.0} ms", created.elapsed().as_secs_f64() * 1e3));
    assert_eq!(reason, "Recording");
    let status = rec.status.unwrap();
    assert_eq!(status.worker.as_ref().unwrap().pod, "sfu-0");
    assert!(status.started_at.is_some());
    assert!(recorder.lock().unwrap().calls.contains(&format!("POST lesson {uid}")), "the recording id is the UID");
    c.expect_event("first", "Recording").await;

    // The worker writes: the polls copy sizes and durations into the status.
    recorder.lock().unwrap().recordings.get_mut(&("lesson".into(), uid.clone())).unwrap().files = vec![file("mic.webm", 12_345, 1_000)];
    let files = eventually("files in the status", WAIT, || async {
        let files = recordings.get("first").await.ok()?.status?.files;
        (files.first()?.bytes == 12_345).then_some(files)
    })
    .await;
    assert_eq!((files[0].name.as_str(), files[0].duration_ms, files[0].pod.as_str()), ("mic.webm", 1_000, "sfu-0"));

    // spec.stop: stopped on the worker, final files, stoppedAt.
    recorder.lock().unwrap().recordings.get_mut(&("lesson".into(), uid.clone())).unwrap().files = vec![file("mic.webm", 20_000, 1_600)];
    recordings.patch("first", &PatchParams::default(), &Patch::Merge(json!({"spec": {"stop": true}}))).await.unwrap();
    let (rec, reason) = phase(&c, "first", RecordingPhase::Stopped).await;
    assert_eq!(reason, "Stopped");
    let status = rec.status.unwrap();
    assert!(status.stopped_at.is_some());
    assert_eq!(status.files[0].bytes, 20_000);
    assert_eq!(recorder.lock().unwrap().recordings[&("lesson".to_string(), uid.clone())].state, WorkerRecordingState::Stopped);

    // A second one fills the disk: Failed, DiskFull, with the worker's message.
    create_recording(&c, "second", json!({"roomName": "lesson"})).await.unwrap();
    let (rec, _) = phase(&c, "second", RecordingPhase::Recording).await;
    let uid2 = rec.uid().unwrap();
    {
        let mut r = recorder.lock().unwrap();
        let on_worker = r.recordings.get_mut(&("lesson".into(), uid2.clone())).unwrap();
        on_worker.state = WorkerRecordingState::Failed;
        on_worker.error = Some(WorkerRecordingError { code: "RECORDING_DISK_FULL".into(), message: "no space left on device".into() });
    }
    let (rec, reason) = phase(&c, "second", RecordingPhase::Failed).await;
    assert_eq!(reason, "DiskFull");
    let message = &rec.status.unwrap().conditions[0].message;
    assert!(message.contains("no space left on device"), "{message}");
    c.expect_event("second", "DiskFull").await;

    // Deleting a running one stops it on the worker, then the finalizer goes.
    create_recording(&c, "third", json!({"roomName": "lesson"})).await.unwrap();
    let (rec, _) = phase(&c, "third", RecordingPhase::Recording).await;
    let uid3 = rec.uid().unwrap();
    for name in ["first", "second", "third"] {
        recordings.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["first", "second", "third"] {
        eventually(&format!("{name} gone"), WAIT, || async { recordings.get_opt(name).await.ok()?.is_none().then_some(()) }).await;
    }
    let r = recorder.lock().unwrap();
    assert!(r.calls.contains(&format!("DELETE lesson {uid3}")), "{:?}", r.calls);
    assert_eq!(r.recordings[&("lesson".to_string(), uid3)].state, WorkerRecordingState::Stopped);
    // The stopped and the failed one needed no call to be deleted.
    let deletes = r.calls.iter().filter(|c| c.starts_with("DELETE")).count();
    assert_eq!(deletes, 2, "one for spec.stop, one for the running one's finalizer: {:?}", r.calls);
}

/// The same contract with the real worker (in-process, its recording directory a folder of the
/// test's): a placed room that nobody has opened yet waits (`RoomNotOpen`), starts once the room
/// is open on its worker, and stops there with `spec.stop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_runs_on_the_real_worker_once_its_room_is_open_and_stops_there() {
    let Some(c) = cluster("recording-real").await else { return };
    let nodes = c.nodes(1).await;
    worker_token_secret(&c).await;
    c.create_pool("sfu", pool_spec(&c, &nodes, 1, json!({"recording": {"volume": {"emptyDir": {}}}}))).await;
    let _kubelet = Kubelet::start(&c, nodes.clone());
    let _operator = Operator::start(&c, "op", OperatorArgs::default());
    ready_pool(&c, "sfu", 1).await;
    let recordings: Api<Recording> = c.api();
    let workers = fanout_worker::client::WorkerClient::new(Some(WORKER_TOKEN.into()), Duration::from_secs(2));

    c.create_room("class", json!({"maxPeers": 10})).await;
    let placement = c.placed("class", WAIT).await;
    let rec = create_recording(&c, "live", json!({"roomName": "class"})).await.unwrap();
    let uid = rec.uid().unwrap();
    // Nobody has joined: the worker has not opened the room, so it cannot record it yet (the
    // first status may still say RoomNotFound, from before the Room reached the cache).
    let reason = eventually("live pending with RoomNotOpen", WAIT, || async {
        let s = recordings.get("live").await.ok()?.status?;
        (s.phase == Some(RecordingPhase::Pending)).then_some(())?;
        s.conditions.into_iter().find(|c| c.type_ == "Recording" && c.reason == "RoomNotOpen").map(|c| c.reason)
    })
    .await;
    assert_eq!(reason, "RoomNotOpen");

    // Signalling would open it at the first join; the next try of the operator starts recording.
    workers.ensure_room(&placement.endpoint, "class", &[]).await.expect("the room opens on its worker");
    let opened = std::time::Instant::now();
    phase(&c, "live", RecordingPhase::Recording).await;
    say(format!("figure: room opened on its worker -> Recording Recording in {:.1} s (retried every 5 s)", opened.elapsed().as_secs_f64()));
    let on_worker = workers.recording(&placement.endpoint, "class", &uid).await.expect("the worker has the recording");
    assert_eq!(on_worker.recording_id, uid);

    recordings.patch("live", &PatchParams::default(), &Patch::Merge(json!({"spec": {"stop": true}}))).await.unwrap();
    let (rec, reason) = phase(&c, "live", RecordingPhase::Stopped).await;
    assert_eq!(reason, "Stopped");
    assert!(rec.status.unwrap().stopped_at.is_some());
    let on_worker = workers.recording(&placement.endpoint, "class", &uid).await.expect("a stopped recording still answers");
    assert_eq!(serde_json::to_value(on_worker.state).unwrap(), "stopped");
    recordings.delete("live", &DeleteParams::default()).await.unwrap();
    eventually("live gone", WAIT, || async { recordings.get_opt("live").await.ok()?.is_none().then_some(()) }).await;
}
