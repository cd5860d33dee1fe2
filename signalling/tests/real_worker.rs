//! Signalling in front of a real worker: through the worker crate's HTTP client, with the
//! worker in-process as in embedded mode (or, with FANOUT_TEST_WORKER_URL and
//! FANOUT_TEST_WORKER_TOKEN set, a worker you started yourself), and calling an in-process
//! worker directly as embedded mode does.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{SECRET, TestClient, rtp_parameters, token};
use fanout_signalling::auth::{JwtConfig, JwtVerifier};
use fanout_signalling::placement::StaticPlacement;
use fanout_signalling::worker::{InProcessBackend, MediaBackend, WorkerBackend};
use fanout_signalling::{Limits, Signalling, app};
use serde_json::json;

fn embedded_options(rtc_ports: (u16, u16)) -> fanout_signalling::embedded::EmbeddedOptions {
    fanout_signalling::embedded::EmbeddedOptions {
        rtc_ip: [127, 0, 0, 1].into(),
        rtc_ports,
        web_root: "web/dist".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_joins_publishes_and_leaves_on_a_real_worker_over_http() {
    let embedded = match std::env::var("FANOUT_TEST_WORKER_URL") {
        Ok(_) => None,
        Err(_) => Some(
            fanout_signalling::embedded::start_worker(&embedded_options((45000, 45099)), None)
                .await
                .expect("embedded worker starts"),
        ),
    };
    let worker = match &embedded {
        Some(e) => e.worker.endpoint(),
        None => std::env::var("FANOUT_TEST_WORKER_URL").unwrap(),
    };
    let token_env = match &embedded {
        Some(e) => Some(e.worker_token.clone()),
        None => std::env::var("FANOUT_TEST_WORKER_TOKEN").ok(),
    };
    let backend = Arc::new(WorkerBackend::new(token_env, Duration::from_secs(5)));
    a_participant_joins_publishes_and_leaves(backend, worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_joins_publishes_and_leaves_on_an_in_process_worker() {
    let embedded =
        fanout_signalling::embedded::start_worker(&embedded_options((45200, 45299)), None)
            .await
            .expect("embedded worker starts");
    let backend = Arc::new(InProcessBackend::new(embedded.worker.control.clone()));
    a_participant_joins_publishes_and_leaves(backend, embedded.worker.endpoint()).await;
    embedded.worker.shutdown().await;
}

/// A watcher sees a publisher join, publish and, on disconnect, its producer close and the
/// publisher leave.
async fn a_participant_joins_publishes_and_leaves(backend: Arc<dyn MediaBackend>, worker: String) {
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

/// Embedded mode's extra routes: development tokens that signalling accepts, and the
/// in-process worker's stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_issues_tokens_signalling_accepts_and_serves_worker_stats() {
    let embedded =
        fanout_signalling::embedded::start_worker(&embedded_options((45100, 45199)), None)
            .await
            .unwrap();
    let routes = fanout_signalling::embedded::routes(&embedded, "web/dist".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });

    let answer: serde_json::Value = reqwest::get(format!("{base}/dev/token?name=Ada&role=teacher")).await.unwrap().json().await.unwrap();
    let token = answer["token"].as_str().expect("a token");
    let verifier = JwtVerifier::new(&JwtConfig::hs256(embedded.jwt_secret.as_bytes())).unwrap();
    let identity = verifier.verify(token).expect("the token verifies with the run's secret");
    assert_eq!((identity.name.as_str(), identity.role.as_str()), ("Ada", "teacher"));

    let stats: serde_json::Value = reqwest::get(format!("{base}/dev/stats")).await.unwrap().json().await.unwrap();
    assert_eq!(stats["rooms"], 0);
    embedded.worker.shutdown().await;
}
