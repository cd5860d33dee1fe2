//! Signalling in front of a real worker process, through the worker crate's HTTP client.
//!
//! Ignored by default because it needs a running worker; run it with
//!
//! ```text
//! cargo run -p fanout-worker -- --listen-ip 127.0.0.1 --http-port 3999 --api-token t \
//!     --rtc-min-port 45000 --rtc-max-port 45100 &
//! FANOUT_TEST_WORKER_URL=http://127.0.0.1:3999 FANOUT_TEST_WORKER_TOKEN=t \
//!     cargo test -p fanout-signalling --test real_worker -- --ignored
//! ```

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{SECRET, TestClient, rtp_parameters, token};
use fanout_signalling::auth::{JwtConfig, JwtVerifier};
use fanout_signalling::placement::StaticPlacement;
use fanout_signalling::worker::WorkerBackend;
use fanout_signalling::{Limits, Signalling, app};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running worker: set FANOUT_TEST_WORKER_URL"]
async fn a_participant_joins_publishes_and_leaves_on_a_real_worker() {
    let worker = std::env::var("FANOUT_TEST_WORKER_URL").expect("FANOUT_TEST_WORKER_URL");
    let token_env = std::env::var("FANOUT_TEST_WORKER_TOKEN").ok();
    let backend = Arc::new(WorkerBackend::new(token_env, Duration::from_secs(5)));
    let verifier = JwtVerifier::new(&JwtConfig::hs256(SECRET)).unwrap();
    let state = Signalling::new(
        verifier,
        Arc::new(StaticPlacement::new(worker)),
        backend,
        Limits::default(),
    );
    let router = app(state, &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let room = format!("real-{}", std::process::id());
    let connect = |user: &'static str| {
        let url = url.clone();
        async move {
            TestClient::connect(&url, Some(json!({"token": token(user, "teacher")})), None)
                .await
                .unwrap()
        }
    };
    let mut watcher = connect("watcher").await;
    let joined = watcher.request("join-room", json!({"roomId": room})).await;
    assert_eq!(joined["success"], true, "{joined}");
    assert!(
        !joined["mediasoup"]["rtpCapabilities"]["codecs"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let publisher = connect("publisher").await;
    let joined = publisher
        .request("join-room", json!({"roomId": room}))
        .await;
    assert_eq!(
        joined["mediasoup"]["peers"].as_array().unwrap().len(),
        1,
        "{joined}"
    );
    let publisher_id = joined["participantId"].clone();
    assert_eq!(
        watcher.next_event("participant-joined").await["participantId"],
        publisher_id
    );

    let transport = publisher
        .request("create-transport", json!({"direction": "send"}))
        .await;
    assert!(transport["id"].is_string(), "{transport}");
    let produced = publisher
        .request(
            "produce",
            json!({"kind": "video", "rtpParameters": rtp_parameters()}),
        )
        .await;
    assert!(produced["id"].is_string(), "{produced}");
    assert_eq!(
        watcher.next_event("new-producer").await["producerId"],
        produced["id"]
    );

    let info = watcher.request("get-room-info", json!({})).await;
    assert_eq!(info["participants"].as_array().unwrap().len(), 2, "{info}");

    publisher.socket.disconnect().await.unwrap();
    assert_eq!(
        watcher.next_event("producer-closed").await["producerId"],
        produced["id"]
    );
    assert_eq!(
        watcher.next_event("participant-left").await["participantId"],
        publisher_id
    );
    watcher.request("leave-room", json!({})).await;
}
