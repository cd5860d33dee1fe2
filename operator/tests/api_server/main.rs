//! The operator and the chart against a real Kubernetes API server (kube-apiserver + etcd on
//! loopback, see `kit.rs`): the server's own schema validation, admission, server-side apply,
//! subresources and watches, with the test playing scheduler and kubelets (`kubelet.rs`) and
//! running real `fanout-operator` processes (`operator.rs`) and real workers.
//!
//! One control plane for the whole binary; each test works in a namespace of its own, so the
//! tests run in parallel. Without a control plane to start, each test says it was skipped.

mod cluster;
mod kit;
mod kubelet;
mod operator;

mod chart;
mod crds;
mod drills;
mod leader;
mod pools;
mod recordings;
#[path = "../common/recordings.rs"]
mod recording_fixtures;
mod rooms;

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
