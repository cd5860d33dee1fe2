//! The worker's internal REST API (documented in `docs/worker-api.md`) on axum: thin handlers that read the
//! request, call the [`ControlPlane`] and write its answer or error.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /healthz` | | 200 `{"status":"ok"}`, 503 while shutting down (readiness) |
//! | `GET /metrics` | | OpenMetrics text |
//! | `GET /v1/stats` | | [`WorkerStats`] |
//! | `PUT /v1/rooms/{room}` | [`EnsureRoomRequest`] (may be empty) | [`RoomCapabilities`] |
//! | `GET /v1/rooms/{room}` | | [`RoomInfo`](crate::api::RoomInfo) |
//! | `DELETE /v1/rooms/{room}` | | 204 |
//! | `POST /v1/rooms/{room}/peers` | [`JoinRequest`] | 201 [`JoinResponse`](crate::room::JoinResponse); opens the room with default codecs if needed |
//! | `DELETE /v1/rooms/{room}/peers/{peer}` | | 204 |
//! | `POST /v1/rooms/{room}/transports` | [`CreateTransportRequest`] | 201 [`TransportCreated`](crate::room::TransportCreated) |
//! | `POST .../transports/{id}/connect` | [`ConnectTransportRequest`] | 204 |
//! | `POST .../transports/{id}/restart-ice` | | [`RestartIceResponse`] |
//! | `DELETE .../transports/{id}` | | 204 |
//! | `POST /v1/rooms/{room}/producers` | [`ProduceRequest`] | 201 [`ProducerCreated`](crate::room::ProducerCreated) |
//! | `POST .../producers/{id}/pause`, `/resume` | | 204 |
//! | `DELETE .../producers/{id}` | | 204 |
//! | `POST /v1/rooms/{room}/consumers` | [`ConsumeRequest`] | 201 [`ConsumerCreated`](crate::room::ConsumerCreated) |
//! | `POST .../consumers/{id}/pause`, `/resume` | | 204 |
//! | `POST .../consumers/{id}/preferred-layers` | [`SetPreferredLayersRequest`] | [`PreferredLayersResponse`] |
//! | `POST .../consumers/{id}/priority` | [`ConsumerPriority`] | [`ConsumerPriority`] |
//! | `GET .../consumers/{id}/stats` | | [`ConsumerStats`](crate::api::ConsumerStats) |
//! | `GET .../producers/{id}/stats` | | [`ProducerStats`](crate::api::ProducerStats) |
//! | `DELETE .../consumers/{id}` | | 204 |
//! | `POST /v1/rooms/{room}/data-producers` | [`ProduceDataRequest`] | 201 [`DataProducerCreated`](crate::room::DataProducerCreated) |
//! | `DELETE .../data-producers/{id}` | | 204 |
//! | `POST /v1/rooms/{room}/data-consumers` | [`ConsumeDataRequest`] | 201 [`DataConsumerCreated`](crate::room::DataConsumerCreated) |
//! | `DELETE .../data-consumers/{id}` | | 204 |
//! | `GET /v1/rooms/{room}/events` | | Server-Sent Events, see below |
//! | `POST /v1/rooms/{room}/recordings` | [`StartRecordingRequest`] | 201 [`Recording`](crate::api::Recording) (200 for an existing id) |
//! | `GET /v1/rooms/{room}/recordings/{id}` | | [`Recording`](crate::api::Recording) |
//! | `DELETE /v1/rooms/{room}/recordings/{id}` | | [`Recording`](crate::api::Recording), stopped, once its files are finalised |
//!
//! Everything under `/v1` needs `Authorization: Bearer <token>` when a token is configured;
//! `/healthz` and `/metrics` are open (kubelet and Prometheus probe them). Every error is
//! `{"error": {"code", "message"}}`: the room graph's and engine's codes with their statuses,
//! 400 `INVALID_REQUEST` for an unreadable body (with serde's reason), 401 `UNAUTHORIZED`,
//! 404 `NOT_FOUND` / 405 `METHOD_NOT_ALLOWED` for unknown routes, 413 `PAYLOAD_TOO_LARGE`
//! past [`BODY_LIMIT`], 503 `SHUTTING_DOWN` / `PORTS_EXHAUSTED` when another worker should be
//! tried. A refused request changes nothing.
//!
//! # Events
//!
//! `GET /v1/rooms/{room}/events` streams the room's [`RoomEvent`]s from the moment of the
//! request: one SSE message per event, `event:` its `type` and `data:` its JSON, plus a
//! keep-alive comment every [`KEEP_ALIVE`]. The stream ends after `roomClosed`. A subscriber
//! that falls [`EVENT_BUFFER`](crate::control::EVENT_BUFFER) requests behind gets one
//! `event: lagged` message (`{"missed": n}`: the events of `n` requests are lost) and the
//! stream ends: it should read the room (`GET /v1/rooms/{room}`) and subscribe again.

mod error;
mod metrics;
mod serve;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::api::{
    ConsumeDataRequest, ProduceDataRequest,
    ConnectTransportRequest, ConsumeRequest, ConsumerPriority, CreateTransportRequest, EnsureRoomRequest,
    JoinRequest, PreferredLayersResponse, ProduceRequest, RestartIceResponse, RoomCapabilities,
    SetPreferredLayersRequest, StartRecordingRequest, WorkerStats,
};
use crate::record::{StopAnswer, STOP_TIMEOUT};
use crate::control::ControlPlane;
use crate::room::{
    ConsumerId, DataConsumerId, DataProducerId, PeerId, ProducerId, RoomEvent, RoomId, SctpCapabilities, TransportId,
};

pub use error::{ApiError, JsonBody, PathArgs};
pub use metrics::Metrics;
pub use serve::{HttpLimits, serve_with_limits};

/// The largest request body accepted. The biggest real body, a `consume` with a browser's full
/// capabilities, is a few KiB.
pub const BODY_LIMIT: usize = 256 * 1024;

/// How often an idle event stream carries a keep-alive comment, so that proxies and the
/// client's read timeout see a live connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the handlers share: the control plane, the bearer token, the metrics and the limits.
#[derive(Clone)]
pub struct ApiState {
    control: Arc<ControlPlane>,
    token: Option<Arc<str>>,
    metrics: Arc<Metrics>,
    limits: HttpLimits,
}

impl ApiState {
    /// `token` is the bearer token shared with signalling and the operator; `None` (or an
    /// empty string) leaves `/v1` open, for a worker embedded in one process.
    pub fn new(control: Arc<ControlPlane>, token: Option<String>) -> Self {
        ApiState {
            control,
            token: token.filter(|token| !token.is_empty()).map(Arc::from),
            metrics: Arc::new(Metrics::new()),
            limits: HttpLimits::default(),
        }
    }

    /// The same state with other limits than the defaults.
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The control plane the handlers drive.
    pub fn control(&self) -> &Arc<ControlPlane> {
        &self.control
    }
}

/// The REST API as an axum router (see the module docs for the routes).
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/stats", get(stats))
        .route(
            "/v1/rooms/{room}",
            get(room_info).put(ensure_room).delete(close_room),
        )
        .route("/v1/rooms/{room}/events", get(room_events))
        .route("/v1/rooms/{room}/peers", post(join))
        .route("/v1/rooms/{room}/peers/{peer}", delete(leave))
        .route("/v1/rooms/{room}/transports", post(create_transport))
        .route("/v1/rooms/{room}/transports/{id}", delete(close_transport))
        .route(
            "/v1/rooms/{room}/transports/{id}/connect",
            post(connect_transport),
        )
        .route(
            "/v1/rooms/{room}/transports/{id}/restart-ice",
            post(restart_ice),
        )
        .route("/v1/rooms/{room}/producers", post(produce))
        .route("/v1/rooms/{room}/producers/{id}", delete(close_producer))
        .route(
            "/v1/rooms/{room}/producers/{id}/pause",
            post(pause_producer),
        )
        .route(
            "/v1/rooms/{room}/producers/{id}/resume",
            post(resume_producer),
        )
        .route("/v1/rooms/{room}/data-producers", post(produce_data))
        .route("/v1/rooms/{room}/data-producers/{id}", delete(close_data_producer))
        .route("/v1/rooms/{room}/data-consumers", post(consume_data))
        .route("/v1/rooms/{room}/data-consumers/{id}", delete(close_data_consumer))
        .route("/v1/rooms/{room}/consumers", post(consume))
        .route("/v1/rooms/{room}/consumers/{id}", delete(close_consumer))
        .route(
            "/v1/rooms/{room}/consumers/{id}/pause",
            post(pause_consumer),
        )
        .route(
            "/v1/rooms/{room}/consumers/{id}/resume",
            post(resume_consumer),
        )
        .route(
            "/v1/rooms/{room}/consumers/{id}/preferred-layers",
            post(set_consumer_preferred_layers),
        )
        .route(
            "/v1/rooms/{room}/consumers/{id}/priority",
            post(set_consumer_priority),
        )
        .route("/v1/rooms/{room}/consumers/{id}/stats", get(consumer_stats))
        .route("/v1/rooms/{room}/producers/{id}/stats", get(producer_stats))
        .route("/v1/rooms/{room}/recordings", post(start_recording))
        .route("/v1/rooms/{room}/recordings/{id}", get(recording).delete(stop_recording))
        // route_layer: only matched /v1 routes need the token, so probes and unknown paths
        // keep their own answers.
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(v1)
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard_request))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .layer(DefaultBodyLimit::max(state.limits.body_limit))
        .with_state(state)
}

/// Serves the API on `listener` with the state's [`HttpLimits`] (see [`serve_with_limits`])
/// until `shutdown` completes, then waits for open requests. Call [`ControlPlane::shutdown`]
/// first (or in `shutdown`), so that event streams end.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    serve_with_limits(listener, router(state), limits, shutdown).await
}

// ---------------------------------------------------------------------------------------------
// Middleware
// ---------------------------------------------------------------------------------------------

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !given.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guessed token was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// The body limit in force, for [`JsonBody`]'s message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

/// Refuses a body announced larger than the limit before anything of it is read (413 at
/// once, and the connection is closed: reading 10 GB to keep it would be worse), and bounds
/// the time a request may take to be read and answered (408).
async fn guard_request(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let limit = state.limits.body_limit;
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        let mut response = ApiError::payload_too_large(limit).into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return response;
    }
    request.extensions_mut().insert(BodyLimit(limit));
    match tokio::time::timeout(state.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                format!(
                    "the request was not received and answered within {} s; send the body at once",
                    state.limits.request_timeout.as_secs()
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            response
        }
    }
}

async fn count_request(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    state
        .metrics
        .record_request(&route, &method, response.status().as_u16());
    response
}

async fn unknown_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such route; the worker's API is under /v1 (see docs/worker-api.md)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take this method",
    )
}

// ---------------------------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------------------------

async fn healthz(State(state): State<ApiState>) -> Response {
    if state.control.is_shutting_down() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting down"})),
        )
            .into_response()
    } else {
        axum::Json(json!({"status": "ok"})).into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let text = state.metrics.render(&state.control.stats(), &state.control.engine_snapshot(), &state.control.all_media_stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn stats(State(state): State<ApiState>) -> axum::Json<WorkerStats> {
    axum::Json(state.control.stats())
}

// ---------------------------------------------------------------------------------------------
// Rooms and peers
// ---------------------------------------------------------------------------------------------

type ApiResult = Result<Response, ApiError>;

fn created<T: serde::Serialize>(body: T) -> ApiResult {
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

fn ok<T: serde::Serialize>(body: T) -> ApiResult {
    Ok(axum::Json(body).into_response())
}

fn done() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn ensure_room(
    State(state): State<ApiState>,
    PathArgs(room): PathArgs<RoomId>,
    JsonBody(body): JsonBody<EnsureRoomRequest>,
) -> ApiResult {
    let empty_timeout = body.empty_timeout_seconds.map(std::time::Duration::from_secs);
    let rtp_capabilities = state.control.ensure_room_with(&room, &body.media_codecs, empty_timeout)?;
    ok(RoomCapabilities { rtp_capabilities })
}

async fn room_info(State(state): State<ApiState>, PathArgs(room): PathArgs<RoomId>) -> ApiResult {
    ok(state.control.room_info(&room)?)
}

async fn close_room(State(state): State<ApiState>, PathArgs(room): PathArgs<RoomId>) -> ApiResult {
    state.control.close_room(&room)?;
    done()
}

// ---------------------------------------------------------------------------------------------
// Recordings
// ---------------------------------------------------------------------------------------------

async fn start_recording(
    State(state): State<ApiState>,
    PathArgs(room): PathArgs<RoomId>,
    JsonBody(body): JsonBody<StartRecordingRequest>,
) -> ApiResult {
    match state.control.start_recording(&room, &body.recording_id)? {
        (recording, true) => created(recording),
        (recording, false) => ok(recording),
    }
}

async fn recording(State(state): State<ApiState>, PathArgs((room, id)): PathArgs<(RoomId, String)>) -> ApiResult {
    ok(state.control.recording(&room, &id)?)
}

async fn stop_recording(State(state): State<ApiState>, PathArgs((room, id)): PathArgs<(RoomId, String)>) -> ApiResult {
    match state.control.stop_recording(&room, &id)? {
        StopAnswer::Done(recording) => ok(recording),
        // Finalising is the recorder thread's: a file's cues are written in milliseconds,
        // but a slow disk must not hold the request past its timeout.
        StopAnswer::Pending(answer, current) => match tokio::time::timeout(STOP_TIMEOUT.min(state.limits.request_timeout / 2), answer).await {
            Ok(Ok(recording)) => ok(recording),
            _ => ok(state.control.recording(&room, &id).unwrap_or(current)),
        },
    }
}

async fn join(
    State(state): State<ApiState>,
    PathArgs(room): PathArgs<RoomId>,
    JsonBody(body): JsonBody<JoinRequest>,
) -> ApiResult {
    let (peer, info) = body.into_parts();
    created(state.control.join(&room, &peer, info)?)
}

async fn leave(
    State(state): State<ApiState>,
    PathArgs((room, peer)): PathArgs<(RoomId, PeerId)>,
) -> ApiResult {
    state.control.leave(&room, &peer)?;
    done()
}

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

async fn create_transport(
    State(state): State<ApiState>,
    PathArgs(room): PathArgs<RoomId>,
    JsonBody(body): JsonBody<CreateTransportRequest>,
) -> ApiResult {
    created(
        state
            .control
            .create_transport_with_sctp(&room, &body.peer_id, body.direction, &body.protocols, SctpCapabilities::requested(body.sctp_capabilities, body.enable_sctp).as_ref())?,
    )
}

async fn connect_transport(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, TransportId)>,
    JsonBody(body): JsonBody<ConnectTransportRequest>,
) -> ApiResult {
    state
        .control
        .connect_transport(&room, &id, &body.dtls_parameters)?;
    done()
}

async fn restart_ice(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, TransportId)>,
) -> ApiResult {
    let ice_parameters = state.control.restart_ice(&room, &id)?;
    ok(RestartIceResponse { ice_parameters })
}

async fn close_transport(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, TransportId)>,
) -> ApiResult {
    state.control.close_transport(&room, &id)?;
    done()
}

// ---------------------------------------------------------------------------------------------
// Producers and consumers
// ---------------------------------------------------------------------------------------------

async fn produce(
    State(state): State<ApiState>,
    PathArgs(room): PathArgs<RoomId>,
    JsonBody(body): JsonBody<ProduceRequest>,
) -> ApiResult {
    let (peer, options) = body.into_parts();
    created(state.control.produce(&room, &peer, options)?)
}

async fn pause_producer(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, ProducerId)>,
) -> ApiResult {
    state.control.pause_producer(&room, &id)?;
    done()
}

async fn resume_producer(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, ProducerId)>,
) -> ApiResult {
    state.control.resume_producer(&room, &id)?;
    done()
}

async fn close_producer(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, ProducerId)>,
) -> ApiResult {
    state.control.close_producer(&room, &id)?;
    done()
}

async fn consume(
    State(state): State<ApiState>,
    PathArgs(room): PathArgs<RoomId>,
    JsonBody(body): JsonBody<ConsumeRequest>,
) -> ApiResult {
    let (peer, options) = body.into_parts();
    created(state.control.consume(&room, &peer, options)?)
}

async fn pause_consumer(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, ConsumerId)>,
) -> ApiResult {
    state.control.pause_consumer(&room, &id)?;
    done()
}

async fn resume_consumer(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, ConsumerId)>,
) -> ApiResult {
    state.control.resume_consumer(&room, &id)?;
    done()
}

async fn set_consumer_preferred_layers(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, ConsumerId)>,
    JsonBody(body): JsonBody<SetPreferredLayersRequest>,
) -> ApiResult {
    let preferred_layers = state.control.set_consumer_preferred_layers(&room, &id, body.spatial_layer, body.temporal_layer)?;
    ok(PreferredLayersResponse { preferred_layers })
}

async fn set_consumer_priority(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, ConsumerId)>,
    JsonBody(body): JsonBody<ConsumerPriority>,
) -> ApiResult {
    let priority = state.control.set_consumer_priority(&room, &id, body.priority)?;
    ok(ConsumerPriority { priority: u32::from(priority) })
}

async fn consumer_stats(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, ConsumerId)>,
) -> ApiResult {
    ok(state.control.consumer_stats(&room, &id)?)
}

async fn producer_stats(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, ProducerId)>,
) -> ApiResult {
    ok(state.control.producer_stats(&room, &id)?)
}

async fn produce_data(
    State(state): State<ApiState>,
    PathArgs(room): PathArgs<RoomId>,
    JsonBody(body): JsonBody<ProduceDataRequest>,
) -> ApiResult {
    created(state.control.produce_data(&room, &body.peer_id, body.options)?)
}

async fn close_data_producer(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, DataProducerId)>,
) -> ApiResult {
    state.control.close_data_producer(&room, &id)?;
    done()
}

async fn consume_data(
    State(state): State<ApiState>,
    PathArgs(room): PathArgs<RoomId>,
    JsonBody(body): JsonBody<ConsumeDataRequest>,
) -> ApiResult {
    created(state.control.consume_data(&room, &body.peer_id, body.options)?)
}

async fn close_data_consumer(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, DataConsumerId)>,
) -> ApiResult {
    state.control.close_data_consumer(&room, &id)?;
    done()
}

async fn close_consumer(
    State(state): State<ApiState>,
    PathArgs((room, id)): PathArgs<(RoomId, ConsumerId)>,
) -> ApiResult {
    state.control.close_consumer(&room, &id)?;
    done()
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

async fn room_events(
    State(state): State<ApiState>,
    PathArgs(room): PathArgs<RoomId>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribed before the response starts: every event after this request is delivered.
    let receiver = state.control.subscribe(&room)?;
    let stream = futures::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Ok(event) => Some((Ok(sse_event(&event)), Some(receiver))),
            Err(RecvError::Lagged(missed)) => {
                let lagged = Event::default()
                    .event("lagged")
                    .data(json!({ "missed": missed }).to_string());
                Some((Ok(lagged), None))
            }
            Err(RecvError::Closed) => None,
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn sse_event(event: &RoomEvent) -> Event {
    let value = serde_json::to_value(event).unwrap_or_default();
    let kind = value
        .get("type")
        .and_then(|kind| kind.as_str())
        .unwrap_or("message")
        .to_owned();
    Event::default().event(kind).data(value.to_string())
}
