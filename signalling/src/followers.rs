//! Following rooms' event streams on their workers.
//!
//! While this process has participants in a room it keeps one subscription to that room's
//! events (`GET /v1/rooms/{room}/events`) and turns each event into a Socket.IO notification
//! for its local sockets in the room ([`notification`]). Every signalling replica with
//! participants in the room does the same for its own sockets, so notifications reach
//! everybody without replicas talking to each other. The subscription ends with the last
//! local participant.
//!
//! The events also keep each local participant's session equal to the worker's
//! ([`keep_sessions`]): a transport, producer or consumer the worker closed by itself is
//! forgotten, the participant is told (`transport-closed`, and `transport-failed` for a
//! transport that never got set up), and a participant the worker removed (its last transport closed, its room
//! closed) is out of the room (`left-room`), so that its next `join-room` works.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_worker::room::{PeerId, RoomEvent, TransportCloseCode};
use futures::StreamExt as _;
use socketioxide::{SendError, SocketError};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::events::{Audience, notification};
use crate::placement::RoomLocation;
use crate::replicas::{SocketIo, SocketRef, peer_channel};
use crate::server::Connection;
use crate::session::socket_of;
use crate::worker::MediaBackend;

/// The Socket.IO room of a Fanout room.
pub fn room_channel(room: &str) -> String {
    format!("room:{room}")
}

struct Follower {
    participants: usize,
    /// The worker it follows the room on.
    endpoint: String,
    task: AbortHandle,
    subscribed: watch::Receiver<bool>,
}

/// What to do when a room's last local participant is gone (drop its chat history).
type OnEmpty = Arc<std::sync::OnceLock<Box<dyn Fn(&str) + Send + Sync>>>;

/// The rooms this process follows, with how many local participants each has.
#[derive(Default, Clone)]
pub struct Followers {
    rooms: Arc<Mutex<HashMap<String, Follower>>>,
    on_empty: OnEmpty,
}

impl Followers {
    /// Counts one more local participant in `room`, subscribing to its events if it is the
    /// first. Returns a receiver that turns `true` once the first subscription attempt is
    /// over (subscribed or failed), so a join can wait for it and miss no event after it.
    pub fn acquire(
        &self,
        io: &SocketIo,
        backend: Arc<dyn MediaBackend>,
        room: &str,
        location: &RoomLocation,
    ) -> watch::Receiver<bool> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let start = || {
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(follow(
                io.clone(),
                self.clone(),
                backend.clone(),
                room.to_owned(),
                location.clone(),
                tx,
            ));
            (task.abort_handle(), rx)
        };
        let follower = rooms.entry(room.to_owned()).or_insert_with(|| {
            let (task, subscribed) = start();
            Follower {
                participants: 0,
                endpoint: location.endpoint.clone(),
                task,
                subscribed,
            }
        });
        // The room closed on its worker while participants were still counted here (they are
        // being told): a join opens it again, so follow it again. Or the room moved to another
        // worker and this join is the first there, before the participants still counted on
        // the old one were put out (`room-migrated`): follow it where it is now, or this
        // participant would never hear of the others.
        if follower.task.is_finished() || follower.endpoint != location.endpoint {
            follower.task.abort();
            (follower.task, follower.subscribed) = start();
            follower.endpoint = location.endpoint.clone();
        }
        follower.participants += 1;
        follower.subscribed.clone()
    }

    /// Counts one local participant less in `room`; the last one ends the subscription.
    pub fn release(&self, room: &str) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let mut emptied = false;
        if let Some(follower) = rooms.get_mut(room) {
            follower.participants = follower.participants.saturating_sub(1);
            if follower.participants == 0 {
                follower.task.abort();
                rooms.remove(room);
                emptied = true;
            }
        }
        drop(rooms);
        if emptied && let Some(on_empty) = self.on_empty.get() {
            on_empty(room);
        }
    }

    /// Sets what happens when a room's last local participant is gone (once; later calls
    /// are ignored).
    pub fn on_empty(&self, action: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.on_empty.set(Box::new(action));
    }

    /// How many rooms are followed (for tests and metrics).
    pub fn len(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no room is followed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(10);

/// Subscribes and forwards until aborted or the room closes, re-subscribing with backoff when
/// the stream breaks (worker restart, network) or falls behind.
async fn follow(
    io: SocketIo,
    followers: Followers,
    backend: Arc<dyn MediaBackend>,
    room: String,
    location: RoomLocation,
    subscribed: watch::Sender<bool>,
) {
    let endpoint = &location.endpoint;
    let mut retry = FIRST_RETRY;
    let mut closes = LastCloses::default();
    loop {
        // The worker refuses to stream an unknown room, and the first participant's join is
        // what opens it; opening it here (idempotent) lets the subscription come first, so
        // no event after the join is missed.
        let stream = match backend.ensure_room(endpoint, &room, &location.setup).await {
            Ok(_) => backend.events(endpoint, &room).await,
            Err(error) => Err(error),
        };
        let _ = subscribed.send(true);
        match stream {
            Ok(mut events) => {
                retry = FIRST_RETRY;
                while let Some(item) = events.next().await {
                    match item {
                        Ok(event) => {
                            let closed = matches!(event, RoomEvent::RoomClosed { .. });
                            let removed = keep_sessions(&io, &room, &event, &mut closes);
                            forward(&io, &room, event);
                            // Last, since releasing the last participant ends this task.
                            for _ in 0..removed {
                                followers.release(&room);
                            }
                            if closed {
                                tracing::info!(room, "room closed on its worker");
                                return;
                            }
                        }
                        Err(error) => {
                            // Broken, or cut off by the worker for falling more than
                            // `fanout_worker::control::EVENT_BUFFER` requests behind (this
                            // task stalled): notifications in the gap are lost; clients can
                            // catch up with get-room-info.
                            tracing::warn!(room, %error, "room event stream ended; resubscribing");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(room, %error, "cannot follow room events; retrying");
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

fn forward(io: &SocketIo, room: &str, event: RoomEvent) {
    let Some(notification) = notification(room, event) else {
        return;
    };
    let in_room = || io.to(room_channel(room)).sockets();
    let recipients: Vec<SocketRef> = match &notification.audience {
        Audience::Room => in_room(),
        Audience::RoomExcept(peer) => {
            let own = socket_of(peer);
            in_room().into_iter().filter(|socket| Some(socket.id) != own).collect()
        }
        // Connected to another replica, which tells it, or gone.
        Audience::Peer(peer) => local_socket(io, peer).into_iter().collect(),
    };
    for socket in recipients {
        notify(&socket, notification.event, &notification.payload);
    }
}

/// Queues a notification for one socket. One that finds the socket's queue full would be lost,
/// and with it the client's view of the room: the connection is closed instead (its client
/// has stopped reading), so that it reconnects and rejoins with the room's state.
pub fn notify(socket: &SocketRef, event: &str, payload: &serde_json::Value) {
    match socket.emit(event, payload) {
        Ok(()) | Err(SendError::Socket(SocketError::Closed)) => {}
        Err(SendError::Socket(SocketError::InternalChannelFull)) => {
            tracing::warn!(
                sid = %socket.id,
                event,
                "closing a connection whose client does not read its notifications (its queue is full)"
            );
            let _ = socket.clone().disconnect();
        }
        Err(error) => tracing::error!(event, %error, "a notification could not be encoded"),
    }
}

/// The socket of a peer connected to this process.
fn local_socket(io: &SocketIo, peer: &PeerId) -> Option<SocketRef> {
    io.get_socket(socket_of(peer)?)
}

/// How each peer's transports last closed, as the worker said: the reason a participant is
/// given when the worker then removes it.
#[derive(Default)]
struct LastCloses(HashMap<PeerId, (TransportCloseCode, String)>);

/// Applies a room event to the session of the local participant it is about, telling the
/// participant what it did not ask for. Returns how many local participants it removed from
/// the room (their follower counts are released by the caller).
fn keep_sessions(io: &SocketIo, room: &str, event: &RoomEvent, closes: &mut LastCloses) -> usize {
    let session_of = |peer: &PeerId| {
        let socket = local_socket(io, peer)?;
        let connection = socket.extensions.get::<Arc<Connection>>()?;
        Some((socket, connection))
    };
    match event {
        RoomEvent::ConsumerClosed { consumer_id, peer_id, .. } => {
            if let Some((_, connection)) = session_of(peer_id) {
                connection.update_peer(room, peer_id, |s| s.remove_consumer(consumer_id));
            }
        }
        RoomEvent::ProducerClosed { producer_id, peer_id } => {
            if let Some((_, connection)) = session_of(peer_id) {
                connection.update_peer(room, peer_id, |s| s.remove_producer(producer_id));
            }
        }
        RoomEvent::DataConsumerClosed { data_consumer_id, peer_id, .. } => {
            if let Some((_, connection)) = session_of(peer_id) {
                connection.update_peer(room, peer_id, |s| s.remove_data_consumer(data_consumer_id));
            }
        }
        RoomEvent::DataProducerClosed { data_producer_id, peer_id } => {
            if let Some((_, connection)) = session_of(peer_id) {
                connection.update_peer(room, peer_id, |s| s.remove_data_producer(data_producer_id));
            }
        }
        RoomEvent::TransportClosed { transport_id, peer_id, code, reason } => {
            closes.0.insert(peer_id.clone(), (*code, reason.clone()));
            let Some((socket, connection)) = session_of(peer_id) else {
                return 0;
            };
            let direction = connection
                .update_peer(room, peer_id, |s| s.remove_transport(transport_id))
                .flatten();
            if let (Some(direction), true) = (direction, code.is_unrequested()) {
                notify(
                    &socket,
                    "transport-closed",
                    &json!({"roomId": room, "transportId": transport_id, "direction": direction,
                            "code": code, "reason": reason}),
                );
                // It never carried media: the same network would fail again, so the client
                // is told plainly, not left to replace the transport over and over.
                if code.is_setup_failure() {
                    notify(
                        &socket,
                        "transport-failed",
                        &json!({"roomId": room, "transportId": transport_id, "direction": direction,
                                "code": code, "reason": reason}),
                    );
                }
            }
        }
        RoomEvent::PeerLeft { peer_id } => {
            let last = closes.0.remove(peer_id);
            let Some((socket, connection)) = session_of(peer_id) else {
                return 0;
            };
            if !connection.leave_if_peer(room, peer_id) {
                // It left by itself (leave-room, disconnect) and was answered already.
                return 0;
            }
            socket.leave([room_channel(room), peer_channel(room, peer_id)]);
            let (code, why) = match &last {
                Some((code, reason)) if !reason.is_empty() => (code.as_str(), reason.as_str()),
                Some((code, _)) => (code.as_str(), code.describe()),
                None => ("PEER_REMOVED", "the media worker removed you from the room"),
            };
            notify(
                &socket,
                "left-room",
                &json!({"roomId": room, "code": code,
                        "reason": format!("{why}; you are no longer in room {room}: emit join-room to join again")}),
            );
            // Its room is closing: the `room-closed` that follows goes to the room's sockets,
            // which this one no longer is.
            if last.is_some_and(|(code, _)| code == TransportCloseCode::RoomClosed) {
                notify(&socket, "room-closed", &json!({"roomId": room}));
            }
            return 1;
        }
        _ => {}
    }
    0
}
