//! Scheduling benchmark: places 10,000 rooms onto 200 worker replicas and prints decisions
//! per second (target: at least 100,000 per second).
//!
//! Run: `cargo bench -p fanout-operator --bench schedule`
//!
//! Two figures:
//! - `scheduler`: the pure decision (`scheduler::schedule`) with the load updated in place.
//! - `controller path`: what one Room reconcile does under the ledger lock: re-read the Room
//!   cache when the ledger's reading is older than 500 ms (as the controller does), build the
//!   candidates from the pool and pod caches, decide, reserve (`placement::decide_and_reserve`).
//!   The cache is never updated during the run (the worst case of watch lag: every placement
//!   lives in the ledger).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout_operator::crd::{Room, RoomSpec, SfuWorker, SfuWorkerSpec, WorkerCapacity};
use fanout_operator::ledger::Ledger;
use fanout_operator::placement::{decide_and_reserve, Cluster};
use fanout_operator::scheduler::{schedule, Load, Policy, Replica};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

const ROOMS: usize = 10_000;
const POOLS: usize = 4;
const REPLICAS_PER_POOL: usize = 50;
const CAPACITY: WorkerCapacity = WorkerCapacity { max_peers: 5_000, max_rooms: 100 };

fn room_peers(i: usize) -> u32 {
    // A mix of small meetings and classes: 5..=100 peers.
    5 + (i * 37 % 96) as u32
}

fn pool_labels(p: usize) -> BTreeMap<String, String> {
    BTreeMap::from([("region".to_string(), if p.is_multiple_of(2) { "eu" } else { "us" }.to_string())])
}

fn selector(i: usize) -> Option<LabelSelector> {
    // One room in four asks for a region.
    i.is_multiple_of(4).then(|| LabelSelector {
        match_labels: Some(BTreeMap::from([("region".into(), if i.is_multiple_of(8) { "eu" } else { "us" }.into())])),
        ..Default::default()
    })
}

fn pure_scheduler(policy: Policy) -> (f64, usize) {
    let mut replicas: Vec<Replica> = (0..POOLS)
        .flat_map(|p| {
            (0..REPLICAS_PER_POOL).map(move |r| Replica {
                pool: format!("pool-{p}"),
                pool_labels: pool_labels(p),
                pod: format!("pool-{p}-{r}"),
                pod_uid: format!("uid-{p}-{r}"),
                node: Some(format!("node-{p}-{r}")),
                endpoint: Some(format!("http://10.{p}.0.{r}:3000")),
                announced_ip: None,
                ready: true,
                draining: false,
                capacity: CAPACITY,
                load: Load::default(),
            })
        })
        .collect();
    let selectors: Vec<_> = (0..ROOMS).map(selector).collect();
    let start = Instant::now();
    let mut placed = 0;
    for (i, selector) in selectors.iter().enumerate() {
        let peers = room_peers(i);
        if let Ok(chosen) = schedule(peers, selector.as_ref(), &replicas, policy, None) {
            let index = replicas.iter().position(|r| std::ptr::eq(r, chosen)).expect("chosen is one of ours");
            replicas[index].load.add(peers);
            placed += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert!(replicas.iter().all(|r| r.load.peers <= CAPACITY.max_peers as u32 && r.load.rooms <= CAPACITY.max_rooms as u32));
    (ROOMS as f64 / elapsed, placed)
}

fn controller_path(policy: Policy) -> (f64, usize, usize) {
    let ns = "media";
    let pools: Vec<Arc<SfuWorker>> = (0..POOLS)
        .map(|p| {
            let mut w = SfuWorker::new(&format!("pool-{p}"), SfuWorkerSpec {
                replicas: REPLICAS_PER_POOL as i32,
                image: "fanout".into(),
                image_pull_policy: None,
                image_pull_secrets: vec![],
                http_port: 3000,
                rtc_ports: Default::default(),
                tcp_port: fanout_operator::crd::DEFAULT_TCP_PORT,
                enable_tcp: true,
                capacity: CAPACITY,
                announced_address: Default::default(),
                media_threads: None,
                api_token_secret: None,
                node_selector: Default::default(),
                tolerations: vec![],
                resources: None,
                drain_timeout_seconds: 60,
                recording: None,
            });
            w.metadata.namespace = Some(ns.into());
            w.metadata.labels = Some(pool_labels(p));
            Arc::new(w)
        })
        .collect();
    let pods: Vec<Arc<Pod>> = (0..POOLS)
        .flat_map(|p| {
            (0..REPLICAS_PER_POOL).map(move |r| {
                Arc::new(Pod {
                    metadata: ObjectMeta {
                        name: Some(format!("pool-{p}-{r}")),
                        namespace: Some(ns.into()),
                        uid: Some(format!("uid-{p}-{r}")),
                        labels: Some(BTreeMap::from([("fanout.dev/sfuworker".into(), format!("pool-{p}"))])),
                        ..Default::default()
                    },
                    spec: None,
                    status: Some(PodStatus {
                        pod_ip: Some(format!("10.{p}.0.{r}")),
                        conditions: Some(vec![PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]),
                        ..Default::default()
                    }),
                })
            })
        })
        .collect();
    let rooms: Vec<Arc<Room>> = (0..ROOMS)
        .map(|i| {
            let mut room = Room::new(&format!("room-{i}"), RoomSpec {
                display_name: None,
                max_peers: room_peers(i) as i32,
                worker_selector: selector(i),
                publishers: vec![],
                codecs: vec![],
                empty_timeout_seconds: None,
            });
            room.metadata.namespace = Some(ns.into());
            room.metadata.uid = Some(format!("room-uid-{i}"));
            Arc::new(room)
        })
        .collect();
    let cluster = Cluster { namespace: ns, pools: &pools, pods: &pods };
    let mut ledger = Ledger::default();
    let start = Instant::now();
    let mut placed = 0;
    for room in &rooms {
        let uid = room.metadata.uid.as_deref().unwrap_or_default();
        ledger.refresh_if_older_than(Duration::from_millis(500), Instant::now(), || rooms.iter().map(|r| r.as_ref()));
        if decide_and_reserve(&mut ledger, &cluster, room, uid, policy, None).is_ok() {
            placed += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let load = ledger.commitments(rooms.iter().map(|r| r.as_ref()));
    let worst = load.values().map(|l| l.peers).max().unwrap_or(0) as usize;
    (ROOMS as f64 / elapsed, placed, worst)
}

fn main() {
    println!("scheduling {ROOMS} rooms onto {} replicas ({POOLS} pools), capacity {} peers / {} rooms each",
        POOLS * REPLICAS_PER_POOL, CAPACITY.max_peers, CAPACITY.max_rooms);
    println!("{:<18} {:<8} {:>16} {:>8}", "path", "policy", "decisions/s", "placed");
    for policy in [Policy::Spread, Policy::Pack] {
        let (rate, placed) = pure_scheduler(policy);
        println!("{:<18} {:<8} {:>16.0} {:>8}", "scheduler", format!("{policy:?}"), rate, placed);
    }
    for policy in [Policy::Spread, Policy::Pack] {
        let (rate, placed, worst) = controller_path(policy);
        println!("{:<18} {:<8} {:>16.0} {:>8}   (fullest worker: {worst} of {} peers)", "controller path", format!("{policy:?}"), rate, placed, CAPACITY.max_peers);
    }
    println!("target: at least 100000 decisions/s");
}
