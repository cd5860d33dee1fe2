// kube's `printcolumn(...)` arguments repeat `type_ = "..."` by design; clippy reads them as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements, SecretKeySelector, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default `spec.replicas`.
pub const DEFAULT_REPLICAS: i32 = 1;
/// Default `spec.httpPort`: the worker binary's own default.
pub const DEFAULT_HTTP_PORT: i32 = fanout_worker::defaults::HTTP_PORT as i32;
/// Default `spec.rtcPorts`: the worker binary's own default range.
pub const DEFAULT_RTC_PORTS: RtcPortRange = RtcPortRange {
    min: fanout_worker::defaults::RTC_MIN_PORT as i32,
    max: fanout_worker::defaults::RTC_MAX_PORT as i32,
};
/// Default `spec.tcpPort`: the worker binary's own ICE-TCP port.
pub const DEFAULT_TCP_PORT: i32 = fanout_worker::defaults::RTC_TCP_PORT as i32;
/// Default `spec.capacity`.
pub const DEFAULT_CAPACITY: WorkerCapacity = WorkerCapacity { max_peers: 500, max_rooms: 50 };
/// Default `spec.drainTimeoutSeconds`.
pub const DEFAULT_DRAIN_TIMEOUT_SECONDS: i64 = 1800;

/// A pool of Fanout SFU worker pods.
///
/// Each replica is a Pod named `<name>-<ordinal>` running on the host network of its node, so
/// browsers reach it directly over UDP in `rtcPorts`. Rooms are scheduled onto ready,
/// non-draining replicas; scaling down drains the highest ordinals first.
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "fanout.dev",
    version = "v1alpha1",
    kind = "SfuWorker",
    plural = "sfuworkers",
    shortname = "sfw",
    category = "fanout",
    namespaced,
    status = "SfuWorkerStatus",
    derive = "PartialEq",
    doc = "A pool of Fanout SFU worker pods on the host network, onto which Rooms are scheduled.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas", description = "Replicas asked for"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Replicas ready for rooms"),
    printcolumn(name = "Rooms", type_ = "integer", json_path = ".status.rooms", description = "Rooms placed on this pool"),
    printcolumn(name = "Peers", type_ = "integer", json_path = ".status.peers", description = "Peers connected, as reported by the workers"),
    printcolumn(name = "Ports", type_ = "string", json_path = ".status.portRange", description = "UDP port range for media"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SfuWorkerSpec {
    /// Number of worker pods. Each needs a node of its own (the HTTP port is a hostPort).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Container image with the `fanout-worker` program on its PATH (Fanout's image has it).
    #[schemars(length(min = 1))]
    pub image: String,

    /// Image pull policy for the worker container (Always, IfNotPresent, Never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,

    /// Secrets (in the pool's namespace) for pulling `image` from a private registry. Changing
    /// them restarts no worker: pods made from then on use the new list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// TCP port of the worker's internal REST API and health endpoint on the node.
    /// Declared as a hostPort, so two workers on one node can never collide on it.
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub http_port: i32,

    /// UDP ports for WebRTC transports on the node (one port per transport). Open these in the
    /// nodes' firewall. Pools that may share a node must use ranges that do not overlap.
    #[serde(default)]
    pub rtc_ports: RtcPortRange,

    /// TCP port on the node that every transport of a worker shares for ICE-TCP: browsers whose
    /// networks block UDP connect here. Open it to browsers in the nodes' firewall too. Pools
    /// that may share a node must use different ports.
    #[serde(default = "default_tcp_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub tcp_port: i32,

    /// Offer ICE-TCP candidates (`false`: UDP only, and `tcpPort` is not opened).
    #[serde(default = "default_enable_tcp")]
    pub enable_tcp: bool,

    /// How much one replica may host. The scheduler never commits more than this.
    #[serde(default)]
    pub capacity: WorkerCapacity,

    /// Which IP the worker announces to browsers in its ICE candidates.
    #[serde(default)]
    pub announced_address: AnnouncedAddress,

    /// Number of media threads per worker (default: the worker uses one per core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub media_threads: Option<i32>,

    /// Secret holding the bearer token of the worker's REST API, shared with signalling and the
    /// operator. Without it the API is open to anything that reaches the node's HTTP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_secret: Option<SecretKeySelector>,

    /// Node labels a node must have to run a worker of this pool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations for the worker pods (for example to run on dedicated media nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// CPU and memory for the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// How long a draining replica (scale down, or replacement after a spec change) may keep its
    /// rooms before it is deleted anyway; its rooms are then moved to other replicas.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 0))]
    pub drain_timeout_seconds: i64,

    /// Where the workers write recordings (Recording objects): a volume mounted into every
    /// worker pod, passed to the worker as `--recording-dir`. Unset: the pool's workers refuse
    /// to record (Recordings of its rooms wait with the reason `RecordingDisabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingStorage>,
}

/// Default `spec.recording.path`.
pub const DEFAULT_RECORDING_PATH: &str = "/var/lib/fanout/recordings";

/// The recording volume of a pool's workers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingStorage {
    /// The volume recordings are written to.
    pub volume: RecordingVolume,
    /// Where the volume is mounted in the worker container (the worker's `--recording-dir`).
    #[serde(default = "default_recording_path")]
    #[schemars(regex(pattern = r"^/[^\s]*$"), length(min = 2, max = 1024))]
    pub path: String,
}

/// Exactly one of `persistentVolumeClaim` or `emptyDir`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.persistentVolumeClaim) != has(self.emptyDir)").message("recording.volume needs exactly one of persistentVolumeClaim or emptyDir"))]
pub struct RecordingVolume {
    /// A PersistentVolumeClaim in the pool's namespace: recordings outlive the pods. Every
    /// replica mounts the same claim, so with more than one replica it must allow that
    /// (ReadWriteMany, or ReadWriteOnce with all replicas on one node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<RecordingClaim>,
    /// A directory on the node that lives as long as the pod: recordings are lost with the pod
    /// (for trying recording out, or when something copies the files off the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<RecordingEmptyDir>,
}

/// See [`RecordingVolume::persistent_volume_claim`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingClaim {
    /// Name of the PersistentVolumeClaim.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

/// See [`RecordingVolume::empty_dir`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingEmptyDir {
    /// Most the directory may hold (`10Gi`); the kubelet evicts the pod beyond it, so keep it
    /// above what recordings need. Unset: no limit but the node's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

/// An inclusive UDP port range.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("self.max >= self.min").message("rtcPorts.max must be at least rtcPorts.min"))]
pub struct RtcPortRange {
    /// First port of the range.
    #[schemars(range(min = 1024, max = 65535))]
    pub min: i32,
    /// Last port of the range (inclusive).
    #[schemars(range(min = 1024, max = 65535))]
    pub max: i32,
}

impl Default for RtcPortRange {
    fn default() -> Self {
        DEFAULT_RTC_PORTS
    }
}

impl RtcPortRange {
    pub fn overlaps(&self, other: &RtcPortRange) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    pub fn contains(&self, port: i32) -> bool {
        self.min <= port && port <= self.max
    }
}

/// Limits of one replica.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerCapacity {
    /// Peers one replica may host across all its rooms; each Room reserves its `maxPeers`.
    #[schemars(range(min = 1))]
    pub max_peers: i32,
    /// Rooms one replica may host.
    #[schemars(range(min = 1))]
    pub max_rooms: i32,
}

impl Default for WorkerCapacity {
    fn default() -> Self {
        DEFAULT_CAPACITY
    }
}

/// Where the announced IP comes from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnnouncedAddress {
    /// `NodeIP`: the node's primary IP as the kubelet reports it (usually its InternalIP).
    /// `NodeExternalIP`: the node's ExternalIP address, resolved by the operator.
    /// `Fixed`: the address in `ip` (for example a NAT's public address).
    #[serde(default)]
    pub source: AnnouncedAddressSource,
    /// The address to announce when `source` is `Fixed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// See [`AnnouncedAddress::source`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
pub enum AnnouncedAddressSource {
    #[default]
    #[serde(rename = "NodeIP")]
    NodeIp,
    #[serde(rename = "NodeExternalIP")]
    NodeExternalIp,
    Fixed,
}

/// Observed state of a worker pool.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SfuWorkerStatus {
    /// Worker pods that exist (including draining ones).
    #[serde(default)]
    pub replicas: i32,
    /// Worker pods that are ready and accept rooms.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pool's pods (for the scale subresource and autoscalers).
    #[serde(default)]
    pub selector: String,
    /// `min-max` of the UDP range, for `kubectl get sfw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<String>,
    /// Rooms placed on the pool.
    #[serde(default)]
    pub rooms: i32,
    /// Peers connected, summed over the ready workers' reports.
    #[serde(default)]
    pub peers: i32,
    /// One entry per worker pod.
    #[serde(default)]
    pub workers: Vec<WorkerReplicaStatus>,
    /// `Ready`, `Progressing` and `PortConflict`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// State of one worker pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerReplicaStatus {
    /// Pod name, `<pool>-<ordinal>`.
    pub pod: String,
    /// Node the pod runs on, once scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Base URL of the worker's REST API (`http://<node IP>:<httpPort>`), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// IP the worker announces in ICE candidates, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_ip: Option<String>,
    /// The pod is Ready.
    pub ready: bool,
    /// The pod takes no new rooms and will be deleted once empty.
    pub draining: bool,
    /// The pod was built from an older spec and will be replaced.
    #[serde(default)]
    pub outdated: bool,
    /// Rooms placed on this pod.
    pub rooms: i32,
    /// Peers connected, as last reported by the worker (absent when it could not be asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<i32>,
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}
fn default_http_port() -> i32 {
    DEFAULT_HTTP_PORT
}
fn default_tcp_port() -> i32 {
    DEFAULT_TCP_PORT
}
fn default_enable_tcp() -> bool {
    true
}
fn default_drain_timeout() -> i64 {
    DEFAULT_DRAIN_TIMEOUT_SECONDS
}
fn default_recording_path() -> String {
    DEFAULT_RECORDING_PATH.to_string()
}
