//! The process's wiring: the shared state ([`Signalling`]), the axum router with Socket.IO at
//! `/socket.io/`, `/healthz` and `/metrics`, and the Socket.IO connect middleware that
//! authenticates every connection.
//!
//! A connection's identity is put into its socket extensions by the middleware (an
//! `Arc<`[`Connection`]`>`), and request handlers read it from there only.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State as HttpState;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;
use futures::FutureExt as _;
use socketioxide::extract::{AckSender, Event, State, TryData};
use socketioxide::handler::{ConnectHandler as _, FromMessageParts, Value as SocketValue};
use socketioxide::{SendError, SocketError};
use tower_http::cors::{AllowOrigin, CorsLayer};

use fanout_worker::room::PeerId;

use crate::auth::{Identity, JwtVerifier, find_token};
use crate::error::{Result, SignallingError};
use crate::events::{REQUESTS, read_payload};
use crate::expiry::Expiries;
use crate::followers::Followers;
use crate::ice_servers::IceConfig;
use crate::ids::check_object_ids;
use crate::metrics::{Metrics, RefusalLabels};
use crate::placement::Placement;
use crate::replicas::{Adapter, OwnedPeer, Ownership, Replicas, SocketIo, SocketRef, peer_channel};
use crate::session::{Membership, TokenBucket};
use crate::worker::MediaBackend;

/// Sizes and rates that keep one client from hurting the others.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest event payload (JSON bytes) a request may carry; larger ones get
    /// `PAYLOAD_TOO_LARGE`. A browser's `rtpCapabilities`, the largest legitimate payload, is
    /// about 10 KiB.
    pub max_event_bytes: usize,
    /// Largest Engine.IO message (a websocket message, or a long-polling request body), the
    /// connect packet with its token included. A larger one closes the connection as soon as
    /// its length is known, before it is read into memory. Keep it above `max_event_bytes`
    /// plus the packet's framing.
    pub max_packet_bytes: u64,
    /// Request events a connection may send per second, sustained.
    pub events_per_second: u32,
    /// Request events a connection may send at once.
    pub event_burst: u32,
    /// How long a join waits for the room's event subscription before answering anyway.
    pub subscribe_wait: Duration,
    /// Packets waiting to be written to one connection. An answer that finds the queue full
    /// waits for room (up to `slow_client_timeout`); a notification that finds it full closes
    /// the connection, since its client has stopped reading. Memory is taken only as packets
    /// queue.
    pub max_queued_packets: usize,
    /// How long an answer waits for room in its connection's queue before the connection is
    /// closed as one whose client does not read.
    pub slow_client_timeout: Duration,
    /// Chat's size and rate limits, history and moderators ([`crate::chat`]).
    pub chat: crate::chat::ChatRules,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 64 * 1024,
            max_packet_bytes: 128 * 1024,
            events_per_second: 50,
            event_burst: 100,
            subscribe_wait: Duration::from_secs(2),
            max_queued_packets: 1024,
            slow_client_timeout: Duration::from_secs(5),
            chat: crate::chat::ChatRules::default(),
        }
    }
}

/// One authenticated connection: who it is (from its token) and what it is doing.
pub struct Connection {
    /// The verified identity; never changed by anything the client sends.
    pub identity: Identity,
    /// Its room, if any.
    pub(crate) membership: Mutex<Membership>,
    limiter: Mutex<TokenBucket>,
    /// Chat messages it may still send (per connection, so a rejoin does not refill it).
    pub(crate) chat_allowance: Mutex<TokenBucket>,
    /// Answers waiting for room in this connection's queue.
    waiting_answers: AtomicUsize,
    /// Set by the first answer that gave up waiting, which closes the connection.
    too_slow: AtomicBool,
    /// Joins so far (each is a new peer id).
    joins: std::sync::atomic::AtomicU32,
    /// Set by the disconnect handler, under the membership lock: a join in flight reads it
    /// there to know whether to keep what it joined. (socketioxide's `connected()` is no
    /// substitute: it turns true only after the connect packet went out, and a client that
    /// emits at once can have its request handled before.)
    gone: AtomicBool,
    /// When the session ends: the token's expiry, plus the verifier's tolerance, so that a
    /// session does not end before its token would be refused.
    expires_at: tokio::time::Instant,
}

impl Connection {
    fn new(identity: Identity, limits: &Limits, leeway_seconds: u64) -> Self {
        let length = identity.session_length(leeway_seconds, jsonwebtoken::get_current_timestamp());
        Connection {
            // At most `LONGEST_SESSION` from now: cannot overflow.
            expires_at: tokio::time::Instant::now() + length,
            identity,
            membership: Mutex::new(Membership::Idle),
            waiting_answers: AtomicUsize::new(0),
            too_slow: AtomicBool::new(false),
            joins: std::sync::atomic::AtomicU32::new(0),
            gone: AtomicBool::new(false),
            limiter: Mutex::new(TokenBucket::new(
                limits.events_per_second,
                limits.event_burst,
                Instant::now(),
            )),
            chat_allowance: Mutex::new(limits.chat.allowance(Instant::now())),
        }
    }

    /// The number of a new join of this connection.
    pub(crate) fn next_join(&self) -> u32 {
        self.joins.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The membership, locked. A poisoned lock only means a handler panicked mid-update of
    /// plain data; the data is still the last consistent state, so carry on with it.
    pub fn membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the socket has disconnected; read it under [`Connection::membership`].
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

/// Everything the handlers share.
pub struct Signalling {
    pub(crate) verifier: JwtVerifier,
    pub(crate) placement: Arc<dyn Placement>,
    pub(crate) backend: Arc<dyn MediaBackend>,
    pub(crate) followers: Followers,
    pub(crate) expiries: Arc<Expiries>,
    pub(crate) metrics: Metrics,
    pub(crate) limits: Limits,
    /// The ICE servers (and policy) every transport answer carries.
    pub(crate) ice: IceConfig,
    io: OnceLock<SocketIo>,
    /// Set with `io`: how this replica reaches the others, and its lease (with Redis).
    replicas: OnceLock<Replicas>,
    /// Set with `io`: where rooms' chat histories are kept (in Redis with replicas).
    chat: OnceLock<Arc<dyn crate::chat::ChatHistory>>,
}

impl Signalling {
    /// The shared state of a signalling server.
    pub fn new(
        verifier: JwtVerifier,
        placement: Arc<dyn Placement>,
        backend: Arc<dyn MediaBackend>,
        limits: Limits,
    ) -> Arc<Self> {
        Self::with_ice(verifier, placement, backend, limits, IceConfig::default())
    }

    /// [`Signalling::new`] handing clients these ICE servers (STUN, TURN) with their
    /// transports; `ice` should have passed [`IceConfig::validate`].
    pub fn with_ice(
        verifier: JwtVerifier,
        placement: Arc<dyn Placement>,
        backend: Arc<dyn MediaBackend>,
        limits: Limits,
        ice: IceConfig,
    ) -> Arc<Self> {
        Arc::new(Signalling {
            verifier,
            placement,
            backend,
            followers: Followers::default(),
            expiries: Arc::default(),
            metrics: Metrics::default(),
            limits,
            ice,
            io: OnceLock::new(),
            replicas: OnceLock::new(),
            chat: OnceLock::new(),
        })
    }

    /// The Socket.IO handle; set by [`app`] before any connection can exist.
    pub(crate) fn io(&self) -> &SocketIo {
        self.io
            .get()
            .expect("app() sets the SocketIo before serving")
    }

    /// Where chat histories are kept; set by [`app`] with the Socket.IO handle.
    pub(crate) fn chat(&self) -> &Arc<dyn crate::chat::ChatHistory> {
        self.chat
            .get_or_init(|| crate::chat::history_store(None, &self.limits.chat))
    }

    /// This replica's lease and peer list in Redis, when there are several replicas.
    pub(crate) fn ownership(&self) -> Option<&Ownership> {
        self.replicas.get().and_then(|r| r.ownership.as_ref())
    }

    /// Lists a peer that has just joined as this replica's (with Redis), so that it is removed
    /// from its worker if this replica dies.
    pub(crate) async fn own(&self, peer: &PeerId, room: &str, endpoint: &str) {
        if let Some(ownership) = self.ownership() {
            ownership
                .record(peer, &OwnedPeer { room: room.to_owned(), endpoint: endpoint.to_owned() })
                .await;
        }
    }

    /// Takes a peer that left off this replica's list.
    pub(crate) async fn disown(&self, peer: &PeerId) {
        if let Some(ownership) = self.ownership() {
            ownership.forget(peer).await;
        }
    }

    /// The metrics, for embedding programs.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Rooms this process follows on workers right now.
    pub fn followed_rooms(&self) -> usize {
        self.followers.len()
    }
}

/// CORS: which browser origins may connect. Empty means any origin, which suits token-based
/// auth (no cookies are involved), but production deployments should name their app's origins.
pub fn cors_layer(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([http::Method::GET, http::Method::POST, http::Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    let values: Vec<HeaderValue> = origins
        .iter()
        .filter(|o| o.as_str() != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if values.is_empty() {
        layer.allow_origin(AllowOrigin::any())
    } else {
        layer.allow_origin(values)
    }
}

/// The whole HTTP application: Socket.IO at `/socket.io/`, `/healthz`, `/metrics`.
pub fn app(state: Arc<Signalling>, cors_origins: &[String]) -> Router {
    app_with(state, cors_origins, Router::new())
}

/// [`app`] with more routes (embedded mode's pages and development endpoints). They are merged
/// under the Socket.IO layer, so `/socket.io/` keeps reaching Socket.IO even when `extra` has a
/// fallback (such as the web client's files). The only replica: see [`app_replicated`].
pub fn app_with(state: Arc<Signalling>, cors_origins: &[String], extra: Router) -> Router {
    let (router, ready) = build(state, cors_origins, extra, Replicas::alone());
    // Alone, the adapter's set-up subscribes to nothing: it is done when first polled.
    ready
        .now_or_never()
        .expect("the single-replica adapter starts without I/O")
        .expect("the single-replica adapter cannot fail");
    router
}

/// [`app_with`] as one of several replicas sharing a Redis ([`Replicas::connect`]): relays
/// reach sockets on the other replicas, and this replica keeps its lease, removing dead
/// replicas' peers from their workers. Returns once the adapter is subscribed.
pub async fn app_replicated(
    state: Arc<Signalling>,
    cors_origins: &[String],
    extra: Router,
    replicas: Replicas,
) -> anyhow::Result<Router> {
    let ownership = replicas.ownership.clone();
    let (router, ready) = build(state.clone(), cors_origins, extra, replicas);
    ready
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to the other replicas over Redis: {e}"))?;
    if let Some(ownership) = ownership {
        let io = state.io().clone();
        tracing::info!(replica = ownership.id(), lease = ?ownership.lease().ttl, "signalling replica on Redis");
        tokio::spawn(ownership.run(state.backend.clone(), move || local_peers(&io)));
    }
    Ok(router)
}

/// The peer ids of this process's participants.
fn local_peers(io: &SocketIo) -> std::collections::HashSet<String> {
    io.sockets()
        .iter()
        .filter_map(|socket| {
            let connection = socket.extensions.get::<Arc<Connection>>()?;
            match &*connection.membership() {
                Membership::Joined(session) => Some(session.peer.as_str().to_owned()),
                _ => None,
            }
        })
        .collect()
}

fn build(
    state: Arc<Signalling>,
    cors_origins: &[String],
    extra: Router,
    replicas: Replicas,
) -> (Router, socketioxide_redis::InitRes<crate::replicas::Bus>) {
    let (layer, io) = socketioxide::SocketIo::builder()
        .with_state(state.clone())
        .max_payload(state.limits.max_packet_bytes)
        .max_buffer_size(state.limits.max_queued_packets)
        // Signalling messages are small, and a larger one grows the buffer as it arrives; the
        // initial buffer is memory every idle connection holds (engineioxide's default: 4 KiB).
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .with_adapter::<Adapter>(replicas.adapter_state())
        .build_layer();
    // app() is called once per state; a second call would serve a second SocketIo the
    // handlers do not know, so refuse it loudly.
    assert!(
        state.io.set(io.clone()).is_ok(),
        "app() called twice on one Signalling"
    );
    let history = crate::chat::history_store(replicas.redis(), &state.limits.chat);
    let _ = state.replicas.set(replicas);
    let emptied = history.clone();
    state.followers.on_empty(move |room| emptied.room_emptied(room));
    let _ = state.chat.set(history);
    let ready = io.ns("/", on_connect.with(authenticate));
    // Rooms the placement moved to another worker: their clients rejoin on `room-migrated`.
    if let (Some(mut moved), Ok(runtime)) = (state.placement.migrations(), tokio::runtime::Handle::try_current()) {
        let io = io.clone();
        let app = state.clone();
        runtime.spawn(async move {
            while let Ok(migration) = moved.recv().await {
                app.room_moved(&io, &migration);
            }
        });
    }
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(extra)
        .layer(layer)
        .layer(axum::middleware::map_request(detach_request_head))
        .layer(cors_layer(cors_origins));
    (router, ready)
}

/// Initial websocket read buffer of a connection, in bytes: enough for pings, the namespace
/// connect packet with a typical token (about 400 bytes) and most requests. For a larger frame
/// (RTP parameters or capabilities, a relayed SDP) tungstenite reserves the frame's length once
/// it has read its header, so a small buffer costs no extra reads.
const WS_READ_BUFFER_BYTES: usize = 512;

/// Gives a Socket.IO request its own copies of its URI and header values. hyper parses them as
/// slices of the connection's read buffer (8 KiB or more), and socketioxide keeps a
/// connection's request parts for as long as the connection lives, so without the copy every
/// open websocket pins that buffer: about 16 KiB per connection, half of an idle one's memory.
async fn detach_request_head(mut request: axum::extract::Request) -> axum::extract::Request {
    if !request.uri().path().starts_with("/socket.io") {
        return request;
    }
    if let Ok(uri) = http::Uri::try_from(request.uri().to_string()) {
        // The router's copy of the URI too, which it puts in the extensions before this runs.
        if let Some(original) = request.extensions_mut().get_mut::<axum::extract::OriginalUri>() {
            original.0 = uri.clone();
        }
        *request.uri_mut() = uri;
    }
    let shared = std::mem::take(request.headers_mut());
    let headers = request.headers_mut();
    headers.reserve(shared.len());
    for (name, value) in &shared {
        // Names are copied by hyper already; values are the slices.
        let owned = match HeaderValue::from_bytes(value.as_bytes()) {
            Ok(mut owned) => {
                owned.set_sensitive(value.is_sensitive());
                owned
            }
            Err(_) => value.clone(),
        };
        headers.append(name.clone(), owned);
    }
    request
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(HttpState(state): HttpState<Arc<Signalling>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Why a connection was refused, as `connect_error`'s message: `CODE: sentence`, so that
/// `socket.on("connect_error", err => err.message)` shows both.
#[derive(Debug)]
pub struct ConnectRefusal(pub SignallingError);

impl std::fmt::Display for ConnectRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code(), self.0)
    }
}

/// Connect middleware: verifies the token before the socket joins the namespace.
async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(app): State<Arc<Signalling>>,
) -> std::result::Result<(), ConnectRefusal> {
    let parts = socket.req_parts();
    let identity = find_token(auth.as_ref().ok(), &parts.headers, parts.uri.query())
        .and_then(|token| app.verifier.verify(&token));
    match identity {
        Ok(identity) => {
            let connection = Arc::new(Connection::new(
                identity,
                &app.limits,
                app.verifier.leeway_seconds(),
            ));
            socket.extensions.insert(connection.clone());
            // Everything a connection needs is set up here, before socketioxide sends the
            // connect packet: the connect handler runs as a separate task after it, and a
            // client that emits right after connecting would race handlers registered there.
            app.metrics.connections.inc();
            register_requests(&socket);
            socket.on_disconnect(
                async |socket: SocketRef, State(app): State<Arc<Signalling>>| {
                    app.disconnected(socket).await;
                },
            );
            app.expiries.add(app.io(), connection.expires_at, socket.id);
            tracing::debug!(sid = %socket.id, user = connection.identity.user_id, "connected");
            Ok(())
        }
        Err(error) => {
            app.metrics
                .refused
                .get_or_create(&RefusalLabels {
                    code: error.code().to_owned(),
                })
                .inc();
            tracing::debug!(code = error.code(), "connection refused");
            Err(ConnectRefusal(error))
        }
    }
}

/// The connect handler proper has nothing left to do: see [`authenticate`] for why the
/// setup happens before the connect packet.
async fn on_connect() {}

impl Signalling {
    /// Cleanup when a socket goes: leave its room on the worker (which closes its transports,
    /// producers and consumers and tells the others) and stop following an emptied room.
    async fn disconnected(&self, socket: SocketRef) {
        self.metrics.connections.dec();
        let Some(connection) = socket.extensions.get::<Arc<Connection>>() else {
            return;
        };
        self.expiries.remove(connection.expires_at, socket.id);
        // A join still in flight sees the socket gone and cleans up after itself.
        let membership = {
            let mut membership = connection.membership();
            connection.gone.store(true, Ordering::SeqCst);
            std::mem::take(&mut *membership)
        };
        if let Membership::Joined(session) = membership {
            if let Err(error) = self
                .backend
                .leave(&session.location.endpoint, &session.room, &session.peer)
                .await
            {
                tracing::warn!(room = session.room, %error, "leaving the room on disconnect failed");
            }
            self.followers.release(&session.room);
            self.disown(&session.peer).await;
        }
    }

    /// A room moved to another worker: its participants here are out of it (their peers were
    /// on the old worker), so that the `join-room` they answer `room-migrated` with joins the
    /// room where it is now instead of answering ALREADY_IN_ROOM. Participants who already
    /// joined it on the new worker (their join saw the new placement before this notice came)
    /// are left alone.
    fn room_moved(&self, io: &SocketIo, migration: &crate::placement::Migration) {
        let room = migration.room.as_str();
        let channel = crate::followers::room_channel(room);
        let payload = serde_json::json!({"roomId": room, "reason": "the room moved to another media worker; join again"});
        for socket in io.to(channel.clone()).sockets() {
            let on_new_worker = socket.extensions.get::<Arc<Connection>>().is_some_and(|connection| {
                matches!(&*connection.membership(),
                    Membership::Joined(session) if session.room == room && session.location.endpoint == migration.endpoint)
            });
            if on_new_worker {
                continue;
            }
            let left = socket.extensions.get::<Arc<Connection>>().and_then(|connection| {
                let mut membership = connection.membership();
                let peer = match &*membership {
                    Membership::Joined(session) if session.room == room => session.peer.clone(),
                    _ => return None,
                };
                *membership = Membership::Idle;
                Some(peer)
            });
            socket.leave(channel.clone());
            if let Some(peer) = left {
                socket.leave(peer_channel(room, &peer));
                self.followers.release(room);
                // Its peer was on the old worker, which no longer has the room.
                if let Some(ownership) = self.ownership().cloned() {
                    tokio::spawn(async move { ownership.forget(&peer).await });
                }
            }
            crate::followers::notify(&socket, "room-migrated", &payload);
        }
    }

    /// Rate, size and shape checks every request passes before its handler runs.
    fn admit(&self, connection: &Connection, event: &str, packet: &SocketValue) -> Result<Value> {
        connection
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(Instant::now())?;
        admit_payload(event, packet, &self.limits)
    }
}

/// The size and shape checks of a request's packet, after the rate check: its payload, read
/// from the packet and its attachments, within `limits`, a JSON object, with object ids of a
/// bounded length. Pure; also the entry of the fuzz targets (`signalling/fuzz`).
#[doc(hidden)]
pub fn admit_payload(event: &str, packet: &SocketValue, limits: &Limits) -> Result<Value> {
    let payload = match packet {
        SocketValue::Str(text, attachments) => {
            let attachments: Vec<&[u8]> = attachments
                .iter()
                .flatten()
                .map(|attachment| &attachment[..])
                .collect();
            read_payload(event, text.as_str(), &attachments, limits.max_event_bytes)?
        }
        // The common parser gives events as text; a request is never a bare binary packet.
        SocketValue::Bytes(_) => {
            return Err(SignallingError::InvalidPayload {
                event: event.to_owned(),
                reason: "the request is binary; send one JSON object".to_owned(),
            });
        }
    };
    // No payload at all: requests whose fields are all optional still work.
    let data = payload.unwrap_or_else(|| Value::Object(Default::default()));
    let size = json_size(&data);
    if size > limits.max_event_bytes {
        return Err(SignallingError::PayloadTooLarge {
            size,
            limit: limits.max_event_bytes,
        });
    }
    if !data.is_object() {
        return Err(SignallingError::InvalidPayload {
            event: event.to_owned(),
            reason: "the payload must be a JSON object".to_owned(),
        });
    }
    check_object_ids(event, &data)?;
    Ok(data)
}

/// The serialised size of a JSON value, without building the string.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Registers the request events. One handler takes them all (socketioxide's fallback, which
/// gets every event that has no handler of its own): a handler per event would cost every
/// connection a boxed closure and a map entry for each of the 18 requests, about 2 KiB.
fn register_requests(socket: &SocketRef) {
    socket.on_fallback(on_request);
}

/// One request event: admit, handle, then answer both ways (the ack when the client asked for
/// one, and the named response event), or refuse both ways (the ack gets `{error}`, the
/// socket an `error` event). Events that are not requests are ignored.
async fn on_request(
    socket: SocketRef,
    Event(event): Event,
    request: Incoming,
    State(app): State<Arc<Signalling>>,
) {
    let Some(&(event, response)) = REQUESTS.iter().find(|(name, _)| *name == event) else {
        tracing::debug!(event = crate::ids::excerpt(&event), "not a request; ignored");
        return;
    };
    let started = Instant::now();
    let Some(connection) = socket.extensions.get::<Arc<Connection>>() else {
        return;
    };
    let outcome = match app.admit(&connection, event, &request.packet) {
        Ok(payload) => app.clone().handle(event, socket.clone(), connection.clone(), payload).await,
        Err(error) => Err(error),
    };
    let code = outcome.as_ref().err().map_or("ok", |e| e.code()).to_owned();
    app.metrics.observe(event, &code, started.elapsed());
    let delivered = match outcome {
        Ok(body) => app.answer(&request, &connection, &body, response.map(|name| (name, &body))).await,
        Err(error) => {
            tracing::debug!(event, code = error.code(), %error, "request refused");
            let refusal = error.to_event(event);
            app.answer(&request, &connection, &error.to_ack(), Some(("error", &refusal))).await
        }
    };
    // Several answers may give up at once; the first one closes the connection.
    if delivered == Delivery::TooSlow && !connection.too_slow.swap(true, Ordering::Relaxed) {
        app.metrics.slow_clients.inc();
        tracing::warn!(
            sid = %socket.id,
            "closing a connection whose client does not read its answers (its queue stayed full \
             for {:?})",
            app.limits.slow_client_timeout
        );
        let _ = socket.disconnect();
    }
}

/// A request event's raw packet data and what is needed to answer it, taken from the packet
/// before socketioxide deserialises anything: its `Data` extractors read a payload with binary
/// attachments as no payload, cannot tell a missing payload from an unreadable one, and its
/// acknowledgement is lost for good when the connection's queue is full.
pub(crate) struct Incoming {
    /// `["event", payload, ...]` and the binary attachments, read by [`read_payload`].
    packet: SocketValue,
    socket: Arc<socketioxide::socket::Socket<Adapter>>,
    ack_id: Option<i64>,
}

impl FromMessageParts<Adapter> for Incoming {
    type Error = Infallible;

    fn from_message_parts(
        socket: &Arc<socketioxide::socket::Socket<Adapter>>,
        packet: &mut SocketValue,
        ack_id: &Option<i64>,
    ) -> std::result::Result<Self, Infallible> {
        Ok(Incoming {
            // A reference-counted copy (the text and attachments are `Bytes`).
            packet: packet.clone(),
            socket: socket.clone(),
            ack_id: *ack_id,
        })
    }
}

impl Incoming {
    /// Sends the acknowledgement, if the client asked for one. socketioxide's `AckSender` is
    /// spent by a failed send, so a new one is made for every try.
    fn send_ack(&self, body: &impl serde::Serialize) -> std::result::Result<(), SendError> {
        if self.ack_id.is_none() {
            return Ok(());
        }
        let mut unused = self.packet.clone();
        let Ok(ack) = AckSender::from_message_parts(&self.socket, &mut unused, &self.ack_id);
        ack.send(body)
    }
}

/// Whether a request's answers reached its connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Queued,
    /// The connection is gone; nobody is waiting.
    Gone,
    /// The queue stayed full for `slow_client_timeout`.
    TooSlow,
}

impl Signalling {
    /// Queues a request's acknowledgement and its event (the named response or `error`),
    /// waiting while the connection's queue is full: every request is answered, in a burst
    /// too, as long as the client reads.
    async fn answer(
        &self,
        request: &Incoming,
        connection: &Connection,
        ack: &impl serde::Serialize,
        event: Option<(&str, &impl serde::Serialize)>,
    ) -> Delivery {
        let deadline = tokio::time::Instant::now() + self.limits.slow_client_timeout;
        let waiting = Waiting {
            count: &connection.waiting_answers,
            limit: self.limits.max_queued_packets,
        };
        let acked = queue(deadline, &waiting, || request.send_ack(ack)).await;
        if acked != Delivery::Queued {
            return acked;
        }
        match event {
            Some((name, body)) => {
                queue(deadline, &waiting, || request.socket.emit(name, body)).await
            }
            None => Delivery::Queued,
        }
    }
}

/// Answers of one connection waiting for room in its queue. Each waiting answer is a task
/// holding its request; a client that sends without reading would otherwise make them pile
/// up for as long as the timeout, so beyond `limit` the client counts as too slow at once.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    limit: usize,
}

/// Retries `send` while the connection's queue is full, until `deadline`.
async fn queue(
    deadline: tokio::time::Instant,
    waiting: &Waiting<'_>,
    mut send: impl FnMut() -> std::result::Result<(), SendError>,
) -> Delivery {
    let outcome = |result: std::result::Result<(), SendError>| match result {
        Ok(()) => Some(Delivery::Queued),
        Err(SendError::Socket(SocketError::InternalChannelFull)) => None,
        Err(SendError::Socket(SocketError::Closed)) => Some(Delivery::Gone),
        Err(error) => {
            tracing::error!(%error, "an answer could not be encoded");
            Some(Delivery::Gone)
        }
    };
    if let Some(delivered) = outcome(send()) {
        return delivered;
    }
    if waiting.count.fetch_add(1, Ordering::Relaxed) >= waiting.limit {
        waiting.count.fetch_sub(1, Ordering::Relaxed);
        return Delivery::TooSlow;
    }
    let mut pause = Duration::from_millis(1);
    let delivered = loop {
        if tokio::time::Instant::now() + pause > deadline {
            break Delivery::TooSlow;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
        if let Some(delivered) = outcome(send()) {
            break delivered;
        }
    };
    waiting.count.fetch_sub(1, Ordering::Relaxed);
    delivered
}

impl Signalling {
    /// The handler of request `event`, one of [`REQUESTS`].
    async fn handle(
        self: Arc<Self>,
        event: &str,
        socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        match event {
            "join-room" => self.join_room(socket, connection, payload).await,
            "leave-room" => self.leave_room(socket, connection, payload).await,
            "get-participants" => self.get_participants(socket, connection, payload).await,
            "webrtc-offer" => self.relay_offer(socket, connection, payload).await,
            "webrtc-answer" => self.relay_answer(socket, connection, payload).await,
            "ice-candidate" => self.relay_ice_candidate(socket, connection, payload).await,
            "create-transport" => self.create_transport(socket, connection, payload).await,
            "connect-transport" => self.connect_transport(socket, connection, payload).await,
            "restart-ice" => self.restart_ice(socket, connection, payload).await,
            "produce" => self.produce(socket, connection, payload).await,
            "consume" => self.consume(socket, connection, payload).await,
            "pause-producer" => self.pause_producer(socket, connection, payload).await,
            "resume-producer" => self.resume_producer(socket, connection, payload).await,
            "close-producer" => self.close_producer(socket, connection, payload).await,
            "pause-consumer" => self.pause_consumer(socket, connection, payload).await,
            "resume-consumer" => self.resume_consumer(socket, connection, payload).await,
            "close-consumer" => self.close_consumer(socket, connection, payload).await,
            "set-consumer-preferred-layers" => {
                self.set_consumer_preferred_layers(socket, connection, payload).await
            }
            "set-consumer-priority" => self.set_consumer_priority(socket, connection, payload).await,
            "get-room-info" => self.get_room_info(socket, connection, payload).await,
            "produce-data" => self.produce_data(connection, payload).await,
            "consume-data" => self.consume_data(connection, payload).await,
            "close-data-producer" => self.close_data_producer(connection, payload).await,
            "close-data-consumer" => self.close_data_consumer(connection, payload).await,
            "chat-message" => self.chat_message(socket, connection, payload).await,
            "delete-chat-message" => self.delete_chat_message(socket, connection, payload).await,
            other => unreachable!("request {other} in REQUESTS has no handler"),
        }
    }
}
