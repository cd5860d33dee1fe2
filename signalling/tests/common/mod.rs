//! What the Socket.IO tests share: a fake media backend that records calls and streams room
//! events like a worker, a server on 127.0.0.1:0, tokens, and a real Socket.IO client
//! (`rust_socketio`) that collects everything it receives.

#![allow(dead_code)] // Each test binary uses a different part of this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fanout_signalling::auth::{JwtConfig, JwtVerifier};
use fanout_signalling::http::HttpLimits;
use fanout_signalling::placement::{RoomSetup, StaticPlacement};
use fanout_signalling::worker::{MediaBackend, RoomEvents, worker_error};
use fanout_signalling::{Limits, Result, Signalling, app};
use fanout_worker::api::{ConsumeRequest, JoinRequest, ProduceRequest, RoomInfo};
use fanout_worker::client::ClientError;
use fanout_worker::room::{
    ConsumerCreated, ConsumerId, ConsumerType, Direction, DtlsFingerprint, DtlsParameters,
    DtlsRole, IceCandidate, IceParameters, IceProtocol, JoinResponse, ListenAddress, PeerId,
    PeerSummary, ProducerCreated, ProducerId, ProducerSummary, RoomEvent, TransportCreated,
    TransportId, TransportProtocols,
};
use fanout_worker::rtp::{MediaKind, RtpCapabilities};
use futures::FutureExt as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rust_socketio::asynchronous::{Client as SocketClient, ClientBuilder};
use rust_socketio::{Event, Payload};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};

pub const SECRET: &[u8] = b"signalling-test-secret";
pub const WORKER: &str = "http://worker.test:3000";
const WAIT: Duration = Duration::from_secs(5);

/// A call the fake received.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Join {
        room: String,
        request: JoinRequest,
    },
    Leave {
        room: String,
        peer: PeerId,
    },
    CreateTransport {
        room: String,
        peer: PeerId,
        direction: Direction,
        protocols: TransportProtocols,
    },
    ConnectTransport {
        room: String,
        transport: TransportId,
    },
    Produce {
        room: String,
        request: ProduceRequest,
    },
    Consume {
        room: String,
        request: ConsumeRequest,
    },
    CloseProducer {
        room: String,
        producer: ProducerId,
    },
    /// A subscription to a room's events, on the worker at `endpoint`.
    Events {
        endpoint: String,
        room: String,
    },
    Other(&'static str),
}

/// A worker in memory: remembers who joined which room, hands out ids, streams events to
/// subscribers like the worker's SSE endpoint, and fails a method on request.
#[derive(Default)]
pub struct FakeBackend {
    calls: Mutex<Vec<Call>>,
    failures: Mutex<HashMap<&'static str, ClientError>>,
    peers: Mutex<HashMap<String, Vec<PeerSummary>>>,
    streams: Mutex<HashMap<String, broadcast::Sender<RoomEvent>>>,
    next_id: AtomicU64,
}

impl FakeBackend {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeBackend::default())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Makes every later call of `method` fail with `error`, as the worker client would.
    pub fn fail(&self, method: &'static str, error: ClientError) {
        self.failures.lock().unwrap().insert(method, error);
    }

    /// Waits until a call matching `predicate` has been made.
    pub async fn wait_for_call(&self, predicate: impl Fn(&Call) -> bool) -> Call {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(call) = self.calls().into_iter().find(|c| predicate(c)) {
                return call;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no matching call in {:?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn record(&self, method: &'static str, call: Call) -> Result<()> {
        self.calls.lock().unwrap().push(call);
        match self.failures.lock().unwrap().get(method) {
            Some(error) => Err(worker_error(clone_error(error))),
            None => Ok(()),
        }
    }

    fn id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            self.next_id.fetch_add(1, Ordering::SeqCst) + 1
        )
    }

    /// Sends `event` to the room's subscribers, as the worker would.
    pub fn publish(&self, room: &str, event: RoomEvent) {
        if let Some(sender) = self.streams.lock().unwrap().get(room) {
            let _ = sender.send(event);
        }
    }
}

fn clone_error(error: &ClientError) -> ClientError {
    match error {
        ClientError::Unavailable { endpoint, reason } => ClientError::Unavailable {
            endpoint: endpoint.clone(),
            reason: reason.clone(),
        },
        ClientError::Api {
            status,
            code,
            message,
        } => ClientError::Api {
            status: *status,
            code: code.clone(),
            message: message.clone(),
        },
        ClientError::Protocol { endpoint, reason } => ClientError::Protocol {
            endpoint: endpoint.clone(),
            reason: reason.clone(),
        },
        ClientError::EventsLagged { missed } => ClientError::EventsLagged { missed: *missed },
    }
}

pub fn rtp_parameters() -> Value {
    json!({
        "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}],
        "encodings": [{"ssrc": 1111}],
    })
}

#[async_trait]
impl MediaBackend for FakeBackend {
    async fn ensure_room(&self, _endpoint: &str, room: &str, _setup: &RoomSetup) -> Result<RtpCapabilities> {
        self.record("ensure_room", Call::Other("ensure_room"))?;
        self.streams
            .lock()
            .unwrap()
            .entry(room.to_owned())
            .or_insert_with(|| broadcast::channel(64).0);
        Ok(RtpCapabilities::default())
    }

    async fn join(&self, _endpoint: &str, room: &str, join: &JoinRequest) -> Result<JoinResponse> {
        self.record(
            "join",
            Call::Join {
                room: room.to_owned(),
                request: join.clone(),
            },
        )?;
        let (peer_id, info) = join.clone().into_parts();
        let summary = PeerSummary { peer_id, info };
        let others = {
            let mut peers = self.peers.lock().unwrap();
            let list = peers.entry(room.to_owned()).or_default();
            let others = list.clone();
            list.push(summary.clone());
            others
        };
        self.publish(room, RoomEvent::PeerJoined(summary));
        Ok(JoinResponse {
            rtp_capabilities: RtpCapabilities::default(),
            peers: others,
            producers: Vec::<ProducerSummary>::new(),
            data_producers: Vec::new(),
        })
    }

    async fn leave(&self, _endpoint: &str, room: &str, peer: &PeerId) -> Result<()> {
        self.record(
            "leave",
            Call::Leave {
                room: room.to_owned(),
                peer: peer.clone(),
            },
        )?;
        if let Some(list) = self.peers.lock().unwrap().get_mut(room) {
            list.retain(|p| &p.peer_id != peer);
        }
        self.publish(
            room,
            RoomEvent::PeerLeft {
                peer_id: peer.clone(),
            },
        );
        Ok(())
    }

    async fn create_transport(
        &self,
        _endpoint: &str,
        room: &str,
        peer: &PeerId,
        direction: Direction,
        protocols: &TransportProtocols,
        _sctp: Option<&fanout_worker::room::SctpCapabilities>,
    ) -> Result<TransportCreated> {
        self.record(
            "create_transport",
            Call::CreateTransport {
                room: room.to_owned(),
                peer: peer.clone(),
                direction,
                protocols: *protocols,
            },
        )?;
        let address = ListenAddress {
            ip: "127.0.0.1".parse().unwrap(),
            port: 40000,
            protocol: IceProtocol::Udp,
        };
        Ok(TransportCreated {
            id: TransportId(self.id("transport")),
            ice_parameters: IceParameters {
                username_fragment: "ufrag".into(),
                password: "pwd".into(),
                ice_lite: true,
            },
            ice_candidates: vec![IceCandidate::host(&address, 0)],
            dtls_parameters: DtlsParameters {
                role: DtlsRole::Auto,
                fingerprints: vec![DtlsFingerprint {
                    algorithm: "sha-256".into(),
                    value: "AB:CD".into(),
                }],
            },
            sctp_parameters: None,
        })
    }

    async fn connect_transport(
        &self,
        _endpoint: &str,
        room: &str,
        transport: &TransportId,
        _dtls: &DtlsParameters,
    ) -> Result<()> {
        self.record(
            "connect_transport",
            Call::ConnectTransport {
                room: room.to_owned(),
                transport: transport.clone(),
            },
        )
    }

    async fn restart_ice(&self, _: &str, _: &str, _: &TransportId) -> Result<IceParameters> {
        self.record("restart_ice", Call::Other("restart_ice"))?;
        Ok(IceParameters {
            username_fragment: "ufrag2".into(),
            password: "pwd2".into(),
            ice_lite: true,
        })
    }

    async fn produce(
        &self,
        _: &str,
        room: &str,
        produce: &ProduceRequest,
    ) -> Result<ProducerCreated> {
        self.record(
            "produce",
            Call::Produce {
                room: room.to_owned(),
                request: produce.clone(),
            },
        )?;
        let id = ProducerId(self.id("producer"));
        self.publish(
            room,
            RoomEvent::NewProducer {
                producer_id: id.clone(),
                peer_id: produce.peer_id.clone(),
                kind: produce.kind,
                app_data: produce.app_data.clone(),
            },
        );
        Ok(ProducerCreated { id })
    }

    async fn consume(
        &self,
        _: &str,
        room: &str,
        consume: &ConsumeRequest,
    ) -> Result<ConsumerCreated> {
        self.record(
            "consume",
            Call::Consume {
                room: room.to_owned(),
                request: consume.clone(),
            },
        )?;
        Ok(ConsumerCreated {
            id: ConsumerId(self.id("consumer")),
            producer_id: consume.producer_id.clone(),
            kind: MediaKind::Video,
            rtp_parameters: serde_json::from_value(rtp_parameters()).unwrap(),
            r#type: ConsumerType::Simple,
            producer_paused: false,
        })
    }

    async fn pause_producer(&self, _: &str, _: &str, _: &ProducerId) -> Result<()> {
        self.record("pause_producer", Call::Other("pause_producer"))
    }

    async fn resume_producer(&self, _: &str, _: &str, _: &ProducerId) -> Result<()> {
        self.record("resume_producer", Call::Other("resume_producer"))
    }

    async fn close_producer(&self, _: &str, room: &str, producer: &ProducerId) -> Result<()> {
        self.record(
            "close_producer",
            Call::CloseProducer {
                room: room.to_owned(),
                producer: producer.clone(),
            },
        )
    }

    async fn pause_consumer(&self, _: &str, _: &str, _: &ConsumerId) -> Result<()> {
        self.record("pause_consumer", Call::Other("pause_consumer"))
    }

    async fn resume_consumer(&self, _: &str, _: &str, _: &ConsumerId) -> Result<()> {
        self.record("resume_consumer", Call::Other("resume_consumer"))
    }

    async fn close_consumer(&self, _: &str, _: &str, _: &ConsumerId) -> Result<()> {
        self.record("close_consumer", Call::Other("close_consumer"))
    }

    async fn set_consumer_preferred_layers(
        &self,
        _: &str,
        _: &str,
        _: &ConsumerId,
        request: &fanout_worker::api::SetPreferredLayersRequest,
    ) -> Result<fanout_worker::video::Layers> {
        self.record("set_consumer_preferred_layers", Call::Other("set_consumer_preferred_layers"))?;
        Ok(fanout_worker::video::Layers::new(request.spatial_layer, request.temporal_layer.unwrap_or(2)))
    }

    async fn set_consumer_priority(&self, _: &str, _: &str, _: &ConsumerId, priority: u32) -> Result<u32> {
        self.record("set_consumer_priority", Call::Other("set_consumer_priority"))?;
        Ok(priority)
    }

    async fn room_info(&self, _: &str, room: &str) -> Result<RoomInfo> {
        self.record("room_info", Call::Other("room_info"))?;
        Ok(RoomInfo {
            room_id: room.into(),
            rtp_capabilities: RtpCapabilities::default(),
            peers: self
                .peers
                .lock()
                .unwrap()
                .get(room)
                .cloned()
                .unwrap_or_default(),
            transports: vec![],
            producers: vec![],
            consumers: vec![],
        })
    }

    async fn events(&self, endpoint: &str, room: &str) -> Result<RoomEvents> {
        self.record("events", Call::Events { endpoint: endpoint.to_owned(), room: room.to_owned() })?;
        let receiver = self
            .streams
            .lock()
            .unwrap()
            .entry(room.to_owned())
            .or_insert_with(|| broadcast::channel(64).0)
            .subscribe();
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => return Some((Ok(event), receiver)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

fn router_of(state: Arc<Signalling>) -> axum::Router {
    app(state, &[])
}

/// A signalling server on an ephemeral loopback port, served as `main` serves it.
pub struct Server {
    pub addr: SocketAddr,
    pub backend: Arc<FakeBackend>,
    pub state: Arc<Signalling>,
}

impl Server {
    /// Everyone may publish, default limits.
    pub async fn start() -> Server {
        Server::start_with(StaticPlacement::new(WORKER), Limits::default()).await
    }

    pub async fn start_with(placement: StaticPlacement, limits: Limits) -> Server {
        Server::start_configured(placement, limits, JwtConfig::hs256(SECRET)).await
    }

    pub async fn start_configured(
        placement: StaticPlacement,
        limits: Limits,
        jwt: JwtConfig,
    ) -> Server {
        Server::start_placed(Arc::new(placement), limits, jwt).await
    }

    /// With any placement (Kubernetes-like ones, moving rooms).
    pub async fn start_placed(
        placement: Arc<dyn fanout_signalling::placement::Placement>,
        limits: Limits,
        jwt: JwtConfig,
    ) -> Server {
        let backend = FakeBackend::new();
        let verifier = JwtVerifier::new(&jwt).unwrap();
        let state = Signalling::new(verifier, placement, backend.clone(), limits);
        Server::start_serving(router_of(state.clone()), backend, state, HttpLimits::default()).await
    }

    /// Default placement and limits, handing clients these ICE servers.
    pub async fn start_with_ice(ice: fanout_signalling::ice_servers::IceConfig) -> Server {
        let backend = FakeBackend::new();
        let verifier = JwtVerifier::new(&JwtConfig::hs256(SECRET)).unwrap();
        let placement = Arc::new(StaticPlacement::new(WORKER));
        let state = Signalling::with_ice(verifier, placement, backend.clone(), Limits::default(), ice);
        Server::start_serving(router_of(state.clone()), backend, state, HttpLimits::default()).await
    }

    /// Default placement and limits, with these HTTP limits.
    pub async fn start_with_http(http: HttpLimits) -> Server {
        let backend = FakeBackend::new();
        let verifier = JwtVerifier::new(&JwtConfig::hs256(SECRET)).unwrap();
        let state = Signalling::new(
            verifier,
            Arc::new(StaticPlacement::new(WORKER)),
            backend.clone(),
            Limits::default(),
        );
        Server::start_serving(router_of(state.clone()), backend, state, http).await
    }

    async fn start_serving(
        router: axum::Router,
        backend: Arc<FakeBackend>,
        state: Arc<Signalling>,
        http: HttpLimits,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            fanout_signalling::http::serve(listener, router, http, std::future::pending())
                .await
                .unwrap()
        });
        Server {
            addr,
            backend,
            state,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// A client connected with a token for `user` in `role`.
    pub async fn client(&self, user: &str, role: &str) -> TestClient {
        TestClient::connect(&self.url(), Some(json!({"token": token(user, role)})), None)
            .await
            .expect("connects")
    }

    /// A connected client that has joined `room`; returns it with its participant id.
    pub async fn joined(&self, user: &str, role: &str, room: &str) -> (TestClient, String) {
        let mut client = self.client(user, role).await;
        let ack = client.request("join-room", json!({"roomId": room})).await;
        assert_eq!(ack["success"], true, "{ack}");
        client.next_event("joined-room").await;
        let participant = ack["participantId"].as_str().unwrap().to_owned();
        (client, participant)
    }
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An HS256 token with these claims, signed with `secret`.
pub fn sign(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// A valid token for `user` in `role`, valid for an hour.
pub fn token(user: &str, role: &str) -> String {
    sign(
        &json!({"sub": user, "name": format!("{user} name"), "email": format!("{user}@example.com"),
                "role": role, "exp": now() + 3600}),
        SECRET,
    )
}

/// What the client received, in order.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// The namespace connect packet.
    Connected,
    /// `connect_error`, with the server's message.
    ConnectError(String),
    /// An event (the server's `error` events included) and its first argument.
    Event(String, Value),
}

/// A real Socket.IO client (rust_socketio, protocol v5) and everything it received.
pub struct TestClient {
    pub socket: SocketClient,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    /// Events received while waiting for another one, kept for later waits.
    pending: Vec<(String, Value)>,
}

fn first(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) if !values.is_empty() => values.swap_remove(0),
        #[allow(deprecated)]
        Payload::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        _ => Value::Null,
    }
}

impl TestClient {
    /// Connects and waits for the server's verdict: `Err(message)` on `connect_error`.
    pub async fn connect(
        url: &str,
        auth: Option<Value>,
        authorization: Option<&str>,
    ) -> std::result::Result<TestClient, String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (on_connect, on_error, on_any) = (tx.clone(), tx.clone(), tx);
        let mut builder = ClientBuilder::new(url)
            .reconnect(false)
            .on(Event::Connect, move |_, _| {
                let _ = on_connect.send(Incoming::Connected);
                async {}.boxed()
            })
            // rust_socketio delivers both connect errors and events named "error" here.
            .on(Event::Error, move |payload, _| {
                let value = first(payload);
                let incoming = match value {
                    Value::String(text) => Incoming::ConnectError(text),
                    other => Incoming::Event("error".to_owned(), other),
                };
                let _ = on_error.send(incoming);
                async {}.boxed()
            })
            .on_any(move |event, payload, _| {
                let _ = on_any.send(Incoming::Event(event.to_string(), first(payload)));
                async {}.boxed()
            });
        if let Some(auth) = auth {
            builder = builder.auth(auth);
        }
        if let Some(value) = authorization {
            builder = builder.opening_header("Authorization", value);
        }
        let socket = builder
            .connect()
            .await
            .map_err(|e| format!("transport: {e}"))?;
        let verdict = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("connect verdict in time");
        match verdict {
            Some(Incoming::Connected) => Ok(TestClient {
                socket,
                incoming: rx,
                pending: Vec::new(),
            }),
            Some(Incoming::ConnectError(message)) => Err(message),
            other => panic!("unexpected first message {other:?}"),
        }
    }

    /// Emits a request with an acknowledgement and returns the acknowledgement's body.
    pub async fn request(&self, event: &str, payload: Value) -> Value {
        let (tx, rx) = oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        self.socket
            .emit_with_ack(event, payload, WAIT, move |payload, _| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    // An ack carries the array of the server's arguments; ours is one body.
                    let body = match first(payload) {
                        Value::Array(mut args) if !args.is_empty() => args.swap_remove(0),
                        other => other,
                    };
                    let _ = tx.send(body);
                }
                async {}.boxed()
            })
            .await
            .expect("emit");
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("ack in time")
            .expect("ack")
    }

    /// Emits without an acknowledgement.
    pub async fn emit(&self, event: &str, payload: Value) {
        self.socket.emit(event, payload).await.expect("emit");
    }

    /// Waits for the next `name` event, keeping other events for later.
    pub async fn next_event(&mut self, name: &str) -> Value {
        if let Some(index) = self.pending.iter().position(|(event, _)| event == name) {
            return self.pending.remove(index).1;
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .unwrap_or_else(|_| panic!("no {name} event in time; got {:?}", self.pending));
            match next {
                Some(Incoming::Event(event, value)) if event == name => return value,
                Some(Incoming::Event(event, value)) => self.pending.push((event, value)),
                Some(other) => panic!("unexpected {other:?} while waiting for {name}"),
                None => panic!("connection closed while waiting for {name}"),
            }
        }
    }

    /// Whether a `name` event arrives within `within`; it stays for [`TestClient::next_event`].
    pub async fn receives(&mut self, name: &str, within: Duration) -> bool {
        if self.pending.iter().any(|(event, _)| event == name) {
            return true;
        }
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(next)) = tokio::time::timeout_at(deadline, self.incoming.recv()).await {
            if let Incoming::Event(event, value) = next {
                let found = event == name;
                self.pending.push((event, value));
                if found {
                    return true;
                }
            }
        }
        false
    }
}

// ---- raw Engine.IO / Socket.IO frames ----

use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

/// A websocket speaking Engine.IO v4 / Socket.IO v5 frames by hand, for what a conforming
/// client library will not send: binary attachments, broken JSON, huge frames, floods.
pub struct RawClient {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl RawClient {
    /// A websocket to `addr` that has received Engine.IO's open packet.
    pub async fn open(addr: SocketAddr) -> RawClient {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
        let mut client = RawClient { ws };
        let open = client.text().await.expect("the open packet");
        assert!(open.starts_with('0'), "{open}");
        client
    }

    /// [`RawClient::open`], then connected to the namespace with `token`.
    pub async fn connect(addr: SocketAddr, token: &str) -> RawClient {
        let mut client = RawClient::open(addr).await;
        client.send(format!("40{}", json!({ "token": token }))).await;
        let connected = client.text().await.expect("the connect answer");
        assert!(connected.starts_with("40"), "{connected}");
        client
    }

    pub async fn send(&mut self, text: impl Into<String>) {
        self.ws.send(Message::Text(text.into().into())).await.expect("send");
    }

    /// Sends `text` as one websocket message in frames of `frame` bytes (a fragmented message).
    pub async fn send_fragmented(&mut self, text: &str, frame: usize) -> Result<(), String> {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(frame).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let opcode = if i == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
            let frame = Frame::message(chunk.to_vec(), opcode, i + 1 == chunks.len());
            self.ws.send(Message::Frame(frame)).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.ws.send(Message::Binary(data.into())).await.expect("send");
    }

    /// The next text frame (answering pings on the way), or `None` once the server closed.
    pub async fn text(&mut self) -> Option<String> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => self.send("3").await,
                Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The acknowledgement `43<id>[body]` of request `id`, skipping other frames.
    pub async fn ack(&mut self, id: u64) -> Value {
        let prefix = format!("43{id}");
        loop {
            let text = self.text().await.unwrap_or_else(|| panic!("closed before ack {id}"));
            if let Some(body) = text.strip_prefix(&prefix) {
                let mut args: Value = serde_json::from_str(body).expect("ack JSON");
                return args[0].take();
            }
        }
    }

    /// Whether the server closes the connection within `within` (frames before it are skipped).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

// ---- the real binary ----

/// `fanout-signalling` as its own process in embedded mode, for figures of the process itself
/// (its RSS) and for what only `main` wires up.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub secret: String,
    /// Its stderr so far (drained by a thread, so that logging never blocks it).
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Started with `args`, its own port and RTC ports `rtc`, and a known HS256 secret unless
    /// `args` configure another key. Waits for `/healthz`.
    pub async fn start(args: &[&str], rtc: (u16, u16)) -> Process {
        let (min, max) = (rtc.0.to_string(), rtc.1.to_string());
        let env = [
            ("FANOUT_PLACEMENT", "embedded"),
            ("FANOUT_RTC_MIN_PORT", min.as_str()),
            ("FANOUT_RTC_MAX_PORT", max.as_str()),
        ];
        let secret = fanout_signalling::embedded::random_secret();
        Process::start_with(args, &env, secret).await
    }

    /// A replica in front of the worker at `worker` (static placement) sharing the Redis at
    /// `redis` with others, verifying tokens with `secret`.
    pub async fn replica(worker: &str, worker_token: &str, redis: &str, lease_seconds: u64, secret: &str) -> Process {
        let lease = lease_seconds.to_string();
        let env = [
            ("FANOUT_PLACEMENT", "static"),
            ("FANOUT_WORKER_URL", worker),
            ("FANOUT_WORKER_TOKEN", worker_token),
            ("FANOUT_REDIS_URL", redis),
            ("FANOUT_REPLICA_LEASE_SECONDS", lease.as_str()),
            ("FANOUT_LISTEN_ADDR", "127.0.0.1"),
        ];
        Process::start_with(&[], &env, secret.to_owned()).await
    }

    /// Started with `args` and `env`, its own port, and HS256 `secret` unless `args`
    /// configure another key. Waits for `/healthz`.
    pub async fn start_with(args: &[&str], env: &[(&str, &str)], secret: String) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fanout-signalling"));
        command
            .args(args)
            .env("PORT", port.to_string())
            .env_remove("RUST_LOG")
            .env_remove("FANOUT_LISTEN_ADDR")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if !args.iter().any(|a| a.starts_with("--jwt-public-key-file")) {
            command.env("FANOUT_JWT_SECRET", &secret);
        }
        let mut child = command.spawn().expect("starts fanout-signalling");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let process = Process { child, addr, secret, log };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if http
                .get(format!("http://{addr}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fanout-signalling did not answer /healthz; its log:\n{}", process.log());
    }

    /// Its Socket.IO URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// A token this process accepts.
    pub fn token(&self, user: &str) -> String {
        sign(
            &json!({"sub": user, "name": user, "role": "participant", "exp": now() + 3600}),
            self.secret.as_bytes(),
        )
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory it has had, KiB: large buffers go back to the system when
    /// they are freed, so only the peak shows what a message cost.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix(field)
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- a real Redis ----

/// `redis-server` (Debian's package; `scripts/test.sh` installs it) on a loopback port of its
/// own, without persistence; killed when dropped.
pub struct RedisServer {
    child: std::process::Child,
    pub port: u16,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (apt-get install redis-server; scripts/test.sh does)")
            });
        let server = RedisServer { child, port };
        for _ in 0..100 {
            if server.ping().await {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not answer PING on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut reply).await.is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
