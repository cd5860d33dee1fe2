//! The media benchmark's instrument measures something real: against a worker in this
//! process, its publisher's packets reach every subscriber decrypted and intact, the worker's
//! counters and CPU are read, and the minimal relay forwards too; with simulcast publishers
//! and subscribers over ICE-TCP, each subscriber gets its own encoding through both. Tiny
//! and short: figures come from `fanout-load` (README, "Performance"), not from here.
#![cfg(all(feature = "media", feature = "client"))]

use std::time::Duration;

use fanout_worker::load::relay::run_relay;
use fanout_worker::load::report::row;
use fanout_worker::load::worker_run::{run_worker, Timing, WorkerTarget};
use fanout_worker::load::{Media, SubscriberLayers, Transport};
use fanout_worker::server::{start, WorkerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_receive_every_packet_through_the_worker_and_through_the_relay() {
    let worker = start(WorkerConfig::loopback((47400, 47419))).await.expect("worker starts");
    let target = WorkerTarget { endpoint: worker.endpoint(), pid: std::process::id(), api_token: None, cpu: None };
    let timing = Timing::new(&Media::default(), Duration::from_millis(1500), Duration::from_secs(2));
    let run = run_worker(&target, 3, 1, Media::default(), timing).await.expect("the load run completes");

    let received = &run.receiver;
    // 3 subscribers x (about 95 video + 50 audio packets/s) x 2 s.
    assert!(received.packets > 600, "received {}", received.packets);
    assert_eq!((received.corrupt, received.undecryptable, received.strangers), (0, 0, 0));
    assert_eq!(received.counts.lost, 0, "{:?}", received.counts);
    assert!(received.counts.expected >= received.packets, "{:?}", received.counts);
    assert!(run.forwarded >= received.packets, "the worker counted {} copies", run.forwarded);
    assert!(run.rss_after_kib > 0 && run.cpu_seconds >= 0.0);
    assert!(received.latency.count() == received.packets && received.latency.quantile_ms(0.5) < 100.0);

    let relay = tokio::task::spawn_blocking(|| run_relay(3, 1, Media::default(), Duration::from_millis(500), Duration::from_secs(1), None))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_subscribers_over_ice_tcp_each_get_their_own_encoding_through_the_worker_and_the_relay() {
    let worker = start(WorkerConfig::loopback((47420, 47429))).await.expect("worker starts");
    let target = WorkerTarget { endpoint: worker.endpoint(), pid: std::process::id(), api_token: None, cpu: None };
    let media = Media { simulcast: Some(SubscriberLayers::Spread), transport: Transport::Tcp, record: false };
    // The buffers' baseline does not matter here: a second of publishing, not 17.
    let timing = Timing { buffers_fill: Duration::from_secs(1), warmup: Duration::from_millis(1500), window: Duration::from_secs(2) };
    let run = run_worker(&target, 3, 1, media, timing).await.expect("the load run completes over ICE-TCP");

    let received = &run.receiver;
    // Subscribers 0, 1 and 2 get r0, r1 and r2 (about 31, 31 and 95 packets/s) and the audio:
    // a packet of another encoding would arrive under no SSRC it expects (corrupt).
    assert_eq!((received.corrupt, received.undecryptable, received.connections_lost), (0, 0, 0), "{received:?}");
    assert_eq!(received.counts.lost, 0, "{:?}", received.counts);
    assert!(received.packets > 2 * (31 + 31 + 95 + 3 * 50) * 8 / 10, "received {}", received.packets);
    assert!(received.packets < 2 * (3 * 95 + 3 * 50), "only one encoding each: {}", received.packets);
    // The publisher sent every encoding: the worker received more than any one subscriber got.
    assert!(run.received > 2 * (157 + 50) * 8 / 10, "publishers sent {}", run.received);
    assert!(run.forwarded >= received.packets);

    let relay = tokio::task::spawn_blocking(move || run_relay(3, 1, media, Duration::from_millis(500), Duration::from_secs(1), None))
        .await
        .unwrap()
        .expect("the relay runs over TCP");
    assert_eq!((relay.receiver.counts.lost, relay.receiver.corrupt, relay.receiver.undecryptable), (0, 0, 0), "{:?}", relay.receiver);
    assert!(relay.forwarded > (31 + 31 + 95 + 3 * 50) * 8 / 10, "relay forwarded {}", relay.forwarded);
    let r = row(&run, Some(&relay));
    assert_eq!(r.media, "TCP, simulcast (layers spread)");
    worker.shutdown().await;
}
