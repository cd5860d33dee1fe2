//! What each request event does (docs/protocol.md). Every handler gets the admitted
//! payload and returns the body that both the acknowledgement and the named response event
//! carry; [`server`](crate::server) does the answering.
//!
//! Identity always comes from the connection's token. Object ids the client names are checked
//! against the participant's own before they reach a worker, because the worker's API does
//! not know who owns what.

use std::sync::Arc;

use fanout_worker::api::{
    ConsumeDataRequest, ConsumeRequest, JoinRequest, ProduceDataRequest, ProduceRequest, SetPreferredLayersRequest,
};
use fanout_worker::room::{
    AppData, ConsumeDataOptions, Direction, JoinResponse, PeerId, PeerInfo, ProduceDataOptions, SctpCapabilities,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use crate::replicas::{SocketRef, peer_channel};

use crate::error::{Result, SignallingError};
use crate::events::{
    ConnectTransport, Consume, ConsumeData, ConsumerRequest, CreateTransport, DataConsumerRequest,
    DataProducerRequest, JoinRoom, Participant, Produce, ProduceData, ProducerRequest, Relay, RestartIce,
    RoomRequest, SetPreferredLayers, SetPriority,
};
use crate::followers::room_channel;
use crate::placement::RoomLocation;
use crate::server::{Connection, Signalling};
use crate::session::{Membership, Session};

pub(crate) fn parse<T: DeserializeOwned>(event: &str, payload: Value) -> Result<T> {
    serde_json::from_value(payload).map_err(|e| SignallingError::InvalidPayload {
        event: event.to_owned(),
        reason: crate::ids::shorten_quotes(&e.to_string()),
    })
}

pub(crate) fn to_value(value: impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| {
        tracing::error!(%e, "serialising a response failed");
        SignallingError::Internal
    })
}

impl Connection {
    /// The participant's session, if it has joined `room` (or any room when `None`).
    pub(crate) fn session(&self, room: Option<&str>) -> Result<Session> {
        match (&*self.membership(), room) {
            (Membership::Joined(session), None) => Ok(session.clone()),
            (Membership::Joined(session), Some(room)) if session.room == room => {
                Ok(session.clone())
            }
            (_, Some(room)) => Err(SignallingError::NotInRoom(format!("room {room}"))),
            (_, None) => Err(SignallingError::NotInRoom("a room".to_owned())),
        }
    }

    /// Applies `change` to the session of `peer` in `room`, if that is this connection's
    /// session now (room events name the peer, and a connection is a new peer at every join).
    pub(crate) fn update_peer<R>(
        &self,
        room: &str,
        peer: &PeerId,
        change: impl FnOnce(&mut Session) -> R,
    ) -> Option<R> {
        match &mut *self.membership() {
            Membership::Joined(current) if current.room == room && current.peer == *peer => {
                Some(change(current))
            }
            _ => None,
        }
    }

    /// Puts the connection out of its room if it is `peer` in `room` (the worker removed that
    /// peer); whether it was.
    pub(crate) fn leave_if_peer(&self, room: &str, peer: &PeerId) -> bool {
        let mut membership = self.membership();
        match &*membership {
            Membership::Joined(current) if current.room == room && current.peer == *peer => {
                *membership = Membership::Idle;
                true
            }
            _ => false,
        }
    }

    /// Applies `change` to the session if it is still the same one (a leave or a disconnect
    /// may have happened during the worker call).
    fn update(&self, session: &Session, change: impl FnOnce(&mut Session)) {
        if let Membership::Joined(current) = &mut *self.membership()
            && current.room == session.room
            && current.peer == session.peer
        {
            change(current);
        }
    }
}

impl Signalling {
    /// `join-room`: place the room, follow its events, join the worker with the token's
    /// identity, and answer with the room's state.
    pub(crate) async fn join_room(
        self: Arc<Self>,
        socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let join: JoinRoom = parse("join-room", payload)?;
        let room = join.room_id;
        crate::ids::check_room_id(&room)?;
        connection.identity.may_join(&room)?;
        {
            let mut membership = connection.membership();
            match &*membership {
                Membership::Idle => *membership = Membership::Joining(room.clone()),
                Membership::Joining(current) => {
                    return Err(SignallingError::AlreadyInRoom(current.clone()));
                }
                Membership::Joined(session) => {
                    return Err(SignallingError::AlreadyInRoom(session.room.clone()));
                }
            }
        }
        let peer = crate::session::peer_id(socket.id, connection.next_join());
        let joined = self.join_worker(&socket, &connection, &room, &peer).await;
        let (location, response) = match joined {
            Ok(joined) => joined,
            Err(error) => {
                *connection.membership() = Membership::Idle;
                return Err(error);
            }
        };
        // The disconnect handler skips a join in flight, so a socket that went away during
        // the worker call is cleaned up here.
        let still_connected = {
            let mut membership = connection.membership();
            if !connection.is_gone() {
                *membership =
                    Membership::Joined(Session::new(&room, peer.clone(), location.clone()));
                true
            } else {
                *membership = Membership::Idle;
                false
            }
        };
        if !still_connected {
            let _ = self.backend.leave(&location.endpoint, &room, &peer).await;
            self.followers.release(&room);
            return Err(SignallingError::NotInRoom(format!("room {room}")));
        }
        self.own(&peer, &room, &location.endpoint).await;
        self.metrics.joins.inc();
        let identity = &connection.identity;
        let me = Participant {
            participant_id: peer.clone(),
            user_id: identity.user_id.clone(),
            full_name: identity.name.clone(),
            role: identity.role.clone(),
            app_data: AppData::new(),
        };
        let mut participants = vec![me];
        participants.extend(response.peers.iter().map(Participant::from));
        Ok(json!({
            "success": true,
            "roomId": room,
            "participantId": peer,
            "participants": participants,
            "mediasoup": to_value(&response)?,
            "chat": self.chat_history(&room).await,
            "chatModerator": crate::chat::is_moderator(identity, &self.limits.chat),
        }))
    }

    async fn join_worker(
        &self,
        socket: &SocketRef,
        connection: &Connection,
        room: &str,
        peer: &PeerId,
    ) -> Result<(RoomLocation, JoinResponse)> {
        let location = self.placement.locate(room).await?;
        let mut subscribed =
            self.followers
                .acquire(self.io(), self.backend.clone(), room, &location);
        // Waiting for the subscription means no event after our join is missed; a slow
        // worker only delays the join, bounded.
        let _ = tokio::time::timeout(
            self.limits.subscribe_wait,
            subscribed.wait_for(|done| *done),
        )
        .await;
        // In the Socket.IO room before the worker join, so that nothing the room does after
        // the join's snapshot escapes this participant.
        // Its own channel too, by which a relay from another replica finds it.
        let channels = [room_channel(room), peer_channel(room, peer)];
        socket.join(channels.clone());
        let identity = &connection.identity;
        let request = JoinRequest {
            peer_id: peer.clone(),
            info: PeerInfo {
                user_id: identity.user_id.clone(),
                display_name: identity.name.clone(),
                role: identity.role.clone(),
                app_data: AppData::new(),
            },
        };
        match self.backend.join(&location.endpoint, room, &request).await {
            Ok(response) => Ok((location, response)),
            Err(error) => {
                socket.leave(channels);
                self.followers.release(room);
                Err(error)
            }
        }
    }

    /// `leave-room`: the participant is out at once; a worker that cannot be told is logged,
    /// not the participant's problem.
    pub(crate) async fn leave_room(
        self: Arc<Self>,
        socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: RoomRequest = parse("leave-room", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        *connection.membership() = Membership::Idle;
        socket.leave([room_channel(&session.room), peer_channel(&session.room, &session.peer)]);
        if let Err(error) = self
            .backend
            .leave(&session.location.endpoint, &session.room, &session.peer)
            .await
        {
            tracing::warn!(room = session.room, %error, "leave on the worker failed");
        }
        self.followers.release(&session.room);
        self.disown(&session.peer).await;
        Ok(json!({"success": true, "roomId": session.room}))
    }

    /// `get-participants`: everybody in the room, from the worker (all replicas' participants).
    pub(crate) async fn get_participants(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: RoomRequest = parse("get-participants", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        let info = self
            .backend
            .room_info(&session.location.endpoint, &session.room)
            .await?;
        let participants: Vec<Participant> = info.peers.iter().map(Participant::from).collect();
        Ok(json!({"roomId": session.room, "participants": participants}))
    }

    /// `get-room-info`: participants and producers, with the router capabilities.
    pub(crate) async fn get_room_info(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: RoomRequest = parse("get-room-info", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        let info = self
            .backend
            .room_info(&session.location.endpoint, &session.room)
            .await?;
        let participants: Vec<Participant> = info.peers.iter().map(Participant::from).collect();
        Ok(json!({
            "roomId": session.room,
            "rtpCapabilities": to_value(&info.rtp_capabilities)?,
            "participants": participants,
            "producers": to_value(&info.producers)?,
        }))
    }

    pub(crate) async fn relay_offer(
        self: Arc<Self>,
        socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        self.relay("webrtc-offer", socket, connection, payload)
            .await
    }

    pub(crate) async fn relay_answer(
        self: Arc<Self>,
        socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        self.relay("webrtc-answer", socket, connection, payload)
            .await
    }

    pub(crate) async fn relay_ice_candidate(
        self: Arc<Self>,
        socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        self.relay("ice-candidate", socket, connection, payload)
            .await
    }

    /// The seed's peer-to-peer relay: the payload goes to the named participant only, if it
    /// is in the sender's room, with `from` set to the sender (whatever the payload said). A
    /// target on another replica is found through its own Socket.IO room over Redis
    /// ([`crate::replicas`]).
    async fn relay(
        &self,
        event: &'static str,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let relay: Relay = parse(event, payload)?;
        let session = connection.session(relay.room_id.as_deref())?;
        let not_found = || SignallingError::TargetNotFound(relay.target_id.clone());
        let target_peer = PeerId(relay.target_id.clone());
        let sid = crate::session::socket_of(&target_peer).ok_or_else(not_found)?;
        let mut message = relay.rest;
        message.insert("roomId".into(), json!(session.room));
        message.insert("targetId".into(), json!(relay.target_id));
        message.insert("from".into(), json!(session.peer));
        if let Some(target) = self.io().get_socket(sid) {
            let same_room = target
                .extensions
                .get::<Arc<Connection>>()
                .and_then(|c| c.session(Some(&session.room)).ok())
                .is_some_and(|theirs| theirs.peer == target_peer);
            if !same_room {
                return Err(not_found());
            }
            target.emit(event, &message).map_err(|_| not_found())?;
            return Ok(json!({"success": true}));
        }
        // Not connected here: on another replica, in this room as this peer, or nowhere.
        let remote = self
            .io()
            .to(peer_channel(&session.room, &target_peer))
            .fetch_sockets()
            .await
            .map_err(|error| {
                tracing::warn!(%error, "asking the other replicas for a relay's target failed");
                not_found()
            })?;
        let target = remote.into_iter().find(|s| s.data().id == sid).ok_or_else(not_found)?;
        target.emit(event, &message).await.map_err(|error| {
            tracing::warn!(%error, "relaying to another replica's socket failed");
            not_found()
        })?;
        Ok(json!({"success": true}))
    }

    /// `create-transport`: a send transport needs a publishing role; the answer carries the
    /// ICE servers to use with it.
    pub(crate) async fn create_transport(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: CreateTransport = parse("create-transport", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        if request.direction == Direction::Send {
            session.check_publish(&connection.identity.role)?;
        }
        let created = self
            .backend
            .create_transport(
                &session.location.endpoint,
                &session.room,
                &session.peer,
                request.direction,
                &request.protocols,
                SctpCapabilities::requested(request.sctp_capabilities, request.enable_sctp).as_ref(),
            )
            .await?;
        connection.update(&session, |s| {
            s.add_transport(created.id.clone(), request.direction)
        });
        let mut body = to_value(&created)?;
        body["transportId"] = json!(created.id);
        body["direction"] = json!(request.direction);
        // For mediasoup-client's createSendTransport/createRecvTransport: TURN credentials
        // are made per participant, valid from now.
        let now = jsonwebtoken::get_current_timestamp();
        body["iceServers"] = to_value(self.ice.servers_for(session.peer.as_str(), now))?;
        if let Some(policy) = self.ice.policy {
            body["iceTransportPolicy"] = json!(policy);
        }
        Ok(body)
    }

    /// `connect-transport`: the client's DTLS parameters for one of its transports.
    pub(crate) async fn connect_transport(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: ConnectTransport = parse("connect-transport", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        session.check_transport(&request.transport_id)?;
        self.backend
            .connect_transport(
                &session.location.endpoint,
                &session.room,
                &request.transport_id,
                &request.dtls_parameters,
            )
            .await?;
        Ok(json!({"transportId": request.transport_id}))
    }

    /// `restart-ice`: new ICE credentials for one of the participant's transports.
    pub(crate) async fn restart_ice(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: RestartIce = parse("restart-ice", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        session.check_transport(&request.transport_id)?;
        let ice_parameters = self
            .backend
            .restart_ice(
                &session.location.endpoint,
                &session.room,
                &request.transport_id,
            )
            .await?;
        Ok(
            json!({"transportId": request.transport_id, "iceParameters": to_value(&ice_parameters)?}),
        )
    }

    /// `produce`: needs a publishing role and one of the participant's send transports.
    pub(crate) async fn produce(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: Produce = parse("produce", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        session.check_publish(&connection.identity.role)?;
        let transport_id = session.transport_for(Direction::Send, request.transport_id.as_ref())?;
        let produce = ProduceRequest {
            peer_id: session.peer.clone(),
            transport_id,
            kind: request.kind,
            rtp_parameters: request.rtp_parameters,
            app_data: request.app_data,
            paused: request.paused,
        };
        let created = self
            .backend
            .produce(&session.location.endpoint, &session.room, &produce)
            .await?;
        connection.update(&session, |s| s.add_producer(created.id.clone()));
        Ok(json!({
            "id": created.id,
            "producerId": created.id,
            "kind": produce.kind,
            "rtpParameters": to_value(&produce.rtp_parameters)?,
        }))
    }

    /// `consume`: on one of the participant's recv transports.
    pub(crate) async fn consume(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: Consume = parse("consume", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        let transport_id = session.transport_for(Direction::Recv, request.transport_id.as_ref())?;
        let consume = ConsumeRequest {
            peer_id: session.peer.clone(),
            transport_id,
            producer_id: request.producer_id,
            rtp_capabilities: request.rtp_capabilities,
            paused: request.paused,
        };
        let created = self
            .backend
            .consume(&session.location.endpoint, &session.room, &consume)
            .await?;
        connection.update(&session, |s| s.add_consumer(created.id.clone()));
        to_value(&created)
    }

    pub(crate) async fn pause_producer(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        self.producer_lifecycle(&connection, "pause-producer", payload, Lifecycle::Pause)
            .await
    }

    pub(crate) async fn resume_producer(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        self.producer_lifecycle(&connection, "resume-producer", payload, Lifecycle::Resume)
            .await
    }

    pub(crate) async fn close_producer(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        self.producer_lifecycle(&connection, "close-producer", payload, Lifecycle::Close)
            .await
    }

    pub(crate) async fn pause_consumer(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        self.consumer_lifecycle(&connection, "pause-consumer", payload, Lifecycle::Pause)
            .await
    }

    pub(crate) async fn resume_consumer(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        self.consumer_lifecycle(&connection, "resume-consumer", payload, Lifecycle::Resume)
            .await
    }

    pub(crate) async fn close_consumer(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        self.consumer_lifecycle(&connection, "close-consumer", payload, Lifecycle::Close)
            .await
    }

    /// `set-consumer-preferred-layers`: on one of the participant's own consumers.
    pub(crate) async fn set_consumer_preferred_layers(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: SetPreferredLayers = parse("set-consumer-preferred-layers", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        session.check_consumer(&request.consumer_id)?;
        let layers = self
            .backend
            .set_consumer_preferred_layers(
                &session.location.endpoint,
                &session.room,
                &request.consumer_id,
                &SetPreferredLayersRequest {
                    spatial_layer: request.spatial_layer,
                    temporal_layer: request.temporal_layer,
                },
            )
            .await?;
        Ok(json!({
            "consumerId": request.consumer_id,
            "spatialLayer": layers.spatial_layer,
            "temporalLayer": layers.temporal_layer,
        }))
    }

    /// `set-consumer-priority`: on one of the participant's own consumers.
    pub(crate) async fn set_consumer_priority(
        self: Arc<Self>,
        _socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: SetPriority = parse("set-consumer-priority", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        session.check_consumer(&request.consumer_id)?;
        let priority = self
            .backend
            .set_consumer_priority(
                &session.location.endpoint,
                &session.room,
                &request.consumer_id,
                request.priority,
            )
            .await?;
        Ok(json!({"consumerId": request.consumer_id, "priority": priority}))
    }

    /// `produce-data`: needs a publishing role and one of the participant's send transports
    /// created with `sctpCapabilities`. Answers `{"id", "dataProducerId"}`, the `id` being
    /// what mediasoup-client's `producedata` callback takes.
    pub(crate) async fn produce_data(self: Arc<Self>, connection: Arc<Connection>, payload: Value) -> Result<Value> {
        let request: ProduceData = parse("produce-data", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        session.check_publish(&connection.identity.role)?;
        let transport_id = session.transport_for(Direction::Send, request.transport_id.as_ref())?;
        let produce = ProduceDataRequest {
            peer_id: session.peer.clone(),
            options: ProduceDataOptions {
                transport_id,
                sctp_stream_parameters: request.sctp_stream_parameters,
                label: request.label,
                protocol: request.protocol,
                app_data: request.app_data,
            },
        };
        let created = self.backend.produce_data(&session.location.endpoint, &session.room, &produce).await?;
        connection.update(&session, |s| s.add_data_producer(created.id.clone()));
        Ok(json!({
            "id": created.id,
            "dataProducerId": created.id,
            "label": produce.options.label,
            "protocol": produce.options.protocol,
        }))
    }

    /// `consume-data`: on one of the participant's recv transports created with
    /// `sctpCapabilities`; answers what mediasoup-client's `consumeData` takes.
    pub(crate) async fn consume_data(self: Arc<Self>, connection: Arc<Connection>, payload: Value) -> Result<Value> {
        let request: ConsumeData = parse("consume-data", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        let transport_id = session.transport_for(Direction::Recv, request.transport_id.as_ref())?;
        let consume = ConsumeDataRequest {
            peer_id: session.peer.clone(),
            options: ConsumeDataOptions {
                transport_id,
                data_producer_id: request.data_producer_id,
                ordered: request.ordered,
                max_packet_life_time: request.max_packet_life_time,
                max_retransmits: request.max_retransmits,
            },
        };
        let created = self.backend.consume_data(&session.location.endpoint, &session.room, &consume).await?;
        connection.update(&session, |s| s.add_data_consumer(created.id.clone()));
        let mut body = to_value(&created)?;
        body["dataConsumerId"] = json!(created.id);
        Ok(body)
    }

    /// `close-data-producer`: one of the participant's own; closes its data consumers too.
    pub(crate) async fn close_data_producer(self: Arc<Self>, connection: Arc<Connection>, payload: Value) -> Result<Value> {
        let request: DataProducerRequest = parse("close-data-producer", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        let id = &request.data_producer_id;
        session.check_data_producer(id)?;
        self.backend.close_data_producer(&session.location.endpoint, &session.room, id).await?;
        connection.update(&session, |s| s.remove_data_producer(id));
        Ok(json!({"dataProducerId": id}))
    }

    /// `close-data-consumer`: one of the participant's own.
    pub(crate) async fn close_data_consumer(self: Arc<Self>, connection: Arc<Connection>, payload: Value) -> Result<Value> {
        let request: DataConsumerRequest = parse("close-data-consumer", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        let id = &request.data_consumer_id;
        session.check_data_consumer(id)?;
        self.backend.close_data_consumer(&session.location.endpoint, &session.room, id).await?;
        connection.update(&session, |s| s.remove_data_consumer(id));
        Ok(json!({"dataConsumerId": id}))
    }

    /// Pause, resume or close one of the participant's own producers on its worker.
    async fn producer_lifecycle(
        &self,
        connection: &Connection,
        event: &str,
        payload: Value,
        action: Lifecycle,
    ) -> Result<Value> {
        let request: ProducerRequest = parse(event, payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        session.check_producer(&request.producer_id)?;
        let (endpoint, room, id) = (
            &session.location.endpoint,
            &session.room,
            &request.producer_id,
        );
        match action {
            Lifecycle::Pause => self.backend.pause_producer(endpoint, room, id).await?,
            Lifecycle::Resume => self.backend.resume_producer(endpoint, room, id).await?,
            Lifecycle::Close => {
                self.backend.close_producer(endpoint, room, id).await?;
                connection.update(&session, |s| s.remove_producer(id));
            }
        }
        Ok(json!({"producerId": id}))
    }

    /// Pause, resume or close one of the participant's own consumers on its worker.
    async fn consumer_lifecycle(
        &self,
        connection: &Connection,
        event: &str,
        payload: Value,
        action: Lifecycle,
    ) -> Result<Value> {
        let request: ConsumerRequest = parse(event, payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        session.check_consumer(&request.consumer_id)?;
        let (endpoint, room, id) = (
            &session.location.endpoint,
            &session.room,
            &request.consumer_id,
        );
        match action {
            Lifecycle::Pause => self.backend.pause_consumer(endpoint, room, id).await?,
            Lifecycle::Resume => self.backend.resume_consumer(endpoint, room, id).await?,
            Lifecycle::Close => {
                self.backend.close_consumer(endpoint, room, id).await?;
                connection.update(&session, |s| s.remove_consumer(id));
            }
        }
        Ok(json!({"consumerId": id}))
    }
}

/// Reads `payload` as the typed request of `event`, as that event's handler does before it
/// looks at any state: the entry of the fuzz targets (`signalling/fuzz`), not an API.
#[doc(hidden)]
pub fn read_request(event: &str, payload: Value) -> Result<()> {
    match event {
        "join-room" => parse::<JoinRoom>(event, payload)
            .and_then(|join| crate::ids::check_room_id(&join.room_id)),
        "leave-room" | "get-participants" | "get-room-info" => {
            parse::<RoomRequest>(event, payload).map(drop)
        }
        "webrtc-offer" | "webrtc-answer" | "ice-candidate" => {
            parse::<Relay>(event, payload).map(drop)
        }
        "create-transport" => parse::<CreateTransport>(event, payload).map(drop),
        "connect-transport" => parse::<ConnectTransport>(event, payload).map(drop),
        "restart-ice" => parse::<RestartIce>(event, payload).map(drop),
        "produce" => parse::<Produce>(event, payload).map(drop),
        "consume" => parse::<Consume>(event, payload).map(drop),
        "pause-producer" | "resume-producer" | "close-producer" => {
            parse::<ProducerRequest>(event, payload).map(drop)
        }
        "pause-consumer" | "resume-consumer" | "close-consumer" => {
            parse::<ConsumerRequest>(event, payload).map(drop)
        }
        "set-consumer-preferred-layers" => parse::<SetPreferredLayers>(event, payload).map(drop),
        "set-consumer-priority" => parse::<SetPriority>(event, payload).map(drop),
        "produce-data" => parse::<ProduceData>(event, payload).map(drop),
        "consume-data" => parse::<ConsumeData>(event, payload).map(drop),
        "close-data-producer" => parse::<DataProducerRequest>(event, payload).map(drop),
        "close-data-consumer" => parse::<DataConsumerRequest>(event, payload).map(drop),
        "chat-message" => parse::<crate::chat::SendChat>(event, payload).map(drop),
        "delete-chat-message" => parse::<crate::chat::DeleteChat>(event, payload).map(drop),
        other => Err(SignallingError::InvalidPayload {
            event: other.to_owned(),
            reason: "not a request event".to_owned(),
        }),
    }
}

/// What a pause/resume/close request does to a producer or consumer.
#[derive(Debug, Clone, Copy)]
enum Lifecycle {
    Pause,
    Resume,
    Close,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_event_has_a_typed_payload_to_read() {
        for (event, _) in crate::events::REQUESTS {
            if let Err(error) = read_request(event, json!({})) {
                assert!(
                    !error.to_string().contains("not a request event"),
                    "read_request does not know {event}: add its payload type there"
                );
            }
        }
        assert!(read_request("leave-room", json!({})).is_ok());
        assert!(read_request("no-such-event", json!({})).is_err());
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_invalid_payload_naming_the_field() {
        let error = parse::<CreateTransport>("create-transport", json!({"direction": "sideways"}))
            .unwrap_err();
        assert_eq!(error.code(), "INVALID_PAYLOAD");
        assert!(error.to_string().contains("create-transport"), "{error}");
    }
}
