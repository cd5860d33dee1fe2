//! What every test of the suite shares: a client of the control plane, a namespace of its
//! own, Node objects with loopback addresses, and waiting for the cluster to get somewhere.

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::kit::{self, ControlPlane};

/// The workers' API token in every test.
pub const WORKER_TOKEN: &str = "api-server-suite-token";

/// One test's view of the cluster.
pub struct Cluster {
    pub plane: &'static ControlPlane,
    pub client: Client,
    /// The test's own namespace.
    pub ns: String,
}

/// Connects to the shared control plane (starting it if this is the first test), makes sure
/// the CRDs are installed, and creates a namespace for `test`. `None` when the suite is skipped.
pub async fn cluster(test: &str) -> Option<Cluster> {
    let plane = kit::control_plane(test)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig).expect("the kit's kubeconfig reads");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig is usable");
    // One client per test: a client belongs to the runtime it was made in, and every test has
    // its own runtime.
    let client = Client::try_from(config).expect("client builds");
    wait_ready(&client).await;
    install_crds(&client).await;

    // Names are unique per run (the control plane is new each run), short for node names.
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let ns = format!("{test}-{}", COUNTER.fetch_add(1, Ordering::Relaxed)).replace('_', "-");
    let ns: String = ns.chars().rev().take(50).collect::<String>().chars().rev().collect();
    let ns = ns.trim_start_matches('-').to_string();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap())
        .await
        .expect("namespace is created");
    // The ServiceAccount admission plugin refuses pods until the namespace's default account
    // exists; the kit's controller manager makes it, envtest has none, so make it here.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    match accounts.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("cannot create the default ServiceAccount: {e}"),
    }
    Some(Cluster { plane, client, ns })
}

async fn wait_ready(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
        match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return,
            other if Instant::now() > deadline => panic!("the API server is not ready after 60 s: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Applies the committed CRDs (the files users install) once per run and waits until the
/// server serves them.
async fn install_crds(client: &Client) {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
            let api: Api<CustomResourceDefinition> = Api::all(client.clone());
            for (file, _) in fanout_operator::crd::manifests() {
                let path = crate::repo().join("crds").join(file);
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                let crd: CustomResourceDefinition = yaml_serde::from_str(&text).unwrap();
                let name = crd.metadata.name.clone().unwrap();
                api.patch(&name, &PatchParams::apply("api-server-suite").force(), &Patch::Apply(&crd))
                    .await
                    .unwrap_or_else(|e| panic!("the server refused {}: {e}", path.display()));
            }
            for (file, _) in fanout_operator::crd::manifests() {
                // room.yaml -> rooms.fanout.dev, and so on.
                let name = format!("{}s.fanout.dev", file.trim_end_matches(".yaml"));
                eventually(&format!("CRD {name} established"), Duration::from_secs(20), || async {
                    let crd = api.get(&name).await.ok()?;
                    let conditions = crd.status?.conditions?;
                    conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
                })
                .await;
            }
        })
        .await;
}

/// Polls `check` every 100 ms until it yields a value; panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Node object and the loopback address that stands for it (the whole of 127/8 is loopback
/// on Linux, so every node has its own IP and the same ports on two nodes do not collide).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub ip: Ipv4Addr,
}

fn next_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ipv4Addr::new(127, 77, (n / 200) as u8, (n % 200 + 10) as u8)
}

impl Cluster {
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// `count` Node objects named after the namespace, Ready, with their InternalIP set.
    pub async fn nodes(&self, count: usize) -> Vec<NodeInfo> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut out = Vec::new();
        for i in 0..count {
            let node = NodeInfo { name: format!("{}-node-{i}", self.ns), ip: next_ip() };
            let object = json!({
                "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}},
            });
            api.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await.expect("node is created");
            let status = json!({"status": {
                "addresses": [{"type": "InternalIP", "address": node.ip.to_string()}, {"type": "Hostname", "address": node.name}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "played by the test",
                                "lastHeartbeatTime": jiff::Timestamp::now().to_string(), "lastTransitionTime": jiff::Timestamp::now().to_string()}],
            }});
            api.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("node status is written");
            out.push(node);
        }
        out
    }

    /// A TCP port free on every one of `nodes`' addresses (for a pool's `httpPort`).
    pub fn free_port(&self, nodes: &[NodeInfo]) -> u16 {
        for _ in 0..100 {
            let port = TcpListener::bind((nodes[0].ip, 0)).and_then(|l| l.local_addr()).expect("loopback binds").port();
            if nodes.iter().all(|n| TcpListener::bind((n.ip, port)).is_ok()) {
                return port;
            }
        }
        panic!("no port free on all of {nodes:?}");
    }

    /// Creates an SfuWorker in the test's namespace.
    pub async fn create_pool(&self, name: &str, spec: serde_json::Value) -> fanout_operator::crd::SfuWorker {
        let object = json!({
            "apiVersion": "fanout.dev/v1alpha1", "kind": "SfuWorker",
            "metadata": {"name": name, "labels": {"pool": name}},
            "spec": spec,
        });
        self.api()
            .create(&PostParams::default(), &serde_json::from_value(object).unwrap())
            .await
            .unwrap_or_else(|e| panic!("SfuWorker {name} is refused: {e}"))
    }

    /// Creates a Room in the test's namespace.
    pub async fn create_room(&self, name: &str, spec: serde_json::Value) -> fanout_operator::crd::Room {
        let object = json!({"apiVersion": "fanout.dev/v1alpha1", "kind": "Room", "metadata": {"name": name}, "spec": spec});
        self.api()
            .create(&PostParams::default(), &serde_json::from_value(object).unwrap())
            .await
            .unwrap_or_else(|e| panic!("Room {name} is refused: {e}"))
    }

    /// The Room's placement once the operator has written one (waits up to `timeout`).
    pub async fn placed(&self, room: &str, timeout: Duration) -> fanout_operator::crd::Placement {
        let api: Api<fanout_operator::crd::Room> = self.api();
        eventually(&format!("room {room} placed"), timeout, || async {
            let r = api.get(room).await.ok()?;
            let status = r.status?;
            (status.phase == Some(fanout_operator::crd::RoomPhase::Scheduled)).then_some(())?;
            status.placement
        })
        .await
    }

    /// Reasons of the Events about `name` (any kind), oldest first.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        use k8s_openapi::api::events::v1::Event;
        let api: Api<Event> = self.api();
        let mut events = api.list(&Default::default()).await.expect("events list").items;
        events.retain(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name));
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events.into_iter().filter_map(|e| e.reason).collect()
    }

    /// Waits until an Event about `name` with `reason` is stored. The operator publishes its
    /// Events after the status write a test waits for, so they may land a moment later.
    pub async fn expect_event(&self, name: &str, reason: &str) {
        eventually(&format!("an Event {reason} about {name}"), Duration::from_secs(10), || async {
            self.event_reasons(name).await.iter().any(|r| r == reason).then_some(())
        })
        .await
    }
}
