//! The REST API through `oneshot` on the router, with a [`FakeEngine`]: one behaviour per
//! test, each request as signalling would send it.

use std::sync::Arc;

use axum::body::Body;
use futures::StreamExt;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::control::testing::{
    FakeEngine, chrome_device_capabilities, chrome_dtls_parameters, chrome_vp8_parameters,
};
use crate::room::{PeerInfo, SequentialIds};

const TOKEN: &str = "s3cret-token";
const ROOM: &str = "physics-101";

struct App {
    router: Router,
    engine: Arc<FakeEngine>,
    control: Arc<ControlPlane>,
}

fn app_with(ports: std::ops::RangeInclusive<u16>, token: Option<&str>) -> App {
    let engine = Arc::new(FakeEngine::new(ports));
    let control = Arc::new(ControlPlane::new(engine.clone(), SequentialIds::new()));
    let router = router(ApiState::new(control.clone(), token.map(str::to_owned)));
    App {
        router,
        engine,
        control,
    }
}

fn app() -> App {
    app_with(40000..=40009, Some(TOKEN))
}

impl App {
    /// Sends a request with the right token; returns the status and the JSON body (`Null`
    /// when empty).
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map_or_else(Body::empty, |value| Body::from(value.to_string()));
        self.raw(method, uri, body, Some(TOKEN)).await
    }

    async fn raw(
        &self,
        method: Method,
        uri: &str,
        body: Body,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).expect("request builds"))
            .await
            .expect("the router never fails");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body reads");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    async fn join(&self, peer: &str) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/rooms/{ROOM}/peers"),
                Some(json!({"peerId": peer, "displayName": peer, "role": "student"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn transport(&self, peer: &str, direction: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/rooms/{ROOM}/transports"),
                Some(json!({"peerId": peer, "direction": direction})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    async fn produce(&self, peer: &str, transport: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/rooms/{ROOM}/producers"),
                Some(json!({
                    "peerId": peer, "transportId": transport, "kind": "video",
                    "rtpParameters": chrome_vp8_parameters(), "appData": {"source": "camera"}
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    async fn consume(&self, peer: &str, transport: &str, producer: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/consumers"),
            Some(json!({
                "peerId": peer, "transportId": transport, "producerId": producer,
                "rtpCapabilities": chrome_device_capabilities(), "paused": true
            })),
        )
        .await
    }

    /// Alice sends a camera, Bob receives it: (send, recv, producer, consumer) ids.
    async fn alice_sends_bob_receives(&self) -> (String, String, String, String) {
        self.join("alice").await;
        self.join("bob").await;
        let send = self.transport("alice", "send").await;
        let recv = self.transport("bob", "recv").await;
        let producer = self.produce("alice", &send).await;
        let (status, consumer) = self.consume("bob", &recv, &producer).await;
        assert_eq!(status, StatusCode::CREATED, "{consumer}");
        let consumer = consumer["id"].as_str().expect("id").to_owned();
        (send, recv, producer, consumer)
    }

    async fn room_info(&self) -> Value {
        let (status, body) = self
            .call(Method::GET, &format!("/v1/rooms/{ROOM}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{}",
        answer.1
    );
}

// ---------------------------------------------------------------------------------------------
// Probes, metrics, auth, routing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_answers_ok_without_a_token() {
    let app = app();
    let answer = app.raw(Method::GET, "/healthz", Body::empty(), None).await;
    assert_eq!(answer, (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn healthz_answers_503_once_shutting_down() {
    let app = app();
    app.control.shutdown();
    let (status, _) = app.raw(Method::GET, "/healthz", Body::empty(), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn metrics_are_open_and_count_objects_and_requests() {
    let app = app();
    app.alice_sends_bob_receives().await;
    let (status, body) = app.raw(Method::GET, "/metrics", Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("text");
    for line in [
        "fanout_worker_rooms 1",
        "fanout_worker_peers 2",
        "fanout_worker_transports 2",
        "fanout_worker_producers 1",
        "fanout_worker_consumers 1",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    assert!(
        text.contains(
            r#"fanout_worker_http_requests_total{route="/v1/rooms/{room}/peers",method="POST",status="201"} 2"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn v1_without_a_token_is_unauthorized() {
    let app = app();
    let answer = app.raw(Method::GET, "/v1/stats", Body::empty(), None).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn v1_with_a_wrong_token_is_unauthorized_and_changes_nothing() {
    let app = app();
    let answer = app
        .raw(
            Method::PUT,
            &format!("/v1/rooms/{ROOM}"),
            Body::empty(),
            Some("s3cret-tokeN"),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(app.control.stats().rooms, 0);
}

#[tokio::test]
async fn v1_is_open_when_no_token_is_configured() {
    let app = app_with(40000..=40009, None);
    let (status, body) = app.raw(Method::GET, "/v1/stats", Body::empty(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rooms"], 0);
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let app = app();
    let answer = app.call(Method::GET, "/v2/rooms", None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let app = app();
    let answer = app
        .call(Method::PATCH, &format!("/v1/rooms/{ROOM}"), None)
        .await;
    assert_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
}

// ---------------------------------------------------------------------------------------------
// Rooms and peers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn put_room_without_a_body_opens_it_with_the_default_codecs() {
    let app = app();
    let (status, body) = app
        .call(Method::PUT, &format!("/v1/rooms/{ROOM}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let codecs = body["rtpCapabilities"]["codecs"]
        .as_array()
        .expect("codecs");
    assert!(codecs.iter().any(|codec| codec["mimeType"] == "audio/opus"));
    assert!(codecs.iter().any(|codec| codec["mimeType"] == "video/VP8"));
}

#[tokio::test]
async fn put_room_with_an_unsupported_codec_is_refused_and_opens_nothing() {
    let app = app();
    let answer = app
        .call(
            Method::PUT,
            &format!("/v1/rooms/{ROOM}"),
            Some(json!({"mediaCodecs": [
                {"kind": "video", "mimeType": "video/AV2", "clockRate": 90000}
            ]})),
        )
        .await;
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{}", answer.1);
    assert_eq!(app.control.stats().rooms, 0);
}

#[tokio::test]
async fn get_room_lists_what_is_open_in_it() {
    let app = app();
    let (send, recv, producer, consumer) = app.alice_sends_bob_receives().await;
    let info = app.room_info().await;
    assert_eq!(info["roomId"], ROOM);
    assert_eq!(info["peers"][0]["peerId"], "alice");
    assert_eq!(info["peers"][1]["peerId"], "bob");
    assert_eq!(info["transports"][0]["transportId"], send.as_str());
    assert_eq!(info["transports"][1]["transportId"], recv.as_str());
    assert_eq!(info["producers"][0]["producerId"], producer.as_str());
    assert_eq!(info["consumers"][0]["consumerId"], consumer.as_str());
    assert_eq!(info["consumers"][0]["paused"], true);
}

#[tokio::test]
async fn get_room_of_an_unknown_room_is_404_room_not_found() {
    let app = app();
    let answer = app.call(Method::GET, "/v1/rooms/nowhere", None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "ROOM_NOT_FOUND");
}

#[tokio::test]
async fn join_opens_the_room_and_lists_the_other_peers_and_their_producers() {
    let app = app();
    app.join("alice").await;
    let send = app.transport("alice", "send").await;
    let producer = app.produce("alice", &send).await;
    let joined = app.join("bob").await;
    assert!(joined["rtpCapabilities"]["codecs"].is_array());
    assert_eq!(
        joined["peers"],
        json!([{
            "peerId": "alice", "userId": "", "displayName": "alice", "role": "student", "appData": {}
        }])
    );
    assert_eq!(joined["producers"][0]["producerId"], producer.as_str());
    assert_eq!(
        joined["producers"][0]["appData"],
        json!({"source": "camera"})
    );
}

#[tokio::test]
async fn joining_twice_with_one_peer_id_is_409() {
    let app = app();
    app.join("alice").await;
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/peers"),
            Some(json!({"peerId": "alice"})),
        )
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "PEER_ALREADY_JOINED");
}

#[tokio::test]
async fn leave_closes_the_peers_objects_and_answers_204() {
    let app = app();
    app.alice_sends_bob_receives().await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/rooms/{ROOM}/peers/alice"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let stats = app.control.stats();
    assert_eq!((stats.peers, stats.producers, stats.consumers), (1, 0, 0));
}

#[tokio::test]
async fn leaving_an_unknown_peer_is_404_peer_not_found() {
    let app = app();
    app.join("alice").await;
    let answer = app
        .call(
            Method::DELETE,
            &format!("/v1/rooms/{ROOM}/peers/mallory"),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "PEER_NOT_FOUND");
}

#[tokio::test]
async fn delete_room_answers_204_then_404() {
    let app = app();
    app.join("alice").await;
    let uri = format!("/v1/rooms/{ROOM}");
    assert_eq!(
        app.call(Method::DELETE, &uri, None).await.0,
        StatusCode::NO_CONTENT
    );
    let answer = app.call(Method::DELETE, &uri, None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "ROOM_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// Bad requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_400_invalid_request_and_leaves_the_room_untouched() {
    let app = app();
    app.alice_sends_bob_receives().await;
    let before = app.room_info().await;
    let answer = app
        .raw(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/producers"),
            Body::from(r#"{"peerId": "alice", "transportId": "#),
            Some(TOKEN),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    assert_eq!(app.room_info().await, before);
}

#[tokio::test]
async fn dot_segments_and_unsafe_ids_in_a_path_are_400_invalid_id_not_an_unknown_route() {
    let app = app();
    for uri in [
        "/v1/rooms/../peers",
        "/v1/rooms/%2E%2E/peers",
        "/v1/rooms/./peers",
        "/v1/rooms/a%2Fb/peers",
        "/v1/rooms/a%20b/peers",
    ] {
        let answer = app
            .call(Method::POST, uri, Some(json!({"peerId": "alice"})))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_ID");
        let message = answer.1["error"]["message"].as_str().expect("message");
        assert!(message.starts_with("the room id"), "{uri}: {message}");
    }
    let answer = app
        .call(
            Method::DELETE,
            &format!("/v1/rooms/{ROOM}/transports/.."),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_ID");
    assert_eq!(app.control.stats().rooms, 0, "nothing was opened");
}

#[tokio::test]
async fn an_unsafe_peer_id_in_a_join_body_is_400_invalid_id() {
    let app = app();
    for bad in ["..", "a/b", ""] {
        let answer = app
            .call(
                Method::POST,
                &format!("/v1/rooms/{ROOM}/peers"),
                Some(json!({"peerId": bad})),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_ID");
    }
    assert_eq!(app.control.stats().peers, 0);
}

#[tokio::test]
async fn a_huge_unknown_id_is_echoed_only_by_its_beginning() {
    let app = app();
    app.join("alice").await;
    let huge = "p".repeat(100_000);
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/transports"),
            Some(json!({"peerId": huge, "direction": "send"})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "PEER_NOT_FOUND");
    let message = answer.1["error"]["message"].as_str().expect("message");
    assert!(message.len() < 400, "{} bytes echoed", message.len());
    assert!(message.contains("(100000 characters)"), "{message}");
    // serde's own messages quote the value too: bounded the same way.
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/transports"),
            Some(json!({"peerId": "alice", "direction": huge})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .expect("message")
            .len()
            < 400
    );
}

#[tokio::test]
async fn a_missing_field_is_400_naming_the_field() {
    let app = app();
    app.join("alice").await;
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/transports"),
            Some(json!({"peerId": "alice"})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let message = answer.1["error"]["message"].as_str().expect("message");
    assert!(message.contains("missing field `direction`"), "{message}");
}

#[tokio::test]
async fn an_unknown_direction_is_400_invalid_request() {
    let app = app();
    app.join("alice").await;
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/transports"),
            Some(json!({"peerId": "alice", "direction": "sideways"})),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    assert_eq!(app.control.stats().transports, 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = app();
    let padding = "x".repeat(BODY_LIMIT + 1);
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/peers"),
            Some(json!({"peerId": "alice", "displayName": padding})),
        )
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    assert_eq!(app.control.stats().rooms, 0);
}

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_transport_answers_what_mediasoup_client_needs() {
    let app = app();
    app.join("alice").await;
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/transports"),
            Some(json!({"peerId": "alice", "direction": "send"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["iceParameters"]["iceLite"], true);
    assert_eq!(body["iceCandidates"][0]["port"], 40000);
    assert_eq!(body["iceCandidates"][0]["address"], "127.0.0.1");
    assert_eq!(body["dtlsParameters"]["role"], "auto");
    assert_eq!(
        body["dtlsParameters"]["fingerprints"][0]["value"],
        FakeEngine::fingerprint().value
    );
}

#[tokio::test]
async fn exhausted_ports_answer_503_ports_exhausted() {
    let app = app_with(40000..=40001, Some(TOKEN));
    app.join("alice").await;
    app.transport("alice", "send").await;
    app.transport("alice", "recv").await;
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/transports"),
            Some(json!({"peerId": "alice", "direction": "recv"})),
        )
        .await;
    assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "PORTS_EXHAUSTED");
    assert_eq!(app.control.stats().transports, 2);
}

#[tokio::test]
async fn a_second_connect_is_409_transport_already_connected() {
    let app = app();
    app.join("alice").await;
    let send = app.transport("alice", "send").await;
    let uri = format!("/v1/rooms/{ROOM}/transports/{send}/connect");
    let body = json!({"dtlsParameters": chrome_dtls_parameters()});
    let first = app.call(Method::POST, &uri, Some(body.clone())).await;
    assert_eq!(first.0, StatusCode::NO_CONTENT, "{}", first.1);
    let second = app.call(Method::POST, &uri, Some(body)).await;
    assert_error(&second, StatusCode::CONFLICT, "TRANSPORT_ALREADY_CONNECTED");
}

#[tokio::test]
async fn connecting_an_unknown_transport_is_404_transport_not_found() {
    let app = app();
    app.join("alice").await;
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/transports/transport-404/connect"),
            Some(json!({"dtlsParameters": chrome_dtls_parameters()})),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "TRANSPORT_NOT_FOUND");
}

#[tokio::test]
async fn restart_ice_answers_new_ice_parameters() {
    let app = app();
    app.join("alice").await;
    let send = app.transport("alice", "send").await;
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/transports/{send}/restart-ice"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["iceParameters"]["usernameFragment"],
        format!("ufrag-{send}-r1")
    );
    assert_eq!(body["iceParameters"]["iceLite"], true);
}

#[tokio::test]
async fn deleting_a_transport_releases_its_port() {
    let app = app();
    app.join("alice").await;
    let send = app.transport("alice", "send").await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/rooms/{ROOM}/transports/{send}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(app.engine.open_transports().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Producers and consumers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn consume_answers_mediasoup_client_consumer_parameters() {
    let app = app();
    app.join("alice").await;
    app.join("bob").await;
    let send = app.transport("alice", "send").await;
    let recv = app.transport("bob", "recv").await;
    let producer = app.produce("alice", &send).await;
    let (status, body) = app.consume("bob", &recv, &producer).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["producerId"], producer.as_str());
    assert_eq!(body["kind"], "video");
    assert_eq!(body["type"], "simple");
    assert_eq!(body["producerPaused"], false);
    assert_eq!(body["rtpParameters"]["codecs"][0]["mimeType"], "video/VP8");
    assert_eq!(
        body["rtpParameters"]["encodings"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn consume_pushes_routes_containing_the_new_consumer() {
    let app = app();
    let (send, _, _, consumer) = app.alice_sends_bob_receives().await;
    let table = app
        .engine
        .last_routes(&RoomId::from(ROOM))
        .expect("routes pushed");
    let ssrc = chrome_vp8_parameters().encodings[0].ssrc.expect("ssrc");
    let stream = table
        .stream(&TransportId::from(send.as_str()), ssrc)
        .expect("camera routed");
    assert_eq!(stream.targets[0].consumer_id.as_str(), consumer);
    assert!(stream.targets[0].paused, "created paused");
}

#[tokio::test]
async fn consuming_an_unknown_producer_is_404_producer_not_found() {
    let app = app();
    app.join("bob").await;
    let recv = app.transport("bob", "recv").await;
    let answer = app.consume("bob", &recv, "producer-404").await;
    assert_error(&answer, StatusCode::NOT_FOUND, "PRODUCER_NOT_FOUND");
}

#[tokio::test]
async fn producing_on_a_recv_transport_is_400_direction_mismatch() {
    let app = app();
    app.join("alice").await;
    let recv = app.transport("alice", "recv").await;
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/producers"),
            Some(json!({
                "peerId": "alice", "transportId": recv, "kind": "video",
                "rtpParameters": chrome_vp8_parameters()
            })),
        )
        .await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "TRANSPORT_DIRECTION_MISMATCH",
    );
}

#[tokio::test]
async fn pausing_and_resuming_a_producer_shows_in_the_room() {
    let app = app();
    let (_, _, producer, _) = app.alice_sends_bob_receives().await;
    let base = format!("/v1/rooms/{ROOM}/producers/{producer}");
    assert_eq!(
        app.call(Method::POST, &format!("{base}/pause"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.room_info().await["consumers"][0]["producerPaused"],
        true
    );
    assert_eq!(
        app.call(Method::POST, &format!("{base}/resume"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.room_info().await["producers"][0]["paused"], false);
}

#[tokio::test]
async fn resuming_a_consumer_pushes_it_active_to_the_engine() {
    let app = app();
    let (_, _, _, consumer) = app.alice_sends_bob_receives().await;
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/consumers/{consumer}/resume"),
            None,
        )
        .await;
    assert_eq!(answer.0, StatusCode::NO_CONTENT, "{}", answer.1);
    let table = app.engine.last_routes(&RoomId::from(ROOM)).expect("routes");
    assert!(
        table
            .streams()
            .flat_map(|(_, stream)| &stream.targets)
            .all(|target| !target.paused)
    );
}

#[tokio::test]
async fn pausing_an_unknown_consumer_is_404_consumer_not_found() {
    let app = app();
    app.join("alice").await;
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/consumers/consumer-404/pause"),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "CONSUMER_NOT_FOUND");
}

#[tokio::test]
async fn closing_a_producer_closes_its_consumers() {
    let app = app();
    let (_, _, producer, _) = app.alice_sends_bob_receives().await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/rooms/{ROOM}/producers/{producer}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let info = app.room_info().await;
    assert_eq!(info["producers"], json!([]));
    assert_eq!(info["consumers"], json!([]));
}

#[tokio::test]
async fn closing_an_unknown_consumer_is_404_consumer_not_found() {
    let app = app();
    app.join("alice").await;
    let answer = app
        .call(
            Method::DELETE,
            &format!("/v1/rooms/{ROOM}/consumers/consumer-404"),
            None,
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "CONSUMER_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn events_stream_each_room_event_as_one_sse_message_named_by_its_type() {
    let app = app();
    app.join("alice").await;
    let response = app
        .router
        .clone()
        .oneshot(
            Request::get(format!("/v1/rooms/{ROOM}/events"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .expect("request builds"),
        )
        .await
        .expect("router answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().ok(),
        Some("text/event-stream")
    );
    app.control
        .join(
            &RoomId::from(ROOM),
            &PeerId::from("bob"),
            PeerInfo::default(),
        )
        .expect("bob joins");
    let mut body = response.into_body().into_data_stream();
    let chunk = body.next().await.expect("a message").expect("readable");
    let text = String::from_utf8_lossy(&chunk);
    assert!(text.starts_with("event: peerJoined\ndata: {"), "{text}");
    let data = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .expect("data line");
    let event: RoomEvent = serde_json::from_str(data).expect("a RoomEvent");
    assert!(matches!(event, RoomEvent::PeerJoined(summary) if summary.peer_id.as_str() == "bob"));
}

#[tokio::test]
async fn events_of_an_unknown_room_are_404() {
    let app = app();
    let answer = app
        .call(Method::GET, "/v1/rooms/nowhere/events", None)
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "ROOM_NOT_FOUND");
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_gets_one_lagged_message_and_the_stream_ends() {
    let app = app();
    let (_, _, producer, _) = app.alice_sends_bob_receives().await;
    let response = app
        .router
        .clone()
        .oneshot(
            Request::get(format!("/v1/rooms/{ROOM}/events"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .expect("request builds"),
        )
        .await
        .expect("router answers");
    let room = RoomId::from(ROOM);
    let producer = ProducerId::from(producer.as_str());
    // Two requests per round, never read: the subscriber falls past the buffer.
    for _ in 0..crate::control::EVENT_BUFFER {
        app.control
            .pause_producer(&room, &producer)
            .expect("pauses");
        app.control
            .resume_producer(&room, &producer)
            .expect("resumes");
    }
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the stream ends by itself");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.starts_with(&format!(
            "event: lagged\ndata: {{\"missed\":{}}}",
            crate::control::EVENT_BUFFER
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_peer_creating_transports_without_end_hits_its_quota_and_leaves_ports_for_others() {
    // Ten ports; before the quota, mallory took them all and alice got PORTS_EXHAUSTED.
    let app = app();
    app.join("mallory").await;
    app.join("alice").await;
    let mut created = 0;
    let refusal = loop {
        let answer = app
            .call(Method::POST, &format!("/v1/rooms/{ROOM}/transports"), Some(json!({"peerId": "mallory", "direction": "send"})))
            .await;
        if answer.0 != StatusCode::CREATED {
            break answer;
        }
        created += 1;
        assert!(created <= 10, "no quota");
    };
    assert_error(&refusal, StatusCode::CONFLICT, "TOO_MANY_TRANSPORTS");
    assert_eq!(created, crate::room::Quotas::default().transports_per_peer);
    app.transport("alice", "recv").await;
}

#[tokio::test]
async fn oversized_app_data_is_413_app_data_too_large_and_nothing_is_announced() {
    let app = app();
    app.join("alice").await;
    let send = app.transport("alice", "send").await;
    let mut events = app.control.subscribe(&RoomId::from(ROOM)).expect("subscribes");
    let answer = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/producers"),
            Some(json!({
                "peerId": "alice", "transportId": send, "kind": "video",
                "rtpParameters": chrome_vp8_parameters(), "appData": {"blob": "x".repeat(50_000)}
            })),
        )
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "APP_DATA_TOO_LARGE");
    assert!(answer.1["error"]["message"].as_str().unwrap().contains("allowed"));
    assert!(events.try_recv().is_err(), "no newProducer for a refused producer");
    assert_eq!(app.room_info().await["producers"], json!([]));
}

#[tokio::test]
async fn put_room_takes_an_empty_timeout_and_the_sweep_closes_the_room_after_it() {
    let app = app();
    let answer = app.call(Method::PUT, "/v1/rooms/brief", Some(json!({"emptyTimeoutSeconds": 2}))).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    let now = std::time::Instant::now();
    assert!(app.control.close_empty_rooms(now).is_empty());
    assert!(app.control.close_empty_rooms(now + std::time::Duration::from_secs(1)).is_empty());
    assert_eq!(app.control.close_empty_rooms(now + std::time::Duration::from_secs(2)), vec![RoomId::from("brief")]);
    let answer = app.call(Method::GET, "/v1/rooms/brief", None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "ROOM_NOT_FOUND");
    let answer = app.call(Method::PUT, "/v1/rooms/brief", Some(json!({"emptyTimeoutSeconds": -1}))).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
}

#[tokio::test]
async fn preferred_layers_are_clamped_kept_and_pushed_to_the_engine() {
    let app = app();
    app.join("alice").await;
    app.join("bob").await;
    let send = app.transport("alice", "send").await;
    let recv = app.transport("bob", "recv").await;
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/rooms/{ROOM}/producers"),
            Some(json!({"peerId": "alice", "transportId": send, "kind": "video",
                        "rtpParameters": crate::testing::chrome_vp8_simulcast_parameters()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let producer = body["id"].as_str().expect("id").to_owned();
    let (status, consumer) = app.consume("bob", &recv, &producer).await;
    assert_eq!(status, StatusCode::CREATED, "{consumer}");
    assert_eq!(consumer["type"], "simulcast");
    assert_eq!(consumer["rtpParameters"]["encodings"][0]["scalabilityMode"], "L3T3");
    let consumer = consumer["id"].as_str().expect("id").to_owned();

    let uri = format!("/v1/rooms/{ROOM}/consumers/{consumer}/preferred-layers");
    let answer = app.call(Method::POST, &uri, Some(json!({"spatialLayer": 9}))).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.1, json!({"preferredLayers": {"spatialLayer": 2, "temporalLayer": 2}}), "clamped to L3T3");
    let answer = app.call(Method::POST, &uri, Some(json!({"spatialLayer": 0, "temporalLayer": 1}))).await;
    assert_eq!(answer.1["preferredLayers"], json!({"spatialLayer": 0, "temporalLayer": 1}));
    let table = app.engine.last_routes(&RoomId::from(ROOM)).expect("routes");
    let preferred: Vec<_> = table.unbound().iter().flat_map(|u| &u.media.targets).map(|t| t.preferred_layers).collect();
    assert_eq!(preferred, vec![Some(crate::video::Layers::new(0, 1)); 3], "every encoding's target knows it");
    assert_error(&app.call(Method::POST, &uri, Some(json!({"spatialLayer": -1}))).await, StatusCode::BAD_REQUEST, "INVALID_REQUEST");

    let uri = format!("/v1/rooms/{ROOM}/consumers/{consumer}/priority");
    let answer = app.call(Method::POST, &uri, Some(json!({"priority": 7}))).await;
    assert_eq!(answer.1, json!({"priority": 7}));
    assert_error(&app.call(Method::POST, &uri, Some(json!({"priority": 0}))).await, StatusCode::BAD_REQUEST, "INVALID_PRIORITY");
    assert_error(&app.call(Method::POST, &uri, Some(json!({"priority": 256}))).await, StatusCode::BAD_REQUEST, "INVALID_PRIORITY");
    let gone = format!("/v1/rooms/{ROOM}/consumers/nope/priority");
    assert_error(&app.call(Method::POST, &gone, Some(json!({"priority": 2}))).await, StatusCode::NOT_FOUND, "CONSUMER_NOT_FOUND");

    // Stats name every encoding, unseen ones without an SSRC, and the consumer's layers.
    let (status, stats) = app.call(Method::GET, &format!("/v1/rooms/{ROOM}/producers/{producer}/stats"), None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["type"], "simulcast");
    let rids: Vec<&str> = stats["encodings"].as_array().expect("encodings").iter().map(|e| e["rid"].as_str().unwrap()).collect();
    assert_eq!(rids, ["r0", "r1", "r2"]);
    assert!(stats["encodings"][0].get("ssrc").is_none());
    let (status, stats) = app.call(Method::GET, &format!("/v1/rooms/{ROOM}/consumers/{consumer}/stats"), None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!((stats["priority"].clone(), stats["state"].clone()), (json!(7), json!("paused")));
    assert_eq!(stats["preferredLayers"], json!({"spatialLayer": 0, "temporalLayer": 1}));
    assert_error(&app.call(Method::GET, &format!("/v1/rooms/{ROOM}/producers/nope/stats"), None).await, StatusCode::NOT_FOUND, "PRODUCER_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// Recordings
// ---------------------------------------------------------------------------------------------

fn recording_app() -> (App, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("fanout-http-recordings-{}-{}", std::process::id(), rand::random::<u32>()));
    let engine = Arc::new(FakeEngine::new(40000..=40009));
    let recorder = crate::record::Recorder::start(dir.clone(), engine.clone()).expect("recorder starts");
    let control = Arc::new(ControlPlane::new(engine.clone(), SequentialIds::new()).with_recorder(recorder));
    let router = router(ApiState::new(control.clone(), Some(TOKEN.to_owned())));
    (App { router, engine, control }, dir)
}

#[tokio::test]
async fn recordings_answer_503_recording_disabled_without_a_recording_dir() {
    let app = app();
    app.call(Method::PUT, &format!("/v1/rooms/{ROOM}"), None).await;
    let answer = app.call(Method::POST, &format!("/v1/rooms/{ROOM}/recordings"), Some(json!({"recordingId": "r1"}))).await;
    assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "RECORDING_DISABLED");
    let answer = app.call(Method::GET, &format!("/v1/rooms/{ROOM}/recordings/r1"), None).await;
    assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "RECORDING_DISABLED");
}

#[tokio::test]
async fn a_recording_starts_once_per_id_is_read_and_stops_with_its_final_status() {
    let (app, dir) = recording_app();
    let uri = format!("/v1/rooms/{ROOM}/recordings");
    let answer = app.call(Method::POST, &uri, Some(json!({"recordingId": "r1"}))).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "ROOM_NOT_FOUND");
    app.call(Method::PUT, &format!("/v1/rooms/{ROOM}"), None).await;
    let answer = app.call(Method::POST, &uri, Some(json!({"recordingId": "no/slash"}))).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_ID");

    let (status, body) = app.call(Method::POST, &uri, Some(json!({"recordingId": "r1"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["recordingId"], "r1");
    assert_eq!(body["roomId"], ROOM);
    assert_eq!(body["state"], "recording");
    assert!(body["startedAt"].as_str().is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()), "{body}");
    assert_eq!(body["stoppedAt"], Value::Null);
    assert_eq!(body["files"], json!([]));
    assert_eq!(body["droppedPackets"], 0);
    assert_eq!(body["error"], Value::Null);
    let (status, again) = app.call(Method::POST, &uri, Some(json!({"recordingId": "r1"}))).await;
    assert_eq!((status, &again["startedAt"]), (StatusCode::OK, &body["startedAt"]), "the same id is the same recording");

    let (status, read) = app.call(Method::GET, &format!("{uri}/r1"), None).await;
    assert_eq!((status, read["state"].as_str()), (StatusCode::OK, Some("recording")));
    let answer = app.call(Method::GET, &format!("{uri}/r2"), None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "RECORDING_NOT_FOUND");

    let (status, stopped) = app.call(Method::DELETE, &format!("{uri}/r1"), None).await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    assert!(stopped["stoppedAt"].is_string());
    let (_, read) = app.call(Method::GET, &format!("{uri}/r1"), None).await;
    assert_eq!(read, stopped, "a stopped recording stays readable");
    let (status, again) = app.call(Method::DELETE, &format!("{uri}/r1"), None).await;
    assert_eq!((status, again), (StatusCode::OK, stopped), "stopping twice answers the same");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn closing_the_room_stops_its_recordings() {
    let (app, dir) = recording_app();
    app.call(Method::PUT, &format!("/v1/rooms/{ROOM}"), None).await;
    let uri = format!("/v1/rooms/{ROOM}/recordings");
    let (status, _) = app.call(Method::POST, &uri, Some(json!({"recordingId": "r1"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app.call(Method::DELETE, &format!("/v1/rooms/{ROOM}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, read) = app.call(Method::GET, &format!("{uri}/r1"), None).await;
        assert_eq!(status, StatusCode::OK);
        if read["state"] == "stopped" {
            assert!(read["stoppedAt"].is_string());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {read}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = (app.engine, app.control);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_room_records_at_most_four_at_once_and_a_stopped_one_makes_room() {
    use crate::record::MAX_ROOM_RECORDINGS;
    let (app, dir) = recording_app();
    app.call(Method::PUT, &format!("/v1/rooms/{ROOM}"), None).await;
    let uri = format!("/v1/rooms/{ROOM}/recordings");
    for n in 0..MAX_ROOM_RECORDINGS {
        let (status, body) = app.call(Method::POST, &uri, Some(json!({"recordingId": format!("r{n}")}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let answer = app.call(Method::POST, &uri, Some(json!({"recordingId": "one-too-many"}))).await;
    assert_error(&answer, StatusCode::CONFLICT, "TOO_MANY_RECORDINGS");
    assert!(answer.1["error"]["message"].as_str().unwrap().contains("stop one"), "{}", answer.1);
    // An id already running is still answered, not refused.
    let (status, _) = app.call(Method::POST, &uri, Some(json!({"recordingId": "r0"}))).await;
    assert_eq!(status, StatusCode::OK);
    // Another room is not this room's business.
    app.call(Method::PUT, "/v1/rooms/other-room", None).await;
    let (status, body) = app.call(Method::POST, "/v1/rooms/other-room/recordings", Some(json!({"recordingId": "r0"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app.call(Method::DELETE, &format!("{uri}/r0"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.call(Method::POST, &uri, Some(json!({"recordingId": "after-a-stop"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let _ = std::fs::remove_dir_all(dir);
}
