//! The worker's control plane: the room graph ([`Rooms`]) behind one lock, the media engine
//! it drives, and the fan-out of room events to whoever listens (signalling, through
//! `GET /v1/rooms/{room}/events`).
//!
//! Every request runs the same way, all under the lock so that requests, engine calls and
//! events keep one order:
//!
//! 1. apply the request to [`Rooms`], which checks everything before it changes anything;
//!    where the engine must act for the request to succeed (open a transport, start DTLS, new
//!    ICE credentials) the engine is asked from inside that step, after the checks, and a
//!    refusal leaves the graph untouched;
//! 2. when routing may have changed, push the room's new
//!    [`ForwardingTable`](crate::room::ForwardingTable) to the engine;
//! 3. release the engine resources of transports the request closed (after the new table, so
//!    the engine's routes never name a closed transport), or the whole room;
//! 4. publish the request's [`RoomEvent`]s to the room's subscribers, all of them in one
//!    message ([`RoomSubscription`] reads them out one by one).
//!
//! The engine reports what closes transports on the wire ([`EngineNotice`]); a task started
//! with [`ControlPlane::spawn_notice_handler`] applies those the same way.
//!
//! The lock is a plain mutex, never held across an `.await`: every step is in-memory work
//! and engine calls that only hand work to the media threads.

mod ids;
mod subscription;
pub mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};

use crate::api::{ConsumerStats, ConsumerSummary, ErrorResponse, ProducerStats, RoomInfo, TransportSummary, WorkerStats};
use crate::engine::{ConsumerLayerState, ConsumerScore, EncodingStats, EngineError, EngineNotice, MediaEngine, MediaEvent};
use crate::room::ConsumerType;
use crate::room::{
    ConsumeDataOptions, DataConsumerCreated, DataConsumerId, DataProducerCreated, DataProducerId, ProduceDataOptions,
    SctpCapabilities, SctpParameters,
};
use crate::video::Layers;
use crate::room::{
    ConsumeOptions, ConsumerCreated, ConsumerId, Direction, DtlsParameters, DtlsRole,
    IceParameters, IdGenerator, JoinResponse, PeerId, PeerInfo, ProduceOptions, ProducerCreated,
    ProducerId, Quotas, RoomError, RoomEvent, RoomId, Rooms, TransportCloseCode, TransportCreated,
    TransportId, TransportProtocols,
};
use crate::rtp::{RtpCapabilities, RtpCodecCapability};
use crate::api::Recording;
use crate::record::{Recorder, RecordingError, StopAnswer};

pub use ids::RandomIds;
pub use subscription::RoomSubscription;

use subscription::EventBatch;

/// How many requests' events a room's subscriber may fall behind before it is cut off (see
/// [`ControlPlane::subscribe`]). Every slot is allocated when the room gets its first
/// subscriber (about 40 bytes each), so this is memory every followed room holds.
///
/// 128 is plenty: a request's events take one slot however many there are, requests to a room
/// are applied one at a time under the lock, and a subscriber is woken by the first of them;
/// even a class of 100 arriving at once makes about 3 event requests each (join, produce
/// camera and microphone) over the seconds their browsers take. A subscriber 128 requests
/// behind is stuck, and is better off reading the room afresh and subscribing again.
pub const EVENT_BUFFER: usize = 128;

/// Why the control plane refused a request: the room graph's reason, the media engine's, or
/// a worker that is shutting down. Each has a stable code and an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The room graph refused the request.
    #[error(transparent)]
    Room(#[from] RoomError),
    /// The media engine refused its part of the request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A recording request was refused.
    #[error(transparent)]
    Recording(#[from] RecordingError),
    /// [`ControlPlane::shutdown`] was called: no new rooms or peers.
    #[error(
        "the worker is shutting down and accepts no new rooms or peers; place the room on \
         another worker"
    )]
    ShuttingDown,
}

impl ControlError {
    /// The stable code for the REST error body.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::Room(error) => error.code(),
            ControlError::Engine(error) => error.code(),
            ControlError::Recording(error) => error.code(),
            ControlError::ShuttingDown => "SHUTTING_DOWN",
        }
    }

    /// The HTTP status: the room graph's and engine's own, 503 while shutting down (the
    /// caller should try another worker).
    pub fn http_status(&self) -> u16 {
        match self {
            ControlError::Room(error) => error.http_status(),
            ControlError::Engine(error) => error.http_status(),
            ControlError::Recording(error) => error.http_status(),
            ControlError::ShuttingDown => 503,
        }
    }

    /// `Retry-After` for errors that pass by themselves (no free port now).
    pub fn retry_after_seconds(&self) -> Option<u32> {
        match self {
            ControlError::Engine(error) => error.retry_after_seconds(),
            _ => None,
        }
    }

    /// The REST error body.
    pub fn to_response(&self) -> ErrorResponse {
        ErrorResponse::new(self.code(), self.to_string())
    }
}

/// Where [`EngineNotice`]s come from: a tokio channel, bounded or not (media threads that are
/// not tokio tasks send with `try_send` / `send`, which never block on an unbounded one).
pub trait NoticeSource: Send + 'static {
    /// The next notice; `None` once the engine has dropped its sender.
    fn recv(&mut self) -> impl Future<Output = Option<EngineNotice>> + Send;
}

impl NoticeSource for mpsc::Receiver<EngineNotice> {
    fn recv(&mut self) -> impl Future<Output = Option<EngineNotice>> + Send {
        mpsc::Receiver::recv(self)
    }
}

impl NoticeSource for mpsc::UnboundedReceiver<EngineNotice> {
    fn recv(&mut self) -> impl Future<Output = Option<EngineNotice>> + Send {
        mpsc::UnboundedReceiver::recv(self)
    }
}

/// What a request may have changed, beyond the graph itself: decides which engine calls
/// follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routing {
    /// Producers and consumers are as they were: no new table.
    Unchanged,
    /// The room's table may differ: push it.
    MayHaveChanged,
}

struct State {
    rooms: Rooms,
    /// One event channel per room that has (or had) a subscriber; dropped when the room
    /// closes, which ends every subscription after its `roomClosed`.
    channels: HashMap<RoomId, broadcast::Sender<EventBatch>>,
    /// False after [`ControlPlane::shutdown`].
    accepting: bool,
}

/// The worker: every room on it, the media engine under them, and their event streams.
///
/// Shared as `Arc<ControlPlane>` between the REST handlers and the engine-notice task.
pub struct ControlPlane {
    state: Mutex<State>,
    engine: Arc<dyn MediaEngine>,
    /// `None` without `--recording-dir`.
    recorder: Option<Arc<Recorder>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// No rooms yet. `ids` draws the ids and SSRCs ([`RandomIds`] in production); the
    /// default [`Quotas`].
    pub fn new(engine: Arc<dyn MediaEngine>, ids: impl IdGenerator + Send + 'static) -> Self {
        ControlPlane::with_quotas(engine, ids, Quotas::default())
    }

    /// [`ControlPlane::new`] with these quotas (the `fanout-worker` flags').
    pub fn with_quotas(
        engine: Arc<dyn MediaEngine>,
        ids: impl IdGenerator + Send + 'static,
        quotas: Quotas,
    ) -> Self {
        ControlPlane {
            state: Mutex::new(State {
                rooms: Rooms::with_quotas(ids, quotas),
                channels: HashMap::new(),
                accepting: true,
            }),
            engine,
            recorder: None,
        }
    }

    /// The same control plane, recording with `recorder` (made on the same engine).
    pub fn with_recorder(mut self, recorder: Arc<Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    fn recorder(&self) -> Result<&Arc<Recorder>, ControlError> {
        self.recorder.as_ref().ok_or(ControlError::Recording(RecordingError::Disabled))
    }

    /// `POST /v1/rooms/{room}/recordings`: starts recording the room's producers as `id`;
    /// `(status, true)` when it started now, the existing recording's status otherwise.
    pub fn start_recording(&self, room_id: &RoomId, id: &str) -> Result<(Recording, bool), ControlError> {
        crate::room::check_id("recording", id).map_err(RoomError::InvalidId)?;
        let recorder = self.recorder()?;
        // Under the lock, so that the room cannot close between the check and the start
        // (its closing stops the recording).
        let state = self.lock();
        if state.rooms.room(room_id).is_none() {
            // A stopped recording of a closed room still answers for its id.
            return recorder.recording(room_id, id).map(|r| (r, false)).map_err(|_| RoomError::RoomNotFound(room_id.clone()).into());
        }
        Ok(recorder.start_recording(room_id, id)?)
    }

    /// `GET /v1/rooms/{room}/recordings/{id}`.
    pub fn recording(&self, room_id: &RoomId, id: &str) -> Result<Recording, ControlError> {
        Ok(self.recorder()?.recording(room_id, id)?)
    }

    /// `DELETE /v1/rooms/{room}/recordings/{id}`: stops it; the answer is ready once its
    /// files are finalised.
    pub fn stop_recording(&self, room_id: &RoomId, id: &str) -> Result<StopAnswer, ControlError> {
        Ok(self.recorder()?.stop_recording(room_id, id)?)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug, but every Rooms method checks before it
        // mutates, so the graph is still consistent; refusing every later request would turn
        // one bug into an outage.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `request` to the graph and, when it succeeds, makes the engine follow and
    /// publishes the events (steps 1-4 of the module docs).
    fn apply<T>(
        &self,
        room_id: &RoomId,
        routing: Routing,
        request: impl FnOnce(&mut Rooms, &dyn MediaEngine) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let mut state = self.lock();
        let answer = request(&mut state.rooms, self.engine.as_ref())?;
        self.follow(&mut state, room_id, routing);
        Ok(answer)
    }

    /// Steps 2-4 after a successful change to `room_id`. `closed_by_engine` is a transport
    /// the engine closed itself, which it need not be told to release.
    fn follow(
        &self,
        state: &mut State,
        room_id: &RoomId,
        routing: Routing,
    ) {
        let events = state.rooms.drain_events();
        let room_open = state.rooms.room(room_id).is_some();
        // No table for a room that closed: the engine releases all of it instead.
        if routing == Routing::MayHaveChanged
            && let Ok(table) = state.rooms.forwarding_table(room_id)
        {
            self.engine.update_routes(room_id, table);
        }
        for (room, event) in &events {
            match event {
                // Also for transports the engine closed itself: that releases their socket and
                // port (closing is idempotent in the engine).
                RoomEvent::TransportClosed { transport_id, .. } if room_open => {
                    self.engine.close_transport(room, transport_id);
                }
                RoomEvent::RoomClosed { room_id } => {
                    self.engine.close_room(room_id);
                    if let Some(recorder) = &self.recorder {
                        recorder.room_closed(room_id);
                    }
                }
                RoomEvent::ProducerClosed { producer_id, .. } => {
                    if let Some(recorder) = &self.recorder {
                        recorder.producer_closed(room, producer_id);
                    }
                }
                _ => {}
            }
        }
        self.publish(state, events);
    }

    /// Sends events to their rooms' subscribers, a request's events as one message.
    fn publish(&self, state: &mut State, events: Vec<(RoomId, RoomEvent)>) {
        for (room, batch) in batches(events) {
            tracing::debug!(room = %room, ?batch, "room events");
            if let Some(channel) = state.channels.get(&room) {
                // An error only means nobody listens right now.
                let _ = channel.send(batch.clone());
            }
            if batch
                .iter()
                .any(|event| matches!(event, RoomEvent::RoomClosed { .. }))
            {
                state.channels.remove(&room);
            }
        }
    }

    /// `PUT /v1/rooms/{room}`: opens the room with these media codecs (empty: the defaults)
    /// and returns its router capabilities; an open room keeps its codecs.
    pub fn ensure_room(
        &self,
        room_id: &RoomId,
        media_codecs: &[RtpCodecCapability],
    ) -> Result<RtpCapabilities, ControlError> {
        self.ensure_room_with(room_id, media_codecs, None)
    }

    /// [`ControlPlane::ensure_room`] with the room's own empty timeout
    /// ([`Rooms::ensure_room_with`]: the body's `emptyTimeoutSeconds`).
    pub fn ensure_room_with(
        &self,
        room_id: &RoomId,
        media_codecs: &[RtpCodecCapability],
        empty_timeout: Option<Duration>,
    ) -> Result<RtpCapabilities, ControlError> {
        let mut state = self.lock();
        if !state.accepting && state.rooms.room(room_id).is_none() {
            return Err(ControlError::ShuttingDown);
        }
        Ok(state.rooms.ensure_room_with(room_id, media_codecs, empty_timeout)?)
    }

    /// Closes the rooms that have been without peers for their empty timeout
    /// ([`Rooms::close_empty_rooms`]), with their events, and returns their ids.
    pub fn close_empty_rooms(&self, now: Instant) -> Vec<RoomId> {
        let mut state = self.lock();
        let closed = state.rooms.close_empty_rooms(now);
        for room_id in &closed {
            tracing::info!(room = %room_id, "closed a room that stayed empty for its empty timeout");
            self.follow(&mut state, room_id, Routing::Unchanged);
        }
        closed
    }

    /// Starts the task that calls [`ControlPlane::close_empty_rooms`] every `interval`.
    /// Needs a tokio runtime.
    pub fn spawn_empty_room_sweeper(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let control = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // Ends with the worker.
                let Some(control) = control.upgrade() else { return };
                control.close_empty_rooms(Instant::now());
            }
        })
    }

    /// `GET /v1/rooms/{room}`: everything open in the room.
    pub fn room_info(&self, room_id: &RoomId) -> Result<RoomInfo, ControlError> {
        let state = self.lock();
        let room = state
            .rooms
            .room(room_id)
            .ok_or_else(|| RoomError::RoomNotFound(room_id.clone()))?;
        Ok(RoomInfo {
            room_id: room.id.clone(),
            rtp_capabilities: room.rtp_capabilities.clone(),
            peers: room
                .peers()
                .into_iter()
                .map(|peer| peer.summary())
                .collect(),
            transports: room
                .transports()
                .into_iter()
                .map(|transport| TransportSummary {
                    transport_id: transport.id.clone(),
                    peer_id: transport.peer_id.clone(),
                    direction: transport.direction,
                    connected: transport.dtls.is_some(),
                })
                .collect(),
            producers: room
                .producers()
                .into_iter()
                .map(|producer| producer.summary())
                .collect(),
            consumers: room
                .consumers()
                .into_iter()
                .map(|consumer| ConsumerSummary {
                    consumer_id: consumer.id.clone(),
                    peer_id: consumer.peer_id.clone(),
                    transport_id: consumer.transport_id.clone(),
                    producer_id: consumer.producer_id.clone(),
                    kind: consumer.kind,
                    paused: consumer.paused,
                    producer_paused: consumer.producer_paused,
                })
                .collect(),
        })
    }

    /// `DELETE /v1/rooms/{room}`: every peer leaves, the engine releases the room, and the
    /// room's event streams end after `roomClosed`.
    pub fn close_room(&self, room_id: &RoomId) -> Result<(), ControlError> {
        self.apply(room_id, Routing::Unchanged, |rooms, _| {
            Ok(rooms.close_room(room_id)?)
        })
    }

    /// `POST /v1/rooms/{room}/peers`: joins the peer, opening the room with the default codecs
    /// first if it is not open.
    ///
    /// Opening on join is what mediasoup's demo does and what an embedded worker without an
    /// operator needs; a room that needs other codecs is opened with [`ControlPlane::ensure_room`]
    /// before anyone joins. A join that fails leaves no room it opened behind.
    pub fn join(
        &self,
        room_id: &RoomId,
        peer_id: &PeerId,
        info: PeerInfo,
    ) -> Result<JoinResponse, ControlError> {
        let mut state = self.lock();
        let opened = state.rooms.room(room_id).is_none();
        if opened {
            if !state.accepting {
                return Err(ControlError::ShuttingDown);
            }
            state.rooms.ensure_room(room_id, &[])?;
        }
        match state.rooms.join(room_id, peer_id, info) {
            Ok(response) => {
                self.follow(&mut state, room_id, Routing::Unchanged);
                Ok(response)
            }
            Err(error) => {
                if opened {
                    // Nobody can have seen the room: it goes without events or engine calls.
                    let _ = state.rooms.close_room(room_id);
                    state.rooms.drain_events();
                }
                Err(error.into())
            }
        }
    }

    /// `DELETE /v1/rooms/{room}/peers/{peer}`: closes the peer's transports with their
    /// producers and consumers (consumers of its producers included), then `peerLeft`.
    pub fn leave(&self, room_id: &RoomId, peer_id: &PeerId) -> Result<(), ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.leave(room_id, peer_id)?)
        })
    }

    /// `POST /v1/rooms/{room}/transports`: the engine opens a port for the new transport; when
    /// it cannot (no free port: `PORTS_EXHAUSTED`, 503) nothing is created.
    pub fn create_transport(
        &self,
        room_id: &RoomId,
        peer_id: &PeerId,
        direction: Direction,
    ) -> Result<TransportCreated, ControlError> {
        self.create_transport_over(room_id, peer_id, direction, &TransportProtocols::default())
    }

    /// [`ControlPlane::create_transport`] on the protocols the request asks for (the worker's
    /// defaults for what it leaves out); a combination that cannot be met is a 400 with its
    /// code (`NO_TRANSPORT_PROTOCOL`, `CONFLICTING_PROTOCOL_PREFERENCE`, `TCP_UNAVAILABLE`).
    pub fn create_transport_over(
        &self,
        room_id: &RoomId,
        peer_id: &PeerId,
        direction: Direction,
        protocols: &TransportProtocols,
    ) -> Result<TransportCreated, ControlError> {
        self.create_transport_with_sctp(room_id, peer_id, direction, protocols, None)
    }

    /// [`ControlPlane::create_transport_over`], with SCTP for data channels when the client
    /// sent its `sctpCapabilities`: the answer then carries `sctpParameters`.
    pub fn create_transport_with_sctp(
        &self,
        room_id: &RoomId,
        peer_id: &PeerId,
        direction: Direction,
        protocols: &TransportProtocols,
        sctp: Option<&SctpCapabilities>,
    ) -> Result<TransportCreated, ControlError> {
        self.apply(room_id, Routing::Unchanged, |rooms, engine| {
            let mut created = rooms.create_transport_with(room_id, peer_id, direction, |transport_id| {
                engine
                    .open_transport(room_id, transport_id, protocols)
                    .map_err(ControlError::from)
            })?;
            if let Some(capabilities) = sctp {
                created.sctp_parameters =
                    Some(rooms.enable_sctp(room_id, &created.id, capabilities, SctpParameters::default())?);
            }
            Ok(created)
        })
    }

    /// `POST /v1/rooms/{room}/data-producers`.
    pub fn produce_data(
        &self,
        room_id: &RoomId,
        peer_id: &PeerId,
        options: ProduceDataOptions,
    ) -> Result<DataProducerCreated, ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| Ok(rooms.produce_data(room_id, peer_id, options)?))
    }

    /// `POST /v1/rooms/{room}/data-consumers`.
    pub fn consume_data(
        &self,
        room_id: &RoomId,
        peer_id: &PeerId,
        options: ConsumeDataOptions,
    ) -> Result<DataConsumerCreated, ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| Ok(rooms.consume_data(room_id, peer_id, options)?))
    }

    /// `DELETE .../data-producers/{id}`: closes its data consumers too.
    pub fn close_data_producer(&self, room_id: &RoomId, id: &DataProducerId) -> Result<(), ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| Ok(rooms.close_data_producer(room_id, id)?))
    }

    /// `DELETE .../data-consumers/{id}`.
    pub fn close_data_consumer(&self, room_id: &RoomId, id: &DataConsumerId) -> Result<(), ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| Ok(rooms.close_data_consumer(room_id, id)?))
    }

    /// `POST .../transports/{id}/connect`: records the client's DTLS parameters and has the
    /// engine start the handshake in the worker's role, which is returned.
    pub fn connect_transport(
        &self,
        room_id: &RoomId,
        transport_id: &TransportId,
        dtls_parameters: &DtlsParameters,
    ) -> Result<DtlsRole, ControlError> {
        self.apply(room_id, Routing::Unchanged, |rooms, engine| {
            rooms.connect_transport_with(
                room_id,
                transport_id,
                dtls_parameters,
                |remote, local_role| {
                    engine
                        .connect_transport(room_id, transport_id, remote, local_role)
                        .map_err(ControlError::from)
                },
            )
        })
    }

    /// `POST .../transports/{id}/restart-ice`: new ICE credentials from the engine.
    pub fn restart_ice(
        &self,
        room_id: &RoomId,
        transport_id: &TransportId,
    ) -> Result<IceParameters, ControlError> {
        self.apply(room_id, Routing::Unchanged, |rooms, engine| {
            rooms.restart_ice_with(room_id, transport_id, || {
                engine
                    .restart_ice(room_id, transport_id)
                    .map_err(ControlError::from)
            })
        })
    }

    /// `DELETE .../transports/{id}`: closes it with its producers and consumers.
    pub fn close_transport(
        &self,
        room_id: &RoomId,
        transport_id: &TransportId,
    ) -> Result<(), ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.close_transport(room_id, transport_id)?)
        })
    }

    /// `POST /v1/rooms/{room}/producers`.
    pub fn produce(
        &self,
        room_id: &RoomId,
        peer_id: &PeerId,
        options: ProduceOptions,
    ) -> Result<ProducerCreated, ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.produce(room_id, peer_id, options)?)
        })
    }

    /// `POST /v1/rooms/{room}/consumers`.
    pub fn consume(
        &self,
        room_id: &RoomId,
        peer_id: &PeerId,
        options: ConsumeOptions,
    ) -> Result<ConsumerCreated, ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.consume(room_id, peer_id, options)?)
        })
    }

    /// `POST .../producers/{id}/pause`.
    pub fn pause_producer(&self, room_id: &RoomId, id: &ProducerId) -> Result<(), ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.pause_producer(room_id, id)?)
        })
    }

    /// `POST .../producers/{id}/resume`.
    pub fn resume_producer(&self, room_id: &RoomId, id: &ProducerId) -> Result<(), ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.resume_producer(room_id, id)?)
        })
    }

    /// `DELETE .../producers/{id}`: closes its consumers too.
    pub fn close_producer(&self, room_id: &RoomId, id: &ProducerId) -> Result<(), ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.close_producer(room_id, id)?)
        })
    }

    /// `POST .../consumers/{id}/pause`.
    pub fn pause_consumer(&self, room_id: &RoomId, id: &ConsumerId) -> Result<(), ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.pause_consumer(room_id, id)?)
        })
    }

    /// `POST .../consumers/{id}/resume`. The engine sees the consumer turn active in the new
    /// table, which is its cue to ask the producer for a keyframe.
    pub fn resume_consumer(&self, room_id: &RoomId, id: &ConsumerId) -> Result<(), ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.resume_consumer(room_id, id)?)
        })
    }

    /// `POST .../consumers/{id}/preferred-layers`: the layers as kept.
    pub fn set_consumer_preferred_layers(
        &self,
        room_id: &RoomId,
        id: &ConsumerId,
        spatial_layer: u8,
        temporal_layer: Option<u8>,
    ) -> Result<Layers, ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.set_consumer_preferred_layers(room_id, id, spatial_layer, temporal_layer)?)
        })
    }

    /// `POST .../consumers/{id}/priority`: the priority as kept.
    pub fn set_consumer_priority(&self, room_id: &RoomId, id: &ConsumerId, priority: u32) -> Result<u8, ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.set_consumer_priority(room_id, id, priority)?)
        })
    }

    /// `GET .../producers/{id}/stats`: the engine's figures of its encodings (as of the last
    /// second), every encoding listed even before its first packet.
    pub fn producer_stats(&self, room_id: &RoomId, id: &ProducerId) -> Result<ProducerStats, ControlError> {
        let (kind, r#type, paused, encodings) = {
            let state = self.lock();
            let room = state.rooms.room(room_id).ok_or_else(|| RoomError::RoomNotFound(room_id.clone()))?;
            let producer = room
                .producer(id)
                .ok_or_else(|| RoomError::ProducerNotFound { room: room_id.clone(), producer: id.clone() })?;
            let encodings: Vec<(Option<String>, Option<u32>)> =
                producer.rtp_parameters.encodings.iter().map(|e| (e.rid.clone(), e.ssrc.map(|s| s.0))).collect();
            (producer.kind, ConsumerType::of_producer(&producer.consumable_parameters), producer.paused, encodings)
        };
        let seen = self.engine.media_stats(room_id).and_then(|m| m.producers.into_iter().find(|p| &p.producer_id == id));
        let encodings = encodings
            .into_iter()
            .enumerate()
            .map(|(index, (rid, ssrc))| {
                seen.as_ref().and_then(|p| p.encodings.iter().find(|e| e.encoding_idx == index).cloned()).unwrap_or_else(|| EncodingStats::unseen(index, rid, ssrc))
            })
            .collect();
        Ok(ProducerStats { producer_id: id.clone(), kind, r#type, paused, encodings })
    }

    /// `GET .../consumers/{id}/stats`: its layers and what it is sent (as of the last second).
    pub fn consumer_stats(&self, room_id: &RoomId, id: &ConsumerId) -> Result<ConsumerStats, ControlError> {
        let consumer = {
            let state = self.lock();
            let room = state.rooms.room(room_id).ok_or_else(|| RoomError::RoomNotFound(room_id.clone()))?;
            room.consumer(id)
                .cloned()
                .ok_or_else(|| RoomError::ConsumerNotFound { room: room_id.clone(), consumer: id.clone() })?
        };
        let seen = self.engine.media_stats(room_id).and_then(|m| m.consumers.into_iter().find(|c| &c.consumer_id == id));
        let state = match (&seen, consumer.paused, consumer.producer_paused) {
            (_, true, _) => ConsumerLayerState::Paused,
            (_, _, true) => ConsumerLayerState::ProducerPaused,
            (Some(seen), ..) => seen.state,
            (None, ..) => ConsumerLayerState::WaitingForKeyframe,
        };
        Ok(ConsumerStats {
            consumer_id: consumer.id.clone(),
            producer_id: consumer.producer_id.clone(),
            kind: consumer.kind,
            r#type: consumer.r#type,
            paused: consumer.paused,
            producer_paused: consumer.producer_paused,
            preferred_layers: seen.as_ref().and_then(|s| s.preferred_layers).or(consumer.preferred_layers),
            target_layers: seen.as_ref().and_then(|s| s.target_layers),
            current_layers: seen.as_ref().and_then(|s| s.current_layers),
            state,
            priority: consumer.priority,
            score: seen.as_ref().map(|s| s.score.clone()).unwrap_or(ConsumerScore { score: 0, producer_score: 0, producer_scores: Vec::new() }),
            packets_sent: seen.as_ref().map_or(0, |s| s.packets_sent),
            bitrate: seen.as_ref().map_or(0, |s| s.bitrate),
        })
    }

    /// Every room's media figures, for `/metrics`.
    pub fn all_media_stats(&self) -> Vec<(RoomId, crate::engine::RoomMediaStats)> {
        self.engine.all_media_stats()
    }

    /// `DELETE .../consumers/{id}`.
    pub fn close_consumer(&self, room_id: &RoomId, id: &ConsumerId) -> Result<(), ControlError> {
        self.apply(room_id, Routing::MayHaveChanged, |rooms, _| {
            Ok(rooms.close_consumer(room_id, id)?)
        })
    }

    /// `GET /v1/stats`: object counts (bitrates are the engine's and stay 0 here).
    pub fn stats(&self) -> WorkerStats {
        let mut stats = self.lock().rooms.stats();
        let engine = self.engine.snapshot();
        stats.recv_bitrate = engine.recv_bitrate;
        stats.send_bitrate = engine.send_bitrate;
        stats
    }

    /// The media engine's counters (packets, bytes, drops by reason).
    pub fn engine_snapshot(&self) -> crate::engine::EngineSnapshot {
        let mut snapshot = self.engine.snapshot();
        if let Some(recorder) = &self.recorder {
            // Producer packets the recorder was too far behind to take (forwarding was not).
            snapshot.drops_by_reason.push(("recording_queue_full", recorder.dropped_total()));
        }
        snapshot
    }

    /// The events of an open room from now on, in order. The stream ends after the room's
    /// `roomClosed`; a subscriber more than [`EVENT_BUFFER`] requests behind gets
    /// `RecvError::Lagged` and should start over from [`ControlPlane::room_info`].
    pub fn subscribe(&self, room_id: &RoomId) -> Result<RoomSubscription, ControlError> {
        let mut state = self.lock();
        if state.rooms.room(room_id).is_none() {
            return Err(RoomError::RoomNotFound(room_id.clone()).into());
        }
        let batches = state
            .channels
            .entry(room_id.clone())
            .or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
            .subscribe();
        Ok(RoomSubscription::new(batches))
    }

    /// Applies one notice from the engine: a transport it closed is closed in the graph (with
    /// its producers and consumers, and their events). A transport already gone (closed by a
    /// request in the meantime) is ignored.
    ///
    /// When that was the peer's last transport, the peer leaves too: its browser is gone (ICE
    /// consent lost on everything it had). Without this, peers whose signalling connection was
    /// lost without a leave (a signalling restart) would stay in the room for good.
    pub fn handle_notice(&self, notice: EngineNotice) {
        match notice {
            EngineNotice::Media { room, events } => {
                let mut state = self.lock();
                let Some(open) = state.rooms.room(&room) else { return };
                let events: Vec<(RoomId, RoomEvent)> =
                    events.into_iter().filter_map(|event| room_event(open, event)).map(|event| (room.clone(), event)).collect();
                if !events.is_empty() {
                    self.publish(&mut state, events);
                }
            }
            EngineNotice::TransportClosed {
                room,
                transport,
                code,
                reason,
            } => {
                let mut state = self.lock();
                let peer = state
                    .rooms
                    .room(&room)
                    .and_then(|r| r.transport(&transport))
                    .map(|t| t.peer_id.clone());
                match state.rooms.close_transport_for(&room, &transport, code, &reason) {
                    Ok(()) => {
                        tracing::info!(%room, %transport, %code, %reason, "the media engine closed a transport");
                        let abandoned = peer.filter(|peer| {
                            state.rooms.room(&room).is_some_and(|r| !r.transports().iter().any(|t| &t.peer_id == peer))
                        });
                        if let Some(peer) = abandoned
                            && state.rooms.leave(&room, &peer).is_ok()
                        {
                            tracing::info!(%room, %peer, "peer lost its last transport; it left the room");
                        }
                        self.follow(&mut state, &room, Routing::MayHaveChanged);
                    }
                    Err(error) => {
                        tracing::debug!(%room, %transport, %code, %reason, %error, "engine closed a transport that is gone already");
                    }
                }
            }
        }
    }

    /// Starts the task that applies the engine's notices until the engine drops its sender.
    /// Needs a tokio runtime.
    pub fn spawn_notice_handler(
        self: &Arc<Self>,
        mut notices: impl NoticeSource,
    ) -> tokio::task::JoinHandle<()> {
        let control = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(notice) = notices.recv().await {
                control.handle_notice(notice);
            }
        })
    }

    /// Graceful shutdown: refuses new rooms (and joins that would open one) from now on and
    /// closes every open room, with all its events, so that signalling tells the clients and
    /// every event stream ends.
    pub fn shutdown(&self) {
        let mut state = self.lock();
        state.accepting = false;
        let open: Vec<RoomId> = state.rooms.rooms().map(|room| room.id.clone()).collect();
        for room_id in open {
            if state
                .rooms
                .close_room_for(&room_id, TransportCloseCode::WorkerShutdown)
                .is_ok()
            {
                self.follow(&mut state, &room_id, Routing::Unchanged);
            }
        }
    }

    /// After [`ControlPlane::shutdown`]: waits (up to `timeout`) for the recorder to
    /// finalise the files of every recording, so that they play with cues and duration.
    pub fn finish_recordings(&self, timeout: Duration) {
        if let Some(recorder) = &self.recorder {
            recorder.shutdown(timeout);
        }
    }

    /// True once [`ControlPlane::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        !self.lock().accepting
    }
}

/// A media event as its room's subscribers hear it, with the peers it is for; `None` for
/// objects that closed meanwhile.
fn room_event(room: &crate::room::Room, event: MediaEvent) -> Option<RoomEvent> {
    Some(match event {
        MediaEvent::ProducerScore { producer_id, scores } => {
            let peer_id = room.producer(&producer_id)?.peer_id.clone();
            RoomEvent::ProducerScore { producer_id, peer_id, scores }
        }
        MediaEvent::ConsumerLayersChanged { consumer_id, layers, state } => {
            let consumer = room.consumer(&consumer_id)?;
            RoomEvent::ConsumerLayersChanged {
                peer_id: consumer.peer_id.clone(),
                producer_id: consumer.producer_id.clone(),
                consumer_id,
                spatial_layer: layers.map(|l| l.spatial_layer),
                temporal_layer: layers.map(|l| l.temporal_layer),
                state,
            }
        }
        MediaEvent::ConsumerScore { consumer_id, score } => {
            let consumer = room.consumer(&consumer_id)?;
            RoomEvent::ConsumerScore {
                peer_id: consumer.peer_id.clone(),
                producer_id: consumer.producer_id.clone(),
                consumer_id,
                score: score.score,
                producer_score: score.producer_score,
                producer_scores: score.producer_scores,
            }
        }
    })
}

/// A request's events as one batch per room, rooms in the order their first event came.
fn batches(events: Vec<(RoomId, RoomEvent)>) -> Vec<(RoomId, EventBatch)> {
    let mut batches: Vec<(RoomId, Vec<RoomEvent>)> = Vec::new();
    for (room, event) in events {
        match batches.iter_mut().find(|(batch_room, _)| *batch_room == room) {
            Some((_, batch)) => batch.push(event),
            None => batches.push((room, vec![event])),
        }
    }
    batches
        .into_iter()
        .map(|(room, batch)| (room, EventBatch::from(batch)))
        .collect()
}
