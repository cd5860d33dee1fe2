//! The calls signalling makes to media workers, behind a trait so handlers can be tested with
//! a fake ([`MediaBackend`]), and its two implementations: over the worker crate's typed REST
//! client ([`WorkerBackend`]), and direct calls to a worker in this process
//! ([`InProcessBackend`], embedded mode).
//!
//! Every call names the worker (`endpoint`, from the [`Placement`](crate::placement::Placement))
//! because rooms live on different workers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fanout_worker::api::{
    ConsumeDataRequest, ConsumeRequest, JoinRequest, ProduceDataRequest, ProduceRequest, RoomInfo, SetPreferredLayersRequest,
};
use fanout_worker::video::Layers;
use fanout_worker::client::{ClientError, WorkerClient};
use fanout_worker::control::{ControlError, ControlPlane};
use fanout_worker::room::{
    DataConsumerCreated, DataConsumerId, DataProducerCreated, DataProducerId, SctpCapabilities,
    ConsumerCreated, ConsumerId, Direction, DtlsParameters, IceParameters, JoinResponse, PeerId,
    ProducerCreated, ProducerId, RoomEvent, RoomId, TransportCreated, TransportId,
    TransportProtocols,
};
use fanout_worker::rtp::RtpCapabilities;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::sync::broadcast::error::RecvError;

use crate::error::{Result, SignallingError};
use crate::placement::RoomSetup;

/// A room's event stream: ends after `roomClosed` or with an error (lagged, broken).
pub type RoomEvents = BoxStream<'static, Result<RoomEvent>>;

/// One method per worker call signalling needs (the worker REST API, `docs/worker-api.md`).
#[async_trait]
pub trait MediaBackend: Send + Sync + 'static {
    /// Opens the room as `setup` says if it is not open; its router capabilities.
    async fn ensure_room(&self, endpoint: &str, room: &str, setup: &RoomSetup) -> Result<RtpCapabilities>;
    /// Joins a peer; identity in `join` comes from the token.
    async fn join(&self, endpoint: &str, room: &str, join: &JoinRequest) -> Result<JoinResponse>;
    /// Removes a peer with its transports, producers and consumers.
    async fn leave(&self, endpoint: &str, room: &str, peer: &PeerId) -> Result<()>;
    /// A WebRTC transport for `peer`, on the protocols `protocols` asks for (the worker's
    /// defaults for what it leaves out).
    async fn create_transport(
        &self,
        endpoint: &str,
        room: &str,
        peer: &PeerId,
        direction: Direction,
        protocols: &TransportProtocols,
        sctp: Option<&SctpCapabilities>,
    ) -> Result<TransportCreated>;
    /// The client's DTLS parameters for a transport.
    async fn connect_transport(
        &self,
        endpoint: &str,
        room: &str,
        transport: &TransportId,
        dtls_parameters: &DtlsParameters,
    ) -> Result<()>;
    /// New ICE credentials for a transport.
    async fn restart_ice(
        &self,
        endpoint: &str,
        room: &str,
        transport: &TransportId,
    ) -> Result<IceParameters>;
    /// A producer on one of the peer's send transports.
    async fn produce(
        &self,
        endpoint: &str,
        room: &str,
        produce: &ProduceRequest,
    ) -> Result<ProducerCreated>;
    /// A consumer on one of the peer's recv transports.
    async fn consume(
        &self,
        endpoint: &str,
        room: &str,
        consume: &ConsumeRequest,
    ) -> Result<ConsumerCreated>;
    /// Pauses a producer.
    async fn pause_producer(&self, endpoint: &str, room: &str, producer: &ProducerId)
    -> Result<()>;
    /// Resumes a producer.
    async fn resume_producer(
        &self,
        endpoint: &str,
        room: &str,
        producer: &ProducerId,
    ) -> Result<()>;
    /// Closes a producer and its consumers.
    async fn close_producer(&self, endpoint: &str, room: &str, producer: &ProducerId)
    -> Result<()>;
    /// Pauses a consumer.
    async fn pause_consumer(&self, endpoint: &str, room: &str, consumer: &ConsumerId)
    -> Result<()>;
    /// Resumes a consumer.
    async fn resume_consumer(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
    ) -> Result<()>;
    /// Closes a consumer.
    async fn close_consumer(&self, endpoint: &str, room: &str, consumer: &ConsumerId)
    -> Result<()>;
    /// Sets the layers a consumer's app prefers; the layers as kept.
    async fn set_consumer_preferred_layers(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
        request: &SetPreferredLayersRequest,
    ) -> Result<Layers>;
    /// Sets a consumer's priority (1-255); the priority as kept.
    async fn set_consumer_priority(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
        priority: u32,
    ) -> Result<u32>;
    /// Everything open in the room.
    async fn room_info(&self, endpoint: &str, room: &str) -> Result<RoomInfo>;
    /// A data producer on one of the peer's send transports (with SCTP).
    async fn produce_data(&self, _endpoint: &str, _room: &str, _produce: &ProduceDataRequest) -> Result<DataProducerCreated> {
        Err(no_data_channels())
    }
    /// A data consumer on one of the peer's recv transports (with SCTP).
    async fn consume_data(&self, _endpoint: &str, _room: &str, _consume: &ConsumeDataRequest) -> Result<DataConsumerCreated> {
        Err(no_data_channels())
    }
    /// Closes a data producer and its data consumers.
    async fn close_data_producer(&self, _endpoint: &str, _room: &str, _id: &DataProducerId) -> Result<()> {
        Err(no_data_channels())
    }
    /// Closes a data consumer.
    async fn close_data_consumer(&self, _endpoint: &str, _room: &str, _id: &DataConsumerId) -> Result<()> {
        Err(no_data_channels())
    }
    /// The room's events from now on; returns once the worker accepted the subscription.
    async fn events(&self, endpoint: &str, room: &str) -> Result<RoomEvents>;
}

/// What a backend without data channels (a test fake) answers to their calls.
fn no_data_channels() -> SignallingError {
    SignallingError::Worker {
        code: "DATA_CHANNELS_UNSUPPORTED".to_owned(),
        message: "this media backend has no data channels".to_owned(),
    }
}

/// [`MediaBackend`] over HTTP: the worker crate's [`WorkerClient`] (pooled keep-alive
/// connections, per-request timeout, the shared bearer token).
#[derive(Clone)]
pub struct WorkerBackend {
    client: WorkerClient,
}

impl WorkerBackend {
    /// A backend authenticating with the workers' shared `token`, each call bounded by `timeout`.
    pub fn new(token: Option<String>, timeout: Duration) -> Self {
        WorkerBackend {
            client: WorkerClient::new(token, timeout),
        }
    }
}

/// Maps a client failure onto what the participant is told; the details go to the log.
pub fn worker_error(error: ClientError) -> SignallingError {
    if error.is_unavailable() {
        tracing::warn!(%error, "worker unavailable");
        return SignallingError::WorkerUnavailable;
    }
    match error {
        ClientError::Api { code, message, .. } => SignallingError::Worker { code, message },
        error => {
            tracing::error!(%error, "worker call failed");
            SignallingError::Internal
        }
    }
}

#[async_trait]
impl MediaBackend for WorkerBackend {
    async fn ensure_room(&self, endpoint: &str, room: &str, setup: &RoomSetup) -> Result<RtpCapabilities> {
        self.client
            .ensure_room_with(endpoint, room, &setup.media_codecs(), setup.empty_timeout)
            .await
            .map_err(worker_error)
    }

    async fn join(&self, endpoint: &str, room: &str, join: &JoinRequest) -> Result<JoinResponse> {
        self.client
            .join(endpoint, room, join)
            .await
            .map_err(worker_error)
    }

    async fn leave(&self, endpoint: &str, room: &str, peer: &PeerId) -> Result<()> {
        self.client
            .leave(endpoint, room, peer)
            .await
            .map_err(worker_error)
    }

    async fn create_transport(
        &self,
        endpoint: &str,
        room: &str,
        peer: &PeerId,
        direction: Direction,
        protocols: &TransportProtocols,
        sctp: Option<&SctpCapabilities>,
    ) -> Result<TransportCreated> {
        self.client
            .create_transport_with_sctp(endpoint, room, peer, direction, protocols, sctp)
            .await
            .map_err(worker_error)
    }

    async fn produce_data(&self, endpoint: &str, room: &str, produce: &ProduceDataRequest) -> Result<DataProducerCreated> {
        self.client.produce_data(endpoint, room, produce).await.map_err(worker_error)
    }

    async fn consume_data(&self, endpoint: &str, room: &str, consume: &ConsumeDataRequest) -> Result<DataConsumerCreated> {
        self.client.consume_data(endpoint, room, consume).await.map_err(worker_error)
    }

    async fn close_data_producer(&self, endpoint: &str, room: &str, id: &DataProducerId) -> Result<()> {
        self.client.close_data_producer(endpoint, room, id).await.map_err(worker_error)
    }

    async fn close_data_consumer(&self, endpoint: &str, room: &str, id: &DataConsumerId) -> Result<()> {
        self.client.close_data_consumer(endpoint, room, id).await.map_err(worker_error)
    }

    async fn connect_transport(
        &self,
        endpoint: &str,
        room: &str,
        transport: &TransportId,
        dtls_parameters: &DtlsParameters,
    ) -> Result<()> {
        self.client
            .connect_transport(endpoint, room, transport, dtls_parameters)
            .await
            .map_err(worker_error)
    }

    async fn restart_ice(
        &self,
        endpoint: &str,
        room: &str,
        transport: &TransportId,
    ) -> Result<IceParameters> {
        self.client
            .restart_ice(endpoint, room, transport)
            .await
            .map_err(worker_error)
    }

    async fn produce(
        &self,
        endpoint: &str,
        room: &str,
        produce: &ProduceRequest,
    ) -> Result<ProducerCreated> {
        self.client
            .produce(endpoint, room, produce)
            .await
            .map_err(worker_error)
    }

    async fn consume(
        &self,
        endpoint: &str,
        room: &str,
        consume: &ConsumeRequest,
    ) -> Result<ConsumerCreated> {
        self.client
            .consume(endpoint, room, consume)
            .await
            .map_err(worker_error)
    }

    async fn pause_producer(
        &self,
        endpoint: &str,
        room: &str,
        producer: &ProducerId,
    ) -> Result<()> {
        self.client
            .pause_producer(endpoint, room, producer)
            .await
            .map_err(worker_error)
    }

    async fn resume_producer(
        &self,
        endpoint: &str,
        room: &str,
        producer: &ProducerId,
    ) -> Result<()> {
        self.client
            .resume_producer(endpoint, room, producer)
            .await
            .map_err(worker_error)
    }

    async fn close_producer(
        &self,
        endpoint: &str,
        room: &str,
        producer: &ProducerId,
    ) -> Result<()> {
        self.client
            .close_producer(endpoint, room, producer)
            .await
            .map_err(worker_error)
    }

    async fn pause_consumer(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
    ) -> Result<()> {
        self.client
            .pause_consumer(endpoint, room, consumer)
            .await
            .map_err(worker_error)
    }

    async fn resume_consumer(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
    ) -> Result<()> {
        self.client
            .resume_consumer(endpoint, room, consumer)
            .await
            .map_err(worker_error)
    }

    async fn close_consumer(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
    ) -> Result<()> {
        self.client
            .close_consumer(endpoint, room, consumer)
            .await
            .map_err(worker_error)
    }

    async fn set_consumer_preferred_layers(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
        request: &SetPreferredLayersRequest,
    ) -> Result<Layers> {
        self.client
            .set_consumer_preferred_layers(endpoint, room, consumer, request)
            .await
            .map(|answer| answer.preferred_layers)
            .map_err(worker_error)
    }

    async fn set_consumer_priority(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
        priority: u32,
    ) -> Result<u32> {
        self.client
            .set_consumer_priority(endpoint, room, consumer, priority)
            .await
            .map(|answer| answer.priority)
            .map_err(worker_error)
    }

    async fn room_info(&self, endpoint: &str, room: &str) -> Result<RoomInfo> {
        self.client
            .room_info(endpoint, room)
            .await
            .map_err(worker_error)
    }

    async fn events(&self, endpoint: &str, room: &str) -> Result<RoomEvents> {
        let stream = self
            .client
            .events(endpoint, room)
            .await
            .map_err(worker_error)?;
        Ok(stream.map(|item| item.map_err(worker_error)).boxed())
    }
}

/// [`MediaBackend`] over a worker in this process: the same control plane calls the worker's
/// REST handlers make, without HTTP. Embedded mode has its worker in-process, where a loopback
/// HTTP hop would only add latency and memory: every followed room would hold an event-stream
/// connection, and joins open pooled request connections, with hyper's buffers at both ends
/// (about 80 KiB a room in the signalling benchmark).
///
/// `endpoint` is ignored: there is one worker.
#[derive(Clone)]
pub struct InProcessBackend {
    control: Arc<ControlPlane>,
}

impl InProcessBackend {
    /// A backend calling `control` directly.
    pub fn new(control: Arc<ControlPlane>) -> Self {
        InProcessBackend { control }
    }
}

/// Maps a control plane refusal the way [`worker_error`] maps the same refusal over HTTP.
fn control_error(error: ControlError) -> SignallingError {
    // 503: the worker is shutting down or out of ports.
    if error.http_status() == 503 {
        tracing::warn!(%error, "worker unavailable");
        return SignallingError::WorkerUnavailable;
    }
    SignallingError::Worker {
        code: error.code().to_owned(),
        message: error.to_string(),
    }
}

#[async_trait]
impl MediaBackend for InProcessBackend {
    async fn ensure_room(&self, _endpoint: &str, room: &str, setup: &RoomSetup) -> Result<RtpCapabilities> {
        self.control
            .ensure_room_with(&RoomId::from(room), &setup.media_codecs(), setup.empty_timeout)
            .map_err(control_error)
    }

    async fn join(&self, _endpoint: &str, room: &str, join: &JoinRequest) -> Result<JoinResponse> {
        let (peer, info) = join.clone().into_parts();
        self.control
            .join(&RoomId::from(room), &peer, info)
            .map_err(control_error)
    }

    async fn leave(&self, _endpoint: &str, room: &str, peer: &PeerId) -> Result<()> {
        self.control
            .leave(&RoomId::from(room), peer)
            .map_err(control_error)
    }

    async fn create_transport(
        &self,
        _endpoint: &str,
        room: &str,
        peer: &PeerId,
        direction: Direction,
        protocols: &TransportProtocols,
        sctp: Option<&SctpCapabilities>,
    ) -> Result<TransportCreated> {
        self.control
            .create_transport_with_sctp(&RoomId::from(room), peer, direction, protocols, sctp)
            .map_err(control_error)
    }

    async fn produce_data(&self, _endpoint: &str, room: &str, produce: &ProduceDataRequest) -> Result<DataProducerCreated> {
        self.control.produce_data(&RoomId::from(room), &produce.peer_id, produce.options.clone()).map_err(control_error)
    }

    async fn consume_data(&self, _endpoint: &str, room: &str, consume: &ConsumeDataRequest) -> Result<DataConsumerCreated> {
        self.control.consume_data(&RoomId::from(room), &consume.peer_id, consume.options.clone()).map_err(control_error)
    }

    async fn close_data_producer(&self, _endpoint: &str, room: &str, id: &DataProducerId) -> Result<()> {
        self.control.close_data_producer(&RoomId::from(room), id).map_err(control_error)
    }

    async fn close_data_consumer(&self, _endpoint: &str, room: &str, id: &DataConsumerId) -> Result<()> {
        self.control.close_data_consumer(&RoomId::from(room), id).map_err(control_error)
    }

    async fn connect_transport(
        &self,
        _endpoint: &str,
        room: &str,
        transport: &TransportId,
        dtls_parameters: &DtlsParameters,
    ) -> Result<()> {
        self.control
            .connect_transport(&RoomId::from(room), transport, dtls_parameters)
            .map(drop)
            .map_err(control_error)
    }

    async fn restart_ice(
        &self,
        _endpoint: &str,
        room: &str,
        transport: &TransportId,
    ) -> Result<IceParameters> {
        self.control
            .restart_ice(&RoomId::from(room), transport)
            .map_err(control_error)
    }

    async fn produce(
        &self,
        _endpoint: &str,
        room: &str,
        produce: &ProduceRequest,
    ) -> Result<ProducerCreated> {
        let (peer, options) = produce.clone().into_parts();
        self.control
            .produce(&RoomId::from(room), &peer, options)
            .map_err(control_error)
    }

    async fn consume(
        &self,
        _endpoint: &str,
        room: &str,
        consume: &ConsumeRequest,
    ) -> Result<ConsumerCreated> {
        let (peer, options) = consume.clone().into_parts();
        self.control
            .consume(&RoomId::from(room), &peer, options)
            .map_err(control_error)
    }

    async fn pause_producer(
        &self,
        _endpoint: &str,
        room: &str,
        producer: &ProducerId,
    ) -> Result<()> {
        self.control
            .pause_producer(&RoomId::from(room), producer)
            .map_err(control_error)
    }

    async fn resume_producer(
        &self,
        _endpoint: &str,
        room: &str,
        producer: &ProducerId,
    ) -> Result<()> {
        self.control
            .resume_producer(&RoomId::from(room), producer)
            .map_err(control_error)
    }

    async fn close_producer(
        &self,
        _endpoint: &str,
        room: &str,
        producer: &ProducerId,
    ) -> Result<()> {
        self.control
            .close_producer(&RoomId::from(room), producer)
            .map_err(control_error)
    }

    async fn pause_consumer(
        &self,
        _endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
    ) -> Result<()> {
        self.control
            .pause_consumer(&RoomId::from(room), consumer)
            .map_err(control_error)
    }

    async fn resume_consumer(
        &self,
        _endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
    ) -> Result<()> {
        self.control
            .resume_consumer(&RoomId::from(room), consumer)
            .map_err(control_error)
    }

    async fn close_consumer(
        &self,
        _endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
    ) -> Result<()> {
        self.control
            .close_consumer(&RoomId::from(room), consumer)
            .map_err(control_error)
    }

    async fn set_consumer_preferred_layers(
        &self,
        _endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
        request: &SetPreferredLayersRequest,
    ) -> Result<Layers> {
        self.control
            .set_consumer_preferred_layers(&RoomId::from(room), consumer, request.spatial_layer, request.temporal_layer)
            .map_err(control_error)
    }

    async fn set_consumer_priority(
        &self,
        _endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
        priority: u32,
    ) -> Result<u32> {
        self.control
            .set_consumer_priority(&RoomId::from(room), consumer, priority)
            .map(u32::from)
            .map_err(control_error)
    }

    async fn room_info(&self, _endpoint: &str, room: &str) -> Result<RoomInfo> {
        self.control
            .room_info(&RoomId::from(room))
            .map_err(control_error)
    }

    async fn events(&self, _endpoint: &str, room: &str) -> Result<RoomEvents> {
        let subscription = self
            .control
            .subscribe(&RoomId::from(room))
            .map_err(control_error)?;
        // Ends after `roomClosed`, or with an error once it fell behind, as over HTTP.
        Ok(
            futures::stream::unfold(Some(subscription), |subscription| async move {
                let mut subscription = subscription?;
                match subscription.recv().await {
                    Ok(event) => Some((Ok(event), Some(subscription))),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "the room's events fell behind and were cut off"
                        );
                        Some((Err(SignallingError::Internal), None))
                    }
                    Err(RecvError::Closed) => None,
                }
            })
            .boxed(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_worker_is_worker_unavailable() {
        let error = worker_error(ClientError::Unavailable {
            endpoint: "http://10.0.0.1:3000".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(error.code(), "WORKER_UNAVAILABLE");
        // The worker's address is an internal detail.
        assert!(!error.to_string().contains("10.0.0.1"));
    }

    #[test]
    fn a_worker_refusal_keeps_its_code_and_message() {
        let error = worker_error(ClientError::Api {
            status: 400,
            code: "UNSUPPORTED_CODEC".into(),
            message: "no codec matches".into(),
        });
        assert_eq!(error.code(), "UNSUPPORTED_CODEC");
        assert_eq!(error.to_string(), "no codec matches");
    }

    fn in_process() -> InProcessBackend {
        let engine = Arc::new(fanout_worker::control::testing::FakeEngine::new(40000..=40009));
        InProcessBackend::new(Arc::new(ControlPlane::new(
            engine,
            fanout_worker::room::SequentialIds::new(),
        )))
    }

    #[tokio::test]
    async fn an_in_process_refusal_keeps_the_workers_code_and_message() {
        let backend = in_process();
        let error = backend
            .room_info("in-process", "nowhere")
            .await
            .expect_err("no such room");
        assert_eq!(error.code(), "ROOM_NOT_FOUND");
        assert!(error.to_string().contains("nowhere"), "{error}");
    }

    #[tokio::test]
    async fn an_in_process_event_stream_that_falls_behind_ends_with_an_error() {
        use futures::StreamExt as _;
        let backend = in_process();
        backend
            .join("in-process", "maths", &JoinRequest::new("teacher"))
            .await
            .expect("joins");
        let mut events = backend.events("in-process", "maths").await.expect("subscribes");
        // One request each, never read while they happen.
        for i in 0..=fanout_worker::control::EVENT_BUFFER {
            backend
                .join("in-process", "maths", &JoinRequest::new(format!("pupil-{i}")))
                .await
                .expect("joins");
        }
        assert!(matches!(events.next().await, Some(Err(_))));
        assert!(events.next().await.is_none());
    }

    #[test]
    fn an_unreadable_answer_is_internal() {
        let error = worker_error(ClientError::Protocol {
            endpoint: "http://w".into(),
            reason: "not json".into(),
        });
        assert_eq!(error.code(), "INTERNAL");
    }
}
