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

// ---- transports the worker closes by itself (docs/protocol.md, `transport-closed`) ----

/// Signalling in front of an in-process worker whose transports time out after `ice_setup`
/// without an ICE check; the worker and the server's address.
async fn signalling_with_worker(
    rtc_ports: (u16, u16),
    ice_setup: Duration,
) -> (fanout_worker::server::RunningWorker, std::net::SocketAddr, Arc<Signalling>) {
    let mut config = fanout_worker::server::WorkerConfig::loopback(rtc_ports);
    config.limits.transport_timeouts.ice.setup = ice_setup;
    let worker = fanout_worker::server::start(config).await.expect("worker starts");
    let verifier = JwtVerifier::new(&JwtConfig::hs256(SECRET)).unwrap();
    let state = Signalling::new(
        verifier,
        Arc::new(StaticPlacement::new(worker.endpoint())),
        Arc::new(InProcessBackend::new(worker.control.clone())),
        Limits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(state.clone(), &[]);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (worker, addr, state)
}

/// A worker-side close as the media engine reports it: the same path as a real consent loss
/// or DTLS alert from there on (cascade, events, the engine releasing the socket).
fn engine_closes(
    worker: &fanout_worker::server::RunningWorker,
    room: &str,
    transport: &serde_json::Value,
    code: fanout_worker::room::TransportCloseCode,
) {
    worker.control.handle_notice(fanout_worker::engine::EngineNotice::TransportClosed {
        room: room.into(),
        transport: transport.as_str().unwrap().into(),
        code,
        reason: code.describe().to_owned(),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_times_out_is_reported_and_the_participant_can_join_again() {
    let (worker, addr, _) = signalling_with_worker((45300, 45309), Duration::from_millis(500)).await;
    let url = format!("http://{addr}/");
    let mut client = TestClient::connect(&url, Some(json!({"token": token("ada", "teacher")})), None)
        .await
        .unwrap();
    let joined = client.request("join-room", json!({"roomId": "timeouts"})).await;
    assert_eq!(joined["success"], true, "{joined}");
    let transport = client.request("create-transport", json!({"direction": "send"})).await;
    // No ICE check ever comes: the worker's ICE timeout closes it.
    let closed = client.next_event("transport-closed").await;
    assert_eq!(closed["transportId"], transport["id"]);
    assert_eq!(closed["direction"], "send");
    assert_eq!(closed["code"], "ICE_TIMEOUT");
    assert_eq!(closed["roomId"], "timeouts");
    assert!(closed["reason"].as_str().is_some_and(|r| !r.is_empty()), "{closed}");
    let failed = client.next_event("transport-failed").await;
    assert_eq!((failed["transportId"].clone(), failed["direction"].as_str()), (transport["id"].clone(), Some("send")));
    assert_eq!((failed["roomId"].as_str(), failed["code"].as_str()), (Some("timeouts"), Some("ICE_TIMEOUT")));
    assert!(failed["reason"].as_str().is_some_and(|r| r.contains("TURN")), "{failed}");
    // It was the peer's only transport, so the worker removed the peer: so does signalling.
    let left = client.next_event("left-room").await;
    assert_eq!((left["roomId"].as_str(), left["code"].as_str()), (Some("timeouts"), Some("ICE_TIMEOUT")));
    assert!(left["reason"].as_str().unwrap().contains("join-room"), "{left}");
    let again = client.request("join-room", json!({"roomId": "timeouts"})).await;
    assert_eq!(again["success"], true, "not ALREADY_IN_ROOM: {again}");
    assert_eq!(worker.control.stats().peers, 1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_the_worker_closes_is_forgotten_and_another_one_works() {
    use fanout_worker::room::TransportCloseCode;
    let (worker, addr, _) = signalling_with_worker((45310, 45319), Duration::from_secs(30)).await;
    let url = format!("http://{addr}/");
    let connect = |user: &'static str| {
        let url = url.clone();
        async move {
            TestClient::connect(&url, Some(json!({"token": token(user, "teacher")})), None)
                .await
                .unwrap()
        }
    };
    let mut publisher = connect("publisher").await;
    publisher.request("join-room", json!({"roomId": "closes"})).await;
    publisher.request("create-transport", json!({"direction": "send"})).await;
    let produced = publisher
        .request("produce", json!({"kind": "video", "rtpParameters": rtp_parameters()}))
        .await;
    assert!(produced["id"].is_string(), "{produced}");
    let mut viewer = connect("viewer").await;
    let joined = viewer.request("join-room", json!({"roomId": "closes"})).await;
    let send = viewer.request("create-transport", json!({"direction": "send"})).await;
    let recv = viewer.request("create-transport", json!({"direction": "recv"})).await;
    let capabilities = joined["mediasoup"]["rtpCapabilities"].clone();
    let consumer = viewer
        .request("consume", json!({"producerId": produced["id"], "rtpCapabilities": capabilities}))
        .await;
    assert!(consumer["id"].is_string(), "{consumer}");

    engine_closes(&worker, "closes", &recv["id"], TransportCloseCode::IceConsentLost);
    let closed = viewer.next_event("transport-closed").await;
    assert_eq!((closed["transportId"].clone(), closed["direction"].as_str()), (recv["id"].clone(), Some("recv")));
    assert_eq!(closed["code"], "ICE_CONSENT_LOST");
    // Connected before: not a setup failure, so not transport-failed; and still in the room.
    assert!(!viewer.receives("transport-failed", Duration::from_millis(300)).await);
    assert!(!viewer.receives("left-room", Duration::from_millis(100)).await);
    // Signalling's state is the worker's: the transport and its consumer are gone.
    let stale = viewer
        .request("restart-ice", json!({"transportId": recv["id"]}))
        .await;
    assert_eq!(stale["error"]["code"], "TRANSPORT_NOT_FOUND", "{stale}");
    let stale = viewer.request("resume-consumer", json!({"consumerId": consumer["id"]})).await;
    assert_eq!(stale["error"]["code"], "CONSUMER_NOT_FOUND", "{stale}");
    // The client recovers with a new transport; `consume` needs no transportId again, since
    // signalling no longer counts the closed one.
    viewer.request("create-transport", json!({"direction": "recv"})).await;
    let again = viewer
        .request("consume", json!({"producerId": produced["id"], "rtpCapabilities": capabilities}))
        .await;
    assert!(again["id"].is_string(), "{again}");
    // The publisher heard nothing of it.
    assert!(!publisher.receives("transport-closed", Duration::from_millis(100)).await);

    // A DTLS failure on setup is a failed transport too.
    engine_closes(&worker, "closes", &send["id"], TransportCloseCode::DtlsFingerprintMismatch);
    assert_eq!(viewer.next_event("transport-closed").await["code"], "DTLS_FINGERPRINT_MISMATCH");
    let failed = viewer.next_event("transport-failed").await;
    assert_eq!((failed["transportId"].clone(), failed["direction"].as_str()), (send["id"].clone(), Some("send")));
    assert_eq!(failed["code"], "DTLS_FINGERPRINT_MISMATCH");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_the_worker_closes_puts_its_participants_out_and_is_forgotten() {
    let (worker, addr, state) = signalling_with_worker((45320, 45329), Duration::from_secs(30)).await;
    let url = format!("http://{addr}/");
    let mut client = TestClient::connect(&url, Some(json!({"token": token("ada", "teacher")})), None)
        .await
        .unwrap();
    client.request("join-room", json!({"roomId": "closing"})).await;
    client.request("create-transport", json!({"direction": "recv"})).await;
    worker.control.close_room(&"closing".into()).expect("closes");
    let left = client.next_event("left-room").await;
    assert_eq!(left["code"], "ROOM_CLOSED", "{left}");
    assert_eq!(client.next_event("room-closed").await["roomId"], "closing");
    // Closes nobody asked this participant about are reported; a room's closing is told once.
    assert!(!client.receives("transport-closed", Duration::from_millis(100)).await);
    assert_eq!(state.followed_rooms(), 0, "nothing of the closed room is left here");
    let again = client.request("join-room", json!({"roomId": "closing"})).await;
    assert_eq!(again["success"], true, "{again}");
    // Followed again after the rejoin: a second participant is announced.
    let other = TestClient::connect(&url, Some(json!({"token": token("bob", "teacher")})), None)
        .await
        .unwrap();
    other.request("join-room", json!({"roomId": "closing"})).await;
    assert_eq!(client.next_event("participant-joined").await["userId"], "bob");
    worker.shutdown().await;
}

// ---- what a Room object says the room opens with, through signalling to a real worker ----

/// Every room where a Room object with codecs and an empty timeout would put it.
struct RoomObjectPlacement {
    endpoint: String,
    setup: fanout_signalling::placement::RoomSetup,
}

#[async_trait::async_trait]
impl fanout_signalling::placement::Placement for RoomObjectPlacement {
    async fn locate(&self, room: &str) -> fanout_signalling::Result<fanout_signalling::placement::RoomLocation> {
        let setup = if room.starts_with("configured") { self.setup.clone() } else { Default::default() };
        Ok(fanout_signalling::placement::RoomLocation {
            endpoint: self.endpoint.clone(),
            publishers: vec![],
            max_peers: None,
            setup,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_opens_on_its_worker_with_its_codecs_and_closes_after_its_own_empty_timeout() {
    use fanout_operator::crd::RoomCodec;
    let worker = fanout_worker::server::start(fanout_worker::server::WorkerConfig::loopback((45340, 45349)))
        .await
        .expect("worker starts");
    let placement = RoomObjectPlacement {
        endpoint: worker.endpoint(),
        setup: fanout_signalling::placement::RoomSetup {
            codecs: vec![RoomCodec::VP8, RoomCodec::Opus],
            empty_timeout: Some(Duration::from_secs(1)),
        },
    };
    let verifier = JwtVerifier::new(&JwtConfig::hs256(SECRET)).unwrap();
    // Over HTTP: the setup travels in the REST body (`mediaCodecs`, `emptyTimeoutSeconds`).
    let state = Signalling::new(
        verifier,
        Arc::new(placement),
        Arc::new(WorkerBackend::new(None, Duration::from_secs(5))),
        Limits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app(state, &[])).await.unwrap() });

    let client = TestClient::connect(&url, Some(json!({"token": token("ada", "teacher")})), None)
        .await
        .unwrap();
    let joined = client.request("join-room", json!({"roomId": "configured"})).await;
    assert_eq!(joined["success"], true, "{joined}");
    let mimes: Vec<&str> = joined["mediasoup"]["rtpCapabilities"]["codecs"]
        .as_array()
        .expect("codecs")
        .iter()
        .filter_map(|c| c["mimeType"].as_str())
        .filter(|m| !m.ends_with("/rtx"))
        .collect();
    assert_eq!(mimes, ["video/VP8", "audio/opus"], "the room's codecs, in its order");
    // A room no Room object configures opens with the worker's defaults.
    let other = TestClient::connect(&url, Some(json!({"token": token("bob", "teacher")})), None)
        .await
        .unwrap();
    let plain = other.request("join-room", json!({"roomId": "plain"})).await;
    assert!(plain["mediasoup"]["rtpCapabilities"]["codecs"].as_array().unwrap().len() > 3, "{plain}");

    client.request("leave-room", json!({})).await;
    other.request("leave-room", json!({})).await;
    let rooms = fanout_worker::client::WorkerClient::new(None, Duration::from_secs(5));
    let left = std::time::Instant::now();
    loop {
        match rooms.room_info(&worker.endpoint(), "configured").await {
            Err(e) if e.is_not_found() => break,
            _ => {}
        }
        assert!(left.elapsed() < Duration::from_secs(10), "the configured room is still open 10 s after its last peer left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed_after = left.elapsed();
    assert!(closed_after >= Duration::from_millis(900), "closed {closed_after:?} after emptying, before its 1 s timeout");
    // The worker's default (60 s) still holds the other room.
    rooms.room_info(&worker.endpoint(), "plain").await.expect("the unconfigured room stays open");
    worker.shutdown().await;
}

// ---- a consumer's preferred layers and priority, through signalling to a real worker ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_layers_are_clamped_by_the_worker_and_a_bad_priority_gets_its_code() {
    let (worker, addr, _) = signalling_with_worker((45330, 45339), Duration::from_secs(30)).await;
    let url = format!("http://{addr}/");
    let publisher = TestClient::connect(&url, Some(json!({"token": token("publisher", "teacher")})), None).await.unwrap();
    publisher.request("join-room", json!({"roomId": "layers"})).await;
    publisher.request("create-transport", json!({"direction": "send"})).await;
    let produced = publisher.request("produce", json!({"kind": "video", "rtpParameters": rtp_parameters()})).await;
    let viewer = TestClient::connect(&url, Some(json!({"token": token("viewer", "student")})), None).await.unwrap();
    let joined = viewer.request("join-room", json!({"roomId": "layers"})).await;
    viewer.request("create-transport", json!({"direction": "recv"})).await;
    let capabilities = joined["mediasoup"]["rtpCapabilities"].clone();
    let consumer = viewer.request("consume", json!({"producerId": produced["id"], "rtpCapabilities": capabilities})).await;
    let id = consumer["id"].clone();
    assert!(id.is_string(), "{consumer}");
    // One encoding without a scalability mode: whatever is asked is kept as its only layer.
    let layers = viewer
        .request("set-consumer-preferred-layers", json!({"consumerId": id, "spatialLayer": 2, "temporalLayer": 2}))
        .await;
    assert_eq!(layers, json!({"consumerId": id, "spatialLayer": 0, "temporalLayer": 0}));
    for bad in [0, 256] {
        let refused = viewer.request("set-consumer-priority", json!({"consumerId": id, "priority": bad})).await;
        assert_eq!(refused["error"]["code"], "INVALID_PRIORITY", "{bad}: {refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("255"), "{refused}");
    }
    let kept = viewer.request("set-consumer-priority", json!({"consumerId": id, "priority": 200})).await;
    assert_eq!(kept, json!({"consumerId": id, "priority": 200}));
    worker.shutdown().await;
}

// ---- ICE-TCP: create-transport's protocol options, through signalling and HTTP to a real worker ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_transport_protocol_options_reach_the_worker_and_its_refusals_come_back() {
    let embedded = fanout_signalling::embedded::start_worker(&embedded_options((45340, 45349)), None)
        .await
        .expect("embedded worker starts");
    let verifier = JwtVerifier::new(&JwtConfig::hs256(SECRET)).unwrap();
    let state = Signalling::new(
        verifier,
        Arc::new(StaticPlacement::new(embedded.worker.endpoint())),
        Arc::new(WorkerBackend::new(Some(embedded.worker_token.clone()), Duration::from_secs(5))),
        Limits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let router = app(state, &[]);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = TestClient::connect(&url, Some(json!({"token": token("ada", "teacher")})), None)
        .await
        .unwrap();
    client.request("join-room", json!({"roomId": "firewalled"})).await;
    let protocols = |answer: &serde_json::Value| -> Vec<String> {
        let candidates = answer["iceCandidates"].as_array().unwrap_or_else(|| panic!("{answer}"));
        candidates.iter().map(|c| c["protocol"].as_str().unwrap().to_owned()).collect()
    };
    let both = client.request("create-transport", json!({"direction": "recv"})).await;
    assert_eq!(protocols(&both), ["udp", "tcp"], "{both}");
    let tcp_only = client.request("create-transport", json!({"direction": "recv", "enableUdp": false})).await;
    assert_eq!(protocols(&tcp_only), ["tcp"], "{tcp_only}");
    assert_eq!(tcp_only["iceCandidates"][0]["tcpType"], "passive");
    let tcp_first = client.request("create-transport", json!({"direction": "send", "preferTcp": true})).await;
    assert_eq!(protocols(&tcp_first), ["tcp", "udp"], "{tcp_first}");
    let priorities: Vec<u64> = tcp_first["iceCandidates"].as_array().unwrap().iter().map(|c| c["priority"].as_u64().unwrap()).collect();
    assert!(priorities[0] > priorities[1], "the preferred protocol has the higher priority: {priorities:?}");
    for (options, code) in [
        (json!({"enableUdp": false, "enableTcp": false}), "NO_TRANSPORT_PROTOCOL"),
        (json!({"preferUdp": true, "preferTcp": true}), "CONFLICTING_PROTOCOL_PREFERENCE"),
    ] {
        let mut payload = options.clone();
        payload["direction"] = json!("recv");
        let refused = client.request("create-transport", payload).await;
        assert_eq!(refused["error"]["code"], code, "{options}: {refused}");
        assert!(!refused["error"]["message"].as_str().unwrap().is_empty());
    }
    embedded.worker.shutdown().await;
}

// ---- data channels (docs/protocol.md, Data channels) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_producers_and_consumers_go_through_signalling_and_close_together() {
    let (worker, addr, _) = signalling_with_worker((45400, 45409), Duration::from_secs(30)).await;
    let url = format!("http://{addr}/");
    let connect = |user: &'static str| {
        let url = url.clone();
        async move { TestClient::connect(&url, Some(json!({"token": token(user, "teacher")})), None).await.unwrap() }
    };
    let sctp = json!({"numStreams": {"OS": 1024, "MIS": 1024}});
    let mut bob = connect("bob").await;
    bob.request("join-room", json!({"roomId": "data"})).await;
    let ada = connect("ada").await;
    let joined = ada.request("join-room", json!({"roomId": "data"})).await;
    let ada_id = joined["participantId"].clone();

    let plain = ada.request("create-transport", json!({"direction": "send"})).await;
    assert!(plain.get("sctpParameters").is_none(), "no SCTP unless asked: {plain}");
    let refused = ada
        .request("produce-data", json!({"transportId": plain["id"], "sctpStreamParameters": {"streamId": 0}}))
        .await;
    assert_eq!(refused["error"]["code"], "SCTP_NOT_ENABLED", "{refused}");

    let send = ada.request("create-transport", json!({"direction": "send", "sctpCapabilities": sctp})).await;
    assert_eq!(send["sctpParameters"], json!({"port": 5000, "OS": 1024, "MIS": 1024, "maxMessageSize": 262144}));
    let produced = ada
        .request(
            "produce-data",
            json!({"transportId": send["id"], "label": "chat", "protocol": "json",
                   "sctpStreamParameters": {"streamId": 3, "ordered": false, "maxRetransmits": 0}}),
        )
        .await;
    assert!(produced["id"].is_string(), "{produced}");
    assert_eq!(produced["dataProducerId"], produced["id"]);
    let announced = bob.next_event("new-data-producer").await;
    assert_eq!((&announced["dataProducerId"], &announced["participantId"]), (&produced["id"], &ada_id));
    assert_eq!((announced["label"].as_str(), announced["protocol"].as_str()), (Some("chat"), Some("json")));

    bob.request("create-transport", json!({"direction": "recv", "sctpCapabilities": sctp})).await;
    let consumed = bob.request("consume-data", json!({"dataProducerId": produced["id"]})).await;
    assert!(consumed["id"].is_string(), "{consumed}");
    assert_eq!(consumed["sctpStreamParameters"], json!({"streamId": 0, "ordered": false, "maxRetransmits": 0}));
    assert_eq!(consumed["label"], "chat");
    // Nobody closes another participant's data producer.
    let not_yours = bob.request("close-data-producer", json!({"dataProducerId": produced["id"]})).await;
    assert_eq!(not_yours["error"]["code"], "DATA_PRODUCER_NOT_FOUND", "{not_yours}");

    let closed = ada.request("close-data-producer", json!({"dataProducerId": produced["id"]})).await;
    assert_eq!(closed["dataProducerId"], produced["id"]);
    let consumer_closed = bob.next_event("data-consumer-closed").await;
    assert_eq!((&consumer_closed["dataConsumerId"], consumer_closed["reason"].as_str()), (&consumed["id"], Some("producerClosed")));
    assert_eq!(bob.next_event("data-producer-closed").await["dataProducerId"], produced["id"]);
    // Signalling forgot it: closing the closed consumer is refused here, before the worker.
    let gone = bob.request("close-data-consumer", json!({"dataConsumerId": consumed["id"]})).await;
    assert_eq!(gone["error"]["code"], "DATA_CONSUMER_NOT_FOUND", "{gone}");
    worker.shutdown().await;
}
