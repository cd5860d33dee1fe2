//! A typed client for the worker's REST API.
//!
//! One [`WorkerClient`] holds a pooled keep-alive connection set and can talk to any worker:
//! callers name the worker's base URL per call, because rooms live on different workers.
//!
//! Every id in a path (room, peer, transport, producer, consumer) is checked with the
//! worker's own rule ([`check_id`]) before a request is made, and an invalid one is answered
//! here as the worker would answer it: 400 `INVALID_ID` ([`ClientError::Api`]). That matters
//! most for `.` and `..`: a URL parser resolves them (percent-encoded too, `%2E%2E`, as the
//! WHATWG URL standard says) into another path, so `/v1/rooms/../peers` would reach the
//! worker as `/v1/peers` and come back as an unrelated "no such route". Valid ids need no
//! encoding; segments are still percent-encoded, so nothing else can change the path.

use std::collections::VecDeque;
use std::time::Duration;

use futures::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{Recording, StartRecordingRequest,
    ConsumeDataRequest, ProduceDataRequest,
    ConnectTransportRequest, ConsumeRequest, ConsumerPriority, ConsumerStats, CreateTransportRequest,
    EnsureRoomRequest, ErrorResponse, JoinRequest, PreferredLayersResponse, ProduceRequest, ProducerStats,
    RestartIceResponse, RoomCapabilities, RoomInfo, SetPreferredLayersRequest, WorkerStats,
};
use crate::room::{
    DataConsumerCreated, DataConsumerId, DataProducerCreated, DataProducerId, SctpCapabilities,
    ConsumerCreated, ConsumerId, Direction, DtlsParameters, IceParameters, JoinResponse, PeerId,
    ProducerCreated, ProducerId, RoomEvent, TransportCreated, TransportId, TransportProtocols,
    check_id,
};
use crate::rtp::{RtpCapabilities, RtpCodecCapability};

/// How long an event stream may stay silent before the client gives up on it. The worker
/// sends a keep-alive comment every 15 s, so silence this long means a dead worker or network.
pub const EVENT_STREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call to a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The worker could not be reached (connection refused, timeout, DNS): it may be down.
    #[error("worker at {endpoint} is unavailable: {reason}")]
    Unavailable { endpoint: String, reason: String },
    /// The worker answered with an error response.
    #[error("worker refused the request ({status} {code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The worker answered something that is not the API's JSON.
    #[error("worker at {endpoint} sent an unreadable response: {reason}")]
    Protocol { endpoint: String, reason: String },
    /// An event stream fell too far behind and the worker ended it; read the room afresh
    /// ([`WorkerClient::room_info`]) and subscribe again.
    #[error(
        "the room's event stream fell behind and was ended by the worker, missing the events of {missed} requests"
    )]
    EventsLagged { missed: u64 },
}

impl ClientError {
    /// True when the worker answered that the named object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }

    /// True when the request conflicts with the object's state (a second `connect`, a peer
    /// id that already joined).
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Api { status: 409, .. })
    }

    /// True when this worker cannot serve the request now but another might: unreachable,
    /// or answering 503 (shutting down, out of ports).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { .. } | ClientError::Api { status: 503, .. }
        )
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code (`ROOM_NOT_FOUND`, ...) of an error answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Typed access to workers' `/v1` API, authenticated with the shared bearer token.
#[derive(Clone)]
pub struct WorkerClient {
    http: reqwest::Client,
    /// For event streams, which last as long as the room: no overall timeout, only a read one.
    streams: reqwest::Client,
    token: Option<String>,
}

impl WorkerClient {
    /// `token` is the bearer token shared by workers, signalling and the operator; `timeout`
    /// bounds each request (event streams excepted, see [`EVENT_STREAM_READ_TIMEOUT`]).
    pub fn new(token: Option<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Below the worker's keep-alive limit (its header-read timeout, 10 s by default),
            // so the client drops an idle connection before the worker closes it under a
            // request just being sent.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            // Only a broken TLS backend makes this fail, and this client is built without TLS.
            .expect("reqwest client without TLS always builds");
        let streams = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(EVENT_STREAM_READ_TIMEOUT)
            .build()
            .expect("reqwest client without TLS always builds");
        WorkerClient {
            http,
            streams,
            token,
        }
    }

    /// `GET /healthz`: `Ok` when the worker is up and not shutting down.
    pub async fn healthz(&self, endpoint: &str) -> Result<(), ClientError> {
        let request = self.http.get(url(endpoint, "/healthz"));
        self.send(endpoint, request).await.map(drop)
    }

    /// `GET /v1/stats`.
    pub async fn stats(&self, endpoint: &str) -> Result<WorkerStats, ClientError> {
        let request = self.http.get(url(endpoint, "/v1/stats"));
        self.call(endpoint, request).await
    }

    /// `PUT /v1/rooms/{room}`: opens the room (idempotent) with these media codecs, empty for
    /// the worker's defaults, and returns its router capabilities.
    pub async fn ensure_room(
        &self,
        endpoint: &str,
        room: &str,
        media_codecs: &[RtpCodecCapability],
    ) -> Result<RtpCapabilities, ClientError> {
        self.ensure_room_with(endpoint, room, media_codecs, None).await
    }

    /// [`WorkerClient::ensure_room`] with the room's own empty timeout
    /// (`emptyTimeoutSeconds`: how long it stays open without peers; the Room object's
    /// `spec.emptyTimeoutSeconds` in Kubernetes mode). `None` leaves the worker's default.
    pub async fn ensure_room_with(
        &self,
        endpoint: &str,
        room: &str,
        media_codecs: &[RtpCodecCapability],
        empty_timeout: Option<Duration>,
    ) -> Result<RtpCapabilities, ClientError> {
        let body = EnsureRoomRequest {
            media_codecs: media_codecs.to_vec(),
            empty_timeout_seconds: empty_timeout.map(|timeout| timeout.as_secs()),
        };
        let request = self.http.put(room_url(endpoint, room, "")?).json(&body);
        let answer: RoomCapabilities = self.call(endpoint, request).await?;
        Ok(answer.rtp_capabilities)
    }

    /// `GET /v1/rooms/{room}`: everything open in the room.
    pub async fn room_info(&self, endpoint: &str, room: &str) -> Result<RoomInfo, ClientError> {
        let request = self.http.get(room_url(endpoint, room, "")?);
        self.call(endpoint, request).await
    }

    /// `DELETE /v1/rooms/{room}`: closes the room's router, and with it every peer's
    /// transports, producers and consumers. A room the worker does not know is not an error,
    /// nor is an id that cannot name a room (no worker can hold it; the operator's finalizer
    /// of a Room object whose name is no room id must still complete).
    pub async fn close_room(&self, endpoint: &str, room: &str) -> Result<(), ClientError> {
        if check_id("room", room).is_err() {
            return Ok(());
        }
        let request = self.http.delete(room_url(endpoint, room, "")?);
        match self.send(endpoint, request).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/rooms/{room}/peers`: joins (the worker opens the room with default codecs
    /// if needed).
    pub async fn join(
        &self,
        endpoint: &str,
        room: &str,
        join: &JoinRequest,
    ) -> Result<JoinResponse, ClientError> {
        self.post(endpoint, room_url(endpoint, room, "/peers")?, join)
            .await
    }

    /// `DELETE /v1/rooms/{room}/peers/{peer}`: closes the peer's transports, producers and
    /// consumers.
    pub async fn leave(
        &self,
        endpoint: &str,
        room: &str,
        peer: &PeerId,
    ) -> Result<(), ClientError> {
        let path = format!("/peers/{}", segment("peer", peer.as_str())?);
        self.delete(endpoint, room_url(endpoint, room, &path)?)
            .await
    }

    /// `POST /v1/rooms/{room}/transports`.
    pub async fn create_transport(
        &self,
        endpoint: &str,
        room: &str,
        peer: &PeerId,
        direction: Direction,
    ) -> Result<TransportCreated, ClientError> {
        self.create_transport_over(endpoint, room, peer, direction, &TransportProtocols::default())
            .await
    }

    /// `POST /v1/rooms/{room}/transports` with `enableUdp`/`enableTcp`/`preferUdp`/`preferTcp`.
    pub async fn create_transport_over(
        &self,
        endpoint: &str,
        room: &str,
        peer: &PeerId,
        direction: Direction,
        protocols: &TransportProtocols,
    ) -> Result<TransportCreated, ClientError> {
        self.create_transport_with_sctp(endpoint, room, peer, direction, protocols, None).await
    }

    /// `POST /v1/rooms/{room}/transports`, with SCTP for data channels when `sctp` is given.
    pub async fn create_transport_with_sctp(
        &self,
        endpoint: &str,
        room: &str,
        peer: &PeerId,
        direction: Direction,
        protocols: &TransportProtocols,
        sctp: Option<&SctpCapabilities>,
    ) -> Result<TransportCreated, ClientError> {
        let body = CreateTransportRequest {
            peer_id: peer.clone(),
            direction,
            protocols: *protocols,
            sctp_capabilities: sctp.copied(),
            enable_sctp: false,
        };
        self.post(endpoint, room_url(endpoint, room, "/transports")?, &body)
            .await
    }

    /// `POST /v1/rooms/{room}/data-producers`.
    pub async fn produce_data(
        &self,
        endpoint: &str,
        room: &str,
        produce: &ProduceDataRequest,
    ) -> Result<DataProducerCreated, ClientError> {
        self.post(endpoint, room_url(endpoint, room, "/data-producers")?, produce).await
    }

    /// `POST /v1/rooms/{room}/data-consumers`.
    pub async fn consume_data(
        &self,
        endpoint: &str,
        room: &str,
        consume: &ConsumeDataRequest,
    ) -> Result<DataConsumerCreated, ClientError> {
        self.post(endpoint, room_url(endpoint, room, "/data-consumers")?, consume).await
    }

    /// `DELETE .../data-producers/{id}`.
    pub async fn close_data_producer(&self, endpoint: &str, room: &str, id: &DataProducerId) -> Result<(), ClientError> {
        let path = format!("/data-producers/{}", segment("data producer", id.as_str())?);
        self.delete(endpoint, room_url(endpoint, room, &path)?).await
    }

    /// `DELETE .../data-consumers/{id}`.
    pub async fn close_data_consumer(&self, endpoint: &str, room: &str, id: &DataConsumerId) -> Result<(), ClientError> {
        let path = format!("/data-consumers/{}", segment("data consumer", id.as_str())?);
        self.delete(endpoint, room_url(endpoint, room, &path)?).await
    }

    /// `POST .../transports/{id}/connect` with the client transport's DTLS parameters.
    pub async fn connect_transport(
        &self,
        endpoint: &str,
        room: &str,
        transport: &TransportId,
        dtls_parameters: &DtlsParameters,
    ) -> Result<(), ClientError> {
        let path = format!(
            "/transports/{}/connect",
            segment("transport", transport.as_str())?
        );
        let body = ConnectTransportRequest {
            dtls_parameters: dtls_parameters.clone(),
        };
        let request = self.http.post(room_url(endpoint, room, &path)?).json(&body);
        self.send(endpoint, request).await.map(drop)
    }

    /// `POST .../transports/{id}/restart-ice`: the new ICE parameters.
    pub async fn restart_ice(
        &self,
        endpoint: &str,
        room: &str,
        transport: &TransportId,
    ) -> Result<IceParameters, ClientError> {
        let path = format!(
            "/transports/{}/restart-ice",
            segment("transport", transport.as_str())?
        );
        let request = self.http.post(room_url(endpoint, room, &path)?);
        let answer: RestartIceResponse = self.call(endpoint, request).await?;
        Ok(answer.ice_parameters)
    }

    /// `DELETE .../transports/{id}`.
    pub async fn close_transport(
        &self,
        endpoint: &str,
        room: &str,
        transport: &TransportId,
    ) -> Result<(), ClientError> {
        let path = format!("/transports/{}", segment("transport", transport.as_str())?);
        self.delete(endpoint, room_url(endpoint, room, &path)?)
            .await
    }

    /// `POST /v1/rooms/{room}/producers`.
    pub async fn produce(
        &self,
        endpoint: &str,
        room: &str,
        produce: &ProduceRequest,
    ) -> Result<ProducerCreated, ClientError> {
        self.post(endpoint, room_url(endpoint, room, "/producers")?, produce)
            .await
    }

    /// `POST .../producers/{id}/pause`.
    pub async fn pause_producer(
        &self,
        endpoint: &str,
        room: &str,
        producer: &ProducerId,
    ) -> Result<(), ClientError> {
        self.action(endpoint, room, "producers", producer.as_str(), "/pause")
            .await
    }

    /// `POST .../producers/{id}/resume`.
    pub async fn resume_producer(
        &self,
        endpoint: &str,
        room: &str,
        producer: &ProducerId,
    ) -> Result<(), ClientError> {
        self.action(endpoint, room, "producers", producer.as_str(), "/resume")
            .await
    }

    /// `DELETE .../producers/{id}`: closes its consumers too.
    pub async fn close_producer(
        &self,
        endpoint: &str,
        room: &str,
        producer: &ProducerId,
    ) -> Result<(), ClientError> {
        let path = format!("/producers/{}", segment("producer", producer.as_str())?);
        self.delete(endpoint, room_url(endpoint, room, &path)?)
            .await
    }

    /// `POST /v1/rooms/{room}/consumers`.
    pub async fn consume(
        &self,
        endpoint: &str,
        room: &str,
        consume: &ConsumeRequest,
    ) -> Result<ConsumerCreated, ClientError> {
        self.post(endpoint, room_url(endpoint, room, "/consumers")?, consume)
            .await
    }

    /// `POST .../consumers/{id}/pause`.
    pub async fn pause_consumer(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
    ) -> Result<(), ClientError> {
        self.action(endpoint, room, "consumers", consumer.as_str(), "/pause")
            .await
    }

    /// `POST .../consumers/{id}/resume`.
    pub async fn resume_consumer(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
    ) -> Result<(), ClientError> {
        self.action(endpoint, room, "consumers", consumer.as_str(), "/resume")
            .await
    }

    /// `POST .../consumers/{id}/preferred-layers`: the layers as the worker kept them.
    pub async fn set_consumer_preferred_layers(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
        request: &SetPreferredLayersRequest,
    ) -> Result<PreferredLayersResponse, ClientError> {
        let path = format!("/consumers/{}/preferred-layers", segment("consumer", consumer.as_str())?);
        self.post(endpoint, room_url(endpoint, room, &path)?, request).await
    }

    /// `POST .../consumers/{id}/priority`: the priority as kept.
    pub async fn set_consumer_priority(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
        priority: u32,
    ) -> Result<ConsumerPriority, ClientError> {
        let path = format!("/consumers/{}/priority", segment("consumer", consumer.as_str())?);
        self.post(endpoint, room_url(endpoint, room, &path)?, &ConsumerPriority { priority }).await
    }

    /// `POST /v1/rooms/{room}/recordings`: starts recording the room's producers as `id`
    /// (idempotent: an existing id answers its current status).
    pub async fn start_recording(&self, endpoint: &str, room: &str, id: &str) -> Result<Recording, ClientError> {
        let body = StartRecordingRequest { recording_id: id.to_owned() };
        self.post(endpoint, room_url(endpoint, room, "/recordings")?, &body).await
    }

    /// `GET /v1/rooms/{room}/recordings/{id}`.
    pub async fn recording(&self, endpoint: &str, room: &str, id: &str) -> Result<Recording, ClientError> {
        // Checked, not only encoded: `..` would be resolved by the URL parser into another route.
        let path = format!("/recordings/{}", segment("recording", id)?);
        let request = self.http.get(room_url(endpoint, room, &path)?);
        self.call(endpoint, request).await
    }

    /// `DELETE /v1/rooms/{room}/recordings/{id}`: stops it; the answer is its final status,
    /// files finalised.
    pub async fn stop_recording(&self, endpoint: &str, room: &str, id: &str) -> Result<Recording, ClientError> {
        // Checked, not only encoded: `..` would be resolved by the URL parser into another route.
        let path = format!("/recordings/{}", segment("recording", id)?);
        let request = self.http.delete(room_url(endpoint, room, &path)?);
        self.call(endpoint, request).await
    }

    /// `GET .../producers/{id}/stats`.
    pub async fn producer_stats(&self, endpoint: &str, room: &str, producer: &ProducerId) -> Result<ProducerStats, ClientError> {
        let path = format!("/producers/{}/stats", segment("producer", producer.as_str())?);
        let request = self.http.get(room_url(endpoint, room, &path)?);
        self.call(endpoint, request).await
    }

    /// `GET .../consumers/{id}/stats`.
    pub async fn consumer_stats(&self, endpoint: &str, room: &str, consumer: &ConsumerId) -> Result<ConsumerStats, ClientError> {
        let path = format!("/consumers/{}/stats", segment("consumer", consumer.as_str())?);
        let request = self.http.get(room_url(endpoint, room, &path)?);
        self.call(endpoint, request).await
    }

    /// `DELETE .../consumers/{id}`.
    pub async fn close_consumer(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
    ) -> Result<(), ClientError> {
        let path = format!("/consumers/{}", segment("consumer", consumer.as_str())?);
        self.delete(endpoint, room_url(endpoint, room, &path)?)
            .await
    }

    /// `GET /v1/rooms/{room}/events`: the room's events from now on.
    ///
    /// Returns once the worker has accepted the subscription (an unknown room is an error
    /// here), so every event of a request made after this returns is in the stream. The
    /// stream ends after `roomClosed`, or with an error: [`ClientError::EventsLagged`] when
    /// the worker cut a subscriber that fell behind, [`ClientError::Unavailable`] when the
    /// connection broke or stayed silent past [`EVENT_STREAM_READ_TIMEOUT`]. An event this
    /// client cannot read (from a newer worker) is a [`ClientError::Protocol`] item and the
    /// stream goes on.
    pub async fn events(
        &self,
        endpoint: &str,
        room: &str,
    ) -> Result<impl Stream<Item = Result<RoomEvent, ClientError>> + Send + 'static, ClientError>
    {
        let request = self
            .streams
            .get(room_url(endpoint, room, "/events")?)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = self.send(endpoint, request).await?;
        let state = EventStream {
            response: Some(response),
            parser: SseParser::default(),
            pending: VecDeque::new(),
            endpoint: endpoint.to_owned(),
        };
        Ok(futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(item) = state.pending.pop_front() {
                    return Some((item, state));
                }
                let response = state.response.as_mut()?;
                match response.chunk().await {
                    Ok(Some(bytes)) => {
                        for message in state.parser.push(&bytes) {
                            state
                                .pending
                                .push_back(decode_event(&state.endpoint, message));
                        }
                    }
                    Ok(None) => return None,
                    Err(error) => {
                        state.response = None;
                        let broken = ClientError::Unavailable {
                            endpoint: state.endpoint.clone(),
                            reason: format!("the event stream broke: {error}"),
                        };
                        return Some((Err(broken), state));
                    }
                }
            }
        }))
    }

    /// `POST` with a JSON body and a JSON answer.
    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        endpoint: &str,
        url: String,
        body: &B,
    ) -> Result<T, ClientError> {
        let request = self.http.post(url).json(body);
        self.call(endpoint, request).await
    }

    /// `DELETE` without an answer body.
    async fn delete(&self, endpoint: &str, url: String) -> Result<(), ClientError> {
        let request = self.http.delete(url);
        self.send(endpoint, request).await.map(drop)
    }

    /// `POST .../{collection}/{id}{verb}` without a body either way (pause, resume).
    async fn action(
        &self,
        endpoint: &str,
        room: &str,
        collection: &str,
        id: &str,
        verb: &str,
    ) -> Result<(), ClientError> {
        let kind = collection.trim_end_matches('s');
        let path = format!("/{collection}/{}{verb}", segment(kind, id)?);
        let request = self.http.post(room_url(endpoint, room, &path)?);
        self.send(endpoint, request).await.map(drop)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(endpoint, request).await?;
        response.json().await.map_err(|e| ClientError::Protocol {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })
    }

    async fn send(
        &self,
        endpoint: &str,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| ClientError::Unavailable {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(ErrorResponse { error }) => ClientError::Api {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: "HTTP_ERROR".into(),
                message: String::from_utf8_lossy(&body).chars().take(200).collect(),
            },
        })
    }
}

struct EventStream {
    /// `None` once the stream broke.
    response: Option<reqwest::Response>,
    parser: SseParser,
    pending: VecDeque<Result<RoomEvent, ClientError>>,
    endpoint: String,
}

fn decode_event(endpoint: &str, message: SseMessage) -> Result<RoomEvent, ClientError> {
    if message.event == "lagged" {
        let missed = serde_json::from_str::<serde_json::Value>(&message.data)
            .ok()
            .and_then(|value| value.get("missed").and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        return Err(ClientError::EventsLagged { missed });
    }
    serde_json::from_str(&message.data).map_err(|error| ClientError::Protocol {
        endpoint: endpoint.to_owned(),
        reason: format!("unreadable {:?} event: {error}", message.event),
    })
}

/// One Server-Sent Events message: its `event:` type (`message` when absent) and its `data:`
/// lines joined with newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseMessage {
    event: String,
    data: String,
}

/// An incremental `text/event-stream` reader (the WHATWG rules this API needs: `event` and
/// `data` fields, comments, LF or CRLF line ends; `id` and `retry` are ignored). Chunks may
/// split lines, and even characters, anywhere.
#[derive(Debug, Default)]
struct SseParser {
    /// Bytes of the line not yet complete.
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds a chunk; returns the messages it completed.
    fn push(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        let mut messages = Vec::new();
        for &byte in chunk {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    messages.push(SseMessage {
                        event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                        data,
                    });
                }
                self.event = None;
            } else if line.starts_with(':') {
                // A comment: the worker's keep-alive.
            } else {
                let (field, value) = line.split_once(':').unwrap_or((&line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => self.event = Some(value.to_owned()),
                    "data" => match &mut self.data {
                        Some(data) => {
                            data.push('\n');
                            data.push_str(value);
                        }
                        None => self.data = Some(value.to_owned()),
                    },
                    _ => {}
                }
            }
        }
        messages
    }
}

fn url(endpoint: &str, path: &str) -> String {
    format!("{}{}", endpoint.trim_end_matches('/'), path)
}

/// `{endpoint}/v1/rooms/{room}{rest}`, the room id checked and encoded.
fn room_url(endpoint: &str, room: &str, rest: &str) -> Result<String, ClientError> {
    Ok(url(
        endpoint,
        &format!("/v1/rooms/{}{rest}", segment("room", room)?),
    ))
}

/// An id as one path segment: checked as the worker checks it, then encoded.
fn segment(kind: &str, id: &str) -> Result<String, ClientError> {
    check_id(kind, id).map_err(|message| ClientError::Api {
        status: 400,
        code: "INVALID_ID".to_owned(),
        message,
    })?;
    Ok(encode_segment(id))
}

/// Percent-encodes a path segment; a valid id comes out unchanged. Encoding the dots of `.`
/// and `..` would not help (URL parsers read `%2E%2E` as `..` too): [`segment`] refuses them.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_encoded_as_one_path_segment() {
        assert_eq!(encode_segment("maths-101"), "maths-101");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn ids_the_worker_would_refuse_are_refused_before_any_request() {
        for (kind, bad) in [
            ("room", ".."),
            ("room", "."),
            ("room", "a/b"),
            ("peer", ""),
            ("transport", "../connect"),
        ] {
            let error = segment(kind, bad).expect_err(bad);
            assert_eq!(
                (error.status(), error.code()),
                (Some(400), Some("INVALID_ID")),
                "{bad:?}"
            );
            assert!(
                error.to_string().contains(&format!("the {kind} id")),
                "{error}"
            );
        }
        assert!(room_url("http://w", "..", "/peers").is_err());
        assert_eq!(
            room_url("http://w", "a-b", "/peers").unwrap(),
            "http://w/v1/rooms/a-b/peers"
        );
        assert_eq!(segment("transport", "a.b").unwrap(), "a.b");
    }

    #[tokio::test]
    async fn a_dot_segment_fails_with_invalid_id_and_never_reaches_a_worker() {
        // Nothing listens there: a request would be Unavailable, not INVALID_ID.
        let client = WorkerClient::new(None, Duration::from_secs(1));
        let error = client
            .join("http://127.0.0.1:9", "..", &JoinRequest::new("p"))
            .await
            .expect_err("refused");
        assert_eq!(error.code(), Some("INVALID_ID"), "{error}");
        let error = client
            .close_transport("http://127.0.0.1:9", "r", &TransportId::from(".."))
            .await
            .expect_err("refused");
        assert_eq!(error.code(), Some("INVALID_ID"), "{error}");
        for id in ["..", "."] {
            let error = client.recording("http://127.0.0.1:9", "r", id).await.expect_err("refused");
            assert_eq!(error.code(), Some("INVALID_ID"), "{error}");
            let error = client.stop_recording("http://127.0.0.1:9", "r", id).await.expect_err("refused");
            assert_eq!(error.code(), Some("INVALID_ID"), "{error}");
        }
        // No worker can hold a room by that name: closing it is done, without a request.
        client
            .close_room("http://127.0.0.1:9", "maths.101")
            .await
            .expect("nothing to close");
    }

    #[test]
    fn endpoint_trailing_slash_does_not_double() {
        assert_eq!(
            url("http://10.0.0.1:3000/", "/v1/stats"),
            "http://10.0.0.1:3000/v1/stats"
        );
    }

    #[test]
    fn room_urls_encode_the_room_and_keep_the_rest() {
        assert_eq!(
            room_url("http://w:3000", "a-b", "/producers/p-1/pause").unwrap(),
            "http://w:3000/v1/rooms/a-b/producers/p-1/pause"
        );
    }

    fn message(event: &str, data: &str) -> SseMessage {
        SseMessage {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn sse_messages_split_across_chunks_are_reassembled() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: peerJo").is_empty());
        assert!(parser.push(b"ined\ndata: {\"a\"").is_empty());
        assert_eq!(
            parser.push(b":1}\n\nevent: x\n"),
            vec![message("peerJoined", "{\"a\":1}")]
        );
        assert_eq!(parser.push(b"data: 2\n\n"), vec![message("x", "2")]);
    }

    #[test]
    fn sse_comments_are_skipped_and_crlf_is_accepted() {
        let mut parser = SseParser::default();
        assert_eq!(
            parser.push(b": keep-alive\r\n\r\ndata:1\r\ndata: 2\r\n\r\n"),
            vec![message("message", "1\n2")]
        );
    }

    #[test]
    fn sse_split_multibyte_characters_survive() {
        let mut parser = SseParser::default();
        let text = "data: \"é\"\n\n".as_bytes();
        let (first, second) = text.split_at(8);
        assert!(parser.push(first).is_empty());
        assert_eq!(parser.push(second), vec![message("message", "\"é\"")]);
    }

    #[test]
    fn a_lagged_message_becomes_the_lagged_error() {
        let error =
            decode_event("http://w", message("lagged", "{\"missed\": 7}")).expect_err("lagged");
        assert!(matches!(error, ClientError::EventsLagged { missed: 7 }));
    }

    #[test]
    fn unavailable_covers_unreachable_workers_and_503_answers() {
        let unreachable = ClientError::Unavailable {
            endpoint: "http://w".into(),
            reason: "refused".into(),
        };
        let no_ports = ClientError::Api {
            status: 503,
            code: "PORTS_EXHAUSTED".into(),
            message: String::new(),
        };
        let not_found = ClientError::Api {
            status: 404,
            code: "ROOM_NOT_FOUND".into(),
            message: String::new(),
        };
        assert!(unreachable.is_unavailable());
        assert!(no_ports.is_unavailable());
        assert!(!not_found.is_unavailable());
        assert_eq!(not_found.code(), Some("ROOM_NOT_FOUND"));
        assert_eq!(no_ports.status(), Some(503));
    }
}
