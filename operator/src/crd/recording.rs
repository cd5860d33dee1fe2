// kube's `printcolumn(...)` arguments repeat `type_ = "..."` by design; clippy reads them as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A recording of one Room.
///
/// The operator asks the worker hosting the room to record it (every producer into its own
/// file, on the recording volume of the worker's SfuWorker) and copies the worker's account of
/// the files into `status`. Delete the Recording, or set `spec.stop`, to stop; the files stay on
/// the volume either way.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "fanout.dev",
    version = "v1alpha1",
    kind = "Recording",
    plural = "recordings",
    shortname = "rec",
    category = "fanout",
    namespaced,
    status = "RecordingStatus",
    derive = "PartialEq",
    doc = "A recording of a Fanout Room, made by the worker hosting the room onto its recording volume.",
    printcolumn(name = "Room", type_ = "string", json_path = ".spec.roomName", description = "The Room recorded"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Pending, Recording, Stopped or Failed"),
    printcolumn(name = "Worker", type_ = "string", json_path = ".status.worker.pod", description = "Worker pod recording the room"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RecordingSpec {
    /// The Room to record, in the Recording's namespace. The Recording waits (phase `Pending`)
    /// until the Room exists and is placed on a worker.
    #[schemars(length(min = 1, max = 63))]
    pub room_name: String,

    /// Stop recording (the files are finished and kept). A stopped Recording does not start
    /// again when this is set back to false: create a new Recording instead.
    #[serde(default)]
    pub stop: bool,
}

/// Observed state of a recording.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingStatus {
    /// `Pending` (waiting for the Room or its worker), `Recording`, `Stopped` or `Failed` (the
    /// worker could not write: see the `Recording` condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RecordingPhase>,
    /// When the worker started recording (the first worker, if the room moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When recording stopped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Time>,
    /// The worker recording the room (the last one, if the room moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<RecordingWorker>,
    /// Every file written, as the worker last reported it; files of a worker the room moved
    /// away from are kept (their sizes as last reported).
    #[serde(default)]
    pub files: Vec<RecordingFile>,
    /// `Recording`: True while recording; when not, the reason says why. Waiting (`Pending`):
    /// `RoomNotFound`, `RoomNotPlaced`, `RoomNotOpen` (nobody has joined the room on its worker
    /// yet), `WorkerUnreachable`, `RecordingDisabled` (the pool has no `spec.recording`),
    /// `RecordingLost` (the worker restarted; starting again). Final: `Stopped`, `RoomNotFound`
    /// (the room was deleted), `DiskFull`, `WriteFailed`, `WorkerFailed`, `WorkerRefused`.
    /// `Moved`: True once the room moved to another worker mid-recording.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// See [`RecordingStatus::phase`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum RecordingPhase {
    Pending,
    Recording,
    Stopped,
    Failed,
}

/// Which worker records (or recorded) the room.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingWorker {
    /// The SfuWorker (pool) of the worker pod.
    pub sfu_worker: String,
    /// The worker pod.
    pub pod: String,
    /// UID of the worker pod: a pod recreated under the same name holds none of the recording.
    pub pod_uid: String,
    /// Base URL of the worker's REST API.
    pub endpoint: String,
}

/// One file of a recording, as the worker reports it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingFile {
    /// The worker pod whose recording volume holds the file.
    pub pod: String,
    /// File name.
    pub name: String,
    /// Path of the file inside the worker's recording volume.
    pub path: String,
    /// The producer (one participant's audio or video track) the file holds.
    pub producer_id: String,
    /// `audio` or `video`.
    pub kind: String,
    /// Codec of the media (`opus`, `VP8`, ...).
    pub codec: String,
    /// Container format (`webm`, `ogg`, ...).
    pub container: String,
    /// Bytes written so far.
    #[schemars(range(min = 0))]
    pub bytes: i64,
    /// Media duration written so far, in milliseconds.
    #[schemars(range(min = 0))]
    pub duration_ms: i64,
    /// Milliseconds from the recording's start to the file's first frame: where the file's
    /// time 0 is, to line up the files of one recording (docs/recording.md).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub start_offset_ms: i64,
}
