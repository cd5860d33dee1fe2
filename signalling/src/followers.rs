//! Following rooms' event streams on their workers.
//!
//! While this process has participants in a room it keeps one subscription to that room's
//! events (`GET /v1/rooms/{room}/events`) and turns each event into a Socket.IO notification
//! for its local sockets in the room ([`notification`]). Every signalling replica with
//! participants in the room does the same for its own sockets, so notifications reach
//! everybody without replicas talking to each other. The subscription ends with the last
//! local participant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_worker::room::{PeerId, RoomEvent};
use futures::StreamExt as _;
use socketioxide::{SendError, SocketError, SocketIo};
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::events::{Audience, notification};
use crate::worker::MediaBackend;

/// The Socket.IO room of a Fanout room.
pub fn room_channel(room: &str) -> String {
    format!("room:{room}")
}

struct Follower {
    participants: usize,
    task: AbortHandle,
    subscribed: watch::Receiver<bool>,
}

/// The rooms this process follows, with how many local participants each has.
#[derive(Default)]
pub struct Followers {
    rooms: Mutex<HashMap<String, Follower>>,
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
        endpoint: &str,
    ) -> watch::Receiver<bool> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let follower = rooms.entry(room.to_owned()).or_insert_with(|| {
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(follow(
                io.clone(),
                backend,
                room.to_owned(),
                endpoint.to_owned(),
                tx,
            ));
            Follower {
                participants: 0,
                task: task.abort_handle(),
                subscribed: rx,
            }
        });
        follower.participants += 1;
        follower.subscribed.clone()
    }

    /// Counts one local participant less in `room`; the last one ends the subscription.
    pub fn release(&self, room: &str) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(follower) = rooms.get_mut(room) {
            follower.participants = follower.participants.saturating_sub(1);
            if follower.participants == 0 {
                follower.task.abort();
                rooms.remove(room);
            }
        }
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
    backend: Arc<dyn MediaBackend>,
    room: String,
    endpoint: String,
    subscribed: watch::Sender<bool>,
) {
    let mut retry = FIRST_RETRY;
    loop {
        // The worker refuses to stream an unknown room, and the first participant's join is
        // what opens it; opening it here (idempotent) lets the subscription come first, so
        // no event after the join is missed.
        let stream = match backend.ensure_room(&endpoint, &room).await {
            Ok(_) => backend.events(&endpoint, &room).await,
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
                            forward(&io, &room, event).await;
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

async fn forward(io: &SocketIo, room: &str, event: RoomEvent) {
    let Some(notification) = notification(room, event) else {
        return;
    };
    let in_room = || io.to(room_channel(room)).sockets();
    let recipients: Vec<SocketRef> = match &notification.audience {
        Audience::Room => in_room(),
        Audience::RoomExcept(peer) => in_room()
            .into_iter()
            .filter(|socket| socket.id.as_str() != peer.as_str())
            .collect(),
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

/// The socket of a peer connected to this process (a peer's id is its socket's id).
fn local_socket(io: &SocketIo, peer: &PeerId) -> Option<SocketRef> {
    io.get_socket(peer.as_str().parse::<Sid>().ok()?)
}
