//! The media benchmark's instrument measures something real: against a worker in this
//! process, its publisher's packets reach every subscriber decrypted and intact, the worker's
//! counters and CPU are read, and the minimal relay forwards too. Tiny and short: figures
//! come from `fanout-load` (README, "Performance"), not from here.
#![cfg(all(feature = "media", feature = "client"))]

use std::time::Duration;

use fanout_worker::load::relay::run_relay;
use fanout_worker::load::report::row;
use fanout_worker::load::worker_run::{run_worker, WorkerTarget};
use fanout_worker::server::{start, WorkerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_receive_every_packet_through_the_worker_and_through_the_relay() {
    let worker = start(WorkerConfig::loopback((47400, 47419))).await.expect("worker starts");
    let target = WorkerTarget { endpoint: worker.endpoint(), pid: std::process::id(), api_token: None, cpu: None };
    let run = run_worker(&target, 3, 1, Duration::from_millis(1500), Duration::from_secs(2)).await.expect("the load run completes");

    let received = &run.receiver;
    // 3 subscribers x (about 95 video + 50 audio packets/s) x 2 s.
    assert!(received.packets > 600, "received {}", received.packets);
    assert_eq!((received.corrupt, received.undecryptable, received.strangers), (0, 0, 0));
    assert_eq!(received.counts.lost, 0, "{:?}", received.counts);
    assert!(received.counts.expected >= received.packets, "{:?}", received.counts);
    assert!(run.forwarded >= received.packets, "the worker counted {} copies", run.forwarded);
    assert!(run.rss_after_kib > 0 && run.cpu_seconds >= 0.0);
    assert!(received.latency.count() == received.packets && received.latency.quantile_ms(0.5) < 100.0);

    let relay = tokio::task::spawn_blocking(|| run_relay(3, 1, Duration::from_millis(500), Duration::from_secs(1), None))
        .await
        .unwrap()
        .expect("the relay runs");
    assert!(relay.forwarded > 300, "relay forwarded {}", relay.forwarded);
    assert_eq!((relay.receiver.counts.lost, relay.receiver.corrupt, relay.receiver.undecryptable), (0, 0, 0));
    assert!(relay.receiver.packets > 300);

    let r = row(&run, Some(&relay));
    assert_eq!(r.consumers, 6);
    assert!(r.forwarded_per_second > 300.0, "{r:?}");
    worker.shutdown().await;
}
