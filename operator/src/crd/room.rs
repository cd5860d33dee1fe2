// kube's `printcolumn(...)` arguments repeat `type_ = "..."` by design; clippy reads them as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, MicroTime};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One conference or classroom.
///
/// The operator places the room on one ready worker replica (of an SfuWorker in the same
/// namespace) and records the placement in `status.placement`, where signalling reads it.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "fanout.dev",
    version = "v1alpha1",
    kind = "Room",
    plural = "rooms",
    shortname = "rm",
    category = "fanout",
    namespaced,
    status = "RoomStatus",
    derive = "PartialEq",
    doc = "A Fanout room (conference or classroom), placed by the operator onto one SFU worker pod.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Pending, Scheduled or Failed"),
    printcolumn(name = "Worker", type_ = "string", json_path = ".status.placement.pod", description = "Worker pod hosting the room"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.placement.node", description = "Node of the worker pod"),
    printcolumn(name = "Max Peers", type_ = "integer", json_path = ".spec.maxPeers", description = "Peers reserved on the worker"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RoomSpec {
    /// Human-readable name shown to participants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,

    /// Most peers the room admits. The scheduler reserves this many peers on the chosen worker.
    #[serde(default = "default_max_peers")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_peers: i32,

    /// Which SfuWorkers (by their labels) may host the room. Empty: any pool in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_selector: Option<LabelSelector>,

    /// Roles (the `role` claim of a participant's token) allowed to publish media.
    /// Empty: everyone may publish.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publishers: Vec<String>,

    /// Codecs the room offers, in order of preference (signalling opens the room on its worker
    /// with them; only these can be produced). Empty: all that the worker supports (opus, VP8,
    /// VP9, H264).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codecs: Vec<RoomCodec>,

    /// Delete the Room once its worker has reported it empty (no peers) for this many seconds;
    /// signalling sets it on the rooms it creates on demand. The operator asks the worker every
    /// quarter of it (at most every 30 s). Signalling opens the room on its worker with the same
    /// timeout, so the worker frees the room's media state after as long. Unset: the operator
    /// never deletes the room, and the worker frees an empty room's media state after its
    /// default (`--empty-room-timeout-seconds`), opening it again at the next join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub empty_timeout_seconds: Option<i64>,
}

/// A codec a room may offer.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum RoomCodec {
    #[serde(rename = "opus")]
    Opus,
    VP8,
    VP9,
    H264,
}

/// Observed state of a room.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomStatus {
    /// `Pending` (waiting for a worker), `Scheduled` (placed) or `Failed` (invalid spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RoomPhase>,
    /// Where the room lives. Signalling sends the room's media calls to `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// `Scheduled`, with the reason when the room could not be placed.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Since when the room's worker has reported it empty (only for rooms with
    /// `emptyTimeoutSeconds`); cleared when a peer is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_since: Option<MicroTime>,
}

/// See [`RoomStatus::phase`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum RoomPhase {
    Pending,
    Scheduled,
    Failed,
}

/// The worker replica hosting a room.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The SfuWorker (pool) of the hosting pod.
    pub sfu_worker: String,
    /// The hosting worker pod.
    pub pod: String,
    /// UID of the hosting pod: a pod recreated under the same name is a different worker, with
    /// none of this room's state, so the room must be placed again.
    pub pod_uid: String,
    /// Node of the hosting pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Base URL of the worker's REST API.
    pub endpoint: String,
    /// IP the worker announces to browsers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_ip: Option<String>,
    /// Peers reserved on the worker for this room (the room's `maxPeers` when it was placed).
    /// Commitments are summed from these, so the scheduler never oversubscribes a worker, even
    /// across operator restarts.
    pub reserved_peers: i32,
}

fn default_max_peers() -> i32 {
    50
}
