//! The signalling server through a real Socket.IO client (rust_socketio, Socket.IO protocol
//! v5) against a fake media backend. One behaviour per test.

mod common;

use std::time::Duration;

use common::{Call, Server, TestClient, now, rtp_parameters, sign, token};
use fanout_signalling::Limits;
use fanout_signalling::auth::JwtConfig;
use fanout_signalling::placement::StaticPlacement;
use fanout_worker::client::ClientError;
use fanout_worker::room::{
    ConsumerCloseReason, ConsumerId, Direction, PeerId, ProducerId, RoomEvent, TransportProtocols,
};
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(300);

fn code(ack: &Value) -> &str {
    ack["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {ack}"))
}

async fn refusal(server: &Server, auth: Option<Value>) -> String {
    match TestClient::connect(&server.url(), auth, None).await {
        Ok(_) => panic!("connection was accepted"),
        Err(message) => message,
    }
}

// ---- authentication ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_token_is_refused_with_token_missing() {
    let server = Server::start().await;
    let message = refusal(&server, None).await;
    assert!(message.contains("TOKEN_MISSING"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_with_token_expired() {
    let server = Server::start().await;
    let expired = sign(&json!({"sub": "u1", "exp": now() - 3600}), common::SECRET);
    let message = refusal(&server, Some(json!({"token": expired}))).await;
    assert!(message.contains("TOKEN_EXPIRED"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_another_key_is_refused_with_token_invalid_signature() {
    let server = Server::start().await;
    let forged = sign(
        &json!({"sub": "u1", "exp": now() + 3600}),
        b"not-the-server-secret",
    );
    let message = refusal(&server, Some(json!({"token": forged}))).await;
    assert!(message.contains("TOKEN_INVALID_SIGNATURE"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_token_is_refused_with_token_malformed() {
    let server = Server::start().await;
    let message = refusal(&server, Some(json!({"token": "not-a-jwt"}))).await;
    assert!(message.contains("TOKEN_MALFORMED"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_sub_is_refused_with_token_invalid() {
    let server = Server::start().await;
    let anonymous = sign(&json!({"exp": now() + 3600}), common::SECRET);
    let message = refusal(&server, Some(json!({"token": anonymous}))).await;
    assert!(message.contains("TOKEN_INVALID"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_header_is_accepted_when_the_auth_payload_has_no_token() {
    let server = Server::start().await;
    let bearer = format!("Bearer {}", token("u1", "student"));
    let connected = TestClient::connect(&server.url(), None, Some(&bearer)).await;
    assert!(connected.is_ok(), "{:?}", connected.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_query_parameter_is_accepted_as_the_last_fallback() {
    let server = Server::start().await;
    let url = format!("{}?token={}", server.url(), token("u1", "student"));
    let connected = TestClient::connect(&url, None, None).await;
    assert!(connected.is_ok(), "{:?}", connected.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_during_the_session_ends_it_with_token_expired() {
    let jwt = JwtConfig {
        leeway_seconds: 0,
        ..JwtConfig::hs256(common::SECRET)
    };
    let server =
        Server::start_configured(StaticPlacement::new(common::WORKER), Limits::default(), jwt)
            .await;
    let short = sign(&json!({"sub": "u1", "exp": now() + 2}), common::SECRET);
    let mut client = TestClient::connect(&server.url(), Some(json!({"token": short})), None)
        .await
        .unwrap();
    client
        .request("join-room", json!({"roomId": "maths"}))
        .await;
    let ended = client.next_event("error").await;
    assert_eq!(ended["code"], "TOKEN_EXPIRED");
    assert_eq!(ended["event"], "connection");
    // Ending the session leaves the room like any disconnect.
    server
        .backend
        .wait_for_call(|c| matches!(c, Call::Leave { .. }))
        .await;
}

// ---- joining ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_room_answers_with_the_ack_and_the_joined_room_event() {
    let server = Server::start().await;
    let mut client = server.client("u1", "student").await;
    let ack = client
        .request("join-room", json!({"roomId": "maths"}))
        .await;
    let event = client.next_event("joined-room").await;
    assert_eq!(ack, event);
    assert_eq!(ack["success"], true);
    assert_eq!(ack["roomId"], "maths");
    assert!(ack["participantId"].is_string());
    assert!(ack["mediasoup"]["rtpCapabilities"].is_object(), "{ack}");
    assert_eq!(ack["participants"][0]["userId"], "u1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_an_ack_still_gets_the_named_event() {
    let server = Server::start().await;
    let mut client = server.client("u1", "student").await;
    client.emit("join-room", json!({"roomId": "maths"})).await;
    assert_eq!(client.next_event("joined-room").await["roomId"], "maths");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_from_the_token_and_payload_identity_is_ignored() {
    let server = Server::start().await;
    let client = server.client("u1", "student").await;
    let ack = client
        .request(
            "join-room",
            json!({"roomId": "maths", "userId": "admin", "role": "teacher", "fullName": "Mallory"}),
        )
        .await;
    assert_eq!(ack["participants"][0]["userId"], "u1");
    assert_eq!(ack["participants"][0]["role"], "student");
    let Call::Join { request, .. } = server
        .backend
        .wait_for_call(|c| matches!(c, Call::Join { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(request.info.user_id, "u1");
    assert_eq!(request.info.role, "student");
    assert_eq!(request.info.display_name, "u1 name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_outside_the_tokens_allow_list_is_refused_with_room_not_allowed() {
    let server = Server::start().await;
    let limited = sign(
        &json!({"sub": "u1", "exp": now() + 3600, "rooms": ["maths"]}),
        common::SECRET,
    );
    let client = TestClient::connect(&server.url(), Some(json!({"token": limited})), None)
        .await
        .unwrap();
    let ack = client
        .request("join-room", json!({"roomId": "physics"}))
        .await;
    assert_eq!(code(&ack), "ROOM_NOT_ALLOWED");
    assert!(
        server
            .backend
            .calls()
            .iter()
            .all(|c| !matches!(c, Call::Join { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_participant_is_announced_to_the_first() {
    let server = Server::start().await;
    let (mut first, _) = server.joined("u1", "student", "maths").await;
    let (_second, second_id) = server.joined("u2", "student", "maths").await;
    let joined = first.next_event("participant-joined").await;
    assert_eq!(joined["participantId"], second_id.as_str());
    assert_eq!(joined["userId"], "u2");
}

// ---- errors ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_gets_an_error_ack_and_an_error_event() {
    let server = Server::start().await;
    let mut client = server.client("u1", "student").await;
    let ack = client
        .request(
            "create-transport",
            json!({"roomId": "maths", "direction": "send"}),
        )
        .await;
    assert_eq!(code(&ack), "NOT_IN_ROOM");
    assert!(
        ack["error"]["message"]
            .as_str()
            .unwrap()
            .contains("join-room"),
        "{ack}"
    );
    let event = client.next_event("error").await;
    assert_eq!(event["event"], "create-transport");
    assert_eq!(event["code"], "NOT_IN_ROOM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refusal_is_passed_on_with_its_code_and_message() {
    let server = Server::start().await;
    let (client, _) = server.joined("u1", "teacher", "maths").await;
    client
        .request("create-transport", json!({"direction": "send"}))
        .await;
    server.backend.fail(
        "produce",
        ClientError::Api {
            status: 400,
            code: "UNSUPPORTED_CODEC".into(),
            message: "no router codec matches video/H265".into(),
        },
    );
    let ack = client
        .request(
            "produce",
            json!({"kind": "video", "rtpParameters": rtp_parameters()}),
        )
        .await;
    assert_eq!(
        ack,
        json!({"error": {"code": "UNSUPPORTED_CODEC", "message": "no router codec matches video/H265"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_worker_is_worker_unavailable() {
    let server = Server::start().await;
    server.backend.fail(
        "join",
        ClientError::Unavailable {
            endpoint: common::WORKER.into(),
            reason: "connection refused".into(),
        },
    );
    let client = server.client("u1", "student").await;
    let ack = client
        .request("join-room", json!({"roomId": "maths"}))
        .await;
    assert_eq!(code(&ack), "WORKER_UNAVAILABLE");
    assert!(
        !ack.to_string().contains("worker.test"),
        "internal address leaked: {ack}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_of_the_wrong_shape_is_invalid_payload() {
    let server = Server::start().await;
    let (client, _) = server.joined("u1", "student", "maths").await;
    let ack = client
        .request("create-transport", json!({"direction": "sideways"}))
        .await;
    assert_eq!(code(&ack), "INVALID_PAYLOAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_is_refused_with_payload_too_large() {
    let limits = Limits {
        max_event_bytes: 1024,
        ..Limits::default()
    };
    let server = Server::start_with(StaticPlacement::new(common::WORKER), limits).await;
    let client = server.client("u1", "student").await;
    let ack = client
        .request(
            "join-room",
            json!({"roomId": "maths", "padding": "x".repeat(2000)}),
        )
        .await;
    assert_eq!(code(&ack), "PAYLOAD_TOO_LARGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_flood_is_refused_with_rate_limited() {
    let limits = Limits {
        events_per_second: 1,
        event_burst: 3,
        ..Limits::default()
    };
    let server = Server::start_with(StaticPlacement::new(common::WORKER), limits).await;
    let client = server.client("u1", "student").await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let ack = client.request("get-participants", json!({})).await;
        codes.push(ack["error"]["code"].as_str().unwrap_or("ok").to_owned());
    }
    // The first three pass admission (and fail for not being in a room), then the bucket is empty.
    assert_eq!(
        codes,
        [
            "NOT_IN_ROOM",
            "NOT_IN_ROOM",
            "NOT_IN_ROOM",
            "RATE_LIMITED",
            "RATE_LIMITED"
        ]
    );
}

// ---- relay ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_offer_reaches_only_its_target_with_the_senders_id() {
    let server = Server::start().await;
    let (sender, sender_id) = server.joined("u1", "student", "maths").await;
    let (mut target, target_id) = server.joined("u2", "student", "maths").await;
    let (mut bystander, _) = server.joined("u3", "student", "maths").await;
    let ack = sender
        .request(
            "webrtc-offer",
            json!({"targetId": target_id, "sdp": "v=0...", "from": "spoofed"}),
        )
        .await;
    assert_eq!(ack["success"], true, "{ack}");
    let offer = target.next_event("webrtc-offer").await;
    assert_eq!(offer["sdp"], "v=0...");
    assert_eq!(offer["from"], sender_id.as_str());
    assert!(!bystander.receives("webrtc-offer", QUIET).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_to_someone_in_another_room_is_target_not_found() {
    let server = Server::start().await;
    let (sender, _) = server.joined("u1", "student", "maths").await;
    let (mut elsewhere, elsewhere_id) = server.joined("u2", "student", "physics").await;
    let ack = sender
        .request(
            "ice-candidate",
            json!({"targetId": elsewhere_id, "candidate": {}}),
        )
        .await;
    assert_eq!(code(&ack), "TARGET_NOT_FOUND");
    assert!(!elsewhere.receives("ice-candidate", QUIET).await);
}

// ---- media ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_transport_answers_what_mediasoup_client_needs() {
    let server = Server::start().await;
    let (mut client, participant) = server.joined("u1", "student", "maths").await;
    let ack = client
        .request(
            "create-transport",
            json!({"roomId": "maths", "direction": "recv"}),
        )
        .await;
    assert_eq!(client.next_event("transport-created").await, ack);
    assert_eq!(ack["id"], ack["transportId"]);
    assert_eq!(ack["iceParameters"]["iceLite"], true);
    assert!(
        ack["iceCandidates"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(
        ack["dtlsParameters"]["fingerprints"][0]["algorithm"],
        "sha-256"
    );
    assert!(server.backend.calls().contains(&Call::CreateTransport {
        room: "maths".into(),
        peer: participant.as_str().into(),
        direction: Direction::Recv,
        protocols: TransportProtocols::default(),
    }));
    // Without ICE servers configured: an empty list, and no policy.
    assert_eq!(ack["iceServers"], json!([]));
    assert!(ack.get("iceTransportPolicy").is_none(), "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_transport_passes_the_protocol_options_and_the_workers_refusal() {
    let server = Server::start().await;
    let (mut client, participant) = server.joined("u1", "student", "maths").await;
    let ack = client
        .request(
            "create-transport",
            json!({"direction": "recv", "enableUdp": false, "enableTcp": true, "preferTcp": true}),
        )
        .await;
    assert!(ack["id"].is_string(), "{ack}");
    assert!(server.backend.calls().contains(&Call::CreateTransport {
        room: "maths".into(),
        peer: participant.as_str().into(),
        direction: Direction::Recv,
        protocols: TransportProtocols {
            enable_udp: Some(false),
            enable_tcp: Some(true),
            prefer_udp: None,
            prefer_tcp: Some(true),
        },
    }));
    // A value of the wrong type is the client's mistake, named before the worker is asked.
    let wrong = client
        .request("create-transport", json!({"direction": "recv", "enableTcp": "yes"}))
        .await;
    assert_eq!(code(&wrong), "INVALID_PAYLOAD", "{wrong}");
    // The worker's refusal comes back with its code, as every worker refusal does.
    server.backend.fail(
        "create_transport",
        ClientError::Api {
            status: 400,
            code: "NO_TRANSPORT_PROTOCOL".into(),
            message: "enableUdp and enableTcp leave the transport no protocol: enable at least one".into(),
        },
    );
    let refused = client
        .request("create-transport", json!({"direction": "recv", "enableUdp": false, "enableTcp": false}))
        .await;
    assert_eq!(code(&refused), "NO_TRANSPORT_PROTOCOL", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("enable at least one"), "{refused}");
    for expected in ["INVALID_PAYLOAD", "NO_TRANSPORT_PROTOCOL"] {
        let error = client.next_event("error").await;
        assert_eq!((error["event"].as_str(), error["code"].as_str()), (Some("create-transport"), Some(expected)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_transport_hands_out_the_ice_servers_with_fresh_turn_credentials() {
    use fanout_signalling::ice_servers::{IceConfig, IceServer, IceTransportPolicy, TurnRest, turn_credential};
    let stun = IceServer { urls: vec!["stun:stun.example.com:3478".into()], username: None, credential: None };
    let server = Server::start_with_ice(IceConfig {
        static_servers: vec![stun],
        turn: Some(TurnRest {
            urls: vec!["turn:turn.example.com:3478?transport=tcp".into()],
            secret: "north".into(),
            ttl_seconds: 3600,
        }),
        policy: Some(IceTransportPolicy::Relay),
    })
    .await;
    let (mut client, participant) = server.joined("u1", "student", "maths").await;
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let ack = client.request("create-transport", json!({"direction": "recv"})).await;
    assert_eq!(ack["iceTransportPolicy"], "relay", "{ack}");
    assert_eq!(ack["iceServers"][0], json!({"urls": ["stun:stun.example.com:3478"]}));
    let turn = &ack["iceServers"][1];
    assert_eq!(turn["urls"], json!(["turn:turn.example.com:3478?transport=tcp"]));
    let username = turn["username"].as_str().unwrap();
    let (expiry, peer) = username.split_once(':').unwrap();
    assert_eq!(peer, participant.as_str());
    let expiry: u64 = expiry.parse().unwrap();
    assert!((before + 3600..=before + 3602).contains(&expiry), "expiry {expiry}, now {before}");
    assert_eq!(turn["credential"].as_str(), Some(turn_credential(b"north", username).as_str()));
    // The named answer carries the same.
    assert_eq!(client.next_event("transport-created").await, ack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_transport_passes_the_dtls_parameters_for_an_own_transport() {
    let server = Server::start().await;
    let (mut client, _) = server.joined("u1", "student", "maths").await;
    let transport = client
        .request("create-transport", json!({"direction": "send"}))
        .await["id"]
        .clone();
    let dtls =
        json!({"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": "AA:BB"}]});
    let ack = client
        .request(
            "connect-transport",
            json!({"transportId": transport, "dtlsParameters": dtls}),
        )
        .await;
    assert_eq!(ack["transportId"], transport);
    assert_eq!(client.next_event("transport-connected").await, ack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_uses_the_only_send_transport_and_tells_the_others() {
    let server = Server::start().await;
    let (mut watcher, _) = server.joined("u2", "student", "maths").await;
    let (mut producer, producer_id) = server.joined("u1", "teacher", "maths").await;
    let transport = producer
        .request("create-transport", json!({"direction": "send"}))
        .await["id"]
        .clone();
    let ack = producer
        .request(
            "produce",
            json!({"roomId": "maths", "kind": "video", "rtpParameters": rtp_parameters(),
                   "appData": {"source": "camera"}}),
        )
        .await;
    assert!(ack["id"].is_string(), "{ack}");
    assert_eq!(ack["kind"], "video");
    assert_eq!(producer.next_event("producer-created").await, ack);
    let Call::Produce { request, .. } = server
        .backend
        .wait_for_call(|c| matches!(c, Call::Produce { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(request.transport_id.as_str(), transport.as_str().unwrap());
    assert_eq!(request.peer_id.as_str(), producer_id);
    let announced = watcher.next_event("new-producer").await;
    assert_eq!(announced["producerId"], ack["id"]);
    assert_eq!(announced["participantId"], producer_id.as_str());
    assert_eq!(announced["appData"]["source"], "camera");
    assert!(
        !producer.receives("new-producer", QUIET).await,
        "the producer is not told its own producer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_answers_the_consumer_parameters() {
    let server = Server::start().await;
    let (mut client, participant) = server.joined("u1", "student", "maths").await;
    client
        .request("create-transport", json!({"direction": "recv"}))
        .await;
    let ack = client
        .request(
            "consume",
            json!({"producerId": "producer-9", "rtpCapabilities": {"codecs": []}, "paused": true}),
        )
        .await;
    assert!(ack["id"].is_string(), "{ack}");
    assert_eq!(ack["producerId"], "producer-9");
    assert_eq!(ack["kind"], "video");
    assert!(ack["rtpParameters"]["codecs"].is_array());
    assert_eq!(client.next_event("consumer-created").await, ack);
    let Call::Consume { request, .. } = server
        .backend
        .wait_for_call(|c| matches!(c, Call::Consume { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(request.peer_id.as_str(), participant);
    assert!(request.paused);
    let resumed = client
        .request("resume-consumer", json!({"consumerId": ack["id"]}))
        .await;
    assert_eq!(resumed["consumerId"], ack["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_outside_the_publishers_can_neither_open_a_send_transport_nor_produce() {
    let placement = StaticPlacement::new(common::WORKER).with_publishers(vec!["teacher".into()]);
    let server = Server::start_with(placement, Limits::default()).await;
    let (student, _) = server.joined("u1", "student", "maths").await;
    let send = student
        .request("create-transport", json!({"direction": "send"}))
        .await;
    assert_eq!(code(&send), "PUBLISH_NOT_ALLOWED");
    let produce = student
        .request(
            "produce",
            json!({"kind": "audio", "rtpParameters": rtp_parameters()}),
        )
        .await;
    assert_eq!(code(&produce), "PUBLISH_NOT_ALLOWED");
    // Receiving is for everyone.
    let recv = student
        .request("create-transport", json!({"direction": "recv"}))
        .await;
    assert!(recv["id"].is_string(), "{recv}");
    let calls = server.backend.calls();
    assert!(!calls.iter().any(|c| matches!(
        c,
        Call::CreateTransport {
            direction: Direction::Send,
            ..
        }
    )));
    assert!(!calls.iter().any(|c| matches!(c, Call::Produce { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_publisher_role_may_produce() {
    let placement = StaticPlacement::new(common::WORKER).with_publishers(vec!["teacher".into()]);
    let server = Server::start_with(placement, Limits::default()).await;
    let (teacher, _) = server.joined("u1", "teacher", "maths").await;
    teacher
        .request("create-transport", json!({"direction": "send"}))
        .await;
    let ack = teacher
        .request(
            "produce",
            json!({"kind": "audio", "rtpParameters": rtp_parameters()}),
        )
        .await;
    assert!(ack["id"].is_string(), "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_another_participants_producer_is_refused_before_the_worker() {
    let server = Server::start().await;
    let (owner, _) = server.joined("u1", "teacher", "maths").await;
    owner
        .request("create-transport", json!({"direction": "send"}))
        .await;
    let produced = owner
        .request(
            "produce",
            json!({"kind": "video", "rtpParameters": rtp_parameters()}),
        )
        .await;
    let (intruder, _) = server.joined("u2", "student", "maths").await;
    let ack = intruder
        .request("close-producer", json!({"producerId": produced["id"]}))
        .await;
    assert_eq!(code(&ack), "PRODUCER_NOT_FOUND");
    assert!(
        !server
            .backend
            .calls()
            .iter()
            .any(|c| matches!(c, Call::CloseProducer { .. }))
    );
}

// ---- leaving ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_leaves_the_room_on_the_worker_and_tells_the_others() {
    let server = Server::start().await;
    let (mut stayer, _) = server.joined("u1", "student", "maths").await;
    let (leaver, leaver_id) = server.joined("u2", "student", "maths").await;
    stayer.next_event("participant-joined").await;
    leaver.socket.disconnect().await.unwrap();
    server
        .backend
        .wait_for_call(|c| matches!(c, Call::Leave { peer, .. } if peer.as_str() == leaver_id))
        .await;
    let left = stayer.next_event("participant-left").await;
    assert_eq!(left["participantId"], leaver_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_closed_by_the_worker_is_told_to_its_owner_only() {
    let server = Server::start().await;
    let (mut owner, owner_id) = server.joined("u1", "student", "maths").await;
    let (mut other, _) = server.joined("u2", "student", "maths").await;
    server.backend.publish(
        "maths",
        RoomEvent::ConsumerClosed {
            consumer_id: ConsumerId::from("consumer-1"),
            peer_id: PeerId::from(owner_id.as_str()),
            producer_id: ProducerId::from("producer-1"),
            reason: ConsumerCloseReason::ProducerClosed,
        },
    );
    let closed = owner.next_event("consumer-closed").await;
    assert_eq!(closed["consumerId"], "consumer-1");
    assert!(!other.receives("consumer-closed", QUIET).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_room_answers_left_room_and_stops_following_an_emptied_room() {
    let server = Server::start().await;
    let (mut client, participant) = server.joined("u1", "student", "maths").await;
    assert_eq!(server.state.followed_rooms(), 1);
    let ack = client
        .request("leave-room", json!({"roomId": "maths"}))
        .await;
    assert_eq!(ack, json!({"success": true, "roomId": "maths"}));
    assert_eq!(client.next_event("left-room").await, ack);
    assert!(server.backend.calls().contains(&Call::Leave {
        room: "maths".into(),
        peer: participant.as_str().into()
    }));
    assert_eq!(server.state.followed_rooms(), 0);
    let again = client
        .request("get-participants", json!({"roomId": "maths"}))
        .await;
    assert_eq!(code(&again), "NOT_IN_ROOM");
}

// ---- HTTP ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_are_served_next_to_socket_io() {
    let server = Server::start().await;
    let (_client, _) = server.joined("u1", "student", "maths").await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}healthz", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = http
        .get(format!("{}metrics", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("fanout_signalling_connections 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"fanout_signalling_events_total{event="join-room",outcome="ok"} 1"#),
        "{metrics}"
    );
}

/// A placement whose rooms the test moves between workers, as the operator does when a
/// worker is lost: every room is on `endpoint`, and `moves` tells of a move.
struct MovingPlacement {
    moves: tokio::sync::broadcast::Sender<fanout_signalling::placement::Migration>,
    endpoint: std::sync::Mutex<String>,
}

impl MovingPlacement {
    fn new() -> (std::sync::Arc<Self>, tokio::sync::broadcast::Sender<fanout_signalling::placement::Migration>) {
        let (moves, _) = tokio::sync::broadcast::channel(4);
        (std::sync::Arc::new(MovingPlacement { moves: moves.clone(), endpoint: std::sync::Mutex::new(common::WORKER.into()) }), moves)
    }
}

#[async_trait::async_trait]
impl fanout_signalling::placement::Placement for MovingPlacement {
    async fn locate(&self, _room: &str) -> fanout_signalling::Result<fanout_signalling::placement::RoomLocation> {
        let endpoint = self.endpoint.lock().unwrap().clone();
        Ok(fanout_signalling::placement::RoomLocation { endpoint, publishers: vec![], max_peers: None, setup: Default::default() })
    }

    fn migrations(&self) -> Option<tokio::sync::broadcast::Receiver<fanout_signalling::placement::Migration>> {
        Some(self.moves.subscribe())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moved_to_another_worker_tells_its_participants_room_migrated() {
    let (placement, moves) = MovingPlacement::new();
    let server = common::Server::start_placed(placement, fanout_signalling::Limits::default(), fanout_signalling::auth::JwtConfig::hs256(common::SECRET)).await;
    let (mut ada, _) = server.joined("ada", "teacher", "maths").await;
    let (mut bob, _) = server.joined("bob", "student", "physics").await;
    moves.send(fanout_signalling::placement::Migration { room: "maths".into(), endpoint: "http://10.0.0.2:3000".into() }).unwrap();
    let event = ada.next_event("room-migrated").await;
    assert_eq!(event["roomId"], "maths");
    assert!(!bob.receives("room-migrated", std::time::Duration::from_millis(300)).await, "other rooms are not told");
    // Out of the room on its old worker: joining again joins it where it is now.
    let again = ada.request("join-room", json!({"roomId": "maths"})).await;
    assert_eq!(again["roomId"], "maths", "{again}");
    assert!(again.get("error").is_none(), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_who_joined_a_moved_room_on_its_new_worker_before_the_move_was_told_stays() {
    // The order a worker shutting down gives: its participants were put out (WORKER_SHUTDOWN)
    // and rejoined, and one rejoin read the new placement before signalling heard of the move.
    let (placement, moves) = MovingPlacement::new();
    let server = common::Server::start_placed(placement.clone(), fanout_signalling::Limits::default(), fanout_signalling::auth::JwtConfig::hs256(common::SECRET)).await;
    let backend = server.backend.clone();
    let (mut ada, _) = server.joined("ada", "teacher", "maths").await;
    let new_worker = "http://10.0.0.2:3000";
    *placement.endpoint.lock().unwrap() = new_worker.into();
    let (mut carol, _) = server.joined("carol", "student", "maths").await;
    // Carol is followed where she joined: she hears of the room's events from the new worker.
    backend
        .wait_for_call(|c| matches!(c, common::Call::Events { endpoint, room } if endpoint == new_worker && room == "maths"))
        .await;
    moves.send(fanout_signalling::placement::Migration { room: "maths".into(), endpoint: new_worker.into() }).unwrap();
    assert_eq!(ada.next_event("room-migrated").await["roomId"], "maths", "ada was on the old worker");
    assert!(!carol.receives("room-migrated", std::time::Duration::from_millis(300)).await, "carol is on the new worker already");
    // She is still in the room: a request of the room works.
    let info = carol.request("get-room-info", json!({"roomId": "maths"})).await;
    assert!(info.get("error").is_none(), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_layers_and_priority_of_an_own_consumer_are_set_and_answered_by_name() {
    let server = Server::start().await;
    let (mut client, _) = server.joined("u1", "student", "maths").await;
    client
        .request("create-transport", json!({"direction": "recv"}))
        .await;
    let consumer = client
        .request(
            "consume",
            json!({"producerId": "producer-9", "rtpCapabilities": {"codecs": []}, "paused": true}),
        )
        .await;
    let id = consumer["id"].clone();
    let layers = client
        .request(
            "set-consumer-preferred-layers",
            json!({"roomId": "maths", "consumerId": id, "spatialLayer": 0, "temporalLayer": 1}),
        )
        .await;
    assert_eq!(layers, json!({"consumerId": id, "spatialLayer": 0, "temporalLayer": 1}));
    assert_eq!(client.next_event("consumer-preferred-layers-set").await, layers);
    let priority = client
        .request("set-consumer-priority", json!({"roomId": "maths", "consumerId": id, "priority": 3}))
        .await;
    assert_eq!(priority, json!({"consumerId": id, "priority": 3}));
    assert_eq!(client.next_event("consumer-priority-set").await, priority);
    // Only the participant's own consumers, and the payload's shape is checked.
    let foreign = client
        .request("set-consumer-priority", json!({"consumerId": "not-mine", "priority": 3}))
        .await;
    assert_eq!(code(&foreign), "CONSUMER_NOT_FOUND");
    let malformed = client
        .request("set-consumer-preferred-layers", json!({"consumerId": id, "spatialLayer": "top"}))
        .await;
    assert_eq!(code(&malformed), "INVALID_PAYLOAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_changes_and_scores_are_told_to_their_consumers_owner_only() {
    let server = Server::start().await;
    let (mut owner, owner_id) = server.joined("u1", "student", "maths").await;
    let (mut other, _) = server.joined("u2", "student", "maths").await;
    server.backend.publish(
        "maths",
        RoomEvent::ConsumerLayersChanged {
            consumer_id: ConsumerId::from("consumer-1"),
            peer_id: PeerId::from(owner_id.as_str()),
            producer_id: ProducerId::from("producer-1"),
            spatial_layer: Some(0),
            temporal_layer: Some(2),
            state: fanout_worker::engine::ConsumerLayerState::Active,
        },
    );
    let layers = owner.next_event("consumer-layers-changed").await;
    assert_eq!(
        layers,
        json!({"roomId": "maths", "consumerId": "consumer-1", "producerId": "producer-1",
               "spatialLayer": 0, "temporalLayer": 2, "state": "active"})
    );
    server.backend.publish(
        "maths",
        RoomEvent::ConsumerScore {
            consumer_id: ConsumerId::from("consumer-1"),
            peer_id: PeerId::from(owner_id.as_str()),
            producer_id: ProducerId::from("producer-1"),
            score: 10,
            producer_score: 9,
            producer_scores: vec![10, 9, 0],
        },
    );
    let score = owner.next_event("consumer-score").await;
    assert_eq!(score["producerScores"], json!([10, 9, 0]));
    assert!(!other.receives("consumer-layers-changed", QUIET).await);
    assert!(!other.receives("consumer-score", QUIET).await);
}
