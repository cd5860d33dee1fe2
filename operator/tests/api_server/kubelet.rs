//! The scheduler and the kubelets of a test's nodes, played by the test: there are none in the
//! control plane. Every 100 ms it looks at the namespace's pods and
//! - binds each unscheduled pod to a node (POST `pods/{name}/binding`) that holds no pod of the
//!   same pool and none with the same hostPort, as the required anti-affinity and the
//!   kube-scheduler's host-port check would;
//! - starts each newly bound worker pod: a real Fanout worker (the same `fanout_worker::start`
//!   the `fanout-worker` program runs) listening on the node's address and the pod's hostPort,
//!   then writes the pod's status (PATCH `pods/{name}/status`, merge patch): Running, pod and
//!   host IP = the node's IP (host network), Ready; a pod's recording volume is a directory of
//!   its own under the test target's temporary folder;
//! - finishes each pod being deleted: stops its worker and deletes it for good (grace 0), as a
//!   kubelet does once the containers have stopped.
//!
//! Workers run in this process ([`Kubelet::start`]) or, for the drills, as `fanout-worker`
//! processes with the pod's arguments ([`Kubelet::start_processes`]): those can be SIGKILLed,
//! and a deleted pod's worker gets SIGTERM as a container does. A test of a worker API the
//! real worker lacks serves a fake of it instead ([`Kubelet::start_fakes`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_worker::server::{start, RunningWorker, WorkerConfig, WorkerLimits};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::ResourceExt;
use serde_json::json;

use crate::cluster::{Cluster, NodeInfo, WORKER_TOKEN};
use crate::kit::say;

#[derive(Default)]
struct State {
    /// Running workers by pod name, with the UID of the pod they belong to.
    workers: HashMap<String, (String, PodWorker)>,
    /// Pods (by UID) this kubelet has started.
    started: HashSet<String>,
    /// Set: workers run as processes of this `fanout-worker` binary, logging into the folder.
    processes: Option<(PathBuf, PathBuf)>,
    /// Set: each pod's "worker" is this HTTP service, served on the node's address and the
    /// pod's HTTP port (for worker APIs the real worker does not have yet).
    fake: Option<axum::Router>,
}

/// A pod's running worker.
enum PodWorker {
    InProcess(RunningWorker),
    Process(tokio::process::Child),
    Fake(tokio::task::JoinHandle<()>),
}

impl PodWorker {
    /// As a container stops: graceful shutdown (SIGTERM for a process, which gets 10 s before
    /// SIGKILL, as a pod's termination grace).
    async fn stop(self) {
        match self {
            PodWorker::InProcess(w) => w.shutdown().await,
            PodWorker::Fake(server) => {
                server.abort();
                let _ = server.await;
            }
            PodWorker::Process(mut child) => {
                if let Some(pid) = child.id() {
                    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
        }
    }
}

pub struct Kubelet {
    state: Arc<tokio::sync::Mutex<State>>,
    pods: Api<Pod>,
    task: tokio::task::JoinHandle<()>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    /// Starts playing scheduler and kubelet for `nodes` in the cluster's namespace.
    pub fn start(cluster: &Cluster, nodes: Vec<NodeInfo>) -> Kubelet {
        Kubelet::with_state(cluster, nodes, State::default())
    }

    /// The same, with each worker a process of the `fanout-worker` program at `binary`, its
    /// output in `{logs}/{pod}.log`.
    pub fn start_processes(cluster: &Cluster, nodes: Vec<NodeInfo>, binary: PathBuf, logs: PathBuf) -> Kubelet {
        Kubelet::with_state(cluster, nodes, State { processes: Some((binary, logs)), ..State::default() })
    }

    /// The same, with each pod's worker the HTTP service `fake` (its state shared by every pod).
    pub fn start_fakes(cluster: &Cluster, nodes: Vec<NodeInfo>, fake: axum::Router) -> Kubelet {
        Kubelet::with_state(cluster, nodes, State { fake: Some(fake), ..State::default() })
    }

    fn with_state(cluster: &Cluster, nodes: Vec<NodeInfo>, state: State) -> Kubelet {
        let state = Arc::new(tokio::sync::Mutex::new(state));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let pods: Api<Pod> = cluster.api();
        let task = tokio::spawn({
            let (state, nodes, pods, errors) = (state.clone(), nodes.clone(), pods.clone(), errors.clone());
            async move {
                loop {
                    if let Err(e) = tick(&state, &nodes, &pods).await {
                        errors.lock().unwrap().push(e);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Kubelet { state, pods, task, errors }
    }

    /// Flips the pod's Ready condition, as a failing or recovering readiness probe does.
    pub async fn set_ready(&self, pod: &str, ready: bool) {
        let now = jiff::Timestamp::now().to_string();
        let status = if ready { "True" } else { "False" };
        let patch = json!({"status": {"conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": status, "lastTransitionTime": now},
        ]}});
        self.pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("pod status patch");
    }

    /// Stops the pod's worker but leaves the pod as it is (a worker that died unnoticed).
    pub async fn stop_worker(&self, pod: &str) {
        let worker = self.state.lock().await.workers.remove(pod);
        if let Some((_, w)) = worker {
            w.stop().await;
        }
    }

    /// SIGKILLs the pod's worker process and leaves the pod as it is (a worker that crashed).
    pub async fn kill_worker(&self, pod: &str) {
        let worker = self.state.lock().await.workers.remove(pod);
        match worker {
            Some((_, PodWorker::Process(mut child))) => {
                let _ = child.kill().await;
            }
            Some((_, PodWorker::InProcess(_) | PodWorker::Fake(_))) => {
                panic!("only worker processes can be killed (Kubelet::start_processes)")
            }
            None => panic!("no worker runs for pod {pod}"),
        }
    }

    /// Errors of the loop so far (API calls that failed), for a test's final check.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

async fn tick(state: &tokio::sync::Mutex<State>, nodes: &[NodeInfo], pods_api: &Api<Pod>) -> Result<(), String> {
    let mut pods = pods_api.list(&ListParams::default()).await.map_err(|e| format!("list pods: {e}"))?.items;
    pods.sort_by_key(|p| p.name_any());
    let mut state = state.lock().await;

    // Deletions first, so their nodes are free for the binds below.
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some()) {
        let name = pod.name_any();
        if let Some((_, w)) = state.workers.remove(&name) {
            w.stop().await;
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
            ..Default::default()
        };
        match pods_api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(format!("finish deleting {name}: {e}")),
        }
    }
    let live: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let mut placed: Vec<Placed> = live
        .iter()
        .filter_map(|p| Some(Placed::of(p, p.spec.as_ref()?.node_name.clone()?)))
        .collect();

    for pod in &live {
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let spec = pod.spec.as_ref().ok_or("pod without spec")?;
        match spec.node_name.as_deref() {
            None => {
                let Some(node) = fitting_node(pod, &placed, nodes) else { continue };
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node.name},
                });
                let bound: Result<serde_json::Value, _> =
                    pods_api.create_subresource("binding", &name, &PostParams::default(), &binding).await;
                bound.map_err(|e| format!("bind {name} to {}: {e}", node.name))?;
                placed.push(Placed::of(pod, node.name.clone()));
            }
            Some(node_name) if !state.started.contains(&uid) => {
                let Some(node) = nodes.iter().find(|n| n.name == node_name) else { continue };
                // A pod recreated under the same name replaces the old one's worker.
                if let Some((_, old)) = state.workers.remove(&name) {
                    old.stop().await;
                }
                let started = match (&state.processes, &state.fake) {
                    (_, Some(fake)) => start_fake(pod, node.ip.into(), fake.clone()).await.map(PodWorker::Fake),
                    (Some((binary, logs)), None) => match start_worker_process(pod, node.ip.into(), binary, logs) {
                        Ok(child) => ready_process(child, pod, node.ip.into()).await.map(PodWorker::Process),
                        Err(e) => Err(e),
                    },
                    (None, None) => start_worker(pod, node.ip.into()).await.map(PodWorker::InProcess),
                };
                let worker = match started {
                    Ok(w) => w,
                    Err(e) => {
                        // The previous worker's socket may still be closing: try next time.
                        say(format!("kubelet: worker for {name} did not start yet: {e}"));
                        continue;
                    }
                };
                let ip = node.ip.to_string();
                let now = jiff::Timestamp::now().to_string();
                let status = json!({"status": {
                    "phase": "Running", "hostIP": ip, "hostIPs": [{"ip": ip}], "podIP": ip, "podIPs": [{"ip": ip}],
                    "startTime": now,
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    ],
                }});
                pods_api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .map_err(|e| format!("start {name}: {e}"))?;
                state.workers.insert(name.clone(), (uid.clone(), worker));
                state.started.insert(uid);
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// What the scheduler's filters need of a pod bound to a node.
struct Placed {
    node: String,
    pool: Option<String>,
    host_ports: Vec<i32>,
}

impl Placed {
    fn of(pod: &Pod, node: String) -> Placed {
        let host_ports = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| p.host_port)
            .collect();
        Placed { node, pool: pod.labels().get("fanout.dev/sfuworker").cloned(), host_ports }
    }
}

/// A node for `pod`: none of its pool's pods there (anti-affinity), no pod with the same
/// hostPort there (the scheduler's host-port filter).
fn fitting_node<'a>(pod: &Pod, placed: &[Placed], nodes: &'a [NodeInfo]) -> Option<&'a NodeInfo> {
    let me = Placed::of(pod, String::new());
    nodes.iter().find(|node| {
        !placed.iter().any(|other| {
            other.node == node.name && (other.pool == me.pool || other.host_ports.iter().any(|p| me.host_ports.contains(p)))
        })
    })
}

/// The worker the pod describes as a `fanout-worker` process on the node's address: the pod's
/// arguments, but listening on the node's IP rather than 0.0.0.0 (the test's nodes share one
/// host), and the environment the pod's env would give it.
fn start_worker_process(pod: &Pod, ip: IpAddr, binary: &std::path::Path, logs: &std::path::Path) -> Result<tokio::process::Child, String> {
    let container = &pod.spec.as_ref().ok_or("no spec")?.containers[0];
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| if a.starts_with("--listen-ip=") { format!("--listen-ip={ip}") } else { a })
        .map(|a| match a.starts_with("--recording-dir=") {
            true => recording_dir(pod).map(|d| format!("--recording-dir={}", d.display())),
            false => Ok(a),
        })
        .collect::<Result<_, String>>()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{}.log", pod.name_any())))
        .map_err(|e| format!("worker log: {e}"))?;
    tokio::process::Command::new(binary)
        .args(&args)
        .env("FANOUT_ANNOUNCED_IP", ip.to_string())
        .env("FANOUT_API_TOKEN", WORKER_TOKEN)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))
}

/// Waits for a worker process to answer `/healthz`, as the pod's readiness probe would, before
/// the pod is reported Ready.
async fn ready_process(mut child: tokio::process::Child, pod: &Pod, ip: IpAddr) -> Result<tokio::process::Child, String> {
    let args = pod.spec.as_ref().and_then(|s| s.containers[0].args.clone()).unwrap_or_default();
    let port = args.iter().find_map(|a| a.strip_prefix("--http-port=")).ok_or("no --http-port")?;
    let endpoint = format!("http://{ip}:{port}");
    let client = fanout_worker::client::WorkerClient::new(None, Duration::from_secs(1));
    for _ in 0..300 {
        if client.healthz(&endpoint).await.is_ok() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the worker exited ({status}) before answering /healthz; see its log"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill().await;
    Err(format!("the worker did not answer {endpoint}/healthz within 30 s"))
}

/// `fake` on the node's address and the pod's `--http-port`.
async fn start_fake(pod: &Pod, ip: IpAddr, fake: axum::Router) -> Result<tokio::task::JoinHandle<()>, String> {
    let args = pod.spec.as_ref().and_then(|s| s.containers[0].args.clone()).unwrap_or_default();
    let port: u16 = args
        .iter()
        .find_map(|a| a.strip_prefix("--http-port="))
        .and_then(|p| p.parse().ok())
        .ok_or("no --http-port")?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, port)).await.map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, fake).await;
    }))
}

/// The pod's recording volume on this host: a directory of its own under the test target's
/// temporary folder (the pod's mount path is not writable here), as an emptyDir would be.
pub fn recording_dir(pod: &Pod) -> Result<PathBuf, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("recordings")
        .join(format!("{}-{}", pod.namespace().unwrap_or_default(), pod.uid().unwrap_or_default()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("recording dir {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The worker the pod describes, as its container would run it on the node.
async fn start_worker(pod: &Pod, ip: IpAddr) -> Result<RunningWorker, String> {
    let container = &pod.spec.as_ref().ok_or("no spec")?.containers[0];
    let args = container.args.clone().unwrap_or_default();
    let arg = |flag: &str| -> Option<u16> {
        args.iter().find_map(|a| a.strip_prefix(&format!("--{flag}="))).and_then(|v| v.parse().ok())
    };
    let http_port = arg("http-port").ok_or("no --http-port")?;
    let rtc = (arg("rtc-min-port").ok_or("no --rtc-min-port")?, arg("rtc-max-port").ok_or("no --rtc-max-port")?);
    let recording_dir = args.iter().any(|a| a.starts_with("--recording-dir=")).then(|| recording_dir(pod)).transpose()?;
    start(WorkerConfig {
        http_addr: SocketAddr::new(ip, http_port),
        listen_ip: ip,
        announced_ip: ip,
        rtc_ports: rtc,
        rtc_tcp_port: arg("rtc-tcp-port"),
        media_threads: 1,
        api_token: Some(WORKER_TOKEN.to_string()),
        limits: WorkerLimits { recording_dir, ..Default::default() },
    })
    .await
    .map_err(|e| e.to_string())
}
