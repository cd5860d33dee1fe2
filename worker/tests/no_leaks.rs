//! Creating and closing 10,000 transports leaves the worker as it was: every UDP port back in
//! the pool, no extra threads, and memory back near where it started. Its own test binary, so
//! no other test's threads or allocations blur the figures.
#![cfg(all(feature = "media", feature = "client"))]

use std::time::Duration;

use fanout_worker::control::ControlError;
use fanout_worker::engine::EngineError;
use fanout_worker::room::{Direction, PeerId, PeerInfo, RoomId};
use fanout_worker::server::{start, WorkerConfig};

fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
}

async fn ports_settle(worker: &fanout_worker::server::RunningWorker) {
    for _ in 0..300 {
        if worker.engine.ports_in_use() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} ports still in use", worker.engine.ports_in_use());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_transports_opened_and_closed_leave_nothing_behind() {
    let worker = start(WorkerConfig { media_threads: 2, ..WorkerConfig::loopback((48000, 48999)) }).await.unwrap();
    let control = worker.control.clone();
    let room = RoomId::from("churn");
    let peer = PeerId::from("p");
    control.join(&room, &peer, PeerInfo::default()).unwrap();

    let cycle = |n: usize| {
        for i in 0..n {
            let direction = if i % 2 == 0 { Direction::Send } else { Direction::Recv };
            // A closed transport's port returns to the pool once its media thread has closed
            // the socket; the loop can outrun the media threads by a whole range (1,000 ports)
            // when the machine is busy, so a port being free is waited for, briefly.
            let mut attempts = 0;
            let created = loop {
                match control.create_transport(&room, &peer, direction) {
                    Ok(created) => break created,
                    Err(ControlError::Engine(EngineError::PortsExhausted { .. })) if attempts < 1000 => {
                        attempts += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("no port came free within a second of closes: {e}"),
                }
            };
            control.close_transport(&room, &created.id).unwrap();
        }
    };
    // Warm up allocator pools and the media threads' tables before the baseline.
    cycle(1000);
    ports_settle(&worker).await;
    let (threads_before, rss_before) = (status_field("Threads:"), status_field("VmRSS:"));

    cycle(10_000);
    ports_settle(&worker).await;
    let (threads_after, rss_after) = (status_field("Threads:"), status_field("VmRSS:"));

    let stats = control.stats();
    assert_eq!((stats.transports, stats.peers), (0, 1), "no transport left in the room graph");
    assert_eq!(worker.engine.ports_in_use(), 0, "every port returned");
    assert_eq!(threads_after, threads_before, "no thread left behind");
    let growth_kib = rss_after.saturating_sub(rss_before);
    println!("RSS before {rss_before} KiB, after 10,000 transports {rss_after} KiB (+{growth_kib} KiB)");
    // A leak of even 1 KiB per transport would show as 10 MB.
    assert!(growth_kib < 4096, "RSS grew by {growth_kib} KiB over 10,000 transports");
    worker.shutdown().await;
}
