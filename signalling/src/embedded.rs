//! Embedded mode, the local default: with no worker URL and no Kubernetes, one `signalling`
//! process also runs a worker in-process on loopback (which signalling calls directly, see
//! [`InProcessBackend`](crate::worker::InProcessBackend)), serves the demo page, and issues
//! development tokens, so anyone can try a call on a laptop with one command.
//!
//! Development only: the token endpoint hands a valid token to anyone who asks. It exists only
//! in this mode, and the process says so loudly in its log.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use axum::Router;
use fanout_worker::api::{TransportSummary, WorkerStats};
use fanout_worker::control::ControlPlane;
use fanout_worker::engine::EngineNotice;
use fanout_worker::room::{RoomId, TransportCloseCode, TransportId};
use fanout_worker::server::{start, RunningWorker, WorkerConfig};
use jsonwebtoken::{encode, EncodingKey, Header};
use rand::Rng;
use serde::Deserialize;
use tower_http::services::{ServeDir, ServeFile};

/// How an embedded worker listens.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// IP the worker's UDP sockets bind to and announce (loopback unless other machines on
    /// the network should join).
    pub rtc_ip: std::net::IpAddr,
    pub rtc_ports: (u16, u16),
    /// Where the built web client is (`web/dist`).
    pub web_root: PathBuf,
}

/// A running embedded worker and what signalling needs to use it.
pub struct Embedded {
    pub worker: RunningWorker,
    /// Bearer token of the in-process worker's REST API (random per run). Signalling itself
    /// calls the worker directly ([`InProcessBackend`](crate::worker::InProcessBackend)).
    pub worker_token: String,
    /// HS256 secret of the development tokens.
    pub jwt_secret: String,
    /// Whether `/dev/token` can sign tokens this server accepts.
    pub dev_tokens: DevTokens,
}

/// What `GET /dev/token` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevTokens {
    /// Signs HS256 tokens with [`Embedded::jwt_secret`], which signalling verifies with.
    Hs256,
    /// Signalling verifies tokens of this algorithm (RS256, ES256) with the application
    /// issuer's public key: a development token could not be signed so that it is accepted,
    /// so the endpoint refuses with `DEV_TOKENS_UNAVAILABLE`, saying why.
    Refused { algorithm: String },
}

/// A random secret for this run.
pub fn random_secret() -> String {
    let mut rng = rand::rng();
    (0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

/// Starts the in-process worker.
pub async fn start_worker(options: &EmbeddedOptions, jwt_secret: Option<String>) -> anyhow::Result<Embedded> {
    let worker_token = random_secret();
    let worker = start(WorkerConfig {
        http_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        listen_ip: options.rtc_ip,
        announced_ip: options.rtc_ip,
        rtc_ports: options.rtc_ports,
        rtc_tcp_port: Some(0),
        media_threads: 1,
        api_token: Some(worker_token.clone()),
        limits: Default::default(),
    })
    .await?;
    Ok(Embedded {
        worker,
        worker_token,
        jwt_secret: jwt_secret.unwrap_or_else(random_secret),
        dev_tokens: DevTokens::Hs256,
    })
}

#[derive(Clone)]
struct DevState {
    secret: String,
    tokens: DevTokens,
    control: Arc<ControlPlane>,
}

#[derive(Deserialize)]
struct TokenQuery {
    name: Option<String>,
    role: Option<String>,
}

#[derive(serde::Serialize)]
struct DevClaims {
    sub: String,
    name: String,
    email: String,
    role: String,
    exp: u64,
}

/// `GET /dev/token?name=Ada&role=teacher`: a token valid for 12 hours.
async fn dev_token(State(state): State<DevState>, Query(query): Query<TokenQuery>) -> impl IntoResponse {
    if let DevTokens::Refused { algorithm } = &state.tokens {
        let message = format!(
            "this server accepts only {algorithm} tokens signed by your application's issuer \
             (--jwt-public-key-file), so it cannot sign development tokens it would accept; \
             paste a token from your issuer under Options, or start without \
             --jwt-public-key-file to use development tokens"
        );
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"error": {"code": "DEV_TOKENS_UNAVAILABLE", "message": message}})),
        )
            .into_response();
    }
    let name = query.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "Guest".into());
    let sub = format!("dev-{}", &random_secret()[..12]);
    let claims = DevClaims {
        email: format!("{sub}@dev.local"),
        sub,
        name,
        role: query.role.unwrap_or_else(|| "participant".into()),
        exp: jsonwebtoken::get_current_timestamp() + 12 * 3600,
    };
    match encode(&Header::default(), &claims, &EncodingKey::from_secret(state.secret.as_bytes())) {
        Ok(token) => (StatusCode::OK, Json(serde_json::json!({ "token": token }))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": {"code": "INTERNAL", "message": e.to_string()}})))
            .into_response(),
    }
}

#[derive(Deserialize)]
struct CloseQuery {
    code: Option<String>,
}

/// `POST /dev/rooms/{room}/transports/{transport}/close?code=ICE_CONSENT_LOST`: the embedded
/// worker closes a transport as its media engine does when ICE consent is lost or DTLS fails,
/// from there on by the same path (the room's cascade and events, `transport-closed` to the
/// participant, the socket released). For trying a client's recovery; development only.
async fn dev_close_transport(
    State(state): State<DevState>,
    Path((room, transport)): Path<(String, String)>,
    Query(query): Query<CloseQuery>,
) -> axum::response::Response {
    close_as_engine(&state, &room, query.code, |t| t.transport_id.as_str() == transport)
}

/// `POST /dev/rooms/{room}/peers/{peer}/transports/close?code=...`: the same for every
/// transport of a peer at once (its browser gone), so that the worker removes the peer.
async fn dev_close_peer_transports(
    State(state): State<DevState>,
    Path((room, peer)): Path<(String, String)>,
    Query(query): Query<CloseQuery>,
) -> axum::response::Response {
    close_as_engine(&state, &room, query.code, |t| t.peer_id.as_str() == peer)
}

/// Closes the room's transports that `chosen` picks as the media engine would, with `code`
/// (ICE_CONSENT_LOST when absent), one after another with nothing in between.
fn close_as_engine(
    state: &DevState,
    room: &str,
    code: Option<String>,
    chosen: impl Fn(&TransportSummary) -> bool,
) -> axum::response::Response {
    let code = code.unwrap_or_else(|| "ICE_CONSENT_LOST".to_owned());
    let code = match serde_json::from_value::<TransportCloseCode>(serde_json::json!(code)) {
        Ok(code) if code != TransportCloseCode::Closed => code,
        _ => {
            let message = "code must be one of the worker's close codes (ICE_CONSENT_LOST, DTLS_FAILED, ... in docs/protocol.md)";
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let room = RoomId::from(room);
    let transports: Vec<TransportId> = match state.control.room_info(&room) {
        Ok(info) => info.transports.into_iter().filter(|t| chosen(t)).map(|t| t.transport_id).collect(),
        Err(_) => Vec::new(),
    };
    if transports.is_empty() {
        return (StatusCode::NOT_FOUND, "no such transport in that room").into_response();
    }
    for transport in transports {
        state.control.handle_notice(EngineNotice::TransportClosed {
            room: room.clone(),
            transport,
            code,
            reason: code.describe().to_owned(),
        });
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /dev/stats`: the embedded worker's `/v1/stats` (rooms, peers, transports...).
async fn dev_stats(State(state): State<DevState>) -> Json<WorkerStats> {
    Json(state.control.stats())
}

/// The routes embedded mode adds: development tokens, worker stats, and the web client.
pub fn routes(embedded: &Embedded, web_root: PathBuf) -> Router {
    let state = DevState {
        secret: embedded.jwt_secret.clone(),
        tokens: embedded.dev_tokens.clone(),
        control: embedded.worker.control.clone(),
    };
    let index = web_root.join("index.html");
    Router::new()
        .route("/dev/token", get(dev_token))
        .route("/dev/stats", get(dev_stats))
        .route(
            "/dev/rooms/{room}/transports/{transport}/close",
            post(dev_close_transport),
        )
        .route(
            "/dev/rooms/{room}/peers/{peer}/transports/close",
            post(dev_close_peer_transports),
        )
        .with_state(state)
        .fallback_service(ServeDir::new(web_root).fallback(ServeFile::new(index)))
}
