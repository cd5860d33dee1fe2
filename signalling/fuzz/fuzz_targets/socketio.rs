//! The whole signalling server (`fanout_signalling::app`, with the in-process backend on a
//! worker control plane whose media engine is a fake), driven over Engine.IO's HTTP
//! long-polling transport through `tower::ServiceExt::oneshot`: an authenticated client's
//! polling bodies go through engineioxide's payload decoder, socketioxide's parser, the
//! request admission (size and rate limits) and the handlers, with whatever session state
//! earlier requests built. Nothing may panic, no answer is a 5xx (engineioxide's were, for a
//! binary packet that is not base64 and for an unasked ping: vendor/README.md), and a session
//! the server keeps open answers every request that asked for an acknowledgement.
//!
//! Input: polling request bodies (Engine.IO v4 payloads: packets separated by 0x1E, e.g.
//! `420["join-room",{"roomId":"maths"}]`), each after a 0xFF byte (never in UTF-8).
//! Time is tokio's paused clock: waiting costs nothing, and ping/timeouts happen as they would.
//!
//! One server lives for the whole run (its `Signalling` and socketioxide instance refer to
//! each other, so an instance per input would never be freed); each input gets a new session,
//! closed at its end, and a fresh worker control plane, so ids (`transport-1`, ...) and rooms
//! start over and an input does the same every time it runs.
#![no_main]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use fanout_signalling::auth::{JwtConfig, JwtVerifier};
use fanout_signalling::placement::{RoomSetup, StaticPlacement};
use fanout_signalling::worker::{InProcessBackend, MediaBackend, RoomEvents};
use fanout_signalling::{Limits, Signalling, app};
use fanout_worker::control::ControlPlane;
use fanout_worker::control::testing::FakeEngine;
use fanout_worker::api::{ConsumeRequest, JoinRequest, ProduceRequest, RoomInfo, SetPreferredLayersRequest};
use fanout_worker::room::{
    ConsumerCreated, ConsumerId, Direction, DtlsParameters, IceParameters, JoinResponse, PeerId, ProducerCreated,
    ProducerId, SequentialIds, TransportCreated, TransportId, TransportProtocols,
};
use fanout_worker::rtp::RtpCapabilities;
use fanout_worker::video::Layers;
use http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const SECRET: &str = "fuzz-secret-of-reasonable-length";
/// More polling requests than this in one input add nothing a shorter one could not reach.
const MAX_POSTS: usize = 16;

fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let claims = serde_json::json!({"sub": "u-1", "name": "Ada", "role": "teacher", "exp": 4_000_000_000u64});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token")
    })
}

fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FANOUT_FUZZ_TRACE").is_some())
}

/// The in-process backend of the current input's control plane.
#[derive(Default)]
struct FreshWorker(Mutex<Option<InProcessBackend>>);

impl FreshWorker {
    fn reset(&self) {
        let control = ControlPlane::new(Arc::new(FakeEngine::new(40000..=40015)), SequentialIds::new());
        *self.0.lock().expect("unpoisoned") = Some(InProcessBackend::new(Arc::new(control)));
    }

    fn current(&self) -> InProcessBackend {
        self.0.lock().expect("unpoisoned").clone().expect("reset before use")
    }
}

type R<T> = fanout_signalling::Result<T>;

#[async_trait::async_trait]
impl MediaBackend for FreshWorker {
    async fn ensure_room(&self, e: &str, room: &str, setup: &RoomSetup) -> R<RtpCapabilities> {
        self.current().ensure_room(e, room, setup).await
    }
    async fn join(&self, e: &str, room: &str, join: &JoinRequest) -> R<JoinResponse> {
        self.current().join(e, room, join).await
    }
    async fn leave(&self, e: &str, room: &str, peer: &PeerId) -> R<()> {
        self.current().leave(e, room, peer).await
    }
    async fn create_transport(
        &self,
        e: &str,
        room: &str,
        peer: &PeerId,
        direction: Direction,
        protocols: &TransportProtocols,
        sctp: Option<&fanout_worker::room::SctpCapabilities>,
    ) -> R<TransportCreated> {
        self.current().create_transport(e, room, peer, direction, protocols, sctp).await
    }
    async fn connect_transport(&self, e: &str, room: &str, id: &TransportId, dtls: &DtlsParameters) -> R<()> {
        self.current().connect_transport(e, room, id, dtls).await
    }
    async fn restart_ice(&self, e: &str, room: &str, id: &TransportId) -> R<IceParameters> {
        self.current().restart_ice(e, room, id).await
    }
    async fn produce(&self, e: &str, room: &str, produce: &ProduceRequest) -> R<ProducerCreated> {
        self.current().produce(e, room, produce).await
    }
    async fn consume(&self, e: &str, room: &str, consume: &ConsumeRequest) -> R<ConsumerCreated> {
        self.current().consume(e, room, consume).await
    }
    async fn pause_producer(&self, e: &str, room: &str, id: &ProducerId) -> R<()> {
        self.current().pause_producer(e, room, id).await
    }
    async fn resume_producer(&self, e: &str, room: &str, id: &ProducerId) -> R<()> {
        self.current().resume_producer(e, room, id).await
    }
    async fn close_producer(&self, e: &str, room: &str, id: &ProducerId) -> R<()> {
        self.current().close_producer(e, room, id).await
    }
    async fn pause_consumer(&self, e: &str, room: &str, id: &ConsumerId) -> R<()> {
        self.current().pause_consumer(e, room, id).await
    }
    async fn resume_consumer(&self, e: &str, room: &str, id: &ConsumerId) -> R<()> {
        self.current().resume_consumer(e, room, id).await
    }
    async fn close_consumer(&self, e: &str, room: &str, id: &ConsumerId) -> R<()> {
        self.current().close_consumer(e, room, id).await
    }
    async fn set_consumer_preferred_layers(
        &self,
        e: &str,
        room: &str,
        id: &ConsumerId,
        request: &SetPreferredLayersRequest,
    ) -> R<Layers> {
        self.current().set_consumer_preferred_layers(e, room, id, request).await
    }
    async fn set_consumer_priority(&self, e: &str, room: &str, id: &ConsumerId, priority: u32) -> R<u32> {
        self.current().set_consumer_priority(e, room, id, priority).await
    }
    async fn room_info(&self, e: &str, room: &str) -> R<RoomInfo> {
        self.current().room_info(e, room).await
    }
    async fn events(&self, e: &str, room: &str) -> R<RoomEvents> {
        self.current().events(e, room).await
    }
}

/// The server of the whole run.
struct Server {
    runtime: tokio::runtime::Runtime,
    app: Router,
    worker: Arc<FreshWorker>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
        let worker = Arc::new(FreshWorker::default());
        worker.reset();
        let verifier = JwtVerifier::new(&JwtConfig::hs256(SECRET)).expect("verifier");
        let state = Signalling::new(verifier, Arc::new(StaticPlacement::new("in-process")), worker.clone(), Limits::default());
        // app() spawns its tasks on the current runtime.
        let app = runtime.block_on(async { app(state, &[]) });
        Server { runtime, app, worker }
    })
}

struct Client {
    app: Router,
    sid: String,
    /// The session is gone (closed by the server, or never opened).
    closed: bool,
}

impl Client {
    async fn request(&self, method: Method, body: Vec<u8>) -> (StatusCode, String) {
        let body_len = body.len();
        let method_name = method.clone();
        let uri = if self.sid.is_empty() {
            "/socket.io/?EIO=4&transport=polling".to_owned()
        } else {
            format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid)
        };
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(Body::from(body))
            .expect("request");
        let response = self.app.clone().oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        assert!(!status.is_server_error(), "{status} for {method_name} of {body_len} bytes");
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Everything the server has queued for us, answering pings; the acknowledgement ids seen.
    async fn drain(&mut self, acks: &mut BTreeSet<i64>) {
        // Let the handlers of what was just sent run to the end (the clock is paused, and
        // auto-advances only when every task waits).
        tokio::time::sleep(Duration::from_millis(10)).await;
        for _ in 0..4 {
            if self.closed {
                return;
            }
            let (status, body) = self.request(Method::GET, Vec::new()).await;
            if trace() {
                eprintln!("GET {status}: {}", body.chars().take(300).collect::<String>());
            }
            if status != StatusCode::OK {
                self.closed = true;
                return;
            }
            let mut pinged = false;
            for packet in body.split('\x1e') {
                match packet.as_bytes() {
                    [b'2', ..] => pinged = true,
                    [b'1', ..] | [b'4', b'1', ..] => self.closed = true,
                    [b'4', b'3', rest @ ..] => {
                        let digits: String = rest.iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
                        if let Ok(id) = digits.parse() {
                            acks.insert(id);
                        }
                    }
                    _ => {}
                }
            }
            if pinged {
                let _ = self.request(Method::POST, b"3".to_vec()).await;
                // A ping comes only when nothing else was queued: all answers are in.
                return;
            }
        }
    }
}

/// The ack ids of the request events in a polling body that the server must answer: those
/// before anything that ends or changes the namespace session (a CONNECT or DISCONNECT packet,
/// an Engine.IO close or upgrade), which makes later events go nowhere.
fn asked_acks(body: &[u8]) -> Vec<i64> {
    let text = String::from_utf8_lossy(body);
    let mut asked = Vec::new();
    for packet in text.split('\x1e') {
        if ["1", "40", "41", "5", "6"].iter().any(|prefix| packet.starts_with(prefix)) {
            break;
        }
        let Some(rest) = packet.strip_prefix("42") else { continue };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Some(event) = rest[digits.len()..].strip_prefix("[\"") else { continue };
        let Some(name) = event.find('"').map(|end| &event[..end]) else { continue };
        let is_request = fanout_signalling::events::REQUESTS.iter().any(|(request, _)| *request == name);
        if let (true, Ok(id)) = (is_request, digits.parse()) {
            asked.push(id);
        }
    }
    asked
}

fuzz_target!(|data: &[u8]| {
    let server = server();
    server.worker.reset();
    server.runtime.block_on(async {
        let mut client = Client { app: server.app.clone(), sid: String::new(), closed: false };

        // Open a session and connect to the namespace with a valid token.
        let (status, open) = client.request(Method::GET, Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{open}");
        let open: serde_json::Value = serde_json::from_str(open.trim_start_matches('0')).expect("open packet");
        client.sid = open["sid"].as_str().expect("sid").to_owned();
        let connect = format!(r#"40{{"token":"{}"}}"#, token());
        let (status, _) = client.request(Method::POST, connect.into_bytes()).await;
        assert_eq!(status, StatusCode::OK);
        let mut acks = BTreeSet::new();
        client.drain(&mut acks).await;

        let mut asked = BTreeSet::new();
        for body in data.split(|&b| b == 0xff).take(MAX_POSTS) {
            if client.closed {
                break;
            }
            asked.extend(asked_acks(body));
            let (status, reply) = client.request(Method::POST, body.to_vec()).await;
            if trace() {
                eprintln!("POST {status}: {reply}");
            }
            if status != StatusCode::OK {
                // Refused whole (unreadable or too large): socketioxide closes the session.
                client.closed = true;
                break;
            }
            client.drain(&mut acks).await;
        }
        client.drain(&mut acks).await;
        if !client.closed {
            let unanswered: Vec<_> = asked.difference(&acks).collect();
            assert!(unanswered.is_empty(), "requests never answered (ack ids): {unanswered:?}");
            // Close the session, and let the disconnect handler leave the room.
            let _ = client.request(Method::POST, b"1".to_vec()).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
});
